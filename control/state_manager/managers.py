"""The seed's three resource managers: each step the seed names is one reported transition.

`WorkflowStateManager`, `MCPStateManager` and `TeamStateManager` keep the seed's method names and
arguments; reasons are rsm's own words, and metadata carries what the seed recorded (an n8n id, an
image tag, a validation or health report, replica counts).
"""

from __future__ import annotations

from typing import Any

from control.state_manager.base import ResourceStateManager, Result
from state.machines import ResourceType


class WorkflowStateManager(ResourceStateManager):
    """n8n workflows reported by the workflow import API or a factory."""

    resource_type = ResourceType.N8N_WORKFLOW

    def register_workflow(
        self, workflow_id: str, workflow_name: str, owner_team: str, transitioned_by: str
    ) -> Result:
        return self._register(
            workflow_id,
            workflow_name,
            owner_team=owner_team,
            actor=transitioned_by,
            reason=f"workflow registered for {owner_team}" if owner_team else "workflow registered",
            metadata={"owner_team": owner_team},
        )

    def start_validation(self, workflow_id: str, workflow_name: str, validator: str) -> Result:
        return self.transition_state(
            workflow_id, workflow_name, "validating", "validation started", validator
        )

    def complete_validation(
        self,
        workflow_id: str,
        workflow_name: str,
        success: bool,
        validation_report: dict[str, Any],
        validator: str,
    ) -> Result:
        validation_report = validation_report or {}
        errors = (
            validation_report.get("errors") or [] if isinstance(validation_report, dict) else []
        )
        if success:
            reason = "validation passed"
        else:
            reason = "validation failed" + (f": {'; '.join(map(str, errors))}" if errors else "")
        return self.transition_state(
            workflow_id,
            workflow_name,
            "validated" if success else "failed_validation",
            reason,
            validator,
            {"validation_report": validation_report},
        )

    def deploy_workflow(
        self, workflow_id: str, workflow_name: str, n8n_id: str, deployer: str
    ) -> Result:
        """Reports both halves of a deploy the caller has done: deploying, then deployed."""
        ok, error = self.transition_state(
            workflow_id,
            workflow_name,
            "deploying",
            "deploying to n8n",
            deployer,
            {"n8n_id": n8n_id},
        )
        if not ok:
            return ok, error
        return self.transition_state(
            workflow_id,
            workflow_name,
            "deployed",
            f"deployed to n8n as {n8n_id}",
            deployer,
            {"n8n_id": n8n_id},
        )

    def activate_workflow(self, workflow_id: str, workflow_name: str, activator: str) -> Result:
        return self.transition_state(
            workflow_id, workflow_name, "active", "workflow activated", activator
        )


class MCPStateManager(ResourceStateManager):
    """MCP servers (and clients) reported by the MCP factory or CI."""

    resource_type = ResourceType.MCP_SERVER

    def register_mcp(
        self, mcp_id: str, mcp_name: str, mcp_type: str, category: str, registrar: str
    ) -> Result:
        if mcp_type not in {"server", "client"}:
            return False, f"unknown mcp_type {mcp_type!r}; one of client, server"
        return self._register(
            mcp_id,
            mcp_name,
            owner_team="",
            actor=registrar,
            reason=f"MCP {mcp_type} registered",
            metadata={"mcp_type": mcp_type, "category": category},
        )

    def build_image(self, mcp_id: str, mcp_name: str, builder: str) -> Result:
        return self.transition_state(mcp_id, mcp_name, "building", "image build started", builder)

    def complete_build(
        self, mcp_id: str, mcp_name: str, success: bool, image_tag: str, builder: str
    ) -> Result:
        if success:
            return self.transition_state(
                mcp_id,
                mcp_name,
                "built",
                f"image {image_tag} built",
                builder,
                {"image_tag": image_tag},
            )
        return self.transition_state(
            mcp_id,
            mcp_name,
            "failed",
            f"image build of {image_tag} failed",
            builder,
            {"image_tag": image_tag},
        )

    def health_check(self, mcp_id: str, mcp_name: str, checker: str) -> Result:
        return self.transition_state(
            mcp_id, mcp_name, "health_checking", "health check started", checker
        )

    def complete_health_check(
        self,
        mcp_id: str,
        mcp_name: str,
        success: bool,
        health_report: dict[str, Any],
        checker: str,
    ) -> Result:
        return self.transition_state(
            mcp_id,
            mcp_name,
            "available" if success else "failed",
            "health check passed" if success else "health check failed",
            checker,
            {"health_report": health_report},
        )


class TeamStateManager(ResourceStateManager):
    """Agent teams reported by the team factory."""

    resource_type = ResourceType.TEAM

    def register_team(
        self, team_id: str, team_name: str, department: str, framework: str, registrar: str
    ) -> Result:
        return self._register(
            team_id,
            team_name,
            owner_team=department,
            actor=registrar,
            reason=f"team registered in {department}" if department else "team registered",
            metadata={"department": department, "framework": framework},
        )

    def check_team_dependencies(
        self, team_id: str, team_name: str, dependencies: list[str], checker: str
    ) -> Result:
        """Add a `dependency` requirement per dependency, then move to `active` if all are
        satisfied or to `awaiting_dependencies` (left by itself when the last one becomes active)."""
        if isinstance(dependencies, str) or not isinstance(dependencies, list | tuple):
            return False, "dependencies must be a list of resource ids or names"
        current = self.get_current_state(team_id)
        state = current["current_state"] if current else None
        if state not in {"deployed", "active", "awaiting_dependencies"}:
            # Checked before any requirement is added, so a refusal leaves nothing behind.
            return False, (
                f"team {team_id} is {state or 'not registered'}: dependencies are checked once"
                " it is deployed"
            )
        for dependency in dependencies:
            if not self.add_deployment_requirement(
                team_id, "dependency", dependency, {"type": "team_dependency"}
            ):
                return False, self.last_error
        status = self.check_deployment_requirements(team_id)
        if status["all_satisfied"]:
            return self.transition_state(
                team_id,
                team_name,
                "active",
                "all dependencies satisfied",
                checker,
                {"dependencies": dependencies},
            )
        return self.transition_state(
            team_id,
            team_name,
            "awaiting_dependencies",
            f"{status['pending_count']} dependencies pending",
            checker,
            {"dependencies": dependencies},
        )

    def scale_team(self, team_id: str, team_name: str, replicas: int, scaler: str) -> Result:
        return self.transition_state(
            team_id,
            team_name,
            "scaling",
            f"scaling to {replicas} replicas",
            scaler,
            {"target_replicas": replicas},
        )

    def complete_scaling(
        self, team_id: str, team_name: str, success: bool, actual_replicas: int, scaler: str
    ) -> Result:
        reason = (
            f"scaled to {actual_replicas} replicas"
            if success
            else f"scaling failed, still at {actual_replicas} replicas"
        )
        return self.transition_state(
            team_id, team_name, "active", reason, scaler, {"replicas": actual_replicas}
        )
