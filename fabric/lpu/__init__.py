"""Deterministic compiler-scheduled LPU transfers: executor and runner."""
