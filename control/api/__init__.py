"""The HTTP API (FastAPI) and the server that also serves the Resources page."""

from control.api.app import create_app

__all__ = ["create_app"]
