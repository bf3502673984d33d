"""The one breadth-first search over the link graph: hops, equal-cost path counts, the first
path in the neighbours' order, and a search restricted by its neighbour function."""

from __future__ import annotations

import pytest

from fabric.topology.graph import adjacency, search
from fabric.topology.model import Link, Shape


def _links(*pairs: str) -> list[Link]:
    return [Link(a, b, Shape(), Shape()) for a, b in (p.split("-") for p in pairs)]


# a diamond (s -> x|y -> t) with a tail t -> u, and a node z alone
LINKS = _links("s-y", "s-x", "x-t", "y-t", "t-u")


def test_adjacency_keeps_link_order_and_both_directions() -> None:
    assert adjacency(LINKS) == {"s": ["y", "x"], "y": ["s", "t"], "x": ["s", "t"],
                                "t": ["x", "y", "u"], "u": ["t"]}


def test_hops_and_equal_cost_paths() -> None:
    adj = adjacency(LINKS)
    found = search("s", lambda n: adj.get(n, ()))
    assert found.hops == {"s": 0, "y": 1, "x": 1, "t": 2, "u": 3}
    assert found.paths == {"s": 1, "y": 1, "x": 1, "t": 2, "u": 2}


def test_the_first_path_follows_the_neighbour_order() -> None:
    adj = adjacency(LINKS)
    assert search("s", lambda n: adj.get(n, ())).path("u") == ["s", "y", "t", "u"]
    assert search("s", lambda n: sorted(adj.get(n, ()))).path("u") == ["s", "x", "t", "u"]
    assert search("s", lambda n: adj.get(n, ())).path("s") == ["s"]
    with pytest.raises(KeyError, match="no path from s to z"):
        search("s", lambda n: adj.get(n, ())).path("z")


def test_a_restricted_search_stops_where_its_neighbours_do() -> None:
    """As the memory switches' next hops: only `s` and `x` forward."""
    adj = adjacency(LINKS)
    found = search("s", lambda n: adj.get(n, ()) if n in ("s", "x") else ())
    assert found.hops == {"s": 0, "y": 1, "x": 1, "t": 2}
    assert found.path("t") == ["s", "x", "t"]  # not through y, which does not forward
