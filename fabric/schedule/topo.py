"""LPU scale-up topologies: point-to-point chip-to-chip links and deterministic routes.

A link joins two LPUs and is full duplex: direction 0 carries a -> b, direction 1 carries
b -> a, and each direction is its own channel with its own slots. Routes are shortest paths by
hop count (every hop costs one slot plus the link delay, and C2C delays are alike), with ties
broken by the lowest next-hop name in natural order (`lpu-2` before `lpu-10`) and, between
parallel links, the lowest link id, so a topology always routes the same way.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fabric.errors import FabricError

__all__ = ["LpuLink", "LpuTopology", "mesh", "natural_key", "ring", "torus"]

A_TO_B = 0
B_TO_A = 1


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digit runs as numbers: lpu-2 < lpu-10."""
    return tuple((0, int(p)) if p.isdigit() else (1, p)
                 for p in re.split(r"(\d+)", name) if p != "")


@dataclass(frozen=True, slots=True)
class LpuLink:
    """A full-duplex C2C link between LPUs `a` and `b`: `rate_bps` and `delay_ns` each way."""

    id: str
    a: str
    b: str
    rate_bps: int
    delay_ns: int

    def __post_init__(self) -> None:
        if self.a == self.b:
            raise FabricError(f"link {self.id}: joins {self.a} to itself")
        if isinstance(self.rate_bps, bool) or not isinstance(self.rate_bps, int) \
                or self.rate_bps < 1:
            raise FabricError(f"link {self.id}: rate_bps must be a positive integer, "
                              f"got {self.rate_bps!r}")
        if isinstance(self.delay_ns, bool) or not isinstance(self.delay_ns, int) \
                or self.delay_ns < 0:
            raise FabricError(f"link {self.id}: delay_ns must be an integer >= 0, "
                              f"got {self.delay_ns!r}")

    def ends(self, direction: int) -> tuple[str, str]:
        """(sender, receiver) of one direction: 0 is a -> b, 1 is b -> a."""
        if direction == A_TO_B:
            return self.a, self.b
        if direction == B_TO_A:
            return self.b, self.a
        raise FabricError(f"link {self.id}: direction must be 0 (a->b) or 1 (b->a), "
                          f"got {direction!r}")


@dataclass(frozen=True)
class LpuTopology:
    """LPUs and the links between them. Validated on construction; routes are cached."""

    nodes: tuple[str, ...]
    links: tuple[LpuLink, ...]
    _links: dict[str, LpuLink] = field(init=False, repr=False, compare=False)
    _adj: dict[str, list[tuple[str, str, int]]] = field(init=False, repr=False, compare=False)
    _dist: dict[str, dict[str, int]] = field(init=False, repr=False, compare=False)
    _paths: dict[tuple[str, str], tuple[tuple[str, int], ...]] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "links", tuple(self.links))
        if len(set(self.nodes)) != len(self.nodes):
            dup = sorted({n for n in self.nodes if self.nodes.count(n) > 1})
            raise FabricError(f"topology: nodes {dup} are listed twice")
        known = set(self.nodes)
        links: dict[str, LpuLink] = {}
        adj: dict[str, list[tuple[str, str, int]]] = {n: [] for n in self.nodes}
        for link in self.links:
            if link.id in links:
                raise FabricError(f"topology: link id {link.id!r} is used twice")
            for end in (link.a, link.b):
                if end not in known:
                    raise FabricError(f"topology: link {link.id}: unknown node {end!r}")
            links[link.id] = link
            adj[link.a].append((link.b, link.id, A_TO_B))
            adj[link.b].append((link.a, link.id, B_TO_A))
        for n in adj:
            adj[n].sort(key=lambda e: (natural_key(e[0]), natural_key(e[1]), e[2]))
        object.__setattr__(self, "_links", links)
        object.__setattr__(self, "_adj", adj)
        object.__setattr__(self, "_dist", {})
        object.__setattr__(self, "_paths", {})

    def link(self, link_id: str) -> LpuLink:
        """The link with this id; FabricError if there is none."""
        try:
            return self._links[link_id]
        except KeyError:
            raise FabricError(f"topology: no link {link_id!r}") from None

    def has_link(self, link_id: str) -> bool:
        """Whether a link with this id exists."""
        return link_id in self._links

    def channels(self) -> list[tuple[str, int]]:
        """Every (link id, direction), in link order."""
        return [(link.id, d) for link in self.links for d in (A_TO_B, B_TO_A)]

    def neighbours(self, node: str) -> list[str]:
        """Distinct neighbours of `node`, in natural name order."""
        out: list[str] = []
        for peer, _, _ in self._adj[node]:
            if not out or out[-1] != peer:
                out.append(peer)
        return out

    def _distances_to(self, dst: str) -> dict[str, int]:
        dist = self._dist.get(dst)
        if dist is None:
            dist = {dst: 0}
            queue = deque([dst])
            while queue:
                cur = queue.popleft()
                for peer, _, _ in self._adj[cur]:
                    if peer not in dist:
                        dist[peer] = dist[cur] + 1
                        queue.append(peer)
            self._dist[dst] = dist
        return dist

    def path(self, src: str, dst: str) -> list[tuple[str, int]]:
        """Shortest route from `src` to `dst` as [(link id, direction), ...].

        Deterministic: at each hop the lowest next-hop name (natural order) among those one hop
        closer, then the lowest link id among parallel links. FabricError if unreachable.
        """
        key = (src, dst)
        cached = self._paths.get(key)
        if cached is not None:
            return list(cached)
        for end in (src, dst):
            if end not in self._adj:
                raise FabricError(f"topology: unknown node {end!r}")
        if src == dst:
            raise FabricError(f"topology: no path from {src} to itself")
        dist = self._distances_to(dst)
        if src not in dist:
            raise FabricError(f"topology: {dst} is unreachable from {src}; "
                              f"add a link between their components")
        hops: list[tuple[str, int]] = []
        cur = src
        while cur != dst:
            want = dist[cur] - 1
            # _adj is sorted by (peer name, link id), so the first match is the tie-break winner.
            for peer, link_id, direction in self._adj[cur]:
                if dist.get(peer) == want:
                    hops.append((link_id, direction))
                    cur = peer
                    break
        self._paths[key] = tuple(hops)
        return hops


