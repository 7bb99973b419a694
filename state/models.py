"""Pydantic payloads shared by workflows, activities, the client facade and the stores.

Every workflow and activity takes exactly one of these models, so fields can be added compatibly
(samples-python's single-input rule). They travel through `pydantic_data_converter`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from state.machines import ResourceState, ResourceType

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
ID_RULE = (
    "lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63"
    " characters"
)


class ResourceRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    resource_type: ResourceType
    resource_id: str = Field(pattern=ID_PATTERN)

    @property
    def workflow_id(self) -> str:
        return workflow_id_for(self.resource_type, self.resource_id)


def refuse_nul(value: Any) -> Any:
    """Postgres text and jsonb cannot hold NUL characters: refused where a message enters, with a
    name, instead of failing in the store where a retry would repeat it forever."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL (\\x00) characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(key)
            refuse_nul(item)
    elif isinstance(value, list | tuple):
        for item in value:
            refuse_nul(item)
    return value


# Text and JSON objects people send in messages (reasons, actors, metadata, details).
Text = Annotated[str, AfterValidator(refuse_nul)]
JsonObject = Annotated[dict[str, Any], AfterValidator(refuse_nul)]
# A reason is free text, but a whole log pasted into one would not fit a Temporal payload.
MAX_REASON = 10_000


def workflow_id_for(resource_type: ResourceType | str, resource_id: str) -> str:
    return f"resource/{ResourceType(resource_type).value}/{resource_id}"


RequirementType = Literal["credential", "approval", "dependency", "other"]
RequirementStatus = Literal["pending", "satisfied", "failed", "waived"]


class ApprovalPolicy(BaseModel):
    required: bool = False
    # Empty: anyone but the registrant may approve.
    approvers: list[str] = Field(default_factory=list)
    # Counted from the moment the resource reaches the gate; None waits for ever.
    deadline: timedelta | None = None
    on_deadline: Literal["fail", "approve"] = "fail"


class ApprovalDecision(BaseModel):
    approver: Text = Field(min_length=1)
    reason: Text = Field(default="", max_length=MAX_REASON)


class RequirementSpec(BaseModel):
    name: str = Field(min_length=1)
    requirement_type: RequirementType = "other"
    details: dict[str, str] = Field(default_factory=dict)


class LifecyclePolicy(BaseModel):
    """How a lifecycle may proceed: who registered it, what it must wait for, how long steps take."""

    actor: str = "system"
    build_timeout: timedelta = timedelta(minutes=30)
    deploy_timeout: timedelta = timedelta(minutes=5)
    health_deadline: timedelta = timedelta(seconds=30)
    # How long a build or rollout may go without a heartbeat before Temporal retries it elsewhere
    # (a worker that died mid-build is noticed after this long).
    step_heartbeat_timeout: timedelta = timedelta(seconds=30)
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    requirements: list[RequirementSpec] = Field(default_factory=list)
    # How often a transition the database refused as schema drift is tried again.
    schema_drift_retry: timedelta = timedelta(minutes=1)


class McpServerSpec(BaseModel):
    """Where an MCP server's source lives and how to build and run it."""

    context_path: str
    dockerfile: str = "Dockerfile"
    build_args: dict[str, str] = Field(default_factory=dict)
    version: str
    mcp_path: str = "/mcp"
    # Where it runs: the local Docker runtime or a Kubernetes cluster (the worker's kubeconfig).
    runtime: Literal["docker", "kubernetes"] = "docker"


class McpLifecycleInput(BaseModel):
    ref: ResourceRef
    name: str
    owner_team: str = ""
    spec: McpServerSpec
    policy: LifecyclePolicy = Field(default_factory=LifecyclePolicy)
    # Carried across continue-as-new so idempotency keys never repeat within a workflow id.
    transition_seq: int = 0
    resume_state: ResourceState | None = None
    deployment: DeploymentInfo | None = None
    last_good: DeploymentInfo | None = None
    bad_versions: list[str] = Field(default_factory=list)
    requirement_statuses: dict[str, RequirementStatus] = Field(default_factory=dict)
    # The approval given to the running version, carried across continue-as-new.
    approval: ApprovalDecision | None = None


class RegisterResourceRequest(BaseModel):
    ref: ResourceRef
    name: str
    owner_team: str = ""
    version: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    workflow_id: str
    actor: str = "system"
    machine_version: int


class TransitionRequest(BaseModel):
    ref: ResourceRef
    to_state: ResourceState
    actor: str
    reason: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str
    from_state: ResourceState | None = None
    workflow_id: str | None = None
    run_id: str | None = None
    mcp_registry: McpRegistryEntry | None = None


