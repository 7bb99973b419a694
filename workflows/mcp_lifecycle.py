"""McpLifecycleWorkflow: one MCP server from its source directory to `active`, and its actor afterwards.

created -> registered -> building -> built -> deploying -> deployed -> health_checking -> available ->
active. A failed step records `failed` with the reason a person can act on and waits for `retry` or
`archive`; while active the workflow stays alive for `deactivate`, `activate` and `archive`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from state.errors import FailureType
    from state.machines import ResourceState
    from state.models import (
        BuildImageRequest,
        BuildImageResult,
        CommandRequest,
        DeploymentInfo,
        DeployRequest,
        HealthCheckRequest,
        LifecycleResult,
        LifecycleStatus,
        McpHealthResult,
        McpLifecycleInput,
        McpRegistryEntry,
        StopRuntimeRequest,
        TransitionView,
    )

from workflows.lifecycle import Lifecycle

S = ResourceState
ModelT = TypeVar("ModelT", bound=BaseModel)

BUILD_RETRY = RetryPolicy(
    maximum_attempts=3, non_retryable_error_types=list(FailureType.NON_RETRYABLE)
)
STEP_RETRY = RetryPolicy(
    maximum_attempts=5,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=list(FailureType.NON_RETRYABLE),
)


@dataclass
class _Command:
    name: str
    request: CommandRequest


class StepFailed(Exception):
    """A step ended in a permanent failure; carries what `failed` records."""

    def __init__(self, reason: str, details: dict[str, object]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


def _failure(err: ActivityError, step: str) -> StepFailed:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        return StepFailed(cause.message, {"step": step, "error_type": cause.type, **details})
    # Timeouts and exhausted retries of temporary errors.
    message = str(cause) if cause is not None else str(err)
    return StepFailed(f"{step} did not complete: {message}", {"step": step})


@workflow.defn
class McpLifecycleWorkflow:
    @workflow.init
    def __init__(self, input: McpLifecycleInput) -> None:
        self._input = input
        self._life = Lifecycle(
            input.ref,
            owner_team=input.owner_team,
            state=input.resume_state or S.CREATED,
            seq=input.transition_seq,
            registrant=input.policy.actor,
        )
        self._deployment: DeploymentInfo | None = input.deployment
        self._failure_reason: str | None = None
        self._commands: list[_Command] = []

    # -- queries -----------------------------------------------------------------------------

    @workflow.query
    def get_status(self) -> LifecycleStatus:
        return LifecycleStatus(
            ref=self._input.ref,
            state=self._life.state,
            blocked_on=list(self._life.blocked_on),
            failure_reason=self._failure_reason,
            deployment=self._deployment,
        )

    @workflow.query
    def get_transitions(self) -> list[TransitionView]:
        return list(self._life.recent)

    # -- signals (commands are queued and run by the main loop, never inside a handler) ------

    @workflow.signal
    def retry(self, request: CommandRequest) -> None:
        self._commands.append(_Command("retry", request))

    @workflow.signal
    def deactivate(self, request: CommandRequest) -> None:
        self._commands.append(_Command("deactivate", request))

    @workflow.signal
    def activate(self, request: CommandRequest) -> None:
        self._commands.append(_Command("activate", request))

    @workflow.signal
    def archive(self, request: CommandRequest) -> None:
        self._commands.append(_Command("archive", request))

    # -- main loop ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: McpLifecycleInput) -> LifecycleResult:
        if input.resume_state is None:
            await self._start()
        while self._life.state is not S.ARCHIVED:
            if self._life.state is S.REGISTERED:
                await self._provision()
                continue
            await workflow.wait_condition(
                lambda: bool(self._commands) or workflow.info().is_continue_as_new_suggested()
            )
            if not self._commands:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._carry_over())
            await self._run_command(self._commands.pop(0))
        return LifecycleResult(
            ref=input.ref, final_state=self._life.state, transitions=self._life.seq
        )

    def _carry_over(self) -> McpLifecycleInput:
        return self._input.model_copy(
            update={
                "transition_seq": self._life.seq,
                "resume_state": self._life.state,
                "deployment": self._deployment,
            }
        )

    async def _start(self) -> None:
        spec = self._input.spec
        row = await self._life.register(self._input.name, spec.version, spec.model_dump())
        if row.current_state is S.CREATED:
            await self._life.move(S.REGISTERED, "lifecycle started", actor=self._input.policy.actor)
            return
        # The database already knows this resource (an earlier lifecycle was terminated): adopt its
        # state instead of pretending to start over; a step that was in flight is marked failed.
        if row.current_state not in {S.ACTIVE, S.INACTIVE, S.ARCHIVED, S.REGISTERED, S.FAILED}:
            self._failure_reason = (
                f"lifecycle restarted while {row.current_state}; retry to continue"
            )
            if self._life.can_move(S.FAILED):
                await self._life.move(S.FAILED, self._failure_reason)

    async def _provision(self) -> None:
        """registered|failed|active -> ... -> active, or -> failed with the step's reason."""
        spec = self._input.spec
        try:
            await self._life.move(S.BUILDING, f"building {spec.context_path}")
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
            await self._deploy_and_check(build.image)
        except StepFailed as failed:
            self._failure_reason = failed.reason
            await self._life.move(S.FAILED, failed.reason, metadata=failed.details)

    async def _deploy_and_check(self, image: str) -> None:
        spec = self._input.spec
        await self._life.move(S.DEPLOYING, f"deploying {image} on the local Docker runtime")
        deployment = await self._step(
            "deploy",
            DeployRequest(
                resource_id=self._input.ref.resource_id,
                name=self._input.name,
                version=spec.version,
                image=image,
                mcp_path=spec.mcp_path,
            ),
            DeploymentInfo,
            timeout=self._input.policy.deploy_timeout,
            heartbeat=self._input.policy.step_heartbeat_timeout,
            retry=STEP_RETRY,
        )
        self._deployment = deployment
        await self._life.move(
            S.DEPLOYED,
            f"running at {deployment.endpoint}",
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
            f"{health.server_name} answers with {len(health.tools)} tools",
            metadata=health.model_dump(),
            mcp_registry=McpRegistryEntry(
                server_name=health.server_name,
                protocol_version=health.protocol_version,
                tools=health.tools,
                healthy=True,
            ),
        )
        self._failure_reason = None
        await self._life.move(S.ACTIVE, "healthy")

    async def _step(
        self,
        name: str,
        arg: BaseModel,
        result_type: type[ModelT],
        *,
        timeout: timedelta,
        heartbeat: timedelta,
        retry: RetryPolicy,
    ) -> ModelT:
        try:
            return await workflow.execute_activity(
                name,
                arg,
                result_type=result_type,
                start_to_close_timeout=timeout,
                heartbeat_timeout=heartbeat,
                retry_policy=retry,
            )
        except ActivityError as err:
            raise _failure(err, name) from err

    async def _stop_runtime(self) -> None:
        await workflow.execute_activity(
            "stop_runtime",
            StopRuntimeRequest(resource_id=self._input.ref.resource_id),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=STEP_RETRY,
        )

    async def _run_command(self, command: _Command) -> None:
        state = self._life.state
        actor = command.request.actor
        reason = command.request.reason
        if command.name == "retry" and state is S.FAILED:
            await self._life.move(S.REGISTERED, reason or "retry requested", actor=actor)
        elif command.name == "deactivate" and state is S.ACTIVE:
            await self._stop_runtime()
            await self._life.move(S.INACTIVE, reason or "deactivated", actor=actor)
        elif command.name == "activate" and state is S.INACTIVE and self._deployment:
            try:
                await self._deploy_and_check(self._deployment.image)
            except StepFailed as failed:
                self._failure_reason = failed.reason
                await self._life.move(S.FAILED, failed.reason, metadata=failed.details)
        elif command.name == "archive" and self._life.can_move(S.ARCHIVED):
            await self._stop_runtime()
            await self._life.move(S.ARCHIVED, reason or "archived", actor=actor)
        else:
            # Signals cannot answer; the refusal is logged (the gates issue adds update variants
            # that refuse to the caller's face).
            workflow.logger.warning("ignored %s from %s while %s", command.name, actor, state)
