"""Compile an LPU topology's transfer graph, execute it on the running fabric, report.

For every (drift, resync period) of the sweep the plan is compiled with the guard band that
drift needs and executed by node processes whose clocks drift; then the same graph runs
dynamically. Every batch's arrival is compared with the plan's arrival time (lateness), in
fabric time: the plan is in fabric nanoseconds and runs `time_scale` times slower on the host.
The host's own timer noise is measured in the same run (how late drift-free nodes send) and
reported beside it: one Python host cannot meet nanosecond slots, which is what `time_scale`
is for.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio

from fabric.errors import FabricError
from fabric.lpu.executor import serve_lpu
from fabric.net.lifecycle import FabricState
from fabric.node.agent import start_node
from fabric.node.session import Go, Nodes, Records, Stop, Sync
from fabric.node.spawn import NodeProcess, reap
from fabric.schedule import (
    LpuLink,
    LpuTopology,
    Plan,
    TransferGraph,
    attention_ffn,
    compile_plan,
    pipeline,
    tp_allreduce,
    verify,
)
from fabric.topology.document import Topology
from fabric.topology.lpu import LpuSpec
from fabric.units import format_time

START_LEAD_NS = 300_000_000
HEADER_BYTES = 16


@dataclass
class LpuRun:
    mode: str
    drift_ppm: float
    resync_ns: int  # fabric time
    guard_ns: int  # fabric time
    makespan_ns: int  # planned, fabric time
    completion_ns: int | None  # measured, fabric time
    batches: int
    missing: int
    lateness_ns: dict[str, float | None]  # p50/p90/p99/max, fabric time (signed)
    deviation_max_ns: float | None  # max |arrival - planned|, fabric time
    jitter_std_ns: float | None
    jitter_p99_p50_ns: float | None
    send_late_ns: dict[str, float | None] = field(default_factory=dict)  # host timer, wall ns


def build_graph(spec: LpuSpec) -> TransferGraph:
    names = list(spec.names)
    a = spec.graph_args
    if spec.graph == "tp-allreduce":
        return tp_allreduce(names, a["bytes"])
    if spec.graph == "pipeline":
        return pipeline(names, a["bytes"], a["microbatches"])
    attn, ffn = names[: a["attention"]], names[a["attention"]: a["attention"] + a["ffn"]]
    return attention_ffn(attn, ffn, a["tokens"], a["bytes_per_token"])


def lpu_topology(topo: Topology) -> LpuTopology:
    """The topology's LPU links as the schedule compiler sees them (fabric time)."""
    assert topo.lpu is not None
    links = tuple(LpuLink(link.name, link.a, link.b, link.forward.rate_bps or 1,
                          link.forward.delay_ns)
                  for link in topo.links if link.a in topo.lpu.names and link.b in topo.lpu.names)
    return LpuTopology(tuple(topo.lpu.names), links)


def _pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {k: None for k in ("p50", "p90", "p99", "max")}
    arr = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)), "max": float(arr.max())}


def node_plans(mode: str, plan: Plan, graph: TransferGraph, ltopo: LpuTopology,
               spec: LpuSpec, state: FabricState, ts: float, drift: float) -> dict[str, dict]:
    names = list(spec.names)
    index = {n: i for i, n in enumerate(names)}
    final = {t.id: t.dst for t in graph.transfers}
    # every chip its own oscillator: a seeded drift in [-drift, +drift] per node
    rng = np.random.default_rng([spec.seed, round(drift * 1000)])
    drifts = {n: float(drift * (2 * rng.random() - 1)) for n in names}
    batches = {t.id: math.ceil(t.nbytes / (spec.vector_bytes * spec.batch_vectors))
               for t in graph.transfers}
    slot_of = {link_id: ns for link_id, ns in plan.slot_ns.items()}
    out = {}
    for n in names:
        next_hop = {}
        for d in names:
            if d != n:
                link_id, direction = ltopo.path(n, d)[0]
                next_hop[d] = ltopo.link(link_id).ends(direction)[1]
        neighbours = {}
        for link in ltopo.links:
            if n in (link.a, link.b):
                other = link.b if link.a == n else link.a
                neighbours[other] = round(slot_of[link.id] * ts)
        sends = sorted(
            ([s.transfer, s.batch, s.hop, index[final[s.transfer]], index[s.dst],
              round(s.depart_ns * ts)] for s in plan.sends if s.src == n),
            key=lambda r: (r[5], r[0], r[1]))
        out[n] = {
            "name": n, "mode": mode, "address": state.nodes[n]["loopback"],
            "peers": {m: state.nodes[m]["loopback"] for m in names}, "index": index,
            "next_hop": next_hop, "sends": sends if mode == "scheduled" else [],
            "originates": [[t.id, t.dst, batches[t.id], list(t.deps)]
                           for t in graph.transfers if t.src == n],
            "expects": {t.id: batches[t.id] for t in graph.transfers if t.dst == n},
            "payload_bytes": spec.vector_bytes * spec.batch_vectors,
            "slot_ns": neighbours, "drift_ppm": drifts[n],
        }
    return out


