"""Show a plan: an aligned text table of its sends, and a Gantt chart per link direction.

matplotlib with the Agg backend (no display needed), chosen before pyplot is imported. The
chart draws each link direction's sends with one `broken_barh` call per colour, so thousands
of sends stay cheap; the time axis picks ns, us or ms from the makespan and says which.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from fabric.schedule.compiler import Plan  # noqa: E402
from fabric.schedule.topo import natural_key  # noqa: E402
from fabric.units import format_time  # noqa: E402

__all__ = ["gantt_png", "plan_table"]

_TIME_UNITS = ((1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us"), (1, "ns"))


def _dir(direction: int) -> str:
    return "a->b" if direction == 0 else "b->a"


def plan_table(plan: Plan, limit: int = 40) -> str:
    """The first `limit` sends as an aligned table, then a summary and per-link utilisation.

    Utilisation is slot time (guard excluded) over the makespan, per used link direction,
    busiest first; at most `limit` of them are listed.
    """
    head = ("transfer", "batch", "hop", "link/dir", "depart ns", "arrive ns")
    rows = [(str(s.transfer), str(s.batch), str(s.hop), f"{s.link} {_dir(s.direction)}",
             f"{s.depart_ns:,}", f"{s.arrive_ns:,}") for s in plan.sends[:limit]]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    right = (True, True, True, False, True, True)

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    out = [line(head), line(tuple("-" * w for w in widths))]
    out += [line(r) for r in rows]
    if len(plan.sends) > limit:
        out.append(f"... {len(plan.sends) - limit:,} more sends")
    slots = sorted({plan.slot_ns[s.link] for s in plan.sends}) or sorted(set(plan.slot_ns.values()))
    slot_text = "/".join(f"{v:,}" for v in slots) if slots else "-"
    out.append("")
    out.append(f"plan {plan.name}: {len(plan.sends):,} sends, makespan "
               f"{format_time(plan.makespan_ns)} ({plan.makespan_ns:,} ns), slot {slot_text} ns "
               f"for {plan.batch_vectors} x {plan.vector_bytes} B, guard {plan.guard_ns:,} ns")
    util = sorted(plan.utilisation().items(),
                  key=lambda kv: (-kv[1], natural_key(kv[0][0]), kv[0][1]))
    if util:
        mean = sum(u for _, u in util) / len(util)
        out.append(f"utilisation over {len(util)} used link directions: mean {mean:.1%}, "
                   f"max {util[0][1]:.1%}")
        name_w = max(len(f"{ln} {_dir(d)}") for (ln, d), _ in util[:limit])
        for (ln, d), u in util[:limit]:
            out.append(f"  {f'{ln} {_dir(d)}'.ljust(name_w)}  {u:6.1%}")
        if len(util) > limit:
            out.append(f"  ... {len(util) - limit} more link directions")
    return "\n".join(out)


def gantt_png(plan: Plan, path: str | Path, *, title: str | None = None) -> Path:
    """A Gantt chart of `plan`: one row per used link direction, one bar per send, colour by
    transfer (a cycle of 20), guard bands as thin grey ticks. Returns the path written."""
    path = Path(path)
    channels = plan.by_channel()
    keys = list(channels)
    span = max(plan.makespan_ns, 1)
    factor, unit = next(((f, u) for f, u in _TIME_UNITS if span >= f), (1, "ns"))
    height = min(max(2.5, 0.32 * len(keys) + 1.6), 40.0)
    fig, ax = plt.subplots(figsize=(12, height))
    try:
        cmap = plt.get_cmap("tab20")
        for row, key in enumerate(keys):
            slot = plan.slot_ns[key[0]]
            by_colour: dict[int, list[tuple[float, float]]] = {}
            guards: list[tuple[float, float]] = []
            for s in channels[key]:
                by_colour.setdefault(s.transfer % 20, []).append(
                    (s.depart_ns / factor, slot / factor))
                if plan.guard_ns:
                    guards.append(((s.depart_ns + slot) / factor, plan.guard_ns / factor))
            for colour, bars in sorted(by_colour.items()):
                ax.broken_barh(bars, (row - 0.4, 0.8), facecolors=cmap(colour), linewidth=0)
            if guards:
                ax.broken_barh(guards, (row - 0.4, 0.8), facecolors="0.92", linewidth=0)
        ax.set_yticks(range(len(keys)))
        ax.set_yticklabels([f"{ln} {_dir(d)}" for ln, d in keys],
                           fontsize=8 if len(keys) <= 30 else 6)
        ax.set_ylim(max(len(keys), 1) - 0.5, -0.5)
        ax.set_xlim(0, span / factor)
        ax.set_xlabel(f"time ({unit}, plan time from 0)")
        ax.set_ylabel("link direction")
        ax.grid(axis="x", linestyle=":", linewidth=0.5)
        ax.set_title(title or (f"plan {plan.name}: {len(plan.sends):,} sends, makespan "
                               f"{format_time(plan.makespan_ns)}, colour = transfer"))
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path
