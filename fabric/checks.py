"""Pure checks `fabric check` prints: equal-cost paths between hosts, and warnings where a file
asks for more than the chosen link backend delivers within 5%.

The backend limits are the envelope `scripts/bench_links.py` measured on the 2-core development
machine (README, "Performance"): rerun it on your host and adjust if yours is faster.
"""

from __future__ import annotations

from collections import Counter

from .cc import resolve_cc
from .plan import LINK_BACKENDS, link_backend
from .topology.document import Topology, link_classes
from .topology.graph import adjacency, search
from .topology.linkprops import LINK_PROPERTIES
from .topology.model import bdp_bytes, queue_bytes
from .units import format_rate, format_time


def plural(n: int, noun: str) -> str:
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {noun}{'es' if noun.endswith(('s', 'sh', 'ch')) else 's'}"


def equal_cost_paths(topo: Topology, src: str,
                     adj: dict[str, list[str]] | None = None) -> dict[str, tuple[int, int]]:
    """dst -> (hops, number of equal-cost shortest paths) from `src`."""
    adj = adjacency(topo.links) if adj is None else adj
    found = search(src, lambda n: adj.get(n, ()))
    return {d: (found.hops[d], found.paths[d]) for d in found.hops if d != src}


#: above this many hosts the path classes come from this many evenly spaced source hosts (one
#: search each), so `check` stays linear in the fabric's size instead of quadratic
PATH_SOURCES = 128


