"""The FastAPI application: `create_app(settings, store, lifecycle_client)` wires the routers, the
error handlers and the Resources page; it owns no connection (the caller opens and closes them)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from control.api import routes_actions, routes_bulk, routes_resources, routes_webhooks
from control.api.auth import AccessPolicy, load_access
from control.api.context import ApiContext
from control.api.errors import install_handlers, reject_unknown_query
from control.api.settings import ApiSettings
from control.page import PAGE_DIR
from state.idempotency import IdempotencyStore
from state.postgres import PostgresStore
from state.queries import pool_of
from state.settings import RsmSettings
from state.webhook_store import WebhookStore

API_VERSION = "1.0.0"


def create_app(
    settings: RsmSettings,
    store: PostgresStore,
    lifecycle_client: Any,
    *,
    api_settings: ApiSettings | None = None,
    access: AccessPolicy | None = None,
) -> FastAPI:
    api = api_settings or ApiSettings()
    if access is None:
        access = load_access(api.auth_file, api.tokens, api.anonymous_read)
    pool = pool_of(store)
    app = _application()
    app.add_middleware(BodyLimit, max_bytes=api.max_body_bytes)
    app.state.ctx = ApiContext(
        settings=settings,
        api=api,
        store=store,
        pool=pool,
        lifecycle=lifecycle_client,
        access=access,
        webhooks=WebhookStore(pool),
        idempotency=IdempotencyStore(pool),
    )
    return app


class BodyLimit:
    """Refuses a request whose Content-Length is past the limit, before reading it (413). A body
    without a length (chunked) is left to the server's own limits."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_bytes:
                response = JSONResponse(
                    {
                        "error": "too_large",
                        "detail": f"a request body of {int(length)} bytes is over the limit of"
                        f" {self.max_bytes} (RSM_API_MAX_BODY_BYTES)",
                    },
                    status_code=413,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI document, without connecting to anything (for schemathesis and docs)."""
    return _application().openapi()


def _application() -> FastAPI:
    app = FastAPI(
        dependencies=[Depends(reject_unknown_query)],
        title="rsm",
        version=API_VERSION,
        summary="Durable resource lifecycles: read where each resource is, steer it with a token.",
    )
    install_handlers(app)
    for module in (routes_resources, routes_actions, routes_bulk, routes_webhooks):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/page/")

    @app.get("/page/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/page", StaticFiles(directory=PAGE_DIR), name="page")
    return app
