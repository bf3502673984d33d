"""Human-readable tables from a run summary (the dict `summarise` returns or `load_run` reads).

Tables show fabric time (wall / time_scale) and say so in their first line whenever the run was
scaled; the wall-clock figures stay in summary.json. Plain aligned text: no table libraries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import FabricError
from ..units import format_rate, format_size, format_time
from .records import IntegrityCounts

__all__ = ["compare", "engine_line", "format_table", "render_integrity", "render_links",
           "render_table"]


class RunLabel(Protocol):
    """What a results table needs of its fabric: a Topology, or a run read back from disk."""

    @property
    def name(self) -> str: ...

    @property
    def time_scale(self) -> float: ...


@dataclass(frozen=True)
class SavedRun:
    """The RunLabel of a run read back from its results directory."""

    name: str
    time_scale: float


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str], *,
                 numeric: bool | Iterable[int] = True) -> str:
    """Aligned columns, two spaces apart: the first column left-aligned and, with `numeric`,
    the rest right-aligned (figures line up on their units); else all left-aligned.
    `numeric` may also name the right-aligned columns (`range(3, 7)`)."""
    cols = len(header)
    table = [list(header)] + [list(r) + [""] * (cols - len(r)) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(cols)]
    right = set(range(1, cols)) if numeric is True else set() if numeric is False else set(
        numeric)
    lines = []
    for r in table:
        cells = [r[0].ljust(widths[0])] + [
            r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i])
            for i in range(1, cols)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _t(ns: float | None) -> str:
    return "-" if ns is None else format_time(int(round(ns)))


def _r(bps: float | None) -> str:
    return "-" if bps is None else format_rate(int(round(bps)))


def _scale(summary: Mapping[str, Any]) -> float:
    ts = summary.get("time_scale", (summary.get("meta") or {}).get("time_scale", 1.0))
    try:
        return float(ts)
    except (TypeError, ValueError):
        return 1.0


def _scale_text(ts: float) -> str:
    return f"{ts:g}"


def time_header(summary: Mapping[str, Any]) -> str:
    """Which clock the table's figures are in."""
    ts = _scale(summary)
    measured = "; every figure measured on the fabric (the nodes' clocks, the links' counters)"
    if ts != 1.0:
        return f"fabric time (time_scale {_scale_text(ts)}); wall-clock in summary.json{measured}"
    return f"wall-clock time (time_scale 1: fabric time = wall-clock){measured}"


def _pct(group: Mapping[str, Any], metric: str, key: str) -> float | None:
    return ((group.get(metric) or {}).get("fabric_ns") or {}).get(key)


def _row(label: str, g: Mapping[str, Any]) -> list[str]:
    counts = g.get("counts") or {}
    jit = ((g.get("jitter") or {}).get("rfc3550") or {}).get("fabric_ns")
    return [
        label,
        str(counts.get("transfers", 0)),
        format_size(counts.get("bytes_delivered", 0)),
        _t(_pct(g, "chunk_latency", "p50")),
        _t(_pct(g, "chunk_latency", "p99")),
        _t(_pct(g, "chunk_latency", "p99.9")),
        _t(_pct(g, "chunk_latency", "max")),
        _t(_pct(g, "transfer_latency", "p50")),
        _t(_pct(g, "transfer_latency", "p99")),
        _t(jit),
        _r((g.get("goodput") or {}).get("fabric_bps")),
    ]


def render_integrity(integrity: Mapping[str, Any]) -> str:
    """`integrity: OK (N chunks, M transfers)` or `integrity: FAILED: 2 corrupt, 1 missing`."""
    ic = IntegrityCounts.from_dict(integrity or {})
    if ic.ok:
        return f"integrity: OK ({ic.chunks_ok} chunks, {ic.transfers_ok} transfers)"
    parts = [f"{n} {what}" for n, what in (
        (ic.chunks_corrupt, "corrupt"), (ic.chunks_missing, "missing"),
        (ic.chunks_duplicate, "duplicate"),
        (ic.transfers_failed, "transfer failed" if ic.transfers_failed == 1
         else "transfers failed")) if n]
    return "integrity: FAILED: " + ", ".join(parts)


def render_table(summary: Mapping[str, Any]) -> str:
    """The run's table: one row per traffic class, then per flow kind, then the integrity line."""
    header = ["", "transfers", "bytes", "chunk p50", "p99", "p99.9", "max",
              "xfer p50", "xfer p99", "jitter", "goodput"]
    classes = summary.get("classes") or {}
    kinds = summary.get("kinds") or {}
    lines = [time_header(summary)]
    rows = [_row(f"class {name}", g) for name, g in classes.items()]
    rows += [_row(f"kind {name}", g) for name, g in kinds.items()]
    if rows:
        lines.append(format_table(rows, header))
    else:
        lines.append("no transfers recorded")
    lines.append(render_integrity(summary.get("integrity") or {}))
    return "\n".join(lines)


