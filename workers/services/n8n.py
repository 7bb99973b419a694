"""A local n8n server from the npm install scripts/install_n8n.sh keeps in a cache folder (DESIGN §9).

It listens on 127.0.0.1 only, keeps its SQLite database and settings in its own user folder, and is
told not to phone home (diagnostics, version notifications, templates, banners). `start` waits until
n8n really serves requests: `/healthz/readiness` answers before the REST API and the webhooks are
mounted, so it also waits for `/rest/settings`. It then sets up the owner and an API key for the
public API (`/api/v1`) through the same REST calls the UI makes, with a constant `browser-id` header
(n8n binds the session cookie to it), and keeps them in the user folder so a restart reuses them.
`stop` signals the PID it recorded, nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from workers.services.process import (
    ServiceError,
    free_port,
    port_open,
    read_pid,
    spawn,
    stop_pid,
    wait_until,
)

N8N_VERSION = os.environ.get("RSM_N8N_VERSION", "2.8.4")
CACHE_DIR = Path(os.environ.get("RSM_CACHE_DIR", "/var/cache/rsm"))
BROWSER_ID = "rsm-automation"  # constant: n8n rejects a session cookie used from another browser id
OWNER_EMAIL = "rsm-owner@example.invalid"
API_KEY_LABEL = "rsm"


def n8n_install_dir(version: str = N8N_VERSION) -> Path:
    return Path(os.environ.get("RSM_N8N_DIR", CACHE_DIR / f"n8n-{version}"))


def n8n_binary(version: str = N8N_VERSION) -> Path | None:
    """The installed n8n executable, or None when scripts/install_n8n.sh has not run."""
    directory = n8n_install_dir(version)
    binary = directory / "node_modules" / ".bin" / "n8n"
    return binary if (directory / ".complete").exists() and binary.exists() else None


@dataclass(frozen=True)
class N8nAccess:
    """Where the public API is and the key that opens it."""

    base_url: str
    api_key: str

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v1"


class N8nServer:
    def __init__(
        self,
        state_dir: Path,
        port: int | None = None,
        broker_port: int | None = None,
        version: str = N8N_VERSION,
    ) -> None:
        self.dir = state_dir / "n8n"
        self.version = version
        self.port = port or free_port()
        self.broker_port = broker_port or free_port()
        self.pid_file = state_dir / "pids" / "n8n.pid"
        self.log = state_dir / "logs" / "n8n.log"
        self.access_file = self.dir / "rsm-access.json"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return read_pid(self.pid_file) is not None

    def environment(self) -> dict[str, str]:
        return {
            "N8N_LISTEN_ADDRESS": "127.0.0.1",
            "N8N_HOST": "127.0.0.1",
            "N8N_PORT": str(self.port),
            "N8N_PROTOCOL": "http",
            "WEBHOOK_URL": f"{self.base_url}/",
            "N8N_USER_FOLDER": str(self.dir),
            "N8N_RUNNERS_BROKER_PORT": str(self.broker_port),
            "N8N_RUNNERS_BROKER_LISTEN_ADDRESS": "127.0.0.1",
            "N8N_SECURE_COOKIE": "false",  # plain http on 127.0.0.1
            "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "true",
            # Only 127.0.0.1 traffic: nothing that calls n8n's or third parties' servers.
            "N8N_DIAGNOSTICS_ENABLED": "false",
            "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
            "N8N_TEMPLATES_ENABLED": "false",
            "N8N_DYNAMIC_BANNERS_ENABLED": "false",
            "N8N_HIRING_BANNER_ENABLED": "false",
            "N8N_PERSONALIZATION_ENABLED": "false",
            "N8N_AI_ENABLED": "false",
            "N8N_LICENSE_AUTO_RENEW_ENABLED": "false",
            "N8N_COMMUNITY_PACKAGES_ENABLED": "false",
            "EXTERNAL_FRONTEND_HOOKS_URLS": "",
            "N8N_DIAGNOSTICS_CONFIG_FRONTEND": "",
            "N8N_DIAGNOSTICS_CONFIG_BACKEND": "",
            "N8N_LOG_LEVEL": "info",
            "N8N_LOG_OUTPUT": "console",
        }

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            with httpx.Client(base_url=self.base_url, timeout=2) as http:
                if http.get("/healthz/readiness").status_code != 200:
                    return False
                return http.get("/rest/settings").status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, timeout: float = 180) -> N8nAccess:
        """Start n8n (or reuse the one this state folder runs) and return its API access."""
        binary = n8n_binary(self.version)
        if binary is None:
            raise ServiceError(
                f"n8n {self.version} is not installed in {n8n_install_dir(self.version)}: "
                "run scripts/install_n8n.sh"
            )
        if not self.running():
            for port in (self.port, self.broker_port):
                if port_open(port):
                    raise ServiceError(f"port {port} is taken by another process")
            self.dir.mkdir(parents=True, exist_ok=True)
            spawn([str(binary), "start"], self.log, self.pid_file, env=self.environment())
            self._write_ports()
        else:
            self._read_ports()
        wait_until(self._ready, timeout, f"n8n on {self.base_url}", self.log)
        return self.access()

    def _write_ports(self) -> None:
        (self.dir / "rsm-ports.json").write_text(
            json.dumps({"port": self.port, "broker_port": self.broker_port})
        )

    def _read_ports(self) -> None:
        try:
            ports = json.loads((self.dir / "rsm-ports.json").read_text())
        except (FileNotFoundError, ValueError):
            return
        self.port, self.broker_port = int(ports["port"]), int(ports["broker_port"])

    def access(self) -> N8nAccess:
        """The owner and API key, created through the REST API on first use and kept for restarts."""
        saved = self._load_access()
        if saved.get("api_key") and self._key_works(saved["api_key"]):
            return N8nAccess(self.base_url, saved["api_key"])
        password = saved.get("password") or f"Rsm-{secrets.token_urlsafe(18)}-9"
        headers = {"browser-id": BROWSER_ID}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=30) as http:
            settings = _data(http.get("/rest/settings"), "read n8n settings")
            if settings.get("userManagement", {}).get("showSetupOnFirstLoad"):
                _data(
                    http.post(
                        "/rest/owner/setup",
                        json={
                            "email": OWNER_EMAIL,
                            "firstName": "rsm",
                            "lastName": "automation",
                            "password": password,
                        },
                    ),
                    "set up the n8n owner",
                )
            else:
                if not saved.get("password"):
                    raise ServiceError(
                        f"n8n in {self.dir} already has an owner that rsm did not create"
                    )
                _data(
                    http.post(
                        "/rest/login",
                        json={"emailOrLdapLoginId": OWNER_EMAIL, "password": password},
                    ),
                    "log in to n8n",
                )
            scopes = _data(http.get("/rest/api-keys/scopes"), "list API key scopes")
            created = _data(
                http.post(
                    "/rest/api-keys",
                    json={
                        "label": f"{API_KEY_LABEL}-{int(time.time())}",
                        "scopes": scopes,
                        "expiresAt": None,
                    },
                ),
                "create an API key",
            )
        api_key = str(created["rawApiKey"])
        self._save_access({"email": OWNER_EMAIL, "password": password, "api_key": api_key})
        return N8nAccess(self.base_url, api_key)

    def _key_works(self, api_key: str) -> bool:
        try:
            response = httpx.get(
                f"{self.base_url}/api/v1/workflows",
                params={"limit": 1},
                headers={"X-N8N-API-KEY": api_key},
                timeout=10,
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _load_access(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.access_file.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def _save_access(self, values: dict[str, str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.access_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(values))
        tmp.chmod(0o600)
        tmp.replace(self.access_file)

    def stop(self) -> bool:
        # n8n shuts down gracefully on SIGTERM (it deregisters webhooks first): give it time.
        return stop_pid(self.pid_file, timeout=30)


def _data(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        raise ServiceError(f"could not {what}: HTTP {response.status_code}: {message}")
    body = response.json()
    return body["data"] if isinstance(body, dict) and "data" in body else body
