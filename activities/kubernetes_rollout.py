"""Pure logic of the Kubernetes runtime: names, manifests, rollout truth and failure classification.

Everything here works on the API's own JSON (camelCase dicts, as `kubectl get -o json` shows them),
so it does no I/O and is the same against kmock, the simulator and a real cluster. The rules follow
kubectl's `rollout status` and the Deployment controller's documented status fields:

- a rollout is complete only when `status.observedGeneration >= metadata.generation` and the
  updated, ready and available replicas (and the total, so no old pod lingers) equal
  `spec.replicas`; before the controller observes a generation, its status describes the previous
  one and proves nothing (neither success nor a ProgressDeadlineExceeded);
- a pod of the current template waiting in ImagePullBackOff / ErrImagePull / CrashLoopBackOff, or
  unschedulable, will not heal by waiting, so it fails the rollout at once, naming the pod.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from state.runtime_models import (
    KubernetesDeployRequest,
    KubernetesFailure,
    KubernetesRuntimeConfig,
    PodState,
    RolloutStatus,
)

FIELD_MANAGER = "rsm"
RESOURCE_LABEL = "rsm.resource_id"  # the same label the Docker runtime puts on its containers
TEMPLATE_HASH_LABEL = "rsm.template_hash"
VERSION_ANNOTATION = "rsm.version"
CONTAINER_NAME = "app"

IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName"})
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


class InvalidResourceId(ValueError):
    """The resource id cannot be used as a Kubernetes label value."""


def object_name(resource_id: str) -> str:
    """A DNS-1035 label (Service names need one) derived from the resource id, stable and unique:
    `.` and `_` become `-`, and a hash suffix keeps two ids that collapse to one name apart."""
    base = re.sub(r"[^a-z0-9-]", "-", resource_id.lower()).strip("-")
    name = f"rsm-{base}"
    if name != f"rsm-{resource_id}" or len(name) > 63:
        digest = hashlib.sha256(resource_id.encode()).hexdigest()[:8]
        name = f"{name[: 63 - 9].rstrip('-')}-{digest}"
    return name


def label_value(resource_id: str) -> str:
    if not _LABEL_VALUE.match(resource_id):
        raise InvalidResourceId(
            f"resource id {resource_id!r} is not a valid Kubernetes label value "
            "(must start and end with a letter or digit)"
        )
    return resource_id


def selector_of(resource_id: str) -> str:
    return f"{RESOURCE_LABEL}={label_value(resource_id)}"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Manifests:
    deployment: dict[str, Any]
    service: dict[str, Any]
    template_hash: str


def readiness_probe(health_path: str | None) -> dict[str, Any]:
    """The kubelet's check of every pod: an HTTP GET of the health path on the container port
    (ready while it answers 200-399), or, without a health path, a TCP connect to that port.

    Server-side apply replaces one with the other cleanly: the fields rsm applied before and no
    longer applies (`tcpSocket`) are removed, since rsm's field manager owned them."""
    handler: dict[str, Any] = (
        {"httpGet": {"path": health_path, "port": "http", "scheme": "HTTP"}}
        if health_path
        else {"tcpSocket": {"port": "http"}}
    )
    return {**handler, "periodSeconds": 2, "failureThreshold": 3}


def render(req: KubernetesDeployRequest, config: KubernetesRuntimeConfig) -> Manifests:
    """The Deployment and Service to apply. The selector is only the resource label, so it never
    changes between versions (selectors are immutable); the template hash label picks out the pods
    of this version while an old ReplicaSet's pods are still around."""
    name = object_name(req.resource_id)
    labels = {RESOURCE_LABEL: label_value(req.resource_id), "app.kubernetes.io/managed-by": "rsm"}
    env = {
        "HOST": "0.0.0.0",  # listen on the pod IP: the Service and probes reach it there
        "PORT": str(config.container_port),
        "RSM_RESOURCE_ID": req.resource_id,
        **req.env,
    }
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": req.image,
        "imagePullPolicy": config.image_pull_policy,
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "ports": [{"name": "http", "containerPort": config.container_port}],
        # The kubelet copies the log tail into lastState.terminated.message when the container
        # fails, so a CrashLoopBackOff is reported with its last words without reading logs.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if req.readiness_probe:
        container["readinessProbe"] = readiness_probe(req.health_path)
    template: dict[str, Any] = {
        "metadata": {
            "labels": {RESOURCE_LABEL: label_value(req.resource_id)},
            "annotations": {VERSION_ANNOTATION: req.version},
        },
        "spec": {"containers": [container]},
    }
    template_hash = _hash(template)
    template["metadata"]["labels"][TEMPLATE_HASH_LABEL] = template_hash
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": config.namespace,
            "labels": labels,
            "annotations": {VERSION_ANNOTATION: req.version, "rsm.image": req.image},
        },
        "spec": {
            "replicas": req.replicas,
            "selector": {"matchLabels": {RESOURCE_LABEL: label_value(req.resource_id)}},
            "progressDeadlineSeconds": config.progress_deadline_seconds,
            "revisionHistoryLimit": 5,
            # Surge instead of taking the old version down: while a bad version fails, the last
            # good one keeps serving, and a rollback only has to scale the old ReplicaSet back.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": template,
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": config.namespace, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": {RESOURCE_LABEL: label_value(req.resource_id)},
            "ports": [
                {
                    "name": "http",
                    "port": config.service_port,
                    "targetPort": "http",
                    "protocol": "TCP",
                }
            ],
        },
    }
    return Manifests(deployment, service, template_hash)


