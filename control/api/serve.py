"""`rsm api`: serve the HTTP API and the Resources page with uvicorn, on 127.0.0.1 by default."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer
import uvicorn

from control.api.app import create_app
from control.api.auth import AuthConfigError, load_access
from control.api.settings import ApiSettings
from control.client import LifecycleClient
from state.errors import StoreError
from state.postgres import PostgresStore, apply_migrations
from state.settings import RsmSettings

log = logging.getLogger("rsm.api")


async def serve(settings: RsmSettings, api: ApiSettings) -> None:
    access = load_access(api.auth_file, api.tokens, api.anonymous_read)
    await apply_migrations(settings.database_url)
    store = await PostgresStore.connect(settings.database_url)
    try:
        lifecycle = await LifecycleClient.connect(settings)
        app = create_app(settings, store, lifecycle, api_settings=api, access=access)
        config = uvicorn.Config(app, host=api.host, port=api.port, log_level="info")
        log.info("rsm API on http://%s:%s (page at /page/)", api.host, api.port)
        await uvicorn.Server(config).serve()
    finally:
        await store.close()


def api_command(
    host: str | None = typer.Option(None, "--host", help="Listen address (RSM_API_HOST)."),
    port: int | None = typer.Option(None, "--port", help="Listen port (RSM_API_PORT)."),
    auth_file: Path | None = typer.Option(
        None, "--auth-file", help="Tokens and role permissions, YAML or JSON (RSM_API_AUTH_FILE)."
    ),
) -> None:
    """Serve the HTTP API (OpenAPI at /docs) and the Resources page (at /)."""
    api = ApiSettings()
    api = api.model_copy(
        update={
            k: v
            for k, v in {"host": host, "port": port, "auth_file": auth_file}.items()
            if v is not None
        }
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(RsmSettings(), api))
    except (AuthConfigError, StoreError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    except RuntimeError as exc:
        if "connect" not in str(exc).lower():
            raise
        typer.secho(f"error: cannot reach Temporal: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
