"""`fabric run FILE --cc a,b --pfc on,off`: the same traffic once per policy, one comparison.

Each variant restarts the RoCE switch processes (fresh counters and queue samples, PFC on or
off as asked), runs the file's traffic with every RoCE class's congestion control set to the
variant's policy, and collects:

- per transfer: FCT and its slowdown against the ideal (`fabric.topology.paths`: base RTT +
  bytes at the bottleneck rate), bucketed by size as the HPCC simulator's reports are;
- chunk latency p99 and goodput (`fabric.metrics.summary`);
- from the switches: max and time-weighted mean egress queue, drops (lossless ones apart),
  ECN marks, PFC pauses sent and paused time, and queue samples over time;
- from the hosts' transports: retransmitted packets, NAKs, timeouts, CNPs;
- the integrity of what arrived: every chunk's digest checked at its receiver, counted as
  intact, corrupt, missing or duplicate (`fabric.metrics.records.IntegrityCounts`).

The figures are fabric time (wall / time_scale). `render` prints the comparison table;
`write_plots` draws FCT slowdown by size and queue depth over time, one line per variant.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fabric.errors import FabricError
from fabric.metrics.classes import switch_shift_ns
from fabric.metrics.records import parse_links
from fabric.metrics.report import RunLabel, format_table, render_integrity
from fabric.metrics.summary import jsonable, summarise
from fabric.switch.core import DROP_LOSSLESS, DROPS
from fabric.topology.document import Topology, control_class
from fabric.topology.paths import path_figures
from fabric.units import format_rate, format_size, format_time

__all__ = ["Variant", "VariantResult", "parse_variants", "redraw_class_plots", "render",
           "run_variants", "variant_dir", "variant_metrics", "write_plots"]

# flow-size buckets (upper bounds, bytes) for slowdown; the last is open-ended
SIZE_BUCKETS = (256 * 1024, 1 << 20, 4 << 20, 16 << 20)


@dataclass(frozen=True)
class Variant:
    cc: str | None  # None: each class's own `cc:`; else a policy (built-in or plug-in spec)
    pfc: bool | None  # None: the file's `switches.pfc`
    # what the file's classes use, shown in the label when `cc` is None
    file_cc: str = field(default="file", compare=False)
    # the policy's own name, for labels and directory names (a plug-in's spec is a path)
    cc_name: str | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        parts = [self.cc_name or self.cc or self.file_cc]
        if self.pfc is not None:
            parts.append("pfc" if self.pfc else "no-pfc")
        return "/".join(parts)


@dataclass
class VariantResult:
    variant: Variant
    metrics: dict[str, Any]
    summary: dict[str, Any]
    switches: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # the per-class plots drawn in the variant's directory (`plots.write_class_plots`)
    class_plots: list[Path] = field(default_factory=list)


def parse_variants(topo: Topology, ccs: str | None, pfcs: str | None) -> list[Variant]:
    """The runs `--cc` x `--pfc` ask for, checked before anything is built."""
    from fabric.cc import (
        CC_NAMES,
        CongestionControlError,
        UnknownCongestionControl,
        canonical_cc,
        cc_label,
    )

    cc_list: list[str | None] = [None]
    if ccs:
        cc_list = []
        for c in ccs.split(","):
            c = c.strip()
            try:  # a built-in, an installed plug-in, or FILE.py:Class / module:Class
                cc_list.append(canonical_cc(c))
            except UnknownCongestionControl:
                raise FabricError(f"--cc: unknown congestion control '{c.lower()}' (one of: "
                                  f"{', '.join(CC_NAMES)}; or your own as FILE.py:Class or "
                                  "module:Class)") from None
            except CongestionControlError as e:
                raise FabricError(f"--cc: {e}") from None
        if topo.traffic is None or not any(f.transport == "roce" for f in topo.traffic.flows):
            raise FabricError(f"--cc sets the RoCE transport's congestion control, but "
                              f"{topo.source} has no `transport: roce` flow")
    pfc_list: list[bool | None] = [None]
    if pfcs:
        if topo.switches is None:
            raise FabricError(f"--pfc needs RoCE switches: add a `switches:` section to "
                              f"{topo.source}")
        pfc_list = []
        for p in pfcs.split(","):
            p = p.strip().lower()
            if p not in ("on", "off"):
                raise FabricError(f"--pfc: expected on or off, got '{p}'")
            pfc_list.append(p == "on")
    roce = {f.cls for f in topo.traffic.flows if f.transport == "roce"} if topo.traffic else set()
    file_cc = "+".join(sorted({cc_label(c.cc) for c in topo.classes if c.name in roce})) or \
        "kernel-tcp"
    return [Variant(c, p, file_cc, cc_label(c) if c else None) for p in pfc_list for c in cc_list]


def _with_cc(topo: Topology, cc: str | None) -> Topology:
    if cc is None:
        return topo
    classes = tuple(replace(c, cc=cc, cc_params=c.cc_params if c.cc == cc else ())
                    for c in topo.classes)
    return replace(topo, classes=classes)


def _bucket(nbytes: int) -> str:
    lo = 0
    for hi in SIZE_BUCKETS:
        if nbytes <= hi:
            return f"{format_size(lo)}-{format_size(hi)}" if lo else f"<={format_size(hi)}"
        lo = hi
    return f">{format_size(lo)}"


def variant_metrics(topo: Topology, result: Any, summary: dict[str, Any],
                    switches: dict[str, Any]) -> dict[str, Any]:
    """One row of the comparison (fabric time), from a run's records and switch statistics."""
    ts = topo.time_scale
    fcts: list[dict[str, Any]] = []
    ideal_cache: dict[tuple[str, str], Any] = {}
    for t in result.transfer_records:
        if t.status != "ok":
            continue
        pf = ideal_cache.get((t.src, t.dst))
        if pf is None:
            pf = ideal_cache[(t.src, t.dst)] = path_figures(topo, t.src, t.dst)
        fct = t.fct_ns / ts
        ideal = pf.ideal_fct_ns(t.nbytes)
        fcts.append({"flow": t.flow, "cls": t.cls, "nbytes": t.nbytes, "fct_ns": fct,
                     "ideal_ns": ideal, "slowdown": fct / ideal if ideal > 0 else None})
    fct_arr = np.array([f["fct_ns"] for f in fcts]) if fcts else np.array([])
    buckets: dict[str, list[float | None]] = {}
    for f in fcts:
        buckets.setdefault(_bucket(f["nbytes"]), []).append(f["slowdown"])
    by_size = {}
    for name in sorted(buckets, key=lambda b: min(f["nbytes"] for f in fcts
                                                  if _bucket(f["nbytes"]) == b)):
        sd = np.array(buckets[name], dtype=float)
        by_size[name] = {"flows": len(sd), "p50": float(np.percentile(sd, 50)),
                         "p99": float(np.percentile(sd, 99))}

    ports = [p for s in switches.values() for p in s.get("ports", [])]
    # queue samples on the run's clock: a switch counts fabric time from its own start
    started = getattr(result, "started_ns", 0)
    samples = {}
    pauses: dict[str, list[tuple[float, str]]] = {}
    for node, s in switches.items():
        shift = switch_shift_ns(s, started, ts)
        samples[node] = [[r[0] - shift, r[1]] for r in s.get("samples", [])]
        names = [p.get("name", str(i)) for i, p in enumerate(s.get("ports", []))]
        pauses[node] = [(r[0] - shift, names[r[1]] if r[1] < len(names) else str(r[1]))
                        for r in s.get("pause_log", [])]
    if summary.get("recovery") and switches:
        from fabric.run.events import switch_spikes

        switch_spikes(summary["recovery"], getattr(result, "events", []), started, ts,
                      samples, pauses)

    def total(key: str) -> int:
        return int(sum(p.get(key, 0) or 0 for p in ports))

    def class_total(key: str) -> int:
        return int(sum((c.get(key, 0) or 0) for p in ports
                       for c in (p.get("classes") or {}).values()))

    def class_drops(cls: str | None, verdicts: tuple[str, ...]) -> int:
        """Drops counted per port and class (`SwitchCore.stats`: {verdict: n})."""
        return int(sum(n for p in ports for name, c in (p.get("classes") or {}).items()
                       if cls is None or name == cls
                       for v, n in (c.get("drops") or {}).items() if v in verdicts))

    # every drop the switches made, whatever the cause (their own totals, by verdict)
    drops = int(sum(n for s in switches.values() for v, n in (s.get("drops") or {}).items()
                    if v in DROPS))
    transport = getattr(result, "transport", {}) or {}
    # drops in the link layer (a host NIC's queue, random loss): not the switches' doing,
    # but they cost go-back-N the same, so they show beside the switch drops
    directions = [c for link in parse_links(getattr(result, "links", None))
                  for _, c in link.directions()]
    link_drops = sum(int(c.drops_queue or 0) for c in directions)
    link_loss = sum(int(c.drops_loss or 0) for c in directions)

    def host(key: str) -> int:
        return int(sum(v.get(key, 0) for v in transport.values()))

    def per_class(name: str) -> list[dict[str, Any]]:
        return [c for p in ports for c in [(p.get("classes") or {}).get(name)] if c]

    # every class the traffic used, then those only the switches saw: the RoCE control
    # class (CNPs, ACKs, NAKs) moves no transfers, but its queue and waits are the point
    groups = dict(summary.get("classes") or {})
    for p in ports:
        for name, c in (p.get("classes") or {}).items():
            if name not in groups and c.get("tx_packets"):
                groups[name] = {}
    by_class = {}
    for name, group in groups.items():
        lat = group.get("transfer_latency", {}).get("fabric_ns") or {}
        sw = per_class(name)
        sent = sum(int(c.get("tx_packets", 0) or 0) for c in sw)
        by_class[name] = {
            "transfers": group.get("counts", {}).get("transfers", 0),
            "fct_mean_ns": lat.get("mean"), "fct_p99_ns": lat.get("p99"),
            "goodput_bps": group.get("goodput", {}).get("fabric_bps"),
            "drops": class_drops(name, DROPS),
            "ecn_marks": sum(int(c.get("ecn_marks", 0) or 0) for c in sw),
            # at the switches' egress ports: packets sent, the deepest queue, and how long
            # a packet waited in the queue (mean over packets, longest)
            "switch_packets": sent,
            "max_queue_bytes": max((int(c.get("max_queue_bytes", 0) or 0) for c in sw),
                                   default=0),
            "wait_mean_ns": (sum(int(c.get("wait_ns", 0) or 0) for c in sw) / sent
                             if sent and any("wait_ns" in c for c in sw) else None),
            "wait_max_ns": max((int(c["max_wait_ns"]) for c in sw if "max_wait_ns" in c),
                               default=None),
        }
    total_group = summary.get("total", {})
    chunk = total_group.get("chunk_latency", {}).get("fabric_ns") or {}
    control = control_class(topo)
    return {
        "transfers": len(result.transfer_records),
        "transfers_ok": len(fcts),
        "fct_mean_ns": float(fct_arr.mean()) if len(fct_arr) else None,
        "fct_p99_ns": float(np.percentile(fct_arr, 99)) if len(fct_arr) else None,
        "slowdown_p50": float(np.median([f["slowdown"] for f in fcts])) if fcts else None,
        "slowdown_p99": float(np.percentile([f["slowdown"] for f in fcts], 99)) if fcts
        else None,
        "slowdown_by_size": by_size,
        "by_class": by_class,
        "chunk_p99_ns": chunk.get("p99"),
        "goodput_bps": total_group.get("goodput", {}).get("fabric_bps"),
        "max_queue_bytes": max((p.get("max_queue_bytes", 0) for p in ports), default=0),
        "mean_queue_bytes": max((p.get("mean_queue_bytes", 0) for p in ports), default=0),
        "drops": drops,
        "drops_lossless": class_drops(None, (DROP_LOSSLESS,)),
        "link_queue_drops": link_drops,
        "link_loss": link_loss,
        # the host fell behind: its socket overflowed, or a switch's device queue did
        "host_drops": host("host_rx_drops") + total("tx_ring_drops"),
        "ecn_marks": class_total("ecn_marks"),
        "pauses": total("pauses_sent"),
        # the longest any egress was held by PFC: a switch port or a host's NIC
        "paused_ns": max([p.get("paused_ns", 0) for p in ports]
                         + [v.get("paused_ns", 0) for v in transport.values()], default=0),
        "host_paused_ns": max((v.get("paused_ns", 0) for v in transport.values()), default=0),
        "retransmitted": host("retransmitted") + host("udp_retransmitted"),
        "cnps": host("cnps"),
        # the longest an ACK, NAK or CNP waited in a switch queue (None: none crossed one)
        "control_wait_max_ns": (by_class.get(control.name) or {}).get("wait_max_ns")
        if control is not None else None,
        "naks": host("naks"),
        "timeouts": host("timeouts"),
        # counted from the receivers' chunk records by `summarise`; None when not given
        "integrity": summary.get("integrity"),
        "fcts": fcts,
        "queue_samples": samples,
    }


