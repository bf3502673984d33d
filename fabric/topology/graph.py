"""The link graph: who neighbours whom, and the one breadth-first search that every hop-count
question of the fabric asks (routes, ECMP path counts, a shortest path, reachability, the
memory switches' next hops). Pure."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Link

__all__ = ["Search", "adjacency", "search"]


def adjacency(links: Sequence[Link]) -> dict[str, list[str]]:
    """Node -> its neighbours over `links`, in link order (a node without links is absent)."""
    adj: dict[str, list[str]] = {}
    for link in links:
        adj.setdefault(link.a, []).append(link.b)
        adj.setdefault(link.b, []).append(link.a)
    return adj


@dataclass
class Search:
    """What a breadth-first search from `start` found: per node reached, its hop count, the
    number of equal-cost shortest paths to it, and the node before it on the first one."""

    start: str
    hops: dict[str, int] = field(default_factory=dict)
    paths: dict[str, int] = field(default_factory=dict)
    prev: dict[str, str | None] = field(default_factory=dict)

    def path(self, dst: str) -> list[str]:
        """The first shortest path found from `start` to `dst` (KeyError if unreached)."""
        if dst not in self.prev:
            raise KeyError(f"no path from {self.start} to {dst}")
        out = [dst]
        while (p := self.prev[out[-1]]) is not None:
            out.append(p)
        return out[::-1]


def search(start: str, neighbours: Callable[[str], Iterable[str]]) -> Search:
    """Breadth-first from `start`, visiting each node's `neighbours(node)` in the order given
    (so the first path found is the one that order prefers)."""
    s = Search(start, {start: 0}, {start: 1}, {start: None})
    hops, paths, prev = s.hops, s.paths, s.prev
    queue = deque([start])
    while queue:
        n = queue.popleft()
        d = hops[n] + 1
        for nb in neighbours(n):
            seen = hops.get(nb)
            if seen is None:
                hops[nb] = d
                paths[nb] = paths[n]
                prev[nb] = n
                queue.append(nb)
            elif seen == d:
                paths[nb] += paths[n]
    return s
