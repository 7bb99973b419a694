"""Benchmarks: how much the lifecycle machinery (recording, search attributes) costs over bare Temporal."""
