"""Request and response bodies of the HTTP API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from state.machines import ResourceState, ResourceType
from state.models import ResourceRow
from state.queries import AwaitingRow, ReadinessRow, Requirement, StateCount
from state.webhook_models import WebhookDelivery, WebhookFilter, WebhookSubscription

# Text that reaches Postgres: it cannot hold NUL bytes, so refuse them at the door (422), not in an
# activity that would then fail on every retry.
Text = Annotated[str, StringConstraints(max_length=2000, pattern=r"^[^\x00]*$")]
ShortText = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00]*$")]
ResourceId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
Owner = Annotated[str, StringConstraints(max_length=63, pattern=r"^[A-Za-z0-9._-]*$")]
CommandName = Literal["retry", "deactivate", "activate", "redeploy", "scale", "archive"]
Action = Literal["approve", "reject", "retry", "archive", "deactivate", "activate"]


class Strict(BaseModel):
    """A request body: an unknown (misspelt) field is refused, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ResourceOut(ResourceRow):
    temporal_ui: str
    # What the caller's token may do to this resource now (drives the page's buttons).
    actions: list[Action] = Field(default_factory=list)


class ResourceList(BaseModel):
    items: list[ResourceOut]
    total: int
    limit: int
    offset: int


class Overview(BaseModel):
    counts: list[StateCount]
    by_type: dict[str, dict[str, int]]
    totals: dict[str, int]
    total: int
    awaiting_action: int


class AwaitingOut(AwaitingRow):
    temporal_ui: str
    actions: list[Action] = Field(default_factory=list)


class AwaitingList(BaseModel):
    items: list[AwaitingOut]
    total: int


class ReadinessSummary(BaseModel):
    total: int
    ready: int
    not_ready: int
    by_type: dict[str, dict[str, int]]


class Readiness(BaseModel):
    summary: ReadinessSummary
    items: list[ReadinessRow]


class ResourceDetail(BaseModel):
    resource: ResourceOut
    waiting_on: list[str]
    requirements: list[Requirement]
    allowed_transitions: list[ResourceState]
    mcp: dict[str, Any] | None = None


class TransitionOut(BaseModel):
    transition_id: int
    resource_id: str
    from_state: ResourceState | None
    to_state: ResourceState
    actor: str
    reason: str
    metadata: dict[str, Any]
    recorded_at: datetime


class TransitionList(BaseModel):
    resource_id: str
    items: list[TransitionOut]


class Me(BaseModel):
    authenticated: bool
    actor: str | None = None
    role: str | None = None
    permissions: list[str] = Field(default_factory=list)
    anonymous_read: bool
    temporal_ui_url: str
    refresh_seconds: float
    resource_types: list[ResourceType]
    states: list[ResourceState]


class Health(BaseModel):
    database: str
    temporal: str


# -- writes ----------------------------------------------------------------------------------


class PolicyIn(Strict):
    """The gates a registration asks for (approval, requirements); see state.models.LifecyclePolicy."""

    approval_required: bool = False
    approvers: list[Annotated[str, StringConstraints(max_length=64, pattern=r"^[^\x00]+$")]] = (
        Field(default_factory=list, max_length=50)
    )
    requirements: list[
        Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
    ] = Field(default_factory=list, max_length=50)


class RegisterMcp(Strict):
    type: Literal["mcp_server"]
    path: Text = Field(description="Server-side directory with a Dockerfile, under a source root.")
    id: ResourceId | None = None
    owner_team: Owner = ""
    policy: PolicyIn = Field(default_factory=PolicyIn)
    # Where it runs; unset: the worker's default runtime.
    runtime: Literal["docker", "kubernetes"] | None = None


class RegisterN8n(Strict):
    type: Literal["n8n_workflow"]
    workflow: dict[str, Any] = Field(description="The exported n8n workflow JSON.")
    id: ResourceId
    name: ShortText | None = None
    owner_team: Owner = ""
    deploy_inactive: bool = False
    policy: PolicyIn = Field(default_factory=PolicyIn)


