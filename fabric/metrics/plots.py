"""PNG plots of a run: chunk latency CDF, goodput over time, link utilisation and queues.

matplotlib with the Agg backend (no display needed), chosen before pyplot is imported. Every
function closes its figure, returns the path it wrote, or None when there is nothing to plot.
Axes are in fabric time (wall / time_scale) and say so; with time_scale 1 they say wall-clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .records import ChunkRecord, parse_links  # noqa: E402
from .stats import goodput_series  # noqa: E402

__all__ = ["goodput_over_time", "latency_cdf", "links_over_time"]

_TIME_UNITS = ((1e9, "s"), (1e6, "ms"), (1e3, "us"), (1.0, "ns"))
_RATE_UNITS = ((1e12, "Tbit/s"), (1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s"),
               (1.0, "bit/s"))
_SIZE_UNITS = ((2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB"), (1.0, "B"))


def _unit(values: Sequence[float] | np.ndarray, units: Sequence[tuple[float, str]]
          ) -> tuple[float, str]:
    """The largest unit in which the biggest value is >= 1."""
    top = float(np.max(np.abs(values))) if len(values) else 0.0
    for factor, name in units:
        if top >= factor:
            return factor, name
    return units[-1]


def _clock(time_scale: float) -> str:
    return "wall-clock" if time_scale == 1 else f"fabric time, time_scale {time_scale:g}"


def _save(fig: Any, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    return p


def _by_class(chunks: Iterable[ChunkRecord]) -> dict[str, list[ChunkRecord]]:
    out: dict[str, list[ChunkRecord]] = {}
    for c in chunks:
        out.setdefault(c.cls, []).append(c)
    return out


def latency_cdf(path: str | Path, chunks: Iterable[ChunkRecord],
                time_scale: float = 1.0) -> Path | None:
    """CDF of intact chunks' one-way latency (t_last - t_send), one line per class, log x.

    Non-positive latencies cannot sit on a log axis and are left out. None when no chunk has a
    positive latency.
    """
    groups = {cls: np.sort(np.array([c.latency_ns for c in cs if c.ok], dtype=np.float64)
                           / time_scale)
              for cls, cs in _by_class(chunks).items()}
    groups = {k: v[v > 0] for k, v in groups.items()}
    groups = {k: v for k, v in groups.items() if v.size}
    if not groups:
        return None
    factor, unit = _unit(np.concatenate(list(groups.values())), _TIME_UNITS)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        lo, hi = np.inf, 0.0
        for cls, v in groups.items():
            x = v / factor
            y = np.arange(1, x.size + 1) / x.size
            line = ax.step(np.concatenate(([x[0]], x)), np.concatenate(([0.0], y)),
                           where="post", label=f"{cls} (n={x.size})")[0]
            if x.size == 1:
                ax.plot(x, y, "o", color=line.get_color())
            lo, hi = min(lo, float(x[0])), max(hi, float(x[-1]))
        ax.set_xscale("log")
        ax.set_xlim(lo / 1.5, hi * 1.5)  # also keeps a single value off a zero-width axis
        if hi / lo < 20:  # under about a decade matplotlib labels ticks as 2x10^0; say 2
            plain = FuncFormatter(lambda v, _pos: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"chunk one-way latency [{unit}] ({_clock(time_scale)})")
        ax.set_ylabel("fraction of chunks")
        ax.set_title(f"Chunk latency CDF ({_clock(time_scale)})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


Marks = Sequence[tuple[int, str]]  # (CLOCK_MONOTONIC ns, label): events during a run


def event_marks(summary: Any) -> list[tuple[int, str]]:
    """The events a run applied (summary.json's `meta.events`), as plot marks."""
    marks = []
    for e in (summary or {}).get("meta", {}).get("events") or []:
        label = "converge" if e.get("action") == "converge" else e.get("label", "")
        marks.append((int(e["applied_ns"]), label))
    return marks


def _mark(ax: Any, marks: Marks, t0_ns: float, time_scale: float, tf: float) -> None:
    """A dashed line per event at its time on this plot's axis (converges dotted), labelled
    at the top."""
    for t, label in marks:
        x = (t - t0_ns) / time_scale / tf
        style = ":" if label == "converge" else "--"
        ax.axvline(x, color="0.35", linestyle=style, linewidth=0.9)
        if label != "converge":
            ax.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                        va="top", ha="right", fontsize="x-small", color="0.3")


