"""The seed's Python API (`elf_automations.shared.state_manager`) over rsm.

    from control.state_manager import WorkflowStateManager, create_client

    supabase = create_client(url, key)      # a Supabase URL + service key, a Postgres URL, or ()
    workflow_mgr = WorkflowStateManager(supabase)
    success, error = workflow_mgr.register_workflow("email-parser", "Email Parser", "marketing", "me")

Writes return the seed's `(success, error)` tuples (requirement writes a bool, with the reason in
`manager.last_error`); reads return the seed's dict shapes and raise `StateManagerUnavailable` when
the database cannot be reached (an empty answer would read as "nothing there").
"""

from control.state_manager.base import ResourceStateManager
from control.state_manager.connection import StateClient, StateManagerUnavailable, create_client
from control.state_manager.managers import MCPStateManager, TeamStateManager, WorkflowStateManager
from control.state_manager.tracker import StateTracker

__all__ = [
    "MCPStateManager",
    "ResourceStateManager",
    "StateClient",
    "StateManagerUnavailable",
    "StateTracker",
    "TeamStateManager",
    "WorkflowStateManager",
    "create_client",
]
