"""Lifecycle workflows: deterministic orchestration only.

Models and machines come from `state` through the sandbox pass-through; activities are called by name,
so this package never imports an I/O client (enforced by import-linter).
"""
