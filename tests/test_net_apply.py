"""How bring-up splits a plan's steps over worker processes (`fabric.net.apply`), without a
kernel: the first phase makes every namespace and every object across two namespaces; each
namespace's other steps go to one worker, in plan order."""

from __future__ import annotations

from fabric.net.apply import split_steps
from fabric.plan import AddNamespace, AddVeth, plan_fabric
from fabric.topology import parse_topology

LEAF_SPINE = "name: s\ngenerate:\n  - leaf_spine: {spines: 2, leaves: 3, hosts_per_leaf: 4}\n"
PAIRS = "name: p\nnodes: {a: {}, b: {}, c: {}}\nlinks: [{endpoints: [a, b]}, {endpoints: [b, c]}]\n"


def _check(steps, workers: int) -> None:  # noqa: ANN001
    first, shares = split_steps(steps, workers)
    assert len(shares) <= workers
    assert sorted(map(repr, first + [s for share in shares for s in share])) == \
        sorted(map(repr, steps))
    assert first == [s for s in steps if isinstance(s, AddNamespace | AddVeth)]
    owner: dict[str, int] = {}
    for i, share in enumerate(shares):
        for s in share:
            assert owner.setdefault(s.netns, i) == i  # a namespace's steps in one worker
    for ns in owner:  # ... in the plan's order
        mine = [s for s in steps if not isinstance(s, AddNamespace | AddVeth)
                and s.netns == ns]
        assert [s for s in shares[owner[ns]] if s.netns == ns] == mine


def test_userspace_plan_splits_by_namespace_in_plan_order() -> None:
    plan = plan_fabric(parse_topology(LEAF_SPINE), backend="userspace")
    for workers in (1, 2, 3, 4):
        _check(plan.steps, workers)
    first, shares = split_steps(plan.steps, 2)
    sizes = sorted(len(s) for s in shares)
    assert sizes[1] - sizes[0] <= max(len([s for s in plan.steps if s.netns == ns])
                                      for ns in plan.namespaces)  # dealt evenly


def test_veth_pairs_are_made_before_any_worker_starts() -> None:
    plan = plan_fabric(parse_topology(PAIRS), backend="netem")
    first, _ = split_steps(plan.steps, 2)
    assert sum(isinstance(s, AddVeth) for s in first) == 2
    _check(plan.steps, 2)
