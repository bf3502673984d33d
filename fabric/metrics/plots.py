"""PNG plots of a run: chunk latency CDF, goodput over time, link utilisation and queues.

matplotlib with the Agg backend (no display needed), chosen before pyplot is imported. Every
function closes its figure, returns the path it wrote, or None when there is nothing to plot.
Axes are in fabric time (wall / time_scale) and say so; with time_scale 1 they say wall-clock.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .classes import (  # noqa: E402
    class_goodput_series,
    class_queue_series,
    declared_classes,
    link_class_queue_series,
    no_link_class_queues,
    pause_rows,
)
from .records import ChunkRecord, parse_links  # noqa: E402
from .stats import goodput_series  # noqa: E402

__all__ = ["CLASS_PLOTS", "class_goodput_over_time", "class_queues_over_time", "goodput_over_time",
           "latency_cdf", "link_class_queues_over_time", "links_over_time", "pause_timeline",
           "write_class_plots"]

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


# ---- per-class plots: every run whose file declares more than one class ----------------------

CLASS_PLOTS = ("class_goodput.png", "class_queues.png", "pfc_pauses.png")


def _run_axis(ax: Any, unit: str, time_scale: float) -> None:
    ax.set_xlabel(f"time since the run's start [{unit}] ({_clock(time_scale)})")


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def class_goodput_over_time(path: str | Path, chunks: Iterable[ChunkRecord],
                            time_scale: float = 1.0, *, t0_ns: int | None = None,
                            marks: Marks = ()) -> Path | None:
    """Goodput of each class over time, one panel per class with its own scale (a KV class
    at a few Gbit/s beside bulk at tens is flat on a shared axis); the panels share the time
    axis and the bins. From the receivers' chunk records (each intact chunk's bytes spread
    from its first byte's arrival to its last's: `classes.delivered_bytes`), fabric time
    since `t0_ns` (the run's start; default the first send). None when there are no
    chunks."""
    cs = list(chunks)
    bin_ns, series = class_goodput_series(cs, time_scale, t0_ns=t0_ns)
    if not series:
        return None
    t0 = t0_ns if t0_ns is not None else min(c.t_send_ns for c in cs)
    tf, tu = _unit(np.concatenate([t + bin_ns for t, _ in series.values()]), _TIME_UNITS)
    fig, axes = plt.subplots(len(series), 1, figsize=(8, 1.2 + 1.9 * len(series)),
                             sharex=True, squeeze=False)
    try:
        for ax, (cls, (t, r)) in zip(axes[:, 0], series.items(), strict=True):
            rf, ru = _unit(r, _RATE_UNITS)
            x = np.append(t, t[-1] + bin_ns) / tf
            ax.step(x, np.append(r, r[-1]) / rf, where="post", color="C0")
            ax.fill_between(x, np.append(r, r[-1]) / rf, step="post", alpha=0.25, color="C0")
            _mark(ax, marks, t0, time_scale, tf)
            ax.set_ylabel(f"{cls}\n[{ru}]")
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
        _run_axis(axes[-1, 0], tu, time_scale)
        axes[0, 0].set_title(f"Goodput per class, bins of {bin_ns / tf:.3g} {tu}\n(from the "
                             "receivers' chunk records, each intact chunk spread over its "
                             f"arrival; {_clock(time_scale)})", fontsize="medium")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def _class_queue_panels(axes: Any, series: Sequence[Any], classes: Sequence[str],  # noqa: ANN401
                        times: np.ndarray, name: Callable[[Any], str], started_ns: int,
                        time_scale: float, marks: Marks) -> None:
    """One panel per queue (a switch port's or a link direction's: `t_ns`, `classes` {class:
    bytes}, `peak_bytes`), a line per class in one colour per class across the panels, the
    run's events marked, titled `name(queue)` with its peak. The queues' owners start before
    the run: the time axis starts at the run's start."""
    colour = {c: f"C{i % 10}" for i, c in enumerate(classes)}
    tf, tu = _unit(times, _TIME_UNITS)
    qf, qu = _unit(np.array([float(x.peak_bytes) for x in series]), _SIZE_UNITS)
    for ax, x in zip(axes[:, 0], series, strict=True):
        for cls, q in x.classes.items():
            if x.t_ns.size == 1:
                ax.plot(x.t_ns / tf, q / qf, "o", color=colour[cls], label=cls)
            else:
                ax.step(x.t_ns / tf, q / qf, where="post", color=colour[cls], label=cls)
        if started_ns:
            _mark(ax, marks, started_ns, time_scale, tf)
        ax.set_title(f"{name(x)} (peak {x.peak_bytes / qf:.3g} {qu})", fontsize="small")
        ax.set_ylabel(f"queue [{qu}]")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    _run_axis(axes[-1, 0], tu, time_scale)
    axes[-1, 0].set_xlim(left=0)


def class_queues_over_time(path: str | Path, switches: Any, started_ns: int,
                           time_scale: float = 1.0, *, marks: Marks = ()) -> Path | None:
    """Queue depth per class over time at the deepest RoCE switch egress ports (one panel
    per port, a line per class), measured in the switches: their queue samples, at most one
    per sample interval (the interval doubles as a run grows, so short bursts between samples
    do not show; the panel's title gives the exact peak). None without switch statistics."""
    if not switches or not any(switches.values()):
        return None
    ports, hidden = class_queue_series(switches, started_ns, time_scale)
    n = max(1, len(ports))
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.2 + 2.0 * n), sharex=True, squeeze=False)
    try:
        if not ports:
            _no_data(axes[0, 0], "no switch egress queue ever held a byte")
        else:
            _class_queue_panels(
                axes, ports, sorted({c for p in ports for c in p.classes}),
                np.concatenate([p.t_ns for p in ports]),
                lambda p: f"{p.switch} port {p.port}{f' -> {p.peer}' if p.peer else ''}",
                started_ns, time_scale, marks)
        more = (f"; {hidden} other ports not shown (shallower, or too brief for the "
                "samples)" if hidden else "")
        fig.suptitle(f"Egress queue per class, deepest {len(ports)} switch "
                     f"port{'s' if len(ports) != 1 else ''}{more}\n"
                     "(measured in the switches; bytes are the same in fabric and wall terms)",
                     fontsize="medium")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def link_class_queues_over_time(path: str | Path, links: Any, started_ns: int,  # noqa: ANN401
                                time_scale: float = 1.0, *, marks: Marks = (),
                                backend: str = "") -> Path | None:
    """Queue depth per class over time at the plain link directions whose class queues
    peaked highest (one panel per direction, a line per class), measured in the userspace
    link engine: its queue samples, at most one per sample interval (which doubles as a run
    grows; the panel's title gives the exact peak). Where no direction queued by class (the
    netem backend takes no samples; the engine queues by class only where it shapes the
    rate itself) the figure says why instead. None without link statistics."""
    if links is None:
        return None
    dirs, hidden, classed = link_class_queue_series(links, started_ns, time_scale)
    n = max(1, len(dirs))
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.2 + 2.0 * n), sharex=True, squeeze=False)
    try:
        if not dirs:
            _no_data(axes[0, 0], textwrap.fill(no_link_class_queues(backend, classed), 70))
        else:
            _class_queue_panels(
                axes, dirs, list(dict.fromkeys(c for d in dirs for c in d.classes)),
                np.concatenate([d.t_ns[d.t_ns >= 0] for d in dirs] + [[1.0]]),
                lambda d: f"link {d.label}", started_ns, time_scale, marks)
        more = (f"\n{hidden} other directions not shown (shallower, or too brief for the "
                "samples)" if hidden else "")
        if dirs:
            fig.suptitle(f"Link queue per class, deepest {len(dirs)} link "
                         f"direction{'s' if len(dirs) != 1 else ''}{more}\n"
                         "(measured in the link engine; bytes are the same in fabric and wall "
                         "terms)", fontsize="medium")
        else:
            fig.suptitle("Link queue per class: no link's class queues were measured",
                         fontsize="medium")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def pause_timeline(path: str | Path, switches: Any, started_ns: int, time_scale: float = 1.0,
                   *, marks: Marks = ()) -> Path | None:
    """The PFC pauses the switches sent, one row per (switch, ingress port, priority), a bar
    from each pause to its resume (measured in the switches). A run with PFC off, or whose
    lossless queues never reached XOFF, gets a figure saying no pause was sent. None without
    switch statistics."""
    if not switches or not any(switches.values()):
        return None
    rows, hidden, sent = pause_rows(switches, started_ns, time_scale)
    pfc = [bool((s or {}).get("buffer", {}).get("pfc")) for s in switches.values()]
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.35 * max(2, len(rows))))
    try:
        if not rows:
            why = ("PFC is off in the switches" if not any(pfc)
                   else "no lossless ingress queue reached XOFF")
            _no_data(ax, f"no PFC pause was sent ({why})")
        else:
            tf, tu = _unit(np.array([b for r in rows for _, b in r.intervals]), _TIME_UNITS)
            labels = []
            for i, r in enumerate(rows):
                bars = [(a / tf, max((b - a) / tf, 0.0)) for a, b in r.intervals]
                ax.broken_barh(bars, (i - 0.4, 0.8), color=f"C{r.priority % 10}")
                cls = f": {', '.join(r.classes)}" if r.classes else ""
                peer = r.peer or r.port
                labels.append(f"{r.switch} pauses {peer} (prio {r.priority}{cls})"
                              f"{' *' if r.open_at_end else ''}")
            ax.set_yticks(range(len(rows)), labels, fontsize="small")
            ax.set_ylim(len(rows) - 0.5, -0.5)
            if started_ns:
                _mark(ax, marks, started_ns, time_scale, tf)
            _run_axis(ax, tu, time_scale)
            ax.set_xlim(left=0)
            ax.grid(True, axis="x", alpha=0.3)
        more = f"; {hidden} shorter rows not shown" if hidden else ""
        star = "; * still paused at the end" if any(r.open_at_end for r in rows) else ""
        ax.set_title(f"PFC pauses sent by the switches ({sent} in all{more}{star})\n"
                     f"(measured in the switches; {_clock(time_scale)})", fontsize="medium")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def write_class_plots(out_dir: str | Path, summary: Any, chunks: Iterable[ChunkRecord],
                      switches: Any = None, links: Any = None) -> list[Path]:
    """The per-class plots of a run whose file declares more than one class (else none):
    class_goodput.png from the chunk records; with RoCE switch statistics (`{node: stats}`)
    class_queues.png and pfc_pauses.png; else, with the run's link statistics (links.json)
    class_queues.png from the link engine's class queues (saying why where there are none).
    All on the run's clock (`meta.started_ns`) with the run's events marked. Returns what it
    wrote."""
    cs = list(chunks)
    if len(declared_classes(summary, cs)) < 2:
        return []
    out = Path(out_dir)
    ts = float((summary or {}).get("time_scale", 1.0))
    started = int(((summary or {}).get("meta") or {}).get("started_ns") or 0)
    marks = event_marks(summary)
    made = [class_goodput_over_time(out / CLASS_PLOTS[0], cs, ts, t0_ns=started or None,
                                    marks=marks)]
    if switches:
        made += [class_queues_over_time(out / CLASS_PLOTS[1], switches, started, ts,
                                        marks=marks),
                 pause_timeline(out / CLASS_PLOTS[2], switches, started, ts, marks=marks)]
    elif links is not None:
        backend = str(((summary or {}).get("meta") or {}).get("backend") or "")
        made.append(link_class_queues_over_time(out / CLASS_PLOTS[1], links, started, ts,
                                                marks=marks, backend=backend))
    return [p for p in made if p is not None]
