"""Compile a transfer graph into a conflict-free plan of fixed-size vectors on LPU links.

Time on every link direction is cut into slots; one slot carries one batch of `batch_vectors`
vectors of `vector_bytes` (320 B, the LPU's unit of compute and of C2C transfer), so
`slot_ns = ceil(batch_vectors * vector_bytes * 8 / rate_bps * 1e9)`. Each transfer is cut into
ceil(nbytes / batch bytes) batches and each batch is routed hop by hop along the topology's
shortest path, store-and-forward: a hop leaves once the previous hop has fully arrived.

Rules every plan keeps (and `verify` checks independently):

- a send occupies its link direction for [depart, depart + slot_ns + guard_ns); no two overlap;
- hop h+1 departs no earlier than hop h's arrival + guard_ns (arrive = depart + slot + delay);
- a transfer's batches depart no earlier than the last arrival of every dependency + guard_ns.

The guard band is what lets nodes with their own drifting clocks execute the plan without
collisions: it must cover the drift two clocks can build up between resyncs (see
`required_guard_ns`).

Scheduling is greedy list scheduling: transfers are taken in dependency order, earliest-ready
first (ties by id); each batch, in order, takes on each hop the earliest gap that fits
(gaps left by earlier transfers are filled). Each channel keeps its busy time as sorted,
merged intervals, so a placement is a bisect plus a short walk: O(sends x log sends) in
practice, about a second for 100k sends. Routes are single-path (no striping of one transfer
over several routes): determinism and a short verifier matter more here than the last few
percent of makespan on a torus.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field

from fabric.errors import FabricError
from fabric.schedule.clock import required_guard_ns
from fabric.schedule.graph import TransferGraph
from fabric.schedule.topo import LpuTopology, natural_key

__all__ = [
    "VECTOR_BYTES",
    "Plan",
    "Send",
    "compile_plan",
    "lower_bound_ns",
    "slot_ns_for",
]

VECTOR_BYTES = 320
"""Bytes in one LPU vector: the unit the compiler moves between chips."""


@dataclass(frozen=True, slots=True)
class Send:
    """One batch of one transfer crossing one hop: `link` in `direction` from `src` to `dst`."""

    transfer: int
    batch: int
    hop: int
    link: str
    direction: int
    src: str
    dst: str
    depart_ns: int
    arrive_ns: int


@dataclass(frozen=True)
class Plan:
    """A compiled schedule: every send, ordered by (depart_ns, link, direction, transfer, batch,
    hop), links in natural name order (lpu-2 before lpu-10).

    `slot_ns` maps each link id of the topology to its slot length; the time a send holds its
    link direction is slot_ns[link] + guard_ns. `makespan_ns` is the last arrival (plans start
    at 0). The clock settings the guard was checked against are kept so `verify` can recheck.
    """

    name: str
    sends: tuple[Send, ...]
    slot_ns: dict[str, int]
    guard_ns: int
    makespan_ns: int
    vector_bytes: int
    batch_vectors: int
    drift_ppm: float = 0.0
    resync_period_ns: int | None = None
    offset_ns: int = 0
    _by_channel: dict[tuple[str, int], tuple[Send, ...]] | None = field(
        default=None, init=False, repr=False, compare=False)

    @property
    def batch_bytes(self) -> int:
        """Bytes one slot carries."""
        return self.vector_bytes * self.batch_vectors

    def __iter__(self) -> Iterator[Send]:
        return iter(self.sends)

    def __len__(self) -> int:
        return len(self.sends)

    def by_channel(self) -> dict[tuple[str, int], tuple[Send, ...]]:
        """Sends per (link id, direction), each in departure order; only channels in use."""
        if self._by_channel is None:
            groups: dict[tuple[str, int], list[Send]] = {}
            for s in self.sends:
                groups.setdefault((s.link, s.direction), []).append(s)
            order = sorted(groups, key=lambda k: (natural_key(k[0]), k[1]))
            out = {k: tuple(sorted(groups[k], key=lambda s: s.depart_ns)) for k in order}
            object.__setattr__(self, "_by_channel", out)
        assert self._by_channel is not None
        return self._by_channel

    def busy_ns(self) -> dict[tuple[str, int], int]:
        """Slot time (guard excluded) each used link direction spends transmitting."""
        return {ch: len(ss) * self.slot_ns[ch[0]] for ch, ss in self.by_channel().items()}

    def utilisation(self) -> dict[tuple[str, int], float]:
        """busy_ns / makespan_ns per used link direction (0 for an empty plan)."""
        if self.makespan_ns <= 0:
            return {ch: 0.0 for ch in self.by_channel()}
        return {ch: b / self.makespan_ns for ch, b in self.busy_ns().items()}


def slot_ns_for(rate_bps: int, vector_bytes: int = VECTOR_BYTES, batch_vectors: int = 1) -> int:
    """ceil(batch_vectors * vector_bytes * 8 / rate_bps * 1e9), in exact integer arithmetic."""
    bits = batch_vectors * vector_bytes * 8
    return -(-bits * 1_000_000_000 // rate_bps)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FabricError(f"compile_plan: {name} must be an integer >= {minimum}, "
                          f"got {value!r}")
    return value


def _check_nodes(graph: TransferGraph, topo: LpuTopology) -> None:
    known = set(topo.nodes)
    for t in graph.transfers:
        for end in (t.src, t.dst):
            if end not in known:
                raise FabricError(f"graph {graph.name}: transfer {t.id} ({t.src} -> {t.dst}): "
                                  f"node {end!r} is not an LPU of the topology")


class _Channel:
    """Busy time of one link direction: sorted, disjoint, merged [start, end) intervals."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def place(self, ready: int, width: int) -> int:
        """Reserve the earliest [t, t + width) with t >= ready that is free; return t."""
        starts, ends = self.starts, self.ends
        i = bisect_right(starts, ready) - 1
        t = ready
        if i >= 0 and ends[i] > t:
            t = ends[i]
        j = i + 1
        n = len(starts)
        while j < n and starts[j] < t + width:
            t = max(t, ends[j])
            j += 1
        stop = t + width
        # Every interval before j ends at or before t; every one from j starts at or after stop.
        if j > 0 and ends[j - 1] == t:
            if j < n and starts[j] == stop:
                ends[j - 1] = ends[j]
                del starts[j], ends[j]
            else:
                ends[j - 1] = stop
        elif j < n and starts[j] == stop:
            starts[j] = t
        else:
            starts.insert(j, t)
            ends.insert(j, stop)
        return t


