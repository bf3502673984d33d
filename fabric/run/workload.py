"""Run a `workload:` section on the fabric: every variant's plan, its KV blocks moved for real.

For each variant (`pd`, `ppd/pin`, `ppd/ttl`, `ppd/evict`) the planner (`fabric.workload
.planner`) places every turn in modelled time and says which cache blocks move where; the
traffic runner moves them (`run_traffic` with block transfers and each decode node's block
operations), and the decode and store nodes keep what they receive in memory and prove every
reuse against the blocks' content. The KV arrival times the fabric measured go back into
`account`: TTFT per turn. Reports say which figures were measured on the fabric (KV
arrivals, bytes per link, queues, the integrity of every chunk and every reused block) and
which were computed by the model (prefill and decode times, queueing for compute).

Scales, stated in every report: `kv_scale` N moves 1/N of the KV bytes over links whose rates
are written 1/N of the real ones (transfer durations are kept); `time_scale` T runs
everything T times slower on the host. Reports are in fabric time and real KV bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric.errors import FabricError, TopologyError
from fabric.kv import get_model
from fabric.kv.prefill import PrefillProfile
from fabric.net.lifecycle import FabricState
from fabric.run.traffic import run_traffic
from fabric.topology.document import Topology
from fabric.topology.paths import path_figures
from fabric.workload.planner import (
    Plan,
    Planner,
    TurnIn,
    account,
    session_turns,
    summarise,
    trace_turns,
)

__all__ = ["VariantRun", "build_turns", "plot", "render", "run_workload"]


@dataclass
class VariantRun:
    variant: str
    plan: Plan
    rows: list[dict]
    summary: dict
    links: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    chunks_ok: int = 0
    chunks_bad: int = 0
    proofs: dict[str, int] = field(default_factory=dict)  # reused blocks: ok/missing/corrupt
    stores: list[dict] = field(default_factory=list)
    wall_s: float = 0.0


def build_turns(topo: Topology) -> tuple[list[TurnIn], dict[str, Any]]:
    """The workload's turns, and what the report says of where they came from."""
    spec = topo.workload
    assert spec is not None
    if spec.sessions is not None:
        from fabric.workload.sessions import generate_sessions

        sessions = generate_sessions(spec.sessions, spec.seed)
        try:
            turns = session_turns(sessions, spec.block_tokens)
        except ValueError as e:  # a context of more blocks than a session's keys can name
            raise TopologyError(f"{e}: use larger blocks (block_tokens) or shorter sessions",
                                file=topo.source, line=spec.line, key="workload") from None
        return turns, {"source": "sessions", "sessions": len(sessions), "turns": len(turns),
                       "input_tokens": sum(t.new_tokens for t in turns),
                       "output_tokens": sum(t.output_tokens for t in turns)}
    assert spec.trace is not None
    from fabric.workload.trace import read_trace, reusable_share

    tr = spec.trace
    replay = read_trace(tr.path, start_s=tr.start_s, duration_s=tr.duration_s,
                        speedup=tr.speedup, sample=tr.sample, limit=tr.limit, seed=spec.seed,
                        block_tokens=spec.block_tokens, cut_after_s=spec.duration_s)
    requests = replay.requests
    groups = None
    if tr.sessions:
        from fabric.workload.sessions import sessions_from_trace

        # the trace hashes a prompt's partial last block, which the next turn fills: match
        # whole blocks only, and at least two (every prompt in the trace shares block 0)
        groups = sessions_from_trace(requests, block_tokens=spec.block_tokens, min_blocks=2)
    turns = trace_turns(requests, spec.block_tokens, groups)
    replayed = (f"{len(requests)} of the {replay.window_requests} in its window, over "
                f"{replay.span_s:g} s of fabric time at speed-up {tr.speedup:g}")
    model = get_model(spec.model)
    info = {"source": "trace", "file": tr.path, "requests": len(requests),
            "mapping": f"a {spec.block_tokens}-token trace block is "
                       f"{-(-spec.block_tokens // model.block_size)} KV blocks of "
                       f"{model.block_size} tokens of {spec.model} (a partial one, whole blocks)",
            "implied": reusable_share(requests, spec.block_tokens), "replay": replayed,
            "warning": replay.warning()}
    if groups is not None:
        info["sessions"] = len(groups)
    return turns, info


