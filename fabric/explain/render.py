"""An `Explanation` as text for people (`fabric explain`) and as JSON for scripts
(`--format json`, schema `fabric.explain/1`). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..metrics.report import format_table
from ..units import format_rate, format_size, format_time
from . import NOT_ENFORCED, ClassView, Explanation, FlowView, Hop, Pfc

__all__ = ["SCHEMA", "render_json", "render_text"]

SCHEMA = "fabric.explain/1"
PAIRS_SHOWN = 3  # streams of a flow printed in full in text (JSON lists every one)

_PROPERTY_WORDS = {"queue": "priority queue", "lossless": "lossless", "ecn": "ECN marking"}


def _offered(bps: float | None, flows: bool = True) -> str:
    if not flows:
        return "-"
    return "back to back" if bps is None else format_rate(round(bps))


def _queue(v: ClassView) -> str:
    return "strict" if v.cls.strict else f"weighted {v.cls.weight}"


def _ecn(v: ClassView) -> str:
    if v.cls.red is None:
        return "-"
    kmin, kmax, pmax = v.cls.red
    return f"{format_size(kmin)}/{format_size(kmax)}/{pmax:g}"


def _pfc_text(pfcs: tuple[Pfc, ...]) -> str:
    def span(values: list[int]) -> str:
        lo, hi = min(values), max(values)
        return format_size(lo) if lo == hi else f"{format_size(lo)}..{format_size(hi)}"

    switches = sorted({p.by for p in pfcs})
    return (f"PFC at {len(switches)} RoCE switch{'es' if len(switches) > 1 else ''} "
            f"({', '.join(switches[:4])}{', ...' if len(switches) > 4 else ''}), per ingress "
            f"port: XOFF {span([p.xoff_bytes for p in pfcs])}, XON "
            f"{span([p.xon_bytes for p in pfcs])}, headroom "
            f"{span([p.headroom_bytes for p in pfcs])}")


def _lossless(v: ClassView) -> str:
    if not v.cls.lossless:
        return "no"
    return "yes (PFC)" if v.pfc else "yes (not enforced)"


def _class_lines(ex: Explanation) -> list[str]:
    rows = []
    for v in ex.classes:
        c = v.cls
        uses_roce = "roce" in v.transports
        uses_tcp = "tcp" in v.transports
        rows.append([c.name + (" *" if v.control else ""), str(c.dscp), str(c.priority),
                     _queue(v), _lossless(v), _ecn(v),
                     c.cc + ("" if uses_roce or not v.flows else " (no RoCE flows)"),
                     (c.tcp_cc or "kernel's") + ("" if uses_tcp or not v.flows
                                                 else " (no TCP flows)"),
                     ", ".join(v.flows) or "-", _offered(v.offered_bps, bool(v.flows))])
    lines = ["classes:", _indent(format_table(rows, [
        "class", "dscp", "prio", "queue", "lossless", "ecn kmin/kmax/pmax", "cc", "tcp cc",
        "flows", "offered"], numeric=False))]
    control = next((v for v in ex.classes if v.control), None)
    if control is not None:
        lines.append("  * the RoCE control class: every CNP, ACK and NAK leaves in it"
                     + ("" if control.declared else " (the default: the file declares none)"))
    for v in ex.classes:
        c = v.cls
        lines.append(f"class {c.name}: where each property holds"
                     + ("" if v.flows else " (no flows: over every link direction)"))
        if c.queue_bytes:
            lines.append(f"  queue limit at each RoCE switch port: {format_size(c.queue_bytes)}")
        if c.cc_params:
            lines.append(f"  cc_params: {', '.join(f'{k}={x:g}' for k, x in c.cc_params)}")
        if v.pfc:
            lines.append(f"  {_pfc_text(v.pfc)}")
        for prop in ("queue", "lossless", "ecn"):
            for how, dirs in sorted(v.enforced.get(prop, {}).items(),
                                    key=lambda hd: hd[0] == NOT_ENFORCED):
                n = len(dirs)
                shown = ", ".join(dirs[:3]) + (f" and {n - 3} more" if n > 3 else "")
                lines.append(f"  {_PROPERTY_WORDS[prop]}: {how} on {n} link "
                             f"direction{'s' if n > 1 else ''} ({shown})")
    return lines


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in text.splitlines())


def _hop_row(h: Hop) -> list[str]:
    e = h.egress
    alt = f"or {', '.join(h.alternatives)}" if h.alternatives else ""
    if e.per_class:
        queue = f"own queue ({e.queue})"
        others = f"beside {', '.join(h.beside)}" if h.beside else ""
    else:
        queue = "FIFO link"
        others = f"shares with {', '.join(h.shares_with)}" if h.shares_with else ""
    if e.pfc is not None and "lossless" in h.enforced:
        queue += f"; PFC from {e.pfc.by}"
    return [f"{e.sender} -> {e.receiver}", alt, format_rate(e.rate_bps),
            format_time(e.delay_ns), format_size(h.queue_bytes), queue, others or "-"]


def _flow_lines(v: FlowView, all_pairs: bool) -> list[str]:
    to = ", ".join(v.receivers) if v.pattern != "all-to-all" else "each other"
    head = (f"flow {v.name}: {v.pattern}, class {v.cls}, {v.transport}, "
            f"{', '.join(v.senders)} -> {to}; {v.transfers} transfer"
            f"{'s' if v.transfers != 1 else ''}, {format_size(v.nbytes)}, offered "
            f"{_offered(v.offered_bps)}")
    lines = [head]
    pairs = v.pairs if all_pairs else v.pairs[:PAIRS_SHOWN]
    for p in pairs:
        lines.append(f"  {p.src} -> {p.dst}: {p.hops} hop{'s' if p.hops != 1 else ''} over "
                     f"{p.paths} equal-cost path{'s' if p.paths != 1 else ''}")
        lines.append(_indent(format_table([_hop_row(h) for h in p.path], [
            "hop", "ecmp", "rate", "delay", "queue", "served by", "other classes"],
            numeric=False), "    "))
    if len(v.pairs) > len(pairs):
        lines.append(f"  ... and {len(v.pairs) - len(pairs)} more streams (--flow {v.name} "
                     "or --format json lists every one)")
    b = v.bottleneck
    if b is not None:
        e = b.egress
        ratio = f" = {b.queue_bdps:.1f} BDP" if b.queue_bdps is not None else ""
        lines.append(f"  bottleneck: {e.name} at {format_rate(e.rate_bps)}, "
                     f"{b.streams:g} of the flow's streams cross it; BDP "
                     f"{format_size(b.bdp_bytes)} (rate x {format_time(b.rtt_ns)} round "
                     f"trip); queue {format_size(b.queue_bytes)}{ratio} ({e.queue})")
    else:
        lines.append("  bottleneck: none (every hop unshaped)")
    return lines


def render_text(ex: Explanation, *, all_pairs: bool = False) -> str:
    """What `fabric explain` prints."""
    scale = (f"; figures in fabric time (the host runs it {ex.time_scale:g}x slower)"
             if ex.time_scale != 1 else "")
    lines = [f"{ex.topology} ({ex.source}){scale}", *_class_lines(ex)]
    if ex.flows:
        for v in ex.flows:
            lines += ["", *_flow_lines(v, all_pairs)]
    else:
        lines += ["", "flows: none (no traffic section)"]
    lines.append("")
    for w in ex.warnings:
        lines.append(f"warning: {w.text}")
    n = len(ex.warnings)
    lines.append(f"{n} warning{'s' if n != 1 else ''}")
    return "\n".join(lines)


def _egress(e: Any) -> dict[str, Any]:  # noqa: ANN401 - an Egress
    return {"sender": e.sender, "receiver": e.receiver, "rate_bps": e.rate_bps,
            "delay_ns": e.delay_ns, "served_by": e.queue, "per_class": e.per_class,
            "queue_bytes": e.queue_bytes, "lossless": e.lossless, "ecn": e.ecn,
            "link_ecn_bytes": e.link_ecn_bytes,
            "pfc": None if e.pfc is None else _pfc(e.pfc)}


def _pfc(p: Pfc) -> dict[str, Any]:
    return {"by": p.by, "xoff_bytes": p.xoff_bytes, "xon_bytes": p.xon_bytes,
            "headroom_bytes": p.headroom_bytes}


def _class(v: ClassView) -> dict[str, Any]:
    c = v.cls
    return {
        "name": c.name, "dscp": c.dscp, "priority": c.priority,
        "queue": "strict" if c.strict else "weighted", "weight": c.weight,
        "queue_bytes": c.queue_bytes, "control": v.control, "declared": v.declared,
        "lossless": c.lossless, "pfc": [_pfc(p) for p in v.pfc],
        "ecn": None if c.red is None else {"kmin_bytes": c.red[0], "kmax_bytes": c.red[1],
                                           "pmax": c.red[2]},
        "cc": c.cc, "cc_params": dict(c.cc_params), "tcp_cc": c.tcp_cc,
        "flows": list(v.flows), "transports": list(v.transports),
        "offered_bps": v.offered_bps, "line": c.line,
        "enforced": {p: {how: list(ds) for how, ds in by.items()}
                     for p, by in v.enforced.items()},
    }


def _flow(v: FlowView) -> dict[str, Any]:
    b = v.bottleneck
    return {
        "name": v.name, "pattern": v.pattern, "class": v.cls, "transport": v.transport,
        "senders": list(v.senders), "receivers": list(v.receivers), "transfers": v.transfers,
        "bytes": v.nbytes, "offered_bps": v.offered_bps, "line": v.line,
        "streams": [{"src": p.src, "dst": p.dst, "hops": p.hops, "equal_cost_paths": p.paths,
                     "path": [{**_egress(h.egress), "alternatives": list(h.alternatives),
                               "shares_queue_with": list(h.shares_with),
                               "beside": list(h.beside), "enforced": dict(h.enforced),
                               "class_queue_bytes": h.queue_bytes}
                              for h in p.path]} for p in v.pairs],
        "bottleneck": None if b is None else {
            **_egress(b.egress), "rtt_ns": b.rtt_ns, "bdp_bytes": b.bdp_bytes,
            "streams": b.streams, "class_queue_bytes": b.queue_bytes,
            "queue_bdps": b.queue_bdps},
    }


def render_json(ex: Explanation) -> dict[str, Any]:
    """The explanation as JSON-ready data."""
    uses: Mapping[tuple[str, str], tuple[str, ...]] = ex.use
    return {
        "schema": SCHEMA, "topology": ex.topology, "source": ex.source,
        "time_scale": ex.time_scale, "units": "fabric time",
        "classes": [_class(v) for v in ex.classes],
        "flows": [_flow(v) for v in ex.flows],
        "links": [{**_egress(e), "classes": list(uses.get(d, ()))}
                  for d, e in sorted(ex.egress.items())],
        "warnings": [{"code": w.code, "class": w.cls, "flow": w.flow, "text": w.text}
                     for w in ex.warnings],
    }
