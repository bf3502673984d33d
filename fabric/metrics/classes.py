"""Per-class series of a run, for the per-class plots (`fabric.metrics.plots`).

Three series, each on the run's clock: fabric ns since the run's shared start (summary.json's
`meta.started_ns`, CLOCK_MONOTONIC), so the plots line up with each other and with the events
the run applied.

- goodput per class over time, from the receivers' chunk records (intact bytes, each
  chunk's spread over its arrival, from its first byte to its last: `delivered_bytes`);
- queue depth per class over time at the busiest RoCE switch egress ports, from the queue
  samples the switches take (`SwitchCore.class_samples`, exported as `class_samples`), or,
  on plain links, at the link directions whose class queues peaked highest, from the queue
  samples the userspace link engine takes (`LinkStats.class_samples`: the engine's
  CLOCK_MONOTONIC, the runner's too, so `started_ns` puts them on the run's clock);
- the PFC pauses the switches sent, as intervals per (switch, ingress port, priority), from
  their `pause_log` and `resume_log`.

A switch counts fabric time from its own start (`t0_monotonic_ns`); `switch_shift_ns` is what
moves its times onto the run's clock, as `fabric.run.roce.variant_metrics` does for its queue
samples. Pure: dicts and records in, numpy arrays out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .records import ChunkRecord, parse_links

__all__ = ["MAX_PAUSE_ROWS", "MAX_PORTS", "LinkQueues", "PauseRow", "PortQueues",
           "class_goodput_series", "class_queue_series", "declared_classes", "delivered_bytes",
           "link_class_queue_series", "no_link_class_queues", "pause_rows", "switch_shift_ns"]

MAX_PORTS = 4  # egress ports shown in the per-class queue plot: the deepest
MAX_PAUSE_ROWS = 16  # (switch, ingress port, priority) rows in the pause timeline


def declared_classes(summary: Mapping[str, Any] | None,
                     chunks: Iterable[ChunkRecord] = ()) -> list[str]:
    """The classes the run's file declares (summary.json's `meta.classes`); for a run saved
    before that was kept, the classes its chunks carried."""
    meta = (summary or {}).get("meta") or {}
    if meta.get("classes") is not None:
        return list(meta["classes"])
    return sorted({c.cls for c in chunks})


def switch_shift_ns(stats: Mapping[str, Any], started_ns: int, time_scale: float) -> float:
    """Fabric ns to subtract from a switch's times (fabric ns since the switch started) to
    put them on the run's clock (fabric ns since `started_ns`); 0 when either is unknown."""
    t0 = stats.get("t0_monotonic_ns")
    if not started_ns or not t0:
        return 0.0
    return (started_ns - t0) / time_scale


@dataclass(frozen=True)
class PortQueues:
    """One switch egress port's queue per class over time (fabric ns since the run's start;
    bytes). `peak_bytes`: the port's deepest queue over the run (the switch's exact counter,
    not the sampled one), what ranks the ports."""

    switch: str
    port: str
    peer: str
    peak_bytes: int
    t_ns: np.ndarray
    classes: dict[str, np.ndarray]


def class_queue_series(switches: Mapping[str, Mapping[str, Any]], started_ns: int,
                       time_scale: float, *, top: int = MAX_PORTS
                       ) -> tuple[list[PortQueues], int]:
    """The `top` egress ports whose queue peaked highest, over all switches, with each
    class's queue bytes at every sample; and how many other ports ever queued a byte
    (among them those whose queue no sample caught).

    Reads each switch's `class_samples` ({"columns": [[port, class], ...], "rows": [[t,
    [bytes per column]], ...]}): only (port, class) queues that ever held a byte are there.
    """
    found: list[PortQueues] = []
    for name, stats in switches.items():
        cs = (stats or {}).get("class_samples") or {}
        cols, rows = cs.get("columns") or [], cs.get("rows") or []
        if not cols or not rows:
            continue
        shift = switch_shift_ns(stats, started_ns, time_scale)
        t = np.array([r[0] for r in rows], dtype=np.float64) - shift
        q = np.array([r[1] for r in rows], dtype=np.float64).reshape(len(rows), len(cols))
        ports = {p.get("name"): p for p in stats.get("ports") or []}
        by_port: dict[str, dict[str, np.ndarray]] = {}
        for j, (port, cls) in enumerate(cols):
            by_port.setdefault(port, {})[cls] = q[:, j]
        for port, classes in by_port.items():
            info = ports.get(port) or {}
            peak = int(info.get("max_queue_bytes")
                       or max(float(v.max()) for v in classes.values()))
            found.append(PortQueues(name, port, str(info.get("peer", "")), peak, t, classes))
    # a port whose queue came and went between samples shows nothing: count it as left out
    shown = [p for p in found if any(v.any() for v in p.classes.values())]
    shown.sort(key=lambda p: (-p.peak_bytes, p.switch, p.port))
    return shown[:top], len(found) - len(shown[:top])


