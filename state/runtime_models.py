"""Payloads, activity names and failure names of the deploy runtimes (local Docker, Kubernetes).

Pure pydantic, like state/models.py: the Kubernetes activities (activities/kubernetes_runtime.py)
take and return these models, and workflows branch on the names below without importing the
`kubernetes` package (import-linter forbids it there).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from state.models import DeploymentInfo, DeployRequest

# Which runtime runs a resource: per resource (a spec field `runtime`) or the worker's default.
RuntimeKind = Literal["docker", "kubernetes"]

# How a worker reaches a resource's Service for the health check: `service` through the cluster DNS
# name (a worker inside the cluster), `port-forward` through the API server for the duration of the
# check (a worker outside it), `template` through a URL an operator provides (an ingress).
KubernetesAccess = Literal["service", "port-forward", "template"]


class KubernetesFailure:
    """`ApplicationError.type` names of the Kubernetes runtime, in `state.errors.FailureType` style.

    Every one is permanent: a person (or a rollback) must act, so retrying the activity cannot help.
    An unreachable or overloaded API server is not named here: it stays a plain, retried error.
    """

    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    IMAGE_PULL_FAILED = "ImagePullFailed"  # details.state says ImagePullBackOff or ErrImagePull
    CRASH_LOOP = "CrashLoopBackOff"
    UNSCHEDULABLE = "Unschedulable"
    IMMUTABLE_FIELD = "ImmutableFieldChange"  # e.g. spec.selector of an existing Deployment
    APPLY_REJECTED = "KubernetesApplyRejected"  # any other 4xx: invalid spec, RBAC, no namespace
    ROLLOUT_TIMED_OUT = "RolloutTimedOut"
    NOT_DEPLOYED = "KubernetesDeploymentNotFound"  # scale or wait on something never applied
    # The health check's port-forward never carried a connection: no Service, no ready pod behind
    # it, a port the Service does not have, or an API server that refuses the upgrade (RBAC).
    PORT_FORWARD_FAILED = "KubernetesPortForwardFailed"
    # A team's health path, asked through its Service after the rollout, did not answer 2xx before
    # the health deadline: details say the URL, the Service, the status or connection error and
    # the start of the body.
    SERVICE_UNHEALTHY = "KubernetesServiceUnhealthy"

    NON_RETRYABLE = (
        PROGRESS_DEADLINE_EXCEEDED,
        IMAGE_PULL_FAILED,
        CRASH_LOOP,
        UNSCHEDULABLE,
        IMMUTABLE_FIELD,
        APPLY_REJECTED,
        ROLLOUT_TIMED_OUT,
        NOT_DEPLOYED,
        PORT_FORWARD_FAILED,
        SERVICE_UNHEALTHY,
    )


class ImagePushFailure:
    """`ApplicationError.type` names of the push of a built image to the registry (RSM_REGISTRY).

    The engine reports push errors inside its JSON stream; activities/docker_build.py names them.
    """

    # The registry or the engine said no: authentication, a denied or unknown repository, a
    # registry that speaks HTTPS only, a manifest it will not take. A person must act.
    REJECTED = "ImagePushRejected"
    # The registry did not answer (refused, reset, timed out, 5xx, 429): retried by the policy.
    REGISTRY_UNREACHABLE = "RegistryUnreachable"

    NON_RETRYABLE = (REJECTED,)


class KubernetesActivity:
    """Activity names a workflow calls (workflows call activities by name, never by import)."""

    APPLY = "kubernetes_apply"
    WAIT_ROLLOUT = "kubernetes_wait_rollout"
    SCALE = "kubernetes_scale"
    DEACTIVATE = "kubernetes_deactivate"
    DELETE = "kubernetes_delete"
    ROLLBACK = "kubernetes_rollback"
    # One HTTP GET of a team's health path through its Service (the access mode's way there).
    SERVICE_HEALTH = "kubernetes_service_health"


class KubernetesRuntimeConfig(BaseModel):
    """Where and how the worker deploys; one per worker (the namespace is not chosen per call)."""

    namespace: str = "rsm"
    container_port: int = 8000
    service_port: int = 80
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # Written into spec.progressDeadlineSeconds: the controller's own verdict on a stuck rollout.
    progress_deadline_seconds: int = 600
    poll_interval_seconds: float = 1.0
    heartbeat_interval_seconds: float = 2.0
    # Per API call, so a hung connection cannot outlive the activity's heartbeat timeout.
    request_timeout_seconds: float = 10.0
    cluster_domain: str = "cluster.local"
    # Where a worker reaches a resource's Service when access is `template`: an ingress (or any)
    # URL template with {resource_id}, {namespace}, {name} and {mcp_path}. None: the Service's
    # cluster DNS name, which a worker inside the cluster reaches directly and one outside through
    # a port-forward opened for the health check (activities/kubernetes_portforward.py).
    endpoint_template: str | None = None


class KubernetesDeployRequest(DeployRequest):
    """A DeployRequest plus what only a cluster needs. Rendering it is deterministic, so the same
    request applied again (a rollback) produces the same pod template and ReplicaSet."""

    replicas: int = Field(default=1, ge=0)
    env: dict[str, str] = Field(default_factory=dict)
    # The readiness probe: with a health_path (a team's HTTP health endpoint) an HTTP GET of that
    # path on the container port, so "ready" means "answers 200-399 there" for every pod; without
    # one (an MCP server, whose endpoint wants a session) a TCP probe: "accepts connections".
    readiness_probe: bool = True
    health_path: str | None = Field(default=None, pattern=r"^/")


class KubernetesApplyResult(BaseModel):
    deployment: DeploymentInfo
    namespace: str
    deployment_name: str
    service_name: str
    # metadata.generation the apply produced: the rollout is done only once the controller has
    # observed at least this generation.
    generation: int | None
    template_hash: str
    replicas: int


class RolloutWaitRequest(BaseModel):
    resource_id: str
    min_generation: int | None = None
    timeout_seconds: float = 300.0


class PodState(BaseModel):
    """One pod as a person would describe it: which container is in which state and why."""

    name: str
    phase: str | None = None
    state: str  # Ready, Running, ContainerCreating, CrashLoopBackOff, ImagePullBackOff, Unschedulable...
    container: str | None = None
    ready: bool = False
    restart_count: int = 0
    message: str = ""
    last_exit_code: int | None = None
    last_termination_reason: str | None = None
    last_termination_message: str | None = None

    def describe(self) -> str:
        where = f"pod {self.name}" + (f" container {self.container}" if self.container else "")
        text = f"{where}: {self.state}"
        if self.restart_count:
            text += f" after {self.restart_count} restarts"
        if self.last_exit_code is not None:
            text += f" (last exit code {self.last_exit_code})"
        detail = self.last_termination_message or self.message
        return f"{text}: {detail}" if detail else text


class RolloutStatus(BaseModel):
    """A Deployment's rollout as read from the API, with the rule applied (kubectl's rollout status):
    complete only when the controller observed the current generation and every count matches."""

    resource_id: str
    deployment_name: str
    generation: int | None
    observed_generation: int | None
    desired_replicas: int
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    complete: bool = False
    waiting_for: str = ""
    pods: list[PodState] = Field(default_factory=list)
    elapsed_seconds: float = 0.0


class KubernetesScaleRequest(BaseModel):
    resource_id: str
    replicas: int = Field(ge=0)


class KubernetesScaleResult(BaseModel):
    resource_id: str
    deployment_name: str
    previous_replicas: int
    replicas: int
    generation: int | None


class KubernetesRollbackRequest(BaseModel):
    """Re-apply the last request whose rollout completed; the caller keeps it (the workflow)."""

    last_good: KubernetesDeployRequest
    reason: str = ""


class ServiceHealthRequest(BaseModel):
    """GET `health_path` under `endpoint` (the Service's URL the apply returned) until it answers
    2xx or `deadline_seconds` pass."""

    resource_id: str
    endpoint: str
    health_path: str = Field(pattern=r"^/")
    deadline_seconds: float = 30.0


class ServiceHealthResult(BaseModel):
    """The answer that passed: which URL, reached how, and what it said."""

    url: str
    # How the worker reached it: the Service's DNS name, a port-forward to a pod behind it (named),
    # or an operator's endpoint template.
    via: str
    status_code: int
    body_excerpt: str = ""
    attempts: int = 1
    elapsed_seconds: float = 0.0

    def summary(self) -> str:
        return f"GET {self.url} through {self.via} answered HTTP {self.status_code}"
