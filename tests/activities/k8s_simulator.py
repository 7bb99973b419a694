"""A Kubernetes API for tests: kmock's emulator with the API server's semantics the runtime relies on,
plus a rollout simulator that plays the Deployment controller, ReplicaSets and the kubelet.

kmock (DESIGN §9) stores objects and serves list/watch/fetch/delete, but it is "an in-memory
database over HTTP": no server-side apply, no generation, no immutable fields, no label selectors,
no scale subresource, and no controllers. `ClusterEmulator` adds exactly those API-server rules
(create on apply, metadata.generation bumped on spec changes, a 422 for a changed Deployment
selector, equality-based label selectors, the scale subresource). `RolloutSimulator` then does what
the Deployment controller does, on a poll loop:

- it observes a new generation only after `generation_lag` seconds; until then the status describes
  the previous generation (the "stale status" that fools naive tools);
- it creates the pods of the current template (labelled like the controller's, pod-template-hash
  included) and keeps the last complete version's pods serving until the new ones are ready (the
  surge strategy the runtime renders), and deletes pods of deleted Deployments (garbage collection);
- each pod's status follows the Behaviour registered for its image: healthy, ErrImagePull then
  ImagePullBackOff, CrashLoopBackOff (restart count and last termination message), Unschedulable, or
  running but never ready (which ends in ProgressDeadlineExceeded);
- it writes status.observedGeneration, the replica counts (omitted when zero, as the API does) and
  the Available / Progressing conditions with the controller's reasons and messages.

Simplifications, stated: all new pods are created at once (no one-at-a-time surge), and the progress
deadline counts from when the generation was observed.

It is long for one module because both halves must agree on the same objects; it is test support.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import attrs
import kmock

DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
SERVICES = kmock.resource("", "v1", "services")
PODS = kmock.resource("", "v1", "pods")
_KINDS = {"deployments": DEPLOYMENTS, "services": SERVICES, "pods": PODS}
_KIND_NAMES = {"deployments": "Deployment", "services": "Service", "pods": "Pod"}
_SIM_OWNER = "simulator.rsm/deployment"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(base: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386): dicts merge, None deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based label selectors: `a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-separated."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _status(code: int, reason: str, message: str, **details: Any) -> aiohttp.web.Response:
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }
    return aiohttp.web.json_response(body, status=code)


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the API-server rules the runtime depends on (see module docstring)."""

    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        if res is None or res.plural not in _KINDS or res != _KINDS[str(res.plural)]:
            return await super()._handle(request)
        act = request.action
        if act == kmock.action.LIST:
            return aiohttp.web.json_response(self._list(request))
        if act == kmock.action.CREATE:
            return await self._write(request, create_only=True)
        if request.subresource == "scale" and act in (kmock.action.FETCH, kmock.action.UPDATE):
            return await self._scale(request)
        if act == kmock.action.UPDATE and request.subresource is None:
            return await self._write(request, create_only=False)
        return await super()._handle(request)  # fetch, delete, watch: kmock's own

    # -- objects, shared with the simulator -----------------------------------------------------

    def list_of(
        self, resource: kmock.resource, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj.raw)
            for (res, ns, _), obj in list(self.objects.items())
            if res == resource and not obj.deleted and (namespace is None or ns == namespace)
        ]

    def read(
        self, resource: kmock.resource, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    async def write(self, resource: kmock.resource, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a whole object (the controller's writes) with a new resourceVersion."""
        async with self._lock:
            return await self._store(resource, obj)

    async def erase(self, resource: kmock.resource, namespace: str, name: str) -> None:
        async with self._lock:
            key = (resource, namespace, name)
            if key in self.objects and not self.objects[key].deleted:
                raw = self.objects[key].raw
                self.objects[key].delete()
                await self._buses[resource].put({"type": "DELETED", "object": raw})

    async def _store(self, resource: kmock.resource, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        key = (resource, meta.get("namespace"), meta["name"])
        existed = key in self.objects and not self.objects[key].deleted
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[key] = obj
        event = "MODIFIED" if existed else "ADDED"
        await self._buses[resource].put({"type": event, "object": copy.deepcopy(obj)})
        return copy.deepcopy(obj)

    # -- API semantics ----------------------------------------------------------------------------

    def _list(self, request: kmock.Request) -> dict[str, Any]:
        assert request.resource is not None
        selector = request.params.get("labelSelector")
        items = [
            obj
            for obj in self.list_of(request.resource, request.namespace)
            if _matches((obj.get("metadata") or {}).get("labels") or {}, selector)
        ]
        kind = _KIND_NAMES[str(request.resource.plural)]
        return {
            "apiVersion": "apps/v1" if request.resource == DEPLOYMENTS else "v1",
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(next(self._versions))},
            "items": items,
        }

    async def _write(
        self, request: kmock.Request, *, create_only: bool
    ) -> aiohttp.web.StreamResponse:
        """POST (create) and PATCH: server-side apply creates a missing object, other patches 404."""
        assert request.resource is not None
        body = request.data if isinstance(request.data, dict) else {}
        content_type = next(
            (v for k, v in request.headers.items() if k.lower() == "content-type"), ""
        )
        is_apply = content_type.startswith("application/apply-patch")
        name = request.name or (body.get("metadata") or {}).get("name")
        namespace = request.namespace or (body.get("metadata") or {}).get("namespace")
        kind = _KIND_NAMES[str(request.resource.plural)]
        if not name:
            return _status(422, "Invalid", f"{kind} is invalid: metadata.name: Required value")
        if is_apply and not request.params.get("fieldManager"):
            return _status(400, "BadRequest", "PATCH with apply requires a field manager")
        async with self._lock:
            old = self.read(request.resource, namespace, name)
            if create_only and old is not None:
                return _status(409, "AlreadyExists", f'{kind} "{name}" already exists')
            if old is None and not (create_only or is_apply):
                return _status(404, "NotFound", f'{kind} "{name}" not found')
            new = _merge(old or {}, body)
            # Status belongs to the controller (a subresource): writes to the object ignore it.
            new.pop("status", None)
            if old is not None and old.get("status"):
                new["status"] = old["status"]
            meta = new.setdefault("metadata", {})
            meta.update(name=name, namespace=namespace)
            if old is None:
                meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
                if request.resource == SERVICES:
                    new.setdefault("spec", {}).setdefault("clusterIP", "10.96.0.10")
            else:
                for field in ("uid", "creationTimestamp", "generation"):
                    meta[field] = old["metadata"].get(field)
                if request.resource == DEPLOYMENTS and (new.get("spec") or {}).get("selector") != (
                    old.get("spec") or {}
                ).get("selector"):
                    return self._immutable_selector(name, new["spec"]["selector"])
                if new.get("spec") != old.get("spec"):
                    meta["generation"] = int(meta.get("generation") or 0) + 1
            stored = await self._store(request.resource, new)
        return aiohttp.web.json_response(stored, status=201 if old is None else 200)

    @staticmethod
    def _immutable_selector(name: str, selector: dict[str, Any]) -> aiohttp.web.Response:
        value = f"v1.LabelSelector{{MatchLabels:map[string]string{json.dumps(selector.get('matchLabels', {}))}}}"
        cause = f"Invalid value: {value}: field is immutable"
        return _status(
            422,
            "Invalid",
            f'Deployment.apps "{name}" is invalid: spec.selector: {cause}',
            name=name,
            group="apps",
            kind="Deployment",
            causes=[{"reason": "FieldValueInvalid", "message": cause, "field": "spec.selector"}],
        )

    async def _scale(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        assert request.resource is not None and request.name and request.namespace
        async with self._lock:
            dep = self.read(request.resource, request.namespace, request.name)
            if dep is None:
                return _status(404, "NotFound", f'deployments.apps "{request.name}" not found')
            if request.action == kmock.action.UPDATE:
                replicas = ((request.data or {}).get("spec") or {}).get("replicas")
                if replicas is not None and replicas != dep["spec"].get("replicas"):
                    dep["spec"]["replicas"] = int(replicas)
                    dep["metadata"]["generation"] = int(dep["metadata"]["generation"]) + 1
                    dep = await self._store(request.resource, dep)
        labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return aiohttp.web.json_response(
            {
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {
                    "name": request.name,
                    "namespace": request.namespace,
                    "resourceVersion": dep["metadata"]["resourceVersion"],
                },
                "spec": {"replicas": dep["spec"].get("replicas", 1)},
                "status": {
                    "replicas": (dep.get("status") or {}).get("replicas", 0),
                    "selector": ",".join(f"{k}={v}" for k, v in labels.items()),
                },
            }
        )


# -- the controller ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """How pods of one image behave. `kind`: healthy, image_pull, crash_loop, unschedulable,
    never_ready."""

    kind: str = "healthy"
    pull_reason: str = "ImagePullBackOff"  # or ErrImagePull: the first failed pull
    restarts: int = 4
    exit_code: int = 1
    termination_message: str = "Traceback (most recent call last):\nRuntimeError: boom"
    unschedulable_message: str = (
        "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: "
        "3 No preemption victims found for incoming pod."
    )


HEALTHY = Behaviour()


@dataclasses.dataclass
class _Track:
    seen_generation: int | None = None
    seen_at: float = 0.0
    stable_hash: str | None = None
    stable_replicas: int = 0


class RolloutSimulator:
    def __init__(
        self,
        emulator: ClusterEmulator,
        *,
        generation_lag: float = 0.0,
        startup_seconds: float = 0.05,
        progress_deadline_seconds: float | None = None,
        interval: float = 0.02,
    ) -> None:
        self.emulator = emulator
        self.generation_lag = generation_lag
        self.startup_seconds = startup_seconds
        # None: the Deployment's own spec.progressDeadlineSeconds, in real seconds.
        self.progress_deadline_seconds = progress_deadline_seconds
        self.interval = interval
        self.behaviours: dict[str, Behaviour] = {}
        # (deployment name, generation) -> monotonic time the controller first wrote it observed.
        self.observed_at: dict[tuple[str, int], float] = {}
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._born: dict[str, tuple[float, str]] = {}
        self._templates: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    def behave(self, image: str, behaviour: Behaviour) -> None:
        self.behaviours[image] = behaviour

    async def __aenter__(self) -> RolloutSimulator:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()  # a crashed simulator fails the test that used it
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        now = time.monotonic()
        live: set[tuple[str, str]] = set()
        for dep in self.emulator.list_of(DEPLOYMENTS):
            key = (dep["metadata"]["namespace"], dep["metadata"]["name"])
            live.add(key)
            await self._reconcile(dep, self._tracks.setdefault(key, _Track()), now)
        for pod in self.emulator.list_of(PODS):
            owner = (pod["metadata"].get("annotations") or {}).get(_SIM_OWNER)
            if owner and (pod["metadata"]["namespace"], owner) not in live:
                await self.emulator.erase(
                    PODS, pod["metadata"]["namespace"], pod["metadata"]["name"]
                )
        for key in set(self._tracks) - live:
            del self._tracks[key]

    async def _reconcile(self, dep: dict[str, Any], track: _Track, now: float) -> None:
        meta, spec = dep["metadata"], dep["spec"]
        generation = int(meta.get("generation") or 0)
        if generation != track.seen_generation:
            track.seen_generation, track.seen_at = generation, now
        if now - track.seen_at < self.generation_lag:
            return  # not observed yet: the status keeps describing the previous generation
        name, ns = meta["name"], meta["namespace"]
        template = spec["template"]
        current = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        desired = int(spec.get("replicas", 1))
        pods = [self._pod(dep, current, i, now) for i in range(desired)]
        new_ready = sum(1 for p in pods if _ready(p))
        complete = new_ready == desired
        old: list[dict[str, Any]] = []
        if complete:
            track.stable_hash, track.stable_replicas = current, desired
        elif track.stable_hash and track.stable_hash != current:
            old_template = self._templates.get((ns, name, track.stable_hash), template)
            old = [
                self._pod(dep, track.stable_hash, i, now, old_template)
                for i in range(track.stable_replicas)
            ]
        self._templates[(ns, name, current)] = template
        await self._sync_pods(ns, name, pods + old)
        old_ready = sum(1 for p in old if _ready(p))
        deadline = self.progress_deadline_seconds
        if deadline is None:
            deadline = float(spec.get("progressDeadlineSeconds", 600))
        rs = f"{name}-{current}"
        if complete:
            progressing = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs}" has successfully progressed.',
            )
        elif now - track.seen_at - self.generation_lag > deadline:
            progressing = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs}" has timed out progressing.',
            )
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs}" is progressing.')
        available = new_ready + old_ready
        counts = {
            "replicas": len(pods) + len(old),
            "updatedReplicas": len(pods),
            "readyReplicas": available,
            "availableReplicas": available,
            "unavailableReplicas": max(0, desired - available),
        }
        status = {
            "observedGeneration": generation,
            # The API omits zero counts (omitempty): readers must treat a missing count as 0.
            **{k: v for k, v in counts.items() if v},
            "conditions": [
                _cond(
                    "Available",
                    "True" if available >= desired else "False",
                    "MinimumReplicasAvailable"
                    if available >= desired
                    else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if available >= desired
                    else "Deployment does not have minimum availability.",
                ),
                _cond("Progressing", *progressing),
            ],
        }
        if (dep.get("status") or {}) != status:
            fresh = self.emulator.read(DEPLOYMENTS, ns, name)
            if fresh is None or fresh["metadata"].get("generation") != generation:
                return  # changed under us: observe the new generation on the next tick
            fresh["status"] = status
            await self.emulator.write(DEPLOYMENTS, fresh)
        self.observed_at.setdefault((name, generation), now)

    def _pod(
        self,
        dep: dict[str, Any],
        template_hash: str,
        index: int,
        now: float,
        template: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        template = copy.deepcopy(template or dep["spec"]["template"])
        name, ns = dep["metadata"]["name"], dep["metadata"]["namespace"]
        suffix = hashlib.sha256(f"{name}{template_hash}{index}".encode()).hexdigest()[:5]
        pod_name = f"{name}-{template_hash}-{suffix}"
        born, started_at = self._born.setdefault(pod_name, (now, _now()))
        container = template["spec"]["containers"][0]
        behaviour = self.behaviours.get(container["image"], HEALTHY)
        labels = {**(template["metadata"].get("labels") or {}), "pod-template-hash": template_hash}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": ns,
                "labels": labels,
                "annotations": {_SIM_OWNER: name},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": f"{name}-{template_hash}",
                        "controller": True,
                    }
                ],
            },
            "spec": template["spec"],
            "status": _pod_status(
                behaviour, container, pod_name, started_at, now - born >= self.startup_seconds
            ),
        }

    async def _sync_pods(self, ns: str, deployment: str, pods: list[dict[str, Any]]) -> None:
        wanted = {p["metadata"]["name"]: p for p in pods}
        for existing in self.emulator.list_of(PODS, ns):
            pod_name = existing["metadata"]["name"]
            if (existing["metadata"].get("annotations") or {}).get(_SIM_OWNER) != deployment:
                continue
            if pod_name not in wanted:
                await self.emulator.erase(PODS, ns, pod_name)
                self._born.pop(pod_name, None)
            elif _same(existing, wanted[pod_name]):
                del wanted[pod_name]
        for pod in wanted.values():
            await self.emulator.write(PODS, pod)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    strip = ("resourceVersion",)
    return {k: v for k, v in a["metadata"].items() if k not in strip} == b["metadata"] and a.get(
        "status"
    ) == b.get("status")


def _cond(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def _pod_status(
    behaviour: Behaviour, container: dict[str, Any], pod_name: str, started_at: str, started: bool
) -> dict[str, Any]:
    image, cname = container["image"], container["name"]
    scheduled = _cond("PodScheduled", "True", "", "")
    if behaviour.kind == "unschedulable":
        return {
            "phase": "Pending",
            "conditions": [
                _cond("PodScheduled", "False", "Unschedulable", behaviour.unschedulable_message)
            ],
        }
    base = {"name": cname, "image": image, "ready": False, "restartCount": 0}
    if not started:
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        return {
            "phase": "Pending",
            "conditions": [scheduled],
            "containerStatuses": [{**base, "state": waiting}],
        }
    not_ready = _cond(
        "Ready", "False", "ContainersNotReady", f"containers with unready status: [{cname}]"
    )
    if behaviour.kind == "image_pull":
        # The kubelet reports ErrImagePull on a failed pull, then ImagePullBackOff while it waits.
        reason = behaviour.pull_reason
        message = (
            f'Back-off pulling image "{image}"'
            if reason == "ImagePullBackOff"
            else f'failed to pull and unpack image "{image}": not found'
        )
        return {
            "phase": "Pending",
            "conditions": [scheduled, not_ready],
            "containerStatuses": [
                {**base, "state": {"waiting": {"reason": reason, "message": message}}}
            ],
        }
    if behaviour.kind == "crash_loop":
        return {
            "phase": "Running",
            "conditions": [scheduled, not_ready],
            "containerStatuses": [
                {
                    **base,
                    "restartCount": behaviour.restarts,
                    "state": {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": f"back-off 40s restarting failed container={cname} pod={pod_name}",
                        }
                    },
                    "lastState": {
                        "terminated": {
                            "exitCode": behaviour.exit_code,
                            "reason": "Error",
                            "message": behaviour.termination_message,
                        }
                    },
                }
            ],
        }
    running = {"running": {"startedAt": started_at}}
    if behaviour.kind == "never_ready":
        return {
            "phase": "Running",
            "conditions": [scheduled, not_ready],
            "containerStatuses": [{**base, "state": running}],
        }
    return {
        "phase": "Running",
        "conditions": [scheduled, _cond("Ready", "True", "", "")],
        "containerStatuses": [{**base, "ready": True, "state": running}],
    }
