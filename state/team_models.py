"""Teams: the manifest people write, the team lifecycle's input, and the team runtime's payloads.

A team is an agent service described by a YAML manifest (examples/teams/research-team/team.yaml):
a name, an owner, either a build context (a directory with a Dockerfile, relative to the manifest) or
a ready image, a replica count, the resources it depends on (`mcp_server/toolbox` or
`{type: mcp_server, id: toolbox}`) and the runtime that runs it (`docker`, the default, or
`kubernetes`: one Deployment with `replicas` pods behind a Service). `load_manifest` turns a file into a `TeamManifest` or raises
`ManifestError` naming the field at fault, so a bad manifest never reaches a workflow.

Pure pydantic, like state/models.py: the team runtime activities (activities/team_runtime.py) take
and return these models, the team workflow passes them by activity name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from state.commands import ApprovalDecision
from state.machines import ResourceState, ResourceType
from state.models import (
    ID_PATTERN,
    ID_RULE,
    LifecyclePolicy,
    LifecycleStatus,
    RequirementStatus,
    ResourceRef,
)
from state.runtime_models import RuntimeKind, ServiceHealthResult

MAX_REPLICAS = 20
# `ApplicationError.type` of a failed team health check (state.errors.FailureType style; kept here
# with the rest of the team's vocabulary).
TEAM_UNHEALTHY = "TeamUnhealthy"
# Docker labels the team runtime puts on every container it starts.
RESOURCE_LABEL = "rsm.resource_id"
REPLICA_LABEL = "rsm.replica"
PORT_LABEL = "rsm.port"
VERSION_LABEL = "rsm.version"

_ID_PATTERN = ID_PATTERN


class ManifestError(Exception):
    """A team manifest that cannot be registered. `field` names the first field at fault (None when
    the file itself is unreadable); `problems` lists every (field, message) found."""

    def __init__(self, source: str, problems: list[tuple[str | None, str]]) -> None:
        self.source = source
        self.problems = problems
        self.field = problems[0][0] if problems else None
        text = "; ".join(f"{field}: {msg}" if field else msg for field, msg in problems)
        super().__init__(f"team manifest {source}: {text}")


def _parse_ref(value: Any) -> Any:
    """`mcp_server/toolbox` or `{type: mcp_server, id: toolbox}` -> ResourceRef's fields."""
    types = ", ".join(t.value for t in ResourceType)
    if isinstance(value, str):
        kind, slash, rid = value.partition("/")
        if not slash or not kind or not rid:
            raise PydanticCustomError(
                "resource_ref",
                "{value} is not a resource ref: write type/id (e.g. mcp_server/toolbox)",
                {"value": repr(value)},
            )
        value = {"type": kind, "id": rid}
    if isinstance(value, dict) and ("type" in value or "id" in value):
        if set(value) - {"type", "id"}:
            raise PydanticCustomError(
                "resource_ref",
                "a resource ref has only `type` and `id`, got {keys}",
                {"keys": ", ".join(sorted(map(str, value)))},
            )
        given = value.get("type")
        if given not in {t.value for t in ResourceType}:
            raise PydanticCustomError(
                "resource_ref",
                "unknown resource type {kind} (one of {types})",
                {"kind": repr(given), "types": types},
            )
        return {"resource_type": given, "resource_id": value.get("id")}
    if isinstance(value, ResourceRef | dict):
        return value
    raise PydanticCustomError(
        "resource_ref",
        "a resource ref is `type/id` or a mapping with `type` and `id`, not {value}",
        {"value": repr(value)},
    )


DependencyRef = Annotated[ResourceRef, BeforeValidator(_parse_ref)]


