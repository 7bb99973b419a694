"""The runtime protocol: what every place that runs a resource offers, as plain async methods.

Two implementations: activities/docker_runtime.py (one local container, host networking) and
activities/kubernetes_runtime.py (a Deployment and a Service). The protocol holds only what both
do today, deploy and remove (`stop_runtime`), so code that just needs "run this image" or "take it
away" (the CLI, a smoke test) can hold either. Scaling, rollout waits and rollbacks exist only on
Kubernetes (a single local container has no replicas or ReplicaSets to go back to); workflows reach
them by the activity names in `state.runtime_models.KubernetesActivity`, chosen by the resource's
`runtime` (`state.runtime_models.RuntimeKind`).
"""

from __future__ import annotations

from typing import Protocol

from state.models import DeploymentInfo, DeployRequest, StopRuntimeRequest


class Runtime(Protocol):
    async def deploy(self, req: DeployRequest) -> DeploymentInfo:
        """Run `req.image` for the resource, replacing what ran before; return where it answers."""
        ...

    async def stop_runtime(self, req: StopRuntimeRequest) -> list[str]:
        """Remove everything the runtime runs for the resource; idempotent; returns what it removed."""
        ...
