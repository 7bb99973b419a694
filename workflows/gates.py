"""The gate state every lifecycle keeps: requirements, the approval, dependencies.

Pure and deterministic (no awaits): the workflow's handlers change it, its main loop waits on
`version` to move and asks `blocked_on()` what is still missing. Messages that arrive before the
resource reaches its gate are kept, so an early approval or requirement update is never lost.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from state.commands import (
        ApprovalDecision,
        ApprovalPolicy,
        DependencyChange,
        RequirementSpec,
        RequirementUpdate,
    )
    from state.machines import ResourceState
    from state.models import ResourceRef

APPROVAL = "approval"


class Gates:
    def __init__(
        self,
        policy: ApprovalPolicy,
        registrant: str,
        requirements: list[RequirementSpec],
        dependencies: list[ResourceRef],
    ) -> None:
        self.policy = policy
        self.registrant = registrant
        self.requirements: dict[str, RequirementUpdate] = {
            r.name: RequirementUpdate(
                name=r.name, requirement_type=r.requirement_type, status="pending"
            )
            for r in requirements
        }
        self.approval: ApprovalDecision | None = None
        self.rejection: ApprovalDecision | None = None
        self.dependencies: dict[str, ResourceState | None] = {
            self.dependency_key(d): None for d in dependencies
        }
        self.version = 0

    @staticmethod
    def dependency_key(ref: ResourceRef) -> str:
        return f"{ref.resource_type.value}/{ref.resource_id}"

    # -- approval ------------------------------------------------------------------------------

    def refuse_approval(self, decision: ApprovalDecision) -> str | None:
        """Why this person may not decide now, or None if they may."""
        if not self.policy.required:
            return "nothing awaits approval: this resource's policy requires none"
        if self.approval is not None or self.rejection is not None:
            done = self.approval or self.rejection
            verb = "approved" if self.approval else "rejected"
            return f"nothing awaits approval: already {verb} by {done.approver}"  # type: ignore[union-attr]
        if decision.approver == self.registrant:
            return f"{decision.approver} registered this resource and may not approve it"
        if self.policy.approvers and decision.approver not in self.policy.approvers:
            return (
                f"{decision.approver} may not approve this resource"
                f" (approvers: {', '.join(self.policy.approvers)})"
            )
        return None

    def approve(self, decision: ApprovalDecision) -> None:
        self.approval = decision
        self.version += 1

    def reject(self, decision: ApprovalDecision) -> None:
        self.rejection = decision
        self.version += 1

    def reset_approval(self) -> None:
        """A new version needs a new approval."""
        if self.policy.required:
            self.approval = self.rejection = None
            self.version += 1

    def waive_gates(self) -> None:
        """A rollback returns to a version that passed its gates already."""
        if self.policy.required and self.approval is None:
            self.approval = ApprovalDecision(
                approver="rsm", reason="rollback to an approved version"
            )
        self.rejection = None
        self.version += 1

    # -- requirements and dependencies --------------------------------------------------------

    def update_requirement(self, update: RequirementUpdate) -> bool:
        current = self.requirements.get(update.name)
        if current is not None and current.status == update.status:
            return False  # a duplicate: nothing changes, nothing is recorded twice
        if current is not None:
            update = update.model_copy(update={"requirement_type": current.requirement_type})
        self.requirements[update.name] = update
        self.version += 1
        return True

    def dependency_changed(self, change: DependencyChange) -> bool:
        key = self.dependency_key(change.ref)
        if key not in self.dependencies or self.dependencies[key] == change.state:
            return False
        self.dependencies[key] = change.state
        self.version += 1
        return True

    def dependencies_active(self) -> bool:
        return all(state is ResourceState.ACTIVE for state in self.dependencies.values())

    # -- what is missing ------------------------------------------------------------------------

    def failed_requirement(self) -> RequirementUpdate | None:
        return next((r for r in self.requirements.values() if r.status == "failed"), None)

    def blocked_on(self, include_dependencies: bool = True) -> list[str]:
        items = sorted(
            f"{r.requirement_type}:{name}"
            for name, r in self.requirements.items()
            if r.status == "pending"
        )
        if self.policy.required and self.approval is None:
            items.append(APPROVAL)
        if include_dependencies:
            items += [
                f"dependency:{key}"
                for key, state in sorted(self.dependencies.items())
                if state is not ResourceState.ACTIVE
            ]
        return items


def manual_record_refusal(
    current: ResourceState,
    to_state: ResourceState,
    blocked: list[str],
    runtime: tuple[str, str, str, str],
) -> str | None:
    """Why a manual transition would record what is not so: `active` past a closed gate, or
    active/inactive the runtime does not have. `runtime` words it per kind: (what stays on, what
    deactivate does, what stays off, what activate does)."""
    stays_on, deactivate_does, stays_off, activate_does = runtime
    if to_state is ResourceState.INACTIVE and current is ResourceState.ACTIVE:
        return (
            f"recording inactive by hand would leave {stays_on}: the deactivate command"
            f" {deactivate_does} and records inactive"
        )
    if to_state is ResourceState.ACTIVE and blocked:
        return (
            f"waiting on {', '.join(blocked)}: a manual transition does not pass the gate;"
            " approve or satisfy what it waits on"
        )
    if to_state is ResourceState.ACTIVE and current is ResourceState.INACTIVE:
        return (
            f"recording active by hand would leave {stays_off}: the activate command"
            f" {activate_does} and records active"
        )
    return None