# ---- running ---------------------------------------------------------------------------------


def run_variants(state: Any, topo: Topology, variants: Sequence[Variant], out_dir: Path, *,
                 timeout: float, progress: Callable[[str, bool], None] | None = None,
                 say: Callable[[str], None] = print,
                 plan: Any = None, agents: Any = None) -> list[VariantResult]:  # noqa: ANN401
    """Run the traffic once per variant on the running fabric `state` (built from `plan`,
    the fabric handle's; planned again from the state's run id when not given); the nodes
    `agents` (a `node.agent.AgentBook`) lists run through their agents."""
    from fabric.checks import cc_warnings
    from fabric.net.lifecycle import read_switch_stats, start_switches, stop_switches
    from fabric.plan import plan_fabric
    from fabric.run.traffic import machines, run_traffic

    if plan is None:
        plan = plan_fabric(topo, backend=state.backend, run_id=state.run_id)
    results: list[VariantResult] = []
    try:
        for i, v in enumerate(variants):
            say(f"[{i + 1}/{len(variants)}] {v.label}")
            if plan.switches:
                start_switches(plan, state, pfc=v.pfc)  # fresh counters, PFC as asked
            vt = _with_cc(topo, v.cc)
            for w in cc_warnings(vt):
                say(f"warning: {w}")
            result = run_traffic(state, vt, timeout=timeout, progress=progress, agents=agents,
                                 plan=plan)
            time.sleep(0.3)  # switches write statistics every 0.25 s
            if plan.switches:
                stop_switches(state)  # each writes its final statistics on the way out
            switches = read_switch_stats(state, plan.switches)
            meta = {"fabric": topo.name, "variant": v.label, "cc": v.cc, "pfc": v.pfc,
                    "time_scale": topo.time_scale, "topology": topo.source,
                    "errors": result.errors, "timed_out": result.timed_out,
                    "machines": machines(result), "events": result.events,
                    "started_ns": result.started_ns,
                    "classes": [c.name for c in topo.classes]}
            summary = summarise(result.chunk_records, result.transfer_records,
                                time_scale=topo.time_scale, meta=meta, links=result.links)
            if result.recovery:
                summary["recovery"] = result.recovery
            metrics = variant_metrics(topo, result, summary, switches)
            vr = VariantResult(v, metrics, summary, switches, list(result.errors))
            if not summary["integrity"]["ok"]:
                vr.errors.append(render_integrity(summary["integrity"]))
            results.append(vr)
            _write_variant(out_dir, vr, result.chunk_records)
    finally:
        if plan.switches and not set(plan.switches) & set(state.switch_pids):
            start_switches(plan, state)  # leave the fabric forwarding as the file says
    return results