def _names(n: int, prefix: str) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def _check(what: str, n: int, minimum: int, rate_bps: int, delay_ns: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise FabricError(f"{what}: needs at least {minimum} nodes, got {n!r}")
    del rate_bps, delay_ns  # checked by LpuLink


def _build(names: Sequence[str], pairs: Iterable[tuple[int, int]], rate_bps: int,
           delay_ns: int) -> LpuTopology:
    seen: set[tuple[int, int]] = set()
    links = []
    for i, j in pairs:
        lo, hi = min(i, j), max(i, j)
        if lo == hi or (lo, hi) in seen:
            continue
        seen.add((lo, hi))
        links.append(LpuLink(f"{names[lo]}--{names[hi]}", names[lo], names[hi], rate_bps,
                             delay_ns))
    return LpuTopology(tuple(names), tuple(links))


def mesh(n: int, rate_bps: int, delay_ns: int, prefix: str = "lpu") -> LpuTopology:
    """Full mesh of `n` LPUs: one direct link between every pair (ids `lpu-0--lpu-1`)."""
    _check("mesh", n, 2, rate_bps, delay_ns)
    return _build(_names(n, prefix), ((i, j) for i in range(n) for j in range(i + 1, n)),
                  rate_bps, delay_ns)


def ring(n: int, rate_bps: int, delay_ns: int, prefix: str = "lpu") -> LpuTopology:
    """`n` LPUs in a ring: lpu-i joins lpu-(i+1 mod n). Two LPUs share a single link."""
    _check("ring", n, 2, rate_bps, delay_ns)
    return _build(_names(n, prefix), ((i, (i + 1) % n) for i in range(n)), rate_bps, delay_ns)


def torus(rows: int, cols: int, rate_bps: int, delay_ns: int, prefix: str = "lpu"
          ) -> LpuTopology:
    """A rows x cols 2-D torus with wraparound; lpu-(r*cols + c) sits at row r, column c.

    A dimension of size 2 gets one link (not two parallel ones); of size 1, none.
    """
    for what, v in (("rows", rows), ("cols", cols)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise FabricError(f"torus: {what} must be a positive integer, got {v!r}")
    _check("torus", rows * cols, 2, rate_bps, delay_ns)
    pairs = []
    for r in range(rows):
        for c in range(cols):
            here = r * cols + c
            pairs.append((here, r * cols + (c + 1) % cols))
            pairs.append((here, ((r + 1) % rows) * cols + c))
    return _build(_names(rows * cols, prefix), pairs, rate_bps, delay_ns)