class TransitionRecord(BaseModel):
    transition_id: int
    resource_id: str
    from_state: ResourceState | None
    to_state: ResourceState
    actor: str
    reason: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    recorded_at: datetime
    replayed: bool = False
    # Some webhook subscription is active: the lifecycle schedules a delivery for this transition
    # (none is scheduled otherwise, so a lifecycle without subscribers pays nothing for webhooks).
    deliver_webhooks: bool = False


class McpRegistryEntry(BaseModel):
    image: str | None = None
    runtime: str | None = None
    runtime_ref: str | None = None
    endpoint: str | None = None
    server_name: str | None = None
    protocol_version: str | None = None
    tools: list[str] = Field(default_factory=list)
    healthy: bool = False


class ResourceRow(BaseModel):
    resource_id: str
    resource_type: ResourceType
    name: str
    owner_team: str
    current_state: ResourceState
    machine_version: int
    version: str | None
    spec: dict[str, Any]
    workflow_id: str | None
    registered_by: str
    created_at: datetime
    updated_at: datetime


# -- activity payloads ---------------------------------------------------------------------------


class BuildImageRequest(BaseModel):
    resource_id: str
    name: str
    version: str
    context_path: str
    dockerfile: str = "Dockerfile"
    build_args: dict[str, str] = Field(default_factory=dict)


class BuildImageResult(BaseModel):
    image: str
    image_id: str
    log_tail: list[str] = Field(default_factory=list)
    duration_seconds: float


class DeployRequest(BaseModel):
    resource_id: str
    name: str
    version: str
    image: str
    mcp_path: str = "/mcp"
    # A rollback: a running container of this very version is the good one still serving (the
    # redeploy failed before replacing it), so it is kept rather than restarted.
    keep_running: bool = False


class DeploymentInfo(BaseModel):
    runtime: str
    runtime_ref: str
    endpoint: str
    image: str
    version: str
    kept: bool = False  # the container that was already running (see keep_running)


class HealthCheckRequest(BaseModel):
    resource_id: str
    endpoint: str
    deadline_seconds: float = 30.0


class McpHealthResult(BaseModel):
    server_name: str
    server_version: str | None = None
    protocol_version: str
    tools: list[str]
    attempts: int
    elapsed_seconds: float


class StopRuntimeRequest(BaseModel):
    resource_id: str


class TransitionView(BaseModel):
    """A transition as the workflow remembers it, for the `get_transitions` query."""

    from_state: ResourceState | None
    to_state: ResourceState
    actor: str
    reason: str
    at: datetime


class LifecycleStatus(BaseModel):
    ref: ResourceRef
    state: ResourceState
    blocked_on: list[str] = Field(default_factory=list)
    failure_reason: str | None = None
    deployment: DeploymentInfo | None = None
    version: str | None = None
    last_good_version: str | None = None
    bad_versions: list[str] = Field(default_factory=list)
    approved_by: str | None = None
    # Set while the database refuses a transition as schema drift (a migration is missing).
    schema_error: str | None = None
    # Messages refused because they arrived as signals (which cannot answer), newest last.
    refusals: list[str] = Field(default_factory=list)
    # False while a step, a queued command or a redeploy is under way: a state that looks settled
    # is not final yet (a rollback follows a failed redeploy; a scale follows its command).
    resting: bool = True


class LifecycleResult(BaseModel):
    ref: ResourceRef
    final_state: ResourceState
    transitions: int


class ReportedLifecycleInput(BaseModel):
    """A resource whose steps an outside system (a factory, CI, a GitOps script) performs and
    reports, one transition at a time; see workflows/reported_lifecycle.py."""

    ref: ResourceRef
    name: Text = Field(min_length=1, max_length=200)
    # A search attribute too (OwnerTeam), which Temporal caps at 2 KB.
    owner_team: Text = Field(default="", max_length=200)
    actor: Text = Field(default="system", min_length=1, max_length=200)
    reason: Text = Field(default="registered", max_length=MAX_REASON)
    # Recorded on the `registered` row and kept as the resource's spec (mcp_type, framework, ...).
    metadata: JsonObject = Field(default_factory=dict)
    # Carried across continue-as-new.
    transition_seq: int = 0
    resume_state: ResourceState | None = None
    requirements: list[RequirementUpdateState] = Field(default_factory=list)


class RequirementUpdateState(BaseModel):
    """A requirement as a reported lifecycle remembers it across continue-as-new."""

    name: str
    requirement_type: RequirementType = "other"
    status: RequirementStatus = "pending"
    details: dict[str, Any] = Field(default_factory=dict)


class CommandRequest(BaseModel):
    actor: Text = "operator"
    reason: Text = Field(default="", max_length=MAX_REASON)


McpLifecycleInput.model_rebuild()
ReportedLifecycleInput.model_rebuild()
TransitionRequest.model_rebuild()