def variant_dir(out_dir: Path, variant: Variant) -> Path:
    """Where a variant's own results go: OUT/LABEL with `/` as `-` (`dcqcn-pfc`)."""
    return out_dir / variant.label.replace("/", "-")


def _write_variant(out_dir: Path, vr: VariantResult, chunks: Sequence[Any] = ()) -> None:
    """The variant's summary, switch statistics, metrics and chunk records, and its
    per-class plots when the file declares more than one class (`fabric report` on the
    comparison redraws them from these files)."""
    from fabric.metrics.output import write_chunks
    from fabric.metrics.plots import write_class_plots

    d = variant_dir(out_dir, vr.variant)
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps(vr.summary, indent=1))
    (d / "switches.json").write_text(json.dumps(vr.switches))
    m = {k: v for k, v in vr.metrics.items() if k != "queue_samples"}
    (d / "metrics.json").write_text(json.dumps(jsonable(m), indent=1))
    write_chunks(d, chunks, float(vr.summary.get("time_scale", 1.0)))
    vr.class_plots = write_class_plots(d, vr.summary, chunks, vr.switches)


def redraw_class_plots(out_dir: Path) -> list[Path]:
    """The per-class plots of every variant directory under `out_dir`, from its saved
    summary, chunk records and switch statistics (for `fabric report`)."""
    from fabric.metrics.output import load_chunks
    from fabric.metrics.plots import write_class_plots

    made: list[Path] = []
    for d in sorted(p for p in out_dir.iterdir() if (p / "summary.json").is_file()):
        summary = json.loads((d / "summary.json").read_text())
        sw_file = d / "switches.json"
        switches = json.loads(sw_file.read_text()) if sw_file.is_file() else None
        made += write_class_plots(d, summary, load_chunks(d), switches)
    return made


