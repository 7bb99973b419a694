"""McpLifecycleWorkflow: one MCP server from its source directory to `active`, and its actor afterwards.

created -> registered -> building -> built -> deploying -> deployed -> health_checking -> available
-> (gates: requirements, approval) -> active. A failed step records `failed` with the reason a person
can act on and waits for `retry`, `redeploy` or `archive`; a failed redeploy rolls back to the last
known good version by itself. While active the workflow is the resource's actor: `deactivate`,
`activate`, `redeploy`, `archive`, manual transitions.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from state.commands import OperatorCommand, RequirementUpdate
    from state.machines import ResourceState
    from state.models import (
        BuildImageRequest,
        BuildImageResult,
        DeploymentInfo,
        DeployRequest,
        HealthCheckRequest,
        LifecycleResult,
        LifecycleStatus,
        McpHealthResult,
        McpLifecycleInput,
        McpRegistryEntry,
        McpServerSpec,
        StopRuntimeRequest,
    )
    from state.runtime_models import (
        KubernetesActivity,
        KubernetesApplyResult,
        KubernetesDeployRequest,
        RolloutStatus,
        RolloutWaitRequest,
    )

from workflows.gates import Gates
from workflows.lifecycle import Lifecycle
from workflows.operations import (
    BUILD_RETRY,
    PATCH_ACTIVATE_RECORDS_OPERATOR,
    STEP_RETRY,
    OperatedWorkflow,
    StepFailed,
    Superseded,
)

S = ResourceState
# A rollback keeps the good version's container when it still runs (a redeploy whose build failed).
PATCH_ROLLBACK_KEEPS_RUNNING = "rollback-keeps-running-version"


@workflow.defn
class McpLifecycleWorkflow(OperatedWorkflow[DeploymentInfo]):
    @workflow.init
    def __init__(self, input: McpLifecycleInput) -> None:
        self._input = input
        self._spec: McpServerSpec = input.spec
        gates = Gates(input.policy.approval, input.policy.actor, input.policy.requirements, [])
        for name, status in input.requirement_statuses.items():
            gates.update_requirement(RequirementUpdate(name=name, status=status))
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

    # -- queries -------------------------------------------------------------------------------

    @workflow.query
    def get_status(self) -> LifecycleStatus:
        return LifecycleStatus(
            ref=self._input.ref,
            state=self._life.state,
            blocked_on=self._life.blocked_on
            if self._life.schema_error
            else self._gates.blocked_on(),
            schema_error=self._life.schema_error,
            failure_reason=self._failure_reason,
            deployment=self._deployment,
            version=self._spec.version,
            last_good_version=self._last_good.version if self._last_good else None,
            bad_versions=sorted(self._bad_versions),
            approved_by=self._gates.approval.approver if self._gates.approval else None,
            refusals=list(self._refusals),
            resting=not self._busy and not self._commands,
        )

    def _refusal_for(self, command: OperatorCommand) -> str | None:
        state = self._life.state
        name = command.command
        if name == "retry" and state is not S.FAILED:
            return f"retry needs a failed resource; this one is {state}"
        if name == "deactivate" and state not in {S.ACTIVE, S.AVAILABLE}:
            return f"only an active resource can be deactivated; this one is {state}"
        if name == "activate" and (state is not S.INACTIVE or self._deployment is None):
            return f"only an inactive, once deployed resource can be activated; this one is {state}"
        if name == "archive" and not self._life.can_move(S.ARCHIVED):
            return f"cannot archive while {state}: wait until it rests"
        if name == "scale":
            return "the local Docker runtime runs one instance of an MCP server: scale is not supported"
        if name == "redeploy":
            if not command.context_path or not command.version:
                return "redeploy needs the new source (context_path) and its version"
            if command.version in self._bad_versions:
                return f"version {command.version} failed before; give a newer one"
            if state not in {S.ACTIVE, S.FAILED, S.REGISTERED} and not self._busy:
                return f"cannot redeploy while {state}"
        return None

    # -- main loop -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: McpLifecycleInput) -> LifecycleResult:
        if input.resume_state is None:
            await self._start()
        while self._life.state is not S.ARCHIVED:
            await self._flush_requirements()
            if self._commands:
                await self._run_command(self._commands.pop(0))
            elif self._life.state is S.REGISTERED:
                await self._provision()
            elif self._life.state is S.AVAILABLE:
                await self._await_gates()
            else:
                await self._rest()
        # An update that archived the resource is still waiting for its answer: let it finish.
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._life.drain_webhooks()
        return LifecycleResult(
            ref=input.ref, final_state=self._life.state, transitions=self._life.seq
        )

    def _carry_over(self) -> McpLifecycleInput:
        return self._input.model_copy(
            update={
                "spec": self._spec,
                "transition_seq": self._life.seq,
                "resume_state": self._life.state,
                "deployment": self._deployment,
                "last_good": self._last_good,
                "bad_versions": sorted(self._bad_versions),
                "requirement_statuses": {n: r.status for n, r in self._gates.requirements.items()},
                "approval": self._gates.approval,
            }
        )

    async def _start(self) -> None:
        spec = self._spec
        row = await self._life.register(self._input.name, spec.version, spec.model_dump())
        await self._begin(row)

    # -- provisioning --------------------------------------------------------------------------

    async def _provision(self, actor: str | None = None, reason: str | None = None) -> None:
        """registered|failed|active -> building -> ... -> available, or -> failed with the reason
        (and then back to the last known good version if this was a redeploy)."""
        spec = self._spec
        self._busy = True
        try:
            await self._life.move(
                S.BUILDING,
                reason or f"building version {spec.version} from {spec.context_path}",
                actor=actor,
            )
            build = await self._step(
                "build_image",
                BuildImageRequest(
                    resource_id=self._input.ref.resource_id,
                    name=self._input.name,
                    version=spec.version,
                    context_path=spec.context_path,
                    dockerfile=spec.dockerfile,
                    build_args=spec.build_args,
                ),
                BuildImageResult,
                timeout=self._input.policy.build_timeout,
                heartbeat=self._input.policy.step_heartbeat_timeout,
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
                mcp_registry=McpRegistryEntry(image=build.image),
            )
            await self._deploy_and_check(build.image, spec.version)
        except StepFailed as failed:
            await self._fail(failed.reason, failed.details)
            await self._roll_back_after(spec.version, failed.reason)
        except Superseded:
            await self._fail(
                f"version {spec.version} superseded by a redeploy", {"version": spec.version}
            )
        finally:
            self._busy = False

    async def _deploy_and_check(
        self,
        image: str,
        version: str,
        *,
        deploying_reason: str | None = None,
        available_reason: str | None = None,
        keep_running: bool = False,
        actor: str | None = None,
    ) -> None:
        """deploying -> deployed -> health_checking -> available. Without a deploying_reason the
        resource is in `deploying` already (a rollback entered it with its own reason)."""
        spec = self._spec
        if deploying_reason is None:
            where = "Kubernetes" if spec.runtime == "kubernetes" else "the local Docker runtime"
            deploying_reason = f"deploying {image} on {where}"
            await self._life.move(S.DEPLOYING, deploying_reason, actor=actor)
        request = DeployRequest(
            resource_id=self._input.ref.resource_id,
            name=self._input.name,
            version=version,
            image=image,
            mcp_path=spec.mcp_path,
            keep_running=keep_running,
        )
        if spec.runtime == "kubernetes":
            deployment = await self._deploy_on_kubernetes(request)
        else:
            deployment = await self._step(
                "deploy",
                request,
                DeploymentInfo,
                timeout=self._input.policy.deploy_timeout,
                heartbeat=self._input.policy.step_heartbeat_timeout,
                retry=STEP_RETRY,
            )
        self._deployment = deployment
        await self._life.move(
            S.DEPLOYED,
            f"{'still ' if deployment.kept else ''}running at {deployment.endpoint}",
            metadata=deployment.model_dump(),
            mcp_registry=McpRegistryEntry(
                image=image,
                runtime=deployment.runtime,
                runtime_ref=deployment.runtime_ref,
                endpoint=deployment.endpoint,
            ),
        )
        await self._life.move(S.HEALTH_CHECKING, f"MCP handshake with {deployment.endpoint}")
        deadline = self._input.policy.health_deadline
        health = await self._step(
            "health_check",
            HealthCheckRequest(
                resource_id=self._input.ref.resource_id,
                endpoint=deployment.endpoint,
                deadline_seconds=deadline.total_seconds(),
            ),
            McpHealthResult,
            timeout=deadline + timedelta(seconds=30),
            heartbeat=timedelta(seconds=20),
            retry=STEP_RETRY,
        )
        await self._life.move(
            S.AVAILABLE,
            available_reason or f"{health.server_name} answers with {len(health.tools)} tools",
            metadata=health.model_dump(),
            mcp_registry=McpRegistryEntry(
                server_name=health.server_name,
                protocol_version=health.protocol_version,
                tools=health.tools,
                healthy=True,
            ),
        )
        self._failure_reason = None

    async def _deploy_on_kubernetes(self, request: DeployRequest) -> DeploymentInfo:
        """Server-side apply, then wait for the rollout's truth (the controller observed this
        generation and every replica count matches). A rollback re-applies the good image, which
        renders the same pod template as before."""
        applied = await self._step(
            KubernetesActivity.APPLY,
            KubernetesDeployRequest(**request.model_dump()),
            KubernetesApplyResult,
            timeout=timedelta(minutes=1),
            heartbeat=self._input.policy.step_heartbeat_timeout,
            retry=STEP_RETRY,
        )
        deploy_timeout = self._input.policy.deploy_timeout
        await self._step(
            KubernetesActivity.WAIT_ROLLOUT,
            RolloutWaitRequest(
                resource_id=request.resource_id,
                min_generation=applied.generation,
                timeout_seconds=deploy_timeout.total_seconds(),
            ),
            RolloutStatus,
            timeout=deploy_timeout + timedelta(seconds=30),
            heartbeat=max(self._input.policy.step_heartbeat_timeout, timedelta(seconds=30)),
            retry=STEP_RETRY,
        )
        return applied.deployment

    async def _roll_back_after(self, bad_version: str, why: str) -> None:
        """A redeploy failed: mark the version bad and return to the last known good one, which
        passed its gates already."""
        good = self._last_good
        if good is None or good.version == bad_version:
            return
        self._bad_versions.add(bad_version)
        self._gates.waive_gates()
        self._spec = self._spec.model_copy(update={"version": good.version})
        self._busy = True
        try:
            await self._life.move(
                S.DEPLOYING,
                f"rolling back to version {good.version} after version {bad_version} failed: {why}",
                metadata={"rollback_to": good.version, "bad_version": bad_version},
            )
            await self._deploy_and_check(
                good.image,
                good.version,
                deploying_reason="rollback",
                available_reason=f"rolled back to version {good.version}",
                keep_running=workflow.patched(PATCH_ROLLBACK_KEEPS_RUNNING),
            )
        except StepFailed as failed:
            await self._fail(f"rollback to {good.version} failed: {failed.reason}", failed.details)
        except Superseded:
            await self._fail(f"rollback to {good.version} superseded by a redeploy", {})
        finally:
            self._busy = False

    async def _stop_runtime(self, archive: bool = False) -> None:
        name = "stop_runtime"
        if self._spec.runtime == "kubernetes":
            # Deactivate scales to zero (the objects stay for activate); archive deletes them.
            name = KubernetesActivity.DELETE if archive else KubernetesActivity.DEACTIVATE
        await workflow.execute_activity(
            name,
            StopRuntimeRequest(resource_id=self._input.ref.resource_id),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=STEP_RETRY,
        )

    # -- commands ------------------------------------------------------------------------------

    async def _execute(self, command: OperatorCommand) -> None:
        reason = command.reason
        actor = command.actor
        if command.command == "retry":
            await self._life.move(S.REGISTERED, reason or "retry requested", actor=actor)
        elif command.command == "deactivate":
            await self._stop_runtime()
            await self._life.move(S.INACTIVE, reason or "deactivated", actor=actor)
        elif command.command == "activate":
            assert self._deployment is not None
            self._busy = True
            try:
                await self._deploy_and_check(
                    self._deployment.image,
                    self._deployment.version,
                    actor=actor if workflow.patched(PATCH_ACTIVATE_RECORDS_OPERATOR) else None,
                )
            except StepFailed as failed:
                await self._fail(failed.reason, failed.details)
            except Superseded:
                await self._fail("activation superseded by a redeploy", {})
            finally:
                self._busy = False
        elif command.command == "archive":
            await self._stop_runtime(archive=True)
            await self._life.move(S.ARCHIVED, reason or "archived", actor=actor)
        elif command.command == "redeploy":
            assert command.context_path and command.version
            self._spec = self._spec.model_copy(
                update={"context_path": command.context_path, "version": command.version}
            )
            self._new_version_needs_approval()
            if self._life.state is not S.REGISTERED:
                # failed -> building and active -> building are arrows of their own; from active the
                # running version keeps serving until the new one is deployed.
                await self._provision(actor, reason or f"redeploy of version {command.version}")