def goodput_over_time(path: str | Path, chunks: Iterable[ChunkRecord],
                      time_scale: float = 1.0, *, bins: int | None = None,
                      marks: Marks = ()) -> Path | None:
    """Goodput per class over time (intact bytes by arrival, `bins` bins over the run; by
    default about five chunks a bin, between 10 and 100 bins, so sparse runs are not spikes).

    None when there are no chunks.
    """
    cs = list(chunks)
    if not cs:
        return None
    if bins is None:
        bins = min(100, max(10, len(cs) // 5))
    t0 = min(c.t_send_ns for c in cs)
    span = max(c.t_last_ns for c in cs) - t0
    bin_ns = max(1, -(-span // max(1, bins)))
    series = {cls: goodput_series(g, bin_ns, t0_ns=t0) for cls, g in _by_class(cs).items()}
    all_t = np.concatenate([t for t, _ in series.values()]) / time_scale
    all_r = np.concatenate([r for _, r in series.values()]) * time_scale
    tf, tu = _unit(all_t, _TIME_UNITS)
    rf, ru = _unit(all_r, _RATE_UNITS)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for cls, (t, r) in series.items():
            # close the last bin: a post-step otherwise ends where that bin starts
            x = np.append(t, t[-1] + bin_ns) / time_scale / tf
            y = np.append(r, r[-1]) * time_scale / rf
            ax.step(x, y, where="post", label=cls)
        _mark(ax, marks, t0, time_scale, tf)
        ax.set_xlabel(f"time since first send [{tu}] ({_clock(time_scale)})")
        ax.set_ylabel(f"goodput [{ru}] ({'fabric' if time_scale != 1 else 'wall-clock'})")
        ax.set_title(f"Goodput over time, bins of {bin_ns / time_scale / tf:.3g} {tu} "
                     f"({_clock(time_scale)})")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


MAX_CURVES = 6  # queue-depth curves in the links plot: the deepest queues
MAX_BARS = 12  # bars in the bytes-per-link chart: the busiest link directions


def links_over_time(path: str | Path, links: Any, time_scale: float = 1.0, *,
                    marks: Marks = ()) -> Path | None:
    """Per link direction: utilisation and queue depth.

    Top: throughput over time when samples carry cumulative bytes (a third sample element),
    else a bar chart of bytes sent per link direction. Bottom: queue depth over time from the
    samples (queue bytes are the same in fabric and wall terms: scaling keeps the BDP in bytes).
    None when `links` is empty.
    """
    records = parse_links(links)
    dirs = [(f"{link.id} {'->' if name == 'forward' else '<-'}", c)
            for link in records for name, c in link.directions()]
    if not dirs:
        return None
    t0 = min((c.samples[0].t_ns for _, c in dirs if c.samples), default=0)
    # a fabric has dozens of link directions: show the ones that matter, say how many are left
    def observed(c: Any) -> bool:
        return c.extra.get("queue_observed", 1) != 0

    sampled = [(label, c.samples) for label, c in dirs if c.samples and observed(c)]
    sampled.sort(key=lambda ls: -max(p.queue_bytes for p in ls[1]))
    hidden_queues = max(0, len(sampled) - MAX_CURVES)
    sampled = sampled[:MAX_CURVES]
    dirs = sorted(dirs, key=lambda lc: -(lc[1].bytes_out or 0))
    hidden_bars = max(0, len(dirs) - MAX_BARS)
    rated = [(label, c.samples) for label, c in dirs
             if len(c.samples) > 1 and all(x.bytes_out is not None for x in c.samples)]
    hidden_rated = max(0, len(rated) - MAX_CURVES)
    rated = rated[:MAX_CURVES]
    dirs = dirs[:MAX_BARS]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8))
    try:
        if rated:
            curves = []
            for label, s in rated:
                t = np.array([x.t_ns for x in s], dtype=np.float64)
                b = np.array([x.bytes_out for x in s], dtype=np.float64)
                dt = np.diff(t)
                rate = np.where(dt > 0, np.diff(b) * 8e9 / np.where(dt > 0, dt, 1), 0.0)
                curves.append((label, (t[1:] - t0) / time_scale, rate * time_scale))
            tf, tu = _unit(np.concatenate([c[1] for c in curves]), _TIME_UNITS)
            rf, ru = _unit(np.concatenate([c[2] for c in curves]), _RATE_UNITS)
            for label, x, y in curves:
                top.step(x / tf, y / rf, where="post", label=label)
            _mark(top, marks, t0, time_scale, tf)
            top.set_xlabel(f"time [{tu}] ({_clock(time_scale)})")
            top.set_ylabel(f"throughput [{ru}]")
            more = f"; {hidden_rated} quieter not shown" if hidden_rated else ""
            top.set_title(f"Link throughput (busiest {len(rated)}{more})")
            top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        else:
            labels = [label for label, _ in dirs]
            sent = np.array([float(c.bytes_out or 0) for _, c in dirs])
            sf, su = _unit(sent, _SIZE_UNITS)
            top.barh(range(len(labels)), sent / sf)
            top.set_yticks(range(len(labels)), labels, fontsize="small")
            top.invert_yaxis()
            top.set_xlabel(f"bytes sent [{su}]")
            more = f"; {hidden_bars} quieter not shown" if hidden_bars else ""
            top.set_title(f"Bytes sent per link direction (whole run{more})")
        top.grid(True, alpha=0.3)

        if sampled:
            q_all = np.concatenate([[x.queue_bytes for x in s] for _, s in sampled])
            qf, qu = _unit(q_all, _SIZE_UNITS)
            t_all = np.concatenate([[(x.t_ns - t0) / time_scale for x in s] for _, s in sampled])
            tf, tu = _unit(t_all, _TIME_UNITS)
            for label, s in sampled:
                x = np.array([(p.t_ns - t0) / time_scale for p in s]) / tf
                y = np.array([p.queue_bytes for p in s], dtype=np.float64) / qf
                if x.size == 1:
                    bottom.plot(x, y, "o", label=label)
                else:
                    bottom.step(x, y, where="post", label=label)
            _mark(bottom, marks, t0, time_scale, tf)
            bottom.set_xlabel(f"time [{tu}] ({_clock(time_scale)})")
            bottom.set_ylabel(f"queue depth [{qu}]")
            bottom.set_ylim(bottom=0)
            bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        else:
            bottom.text(0.5, 0.5, "no queue observed: the kernel's tbf holds these queues (an "
                        "`ecn` threshold makes the engine own them)", ha="center", va="center",
                        transform=bottom.transAxes)
            bottom.set_xticks([])
            bottom.set_yticks([])
        more = f"; {hidden_queues} shallower not shown" if hidden_queues else ""
        bottom.set_title(f"Queue depth over time (deepest {len(sampled)}{more})")
        bottom.grid(True, alpha=0.3)
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)
