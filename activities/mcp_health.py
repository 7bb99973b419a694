"""health_check for MCP servers: the mcp SDK client runs initialize + list_tools against the endpoint,
retrying with backoff until a deadline, and reports what the server says it is."""

from __future__ import annotations

import asyncio
import time

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from temporalio import activity
from temporalio.exceptions import ApplicationError

from state.errors import FailureType
from state.models import HealthCheckRequest, McpHealthResult


def describe(exc: BaseException) -> str:
    """The innermost meaningful message: the SDK wraps transport errors in exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    # httpx appends a documentation link on a second line: keep the first, which says what happened.
    text = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


class McpHealthChecker:
    def __init__(
        self,
        attempt_timeout: float = 5.0,
        initial_backoff: float = 0.2,
        max_backoff: float = 2.0,
    ) -> None:
        self._attempt_timeout = attempt_timeout
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff

    async def probe(self, endpoint: str) -> tuple[str, str | None, str, list[str]]:
        async with (
            asyncio.timeout(self._attempt_timeout),
            httpx.AsyncClient(timeout=self._attempt_timeout, follow_redirects=True) as http,
            streamable_http_client(endpoint, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            tools = await session.list_tools()
        return (
            init.serverInfo.name,
            init.serverInfo.version,
            str(init.protocolVersion),
            sorted(tool.name for tool in tools.tools),
        )

    @activity.defn(name="health_check")
    async def health_check(self, req: HealthCheckRequest) -> McpHealthResult:
        started = time.monotonic()
        deadline = started + req.deadline_seconds
        backoff = self._initial_backoff
        attempts = 0
        last_error = "no attempt made"
        while True:
            attempts += 1
            activity.heartbeat({"attempt": attempts, "last_error": last_error})
            try:
                name, version, protocol, tools = await self.probe(req.endpoint)
            except Exception as exc:  # any failure of the handshake is a reason to try again
                last_error = describe(exc)
            else:
                return McpHealthResult(
                    server_name=name,
                    server_version=version,
                    protocol_version=protocol,
                    tools=tools,
                    attempts=attempts,
                    elapsed_seconds=round(time.monotonic() - started, 3),
                )
            if time.monotonic() + backoff > deadline:
                raise ApplicationError(
                    f"MCP handshake with {req.endpoint} failed after {attempts} attempts: {last_error}",
                    {"endpoint": req.endpoint, "attempts": attempts, "last_error": last_error},
                    type=FailureType.HEALTH_CHECK_FAILED,
                    non_retryable=True,
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)