# ---- reporting -------------------------------------------------------------------------------


def _t(ns: float | None) -> str:
    return "-" if ns is None else format_time(round(ns))


def integrity_line(r: VariantResult) -> str:
    """`LABEL: integrity: OK (N chunks, M transfers)` or `LABEL: integrity: FAILED: ...`, from
    the chunks the variant's receivers counted."""
    counts = r.metrics.get("integrity")
    if counts is None:  # a comparison.json written before integrity was kept
        return f"{r.variant.label}: integrity: not recorded"
    return f"{r.variant.label}: {render_integrity(counts)}"


def render(results: Sequence[VariantResult], topo: RunLabel) -> str:
    """The comparison table (fabric time), then each variant's integrity line, then
    slowdown by flow size per variant."""
    header = ["variant", "FCT mean", "FCT p99", "slowdown p50", "p99", "chunk p99", "goodput",
              "queue max", "queue mean", "drops", "lossless drops", "link drops",
              "host drops", "ECN marks", "pauses", "paused", "retx", "CNPs"]
    rows = []
    for r in results:
        m = r.metrics
        rows.append([
            r.variant.label, _t(m["fct_mean_ns"]), _t(m["fct_p99_ns"]),
            "-" if m["slowdown_p50"] is None else f"{m['slowdown_p50']:.2f}",
            "-" if m["slowdown_p99"] is None else f"{m['slowdown_p99']:.2f}",
            _t(m["chunk_p99_ns"]),
            "-" if not m["goodput_bps"] else format_rate(round(m["goodput_bps"])),
            format_size(int(m["max_queue_bytes"])), format_size(int(m["mean_queue_bytes"])),
            str(m["drops"]), str(m["drops_lossless"]),
            str(m["link_queue_drops"] + m["link_loss"]), str(m.get("host_drops", 0)),
            str(m["ecn_marks"]), str(m["pauses"]),
            _t(m["paused_ns"]), str(m["retransmitted"]), str(m["cnps"]),
        ])
    out = [f"{topo.name}: fabric time (host ran {topo.time_scale:g}x slower); queue = switch "
           "egress, worst port; paused = longest PFC-paused egress (switch port or host NIC);\n"
           "drops = at switches; link drops = in the link layer (host NIC queues, loss);\n"
           "host drops = the emulation fell behind (a node's socket or a switch's device "
           "queue overflowed);\nmeasured on the fabric, but slowdown = measured FCT / the ideal "
           "FCT computed from the path's rate and delay (modelled)",
           format_table(rows, header, numeric=range(1, len(header)))]
    out += [integrity_line(r) for r in results]
    if len({c for r in results for c in r.metrics.get("by_class", {})}) > 1:
        crows = []
        for r in results:
            for name, c in r.metrics["by_class"].items():
                queue = c.get("max_queue_bytes")
                crows.append([r.variant.label, name, str(c["transfers"]), _t(c["fct_mean_ns"]),
                              _t(c["fct_p99_ns"]),
                              "-" if not c["goodput_bps"] else format_rate(
                                  round(c["goodput_bps"])),
                              str(c["drops"]), str(c["ecn_marks"]),
                              str(c.get("switch_packets", "-")),
                              "-" if queue is None else format_size(int(queue)),
                              _t(c.get("wait_mean_ns")), _t(c.get("wait_max_ns"))])
        out.append("\nby traffic class (switch pkts, queue max, wait: at the RoCE switches' "
                   "egress; wait = queued until sent, mean / longest)")
        out.append(format_table(crows, ["variant", "class", "transfers", "FCT mean", "FCT p99",
                                        "goodput", "drops", "ECN marks", "switch pkts",
                                        "queue max", "wait mean", "wait max"],
                                numeric=range(2, 12)))
    sizes = sorted({b for r in results for b in r.metrics["slowdown_by_size"]},
                   key=lambda b: _bucket_order(b))
    if sizes:
        srows = []
        for r in results:
            by = r.metrics["slowdown_by_size"]
            srows.append([r.variant.label] + [
                f"{by[b]['p50']:.2f} / {by[b]['p99']:.2f} ({by[b]['flows']})" if b in by
                else "-" for b in sizes])
        out.append("\nFCT slowdown by flow size, p50 / p99 (flows); ideal = base RTT + "
                   "size at the bottleneck rate")
        out.append(format_table(srows, ["variant", *sizes], numeric=range(1, len(sizes) + 1)))
    return "\n".join(out)


