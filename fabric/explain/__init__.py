"""What a topology file's traffic classes and flows do on its fabric, worked out without
building anything (`fabric explain`, `fabric graph`). Pure: a topology and its plan in, a
frozen `Explanation` out; `render.py` prints it as text or JSON, `draw.py` draws the fabric.

Each link direction has an egress queue, and what serves it decides which class properties
hold there. Two kinds of egress exist today:

- a **plain link** (`fifo_egress`): where the file has two or more classes, every direction
  with a rate queues by class on both link backends (the userspace link engine's serialiser;
  htb with a class and u32 DSCP filters per traffic class on the netem backend): strict
  first, then weights, each class in a drop-tail queue of its own, or a RED queue marking ECN
  where the class sets `ecn` (the engine's RED; a red qdisc under htb). Lossless is *not
  enforced* there: PFC is a RoCE switch's. A file with one class, and a direction without a
  rate (it queues nothing of its own), keep one FIFO (a link `ecn:` threshold marks every
  class alike);
- an egress a **fabric kind** serves itself: a RoCE switch's port keeps a queue per class
  (strict first, then weighted round robin), marks ECN per class, and with PFC admits
  lossless classes to its whole buffer and pauses its upstream. The kinds say so through
  `Kind.egress` (`fabric.kinds.explain` gathers them); this module does not know any kind.

`fifo_egress` is the one place that states what plain links do.

Flows: each sender-receiver pair of a flow is one stream (one TCP connection or RoCE queue
pair per peer and class, hashed once onto one of the equal-cost paths); its hops, the
equal-cost alternatives at each hop, which classes share each queue, and the bottleneck (the
direction with the most of the flow's streams per bit of rate, where ECMP splits evenly at
each hop) with its bandwidth-delay product and queue.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import FabricError
from ..topology.graph import adjacency, search
from ..topology.model import queue_bytes
from ..topology.paths import path_figures
from ..units import format_rate, format_size

if TYPE_CHECKING:
    from ..topology.document import Topology
    from ..topology.model import TrafficClass
    from ..topology.traffic import Flow

__all__ = ["CHECK_WARNINGS", "LINK_CLASSES", "LINK_ECN", "LINK_NOT_LOSSLESS", "NOT_ENFORCED",
           "PROPERTIES", "ClassView", "Egress", "Explanation", "FlowView", "Hop", "Pfc",
           "Warning", "check_warnings", "class_queue", "egress_map", "enforcement", "explain",
           "fifo_egress", "where_classes_act"]

Direction = tuple[str, str]  # (sender, receiver): one direction of a link

#: what `fabric explain` says of a class property an egress does not enforce
NOT_ENFORCED = "not enforced: FIFO link"

#: the mechanism of a plain link that queues by class: the link engine's serialiser on the
#: userspace backend, htb with u32 DSCP filters on the netem backend
LINK_CLASSES = "link class queues"

#: what a plain link's class queues do for a lossless class: nothing more than for any other
LINK_NOT_LOSSLESS = "not enforced: link class queues drop at the tail (PFC: RoCE switches only)"

#: who marks ECN by class on a plain link
LINK_ECN = ("RED per class: the link engine's (userspace backend), a red qdisc per htb class "
            "(netem backend)")

#: the class properties whose enforcement is stated per link direction
PROPERTIES = ("queue", "lossless", "ecn")


@dataclass(frozen=True)
class Pfc:
    """PFC on one link direction: `by` (the receiving switch) pauses the sender's lossless
    priorities when its ingress from the sender holds `xoff_bytes`, resumes at `xon_bytes`,
    and keeps `headroom_bytes` for what still arrives during the pause."""

    by: str
    xoff_bytes: int
    xon_bytes: int
    headroom_bytes: int


@dataclass(frozen=True)
class Egress:
    """How one link direction's egress queue treats the classes.

    queue: what serves the queue ("FIFO link", "RoCE switch leaf-0 port eth2");
    mechanism: the kind of egress, the same words for all of its kind ("RoCE switch
    egress"), so statements group;
    per_class: each class has a queue of its own (strict first, then weighted round robin);
    queue_bytes: what the queue holds for a lossy class (a switch: its buffer pool);
    lossless: what keeps lossless classes from being dropped here (None: nothing);
    ecn: what marks ECN by class here (None: nothing); link_ecn_bytes: a link threshold
    that marks every class alike; pfc: the pause the receiver sends this sender.
    """

    sender: str
    receiver: str
    rate_bps: int | None
    delay_ns: int
    queue: str
    per_class: bool
    queue_bytes: int
    mechanism: str = "FIFO link"
    lossless: str | None = None
    ecn: str | None = None
    link_ecn_bytes: int | None = None
    pfc: Pfc | None = None
    lossless_bytes: int | None = None  # what a lossless class may fill (a switch's buffer)

    @property
    def name(self) -> str:
        return f"{self.sender} -> {self.receiver}"


def fifo_egress(topo: Topology, sender: str, receiver: str) -> Egress:
    """A plain link direction. Where the file has classes (`link_classes`) and the direction
    a rate, it queues by class on both link backends (the link engine; htb and u32 DSCP
    filters on netem): priority, strict, weight and ECN per class hold there (the engine's RED
    or a red qdisc per htb class), lossless nowhere. Otherwise one FIFO queue, where no class
    property holds. The one place that states what plain links do."""
    from ..topology.document import link_classes

    shape = topo.shape(sender, receiver)
    if shape.rate_bps and link_classes(topo):
        return Egress(sender=sender, receiver=receiver, rate_bps=shape.rate_bps,
                      delay_ns=shape.delay_ns, queue="link class queue", per_class=True,
                      queue_bytes=queue_bytes(shape), mechanism=LINK_CLASSES, ecn=LINK_ECN,
                      link_ecn_bytes=shape.ecn_bytes)
    return Egress(sender=sender, receiver=receiver, rate_bps=shape.rate_bps,
                  delay_ns=shape.delay_ns, queue="FIFO link", per_class=False,
                  queue_bytes=queue_bytes(shape), link_ecn_bytes=shape.ecn_bytes)


def egress_map(topo: Topology, served: Mapping[Direction, Egress] | None = None
               ) -> dict[Direction, Egress]:
    """Every link direction's egress: what a kind serves itself (`served`), else a plain
    link (`fifo_egress`)."""
    served = served or {}
    out: dict[Direction, Egress] = {}
    for link in topo.links:
        for d in ((link.a, link.b), (link.b, link.a)):
            out[d] = served.get(d) or fifo_egress(topo, *d)
    return out


def enforcement(egress: Egress, cls: TrafficClass) -> dict[str, str]:
    """Per class property (`PROPERTIES`), what enforces it for `cls` on `egress`, in words;
    a property the class does not ask for is left out."""
    out: dict[str, str] = {}
    if egress.per_class:
        what = "strict priority" if cls.strict else f"weight {cls.weight}"
        cap = f", at most {format_size(cls.queue_bytes)}" if cls.queue_bytes else ""
        out["queue"] = f"{egress.mechanism}: own queue, {what}{cap}"
    else:
        out["queue"] = NOT_ENFORCED
    if cls.lossless:
        out["lossless"] = egress.lossless or (
            LINK_NOT_LOSSLESS if egress.mechanism == LINK_CLASSES else NOT_ENFORCED)
    if cls.red is not None:
        out["ecn"] = egress.ecn if egress.ecn and egress.per_class else NOT_ENFORCED
    return out


#: the warnings `fabric check` prints too: a class property the file asks for that nothing
#: on the fabric delivers (the teaching ones, ECMP collisions and classes sharing a FIFO
#: queue, stay with `fabric explain`)
CHECK_WARNINGS = ("lossless-unenforced", "ecn-above-queue", "strict-starves")


def check_warnings(ex: Explanation) -> list[str]:
    """The explanation's warnings `fabric check` prints (`CHECK_WARNINGS`)."""
    return [w.text for w in ex.warnings if w.code in CHECK_WARNINGS]


def where_classes_act(ex: Explanation) -> str | None:
    """One line for `fabric check`: on how many link directions each kind of egress serves
    the classes (None for a file with one class: nothing to tell apart)."""
    if len(ex.classes) < 2:
        return None
    by: dict[str, int] = {}
    for e in ex.egress.values():
        how = f"{e.mechanism} (a queue per class)" if e.per_class else NOT_ENFORCED
        by[how] = by.get(how, 0) + 1
    total = len(ex.egress)
    parts = [f"{how} on {n} of {total} link directions"
             for how, n in sorted(by.items(), key=lambda hn: hn[0] == NOT_ENFORCED)]
    return "classes act at: " + "; ".join(parts) + " (`fabric explain` says which property " \
        "holds where)"


def class_queue(egress: Egress, cls: TrafficClass) -> int:
    """The bytes `cls` may hold queued at `egress`: a plain link's whole queue; at a
    per-class egress what its admission allows (a lossless class the whole buffer, a lossy
    one the pool), capped by the class's own `queue:`."""
    if not egress.per_class:
        return egress.queue_bytes
    limit = egress.lossless_bytes if cls.lossless and egress.lossless_bytes else \
        egress.queue_bytes
    return min(limit, cls.queue_bytes) if cls.queue_bytes else limit


# ---- the explanation ----------------------------------------------------------------------


@dataclass(frozen=True)
class Warning:  # noqa: A001 - a warning of the explanation, not Python's
    """One warning, in a network engineer's words; `code` names its kind for scripts."""

    code: str
    text: str
    cls: str | None = None
    flow: str | None = None


@dataclass(frozen=True)
class Hop:
    """One hop of a path: the direction, its egress, the equal-cost next hops beside the one
    shown, and the other classes whose flows use the same egress (in its one FIFO queue,
    `shares_with`; in queues of their own on the same port, `beside`)."""

    egress: Egress
    alternatives: tuple[str, ...]
    shares_with: tuple[str, ...]
    beside: tuple[str, ...]
    enforced: Mapping[str, str]
    queue_bytes: int  # what the flow's class may hold queued here (`class_queue`)


@dataclass(frozen=True)
class PairView:
    """One stream of a flow: sender, receiver, hops, how many equal-cost paths, one path."""

    src: str
    dst: str
    hops: int
    paths: int
    path: tuple[Hop, ...]


@dataclass(frozen=True)
class Bottleneck:
    """The flow's most loaded direction per bit of rate: its rate, the round trip of the path
    through it, their product, its queue, and how many of the flow's streams cross it."""

    egress: Egress
    rtt_ns: int
    bdp_bytes: int
    streams: float
    queue_bytes: int  # what the flow's class may hold queued there (`class_queue`)

    @property
    def queue_bdps(self) -> float | None:
        return self.queue_bytes / self.bdp_bytes if self.bdp_bytes else None


@dataclass(frozen=True)
class FlowView:
    name: str
    pattern: str
    cls: str
    transport: str
    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    transfers: int
    nbytes: int
    offered_bps: float | None  # open-loop arrivals x mean size; None: back to back
    pairs: tuple[PairView, ...]
    bottleneck: Bottleneck | None
    line: int | None = None


@dataclass(frozen=True)
class ClassView:
    """A class's settings as the file states them, where its PFC applies (distinct
    thresholds over the switches' ports), its flows and their offered load, and per property
    which mechanism enforces it on how many of the directions its flows use."""

    cls: TrafficClass
    pfc: tuple[Pfc, ...]
    control: bool  # the RoCE control class: carries every CNP, ACK and NAK
    declared: bool  # written in the file (else the default control class RoCE files get)
    flows: tuple[str, ...]
    transports: tuple[str, ...]
    offered_bps: float | None  # None: some flow is back to back (as fast as its path)
    enforced: Mapping[str, Mapping[str, tuple[str, ...]]]  # property -> mechanism -> dirs


@dataclass(frozen=True)
class Explanation:
    topology: str
    source: str
    time_scale: float
    classes: tuple[ClassView, ...]
    flows: tuple[FlowView, ...]
    warnings: tuple[Warning, ...]
    egress: Mapping[Direction, Egress] = field(default_factory=dict)
    use: Mapping[Direction, tuple[str, ...]] = field(default_factory=dict)  # dir -> classes


def explain(topo: Topology, *, served: Mapping[Direction, Egress] | None = None,
            cls: str | None = None, flow: str | None = None) -> Explanation:
    """Explain `topo`'s classes and flows; `served`: the egresses a kind serves itself
    (`Kind.egress`, gathered by `fabric.kinds.explain`). `cls` / `flow` keep one class or
    flow (a FabricError naming what exists when there is none by that name)."""
    from ..topology.document import control_class, roce_classes

    classes = {c.name: c for c in roce_classes(topo)}  # with the default RoCE control class
    control = control_class(topo)
    flows = list(topo.traffic.flows) if topo.traffic is not None else []
    if cls is not None and cls not in classes:
        raise FabricError(f"{topo.source}: no class '{cls}' (classes: {', '.join(classes)})")
    if flow is not None and flow not in {f.name for f in flows}:
        have = ", ".join(f.name for f in flows) or "none: the file has no traffic section"
        raise FabricError(f"{topo.source}: no flow '{flow}' (flows: {have})")
    egress = egress_map(topo, served)
    routes = _Routes(topo)
    streams = _streams(topo)
    shares: dict[str, dict[Direction, float]] = {}  # flow -> direction -> streams crossing
    use: dict[Direction, set[str]] = {}
    for f in flows:
        load: dict[Direction, float] = {}
        for src, dst in streams[f.name].pairs:
            for d, s in routes.split(src, dst).items():
                load[d] = load.get(d, 0.0) + s
                use.setdefault(d, set()).add(f.cls)
        shares[f.name] = load
    uses = {d: tuple(c for c in classes if c in names) for d, names in use.items()}
    flow_views = [_flow_view(topo, f, streams[f.name], shares[f.name], routes, egress, uses,
                             classes) for f in flows]
    class_views = [_class_view(c, flows, streams, shares, egress, control=c == control,
                               declared=c in topo.classes) for c in classes.values()]
    warnings = _warnings(topo, class_views, flow_views, flows, streams, shares, egress, uses,
                         routes)
    if cls is not None:
        class_views = [v for v in class_views if v.cls.name == cls]
        flow_views = [v for v in flow_views if v.cls == cls]
        warnings = [w for w in warnings if w.cls in (None, cls)]
    if flow is not None:
        flow_views = [v for v in flow_views if v.name == flow]  # empty if --class differs
        keep = {v.cls for v in flow_views}
        class_views = [v for v in class_views if v.cls.name in keep]
        warnings = [w for w in warnings
                    if w.flow == flow or (w.flow is None and (w.cls is None or w.cls in keep))]
    return Explanation(topology=topo.name, source=topo.source, time_scale=topo.time_scale,
                       classes=tuple(class_views), flows=tuple(flow_views),
                       warnings=tuple(warnings), egress=egress, use=uses)


# ---- paths --------------------------------------------------------------------------------


class _Routes:
    """Equal-cost shortest paths between nodes, from one breadth-first search per receiver
    (`topology.graph.search`): next hops toward it, and how a stream splits at each hop."""

    def __init__(self, topo: Topology) -> None:
        adj = adjacency(topo.links)
        self._adj = {n: sorted(set(nbs)) for n, nbs in adj.items()}
        self._dist: dict[str, dict[str, int]] = {}
        self._paths: dict[str, dict[str, int]] = {}

    def _search(self, dst: str) -> tuple[dict[str, int], dict[str, int]]:
        if dst not in self._dist:
            found = search(dst, lambda n: self._adj.get(n, ()))
            self._dist[dst], self._paths[dst] = found.hops, found.paths
        return self._dist[dst], self._paths[dst]

    def next_hops(self, node: str, dst: str) -> list[str]:
        """Neighbours of `node` on a shortest path to `dst` (name order)."""
        dist, _ = self._search(dst)
        here = dist.get(node)
        if here is None or here == 0:
            return []
        return [n for n in self._adj.get(node, ()) if dist.get(n) == here - 1]

    def count(self, src: str, dst: str) -> tuple[int, int]:
        """(hops, equal-cost paths) from `src` to `dst`; (0, 0) when not connected."""
        dist, paths = self._search(dst)
        return (dist[src], paths[src]) if src in dist else (0, 0)

    def split(self, src: str, dst: str) -> dict[Direction, float]:
        """How much of one stream from `src` to `dst` each direction carries on average,
        hashed evenly over the equal-cost next hops at every hop (what ECMP does)."""
        dist, _ = self._search(dst)
        if src not in dist:
            return {}
        share = {src: 1.0}
        out: dict[Direction, float] = {}
        frontier = [src]  # every node of a frontier is as far from `dst`: one hop per round
        while frontier:
            nxt: dict[str, float] = {}
            for u in frontier:
                hops = self.next_hops(u, dst)
                for v in hops:
                    part = share[u] / len(hops)
                    out[(u, v)] = out.get((u, v), 0.0) + part
                    nxt[v] = nxt.get(v, 0.0) + part
            share.update(nxt)
            frontier = sorted(nxt)
        return out

    def path(self, src: str, dst: str) -> list[tuple[str, str, tuple[str, ...]]]:
        """One shortest path (lowest-named next hop first) as (node, next, alternatives)."""
        out = []
        node = src
        while node != dst:
            hops = self.next_hops(node, dst)
            if not hops:
                return []
            out.append((node, hops[0], tuple(hops[1:])))
            node = hops[0]
        return out


# ---- flows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Streams:
    pairs: tuple[tuple[str, str], ...]  # distinct (sender, receiver), schedule order
    transfers: int
    nbytes: int
    offered_bps: float | None


def _streams(topo: Topology) -> dict[str, _Streams]:
    """Per flow: its streams, transfers, bytes and offered load, from the seeded schedule
    (`fabric.traffic.schedule`) the run would use."""
    from ..traffic import schedule

    by_flow: dict[str, list] = {}
    for t in schedule(topo):
        by_flow.setdefault(t.flow, []).append(t)
    out = {}
    flows = topo.traffic.flows if topo.traffic is not None else ()
    for f in flows:
        ts = by_flow.get(f.name, [])
        pairs = tuple(dict.fromkeys((t.src, t.dst) for t in ts))
        nbytes = sum(t.nbytes for t in ts)
        offered = None
        if f.rate_per_s is not None and ts:
            offered = nbytes / len(ts) * 8 * f.rate_per_s
        out[f.name] = _Streams(pairs, len(ts), nbytes, offered)
    return out


def _flow_view(topo: Topology, f: Flow, st: _Streams, load: Mapping[Direction, float],
               routes: _Routes, egress: Mapping[Direction, Egress],
               uses: Mapping[Direction, tuple[str, ...]],
               classes: Mapping[str, TrafficClass]) -> FlowView:
    cls = classes[f.cls]
    pairs = []
    for src, dst in st.pairs:
        hops, paths = routes.count(src, dst)
        path = []
        for a, b, alts in routes.path(src, dst):
            e = egress[(a, b)]
            others = tuple(c for c in uses.get((a, b), ()) if c != f.cls)
            path.append(Hop(egress=e, alternatives=alts,
                            shares_with=() if e.per_class else others,
                            beside=others if e.per_class else (),
                            enforced=enforcement(e, cls), queue_bytes=class_queue(e, cls)))
        pairs.append(PairView(src, dst, hops, paths, tuple(path)))
    bottleneck = None
    rated = [(s / e.rate_bps, e.rate_bps, d) for d, s in load.items()
             if (e := egress[d]).rate_bps]
    if rated:
        # the most streams per bit of rate; on a tie the slower, then the one nearer the
        # receivers (where an incast converges)
        _, _, d = max(rated, key=lambda r: (float(f"{r[0]:.6g}"), -r[1],
                                            -min(routes.count(r[2][1], dst)[0]
                                                 for _, dst in st.pairs)))
        e = egress[d]
        src, dst = next(((s, t) for s, t in st.pairs if d in routes.split(s, t)), st.pairs[0])
        rtt = path_figures(topo, src, dst).base_rtt_ns
        assert e.rate_bps is not None
        bottleneck = Bottleneck(egress=e, rtt_ns=rtt, bdp_bytes=e.rate_bps * rtt // 8 // 10**9,
                                streams=load[d], queue_bytes=class_queue(e, cls))
    return FlowView(name=f.name, pattern=f.pattern, cls=f.cls, transport=f.transport,
                    senders=f.src, receivers=f.dst or f.src, transfers=st.transfers,
                    nbytes=st.nbytes, offered_bps=st.offered_bps, pairs=tuple(pairs),
                    bottleneck=bottleneck, line=f.line)


def _class_view(c: TrafficClass, flows: list[Flow], streams: Mapping[str, _Streams],
                shares: Mapping[str, Mapping[Direction, float]],
                egress: Mapping[Direction, Egress], *, control: bool,
                declared: bool) -> ClassView:
    mine = [f for f in flows if f.cls == c.name]
    dirs = sorted({d for f in mine for d in shares[f.name]}) if mine else sorted(egress)
    enforced: dict[str, dict[str, list[str]]] = {}
    for d in dirs:
        for prop, how in enforcement(egress[d], c).items():
            enforced.setdefault(prop, {}).setdefault(how, []).append(egress[d].name)
    pfc = tuple(dict.fromkeys(
        egress[d].pfc for d in sorted(egress) if c.lossless and egress[d].pfc is not None))
    offers = [streams[f.name].offered_bps for f in mine]
    return ClassView(
        cls=c, pfc=tuple(p for p in pfc if p is not None), control=control, declared=declared,
        flows=tuple(f.name for f in mine),
        transports=tuple(dict.fromkeys(f.transport for f in mine)),
        offered_bps=None if any(o is None for o in offers) else sum(o or 0.0 for o in offers),
        enforced={p: {how: tuple(ds) for how, ds in by.items()} for p, by in enforced.items()})


# ---- warnings -------------------------------------------------------------------------------


def _some(names: Iterable[str], n: int = 3) -> str:
    names = list(names)
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _warnings(topo: Topology, class_views: list[ClassView], flow_views: list[FlowView],
              flows: list[Flow], streams: Mapping[str, _Streams],
              shares: Mapping[str, Mapping[Direction, float]],
              egress: Mapping[Direction, Egress], uses: Mapping[Direction, tuple[str, ...]],
              routes: _Routes) -> list[Warning]:
    out: list[Warning] = []
    where = "there are no RoCE switches (`switches:`)" if topo.switches is None else (
        "switches.pfc is off" if not topo.switches.pfc else "no RoCE switch is on its paths")
    for v in class_views:
        c = v.cls
        at = f"class {c.name}" + (f" (line {c.line})" if c.line else "")
        used = [d for f in flows if f.cls == c.name for d in shares[f.name]] or list(egress)
        # lossless with nothing to enforce it
        if c.lossless and not any(egress[d].lossless for d in used):
            out.append(Warning("lossless-unenforced", f"{at} is lossless, but nothing on its "
                               f"paths enforces PFC: {where}; its packets are dropped at the "
                               "tail of a full link queue like any other class's (plain links "
                               "drop at the tail, in a class queue or a FIFO; only RoCE "
                               "switches pause): add a `switches:` section with `pfc: true`, "
                               "or do not count on no drops", cls=c.name))
        if c.red is not None:
            kmin, kmax, pmax = c.red
            marking = [egress[d] for d in dict.fromkeys(used)
                       if egress[d].per_class and egress[d].ecn]
            if not marking:
                out.append(Warning("ecn-unenforced", f"{at} asks for ECN marking from "
                                   f"{format_size(kmin)} to {format_size(kmax)}, but nothing "
                                   "on its paths marks by class (RoCE switches and shaped "
                                   "links do): its ECN thresholds do nothing here",
                                   cls=c.name))
            over = []
            for e in marking:
                limit = class_queue(e, c)
                if kmax > limit:
                    over.append((e, limit))
            if over:
                e, limit = min(over, key=lambda el: el[1])
                what = ("it never marks there: the queue is full before kmin" if kmin >= limit
                        else f"marking never reaches its kmax (it marks at most "
                             f"{pmax * (limit - kmin) / max(1, kmax - kmin):.0%} of packets "
                             "before the queue is full)")
                out.append(Warning("ecn-above-queue", f"{at}'s ECN thresholds (kmin "
                                   f"{format_size(kmin)}, kmax {format_size(kmax)}) exceed "
                                   f"the queue it gets at {e.name} ({e.queue}, "
                                   f"{format_size(limit)}"
                                   + (f", and {len(over) - 1} more egresses" if len(over) > 1
                                      else "") + f"): {what}", cls=c.name))
        if c.strict:
            out.extend(_starving(v, flows, streams, shares, egress, uses))
    out.extend(_overloaded(flow_views))
    out.extend(_fifo_shared(class_views, egress, uses))
    out.extend(_collisions(topo, class_views, flows, streams, routes))
    return out


def _starving(v: ClassView, flows: list[Flow], streams: Mapping[str, _Streams],
              shares: Mapping[str, Mapping[Direction, float]],
              egress: Mapping[Direction, Egress],
              uses: Mapping[Direction, tuple[str, ...]]) -> list[Warning]:
    """A strict class whose offered load on a per-class egress it shares with other classes
    reaches the egress's rate: served first, it can take the whole port."""
    c = v.cls
    offered: dict[Direction, float] = {}
    for f in flows:
        if f.cls != c.name:
            continue
        rate = streams[f.name].offered_bps
        for d, s in shares[f.name].items():
            if rate is None:  # back to back: as fast as the path allows
                offered[d] = math.inf
            else:
                offered[d] = offered.get(d, 0.0) + rate * s / max(1, len(streams[f.name].pairs))
    hit = [(d, o) for d, o in offered.items()
           if (e := egress[d]).per_class and e.rate_bps and o >= e.rate_bps
           and any(x != c.name for x in uses.get(d, ()))]
    if not hit:
        return []
    # the most loaded per bit of rate; on a tie the slower, then one into a receiver
    receivers = {dst for f in flows if f.cls == c.name for _, dst in streams[f.name].pairs}
    d, o = max(hit, key=lambda x: (x[1] / (egress[x[0]].rate_bps or 1),
                                   -(egress[x[0]].rate_bps or 0), x[0][1] in receivers))
    e = egress[d]
    others = [x for x in uses.get(d, ()) if x != c.name]
    load = ("sends back to back (as fast as its path allows)" if math.isinf(o)
            else f"offers {format_rate(round(o))}")
    return [Warning("strict-starves", f"class {c.name} is strict priority (served before every "
                    f"other class) and {load} at {e.name} ({format_rate(e.rate_bps)}, "
                    f"{e.queue}): at that load it takes the whole port, and class"
                    f"{'es' if len(others) > 1 else ''} {', '.join(others)} behind it there "
                    "get nothing until it stops"
                    + (f" ({len(hit) - 1} more egresses alike)" if len(hit) > 1 else ""),
                    cls=c.name)]


def _overloaded(flow_views: list[FlowView]) -> list[Warning]:
    """An open-loop flow whose arrivals bring more bytes per second than its bottleneck
    carries: every request waits behind the last, and latency grows through the run."""
    out = []
    for v in flow_views:
        b = v.bottleneck
        if v.offered_bps is None or b is None or not b.egress.rate_bps or not v.pairs:
            continue
        there = v.offered_bps * b.streams / len(v.pairs)  # streams share the load evenly
        if there <= b.egress.rate_bps:
            continue
        out.append(Warning("overloaded", f"flow {v.name} (class {v.cls}) offers "
                           f"{format_rate(round(there))} at its bottleneck {b.egress.name} "
                           f"({format_rate(b.egress.rate_bps)}), "
                           f"{there / b.egress.rate_bps:.1f}x what it carries: each request "
                           "waits behind the ones before it, so latency grows through the "
                           "run (lower `rate:` or move fewer bytes per request)",
                           cls=v.cls, flow=v.name))
    return out


def _fifo_shared(class_views: list[ClassView], egress: Mapping[Direction, Egress],
                 uses: Mapping[Direction, tuple[str, ...]]) -> list[Warning]:
    """Classes with different settings that wait in one FIFO queue: there they differ only
    in the DSCP byte."""
    settings = {v.cls.name: (v.cls.priority, v.cls.strict, v.cls.weight) for v in class_views}
    shared = [d for d, names in sorted(uses.items())
              if not egress[d].per_class and len({settings.get(n) for n in names}) > 1]
    if not shared:
        return []
    names = sorted({n for d in shared for n in uses[d]},
                   key=lambda n: list(settings).index(n) if n in settings else 0)
    return [Warning("fifo-shared", f"classes {', '.join(names)} share one FIFO queue on "
                    f"{len(shared)} link direction{'s' if len(shared) > 1 else ''} ("
                    f"{_some(egress[d].name for d in shared)}): there their priority, strict "
                    "and weight do nothing and they differ only in the DSCP byte; links with "
                    "a `rate:` and RoCE switches (`switches:`) queue by class")]


def _collisions(topo: Topology, class_views: list[ClassView], flows: list[Flow],
                streams: Mapping[str, _Streams], routes: _Routes) -> list[Warning]:
    """Per class: few streams hashed over many equal-cost paths. Each stream (one connection
    or queue pair per peer and class) takes one path for its life, drawn evenly; streams are
    grouped by how many equal-cost paths they have (a leaf-spine's inter-leaf pairs all have
    one per spine). With k streams on n paths: fewer than n leave paths idle for sure, and
    two share one with P(shared); else some path gets more than its share with P(uneven)
    and some path carries none with P(idle). Warned for 2 <= k <= 2n, once per class (its
    first group by path count)."""
    out = []
    for v in class_views:
        pairs = sorted({p for f in flows if f.cls == v.cls.name for p in streams[f.name].pairs})
        groups: dict[int, list[tuple[str, str]]] = {}
        for src, dst in pairs:
            n = routes.count(src, dst)[1]
            if n > 1:
                groups.setdefault(n, []).append((src, dst))
        for n, group in sorted(groups.items()):
            k = len(group)
            if not 2 <= k <= 2 * n:
                continue
            named = _some((f"{s} -> {d}" for s, d in group), 2)
            if k < n:
                shared = 1 - math.prod(1 - i / n for i in range(k))
                odds = (f"at most {k} of the {n} paths carry anything, and two streams "
                        f"share one with probability {shared:.0%}")
            else:
                idle = sum((-1) ** (j + 1) * math.comb(n, j) * (1 - j / n) ** k
                           for j in range(1, n))
                fair = -(-k // n)
                uneven = 1 - _at_most_each(k, n, fair) / n ** k
                odds = (f"some path gets more than {fair} of them with probability "
                        f"{uneven:.0%} and some path carries none with probability {idle:.0%}")
            out.append(Warning(
                "ecmp-collisions", f"class {v.cls.name}: {k} streams ({named}) over {n} "
                "equal-cost paths: ECMP hashes each stream onto one path for its life, so "
                f"with so few {odds} (likely ECMP collisions: one path busy, another idle); "
                "more streams (flows, RoCE queue pairs) spread better", cls=v.cls.name))
            break
    return out


def _at_most_each(k: int, n: int, m: int) -> int:
    """Ways to put k distinct streams on n paths with at most m on each."""
    ways = [1] + [0] * k  # ways[t]: t streams on the paths so far
    for _ in range(n):
        ways = [sum(math.comb(t, a) * ways[t - a] for a in range(min(m, t) + 1))
                for t in range(k + 1)]
    return ways[k]
