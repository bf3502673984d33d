"""Compiler-scheduled LPU transfers: transfer graphs in, conflict-free plans of vectors out.

Pure: no sockets, no clocks of their own. `compile_plan(graph, topo)` lays every transfer out
as fixed-size vector batches in per-link-direction slots; `verify(plan, topo, graph)` rechecks
a plan from scratch and names the first conflict; `DriftingClock` models the plesiosynchronous
node clocks the guard band has to absorb.
"""

from __future__ import annotations

from fabric.schedule.clock import DriftingClock, required_guard_ns
from fabric.schedule.compiler import (
    VECTOR_BYTES,
    Plan,
    Send,
    compile_plan,
    lower_bound_ns,
    slot_ns_for,
)
from fabric.schedule.graph import Transfer, TransferGraph, attention_ffn, pipeline, tp_allreduce
from fabric.schedule.render import gantt_png, plan_table
from fabric.schedule.topo import LpuLink, LpuTopology, mesh, ring, torus
from fabric.schedule.verify import PlanConflict, verify

__all__ = [
    "VECTOR_BYTES",
    "DriftingClock",
    "LpuLink",
    "LpuTopology",
    "Plan",
    "PlanConflict",
    "Send",
    "Transfer",
    "TransferGraph",
    "attention_ffn",
    "compile_plan",
    "gantt_png",
    "lower_bound_ns",
    "mesh",
    "pipeline",
    "plan_table",
    "required_guard_ns",
    "ring",
    "slot_ns_for",
    "torus",
    "tp_allreduce",
    "verify",
]