@dataclass(frozen=True)
class LinkQueues:
    """One link direction's class queues over time (fabric ns since the run's start; bytes
    waiting in each class queue, the packet on the wire not counted). `peak_bytes`: the
    deepest any of its class queues got (the engine's exact per-class high-water, not the
    sampled one), what ranks the directions."""

    link: str
    direction: str  # "forward" (a -> b) or "reverse"
    peak_bytes: int
    t_ns: np.ndarray
    classes: dict[str, np.ndarray]

    @property
    def label(self) -> str:
        a, _, b = self.link.partition("--")
        if not b:
            return f"{self.link} {self.direction}"
        return f"{a} -> {b}" if self.direction == "forward" else f"{b} -> {a}"


def link_class_queue_series(links: Any, started_ns: int, time_scale: float, *,  # noqa: ANN401
                            top: int = MAX_PORTS) -> tuple[list[LinkQueues], int, int]:
    """The `top` link directions whose class queues peaked highest, with each class's queue
    bytes at every sample the link engine took; how many other directions queued by class
    (shallower, or whose queue no sample caught); and how many directions queued by class
    in all. `links`: links.json as the engine writes it (or its run delta), any form
    `records.parse_links` takes. Times before `started_ns` (the engine runs before the run
    starts) come out negative; the plot shows from 0."""
    found: list[LinkQueues] = []
    for rec in parse_links(links):
        for name, c in rec.directions():
            if not c.class_columns or not c.class_samples:
                continue
            t = np.array([r[0] for r in c.class_samples], dtype=np.float64)
            t = (t - (started_ns or t[0])) / time_scale
            q = np.array([r[1] for r in c.class_samples], dtype=np.float64)
            classes = {cls: q[:, j] for j, cls in enumerate(c.class_columns)}
            exact = [int(k.get("queue_bytes_max", 0) or 0) for k in c.classes]
            peak = max(exact, default=0) or int(q.max(initial=0))
            found.append(LinkQueues(rec.id, name, peak, t, classes))
    shown = [d for d in found if any(v.any() for v in d.classes.values())]
    shown.sort(key=lambda d: (-d.peak_bytes, d.link, d.direction))
    return shown[:top], len(found) - len(shown[:top]), len(found)


def no_link_class_queues(backend: str, classed: int) -> str:
    """Why a run's class_queues.png has no link to show (`classed`: the directions that
    queued by class, from `link_class_queue_series`)."""
    if backend == "netem":
        return ("the netem backend takes no queue samples: its class queues are the kernel's "
                "htb leaves (their drops are in links.json); run with --links userspace to "
                "see them")
    if not classed:
        return ("no link queued by class in the engine: it does so only where it shapes the "
                "rate itself; elsewhere the kernel's tbf holds one queue")
    return "no link class queue held a byte when a sample was taken"


def delivered_bytes(chunks: Iterable[ChunkRecord], at_ns: np.ndarray) -> np.ndarray:
    """Bytes of intact chunks delivered by each time in `at_ns` (sorted or not), each chunk's
    bytes spread evenly from its first byte's arrival to its last's (a chunk that arrived
    in one instant counts whole at it). Duplicates (same flow, request, chunk) count once.

    Exact for the piecewise-linear cumulative it defines: O((chunks + times) log chunks)."""
    seen: set[tuple[str, int, int]] = set()
    first, last, size = [], [], []
    for c in chunks:
        if not c.ok or c.key in seen:
            continue
        seen.add(c.key)
        first.append(c.t_first_ns)
        last.append(max(c.t_last_ns, c.t_first_ns))
        size.append(c.nbytes)
    at = np.asarray(at_ns, dtype=np.float64)
    if not size:
        return np.zeros(at.shape)
    f = np.asarray(first, dtype=np.float64)
    lst = np.asarray(last, dtype=np.float64)
    n = np.asarray(size, dtype=np.float64)
    dur = lst - f
    out = np.zeros(at.shape)
    inst = dur <= 0  # steps: whole at their time
    if inst.any():
        order = np.argsort(f[inst])
        times, cum = f[inst][order], np.cumsum(n[inst][order])
        k = np.searchsorted(times, at, side="right")
        out += np.where(k > 0, cum[np.maximum(k - 1, 0)], 0.0)
    ramp = ~inst
    if ramp.any():
        rate = n[ramp] / dur[ramp]
        x = np.concatenate((f[ramp], lst[ramp]))
        d = np.concatenate((rate, -rate))
        order = np.argsort(x, kind="stable")
        x, d = x[order], d[order]
        slope = np.cumsum(d)  # bytes/ns after each breakpoint
        # the cumulative at each breakpoint: the slope before it times the gap
        at_bp = np.concatenate(([0.0], np.cumsum(slope[:-1] * np.diff(x))))
        k = np.searchsorted(x, at, side="right") - 1
        kk = np.maximum(k, 0)
        out += np.where(k >= 0, at_bp[kk] + slope[kk] * (at - x[kk]), 0.0)
    return out