def service_endpoint(req: KubernetesDeployRequest, config: KubernetesRuntimeConfig) -> str:
    if config.endpoint_template:
        return config.endpoint_template.format(
            resource_id=req.resource_id,
            namespace=config.namespace,
            name=object_name(req.resource_id),
            mcp_path=req.mcp_path,
        )
    host = f"{object_name(req.resource_id)}.{config.namespace}.svc.{config.cluster_domain}"
    return f"http://{host}:{config.service_port}{req.mcp_path}"


# -- reading status ------------------------------------------------------------------------------


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def rollout_status(resource_id: str, deployment: dict[str, Any]) -> RolloutStatus:
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    # spec.replicas defaults to 1 when unset; the status counts are omitted when zero.
    desired = 1 if spec.get("replicas") is None else int(spec["replicas"])
    counts = {
        "replicas": int(status.get("replicas") or 0),
        "updated_replicas": int(status.get("updatedReplicas") or 0),
        "ready_replicas": int(status.get("readyReplicas") or 0),
        "available_replicas": int(status.get("availableReplicas") or 0),
    }
    # A server that sets no generation (kmock without the simulator's API semantics) cannot prove
    # anything was observed: then nothing is ever complete, which is the safe side.
    if generation is None or observed is None or observed < generation:
        waiting = f"observedGeneration {observed} < generation {generation}: the Deployment controller has not observed this change yet"
    elif counts["updated_replicas"] < desired:
        waiting = f"{counts['updated_replicas']} of {desired} replicas updated"
    elif counts["replicas"] > counts["updated_replicas"]:
        waiting = (
            f"{counts['replicas'] - counts['updated_replicas']} old replicas pending termination"
        )
    elif counts["ready_replicas"] < desired:
        waiting = f"{counts['ready_replicas']} of {desired} updated replicas ready"
    elif counts["available_replicas"] < desired:
        waiting = f"{counts['available_replicas']} of {desired} updated replicas available"
    else:
        waiting = ""
    return RolloutStatus(
        resource_id=resource_id,
        deployment_name=str(meta.get("name", "")),
        generation=generation,
        observed_generation=observed,
        desired_replicas=desired,
        complete=not waiting,
        waiting_for=waiting,
        **counts,
    )


def generation_observed(deployment: dict[str, Any]) -> bool:
    generation = (deployment.get("metadata") or {}).get("generation")
    observed = (deployment.get("status") or {}).get("observedGeneration")
    return generation is not None and observed is not None and observed >= generation