class TeamManifest(BaseModel):
    """What a team is. After `load_manifest`, `build` is an absolute directory."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_ID_PATTERN)
    owner: str = Field(min_length=1)
    build: str | None = None
    dockerfile: str = "Dockerfile"
    image: str | None = Field(default=None, min_length=1)
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS, strict=True)
    depends_on: list[DependencyRef] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    # The variable that carries the instance's port (PORT is always set too), and the path that must
    # answer HTTP 200 for an instance to count as healthy; without it, running is healthy.
    port_env: str = Field(default="PORT", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    health_path: str | None = Field(default=None, pattern=r"^/")
    # docker: one container per replica on this machine, each health-checked over HTTP. kubernetes:
    # a Deployment of `replicas` pods whose readiness probe GETs health_path on every pod, then one
    # GET of health_path through the team's Service once the rollout is complete.
    runtime: RuntimeKind = "docker"

    @model_validator(mode="after")
    def _one_source(self) -> TeamManifest:
        if (self.build is None) == (self.image is None):
            raise PydanticCustomError(
                "team_source",
                "give exactly one of `build` (a directory with a Dockerfile) or `image`"
                + (", not both" if self.build is not None else ""),
                {"field": "build"},
            )
        seen: set[str] = set()
        for ref in self.depends_on:
            key = f"{ref.resource_type.value}/{ref.resource_id}"
            if key in seen:
                raise PydanticCustomError(
                    "duplicate_dependency",
                    "{key} is listed twice",
                    {"key": key, "field": "depends_on"},
                )
            seen.add(key)
        return self

    def self_dependency(self, team_id: str) -> str | None:
        """The problem when the team registered as `team_id` lists itself: it would wait forever."""
        for i, ref in enumerate(self.depends_on):
            if ref.resource_type is ResourceType.TEAM and ref.resource_id == team_id:
                return (
                    f"depends_on[{i}]: team/{team_id} is this team: a team cannot wait for itself"
                )
        return None


def _field_of(error: Any) -> str | None:
    parts: list[str] = []
    for part in error.get("loc", ()):
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]" if parts else f"[{part}]"]
        elif isinstance(part, str) and not part.startswith("function-"):
            parts.append(part)
    return ".".join(parts) or (error.get("ctx") or {}).get("field")


def _message_of(error: Any) -> str:
    kind = error.get("type")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a manifest field"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch" and (error.get("ctx") or {}).get("pattern") == _ID_PATTERN:
        return f"{error.get('input')!r} is not a valid id: {ID_RULE}"
    if kind in {"greater_than_equal", "less_than_equal"} and error.get("loc") == ("replicas",):
        return f"must be between 1 and {MAX_REPLICAS}, got {error.get('input')!r}"
    return str(error.get("msg", "is invalid")).removeprefix("Value error, ")


def parse_manifest(
    data: Any, source: str = "<manifest>", base_dir: Path | None = None
) -> TeamManifest:
    """Validate a parsed manifest; `build` is resolved against base_dir and must hold the Dockerfile."""
    if not isinstance(data, dict):
        raise ManifestError(source, [(None, "must be a YAML mapping of fields (name, owner, ...)")])
    try:
        manifest = TeamManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(
            source, [(_field_of(e), _message_of(e)) for e in exc.errors(include_url=False)]
        ) from None
    if manifest.build is not None:
        context = Path(manifest.build).expanduser()
        if not context.is_absolute():
            context = (base_dir or Path.cwd()) / context
        context = context.resolve()
        if not context.is_dir():
            raise ManifestError(source, [("build", f"{manifest.build} is not a directory")])
        if not (context / manifest.dockerfile).is_file():
            raise ManifestError(
                source, [("build", f"{manifest.build} has no {manifest.dockerfile}")]
            )
        manifest = manifest.model_copy(update={"build": str(context)})
    return manifest


def load_manifest(path: Path) -> TeamManifest:
    path = path.expanduser()
    if not path.is_file():
        raise ManifestError(str(path), [(None, "no such file")])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ManifestError(str(path), [(None, f"not valid YAML: {exc}")]) from None
    return parse_manifest(data, str(path), path.resolve().parent)


# -- the workflow's input and status --------------------------------------------------------------


class TeamInstance(BaseModel):
    replica: int
    container_id: str
    name: str
    endpoint: str


class TeamDeployment(BaseModel):
    runtime: str = "docker"
    image: str
    version: str
    instances: list[TeamInstance] = Field(default_factory=list)
    # Kubernetes: the Deployment (namespace/deployment/name), the Service's URL and spec.replicas;
    # the pods behind them are the cluster's to replace, so they are not listed as instances.
    runtime_ref: str | None = None
    endpoint: str | None = None
    desired_replicas: int | None = None

    @property
    def replicas(self) -> int:
        if self.desired_replicas is not None:
            return self.desired_replicas
        return len(self.instances)

    @property
    def where(self) -> str:
        """Where the team answers, for a transition's reason."""
        if self.endpoint is not None:
            return self.endpoint
        return ", ".join(i.endpoint for i in self.instances)


class TeamLifecycleInput(BaseModel):
    ref: ResourceRef
    name: str
    owner_team: str = ""
    manifest: TeamManifest
    # The build context's content hash, or the image reference for an `image` team.
    version: str
    policy: LifecyclePolicy = Field(default_factory=LifecyclePolicy)
    # Carried across continue-as-new (idempotency keys never repeat within a workflow id).
    transition_seq: int = 0
    resume_state: ResourceState | None = None
    deployment: TeamDeployment | None = None
    last_good: TeamDeployment | None = None
    bad_versions: list[str] = Field(default_factory=list)
    requirement_statuses: dict[str, RequirementStatus] = Field(default_factory=dict)
    dependency_states: dict[str, ResourceState | None] = Field(default_factory=dict)
    approval: ApprovalDecision | None = None


class TeamStatus(LifecycleStatus):
    """`get_status` of a team: the common status plus its instances, health and dependencies (a
    client that asks for LifecycleStatus reads the common part)."""

    replicas: int = 0
    team: TeamDeployment | None = None
    health: TeamHealth | None = None
    dependencies: dict[str, ResourceState | None] = Field(default_factory=dict)


# -- activity payloads ------------------------------------------------------------------------------


class TeamDeployRequest(BaseModel):
    resource_id: str
    name: str
    version: str
    image: str
    replicas: int = Field(ge=1, le=MAX_REPLICAS)
    env: dict[str, str] = Field(default_factory=dict)
    port_env: str = "PORT"


class TeamHealthRequest(BaseModel):
    resource_id: str
    deployment: TeamDeployment
    health_path: str | None = None
    deadline_seconds: float = 30.0


class InstanceHealth(BaseModel):
    replica: int
    container_id: str
    endpoint: str
    healthy: bool
    detail: str


class TeamHealth(BaseModel):
    instances: list[InstanceHealth]
    elapsed_seconds: float = 0.0
    # Kubernetes: the GET of health_path through the team's Service after the rollout.
    service_check: ServiceHealthResult | None = None

    @property
    def healthy(self) -> bool:
        return bool(self.instances) and all(i.healthy for i in self.instances)

    @property
    def unhealthy(self) -> list[InstanceHealth]:
        return [i for i in self.instances if not i.healthy]

    def summary(self, failing: list[InstanceHealth] | None = None) -> str:
        """One line naming each failing instance (all unhealthy ones unless `failing` is given)."""
        bad = self.unhealthy if failing is None else failing
        if not bad:
            return f"{len(self.instances)} of {len(self.instances)} instances healthy"
        named = "; ".join(f"replica {i.replica} ({i.container_id[:12]}) {i.detail}" for i in bad)
        return f"{len(bad)} of {len(self.instances)} instances unhealthy: {named}"


TeamStatus.model_rebuild()