def compile_plan(graph: TransferGraph, topo: LpuTopology, *, vector_bytes: int = VECTOR_BYTES,
                 batch_vectors: int = 1, guard_ns: int | None = 0, drift_ppm: float = 0.0,
                 resync_period_ns: int | None = None, offset_ns: int = 0) -> Plan:
    """Schedule every transfer of `graph` on `topo` as slots of `batch_vectors` vectors.

    `guard_ns` pads every slot and every hand-off; it must be at least
    `required_guard_ns(drift_ppm, resync_period_ns, offset_ns)` (FabricError names the minimum);
    None means exactly that minimum. Deterministic: the same inputs give the same plan.
    """
    _check_int("vector_bytes", vector_bytes, 1)
    _check_int("batch_vectors", batch_vectors, 1)
    _check_int("offset_ns", offset_ns, 0)
    need = required_guard_ns(drift_ppm, resync_period_ns, offset_ns)
    if guard_ns is None:
        guard_ns = need
    _check_int("guard_ns", guard_ns, 0)
    if guard_ns < need:
        period = "no resync" if resync_period_ns is None else f"resync every {resync_period_ns} ns"
        raise FabricError(f"compile_plan: guard_ns={guard_ns} is too small for {drift_ppm} ppm "
                          f"drift with {period} and {offset_ns} ns offset; the minimum is "
                          f"{need} ns (pass guard_ns={need} or guard_ns=None)")
    _check_nodes(graph, topo)

    batch_bytes = vector_bytes * batch_vectors
    slots = {link.id: slot_ns_for(link.rate_bps, vector_bytes, batch_vectors)
             for link in topo.links}
    delays = {link.id: link.delay_ns for link in topo.links}
    rank = {link_id: i for i, link_id in enumerate(sorted(slots, key=natural_key))}
    channels: dict[tuple[str, int], _Channel] = {}
    users: dict[int, list[int]] = {t.id: [] for t in graph.transfers}
    waiting: dict[int, int] = {}
    ready_at: dict[int, int] = {}
    heap: list[tuple[int, int]] = []
    for t in graph.transfers:
        deps = set(t.deps)
        waiting[t.id] = len(deps)
        ready_at[t.id] = 0
        for d in deps:
            users[d].append(t.id)
        if not deps:
            heap.append((0, t.id))
    heapq.heapify(heap)

    raw: list[tuple[int, int, int, int, int, int, str, str, str, int]] = []
    makespan = 0
    while heap:
        ready, tid = heapq.heappop(heap)
        tr = graph.transfer(tid)
        route = []
        for link_id, direction in topo.path(tr.src, tr.dst):
            ch = channels.get((link_id, direction))
            if ch is None:
                ch = channels[(link_id, direction)] = _Channel()
            a, b = topo.link(link_id).ends(direction)
            route.append((link_id, rank[link_id], direction, a, b, slots[link_id],
                          delays[link_id], ch))
        done = 0
        for batch in range(-(-tr.nbytes // batch_bytes)):
            at = ready
            arrive = 0
            for hop, (link_id, r, direction, a, b, slot, delay, ch) in enumerate(route):
                depart = ch.place(at, slot + guard_ns)
                arrive = depart + slot + delay
                raw.append((depart, r, direction, tid, batch, hop, link_id, a, b, arrive))
                at = arrive + guard_ns
            done = max(done, arrive)
        makespan = max(makespan, done)
        for u in users[tid]:
            ready_at[u] = max(ready_at[u], done + guard_ns)
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(heap, (ready_at[u], u))

    raw.sort()
    sends = tuple(Send(tid, batch, hop, link_id, direction, a, b, depart, arrive)
                  for depart, _, direction, tid, batch, hop, link_id, a, b, arrive in raw)
    return Plan(name=graph.name, sends=sends, slot_ns=slots, guard_ns=guard_ns,
                makespan_ns=makespan, vector_bytes=vector_bytes, batch_vectors=batch_vectors,
                drift_ppm=drift_ppm, resync_period_ns=resync_period_ns, offset_ns=offset_ns)


def lower_bound_ns(graph: TransferGraph, topo: LpuTopology, *, vector_bytes: int = VECTOR_BYTES,
                   batch_vectors: int = 1, guard_ns: int = 0) -> int:
    """A makespan no plan of `graph` on `topo` (shortest-path routed) can beat.

    The busiest link direction: its n sends need (n - 1) * (slot + guard) between the first and
    last departure, then the last one's slot and delay. Computed from the graph and routes,
    not from any plan.
    """
    batch_bytes = vector_bytes * batch_vectors
    load: dict[tuple[str, int], int] = {}
    for t in graph.transfers:
        nb = -(-t.nbytes // batch_bytes)
        for hop in topo.path(t.src, t.dst):
            load[hop] = load.get(hop, 0) + nb
    best = 0
    for (link_id, _), n in load.items():
        link = topo.link(link_id)
        slot = slot_ns_for(link.rate_bps, vector_bytes, batch_vectors)
        best = max(best, (n - 1) * (slot + guard_ns) + slot + link.delay_ns)
    return best