def render_links(summary: Mapping[str, Any]) -> str:
    """Per link and direction: packets, bytes, drops (loss / queue), ECN marks, queue max."""
    rows = []
    for link in summary.get("links") or []:
        for direction, arrow in (("forward", "->"), ("reverse", "<-")):
            c = link.get(direction)
            if not isinstance(c, Mapping):
                continue

            def n(key: str, c: Mapping[str, Any] = c) -> str:
                v = c.get(key)
                return "-" if v is None else str(v)

            qmax = c.get("queue_high_water")
            # "-" where the kernel's tbf, not the engine, holds the queue: a 0 would mislead
            shown = "-" if c.get("queue_observed") == 0 else format_size(qmax)
            rows.append([str(link.get("id", "?")), arrow, n("packets_out"),
                         format_size(c.get("bytes_out")), n("drops_loss"), n("drops_queue"),
                         n("ecn_marks"), shown])
            # a direction that queues by class: a row per class that used it
            for k in c.get("classes") or ():
                if not isinstance(k, Mapping) or not k.get("packets_in"):
                    continue
                rows.append([f"  class {k.get('name')}", "", str(k.get("packets_out", "-")),
                             format_size(k.get("bytes_out")), "", str(k.get("drops_queue", "-")),
                             str(k.get("ecn_marks", "-")), format_size(k.get("queue_bytes_max"))])
    late = engine_line(summary)
    if not rows:
        return "no link statistics" + (f"\n{late}" if late else "")
    table = format_table(rows, ["link", "", "packets", "bytes", "lost", "q-drops", "ecn",
                                "queue max"])
    return f"{table}\n{late}" if late else table


def engine_line(summary: Mapping[str, Any]) -> str:
    """How late the userspace link engine wrote what it held during the run: a delay or a
    rate on the links is what the file says plus this, in host time (empty without it)."""
    late = summary.get("link_engine")
    if not isinstance(late, Mapping) or not late.get("releases"):
        return ""
    return (f"link engine: {late['releases']:,} releases during the run, written late by "
            f"p50 <{_us(late['p50_under_us'])}, p99 <{_us(late['p99_under_us'])}, max "
            f"<{_us(late['max_under_us'])} (host time: a packet held for a delay or a rate "
            f"waits that much longer)")


def _us(us: float) -> str:
    return f"{us / 1e3:g} ms" if us >= 1000 else f"{us:g} us"


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0:
        return ""
    return f" (x{value / base:.2f})"


def compare(summaries: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Side by side per class: chunk p50/p99, transfer p99, goodput, each with its ratio to the
    first run's figure (x1.50 = 50% higher). Figures in fabric time of each run."""
    if len(summaries) < 2:
        raise FabricError(f"compare needs at least two runs, got {len(summaries)}")
    base_label = summaries[0][0]
    scales = {_scale(s) for _, s in summaries}
    if len(scales) == 1:
        head = time_header(summaries[0][1])
    else:
        listed = ", ".join(f"{label}: {_scale_text(_scale(s))}" for label, s in summaries)
        head = f"fabric time of each run (time_scale {listed}); wall-clock in summary.json"
    classes: list[str] = []
    for _, s in summaries:
        for name in s.get("classes") or {}:
            if name not in classes:
                classes.append(name)
    rows = []
    for name in classes:
        base = (summaries[0][1].get("classes") or {}).get(name) or {}
        for i, (label, s) in enumerate(summaries):
            g = (s.get("classes") or {}).get(name)
            first = name if i == 0 else ""
            if g is None:
                rows.append([first, label, "-", "-", "-", "-"])
                continue
            cells = [first, label]
            for metric, key in (("chunk_latency", "p50"), ("chunk_latency", "p99"),
                                ("transfer_latency", "p99")):
                v = _pct(g, metric, key)
                cells.append(_t(v) + ("" if i == 0 else _ratio(v, _pct(base, metric, key))))
            gp = (g.get("goodput") or {}).get("fabric_bps")
            gp0 = (base.get("goodput") or {}).get("fabric_bps")
            cells.append(_r(gp) + ("" if i == 0 else _ratio(gp, gp0)))
            rows.append(cells)
    lines = [head, f"ratios (xN) against {base_label}"]
    if rows:
        lines.append(format_table(rows, ["class", "run", "chunk p50", "chunk p99", "xfer p99",
                                         "goodput"]))
    else:
        lines.append("no transfers recorded in any run")
    for label, s in summaries:
        lines.append(f"{label}: {render_integrity(s.get('integrity') or {})}")
    return "\n".join(lines)
