"""The n8n activities: validate an export, list the webhook paths our workflows hold, and deploy,
deactivate, delete and health-check a workflow through n8n's public API (`/api/v1`).

Deploying is idempotent by construction: the n8n workflow is named after our resource
(`<name> [rsm/<resource id>]`), and a deploy first looks for it (by the n8n id we recorded, then by
that name) and updates it in place; only when n8n has none does it create one. The create is a single
request, so a worker killed right after it leaves a workflow the retried deploy finds and updates:
never a second copy. n8n's refusals (4xx) become non-retryable failures carrying n8n's own message;
n8n being down (5xx, connection errors) stays retryable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from state.n8n_models import (
    DeployN8nRequest,
    ListWebhookPathsRequest,
    N8nCredentialCheck,
    N8nCredentialQuery,
    N8nDeployment,
    N8nExport,
    N8nFailureType,
    N8nHealthRequest,
    N8nHealthResult,
    N8nValidationReport,
    N8nWorkflowRequest,
    ReadN8nExportRequest,
    TakenWebhookPath,
    ValidateN8nRequest,
)
from state.n8n_queries import N8nQueries
from state.n8n_validation import CATALOG_DIR, N8nCatalog, catalog_file, validate_workflow

# What n8n 2.8.4's public API accepts (dist/public-api/v1/openapi.yml: `workflow`, `node` and
# `workflowSettings` are additionalProperties: false). Exports carry more (pinData, meta, tags, id,
# versionId, active): sending those is refused, so the body keeps only these.
WORKFLOW_FIELDS = ("nodes", "connections", "settings", "staticData")
NODE_FIELDS = frozenset(
    "id name webhookId disabled notesInFlow notes type typeVersion executeOnce alwaysOutputData"
    " retryOnFail maxTries waitBetweenTries continueOnFail onError position parameters credentials".split()
)
SETTINGS_FIELDS = frozenset(
    "saveExecutionProgress saveManualExecutions saveDataErrorExecution saveDataSuccessExecution"
    " executionTimeout errorWorkflow timezone executionOrder callerPolicy callerIds"
    " timeSavedPerExecution availableInMCP".split()
)
NAME_LIMIT = 128
# The export travels in Temporal payloads (activity inputs, the workflow's input on continue-as-new),
# whose default size limit is 2 MB; real exports are a few kB.
EXPORT_SIZE_LIMIT = 1024 * 1024


class N8nApiError(Exception):
    """n8n refused a request (4xx); `message` is n8n's own explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def marker(resource_id: str) -> str:
    return f"[rsm/{resource_id}]"


def n8n_name(name: str, resource_id: str) -> str:
    """The name our resource's workflow has in n8n: readable, and findable again after a crash."""
    tag = marker(resource_id)
    return f"{name[: NAME_LIMIT - len(tag) - 1]} {tag}"


def deploy_body(workflow_json: str, name: str) -> dict[str, Any]:
    doc = json.loads(workflow_json)
    body: dict[str, Any] = {"name": name}
    for field in WORKFLOW_FIELDS:
        if doc.get(field) is not None:
            body[field] = doc[field]
    body["nodes"] = [{k: v for k, v in n.items() if k in NODE_FIELDS} for n in doc["nodes"]]
    settings = {k: v for k, v in (doc.get("settings") or {}).items() if k in SETTINGS_FIELDS}
    body["settings"] = settings or {"executionOrder": "v1"}
    return body