def execute(state: FabricState, topo: Topology, plan: Plan, graph: TransferGraph,
            ltopo: LpuTopology, mode: str, drift: float, resync_ns: int,
            agents: Any = None) -> LpuRun:  # noqa: ANN401 - a node.agent.AgentBook
    """One run of `graph`: scheduled by `plan`, or dynamic (then `plan` is the reference)."""
    spec = topo.lpu
    assert spec is not None
    ts = topo.time_scale
    plans = node_plans(mode, plan, graph, ltopo, spec, state, ts, drift)
    procs: list[NodeProcess] = []
    records: dict[str, dict] = {}
    t0_box: list[int] = []
    try:
        for n in spec.names:
            local = agents is None or n not in agents.agents
            procs.append(start_node(n, state.netns_of(n) if local else None, procs,
                                    serve_lpu, agents))
        duration_s = plan.makespan_ns * ts / 1e9 * 3 + 1.0
        trio.run(_drive, procs, plans, records, t0_box, duration_s, resync_ns * ts)
    finally:
        for p in procs:
            p.ctl.close()
        reap(procs, grace=3.0)
    dead = [p.name for p in procs if p.name not in records]
    if dead:
        raise FabricError(f"LPU node(s) {', '.join(dead)} did not report "
                          f"({'; '.join(p.describe_exit() for p in procs if p.name in dead)})")
    t0 = t0_box[0]
    final = {t.id: t.dst for t in graph.transfers}
    last_hop = {(s.transfer, s.batch): s for s in plan.sends if s.dst == final[s.transfer]}
    late: list[float] = []
    last_arrival = 0
    for rec in records.values():
        for tid, batch, _hop, t in rec["arrivals"]:
            planned = t0 + round(last_hop[(tid, batch)].arrive_ns * ts)
            late.append((t - planned) / ts)
            last_arrival = max(last_arrival, t)
    send_late = [t - (t0 + depart) for rec in records.values()
                 for _x, _b, _h, depart, t in rec["sent"] if depart >= 0]
    arr = np.asarray(late) if late else None
    return LpuRun(
        mode=mode, drift_ppm=drift, resync_ns=resync_ns, guard_ns=plan.guard_ns,
        makespan_ns=plan.makespan_ns,
        completion_ns=round((last_arrival - t0) / ts) if late else None,
        batches=len(last_hop), missing=len(last_hop) - len(late), lateness_ns=_pct(late),
        deviation_max_ns=float(np.abs(arr).max()) if arr is not None else None,
        jitter_std_ns=float(arr.std()) if arr is not None else None,
        jitter_p99_p50_ns=float(np.percentile(arr, 99) - np.percentile(arr, 50))
        if arr is not None else None,
        send_late_ns=_pct([float(x) for x in send_late]))


async def _drive(procs: list[NodeProcess], plans: dict[str, dict], records: dict[str, dict],
                 t0_box: list[int], duration_s: float, resync_host_ns: float) -> None:
    nodes = Nodes({p.name: p.ctl for p in procs}, what="LPU node",
                  offsets={p.name: p.offset_ns for p in procs})
    await nodes.start(plans, within=30)
    t0 = time.monotonic_ns() + START_LEAD_NS
    t0_box.append(t0)
    # `now` is read as each node's message leaves, so no node's clock starts behind by the
    # time it took to send to the nodes before it
    for p in procs:
        await nodes.send(p.name, Go(t0=t0, now=time.monotonic_ns()))
    end = time.monotonic() + START_LEAD_NS / 1e9 + duration_s
    period = max(resync_host_ns / 1e9, 0.001)
    while time.monotonic() < end:  # the sync messages: each resets the nodes' clocks
        await trio.sleep(min(period, max(0.0, end - time.monotonic())))
        for p in procs:
            await nodes.send(p.name, Sync(now=time.monotonic_ns()))
    await nodes.broadcast(Stop())
    with trio.fail_after(30):
        for p in procs:
            msg = await nodes[p.name].receive()
            if isinstance(msg, Records):  # its times onto the runner's clock
                off = p.offset_ns
                records[p.name] = {
                    "arrivals": [(x, b, h, t - off) for x, b, h, t in msg.body["arrivals"]],
                    "sent": [(x, b, h, d, t - off) for x, b, h, d, t in msg.body["sent"]]}


