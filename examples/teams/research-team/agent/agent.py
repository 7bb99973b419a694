"""research-team's agent service: the smallest thing a team runs, on the Python standard library.

It binds to HOST:PORT from the environment (rsm's runtime passes 127.0.0.1 and a free port per
replica) and answers `GET /healthz` with 200, which is what the team health check asks of every
replica; `GET /` says which replica answered.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLICA = os.environ.get("RSM_REPLICA", "0")
ROLE = os.environ.get("AGENT_ROLE", "agent")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, {"status": "ok", "replica": REPLICA})
        elif self.path == "/":
            self._reply(200, {"team": "research-team", "role": ROLE, "replica": REPLICA})
        else:
            self._reply(404, {"error": f"no route {self.path}"})

    def _reply(self, status: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # health probes every quarter second would drown the container's log


if __name__ == "__main__":
    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))
    print(f"research-team replica {REPLICA} listening on {host}:{port}", flush=True)
    ThreadingHTTPServer((host, port), Handler).serve_forever()
