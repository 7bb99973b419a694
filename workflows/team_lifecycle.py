"""TeamLifecycleWorkflow: one team (agent services described by a manifest) from registration to
`active`, and its actor afterwards.

created -> registered -> building -> built (an `image` team records `built` with its image) ->
deploying -> deployed (N instances running and healthy) -> active, or -> awaiting_dependencies while
a dependency is not `active`. Event driven: registration links the dependencies and reads their
states in one activity (link, then read: no activation is missed); each dependency entering or
leaving `active` signals `dependency_changed`, so a team whose dependencies are active never waits.
Requirements and approval gate the team as they gate MCP servers (it rests in `deployed`).

While active: `scale` (active -> scaling -> active), a dependency leaving `active` sends the team
back to `awaiting_dependencies` (its instances keep running) and its return brings it back;
`deactivate`, `activate`, `archive` (refused while active dependents exist; stops the instances),
`retry`, `redeploy` (a failure rolls back to the last known good version), manual transitions.

Two runtimes, chosen by the manifest's `runtime`. docker: one container per replica, each checked
over HTTP. kubernetes: one Deployment of `replicas` pods, applied server-side and waited for until
the rollout is complete. The cluster checks every instance: with a `health_path` the readiness
probe is an HTTP GET of it on each pod (a TCP connect without one), so the rollout's ready pods are
the instances' health. Then, with a `health_path`, one GET of it through the team's Service (the
worker's access mode: its DNS name, a port-forward to a ready pod behind it, or the endpoint
template) must answer 2xx within the health deadline, which proves the Service leads to them
(patch `team-kubernetes-service-health`). scale patches spec.replicas, waits and checks again,
deactivate scales to zero, archive deletes what was applied. A rollout that cannot succeed
(ImagePullBackOff, CrashLoopBackOff, unschedulable) fails the team with the pod named; a Service
that does not answer 2xx fails it with the URL, the status or error and the start of the body.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from state.commands import (
        DependencyChange,
        DependencyLinks,
        OperatorCommand,
        RequirementUpdate,
    )
    from state.machines import ResourceState
    from state.models import (
        BuildImageRequest,
        BuildImageResult,
        LifecycleResult,
        StopRuntimeRequest,
    )
    from state.runtime_models import (
        KubernetesActivity,
        KubernetesApplyResult,
        KubernetesDeployRequest,
        KubernetesScaleRequest,
        KubernetesScaleResult,
        RolloutStatus,
        RolloutWaitRequest,
        ServiceHealthRequest,
        ServiceHealthResult,
    )
    from state.team_models import (
        MAX_REPLICAS,
        InstanceHealth,
        TeamDeployment,
        TeamDeployRequest,
        TeamHealth,
        TeamHealthRequest,
        TeamLifecycleInput,
        TeamStatus,
    )

from workflows.gates import Gates
from workflows.lifecycle import STORE_RETRY, STORE_TIMEOUT, SYSTEM_ACTOR, Lifecycle
from workflows.operations import (
    BUILD_RETRY,
    PATCH_ACTIVATE_RECORDS_OPERATOR,
    STEP_RETRY,
    OperatedWorkflow,
)

S = ResourceState
HEALTH_HEARTBEAT = timedelta(seconds=20)
# On Kubernetes, a team with a health_path is checked through its Service after each rollout.
PATCH_SERVICE_HEALTH = "team-kubernetes-service-health"
# As McpLifecycleWorkflow's: a rollback keeps the good version's replicas that still run.
PATCH_ROLLBACK_KEEPS_RUNNING = "rollback-keeps-running-version"


@workflow.defn
class TeamLifecycleWorkflow(OperatedWorkflow[TeamDeployment]):
    LONG_COMMANDS = frozenset({"activate", "redeploy", "scale"})

    @workflow.init
    def __init__(self, input: TeamLifecycleInput) -> None:
        self._input = input
        self._manifest = input.manifest
        self._version = input.version
        gates = Gates(
            input.policy.approval,
            input.policy.actor,
            input.policy.requirements,
            list(input.manifest.depends_on),
        )
        for name, status in input.requirement_statuses.items():
            gates.update_requirement(RequirementUpdate(name=name, status=status))
        for key, state in input.dependency_states.items():
            if key in gates.dependencies:
                gates.dependencies[key] = state
        if input.approval is not None:
            gates.approve(input.approval)
        life = Lifecycle(
            input.ref,
            owner_team=input.owner_team,
            state=input.resume_state or S.CREATED,
            seq=input.transition_seq,
            registrant=input.policy.actor,
            drift_retry=input.policy.schema_drift_retry,
        )
        self._init_operations(life, gates, input.policy, input.deployment, input.last_good)
        self._bad_versions: set[str] = set(input.bad_versions)
        self._health: TeamHealth | None = None

    @workflow.query
    def get_status(self) -> TeamStatus:
        return TeamStatus(
            ref=self._input.ref,
            state=self._life.state,
            blocked_on=self._life.blocked_on
            if self._life.schema_error
            else self._gates.blocked_on(),
            schema_error=self._life.schema_error,
            failure_reason=self._failure_reason,
            version=self._version,
            last_good_version=self._last_good.version if self._last_good else None,
            bad_versions=sorted(self._bad_versions),
            approved_by=self._gates.approval.approver if self._gates.approval else None,
            refusals=list(self._refusals),
            resting=not self._busy and not self._commands,
            replicas=self._manifest.replicas,
            team=self._deployment,
            health=self._health,
            dependencies=dict(self._gates.dependencies),
        )

    # -- main loop -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: TeamLifecycleInput) -> LifecycleResult:
        if input.resume_state is None:
            await self._start()
        while self._life.state is not S.ARCHIVED:
            await self._flush_requirements()
            state = self._life.state
            if self._commands:
                await self._run_command(self._commands.pop(0))
            elif state is S.REGISTERED:
                await self._provision()
            elif state in {S.DEPLOYED, S.AWAITING_DEPENDENCIES}:
                await self._await_gates()
            elif state is S.ACTIVE and not self._gates.dependencies_active():
                self._life.blocked_on = self._gates.blocked_on()
                await self._life.move(
                    S.AWAITING_DEPENDENCIES, f"{self._missing()} no longer active"
                )
            else:
                seen = self._gates.version
                await self._rest(lambda seen=seen: self._gates.version != seen)  # type: ignore[misc]
        # An update that archived the team is still waiting for its answer: let it finish.
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._life.drain_webhooks()
        return LifecycleResult(
            ref=input.ref, final_state=self._life.state, transitions=self._life.seq
        )

    def _carry_over(self) -> TeamLifecycleInput:
        return self._input.model_copy(
            update={
                "manifest": self._manifest,
                "version": self._version,
                "transition_seq": self._life.seq,
                "resume_state": self._life.state,
                "deployment": self._deployment,
                "last_good": self._last_good,
                "bad_versions": sorted(self._bad_versions),
                "requirement_statuses": {n: r.status for n, r in self._gates.requirements.items()},
                "dependency_states": dict(self._gates.dependencies),
                "approval": self._gates.approval,
            }
        )

    async def _start(self) -> None:
        manifest = self._manifest
        row = await self._life.register(
            self._input.name, self._version, manifest.model_dump(mode="json")
        )
        # Link first, then read (one activity): a dependency that becomes active after the read
        # finds the link and signals us; one that did before is in the answer.
        states = await workflow.execute_activity(
            "link_dependencies",
            DependencyLinks(ref=self._input.ref, depends_on=list(manifest.depends_on)),
            result_type=dict[str, str],
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        for ref in manifest.depends_on:
            # A signal that arrived while the activity ran is newer than its read: keep it.
            if self._gates.dependencies.get(Gates.dependency_key(ref)) is None:
                if (known := states.get(ref.resource_id)) is not None:
                    self._gates.dependency_changed(
                        DependencyChange(ref=ref, state=ResourceState(known))
                    )
        await self._begin(row)

    def _missing(self) -> str:
        missing = [
            f"{key} ({state.value if state else 'not registered'})"
            for key, state in sorted(self._gates.dependencies.items())
            if state is not S.ACTIVE
        ]
        return ", ".join(missing)

    # -- the gate: deployed <-> awaiting_dependencies -> active ----------------------------------

    async def _gate_wait(self) -> None:
        state = self._life.state
        if not self._gates.dependencies_active() and state is S.DEPLOYED:
            await self._life.move(S.AWAITING_DEPENDENCIES, f"waiting for {self._missing()}")
        elif self._gates.dependencies_active() and state is S.AWAITING_DEPENDENCIES:
            await self._life.move(
                S.DEPLOYED,
                f"every dependency is active; waiting for {', '.join(self._life.blocked_on)}",
            )

    def _activation(self) -> tuple[str, str]:
        deps = ", ".join(sorted(self._gates.dependencies))
        if self._deployment is not None and self._deployment == self._last_good:
            return SYSTEM_ACTOR, f"every dependency is active again: {deps}"
        actor, reason = super()._activation()
        if deps and actor == SYSTEM_ACTOR:
            reason = f"healthy; every dependency is active: {deps}"
        return actor, reason

    # -- provisioning --------------------------------------------------------------------------

    async def _provision(self, actor: str | None = None, reason: str | None = None) -> None:
        """registered|failed|active -> building -> built -> deploying -> deployed, or -> failed
        with the reason (and back to the last known good version if this was a redeploy)."""
        version = self._version

        async def build_and_deploy() -> None:
            await self._deploy_and_check(await self._build(actor, reason), version)

        failed = await self._guarded(
            build_and_deploy(), f"version {version} superseded by a redeploy"
        )
        if failed is not None:
            await self._roll_back_after(version, failed.reason)

    async def _build(self, actor: str | None, reason: str | None) -> str:
        manifest = self._manifest
        if manifest.build is None:
            assert manifest.image is not None
            await self._life.move(
                S.BUILDING, reason or f"image {manifest.image} given: nothing to build", actor=actor
            )
            await self._life.move(
                S.BUILT, f"using image {manifest.image}", metadata={"image": manifest.image}
            )
            return manifest.image
        await self._life.move(
            S.BUILDING,
            reason or f"building version {self._version} from {manifest.build}",
            actor=actor,
        )
        build = await self._step(
            "build_image",
            BuildImageRequest(
                resource_id=self._input.ref.resource_id,
                name=self._input.name,
                version=self._version,
                context_path=manifest.build,
                dockerfile=manifest.dockerfile,
            ),
            BuildImageResult,
            timeout=self._policy.build_timeout,
            heartbeat=self._policy.step_heartbeat_timeout,
            retry=BUILD_RETRY,
        )
        await self._life.move(
            S.BUILT,
            f"built {build.image}",
            metadata={
                "image": build.image,
                "image_id": build.image_id,
                "duration_seconds": build.duration_seconds,
            },
        )
        return build.image

    async def _deploy_and_check(
        self,
        image: str,
        version: str,
        note: str = "",
        keep_running: bool = False,
        actor: str | None = None,
    ) -> None:
        """deploying -> (instances started, every one healthy) -> deployed; the main loop then
        takes the team through its gate."""
        replicas = self._manifest.replicas
        where = "Kubernetes" if self._on_kubernetes else "the local Docker runtime"
        await self._life.move(
            S.DEPLOYING,
            f"{note}deploying {replicas} instance(s) of {image} on {where}",
            actor=actor,
        )
        if self._on_kubernetes:
            deployment, health = await self._deploy_on_kubernetes(image, version, replicas)
        else:
            # scale_team keeps the replicas of this version that still run (a rollback after a
            # failed build: they are the good version, still serving) and replaces the rest.
            step = "scale_team" if keep_running else "deploy_team"
            deployment = await self._runtime_step(step, image, version, replicas)
            health = await self._check_health(deployment)
        checked = f"; {health.service_check.summary()}" if health.service_check else ""
        await self._life.move(
            S.DEPLOYED,
            f"{note}{health.summary()}: {deployment.where}{checked}",
            metadata={
                "deployment": deployment.model_dump(mode="json"),
                "health": health.model_dump(mode="json"),
            },
        )
        self._failure_reason = None

    @property
    def _on_kubernetes(self) -> bool:
        return self._manifest.runtime == "kubernetes"

    async def _deploy_on_kubernetes(
        self, image: str, version: str, replicas: int
    ) -> tuple[TeamDeployment, TeamHealth]:
        """Server-side apply of the Deployment and its Service, then the rollout's truth. A
        rollback re-applies the good image, which renders the pod template it had before."""
        applied = await self._step(
            KubernetesActivity.APPLY,
            KubernetesDeployRequest(
                resource_id=self._input.ref.resource_id,
                name=self._input.name,
                version=version,
                image=image,
                # The Service's root: a team is an HTTP service, not an MCP endpoint.
                mcp_path="",
                replicas=replicas,
                env=self._manifest.env,
                # The readiness probe GETs it on every pod (a TCP probe without one).
                health_path=self._manifest.health_path,
            ),
            KubernetesApplyResult,
            timeout=timedelta(minutes=1),
            heartbeat=self._policy.step_heartbeat_timeout,
            retry=STEP_RETRY,
        )
        deployment = TeamDeployment(
            runtime="kubernetes",
            image=image,
            version=version,
            runtime_ref=applied.deployment.runtime_ref,
            endpoint=applied.deployment.endpoint,
            desired_replicas=applied.replicas,
        )
        self._deployment = deployment
        health = await self._wait_rollout(deployment, applied.generation)
        return deployment, await self._check_service(deployment, health)

    async def _wait_rollout(self, deployment: TeamDeployment, generation: int | None) -> TeamHealth:
        """The instances' health on Kubernetes: a complete rollout of this generation, whose ready
        pods passed the readiness probe (the kubelet's check of every pod; _check_service then
        checks the Service in front of them)."""
        timeout = self._policy.deploy_timeout
        rollout = await self._step(
            KubernetesActivity.WAIT_ROLLOUT,
            RolloutWaitRequest(
                resource_id=self._input.ref.resource_id,
                min_generation=generation,
                timeout_seconds=timeout.total_seconds(),
            ),
            RolloutStatus,
            timeout=timeout + timedelta(seconds=30),
            heartbeat=max(self._policy.step_heartbeat_timeout, timedelta(seconds=30)),
            retry=STEP_RETRY,
        )
        self._health = TeamHealth(
            instances=[
                InstanceHealth(
                    replica=n,
                    container_id=pod.name,
                    endpoint=deployment.endpoint or "",
                    healthy=pod.ready,
                    detail=pod.describe(),
                )
                for n, pod in enumerate(rollout.pods)
            ],
            elapsed_seconds=rollout.elapsed_seconds,
        )
        return self._health

    async def _check_service(self, deployment: TeamDeployment, health: TeamHealth) -> TeamHealth:
        """After a complete rollout: one GET of health_path through the team's Service, retried
        until the health deadline; anything but 2xx fails the step (KubernetesServiceUnhealthy).
        Histories recorded before this check have no marker and replay without it."""
        path = self._manifest.health_path
        if (
            path is None
            or deployment.endpoint is None
            or not workflow.patched(PATCH_SERVICE_HEALTH)
        ):
            return health
        deadline = self._policy.health_deadline
        checked = await self._step(
            KubernetesActivity.SERVICE_HEALTH,
            ServiceHealthRequest(
                resource_id=self._input.ref.resource_id,
                endpoint=deployment.endpoint,
                health_path=path,
                deadline_seconds=deadline.total_seconds(),
            ),
            ServiceHealthResult,
            timeout=deadline + timedelta(seconds=30),
            heartbeat=HEALTH_HEARTBEAT,
            retry=STEP_RETRY,
        )
        self._health = health.model_copy(update={"service_check": checked})
        return self._health

    async def _runtime_step(
        self, name: str, image: str, version: str, replicas: int
    ) -> TeamDeployment:
        manifest = self._manifest
        deployment = await self._step(
            name,
            TeamDeployRequest(
                resource_id=self._input.ref.resource_id,
                name=self._input.name,
                version=version,
                image=image,
                replicas=replicas,
                env=manifest.env,
                port_env=manifest.port_env,
            ),
            TeamDeployment,
            timeout=self._policy.deploy_timeout,
            heartbeat=self._policy.step_heartbeat_timeout,
            retry=STEP_RETRY,
        )
        self._deployment = deployment
        return deployment

    async def _check_health(self, deployment: TeamDeployment) -> TeamHealth:
        deadline = self._policy.health_deadline
        self._health = await self._step(
            "team_health",
            TeamHealthRequest(
                resource_id=self._input.ref.resource_id,
                deployment=deployment,
                health_path=self._manifest.health_path,
                deadline_seconds=deadline.total_seconds(),
            ),
            TeamHealth,
            timeout=deadline + timedelta(seconds=30),
            heartbeat=HEALTH_HEARTBEAT,
            retry=STEP_RETRY,
        )
        return self._health

    async def _roll_back_after(self, bad_version: str, why: str) -> None:
        """A redeploy failed: mark the version bad and return to the last known good image, which
        passed its gates already. The team machine reaches `deploying` from `failed` only through
        `building`, so the rollback records building -> built (the image exists) first."""
        good = self._last_good
        if good is None or good.version == bad_version:
            return
        self._bad_versions.add(bad_version)
        self._gates.waive_gates()
        self._version = good.version
        self._manifest = self._manifest.model_copy(update={"build": None, "image": good.image})

        async def roll_back() -> None:
            await self._life.move(
                S.BUILDING,
                f"rolling back to version {good.version} after version {bad_version} failed: {why}",
                metadata={"rollback_to": good.version, "bad_version": bad_version},
            )
            await self._life.move(
                S.BUILT, f"image {good.image} is built already", metadata={"image": good.image}
            )
            await self._deploy_and_check(
                good.image,
                good.version,
                note=f"rolled back to version {good.version}: ",
                keep_running=workflow.patched(PATCH_ROLLBACK_KEEPS_RUNNING),
            )

        await self._guarded(
            roll_back(),
            f"rollback to {good.version} superseded by a redeploy",
            failed_prefix=f"rollback to {good.version} failed: ",
        )

    # -- commands ------------------------------------------------------------------------------

    def _refusal_for(self, command: OperatorCommand) -> str | None:
        state = self._life.state
        name = command.command
        if name == "retry" and state is not S.FAILED:
            return f"retry needs a failed resource; this one is {state}"
        if name == "deactivate" and state is not S.ACTIVE:
            return f"only an active team can be deactivated; this one is {state}"
        if name == "activate" and (state is not S.INACTIVE or self._deployment is None):
            return f"only an inactive, once deployed team can be activated; this one is {state}"
        if name == "archive" and not self._life.can_move(S.ARCHIVED):
            return f"cannot archive while {state}: wait until it rests"
        if name == "scale":
            replicas = command.replicas
            if replicas is None or not 1 <= replicas <= MAX_REPLICAS:
                return f"scale needs a replica count between 1 and {MAX_REPLICAS}"
            if state is not S.ACTIVE or self._deployment is None:
                return f"only an active team can be scaled; this one is {state}"
            if replicas == self._deployment.replicas:
                return f"the team runs {replicas} replicas already"
        if name == "redeploy":
            if not command.version:
                return (
                    "redeploy needs a version: a build context (context_path) with its version,"
                    " or an image reference as the version"
                )
            if command.version in self._bad_versions:
                return f"version {command.version} failed before; give a newer one"
            if state not in {S.ACTIVE, S.FAILED, S.REGISTERED} and not self._busy:
                return f"cannot redeploy while {state}"
        return None

    async def _execute(self, command: OperatorCommand) -> None:
        reason, actor = command.reason, command.actor
        if command.command == "retry":
            await self._life.move(S.REGISTERED, reason or "retry requested", actor=actor)
        elif command.command in {"deactivate", "archive"}:
            stop = "stop_team"
            if self._on_kubernetes:
                # Deactivate scales to zero (the objects stay for activate); archive deletes them.
                archive = command.command == "archive"
                stop = KubernetesActivity.DELETE if archive else KubernetesActivity.DEACTIVATE
            await workflow.execute_activity(
                stop,
                StopRuntimeRequest(resource_id=self._input.ref.resource_id),
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=STEP_RETRY,
            )
            to = S.INACTIVE if command.command == "deactivate" else S.ARCHIVED
            await self._life.move(to, reason or to.value, actor=actor)
        elif command.command == "activate":
            assert self._deployment is not None
            await self._guarded(
                self._deploy_and_check(
                    self._deployment.image,
                    self._deployment.version,
                    actor=actor if workflow.patched(PATCH_ACTIVATE_RECORDS_OPERATOR) else None,
                ),
                "activation superseded by a redeploy",
            )
        elif command.command == "scale":
            await self._scale(command)
        elif command.command == "redeploy":
            assert command.version
            if command.context_path:
                source = {"build": command.context_path, "image": None}
            else:
                source = {"build": None, "image": command.version}
            self._manifest = self._manifest.model_copy(update=source)
            self._version = command.version
            self._new_version_needs_approval()
            if self._life.state is not S.REGISTERED:
                # failed -> building and active -> building are arrows of their own; from active
                # the running instances keep serving until the new ones are deployed.
                await self._provision(actor, reason or f"redeploy of version {command.version}")

    async def _scale(self, command: OperatorCommand) -> None:
        before = self._deployment
        replicas = command.replicas
        assert before is not None and replicas is not None
        await self._life.move(
            S.SCALING,
            command.reason or f"scaling from {before.replicas} to {replicas} replicas",
            actor=command.actor,
        )

        async def scale_on_kubernetes() -> None:
            scaled = await self._step(
                KubernetesActivity.SCALE,
                KubernetesScaleRequest(resource_id=self._input.ref.resource_id, replicas=replicas),
                KubernetesScaleResult,
                timeout=timedelta(minutes=1),
                heartbeat=self._policy.step_heartbeat_timeout,
                retry=STEP_RETRY,
            )
            after = before.model_copy(update={"desired_replicas": replicas})
            self._deployment = after
            self._manifest = self._manifest.model_copy(update={"replicas": replicas})
            health = await self._wait_rollout(after, scaled.generation)
            health = await self._check_service(after, health)
            checked = f"; {health.service_check.summary()}" if health.service_check else ""
            await self._life.move(
                S.ACTIVE,
                f"{replicas} replicas: {health.summary()}{checked}",
                metadata={
                    "replicas": replicas,
                    "previous_replicas": scaled.previous_replicas,
                    "deployment": after.runtime_ref,
                    "health": health.model_dump(mode="json"),
                },
            )
            self._last_good = after

        async def scale() -> None:
            after = await self._runtime_step("scale_team", before.image, before.version, replicas)
            self._manifest = self._manifest.model_copy(update={"replicas": replicas})
            health = await self._check_health(after)
            old_ids = {i.container_id for i in before.instances}
            new_ids = {i.container_id for i in after.instances}
            await self._life.move(
                S.ACTIVE,
                f"{replicas} replicas: {health.summary()}",
                metadata={
                    "replicas": replicas,
                    "started": [
                        i.replica for i in after.instances if i.container_id not in old_ids
                    ],
                    "removed": [
                        i.replica for i in before.instances if i.container_id not in new_ids
                    ],
                    "health": health.model_dump(mode="json"),
                },
            )
            self._last_good = after

        work = scale_on_kubernetes() if self._on_kubernetes else scale()
        await self._guarded(work, "scaling superseded by a redeploy")
