"""Run prefill-as-a-service on the fabric: the planner decides, the network delivers.

For each policy, the sans-IO simulator places every request (local or remote prefill
instance, decode instance) and says when its prefill finishes; each request's KV then moves
for real, from that prefill node to its decode node over the fabric (remote KV across the
shaped egress link), starting at the finish time. The KV arrival times measured at the decode
nodes go back into the simulator's accounting: TTFT, throughput, decode SLO. Egress figures
come both from the plan (per transfer windows) and from the egress link's own counters.

Scales, stated in every report: `kv_scale` N moves 1/N of the KV bytes over links whose
rates are written 1/N of the real ones (transfer durations are kept); `time_scale` T runs
everything T times slower on the host (T < 1: faster). Reports are in fabric time and bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from fabric.errors import FabricError
from fabric.kv import get_model
from fabric.kv.layout import transfer_bytes
from fabric.kv.prefill import H20, H200, get_profile
from fabric.net.lifecycle import FabricState
from fabric.prfaas.router import make_router
from fabric.prfaas.sim import PdSimulator, Report, table
from fabric.prfaas.workload import generate
from fabric.run.traffic import run_traffic
from fabric.topology.document import Topology
from fabric.traffic import Transfer

ROUTER_NAMES = {"local": "local-only", "remote-all": "remote-all", "threshold": "threshold",
                "adaptive": "adaptive"}
SEED_CASE = {"local": 2.11, "remote-all": 2.45, "threshold": 3.24}  # req/s, seed table


@dataclass
class PolicyRun:
    policy: str
    rate_per_s: float  # offered load of this pass
    report: Report
    egress_measured_gbps: float  # from the egress link's counters, fabric Gbit/s
    egress_bytes: int  # fabric bytes (kv_scale applied back)
    errors: list[str]
    egress_peak_gbps: float = 0.0
    chunks_ok: int = 0  # KV chunks whose digest checked at the decode node
    chunks_bad: int = 0  # busiest 5 s (fabric) of the link's own samples


def _egress(topo: Topology) -> tuple[float, float]:
    """(fabric rate bps, fabric one-way delay s) of the egress link, before kv_scale."""
    spec = topo.prfaas
    assert spec is not None
    link = next(lk for lk in topo.links if {lk.a, lk.b} == set(spec.egress))
    rate = (link.forward.rate_bps or 10**12) * spec.kv_scale
    return float(rate), link.forward.delay_ns / 1e9


def simulator(topo: Topology, policy: str) -> PdSimulator:
    spec = topo.prfaas
    assert spec is not None
    model = get_model(spec.model)
    egress_bps, delay_s = _egress(topo)
    params = {"tokens": spec.threshold} if policy == "threshold" else (
        {"base": spec.threshold} if policy == "adaptive" else {})
    local, decode, remote = spec.layout(policy)
    return PdSimulator(
        len(local), len(remote), len(decode),
        get_profile(spec.model), H20, H200, make_router(ROUTER_NAMES[policy], **params),
        lambda tokens: transfer_bytes(model, tokens), egress_bps=egress_bps,
        egress_rtt_s=2 * delay_s)


def run_policy(state: FabricState, topo: Topology, policy: str, rate_per_s: float,
               timeout: float = 600.0) -> PolicyRun:
    spec = topo.prfaas
    assert spec is not None
    wl = spec.workload
    requests = generate(wl.seed, wl.requests, rate_per_s, wl.mean_tokens, wl.sigma,
                        wl.min_tokens, wl.max_tokens, wl.output_tokens, wl.prefix_hit_rate)
    sim = simulator(topo, policy)
    jobs = sim.plan(requests)
    ts = topo.time_scale
    local, decode, remote = spec.layout(policy)
    transfers = []
    for i, job in enumerate(jobs):
        pool = local if job.where == "local" else remote
        nbytes = max(1, job.kv_bytes // spec.kv_scale)
        transfers.append(Transfer(
            id=i, flow=f"{policy}-{job.where}", kind=f"kv-{job.where}", cls=topo.classes[0].name,
            src=pool[job.instance], dst=decode[job.decode_instance], transport="tcp",
            request=job.request.id, model=None, tokens=job.request.uncached_tokens,
            nbytes=nbytes, chunk_bytes=max(4096, min(1 << 20, nbytes)),
            start_ns=round(job.finish_s * 1e9 * ts), after=None))
    res = run_traffic(state, topo, timeout=timeout, transfers=transfers)
    arrival: dict[int, float] = {}
    for rec in res.transfer_records:
        if rec.status != "ok":
            continue
        arrival[rec.request] = (rec.t_done_ns - res.started_ns) / 1e9 / ts
    missing = [j.request.id for j in jobs if j.request.id not in arrival]
    if missing:
        raise FabricError(f"{policy}: KV of {len(missing)} request(s) never arrived "
                          f"(e.g. request {missing[0]}): {'; '.join(res.errors) or 'no error'}")
    # a KV transfer cannot land before its prefill ends; host timer noise can round it so
    kv_at = {j.request.id: max(arrival[j.request.id], j.finish_s) for j in jobs}
    report = sim.account(jobs, kv_at)
    egress_link = next(lk for lk in topo.links if {lk.a, lk.b} == set(spec.egress))
    dirs = res.links.get("links", {}).get(egress_link.name, {})
    moved = sum(d.get("bytes_out", 0) for d in dirs.values()) * spec.kv_scale
    span_s = (res.ended_ns - res.started_ns) / 1e9 / ts
    # the engine's samples span its whole life: only this run's count
    peak = max((_peak_bps([x for x in d.get("samples", [])
                           if res.started_ns <= x[0] <= res.ended_ns], ts)
                for d in dirs.values()), default=0.0)
    mean = moved * 8 / span_s / 1e9 if span_s > 0 else 0.0
    # the table's egress figures are the link's, measured: not the model's transfer windows
    report = replace(report, egress_mean_gbps=mean,
                     egress_peak_gbps=peak * spec.kv_scale / 1e9)
    return PolicyRun(policy=policy, rate_per_s=rate_per_s, report=report,
                     egress_measured_gbps=mean, egress_bytes=moved, errors=list(res.errors),
                     egress_peak_gbps=report.egress_peak_gbps,
                     chunks_ok=sum(c.ok for c in res.chunk_records),
                     chunks_bad=sum(not c.ok for c in res.chunk_records))


PEAK_WINDOW_S = 5.0  # fabric seconds: shorter windows see the engine's release bursts


def _peak_bps(samples: list, ts: float, window_fabric_s: float = PEAK_WINDOW_S) -> float:
    """Busiest `window_fabric_s` of a link direction from its (t_ns, queue, bytes_out)
    samples, in host bytes scaled to fabric time (bits/s before kv_scale)."""
    pts = [(s[0], s[2]) for s in samples if len(s) > 2]
    window_ns = window_fabric_s * ts * 1e9
    best = 0.0
    j = 0
    for i in range(len(pts)):
        while j < len(pts) and pts[j][0] - pts[i][0] < window_ns:
            j += 1
        if j == len(pts):
            break
        dt = pts[j][0] - pts[i][0]
        best = max(best, (pts[j][1] - pts[i][1]) * 8 / (dt / 1e9) * ts)
    return best


def run_prfaas(state: FabricState, topo: Topology, policies: list[str], out_dir: Path,
               progress=None) -> list[PolicyRun]:  # noqa: ANN001
    spec = topo.prfaas
    assert spec is not None
    rates = [spec.workload.rate_per_s]
    if spec.workload.ttft_rate_per_s:
        rates.append(spec.workload.ttft_rate_per_s)
    runs = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for rate in rates:
        for policy in policies:
            if progress:
                progress(f"policy {policy} at {rate:g} req/s: planning, moving KV over the "
                         "fabric")
            runs.append(run_policy(state, topo, policy, rate))
    (out_dir / "prfaas.json").write_text(json.dumps({
        "model": spec.model, "kv_scale": spec.kv_scale, "time_scale": topo.time_scale,
        "layouts": {r.policy: dict(zip(("local_prefill", "decode", "remote_prefill"),
                                       map(list, spec.layout(r.policy)), strict=True))
                    for r in runs},
        "workload": spec.workload.__dict__, "threshold": spec.threshold,
        "runs": [{**r.report.to_dict(), "policy": r.policy, "offered_rps": r.rate_per_s,
                  "egress_measured_gbps": r.egress_measured_gbps,
                  "egress_bytes_fabric": r.egress_bytes, "errors": r.errors} for r in runs],
        "note": "fabric time and fabric bytes (kv_scale and time_scale applied back); egress "
                "mean and peak are the egress link's own counters and samples; KV arrivals "
                "are measured; queues, decode, TTFT and throughput are computed from them"},
        indent=1, default=str))
    _plot(runs, out_dir / "prfaas.png")
    return runs


def render(runs: list[PolicyRun], topo: Topology) -> str:
    spec = topo.prfaas
    assert spec is not None
    lines = [f"{spec.model}: KV moved over the fabric at 1/{spec.kv_scale} of its bytes on "
             f"links at 1/{spec.kv_scale} of their rates, time_scale {topo.time_scale:g}; "
             "figures in fabric time and bytes. Measured on the fabric: KV arrival times and "
             "egress (the link's counters); computed from them by the model: prefill queues, "
             "decode, TTFT, throughput"]
    for policy in dict.fromkeys(r.policy for r in runs):
        local, decode, remote = spec.layout(policy)
        lines.append(f"  {policy}: {len(local)} local prefill (H20), {len(decode)} decode "
                     f"(H20), {len(remote)} remote prefill (H200) instances of 8 GPUs")
    for rate in dict.fromkeys(r.rate_per_s for r in runs):
        these = [r for r in runs if r.rate_per_s == rate]
        lines.append(f"offered {rate:g} req/s:")
        lines.append(table({r.policy: r.report for r in these}))
    ok = sum(r.chunks_ok for r in runs)
    bad = sum(r.chunks_bad for r in runs)
    lines.append(f"integrity: {'OK' if not bad else 'FAILED'} ({ok} KV chunks checked at the "
                 f"decode nodes" + (f", {bad} corrupt" if bad else "") + ")")
    first = [r for r in runs if r.rate_per_s == runs[0].rate_per_s]
    thr = {r.policy: r.report.throughput_rps for r in first}
    if "threshold" in thr:
        vs = [f"vs {p} {thr['threshold'] / thr[p] - 1:+.0%}" for p in ("local", "remote-all")
              if thr.get(p)]
        lines.append("threshold throughput " + ", ".join(vs) + "  (seed: +54% vs homogeneous "
                     "PD, +32% vs naive heterogeneous)")
    last = [r for r in runs if r.rate_per_s == runs[-1].rate_per_s]
    p90 = {r.policy: r.report.p90_ttft_s for r in last}
    if "threshold" in p90:
        vs = [f"vs {p} {p90['threshold'] / p90[p] - 1:+.0%}" for p in ("local", "remote-all")
              if p90.get(p)]
        lines.append(f"threshold P90 TTFT at {last[0].rate_per_s:g} req/s " + ", ".join(vs)
                     + "  (seed: -64% vs homogeneous PD, equal to naive heterogeneous)")
    return "\n".join(lines)


def _plot(runs: list[PolicyRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        last = [r for r in runs if r.rate_per_s == runs[-1].rate_per_s]
        for r in last:
            ttft = np.sort([o.ttft_s for o in r.report.outcomes])
            if ttft.size:
                a.step(ttft, np.arange(1, ttft.size + 1) / ttft.size, where="post",
                       label=r.policy)
        a.set_xscale("log")
        a.set_xlabel("TTFT [s] (fabric time)")
        a.set_ylabel("fraction of requests")
        a.set_title(f"Time to first token at {last[0].rate_per_s:g} req/s")
        a.legend()
        a.grid(True, alpha=0.3)
        first = [r for r in runs if r.rate_per_s == runs[0].rate_per_s]
        b.bar([r.policy for r in first], [r.report.throughput_rps for r in first])
        b.set_ylabel("requests / s")
        b.set_title(f"Throughput at {first[0].rate_per_s:g} req/s offered")
        b.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