class N8nApi:
    """A thin client of n8n's public API; the caller owns the httpx client (base URL + API key)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    @classmethod
    def connect(cls, base_url: str, api_key: str, timeout: float = 30.0) -> N8nApi:
        return cls(
            httpx.AsyncClient(
                base_url=base_url.rstrip("/"),
                headers={"X-N8N-API-KEY": api_key, "Accept": "application/json"},
                timeout=timeout,
            )
        )

    @property
    def base_url(self) -> str:
        return str(self._http.base_url).rstrip("/")

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, f"/api/v1{path}", **kwargs)
        if response.status_code >= 500:
            # n8n is up but broken, or restarting: temporary, Temporal retries.
            response.raise_for_status()
        if response.status_code >= 400:
            try:
                message = str(response.json().get("message") or response.text)
            except ValueError:
                message = response.text.strip() or response.reason_phrase
            raise N8nApiError(response.status_code, message)
        return response.json()

    async def get_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        try:
            return dict(await self._call("GET", f"/workflows/{workflow_id}"))
        except N8nApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def find_by_name(self, name: str) -> list[dict[str, Any]]:
        """Every workflow named exactly `name` (n8n filters by substring; we compare exactly)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"name": name, "limit": 250, "excludePinnedData": "true"}
        while True:
            page = await self._call("GET", "/workflows", params=params)
            found += [w for w in page.get("data", []) if w.get("name") == name]
            if not page.get("nextCursor"):
                return sorted(found, key=lambda w: str(w.get("createdAt", "")))
            params = {"cursor": page["nextCursor"], "limit": 250}

    async def create_workflow(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._call("POST", "/workflows", json=body))

    async def update_workflow(self, workflow_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._call("PUT", f"/workflows/{workflow_id}", json=body))

    async def activate(self, workflow_id: str) -> dict[str, Any]:
        return dict(await self._call("POST", f"/workflows/{workflow_id}/activate"))

    async def deactivate(self, workflow_id: str) -> dict[str, Any]:
        return dict(await self._call("POST", f"/workflows/{workflow_id}/deactivate"))

    async def delete(self, workflow_id: str) -> bool:
        try:
            await self._call("DELETE", f"/workflows/{workflow_id}")
        except N8nApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def list_credentials(self) -> list[dict[str, Any]]:
        """Every credential's id, name and type (never its secret). n8n 2.8.4 serves this to the
        owner's key (scope `credential:list` where API key scopes are licensed)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 250}
        while True:
            page = await self._call("GET", "/credentials", params=params)
            found += list(page.get("data", []))
            if not page.get("nextCursor"):
                return found
            params = {"cursor": page["nextCursor"], "limit": 250}

    def webhook_url(self, prefix: str, path: str) -> str:
        return f"{self.base_url}/{prefix}/{path}"

    async def probe_webhook(self, url: str, method: str) -> tuple[bool, str]:
        """Does n8n serve `method` at this production URL? A CORS preflight answers from n8n's
        webhook registry without running the workflow (a real call would execute it)."""
        response = await self._http.request(
            "OPTIONS",
            url,
            headers={"Origin": "http://127.0.0.1", "Access-Control-Request-Method": method},
        )
        allowed = [
            m.strip().upper()
            for m in response.headers.get("access-control-allow-methods", "").split(",")
        ]
        if response.status_code < 300 and method.upper() in allowed:
            return True, f"{method} {url} is registered"
        return False, f"{method} {url} answered {response.status_code} (allows {allowed})"


def _failed(failure_type: str, message: str, **details: Any) -> ApplicationError:
    return ApplicationError(message, details, type=failure_type, non_retryable=True)


@lru_cache(maxsize=8)
def _read_catalog(path: Path) -> N8nCatalog:
    return N8nCatalog.model_validate_json(path.read_bytes())


def load_catalog(n8n_version: str, directory: Path = CATALOG_DIR) -> N8nCatalog:
    path = catalog_file(n8n_version, directory)
    if not path.exists():
        raise _failed(
            N8nFailureType.CATALOG_MISSING,
            f"no node catalog for n8n {n8n_version} ({path.name}): generate it with "
            "scripts/generate_n8n_catalog.py against an install of that version",
            n8n_version=n8n_version,
        )
    return _read_catalog(path)


class N8nValidator:
    def __init__(self, catalog_dir: Path = CATALOG_DIR) -> None:
        self._catalog_dir = catalog_dir

    @activity.defn(name="validate_n8n_workflow")
    async def validate_n8n_workflow(self, req: ValidateN8nRequest) -> N8nValidationReport:
        catalog = load_catalog(req.n8n_version, self._catalog_dir)
        report = validate_workflow(
            req.workflow_json,
            catalog,
            taken_webhook_paths={t.path: t.resource_id for t in req.taken_webhook_paths},
            deploy_inactive=req.deploy_inactive,
        )
        if not report.ok:
            raise _failed(
                N8nFailureType.VALIDATION_FAILED,
                report.summary(),
                problems=[p.model_dump(mode="json") for p in report.problems],
                requirements=[r.model_dump(mode="json") for r in report.requirements],
                n8n_version=catalog.n8n_version,
            )
        return report

    @activity.defn(name="read_n8n_export")
    def read_n8n_export(self, req: ReadN8nExportRequest) -> N8nExport:
        """A redeploy's new export, read where the worker runs (the workflow may not do I/O). Its
        text is returned as it is, JSON or not: validation names what is wrong with it. A plain
        function: file I/O blocks, so it runs on the worker's activity thread pool."""
        path = Path(req.path)
        if not path.is_absolute():
            raise _failed(
                N8nFailureType.EXPORT_UNREADABLE,
                f"the export path {req.path!r} is relative: give an absolute path the worker can read",
                path=req.path,
            )
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise IsADirectoryError(21, "it is not a file")
            if size > EXPORT_SIZE_LIMIT:
                raise _failed(
                    N8nFailureType.EXPORT_UNREADABLE,
                    f"the export {req.path} is {size} bytes; at most {EXPORT_SIZE_LIMIT} are accepted",
                    path=req.path,
                    size=size,
                )
            data = path.read_bytes()
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise _failed(
                N8nFailureType.EXPORT_UNREADABLE,
                f"cannot read the export {req.path} on the worker: {why}",
                path=req.path,
            ) from exc
        # Decoded like `rsm register workflow` reads a file, so both give a file the same version.
        text = data.decode("utf-8", errors="replace")
        return N8nExport(
            path=req.path,
            workflow_json=text,
            version=hashlib.sha256(text.encode()).hexdigest()[:12],
            size=len(data),
        )