def pod_state(pod: dict[str, Any]) -> PodState:
    """The one state that best explains a pod: a failing container first, then scheduling."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    name = str(meta.get("name", "?"))
    phase = status.get("phase")
    containers = list(status.get("initContainerStatuses") or []) + list(
        status.get("containerStatuses") or []
    )
    for cs in containers:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason and reason not in {"ContainerCreating", "PodInitializing"}:
            last = (cs.get("lastState") or {}).get("terminated") or {}
            return PodState(
                name=name,
                phase=phase,
                state=reason,
                container=cs.get("name"),
                restart_count=int(cs.get("restartCount") or 0),
                message=str(waiting.get("message") or ""),
                last_exit_code=last.get("exitCode"),
                last_termination_reason=last.get("reason"),
                last_termination_message=(str(last["message"]).strip() or None)
                if last.get("message")
                else None,
            )
    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        return PodState(
            name=name,
            phase=phase,
            state=str(scheduled.get("reason") or "NotScheduled"),
            message=str(scheduled.get("message") or ""),
        )
    ready_cond = _condition(pod, "Ready")
    ready = bool(ready_cond and ready_cond.get("status") == "True")
    restarts = sum(int(cs.get("restartCount") or 0) for cs in containers)
    if ready:
        return PodState(name=name, phase=phase, state="Ready", ready=True, restart_count=restarts)
    if phase == "Running":
        return PodState(
            name=name,
            phase=phase,
            state="Running",
            restart_count=restarts,
            message=str((ready_cond or {}).get("message") or "not ready"),
        )
    return PodState(name=name, phase=phase, state=str(phase or "Unknown"), restart_count=restarts)


@dataclass(frozen=True)
class RolloutFailure:
    failure_type: str
    reason: str
    details: dict[str, Any]


def classify(
    status: RolloutStatus, deployment: dict[str, Any], pods: list[PodState]
) -> RolloutFailure | None:
    """A permanent failure of the current rollout, or None while it may still succeed."""
    base = {"deployment": status.deployment_name, "generation": status.generation}
    for pod in sorted(pods, key=lambda p: p.name):
        if pod.state in IMAGE_PULL_REASONS:
            return RolloutFailure(
                KubernetesFailure.IMAGE_PULL_FAILED, pod.describe(), _details(base, pod, pods)
            )
        if pod.state == "CrashLoopBackOff":
            return RolloutFailure(
                KubernetesFailure.CRASH_LOOP, pod.describe(), _details(base, pod, pods)
            )
        if pod.state == "Unschedulable":
            return RolloutFailure(
                KubernetesFailure.UNSCHEDULABLE, pod.describe(), _details(base, pod, pods)
            )
    # A condition written for an older generation is stale: it must not fail the new rollout.
    progressing = _condition(deployment, "Progressing")
    if (
        generation_observed(deployment)
        and progressing
        and progressing.get("status") == "False"
        and progressing.get("reason") == "ProgressDeadlineExceeded"
    ):
        stuck = [p for p in sorted(pods, key=lambda p: p.name) if not p.ready]
        reason = f"Deployment {status.deployment_name} exceeded its progress deadline: {progressing.get('message', '')}".strip()
        if stuck:
            reason += "; " + "; ".join(p.describe() for p in stuck)
        details = _details(base, stuck[0], pods) if stuck else {**base, "pods": []}
        details["condition_message"] = progressing.get("message", "")
        return RolloutFailure(KubernetesFailure.PROGRESS_DEADLINE_EXCEEDED, reason, details)
    return None


def _details(base: dict[str, Any], pod: PodState, pods: list[PodState]) -> dict[str, Any]:
    return {
        **base,
        "pod": pod.name,
        "container": pod.container,
        "state": pod.state,
        "restart_count": pod.restart_count,
        "last_exit_code": pod.last_exit_code,
        "last_termination_message": pod.last_termination_message,
        "message": pod.message,
        "pods": [p.model_dump(mode="json") for p in pods],
    }


# -- API errors ----------------------------------------------------------------------------------


def api_failure(status: int | None, body: str | None, what: str) -> RolloutFailure | None:
    """A permanent refusal of the API server as a named failure; None for temporary ones
    (5xx, 429, 409 conflicts, no answer), which the activity's retry policy handles."""
    if status is None or status >= 500 or status in (408, 409, 429):
        return None
    try:
        payload = json.loads(body or "{}")
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    message = str(payload.get("message") or body or f"HTTP {status}")
    causes = (payload.get("details") or {}).get("causes") or []
    fields = sorted({str(c.get("field")) for c in causes if c.get("field")})
    details = {"http_status": status, "api_reason": payload.get("reason"), "fields": fields}
    immutable = "field is immutable" in message or any(
        "immutable" in str(c.get("message", "")) for c in causes
    )
    if status == 422 and immutable:
        named = ", ".join(fields) or "an immutable field"
        return RolloutFailure(
            KubernetesFailure.IMMUTABLE_FIELD,
            f"{what} cannot be applied: {named} is immutable and differs from the live object "
            f"(delete it or archive the resource to recreate it): {message}",
            details,
        )
    return RolloutFailure(
        KubernetesFailure.APPLY_REJECTED, f"{what} was refused (HTTP {status}): {message}", details
    )