def path_summary(topo: Topology) -> list[str]:
    """One line per (hops, equal-cost paths) class among host pairs, with an example pair;
    over PATH_SOURCES hosts, among the pairs from PATH_SOURCES evenly spaced hosts (said)."""
    hosts = [n.name for n in topo.nodes.values() if n.kind == "host"]
    if len(hosts) < 2:
        return []
    sampled = len(hosts) > PATH_SOURCES
    sources = hosts[::-(-len(hosts) // PATH_SOURCES)] if sampled else hosts
    adj = adjacency(topo.links)
    classes: Counter[tuple[int, int]] = Counter()
    example: dict[tuple[int, int], tuple[str, str]] = {}
    unreachable = []
    for i, a in enumerate(sources):
        paths = equal_cost_paths(topo, a, adj)
        # every pair once; a sample counts each source's pairs with every other host
        for b in (h for h in hosts if h != a) if sampled else hosts[i + 1:]:
            if b not in paths:
                unreachable.append((a, b))
                continue
            classes[paths[b]] += 1
            example.setdefault(paths[b], (a, b))
    head = f"paths (pairs from {len(sources)} of {len(hosts)} hosts): " if sampled else "paths: "
    lines = []
    for (hops, n), pairs in sorted(classes.items()):
        a, b = example[(hops, n)]
        lines.append(f"{head}{plural(pairs, 'host pair')} at {plural(hops, 'hop')} over "
                     f"{plural(n, 'equal-cost path')} (e.g. {a} -> {b})")
    for a, b in unreachable[:5]:
        lines.append(f"{head}{a} and {b} are not connected")
    return lines


def backend_warnings(topo: Topology, backend: str) -> list[str]:
    """Where the file asks for more than `backend` delivers within 5% on this class of host.

    One warning per kind of problem, naming the links (and their lines) it concerns.
    """
    lim = link_backend(backend).limits
    found: dict[str, list[str]] = {}
    ts = topo.time_scale
    need_scale = 1.0
    tightest = (lim.max_rate_bps, 0)  # (rate limit, at this mtu) of the worst rate warning

    def add(kind: str, where: str) -> None:
        found.setdefault(kind, []).append(where)

    for link in topo.links:
        for arrow, shape in (("->", link.forward), ("<-", link.reverse)):
            host = shape.scaled(ts)
            if arrow == "<-" and link.symmetric:
                continue
            where = link.name if link.symmetric else f"{link.name} {arrow}"
            if link.line:
                where += f" (line {link.line})"
            limit = lim.rate_limit(host.mtu)
            if host.rate_bps and host.rate_bps > limit:
                need_scale = max(need_scale, host.rate_bps / limit * ts)
                tightest = min(tightest, (limit, host.mtu))
                add("rate", where)
            if 0 < host.delay_ns < lim.min_delay_ns:
                add("delay", where)
            for prop in LINK_PROPERTIES:
                if backend in prop.not_realised_by and prop.is_set(shape):
                    add(f"unrealised:{prop.key}", where)
            explicit_queue = host.queue_bytes is not None or host.queue_packets is not None
            if host.rate_bps and explicit_queue and queue_bytes(host) < bdp_bytes(host):
                add("queue", where)
            if shape.ecn_bytes is not None and not shape.rate_bps:
                add("ecn-unshaped", where)
    text = {
        "rate": f"rates on the host above the {backend} backend's accurate range (up to "
                f"{format_rate(tightest[0])}"
                + (f" at mtu {tightest[1]}" if lim.max_pps else "")
                + f"): set time_scale >= {need_scale:.3g}"
                + (" or a larger mtu" if lim.max_pps else ""),
        "delay": f"delays on the host below {format_time(lim.min_delay_ns)}: the {backend} "
                 "backend adds ~0.17 ms per direction of its own, a large share of these; "
                 "a larger time_scale stretches delays",
        **{f"unrealised:{p.key}": f"{p.label} is not realised by the {backend} backend "
           f"({p.not_realised_by[backend]}); use --links "
           + " or ".join(b for b in LINK_BACKENDS if b not in p.not_realised_by)
           for p in LINK_PROPERTIES if backend in p.not_realised_by},
        "queue": "queue below one bandwidth-delay product (rate x round trip): a single TCP "
                 "flow cannot fill the link",
        "ecn-unshaped": "ecn threshold on a link without a rate: no queue builds there, so it "
                        "never marks",
    }
    out = []
    for kind, wheres in found.items():
        shown = ", ".join(wheres[:3]) + (f" and {len(wheres) - 3} more" if len(wheres) > 3
                                         else "")
        n = len(wheres)
        out.append(f"{text[kind]} [{n} link{'s' if n > 1 else ''}: {shown}]")
    marked = [c.name for c in link_classes(topo) if c.red is not None]
    shaped = any(s.rate_bps for link in topo.links for s in (link.forward, link.reverse))
    if marked and shaped and not link_backend(backend).class_ecn:
        out.append(f"class ECN ({', '.join(marked)}) is not realised on links by the {backend} "
                   "backend (its class queues do not mark; RoCE switches still mark); "
                   "use --links " + " or ".join(b.name for b in LINK_BACKENDS.values()
                                                if b.class_ecn))
    return out


def cc_warnings(topo: Topology) -> list[str]:
    """Where a class's congestion control cannot work as its paper has it on this fabric."""
    if topo.traffic is None:
        return []
    # the flows a class's policy drives: RoCE's queue pairs and the UDP transport's flows
    roce = {f.cls for f in topo.traffic.flows if f.transport in ("roce", "udp")}
    sw = topo.switches
    out = []
    for c in topo.classes:
        if c.name not in roce:
            continue
        policy = resolve_cc(c.cc)  # what it needs is declared on the policy, never its name
        name = policy.name
        if "int" in policy.needs and (sw is None or not sw.int_enabled):
            out.append(f"class {c.name} (line {c.line}): {name} reads in-band telemetry, but "
                       + ("there are no RoCE switches (`switches:`)" if sw is None
                          else "switches.int is off")
                       + f"; without it {name} keeps its initial window")
        if "ecn" in policy.needs:
            marks = (sw is not None and c.red is not None) or (
                sw is None and any(link.forward.ecn_bytes or link.reverse.ecn_bytes
                                   for link in topo.links))
            if not marks:
                out.append(f"class {c.name} (line {c.line}): {name} reacts to ECN marks, but "
                           "nothing marks this class: give it `ecn: {kmin: ..., kmax: ...}`"
                           + (" (RoCE switches mark per class)" if sw is not None else ""))
        if "fine_rtt" in policy.needs and topo.time_scale < 10_000:
            noise_ns = 500_000 / topo.time_scale  # ~0.5 ms of host scheduling noise
            out.append(f"class {c.name} (line {c.line}): {name} needs RTT samples finer than "
                       f"this host's ~0.5 ms of timing noise, which is {noise_ns:.0f} ns of "
                       f"fabric time at time_scale {topo.time_scale:g}, enough to hold its "
                       f"rate down (docs/roce.md); time_scale >= 10000 for a fair {name}")
    if sw is None and any(c.red is not None for c in topo.classes):
        names = ", ".join(c.name for c in topo.classes if c.red is not None)
        out.append(f"classes with ecn thresholds ({names}) only mark at RoCE switches; this "
                   "file has no `switches:` section, so nothing marks by class")
    return out


__all__ = ["backend_warnings", "cc_warnings", "equal_cost_paths", "path_summary"]