def _bucket_order(name: str) -> int:
    for i, hi in enumerate(SIZE_BUCKETS):
        if name == _bucket(hi):
            return i
    return len(SIZE_BUCKETS)


def write_plots(results: Sequence[VariantResult], topo: Topology, out_dir: Path) -> list[Path]:
    """fct_slowdown.png (slowdown vs flow size per variant) and queues.png (the worst
    egress queue over time per variant)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fabric.metrics.plots import event_marks

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        f = sorted(r.metrics["fcts"], key=lambda x: x["nbytes"])
        if f:
            ax.plot([x["nbytes"] / 2**20 for x in f], [x["slowdown"] for x in f], "o-",
                    label=r.variant.label, markersize=4, alpha=0.8)
    ax.set_xlabel("flow size (MiB)")
    ax.set_ylabel("FCT slowdown (FCT / ideal)")
    ax.set_title(f"{topo.name}: FCT slowdown by flow size")
    ax.axhline(1.0, color="grey", lw=0.6)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no completed transfers", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    p = out_dir / "fct_slowdown.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        t, q = _worst_queue_series(r.metrics["queue_samples"])
        if len(t):
            ax.plot(t / 1e3, q / 1024, label=r.variant.label, lw=1)
        # the events this variant's run applied, on its switches' clock (fabric time since
        # they started)
        starts = [sw["t0_monotonic_ns"] for sw in (r.switches or {}).values()
                  if sw and sw.get("t0_monotonic_ns")]
        for at, label in event_marks(r.summary) if starts else ():
            x = (at - min(starts)) / topo.time_scale / 1e3
            ax.axvline(x, color="0.35", linestyle=":" if label == "converge" else "--", lw=0.9)
            if label != "converge":
                ax.annotate(f"{label} ({r.variant.label})", (x, 1.0),
                            xycoords=("data", "axes fraction"), rotation=90, va="top",
                            ha="right", fontsize="x-small", color="0.3")
    ax.set_xlabel("fabric time (us)")
    ax.set_ylabel("egress queue (KiB), worst port")
    ax.set_title(f"{topo.name}: switch queue depth over time")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no RoCE switch queue samples (no `switches:` section)",
                transform=ax.transAxes, ha="center")
    fig.tight_layout()
    p = out_dir / "queues.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def _worst_queue_series(samples: dict[str, list]) -> tuple[np.ndarray, np.ndarray]:
    """The samples of the (switch, port) whose queue peaked highest: (t ns, bytes)."""
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for rows in samples.values():
        if not rows:
            continue
        t = np.array([r[0] for r in rows], dtype=float)
        q = np.array([r[1] for r in rows], dtype=float)
        if q.ndim != 2 or not q.size:
            continue
        port = int(np.argmax(q.max(axis=0)))
        peak = float(q[:, port].max())
        if best is None or peak > best[0]:
            best = (peak, t, q[:, port])
    if best is None:
        return np.array([]), np.array([])
    return best[1], best[2]


def write_comparison(results: Sequence[VariantResult], topo: Topology, out_dir: Path) -> Path:
    """comparison.json: every variant's metrics (without per-flow rows and samples)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in results:
        m = {k: v for k, v in r.metrics.items() if k not in ("fcts", "queue_samples")}
        rows.append({"variant": r.variant.label, "cc": r.variant.cc, "pfc": r.variant.pfc,
                     "errors": r.errors, **m})
    path = out_dir / "comparison.json"
    path.write_text(json.dumps(jsonable({"fabric": topo.name, "time_scale": topo.time_scale,
                                         "host": os.uname().nodename, "variants": rows}),
                               indent=1))
    return path


def read_comparison(path: Path) -> tuple[list[VariantResult], RunLabel]:
    """What write_comparison wrote, as results render() takes (no per-flow rows, samples,
    summaries or switch statistics: those stay in each variant's own directory)."""
    from fabric.metrics.report import SavedRun

    data = json.loads(path.read_text())
    results = []
    for row in data["variants"]:
        label = row["variant"]
        name = label.split("/")[0]
        variant = Variant(row["cc"], row["pfc"], file_cc=name, cc_name=name)
        metrics = {k: v for k, v in row.items() if k not in ("variant", "cc", "pfc", "errors")}
        results.append(VariantResult(variant, metrics, {}, errors=list(row.get("errors", []))))
    return results, SavedRun(data["fabric"], data["time_scale"])
