"""Configuration from the environment (`RSM_*`), with defaults that match the dev stack."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from state.runtime_models import KubernetesAccess

REPO_ROOT = Path(__file__).resolve().parent.parent


class RsmSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RSM_", extra="ignore", populate_by_name=True)

    state_dir: Path = REPO_ROOT / ".rsm"
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    temporal_namespace: str = "default"
    temporal_address_override: str | None = Field(
        default=None, validation_alias="RSM_TEMPORAL_ADDRESS"
    )
    temporal_ui_url_override: str | None = Field(
        default=None, validation_alias="RSM_TEMPORAL_UI_URL"
    )
    task_queue: str = "rsm-lifecycle"
    pg_port: int = 54329
    database_url_override: str | None = Field(default=None, validation_alias="RSM_DATABASE_URL")
    # The base image the example MCP Dockerfile builds FROM; the dev stack builds a local one because
    # no registry is reachable here. Unset, each Dockerfile's own default (a public image) is used.
    mcp_base_image: str | None = None
    # Supabase's own variable names, so a project's .env works unchanged. Both set: the store is
    # SupabaseStore over PostgREST (state/store_factory.py); otherwise Postgres at RSM_DATABASE_URL.
    supabase_url: str | None = Field(default=None, validation_alias="SUPABASE_URL")
    supabase_service_role_key: SecretStr | None = Field(
        default=None, validation_alias="SUPABASE_SERVICE_ROLE_KEY"
    )
    # Deploy targets: the local Docker runtime by default; Kubernetes activities are registered on
    # a worker only when enabled (a kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster).
    default_runtime: Literal["docker", "kubernetes"] = "docker"
    kubernetes_enabled: bool = False
    kubeconfig: Path | None = None
    kubernetes_namespace: str = "rsm"
    # An ingress URL template for the health check (KubernetesRuntimeConfig.endpoint_template).
    kubernetes_endpoint_template: str | None = None
    # How the worker reaches a Service for the health check (KubernetesAccess). Unset: `template`
    # when a template is set, else `service` inside the cluster, else `port-forward`.
    kubernetes_access: KubernetesAccess | None = None
    # A registry (host[:port][/path], e.g. 127.0.0.1:5000) every built image is pushed to; the
    # pushed reference, with its digest, is what gets deployed. Unset: images stay on the engine.
    registry: str | None = None
    docker_host: str | None = None
    # Off: a Dockerfile whose base image is not local fails at once, by name (no registry here).
    docker_allow_pull: bool = False
    # The n8n the worker deploys workflows to (RSM_N8N_URL, RSM_N8N_API_KEY). `rsm dev up --n8n` or
    # RSM_N8N=1 starts a local one (scripts/install_n8n.sh installs it) and hands both to the worker.
    n8n: bool = False
    n8n_port: int = 5678
    n8n_url: str | None = None
    n8n_api_key: SecretStr | None = None

    @field_validator("registry")
    @classmethod
    def _registry_reference(cls, value: str | None) -> str | None:
        """A repository prefix, not a URL: the engine chooses HTTPS or (for 127.0.0.0/8 and
        insecure registries) HTTP by itself, and a scheme in an image name is invalid."""
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if "://" in value:
            raise ValueError(
                f"RSM_REGISTRY={value!r} must be host[:port][/path] without a scheme, "
                "e.g. 127.0.0.1:5000"
            )
        return value

    @property
    def temporal_address(self) -> str:
        return self.temporal_address_override or f"127.0.0.1:{self.temporal_port}"

    @property
    def temporal_ui_url(self) -> str:
        return self.temporal_ui_url_override or f"http://127.0.0.1:{self.temporal_ui_port}"

    @property
    def database_url(self) -> str:
        return self.database_url_override or f"postgresql://postgres@127.0.0.1:{self.pg_port}/rsm"

    def workflow_ui_link(self, workflow_id: str) -> str:
        from urllib.parse import quote

        return (
            f"{self.temporal_ui_url}/namespaces/{self.temporal_namespace}"
            f"/workflows/{quote(workflow_id, safe='')}"
        )
