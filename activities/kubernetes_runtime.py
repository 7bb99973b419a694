"""The Kubernetes runtime: server-side apply of a Deployment and a Service per resource, the rollout
wait that tells the truth, scale, deactivate, archive and rollback, as Temporal activities.

It talks to the API server through the official `kubernetes` client (given in the constructor, so a
test hands in a client for kmock and production one for the kubeconfig's cluster). The client is
synchronous; each call runs in a thread with a request timeout, so the activity stays cancellable
and its heartbeats keep flowing. Responses are read as the API's JSON (`_preload_content=False`),
the form activities/kubernetes_rollout.py reasons about.

Permanent refusals (an immutable field, an invalid spec, a rollout that cannot succeed) become
non-retryable ApplicationErrors named by `state.runtime_models.KubernetesFailure`; an API server
that does not answer, answers 5xx or 429 stays a plain exception, retried by the activity's policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import Progress, heartbeating
from activities.kubernetes_rollout import (
    FIELD_MANAGER,
    TEMPLATE_HASH_LABEL,
    InvalidResourceId,
    RolloutFailure,
    api_failure,
    classify,
    object_name,
    pod_state,
    render,
    rollout_status,
    selector_of,
    service_endpoint,
)
from state.models import DeploymentInfo, DeployRequest, StopRuntimeRequest
from state.runtime_models import (
    KubernetesApplyResult,
    KubernetesDeployRequest,
    KubernetesFailure,
    KubernetesRollbackRequest,
    KubernetesRuntimeConfig,
    KubernetesScaleRequest,
    KubernetesScaleResult,
    PodState,
    RolloutStatus,
    RolloutWaitRequest,
)

RUNTIME_NAME = "kubernetes"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_PATCH_CONTENT_TYPE = "application/merge-patch+json"


def _as_error(failure: RolloutFailure) -> ApplicationError:
    return ApplicationError(
        failure.reason, failure.details, type=failure.failure_type, non_retryable=True
    )


class KubernetesRuntime:
    def __init__(
        self, api_client: ApiClient, config: KubernetesRuntimeConfig | None = None
    ) -> None:
        self._apps = AppsV1Api(api_client)
        self._core = CoreV1Api(api_client)
        self._config = config or KubernetesRuntimeConfig()

    @property
    def config(self) -> KubernetesRuntimeConfig:
        return self._config

    # -- API plumbing ----------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        call = functools.partial(
            fn,
            *args,
            _preload_content=False,
            _request_timeout=self._config.request_timeout_seconds,
            **kwargs,
        )
        response = await asyncio.to_thread(call)
        data = response.data
        return dict(json.loads(data)) if data else {}

    async def _call_or_fail(
        self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        try:
            return await self._call(fn, *args, **kwargs)
        except ApiException as exc:
            failure = api_failure(exc.status, exc.body, what)
            if failure is None:
                raise  # temporary: the retry policy tries again
            raise _as_error(failure) from None

    async def _read_deployment(self, resource_id: str) -> dict[str, Any] | None:
        try:
            return await self._call(
                self._apps.read_namespaced_deployment,
                object_name(resource_id),
                self._config.namespace,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _not_deployed(self, resource_id: str) -> ApplicationError:
        name = object_name(resource_id)
        return ApplicationError(
            f"Deployment {name} does not exist in namespace {self._config.namespace}",
            {"deployment": name, "namespace": self._config.namespace},
            type=KubernetesFailure.NOT_DEPLOYED,
            non_retryable=True,
        )

    # -- activities ------------------------------------------------------------------------------

    @activity.defn(name="kubernetes_apply")
    async def apply(self, req: KubernetesDeployRequest) -> KubernetesApplyResult:
        """Server-side apply (field manager `rsm`, forced: rsm's intent wins over hand edits)."""
        try:
            manifests = render(req, self._config)
        except InvalidResourceId as exc:
            raise ApplicationError(
                str(exc), type=KubernetesFailure.APPLY_REJECTED, non_retryable=True
            ) from None
        name = manifests.deployment["metadata"]["name"]
        ns = self._config.namespace
        applied = await self._call_or_fail(
            f"Deployment {ns}/{name}",
            self._apps.patch_namespaced_deployment,
            name,
            ns,
            manifests.deployment,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_CONTENT_TYPE,
        )
        await self._call_or_fail(
            f"Service {ns}/{name}",
            self._core.patch_namespaced_service,
            name,
            ns,
            manifests.service,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_CONTENT_TYPE,
        )
        generation = (applied.get("metadata") or {}).get("generation")
        activity.logger.info("applied %s/%s generation %s", ns, name, generation)
        return KubernetesApplyResult(
            deployment=DeploymentInfo(
                runtime=RUNTIME_NAME,
                runtime_ref=f"{ns}/deployment/{name}",
                endpoint=service_endpoint(req, self._config),
                image=req.image,
                version=req.version,
            ),
            namespace=ns,
            deployment_name=name,
            service_name=name,
            generation=generation,
            template_hash=manifests.template_hash,
            replicas=req.replicas,
        )

    @activity.defn(name="kubernetes_wait_rollout")
    async def wait_rollout(self, req: RolloutWaitRequest) -> RolloutStatus:
        """Poll until the rollout is complete, fails permanently, or the deadline passes."""
        heartbeat: contextlib.AbstractAsyncContextManager[Progress] = (
            heartbeating(self._config.heartbeat_interval_seconds)
            if activity.in_activity()
            else contextlib.nullcontext(Progress())
        )
        async with heartbeat as progress:
            return await self._wait(req, progress)

    async def _wait(self, req: RolloutWaitRequest, progress: Progress) -> RolloutStatus:
        started = time.monotonic()
        deadline = started + req.timeout_seconds
        while True:
            deployment = await self._read_deployment(req.resource_id)
            if deployment is None:
                raise self._not_deployed(req.resource_id)
            status = rollout_status(req.resource_id, deployment)
            if req.min_generation is not None and (status.generation or 0) < req.min_generation:
                # The read came from a cache older than our own apply: nothing in it counts.
                status.complete = False
                status.waiting_for = (
                    f"generation {status.generation} < applied generation {req.min_generation}"
                )
            else:
                status.pods = await self._current_pods(req.resource_id, deployment)
                failure = classify(status, deployment, status.pods)
                if failure is not None:
                    failure.details["elapsed_seconds"] = round(time.monotonic() - started, 3)
                    raise _as_error(failure)
            status.elapsed_seconds = round(time.monotonic() - started, 3)
            progress.update(**status.model_dump(mode="json", exclude={"pods"}))
            if status.complete:
                return status
            if time.monotonic() >= deadline:
                pods = "; ".join(p.describe() for p in status.pods if not p.ready)
                raise ApplicationError(
                    f"rollout of Deployment {status.deployment_name} not complete after "
                    f"{req.timeout_seconds:g}s: {status.waiting_for}"
                    + (f"; {pods}" if pods else ""),
                    status.model_dump(mode="json"),
                    type=KubernetesFailure.ROLLOUT_TIMED_OUT,
                    non_retryable=True,
                )
            await asyncio.sleep(self._config.poll_interval_seconds)

    async def _current_pods(self, resource_id: str, deployment: dict[str, Any]) -> list[PodState]:
        """Pods of the Deployment's current template only: an old ReplicaSet's pods (still serving
        during a surge rollout, or crashing from an abandoned version) say nothing about it."""
        template_labels = (
            ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
        ).get("labels") or {}
        selector = selector_of(resource_id)
        template_hash = template_labels.get(TEMPLATE_HASH_LABEL)
        if template_hash:
            selector += f",{TEMPLATE_HASH_LABEL}={template_hash}"
        listed = await self._call(
            self._core.list_namespaced_pod, self._config.namespace, label_selector=selector
        )
        return [
            pod_state(pod)
            for pod in listed.get("items") or []
            if not (pod.get("metadata") or {}).get("deletionTimestamp")
        ]

    @activity.defn(name="kubernetes_scale")
    async def scale(self, req: KubernetesScaleRequest) -> KubernetesScaleResult:
        """Through the scale subresource, as `kubectl scale` does; wait_rollout then waits for it."""
        deployment = await self._read_deployment(req.resource_id)
        if deployment is None:
            raise self._not_deployed(req.resource_id)
        name = object_name(req.resource_id)
        previous = int((deployment.get("spec") or {}).get("replicas") or 0)
        await self._call_or_fail(
            f"scale of Deployment {self._config.namespace}/{name}",
            self._apps.patch_namespaced_deployment_scale,
            name,
            self._config.namespace,
            {"spec": {"replicas": req.replicas}},
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH_CONTENT_TYPE,
        )
        after = await self._read_deployment(req.resource_id)
        return KubernetesScaleResult(
            resource_id=req.resource_id,
            deployment_name=name,
            previous_replicas=previous,
            replicas=req.replicas,
            generation=((after or {}).get("metadata") or {}).get("generation"),
        )

    @activity.defn(name="kubernetes_deactivate")
    async def deactivate(self, req: StopRuntimeRequest) -> KubernetesScaleResult:
        """Scale to zero: the Deployment, Service and history stay, so `activate` is a scale-up."""
        return await self.scale(KubernetesScaleRequest(resource_id=req.resource_id, replicas=0))

    @activity.defn(name="kubernetes_delete")
    async def delete(self, req: StopRuntimeRequest) -> list[str]:
        """Archive: delete what apply created (found by name and by label), idempotently."""
        ns = self._config.namespace
        selector = selector_of(req.resource_id)
        kinds: list[tuple[str, Callable[..., Any], Callable[..., Any]]] = [
            (
                "deployment",
                self._apps.list_namespaced_deployment,
                self._apps.delete_namespaced_deployment,
            ),
            ("service", self._core.list_namespaced_service, self._core.delete_namespaced_service),
        ]
        deleted: list[str] = []
        for kind, list_fn, delete_fn in kinds:
            listed = await self._call(list_fn, ns, label_selector=selector)
            names = {object_name(req.resource_id)} | {
                str(item["metadata"]["name"]) for item in listed.get("items") or []
            }
            for name in sorted(names):
                try:
                    # Background: the garbage collector removes ReplicaSets and pods after.
                    await self._call(delete_fn, name, ns, propagation_policy="Background")
                except ApiException as exc:
                    if exc.status == 404:
                        continue  # already gone: archiving twice is harmless
                    failure = api_failure(exc.status, exc.body, f"delete of {kind} {ns}/{name}")
                    if failure is None:
                        raise
                    raise _as_error(failure) from None
                deleted.append(f"{kind}/{name}")
        activity.logger.info("deleted %s", deleted or "nothing")
        return deleted

    @activity.defn(name="kubernetes_rollback")
    async def rollback(self, req: KubernetesRollbackRequest) -> KubernetesApplyResult:
        """Re-apply the last good request. Rendering is deterministic, so the pod template (and its
        hash) equals the old one and the controller scales the old ReplicaSet back up, as
        `kubectl rollout undo` would; the caller then waits for that rollout."""
        activity.logger.info(
            "rolling %s back to %s: %s",
            req.last_good.resource_id,
            req.last_good.version,
            req.reason or "no reason given",
        )
        return await self.apply(req.last_good)

    # -- the Runtime protocol (activities/runtime.py) --------------------------------------------

    async def deploy(self, req: DeployRequest) -> DeploymentInfo:
        """Apply and wait, for callers that want one step (the Runtime protocol); workflows call
        kubernetes_apply and kubernetes_wait_rollout separately so each has its own timeouts."""
        k8s_req = (
            req
            if isinstance(req, KubernetesDeployRequest)
            else KubernetesDeployRequest.model_validate(req.model_dump())
        )
        applied = await self.apply(k8s_req)
        await self.wait_rollout(
            RolloutWaitRequest(resource_id=req.resource_id, min_generation=applied.generation)
        )
        return applied.deployment

    async def stop_runtime(self, req: StopRuntimeRequest) -> list[str]:
        return await self.delete(req)
