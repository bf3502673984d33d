"""Transfer graphs: which node sends how many bytes to which, and what each send waits for.

A `Transfer` may start only after every one of its `deps` has fully arrived at its destination.
That is the one dependency rule: it models "this node needs that data before it can send"
(a ring step needs the previous step's chunk, a pipeline stage needs its input activations).
Compute time between receiving and sending is not modelled; a plan is the communication
skeleton a compiler lays out around the compute.

Pure data: no clocks, no I/O. Everything is validated when it is built, so the compiler and the
verifier can assume a well-formed DAG.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from fabric.errors import FabricError

__all__ = ["Transfer", "TransferGraph", "attention_ffn", "pipeline", "tp_allreduce"]


@dataclass(frozen=True, slots=True)
class Transfer:
    """`nbytes` from `src` to `dst`, which may start once every transfer in `deps` has arrived."""

    id: int
    src: str
    dst: str
    nbytes: int
    deps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.nbytes, bool) or not isinstance(self.nbytes, int) or self.nbytes < 1:
            raise FabricError(f"transfer {self.id}: nbytes must be a positive integer, "
                              f"got {self.nbytes!r}")
        if not isinstance(self.deps, tuple):
            object.__setattr__(self, "deps", tuple(self.deps))


@dataclass(frozen=True)
class TransferGraph:
    """A named DAG of transfers between `nodes`. Validated on construction.

    Raises `FabricError` naming the transfer for an unknown node, a transfer to itself, a
    duplicate id, a dependency on an unknown id, or a dependency cycle.
    """

    name: str
    nodes: tuple[str, ...]
    transfers: tuple[Transfer, ...]
    _by_id: dict[int, Transfer] = field(init=False, repr=False, compare=False)
    _order: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "transfers", tuple(self.transfers))
        seen_nodes: set[str] = set()
        for n in self.nodes:
            if n in seen_nodes:
                raise FabricError(f"graph {self.name}: node {n!r} is listed twice")
            seen_nodes.add(n)
        by_id: dict[int, Transfer] = {}
        for t in self.transfers:
            if t.id in by_id:
                raise FabricError(f"graph {self.name}: transfer id {t.id} is used twice")
            by_id[t.id] = t
            for end in (t.src, t.dst):
                if end not in seen_nodes:
                    raise FabricError(f"graph {self.name}: transfer {t.id} "
                                      f"({t.src} -> {t.dst}): unknown node {end!r}")
            if t.src == t.dst:
                raise FabricError(f"graph {self.name}: transfer {t.id} sends from {t.src} "
                                  f"to itself; drop it or pick another destination")
        for t in self.transfers:
            for d in t.deps:
                if d not in by_id:
                    raise FabricError(f"graph {self.name}: transfer {t.id} depends on "
                                      f"unknown transfer {d}")
                if d == t.id:
                    raise FabricError(f"graph {self.name}: transfer {t.id} depends on itself")
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_order", self._toposort(by_id))

    def _toposort(self, by_id: dict[int, Transfer]) -> tuple[int, ...]:
        """Kahn's algorithm, lowest id first among the ready ones; names a cycle if there is one."""
        indeg = {tid: len(set(t.deps)) for tid, t in by_id.items()}
        users: dict[int, list[int]] = {tid: [] for tid in by_id}
        for t in by_id.values():
            for d in set(t.deps):
                users[d].append(t.id)
        ready = [tid for tid, n in indeg.items() if n == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            tid = heapq.heappop(ready)
            order.append(tid)
            for u in users[tid]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    heapq.heappush(ready, u)
        if len(order) != len(by_id):
            stuck = {tid for tid, n in indeg.items() if n > 0}
            cycle = _find_cycle(by_id, stuck)
            path = " -> ".join(str(c) for c in cycle)
            raise FabricError(f"graph {self.name}: transfer {cycle[0]} is in a dependency "
                              f"cycle ({path}); a transfer cannot wait for itself")
        return tuple(order)

    def transfer(self, tid: int) -> Transfer:
        """The transfer with id `tid` (KeyError if there is none)."""
        return self._by_id[tid]

    def topological_order(self) -> tuple[int, ...]:
        """Transfer ids, every one after all its deps; lowest id first among ties."""
        return self._order

    @property
    def total_bytes(self) -> int:
        """Bytes over all transfers."""
        return sum(t.nbytes for t in self.transfers)


def _find_cycle(by_id: dict[int, Transfer], stuck: set[int]) -> list[int]:
    """One dependency cycle among `stuck` (ids Kahn could not order), as [a, b, ..., a]."""
    start = min(stuck)
    seen: dict[int, int] = {}
    walk: list[int] = []
    cur = start
    # Every stuck transfer has at least one stuck dep, so walking deps must revisit a node.
    while cur not in seen:
        seen[cur] = len(walk)
        walk.append(cur)
        cur = min(d for d in by_id[cur].deps if d in stuck)
    cycle = walk[seen[cur]:]
    return [*cycle, cur]


def _check_nodes(what: str, nodes: Sequence[str], minimum: int) -> tuple[str, ...]:
    nodes = tuple(nodes)
    if len(nodes) < minimum:
        raise FabricError(f"{what}: needs at least {minimum} nodes, got {len(nodes)}")
    if len(set(nodes)) != len(nodes):
        raise FabricError(f"{what}: nodes must be distinct, got {list(nodes)}")
    return nodes


def _check_positive(what: str, name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FabricError(f"{what}: {name} must be a positive integer, got {value!r}")


def tp_allreduce(nodes: Sequence[str], nbytes: int, *, name: str = "tp-allreduce"
                 ) -> TransferGraph:
    """A ring all-reduce of `nbytes` per node: reduce-scatter then all-gather.

    2(N-1) steps; in each, node i sends one chunk of ceil(nbytes / N) bytes to node i+1 (ring
    order of `nodes`). Step k's send from node i depends on step k-1's send *to* node i, i.e.
    it needs the partial sum (or gathered chunk) that just arrived. Transfer id = k * N + i.
    """
    nodes = _check_nodes(name, nodes, 2)
    _check_positive(name, "nbytes", nbytes)
    n = len(nodes)
    chunk = -(-nbytes // n)
    transfers = []
    for k in range(2 * (n - 1)):
        for i in range(n):
            deps = ((k - 1) * n + (i - 1) % n,) if k > 0 else ()
            transfers.append(Transfer(k * n + i, nodes[i], nodes[(i + 1) % n], chunk, deps))
    return TransferGraph(name, nodes, tuple(transfers))


def pipeline(nodes: Sequence[str], nbytes: int, microbatches: int, *, name: str = "pipeline"
             ) -> TransferGraph:
    """Layer-wise pipeline activations: stage i sends microbatch m to stage i+1.

    `nodes` are the stages in order; each hop carries `nbytes` of activations. Stage i sends
    microbatch m once it has received m from stage i-1 (stage 0 holds every microbatch at
    the start). (S-1) * microbatches transfers; id = m * (S-1) + i.
    """
    nodes = _check_nodes(name, nodes, 2)
    _check_positive(name, "nbytes", nbytes)
    _check_positive(name, "microbatches", microbatches)
    hops = len(nodes) - 1
    transfers = []
    for m in range(microbatches):
        for i in range(hops):
            deps = (m * hops + i - 1,) if i > 0 else ()
            transfers.append(Transfer(m * hops + i, nodes[i], nodes[i + 1], nbytes, deps))
    return TransferGraph(name, nodes, tuple(transfers))


def attention_ffn(attn_nodes: Sequence[str], ffn_nodes: Sequence[str], tokens: int,
                  nbytes_per_token: int, *, name: str = "attention-ffn") -> TransferGraph:
    """Attention-FFN disaggregated decode: per token, activations go out to FFN and come back.

    For token t: every attention node sends `nbytes_per_token` to every FFN node (dispatch);
    an FFN node returns `nbytes_per_token` to every attention node once it has all of token t's
    dispatches (it needs the whole token's input); an attention node dispatches token t+1 once
    every FFN node's return of token t has reached it. Per token A*F dispatches then F*A
    returns; dispatch (t, a, f) has id t*2AF + a*F + f, return (t, f, a) t*2AF + AF + f*A + a.
    """
    attn = _check_nodes(name, attn_nodes, 1)
    ffn = _check_nodes(name, ffn_nodes, 1)
    overlap = sorted(set(attn) & set(ffn))
    if overlap:
        raise FabricError(f"{name}: nodes {overlap} are both attention and FFN nodes; "
                          f"disaggregation needs separate node sets")
    _check_positive(name, "tokens", tokens)
    _check_positive(name, "nbytes_per_token", nbytes_per_token)
    na, nf = len(attn), len(ffn)
    per_token = 2 * na * nf

    def dispatch(t: int, a: int, f: int) -> int:
        return t * per_token + a * nf + f

    def ret(t: int, f: int, a: int) -> int:
        return t * per_token + na * nf + f * na + a

    transfers = []
    for t in range(tokens):
        for a in range(na):
            deps = tuple(ret(t - 1, f, a) for f in range(nf)) if t > 0 else ()
            for f in range(nf):
                transfers.append(Transfer(dispatch(t, a, f), attn[a], ffn[f], nbytes_per_token,
                                          deps))
        for f in range(nf):
            deps = tuple(dispatch(t, a, f) for a in range(na))
            for a in range(na):
                transfers.append(Transfer(ret(t, f, a), ffn[f], attn[a], nbytes_per_token, deps))
    return TransferGraph(name, attn + ffn, tuple(transfers))
