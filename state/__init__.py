"""Domain and persistence: resource types, states, state machines, payload models and stores.

Nothing here imports temporalio, docker or kubernetes (enforced by import-linter), so workflows can
pass these modules through the sandbox and the database layer can be used without Temporal.
"""