def _estimate(topo: Topology) -> Callable[[str, str, int], float]:
    cache: dict[tuple[str, str], Any] = {}

    def est(src: str, dst: str, wire_bytes: int) -> float:
        if (src, dst) not in cache:
            cache[(src, dst)] = path_figures(topo, src, dst)
        return cache[(src, dst)].ideal_fct_ns(wire_bytes) / 1e9

    return est


def plan_variant(topo: Topology, variant: str, turns: list[TurnIn]) -> Plan:
    spec = topo.workload
    assert spec is not None
    model = get_model(spec.model)
    profile = PrefillProfile.from_points(spec.compute.points, name=spec.compute.profile)
    planner = Planner(
        variant=variant, prefill=spec.prefill, decode=spec.decode, store=spec.store,
        bytes_per_token=model.bytes_per_token(), state_bytes=model.state_bytes,
        kv_scale=spec.kv_scale, profile=profile, decode_speed=spec.compute.decode_speed,
        tpot_s=spec.compute.tpot_s, cache_bytes=spec.cache.size_bytes // spec.kv_scale,
        cache_policy=spec.cache.policy, estimate=_estimate(topo), time_scale=topo.time_scale,
        cls=spec.cls, chunk_bytes=spec.chunk_bytes, ttl_s=spec.ttl_s,
        ttl_factor=spec.ttl_factor, append=spec.append,
        duration_s=spec.duration_s, kv_block_tokens=model.block_size)
    return planner.run(turns)


def run_variant(state: FabricState, topo: Topology, variant: str, turns: list[TurnIn],
                timeout: float) -> VariantRun:
    spec = topo.workload
    assert spec is not None
    plan = plan_variant(topo, variant, turns)
    if not plan.transfers and not plan.ops:
        raise FabricError(f"{topo.source}: variant {variant} moves nothing (no turns in the "
                          "run's duration?)")
    ts = topo.time_scale
    res = run_traffic(state, topo, timeout=timeout, transfers=plan.transfers,
                      block_ops=plan.ops)

    def fabric_s(t_ns: int) -> float:
        return (t_ns - res.started_ns) / 1e9 / ts

    # every transfer the planner makes carries blocks, so the node reports each one (and
    # each op) with the time its KV was whole: carried blocks in and reused ones proved
    ready: dict[tuple[str, int], float] = {}
    proofs = {"reused": 0, "ok": 0, "missing": 0, "corrupt": 0}
    for b in res.blocks:
        for k in proofs:
            proofs[k] += int(b.get(k, 0))
        if b.get("what") == "send":  # what a store served: its `missing` counted above
            continue
        what = "op" if b.get("what") in ("append", "drop") else "transfer"
        if b.get("t_ready_ns") and not b.get("missing") and not b.get("corrupt"):
            ready[(what, int(b["id"]))] = fabric_s(int(b["t_ready_ns"]))
    rows = account(plan, ready)
    summary = summarise(rows)
    run = VariantRun(variant=variant, plan=plan, rows=rows, summary=summary,
                     errors=list(res.errors), proofs=proofs, stores=list(res.block_stores),
                     chunks_ok=sum(c.ok for c in res.chunk_records),
                     chunks_bad=sum(not c.ok for c in res.chunk_records),
                     wall_s=(res.ended_ns - res.started_ns) / 1e9)
    run.links = _links(topo, res.links, (res.ended_ns - res.started_ns) / 1e9 / ts,
                       spec.kv_scale, (res.started_ns, res.ended_ns))
    never = [r for r in rows if r["ttft_s"] is None]
    if never:
        run.errors.append(f"{variant}: the KV of {len(never)} turn(s) never became ready at "
                          f"its decode node (e.g. session {never[0]['session']} turn "
                          f"{never[0]['turn']})")
    if proofs["missing"] or proofs["corrupt"]:
        run.errors.append(f"{variant}: {proofs['missing']} reused block(s) missing and "
                          f"{proofs['corrupt']} corrupt at the node that reused them")
    return run


