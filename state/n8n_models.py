"""Pydantic payloads of the n8n workflow lifecycle: its input, the activities' requests and results,
and the failure type names its activities raise and its workflow branches on.

The workflow export travels as its raw text (not parsed): a file that is not even JSON must still
reach validation, be recorded as `failed_validation` and name the parse error. The text is never
written to the database (it may hold the very plaintext secret validation rejects); the resource's
`spec` row keeps only its source, version and options.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from state.machines import ResourceState
from state.models import LifecyclePolicy, RequirementStatus, ResourceRef

# The n8n release the catalog and the dev stack target by default (DESIGN §9: the newest whose
# engines accept node 20).
DEFAULT_N8N_VERSION = "2.8.4"


class N8nFailureType:
    """`ApplicationError.type` names of the n8n activities (the style of `state.errors.FailureType`)."""

    VALIDATION_FAILED = "N8nValidationFailed"
    CATALOG_MISSING = "N8nCatalogMissing"
    DEPLOY_FAILED = "N8nDeployFailed"
    HEALTH_CHECK_FAILED = "N8nHealthCheckFailed"
    # A redeploy's export file is missing, unreadable or too large (always raised non-retryable;
    # kept out of NON_RETRYABLE so the retry policies recorded in older histories stay the same).
    EXPORT_UNREADABLE = "N8nExportUnreadable"

    NON_RETRYABLE = (VALIDATION_FAILED, CATALOG_MISSING, DEPLOY_FAILED, HEALTH_CHECK_FAILED)


class Rule(StrEnum):
    """Every validation rule, named; a problem carries the rule it broke."""

    JSON = "json"
    SHAPE = "shape"
    DUPLICATE_NODE_NAME = "duplicate_node_name"
    UNKNOWN_CONNECTION_SOURCE = "unknown_connection_source"
    UNKNOWN_CONNECTION_TARGET = "unknown_connection_target"
    UNKNOWN_NODE_TYPE = "unknown_node_type"
    UNSUPPORTED_TYPE_VERSION = "unsupported_type_version"
    PLAINTEXT_SECRET = "plaintext_secret"
    DUPLICATE_WEBHOOK_PATH = "duplicate_webhook_path"
    WEBHOOK_PATH_TAKEN = "webhook_path_taken"
    NO_TRIGGER = "no_trigger"


class N8nProblem(BaseModel):
    rule: Rule
    node: str | None = None
    message: str


class N8nRequirement(BaseModel):
    """Something the target n8n must have before the workflow can run (the gates issue waits on it)."""

    type: str = "credential"
    name: str
    credential_type: str
    credential_id: str | None = None
    nodes: list[str] = Field(default_factory=list)


class N8nWebhook(BaseModel):
    node: str
    path: str
    method: str = "GET"
    # n8n serves webhooks under /webhook, form triggers under /form, MCP triggers under /mcp.
    prefix: str = "webhook"


class N8nValidationReport(BaseModel):
    problems: list[N8nProblem] = Field(default_factory=list)
    requirements: list[N8nRequirement] = Field(default_factory=list)
    webhooks: list[N8nWebhook] = Field(default_factory=list)
    trigger_nodes: list[str] = Field(default_factory=list)
    node_count: int = 0
    workflow_name: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def webhook_paths(self) -> list[str]:
        return sorted({w.path for w in self.webhooks})

    def summary(self) -> str:
        if self.ok:
            return f"{self.node_count} nodes valid"
        first = self.problems[0]
        where = f" ({first.node})" if first.node else ""
        more = f" and {len(self.problems) - 1} more" if len(self.problems) > 1 else ""
        return f"{len(self.problems)} problem(s): {first.rule}{where}: {first.message}{more}"


class N8nWorkflowSpec(BaseModel):
    source: str
    version: str
    workflow_json: str
    n8n_version: str = DEFAULT_N8N_VERSION
    # A workflow without a trigger cannot be activated; registered this way it is deployed and left
    # inactive instead of failing validation.
    deploy_inactive: bool = False

    def recorded(self) -> dict[str, Any]:
        """What the database's `spec` column keeps: everything but the export itself."""
        return self.model_dump(exclude={"workflow_json"})


