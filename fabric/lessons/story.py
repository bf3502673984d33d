"""The one line a traffic run ends with on what its classes did (the demo's lesson).

It reads the run's own figures (each class's chunk p99 from the summary) and what serves
each queue on the classes' paths (the fabric's explanation, `fabric.kinds.explain`: a FIFO
link, or a queue per class at a RoCE switch or a link that has them), and says in a network
engineer's words why the classes came out as they did. Nothing in it is a figure fixed in advance.
"""

from __future__ import annotations

from typing import Any

from ..units import format_time

__all__ = ["class_line"]


def _p99(group: dict[str, Any]) -> float | None:
    value = ((group.get("chunk_latency") or {}).get("fabric_ns") or {}).get("p99")
    return None if value is None else float(value)


def class_line(ex: Any, summary: dict[str, Any]) -> str | None:  # noqa: ANN401
    """`classes: ...` from a run's summary and its fabric's explanation
    (`fabric.kinds.explain(topo)`), or None when the run moved fewer than two classes."""
    groups = {name: p for name, g in (summary.get("classes") or {}).items()
              if (p := _p99(g)) is not None}
    if len(groups) < 2:
        return None
    hops = [(f.cls, hop) for f in ex.flows if f.cls in groups
            for pair in f.pairs for hop in pair.path]
    shared = [h for _, h in hops if not h.egress.per_class]
    ranked = sorted(groups, key=lambda c: groups[c])
    figures = ", ".join(f"{c} {format_time(round(groups[c]))}" for c in ranked)
    best, worst = ranked[0], ranked[-1]
    head = f"classes: chunk p99 {figures}. "
    if hops and len(shared) == len(hops):
        mech = sorted({h.egress.mechanism for h in shared})
        return head + (
            f"Every queue their paths cross is one {' / '.join(mech)} queue for all classes, "
            "so a class set only the DSCP byte: each chunk waited behind whatever was queued "
            f"ahead of it, whatever its class, and {worst} came out worst here. "
            "`fabric lesson run 1` shows KV in a class of its own.")
    by_cls = {c.cls.name: c.cls for c in ex.classes}
    b, w = by_cls.get(best), by_cls.get(worst)
    why = ""
    if b is not None and w is not None:
        if b.strict and not w.strict:
            why = f"{best} is served first (strict priority)"
        elif w.strict and not b.strict:
            why = f"although {worst} is strict, {best} met emptier queues"
        elif not b.strict and not w.strict and b.weight != w.weight:
            why = (f"{best} gets {b.weight} turns to {worst}'s {w.weight} where they share a "
                   "port" if b.weight > w.weight else
                   f"{best} met emptier queues despite fewer turns ({b.weight} to {w.weight})")
        elif not b.strict and not w.strict:
            why = (f"{best} and {worst} get equal turns where they share a port (weight "
                   f"{b.weight} each, neither strict), so each waited mostly behind its own "
                   f"backlog, and {worst}'s was the longer; a strict KV class goes first "
                   "(`fabric lesson run 1`)")
        else:
            why = f"both are strict, and {best} met the emptier queues"
    per = len(hops) - len(shared)
    served = " / ".join(sorted({h.egress.mechanism for _, h in hops if h.egress.per_class}))
    where = (f"{per} of {len(hops)} hops on their paths keep a queue per class ({served})"
             if shared else f"Every hop on their paths keeps a queue per class ({served})")
    return head + f"{where}; {why}." if why else head + where + "."