def class_goodput_series(chunks: Iterable[ChunkRecord], time_scale: float = 1.0, *,
                         t0_ns: int | None = None, bins: int | None = None
                         ) -> tuple[float, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Goodput per class in bins of one width: `(bin_ns, {class: (t, bps)})` in fabric
    terms (t: each bin's start, fabric ns since `t0_ns`, default the first send; bps: fabric
    bit/s), from `delivered_bytes` (each chunk spread over its arrival, so a bin narrower
    than a chunk does not show the whole chunk as a spike).

    All classes share the bins, so their panels line up: `bins` over the run, by default
    100, or fewer so that a bin is at least the median chunk's arrival time (at least 10).
    ({} when there are no chunks.)
    """
    cs = list(chunks)
    if not cs:
        return 0.0, {}
    groups: dict[str, list[ChunkRecord]] = {}
    for c in cs:
        groups.setdefault(c.cls, []).append(c)
    t0 = min(c.t_send_ns for c in cs) if t0_ns is None else t0_ns
    span = max(1, max(c.t_last_ns for c in cs) - t0)
    if bins is None:
        arrival = float(np.median([max(0, c.t_last_ns - c.t_first_ns) for c in cs]))
        bins = int(min(100, max(10, span // max(1.0, arrival))))
    bin_ns = max(1, -(-span // max(1, bins)))
    nbins = -(-span // bin_ns)
    edges = t0 + np.arange(nbins + 1, dtype=np.float64) * bin_ns
    out = {}
    for cls in sorted(groups):
        per_bin = np.diff(delivered_bytes(groups[cls], edges))
        bps = per_bin * 8 * 1e9 / bin_ns
        out[cls] = ((edges[:-1] - t0) / time_scale, bps * time_scale)
    return bin_ns / time_scale, out


@dataclass(frozen=True)
class PauseRow:
    """The pauses one switch sent its upstream on one ingress port for one priority, as
    (start, end) intervals in fabric ns since the run's start. `open_at_end`: the last was
    still in force when the switch wrote its statistics (its end is that moment)."""

    switch: str
    port: str
    peer: str
    priority: int
    classes: tuple[str, ...]
    intervals: tuple[tuple[float, float], ...]
    open_at_end: bool

    @property
    def paused_ns(self) -> float:
        return sum(b - a for a, b in self.intervals)


def pause_rows(switches: Mapping[str, Mapping[str, Any]], started_ns: int, time_scale: float,
               *, top: int = MAX_PAUSE_ROWS) -> tuple[list[PauseRow], int, int]:
    """The pause intervals per (switch, ingress port, priority), longest paused first, at
    most `top`; how many rows were left out; and how many pauses were sent in all (the
    logs keep only the first `MAX_PAUSE_LOG` of a switch).

    Each resume in `resume_log` ends the open pause of its (port, priority) (the core logs
    only resumes of logged pauses; one without an open pause is ignored). A pause never
    resumed lasts until the switch's statistics were written (`monotonic_ns`), else until
    its last queue sample.
    """
    rows: list[PauseRow] = []
    sent = 0
    for name, stats in switches.items():
        stats = stats or {}
        ports = stats.get("ports") or []
        sent += sum(int(p.get("pauses_sent", 0) or 0) for p in ports)
        log = stats.get("pause_log") or []
        if not log:
            continue
        shift = switch_shift_ns(stats, started_ns, time_scale)
        end = _stats_time(stats, time_scale) - shift
        prio_classes: dict[int, list[str]] = {}
        for cls, prio in (stats.get("class_priorities") or {}).items():
            prio_classes.setdefault(int(prio), []).append(cls)
        events = sorted([(float(r[0]), 0, int(r[1]), int(r[2])) for r in log if len(r) >= 3]
                        + [(float(r[0]), 1, int(r[1]), int(r[2]))
                           for r in stats.get("resume_log") or [] if len(r) >= 3])
        started: dict[tuple[int, int], float] = {}
        spans: dict[tuple[int, int], list[tuple[float, float]]] = {}
        for t, resume, port, prio in events:
            key = (port, prio)
            if not resume:
                if key not in started:
                    started[key] = t - shift
                    spans.setdefault(key, [])
            elif key in started:
                spans[key].append((started.pop(key), t - shift))
        for key in started:
            spans[key].append((started[key], max(end, started[key])))
        for (port, prio), iv in spans.items():
            info = ports[port] if port < len(ports) else {}
            rows.append(PauseRow(name, str(info.get("name", port)), str(info.get("peer", "")),
                                 prio, tuple(sorted(prio_classes.get(prio, ()))), tuple(iv),
                                 (port, prio) in started))
    rows.sort(key=lambda r: (-r.paused_ns, r.switch, r.port, r.priority))
    return rows[:top], max(0, len(rows) - top), sent


def _stats_time(stats: Mapping[str, Any], time_scale: float) -> float:
    """When the switch wrote these statistics, in its own fabric ns."""
    if stats.get("monotonic_ns") and stats.get("t0_monotonic_ns"):
        return (stats["monotonic_ns"] - stats["t0_monotonic_ns"]) / time_scale
    rows: Sequence[Any] = stats.get("samples") or []
    return float(rows[-1][0]) if rows else 0.0
