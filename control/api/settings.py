"""The HTTP API's own configuration (`RSM_API_*`), next to the shared `RsmSettings`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from state.settings import REPO_ROOT


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RSM_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    # Who may do what: a YAML/JSON file (tokens, roles' permissions); see control/api/auth.py.
    auth_file: Path | None = None
    # Extra tokens without a file: "actor:role:token,actor:role:token".
    tokens: str = ""
    # Reads (GET) without a token; writes always need one.
    anonymous_read: bool | None = None
    # Directories an API caller may register or redeploy sources from: the server reads them, so a
    # caller must not point it anywhere else on the host.
    source_roots: list[Path] = Field(default_factory=lambda: [REPO_ROOT / "examples"])
    # Hosts webhook URLs may point at; empty allows any (the webhook permission is admin's alone).
    webhook_allowed_hosts: list[str] = Field(default_factory=list)
    # How long a command may wait for its workflow to answer before the API says so (503).
    command_timeout_seconds: float = 20.0
    # Bodies past this are refused (413) before they are read: Temporal refuses a workflow input
    # past about 2 MB anyway, and an unauthenticated caller must not make the server buffer more.
    max_body_bytes: int = 2 * 1024 * 1024
    bulk_concurrency: int = 8
    page_refresh_seconds: float = 3.0