def run_lpu(state: FabricState, topo: Topology, out_dir: Path,
            progress=None, agents: Any = None) -> list[LpuRun]:  # noqa: ANN001, ANN401
    """The whole sweep: scheduled per (drift, resync), then dynamic; writes plan files."""
    from fabric.schedule import gantt_png, plan_table

    spec = topo.lpu
    assert spec is not None
    graph = build_graph(spec)
    ltopo = lpu_topology(topo)
    runs: list[LpuRun] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = None
    for resync in spec.resync_ns:
        for drift in spec.drift_ppm:
            planned_for = drift if spec.plan_drift_ppm is None else spec.plan_drift_ppm
            plan = compile_plan(graph, ltopo, vector_bytes=spec.vector_bytes,
                                batch_vectors=spec.batch_vectors, guard_ns=None,
                                drift_ppm=planned_for, resync_period_ns=resync)
            verify(plan, ltopo, graph)  # never execute a plan the verifier would reject
            if reference is None:
                reference = plan
                (out_dir / "plan.txt").write_text(plan_table(plan, limit=200) + "\n")
                gantt_png(plan, out_dir / "gantt.png")
            if progress:
                progress(f"scheduled: drift {drift:g} ppm, resync {format_time(resync)}, "
                         f"guard {format_time(plan.guard_ns)}")
            runs.append(execute(state, topo, plan, graph, ltopo, "scheduled", drift, resync,
                                agents))
    assert reference is not None
    if progress:
        progress("dynamic: same graph, no plan, links arbitrated by FIFO queues")
    runs.append(execute(state, topo, reference, graph, ltopo, "dynamic", 0.0,
                        spec.resync_ns[0], agents))
    (out_dir / "lpu.json").write_text(json.dumps(
        {"time_scale": topo.time_scale, "graph": spec.graph, "graph_args": spec.graph_args,
         "shape": spec.shape, "nodes": len(spec.names), "transfers": len(graph.transfers),
         "sends": len(reference.sends), "runs": [asdict(r) for r in runs],
         "note": "lateness, completion and jitter in fabric ns (wall / time_scale); "
                 "send_late_ns is the host timer's lateness in wall ns"}, indent=1))
    _lateness_plot(runs, out_dir / "lateness.png", topo.time_scale)
    return runs


def render_runs(runs: list[LpuRun], ts: float) -> str:
    def t(ns: float | None) -> str:
        return "-" if ns is None else format_time(round(ns))

    header = ["mode", "drift", "resync", "guard", "planned", "completed", "late p50", "p99",
              "max |dev|", "jitter sd", "p99-p50", "missing"]
    rows = []
    for r in runs:
        rows.append([r.mode, f"±{r.drift_ppm:g} ppm" if r.mode == "scheduled" else "-",
                     t(r.resync_ns) if r.mode == "scheduled" else "-", t(r.guard_ns),
                     t(r.makespan_ns), t(r.completion_ns), t(r.lateness_ns["p50"]),
                     t(r.lateness_ns["p99"]), t(r.deviation_max_ns), t(r.jitter_std_ns),
                     t(r.jitter_p99_p50_ns), str(r.missing)])
    from fabric.metrics.report import format_table

    lines = [f"fabric time (time_scale {ts:g}); lateness = arrival - planned arrival, per "
             f"batch of vectors; each node's clock drifts by its own amount within ±drift;\n"
             "planned = the compiler's schedule (computed); completed, lateness and jitter "
             "measured on the fabric",
             format_table(rows, header, numeric=False)]
    floor = [r.send_late_ns for r in runs if r.mode == "scheduled" and r.drift_ppm == 0]
    p50, p99 = (floor[0].get("p50"), floor[0].get("p99")) if floor else (None, None)
    if p50 is not None and p99 is not None:
        lines.append(f"host timer floor (drift 0: how late sends left, wall clock): p50 "
                     f"{format_time(round(p50))}, p99 {format_time(round(p99))} = "
                     f"{format_time(round(p50 / ts))} / {format_time(round(p99 / ts))}"
                     " in fabric time")
    return "\n".join(lines)


def _lateness_plot(runs: list[LpuRun], path: Path, ts: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        labels = [f"{r.mode}" + (f" {r.drift_ppm:g} ppm / {format_time(r.resync_ns)}"
                                 if r.mode == "scheduled" else "") for r in runs]
        p50 = [(r.lateness_ns["p50"] or 0) / 1e3 for r in runs]
        p99 = [(r.lateness_ns["p99"] or 0) / 1e3 for r in runs]
        x = np.arange(len(runs))
        ax.bar(x - 0.2, p50, 0.4, label="p50")
        ax.bar(x + 0.2, p99, 0.4, label="p99")
        ax.set_xticks(x, labels, rotation=20, ha="right", fontsize="small")
        ax.set_ylabel(f"lateness vs plan [us] (fabric time, time_scale {ts:g})")
        ax.set_title("Arrival lateness against the compiled plan")
        ax.legend()
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