class N8nWebhookRegistry:
    def __init__(self, queries: N8nQueries | None) -> None:
        # None: no direct Postgres connection (the Supabase store): paths are not pre-checked, and
        # n8n's own refusal of a clashing activation is what reports a taken path.
        self._queries = queries

    @activity.defn(name="list_active_webhook_paths")
    async def list_active_webhook_paths(
        self, req: ListWebhookPathsRequest
    ) -> list[TakenWebhookPath]:
        if self._queries is None:
            activity.logger.warning("webhook paths not checked: no direct Postgres connection")
            return []
        return await self._queries.active_webhook_paths(req.exclude_resource_id)


class N8nDeployer:
    def __init__(self, api: N8nApi | None, probe_interval: float = 0.5) -> None:
        self._api_or_none = api
        self._probe_interval = probe_interval

    @property
    def _api(self) -> N8nApi:
        if self._api_or_none is None:
            raise _failed(
                N8nFailureType.DEPLOY_FAILED,
                "this worker has no n8n configured: set RSM_N8N_URL and RSM_N8N_API_KEY",
            )
        return self._api_or_none

    async def _ours(
        self, resource_id: str, name: str, known_id: str | None
    ) -> dict[str, Any] | None:
        """Our resource's workflow in n8n, if it has one; stray copies are removed."""
        if known_id:
            existing = await self._api.get_workflow(known_id)
            if existing is not None and not existing.get("isArchived"):
                return existing
        matches = [
            w
            for w in await self._api.find_by_name(n8n_name(name, resource_id))
            if not w.get("isArchived")
        ]
        for extra in matches[1:]:
            activity.logger.warning("removing extra copy %s of %s", extra["id"], resource_id)
            await self._api.delete(str(extra["id"]))
        return matches[0] if matches else None

    @activity.defn(name="deploy_n8n_workflow")
    async def deploy_n8n_workflow(self, req: DeployN8nRequest) -> N8nDeployment:
        name = n8n_name(req.name, req.resource_id)
        body = deploy_body(req.workflow_json, name)
        workflow_id: str | None = None
        step = "look up"
        try:
            activity.heartbeat({"step": "looking up the n8n workflow"})
            existing = await self._ours(req.resource_id, req.name, req.n8n_workflow_id)
            if existing is not None:
                workflow_id, step = str(existing["id"]), "update"
                activity.heartbeat({"step": f"updating n8n workflow {workflow_id}"})
                saved = await self._api.update_workflow(workflow_id, body)
            else:
                step = "create"
                activity.heartbeat({"step": "creating the n8n workflow"})
                saved = await self._api.create_workflow(body)
                workflow_id = str(saved["id"])
            if req.activate:
                step = "activate"
                activity.heartbeat({"step": f"activating n8n workflow {workflow_id}"})
                saved = await self._api.activate(workflow_id)
            elif saved.get("active"):
                step = "deactivate"
                saved = await self._api.deactivate(workflow_id)
        except N8nApiError as exc:
            raise _failed(
                N8nFailureType.DEPLOY_FAILED,
                f"n8n refused to {step} the workflow: {exc.message}",
                n8n_workflow_id=workflow_id,
                http_status=exc.status,
            ) from exc
        return N8nDeployment(
            n8n_workflow_id=workflow_id,
            n8n_name=name,
            active=bool(saved.get("active")),
            created=existing is None,
            webhook_urls=[self._api.webhook_url(w.prefix, w.path) for w in req.webhooks],
        )

    @activity.defn(name="deactivate_n8n_workflow")
    async def deactivate_n8n_workflow(self, req: N8nWorkflowRequest) -> str | None:
        """Deactivate our workflow in n8n; returns its id, or None when n8n has none."""
        existing = await self._ours(req.resource_id, req.name, req.n8n_workflow_id)
        if existing is None:
            return None
        try:
            await self._api.deactivate(str(existing["id"]))
        except N8nApiError as exc:
            if exc.status == 404:
                return None
            raise _failed(
                N8nFailureType.DEPLOY_FAILED, f"n8n refused to deactivate: {exc.message}"
            ) from exc
        return str(existing["id"])

    @activity.defn(name="delete_n8n_workflow")
    async def delete_n8n_workflow(self, req: N8nWorkflowRequest) -> str | None:
        """Delete our workflow from n8n (n8n deactivates it first); None when there was none."""
        existing = await self._ours(req.resource_id, req.name, req.n8n_workflow_id)
        if existing is None:
            return None
        try:
            deleted = await self._api.delete(str(existing["id"]))
        except N8nApiError as exc:
            raise _failed(
                N8nFailureType.DEPLOY_FAILED, f"n8n refused to delete: {exc.message}"
            ) from exc
        return str(existing["id"]) if deleted else None

    @activity.defn(name="verify_n8n_credential")
    async def verify_n8n_credential(self, req: N8nCredentialQuery) -> N8nCredentialCheck:
        """Does the target n8n hold the credential a node references? Matched by type, and by id or
        name when the node named one. `checked=False` when n8n cannot be asked: the caller then
        takes a person's word for it."""
        wanted = f"{req.credential_type} credential"
        if req.name or req.credential_id:
            wanted += f" {req.name or req.credential_id!r}"
        if self._api_or_none is None:
            return N8nCredentialCheck(checked=False, detail="not verified: no n8n configured")
        try:
            credentials = await self._api_or_none.list_credentials()
        except (httpx.HTTPError, N8nApiError) as exc:
            return N8nCredentialCheck(
                checked=False, detail=f"not verified: n8n did not answer ({exc})"
            )
        for cred in credentials:
            if cred.get("type") != req.credential_type:
                continue
            by_id = req.credential_id is not None and str(cred.get("id")) == req.credential_id
            by_name = req.name is not None and cred.get("name") == req.name
            if by_id or by_name or (req.name is None and req.credential_id is None):
                return N8nCredentialCheck(
                    checked=True,
                    exists=True,
                    credential_id=str(cred.get("id")),
                    credential_name=cred.get("name"),
                    detail=f"verified in n8n: {wanted} is credential {cred.get('id')}",
                )
        return N8nCredentialCheck(
            checked=True, detail=f"n8n at {self._api_or_none.base_url} has no {wanted}"
        )

    @activity.defn(name="check_n8n_workflow_health")
    async def check_n8n_workflow_health(self, req: N8nHealthRequest) -> N8nHealthResult:
        started = time.monotonic()
        deadline = started + req.deadline_seconds
        urls = [(self._api.webhook_url(w.prefix, w.path), w.method) for w in req.webhooks]
        attempts, last_error = 0, "no attempt made"
        while True:
            attempts += 1
            activity.heartbeat({"attempt": attempts, "last_error": last_error})
            try:
                workflow = await self._api.get_workflow(req.n8n_workflow_id)
                if workflow is None:
                    raise _failed(
                        N8nFailureType.HEALTH_CHECK_FAILED,
                        f"n8n has no workflow {req.n8n_workflow_id} any more",
                    )
                if not workflow.get("active"):
                    last_error = f"n8n reports workflow {req.n8n_workflow_id} inactive"
                else:
                    results = [await self._api.probe_webhook(u, m) for u, m in urls]
                    failing = [detail for ok, detail in results if not ok]
                    if not failing:
                        return N8nHealthResult(
                            n8n_workflow_id=req.n8n_workflow_id,
                            active=True,
                            webhook_urls=[u for u, _ in urls],
                            attempts=attempts,
                            elapsed_seconds=round(time.monotonic() - started, 3),
                        )
                    last_error = "; ".join(failing)
            except (httpx.HTTPError, N8nApiError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + self._probe_interval > deadline:
                raise _failed(
                    N8nFailureType.HEALTH_CHECK_FAILED,
                    f"n8n workflow {req.n8n_workflow_id} is not healthy after {attempts} "
                    f"attempts: {last_error}",
                    n8n_workflow_id=req.n8n_workflow_id,
                    attempts=attempts,
                    last_error=last_error,
                )
            await asyncio.sleep(self._probe_interval)


def n8n_activities(
    validator: N8nValidator, registry: N8nWebhookRegistry, deployer: N8nDeployer
) -> list[object]:
    """Every n8n activity, for the worker's registration list."""
    return [
        validator.validate_n8n_workflow,
        validator.read_n8n_export,
        registry.list_active_webhook_paths,
        deployer.deploy_n8n_workflow,
        deployer.deactivate_n8n_workflow,
        deployer.delete_n8n_workflow,
        deployer.check_n8n_workflow_health,
        deployer.verify_n8n_credential,
    ]