def _links(topo: Topology, links: dict, span_s: float, kv_scale: int,
           window: tuple[int, int]) -> list[dict]:
    """Per link direction that carried KV: real bytes, mean utilisation of its rate over the
    run, and its deepest queue in the run's `window` (host ns: the link's own samples; the
    high-water mark spans the fabric's life, so it stands in only without samples)."""
    from fabric.metrics.records import LinkCounters

    rates: dict[tuple[str, str], int | None] = {}
    label: dict[tuple[str, str], str] = {}
    for lk in topo.links:
        for d, (a, b), shape in (("forward", (lk.a, lk.b), lk.forward),
                                 ("reverse", (lk.b, lk.a), lk.reverse)):
            rates[(lk.name, d)] = rates[(lk.name, f"{a}->{b}")] = shape.rate_bps
            label[(lk.name, d)] = f"{a}->{b}"
    out = []
    for name, dirs in links.get("links", {}).items():
        for direction, d in dirs.items():
            moved = int(d.get("bytes_out", 0) or 0)
            if not moved:
                continue
            rate = rates.get((name, direction))
            util = moved * 8 / span_s / rate if rate and span_s > 0 else None
            counters = LinkCounters.from_dict(d)
            inside = [q.queue_bytes for q in counters.samples
                      if window[0] <= q.t_ns <= window[1]]
            queue = max(inside) if inside else counters.queue_high_water
            out.append({"link": name, "direction": label.get((name, direction), direction),
                        "bytes": moved * kv_scale,
                        "utilisation": util, "queue_max_bytes": queue or 0})
    out.sort(key=lambda r: -r["bytes"])
    return out


