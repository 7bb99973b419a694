"""toolbox: a small MCP server over streamable HTTP, the example resource rsm walks to `active`.

It binds to HOST:PORT from the environment (the runtime passes 127.0.0.1 and a free port) and serves
MCP at /mcp.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from mcp.server.fastmcp import FastMCP

server = FastMCP(
    "toolbox",
    host=os.environ.get("HOST", "127.0.0.1"),
    port=int(os.environ.get("PORT", "8000")),
    stateless_http=True,
)


@server.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@server.tool()
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


@server.tool()
def utc_now() -> str:
    """The server's current time in UTC, ISO 8601."""
    return datetime.now(UTC).isoformat()


if __name__ == "__main__":
    server.run(transport="streamable-http")