class RegisterTeam(Strict):
    type: Literal["team"]
    path: Text = Field(description="Server-side team manifest (YAML), under a source root.")
    id: ResourceId | None = None
    owner_team: Owner = ""
    policy: PolicyIn = Field(default_factory=PolicyIn)


RegisterRequest = Annotated[RegisterMcp | RegisterN8n | RegisterTeam, Field(discriminator="type")]


class Registered(BaseModel):
    resource_id: str
    resource_type: ResourceType
    workflow_id: str
    temporal_ui: str
    actor: str


class DecisionIn(Strict):
    reason: Text = ""


class RequirementIn(Strict):
    status: Literal["pending", "satisfied", "failed", "waived"]
    reason: Text = ""


class TransitionIn(Strict):
    to_state: ResourceState
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[^\x00]*$")]


class CommandIn(Strict):
    reason: Text = ""
    # redeploy: a new source under a source root, and its version.
    context_path: Text | None = None
    version: ShortText | None = None
    # scale: the new replica count.
    replicas: int | None = Field(default=None, ge=0, le=100)


class ActionResult(BaseModel):
    resource_id: str
    resource_type: ResourceType
    action: str
    accepted: bool
    state: ResourceState
    message: str
    actor: str
    temporal_ui: str


# -- bulk ------------------------------------------------------------------------------------


def _no_nulls_and_not_empty(schema: dict[str, Any]) -> None:
    # The schema says what the validator enforces: no field is null and at least one is given, so
    # every schema-valid filter names something (an empty filter would match every resource).
    for prop in schema.get("properties", {}).values():
        options = prop.pop("anyOf", None)
        if options:
            prop.update(next(o for o in options if o.get("type") != "null"))
        prop.pop("default", None)
    schema["minProperties"] = 1


class BulkFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_nulls_and_not_empty)

    type: ResourceType | None = None
    state: ResourceState | None = None
    owner_team: (
        Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9._-]+$")]
        | None
    ) = None
    search: (
        Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
        | None
    ) = None
    resource_ids: list[ResourceId] | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        nulls = sorted(k for k, v in data.items() if v is None) if isinstance(data, dict) else []
        if nulls:
            raise ValueError(f"omit a filter field rather than send null: {', '.join(nulls)}")
        return data

    @model_validator(mode="after")
    def _not_empty(self) -> BulkFilter:
        if not (self.type or self.state or self.owner_team or self.search or self.resource_ids):
            raise ValueError("the filter is empty: name a type, state, owner_team, search or ids")
        return self


class BulkRequest(Strict):
    """Which resources (`filter`) and why; the action is the route (`/api/bulk/commands/archive`)."""

    filter: BulkFilter
    reason: Text = ""
    dry_run: bool = False
    max_matches: int = Field(default=100, ge=1, le=1000)


class BulkTransition(BulkRequest):
    to_state: ResourceState
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[^\x00]*$")]


class BulkItem(BaseModel):
    resource_id: str
    resource_type: ResourceType
    state_before: ResourceState
    outcome: Literal["matched", "accepted", "refused", "forbidden", "failed"]
    status_code: int
    detail: str
    state_after: ResourceState | None = None


class BulkResult(BaseModel):
    action: str
    dry_run: bool
    matched: int
    accepted: int
    refused: int
    forbidden: int
    failed: int
    items: list[BulkItem]


# -- webhooks --------------------------------------------------------------------------------


class WebhookIn(Strict):
    # Host names and IPv4 addresses, an optional port, a printable ASCII (percent-encoded) rest:
    # what urlsplit reads back without surprises.
    url: Annotated[
        str,
        StringConstraints(
            max_length=2000,
            pattern=r"^https?://[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?([/?#][!-~]*)?$",
        ),
    ]
    event_filter: WebhookFilter = Field(default_factory=WebhookFilter)
    description: ShortText = ""
    # Given or generated; returned once, in the creation response only.
    secret: (
        Annotated[str, StringConstraints(min_length=16, max_length=200, pattern=r"^[!-~]+$")] | None
    ) = None


class WebhookCreated(BaseModel):
    subscription: WebhookSubscription
    secret: str


class WebhookList(BaseModel):
    items: list[WebhookSubscription]


class DeliveryList(BaseModel):
    items: list[WebhookDelivery]