def run_workload(state: FabricState, topo: Topology, variants: list[str], out_dir: Path,
                 timeout: float = 600.0, progress: Callable[[str], None] | None = None,
                 built: tuple[list[TurnIn], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run every variant; `built`: the turns and their source, when already built."""
    spec = topo.workload
    assert spec is not None
    turns, info = built if built is not None else build_turns(topo)
    if info.get("warning") and progress:
        progress(f"warning: {info['warning']}")
    if not turns:
        raise FabricError(f"{topo.source}: the workload has no turns to run")
    runs = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for variant in variants:
        if progress:
            progress(f"variant {variant}: planning {len(turns)} turns, moving their KV over "
                     "the fabric")
        runs.append(run_variant(state, topo, variant, turns, timeout))
    data = _clean({
        "model": spec.model, "kv_scale": spec.kv_scale, "time_scale": topo.time_scale,
        "source": info, "nodes": {"prefill": list(spec.prefill), "decode": list(spec.decode),
                                  "store": spec.store},
        "runs": [{"variant": r.variant, "summary": r.summary, "links": r.links,
                  "proofs": r.proofs, "stores": r.stores, "chunks_ok": r.chunks_ok,
                  "chunks_bad": r.chunks_bad, "errors": r.errors, "wall_s": r.wall_s,
                  "cut": r.plan.cut, "evictions": r.plan.evictions, "forced": r.plan.forced,
                  "writebacks": r.plan.writebacks, "dropped": r.plan.dropped,
                  "writeback_bytes": r.plan.writeback_bytes,
                  "cache_peak_bytes": {k: v * spec.kv_scale
                                       for k, v in r.plan.cache_peak.items()},
                  "turns": r.rows} for r in runs],
        "note": "fabric time and real KV bytes (kv_scale and time_scale applied back). "
                "Measured on the fabric: when each turn's KV was all at its decode node "
                "(kv_wait), bytes and queues per link, chunk digests, reused-block proofs. "
                "Computed by the model: prefill and append-prefill times, compute queues, "
                "decode time; TTFT adds the two."})
    (out_dir / "workload.json").write_text(json.dumps(data, indent=1))
    plot(data, out_dir / "workload.png")
    return data


def _clean(x: Any) -> Any:  # noqa: ANN401
    """JSON-ready: NaN (no such turns) as None."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.0f}"


def render(data: dict[str, Any]) -> str:
    """The run's table and lines, from what `run_workload` saved (workload.json)."""
    from fabric.metrics.report import format_table
    from fabric.units import format_size

    info = data["source"]
    lines = [f"{data['model']}: KV moved over the fabric at 1/{data['kv_scale']} of its bytes "
             f"on links at 1/{data['kv_scale']} of their rates, time_scale "
             f"{data['time_scale']:g}; figures in fabric time and real bytes. Measured on the "
             "fabric: KV wait (from when a turn's KV started to move until it was all at its "
             "decode node), bytes per link, integrity; computed by the model: prefill, "
             "append-prefill and decode times, so TTFT is both."]
    if info["source"] == "trace":
        imp = info["implied"]
        lines.append(f"trace {Path(info['file']).name}: {info['requests']} requests "
                     f"({info['replay']}); reusable KV the trace implies (one unbounded "
                     f"cache): {100 * imp['block_share']:.1f}% of blocks, "
                     f"{100 * imp['token_share']:.1f}% of tokens; the hit % below is what "
                     "the decode nodes' own bounded caches held when each request came"
                     + (f"; {info['mapping']}" if info.get("mapping") else ""))
        if info.get("warning"):
            lines.append(f"warning: {info['warning']}")
    else:
        lines.append(f"{info['sessions']} sessions, {info['turns']} turns, "
                     f"{info['input_tokens']:,} new input and {info['output_tokens']:,} output "
                     "tokens")
    runs = data["runs"]
    # sessions: turn 1 against the turns that can reuse; single requests: all of them
    later = "later" if any(r["summary"]["turns_later"] for r in runs) else "all"
    header = ["variant", "turns", "TTFT 1 p50 ms", "TTFT 2+ p50", "p90", "p99",
              "KV wait 2+ ms", "KV in/turn", "hit %", "reload %", "evicted", "integrity"]
    if later == "all":
        header[2:7] = ["TTFT p50 ms", "p90", "p99", "KV wait ms"]
    rows = []
    for r in runs:
        s = r["summary"]
        bad = r["chunks_bad"] + r["proofs"].get("missing", 0) + r["proofs"].get("corrupt", 0)
        ttft = [_ms(s[f"{later}_ttft_p{q}_s"]) for q in (50, 90, 99)]
        rows.append([r["variant"], str(s["turns"]),
                     *([_ms(s["turn1_ttft_p50_s"])] if later == "later" else []), *ttft,
                     _ms(s[f"{later}_kv_wait_mean_s"]),
                     format_size(int(s["all_kv_bytes_mean"])),
                     f"{100 * s['hit_rate']:.1f}", f"{100 * s['reload_rate']:.1f}",
                     str(r["evictions"]), "OK" if not bad else f"FAILED ({bad})"])
    lines.append(format_table(rows, header))
    for r in runs:
        if r["links"]:
            top = r["links"][0]
            util = top["utilisation"]
            lines.append(f"  {r['variant']}: busiest link direction {top['direction']}: "
                         f"{format_size(top['bytes'])} of KV"
                         + (f", {100 * util:.1f}% of its rate over the run" if util else "")
                         + f", deepest queue {format_size(top['queue_max_bytes'])} "
                         "(host bytes)")
        if r.get("writeback_bytes"):
            lines.append(f"  {r['variant']}: {r['writebacks']} blocks written back to the "
                         f"store ({format_size(r['writeback_bytes'])} of KV, not in 'KV in/turn',"
                         " which counts the KV each turn waited for)")
        if r["cut"]:
            lines.append(f"  {r['variant']}: {r['cut']} turn(s) cut: they would arrive after "
                         "the workload's duration")
    ok = sum(r["chunks_ok"] for r in runs)
    proved = sum(r["proofs"].get("ok", 0) for r in runs)
    lines.append(f"integrity: {ok} KV chunks checked at their receivers, {proved} reused "
                 "blocks proved held (bytes re-hashed against their content) at the node "
                 "that reused them")
    pd = next((r for r in runs if r["variant"] == "pd"), None)
    for r in runs:
        if pd is None or r is pd:
            continue
        a, b = pd["summary"][f"{later}_ttft_p50_s"], r["summary"][f"{later}_ttft_p50_s"]
        if a and b:
            lines.append(f"{r['variant']} against pd, "
                         f"{'turn 2+ ' if later == 'later' else ''}TTFT p50: {b / a - 1:+.0%}"
                         + ("  (briefing, PPD paper: -68%)" if later == "later" else ""))
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    """TTFT of later turns per variant, and KV moved per turn (from workload.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    try:
        runs = data["runs"]
        later = any(row["turn"] > 0 for r in runs for row in r["turns"])
        for r in runs:
            xs = np.sort([row["ttft_s"] * 1e3 for row in r["turns"]
                          if (row["turn"] > 0 or not later) and row["ttft_s"] is not None])
            if xs.size:
                a.step(xs, np.arange(1, xs.size + 1) / xs.size, where="post",
                       label=r["variant"])
        a.set_xscale("log")
        a.set_xlabel(f"TTFT{', turns 2+' if later else ''} [ms] (fabric time; KV wait "
                     "measured, compute modelled)")
        a.set_ylabel("fraction of turns")
        a.legend()
        a.grid(True, alpha=0.3)
        b.bar([r["variant"] for r in runs],
              [r["summary"]["all_kv_bytes_mean"] / 2**20 for r in runs])
        b.set_ylabel("KV moved per turn [MiB, real]")
        b.set_title("KV over the fabric per turn")
        b.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