class N8nLifecycleInput(BaseModel):
    ref: ResourceRef
    name: str
    owner_team: str = ""
    spec: N8nWorkflowSpec
    policy: LifecyclePolicy = Field(default_factory=LifecyclePolicy)
    # A deploy that stops heartbeating this long (a killed worker) is retried on another worker.
    step_heartbeat: timedelta = timedelta(seconds=30)
    # Carried across continue-as-new so idempotency keys never repeat within a workflow id.
    transition_seq: int = 0
    resume_state: ResourceState | None = None
    n8n_workflow_id: str | None = None
    webhooks: list[N8nWebhook] = Field(default_factory=list)
    # The gate's state: the credentials the last successful validation found (None: not validated
    # yet) and every requirement's status.
    credentials: list[N8nRequirement] | None = None
    requirement_statuses: dict[str, RequirementStatus] = Field(default_factory=dict)
    # Redeploys: the export that last reached `active` (a failed new version returns to it), the
    # versions that failed to deploy (refused until a newer one is given), the version n8n serves.
    last_good: N8nWorkflowSpec | None = None
    bad_versions: list[str] = Field(default_factory=list)
    live_version: str | None = None


# -- activity payloads ---------------------------------------------------------------------------


class ListWebhookPathsRequest(BaseModel):
    exclude_resource_id: str | None = None


class TakenWebhookPath(BaseModel):
    path: str
    resource_id: str


class ValidateN8nRequest(BaseModel):
    resource_id: str
    workflow_json: str
    n8n_version: str = DEFAULT_N8N_VERSION
    deploy_inactive: bool = False
    taken_webhook_paths: list[TakenWebhookPath] = Field(default_factory=list)


class ReadN8nExportRequest(BaseModel):
    """A redeploy's new export: a JSON file on a path the worker can read."""

    path: str


class N8nExport(BaseModel):
    path: str
    # The raw text, like N8nWorkflowSpec.workflow_json: even a file that is not JSON is validated
    # (and named as such) rather than refused here.
    workflow_json: str
    # The same content hash `rsm register workflow` gives the file.
    version: str
    size: int


class DeployN8nRequest(BaseModel):
    resource_id: str
    name: str
    version: str
    workflow_json: str
    # Our resource's n8n workflow from an earlier deploy: updated in place, never copied.
    n8n_workflow_id: str | None = None
    activate: bool = True
    webhooks: list[N8nWebhook] = Field(default_factory=list)


class N8nDeployment(BaseModel):
    n8n_workflow_id: str
    n8n_name: str
    active: bool
    created: bool
    webhook_urls: list[str] = Field(default_factory=list)


class N8nWorkflowRequest(BaseModel):
    resource_id: str
    name: str
    n8n_workflow_id: str | None = None


class N8nHealthRequest(BaseModel):
    resource_id: str
    n8n_workflow_id: str
    webhooks: list[N8nWebhook] = Field(default_factory=list)
    deadline_seconds: float = 30.0


class N8nHealthResult(BaseModel):
    n8n_workflow_id: str
    active: bool
    webhook_urls: list[str] = Field(default_factory=list)
    attempts: int
    elapsed_seconds: float


class N8nCredentialQuery(BaseModel):
    """Does the target n8n hold a credential of this type (and this name or id, when the node
    referenced one)?"""

    credential_type: str
    name: str | None = None
    credential_id: str | None = None


class N8nCredentialCheck(BaseModel):
    # False: n8n could not be asked (down, no n8n configured, the key may not list credentials).
    checked: bool
    exists: bool = False
    credential_id: str | None = None
    credential_name: str | None = None
    detail: str = ""


class N8nStatus(BaseModel):
    """What the `get_n8n` query answers: where the workflow lives and what validation found."""

    n8n_workflow_id: str | None = None
    webhooks: list[N8nWebhook] = Field(default_factory=list)
    problems: list[N8nProblem] = Field(default_factory=list)
    requirements: list[N8nRequirement] = Field(default_factory=list)
    requirement_statuses: dict[str, RequirementStatus] = Field(default_factory=dict)
