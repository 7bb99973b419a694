"""The seed document's usage examples, run against the dev stack (`rsm dev up` first).

    .venv/bin/python examples/seed/usage_examples.py

Imports aside, each block is the seed's own; "uuid-here" is a fresh UUID per run (resource ids are
unique across types here). It prints every `(success, error)` and then each resource's history as
the database recorded it, and exits 1 if a step that should succeed did not.
"""

from __future__ import annotations

import sys
import uuid

from control.state_manager import (
    MCPStateManager,
    StateManagerUnavailable,
    StateTracker,
    WorkflowStateManager,
    create_client,
)

url = key = None  # the environment (RSM_DATABASE_URL, or SUPABASE_URL + key) decides


def main() -> int:
    try:
        supabase = create_client(url, key, timeout=15)
    except StateManagerUnavailable as err:
        print(f"error: {err} (start the dev stack with `.venv/bin/rsm dev up`)", file=sys.stderr)
        return 1
    workflow_uuid, mcp_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    failures = 0

    def show(step: str, result: tuple[bool, str | None], expected: bool = True) -> None:
        nonlocal failures
        success, error = result
        failures += success is not expected
        note = "" if expected else "  (refused, as expected)"
        print(f"  {step:<22} success={success!s:<5} error={error}{note}")

    print("1. Workflow lifecycle")
    workflow_mgr = WorkflowStateManager(supabase)
    show(
        "register_workflow",
        workflow_mgr.register_workflow(
            workflow_id=workflow_uuid,
            workflow_name="Email Parser",
            owner_team="marketing-team",
            transitioned_by="user@example.com",
        ),
    )
    show(
        "start_validation",
        workflow_mgr.start_validation(
            workflow_id=workflow_uuid,
            workflow_name="Email Parser",
            validator="validation-service",
        ),
    )
    show(
        "complete_validation",
        workflow_mgr.complete_validation(
            workflow_id=workflow_uuid,
            workflow_name="Email Parser",
            success=True,
            validation_report={"errors": [], "warnings": []},
            validator="validation-service",
        ),
    )
    show(
        "deploy_workflow",
        workflow_mgr.deploy_workflow(
            workflow_id=workflow_uuid,
            workflow_name="Email Parser",
            n8n_id="n8n-workflow-id",
            deployer="deployment-service",
        ),
    )
    show(
        "activate_workflow",
        workflow_mgr.activate_workflow(
            workflow_id=workflow_uuid,
            workflow_name="Email Parser",
            activator="admin@example.com",
        ),
    )

    print("2. MCP server lifecycle")
    mcp_mgr = MCPStateManager(supabase)
    show(
        "register_mcp",
        mcp_mgr.register_mcp(
            mcp_id=mcp_uuid,
            mcp_name="team-registry",
            mcp_type="server",
            category="data-access",
            registrar="mcp-factory",
        ),
    )
    show(
        "build_image",
        mcp_mgr.build_image(mcp_id=mcp_uuid, mcp_name="team-registry", builder="ci-system"),
    )
    show(
        "complete_build",
        mcp_mgr.complete_build(
            mcp_id=mcp_uuid,
            mcp_name="team-registry",
            success=True,
            image_tag="team-registry:v1.0",
            builder="ci-system",
        ),
    )
    # As in the seed's own machine, a server that was never deployed cannot be health-checked.
    show(
        "health_check",
        mcp_mgr.health_check(mcp_id=mcp_uuid, mcp_name="team-registry", checker="k8s-operator"),
        expected=False,
    )

    print("3. Querying resource states")
    tracker = StateTracker(supabase)
    overview = tracker.get_resource_overview()
    print(
        f"  overview: { {t: {s: i['count'] for s, i in st.items()} for t, st in overview.items()} }"
    )
    awaiting = tracker.get_resources_awaiting_action()
    print(f"  awaiting action: {len(awaiting)}")
    failed = tracker.get_failed_resources()
    print(f"  failed: {len(failed)}")
    details = tracker.get_resource_details("workflow", workflow_uuid)
    print(f"  details: {details['current_state']['current_state']}, {len(details['history'])} rows")
    results = tracker.search_resources(
        query="email", resource_type="workflow", states=["active", "deployed"]
    )
    print(f"  search 'email': {[r['resource_name'] for r in results][:5]}")
    readiness = tracker.get_deployment_readiness()
    print(f"  readiness: { {k: (v['ready'], v['blocked']) for k, v in readiness.items()} }")

    for rid in (workflow_uuid, mcp_uuid):
        print(f"history of {rid}:")
        for row in reversed(
            tracker.get_resource_details("workflow" if rid == workflow_uuid else "mcp_server", rid)[
                "history"
            ]
        ):
            print(
                f"  {row['from_state'] or '-':>12} -> {row['to_state']:<12}"
                f" {row['transitioned_by']:<20} {row['transition_reason']}"
            )
    supabase.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
