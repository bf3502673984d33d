"""Plan: names, addresses, ECMP routes and steps, computed without a kernel."""

from __future__ import annotations

import pytest

from fabric.checks import backend_warnings, equal_cost_paths, path_summary
from fabric.errors import TopologyError
from fabric.plan import (
    AddNamespace,
    AddRoute,
    AddTun,
    AddVeth,
    SetNetem,
    SetTbf,
    WriteHosts,
    netns_name,
    parse_netns_name,
    plan_fabric,
)
from fabric.topology import parse_topology
from fabric.topology.document import Topology
from fabric.topology.model import Link, Node, Shape
from fabric.topology.model import queue_bytes as default_queue_bytes

MBIT = 1_000_000
MS = 1_000_000


def topo(nodes: dict[str, str], links: list[tuple[str, str, Shape]], **kw) -> Topology:
    return Topology(
        name=kw.pop("name", "t"),
        nodes={n: Node(n, kind=k) for n, k in nodes.items()},
        links=tuple(Link(a, b, s, s) for a, b, s in links),
        **kw,
    )


def leaf_spine(spines: int = 2, leaves: int = 2, hosts_per_leaf: int = 2) -> Topology:
    nodes: dict[str, str] = {}
    links = []
    up = Shape(rate_bps=400 * MBIT, delay_ns=MS // 10)
    down = Shape(rate_bps=100 * MBIT, delay_ns=MS // 20)
    for s in range(spines):
        nodes[f"spine-{s}"] = "switch"
    for leaf in range(leaves):
        nodes[f"leaf-{leaf}"] = "switch"
        for s in range(spines):
            links.append((f"leaf-{leaf}", f"spine-{s}", up))
    for h in range(leaves * hosts_per_leaf):
        nodes[f"host-{h}"] = "host"
        links.append((f"host-{h}", f"leaf-{h // hosts_per_leaf}", down))
    return topo(nodes, links, name="ls")


def test_netns_names_parse_back():
    name = netns_name("leaf-spine", "a1b2c3", "host-0")
    assert name == "fab.leaf-spine.a1b2c3.host-0"
    assert parse_netns_name(name) == ("leaf-spine", "a1b2c3", "host-0")
    assert parse_netns_name("fab.only.three") is None
    assert parse_netns_name("other.x.y.z") is None


def test_pair_addresses_and_devices():
    t = topo({"a": "host", "b": "host"}, [("a", "b", Shape(rate_bps=40 * MBIT, delay_ns=15 * MS))])
    plan = plan_fabric(t, backend="netem", run_id="r1")
    (lp,) = plan.links
    assert (lp.a.address, lp.b.address, lp.a.prefixlen) == ("198.18.0.1", "198.18.0.2", 30)
    assert (lp.a.dev, lp.b.dev) == ("eth0", "eth0")
    assert plan.nodes["a"].loopback == "198.19.0.1"
    assert plan.nodes["b"].loopback == "198.19.0.2"
    assert plan.nodes["a"].netns == "fab.t.r1.a"
    # single-link nodes get one default route via the peer, sourced from their loopback
    routes = {r.netns: r for r in plan.routes}
    assert routes["fab.t.r1.a"] == AddRoute("fab.t.r1.a", "default", (("198.18.0.2", "eth0"),),
                                            "198.19.0.1")


def test_leaf_spine_routes_use_ecmp_across_spines():
    plan = plan_fabric(leaf_spine(), backend="netem", run_id="r")
    leaf0 = plan.nodes["leaf-0"].netns
    host2_lo = plan.nodes["host-2"].loopback  # behind leaf-1
    (route,) = [r for r in plan.routes if r.netns == leaf0 and r.dst == f"{host2_lo}/32"]
    assert len(route.nexthops) == 2  # one via each spine
    assert {dev for _, dev in route.nexthops} == {"eth0", "eth1"}
    # to a host on the same leaf: one hop, no ECMP
    host1_lo = plan.nodes["host-1"].loopback
    (route,) = [r for r in plan.routes if r.netns == leaf0 and r.dst == f"{host1_lo}/32"]
    assert len(route.nexthops) == 1
    # hosts (one uplink) have exactly one default route and nothing else
    host_routes = [r for r in plan.routes if r.netns == plan.nodes["host-0"].netns]
    assert [r.dst for r in host_routes] == ["default"]


def test_every_switch_reaches_every_loopback():
    plan = plan_fabric(leaf_spine(spines=3, leaves=3, hosts_per_leaf=1), backend="netem",
                       run_id="r")
    for n in plan.nodes.values():
        if n.kind != "switch":
            continue
        dsts = {r.dst for r in plan.routes if r.netns == n.netns}
        want = {f"{m.loopback}/32" for m in plan.nodes.values() if m.name != n.name}
        assert dsts == want


def test_steps_per_backend():
    shape = Shape(rate_bps=1000 * MBIT, delay_ns=15 * MS)
    t = topo({"a": "host", "b": "host"}, [("a", "b", shape)])
    netem = plan_fabric(t, backend="netem", run_id="r").steps
    assert sum(isinstance(s, AddVeth) for s in netem) == 1
    assert sum(isinstance(s, SetNetem) for s in netem) == 2
    assert not any(isinstance(s, AddTun) for s in netem)
    user = plan_fabric(t, backend="userspace", run_id="r").steps
    assert sum(isinstance(s, AddTun) for s in user) == 2
    assert sum(isinstance(s, SetTbf) for s in user) == 2  # rate in the kernel
    assert not any(isinstance(s, SetNetem | AddVeth) for s in user)
    # namespaces first, hosts files last
    assert isinstance(user[0], AddNamespace)
    assert isinstance(user[-1], WriteHosts)
    assert dict(user[-1].entries) == {"198.19.0.1": "a", "198.19.0.2": "b"}


def test_engine_serialises_slow_links_and_tbf_shapes_fast_ones():
    """tbf lets a lone packet through at once: where one MTU takes >= 50 us on the wire, the
    engine serialises, so a big packet on a slow link is delayed as on a real wire."""
    for rate_mbit, mtu, engine in ((10, 1500, True), (200, 1500, True), (300, 1500, False),
                                   (1000, 9000, True), (2000, 9000, False)):
        s = Shape(rate_bps=rate_mbit * MBIT, delay_ns=MS, mtu=mtu)
        t = topo({"a": "host", "b": "host"}, [("a", "b", s)])
        plan = plan_fabric(t, backend="userspace", run_id="r")
        assert plan.links[0].engine_rate is engine, (rate_mbit, mtu)
        tbf = sum(isinstance(x, SetTbf) for x in plan.steps)
        assert tbf == (0 if engine else 2)


def test_userspace_ecn_link_keeps_rate_in_engine():
    shape = Shape(rate_bps=40 * MBIT, delay_ns=MS, ecn_bytes=30_000)
    t = topo({"a": "host", "b": "host"}, [("a", "b", shape)])
    steps = plan_fabric(t, backend="userspace", run_id="r").steps
    assert not any(isinstance(s, SetTbf) for s in steps)


def test_unshaped_link_has_no_qdisc():
    t = topo({"a": "host", "b": "host"}, [("a", "b", Shape())])
    for backend in ("netem", "userspace"):
        steps = plan_fabric(t, backend=backend, run_id="r").steps
        assert not any(isinstance(s, SetTbf | SetNetem) for s in steps)


def test_time_scale_slows_rates_and_stretches_delays():
    shape = Shape(rate_bps=100_000 * MBIT, delay_ns=2_000)  # 100 Gbps, 2 us
    t = topo({"a": "host", "b": "host"}, [("a", "b", shape)], time_scale=1000)
    (lp,) = plan_fabric(t, backend="netem", run_id="r").links
    assert lp.a_egress.rate_bps == 100 * MBIT
    assert lp.a_egress.delay_ns == 2 * MS
    # the bandwidth-delay product in bytes is kept
    assert default_queue_bytes(lp.a_egress) == default_queue_bytes(shape)


def test_default_queue_is_at_least_one_bdp():
    s = Shape(rate_bps=1000 * MBIT, delay_ns=10 * MS)
    assert default_queue_bytes(s) == 2_500_000  # 1 Gbit/s x 20 ms round trip
    assert default_queue_bytes(Shape()) == 64 * 1500
    assert default_queue_bytes(Shape(queue_bytes=1000)) == 1000
    assert default_queue_bytes(Shape(queue_packets=10, mtu=9000)) == 90_000


def test_unknown_backend_and_address_exhaustion():
    t = topo({"a": "host", "b": "host"}, [("a", "b", Shape())])
    with pytest.raises(TopologyError, match="unknown link backend 'tap'"):
        plan_fabric(t, backend="tap")
    t = topo({"a": "host", "b": "host"}, [("a", "b", Shape())] * 3, link_subnet="198.18.0.0/29")
    with pytest.raises(TopologyError, match=r"3 links do not fit in 198.18.0.0/29"):
        plan_fabric(t, backend="netem")


def test_parallel_links_get_their_own_devices_and_ecmp():
    t = topo({"a": "host", "b": "host"}, [("a", "b", Shape()), ("a", "b", Shape())])
    plan = plan_fabric(t, backend="netem", run_id="r")
    assert [lp.a.dev for lp in plan.links] == ["eth0", "eth1"]
    (route,) = [r for r in plan.routes if r.netns == plan.nodes["a"].netns]
    assert route.dst == "default"
    assert len(route.nexthops) == 2


def test_equal_cost_paths_and_summary():
    t = leaf_spine(spines=2, leaves=2, hosts_per_leaf=2)
    paths = equal_cost_paths(t, "host-0")
    assert paths["host-1"] == (2, 1)
    assert paths["host-3"] == (4, 2)
    lines = path_summary(t)
    assert lines == [
        "paths: 2 host pairs at 2 hops over 1 equal-cost path (e.g. host-0 -> host-1)",
        "paths: 4 host pairs at 4 hops over 2 equal-cost paths (e.g. host-0 -> host-2)",
    ]


def test_backend_warnings():
    fast = Shape(rate_bps=100_000 * MBIT, delay_ns=2_000)
    t = topo({"a": "host", "b": "host"}, [("a", "b", fast)])
    w = backend_warnings(t, "userspace")
    assert any("above the userspace backend's accurate range" in x and "time_scale >= 98"
               in x and "[1 link: a--b]" in x for x in w)
    assert any("delays on the host below 1 ms" in x for x in w)
    # the packet rate caps small-MTU links: 2 Gbit/s is fine at MTU 9000, not at 1500
    big = topo({"a": "host", "b": "host"}, [("a", "b", Shape(rate_bps=2000 * MBIT, mtu=9000,
                                                             delay_ns=5 * MS))])
    assert backend_warnings(big, "userspace") == []
    small = topo({"a": "host", "b": "host"}, [("a", "b", Shape(rate_bps=2000 * MBIT,
                                                               delay_ns=5 * MS))])
    assert any("above the userspace backend's accurate range" in x
               for x in backend_warnings(small, "userspace"))
    scaled = topo({"a": "host", "b": "host"}, [("a", "b", fast)], time_scale=1000)
    assert backend_warnings(scaled, "userspace") == []
    ecn = topo({"a": "host", "b": "host"},
               [("a", "b", Shape(rate_bps=10 * MBIT, delay_ns=5 * MS, ecn_bytes=10_000))])
    assert any("ecn threshold is not realised by the netem backend" in x
               for x in backend_warnings(ecn, "netem"))
    small_q = topo({"a": "host", "b": "host"},
                   [("a", "b", Shape(rate_bps=100 * MBIT, delay_ns=10 * MS, queue_bytes=10_000))])
    assert any("below one bandwidth-delay product" in x
               for x in backend_warnings(small_q, "netem"))


def test_what_the_kernel_cannot_shape_is_an_error_before_anything_is_built():
    slow_long = Shape(rate_bps=40 * MBIT, delay_ns=1000 * 10**9)
    t = topo({"a": "host", "b": "host"}, [("a", "b", slow_long)])
    with pytest.raises(TopologyError, match=r"a--b ->: delay 1000 s on the host is beyond 60 s"):
        plan_fabric(t, backend="userspace")
    fast = Shape(rate_bps=10**13)
    t = topo({"a": "host", "b": "host"}, [("a", "b", fast)])
    with pytest.raises(TopologyError, match=r"above what the kernel's tbf can shape"):
        plan_fabric(t, backend="netem")
    big_queue = Shape(rate_bps=10 * 10**9, delay_ns=40 * 10**9)  # 10G x 80 s = 100 GB
    t = topo({"a": "host", "b": "host"}, [("a", "b", big_queue)])
    with pytest.raises(TopologyError, match=r"queue .* is above the kernel's tbf limit"):
        plan_fabric(t, backend="userspace")


def test_link_backends_say_how_links_are_built() -> None:
    """The two link backends behind one interface: veth with netem/tbf and Ethernet frames,
    or TUN relayed by the engine (which counts the packets); unknown names are refused."""
    from fabric.errors import TopologyError
    from fabric.plan import LINK_BACKENDS, AddTun, AddVeth, SetNetem, link_backend, plan_fabric
    from fabric.topology import parse_topology

    assert set(LINK_BACKENDS) == {"netem", "userspace"}
    netem, user = link_backend("netem"), link_backend("userspace")
    assert (netem.engine, netem.ethernet) == (False, True)
    assert (user.engine, user.ethernet) == (True, False)
    topo = parse_topology("name: t\nnodes: {a: {}, b: {}}\n"
                          "links: [{endpoints: [a, b], rate: 100Mbps, delay: 5ms}]\n")
    lp = plan_fabric(topo, backend="netem", run_id="r").links[0]
    kinds = [type(s) for s in netem.link_steps(lp, switches=False)]
    assert kinds[0] is AddVeth
    assert kinds.count(SetNetem) == 2
    lp = plan_fabric(topo, backend="userspace", run_id="r").links[0]
    assert [type(s) for s in user.link_steps(lp, switches=False)][:2] == [AddTun, AddTun]
    with pytest.raises(TopologyError, match="unknown link backend 'tc' "
                                            r"\(choose netem or userspace\)"):
        plan_fabric(topo, backend="tc")


# -- netem's corrupt, duplicate and reorder ----------------------------------------------------


@pytest.mark.parametrize("shape", [Shape(corrupt_ppm=1), Shape(duplicate_ppm=1),
                                   Shape(delay_ns=MS, reorder_ppm=1)])
def test_a_fault_alone_makes_a_netem_qdisc(shape: Shape) -> None:
    t = topo({"a": "host", "b": "host"}, [("a", "b", shape)])
    netem = [s for s in plan_fabric(t, backend="netem", run_id="r").steps
             if isinstance(s, SetNetem)]
    assert [s.shape for s in netem] == [shape, shape]
    # the userspace backend's engine realises them: no qdisc
    user = plan_fabric(t, backend="userspace", run_id="r").steps
    assert not any(isinstance(s, SetNetem | SetTbf) for s in user)


def test_time_scale_keeps_the_fault_probabilities() -> None:
    shape = Shape(rate_bps=100_000 * MBIT, delay_ns=2_000, corrupt_ppm=10, duplicate_ppm=20,
                  reorder_ppm=30)
    t = topo({"a": "host", "b": "host"}, [("a", "b", shape)], time_scale=1000)
    (lp,) = plan_fabric(t, backend="netem", run_id="r").links
    assert (lp.a_egress.corrupt_ppm, lp.a_egress.duplicate_ppm, lp.a_egress.reorder_ppm) == \
        (10, 20, 30)


def test_netem_options_carry_corrupt_duplicate_and_reorder() -> None:
    from fabric.net.kernel import netem_options

    shape = Shape(rate_bps=100 * MBIT, delay_ns=5 * MS, jitter_ns=MS, loss_ppm=10_000,
                  corrupt_ppm=5_000, duplicate_ppm=20_000, reorder_ppm=250_000)
    opts = netem_options(shape, queue_bytes=150_000)
    # 100 Mbit/s x 6 ms = 75,000 B in flight + 150,000 B of queue, in 64-byte packets
    assert opts == {"delay": 5000, "jitter": 1000, "loss": 1.0, "limit": 3516,
                    "prob_corrupt": 0.5, "duplicate": 2.0, "prob_reorder": 25.0}
    # none set: the options tc would give without them
    assert netem_options(Shape(delay_ns=MS), 0) == {"delay": 1000, "jitter": 0, "loss": 0.0,
                                                    "limit": 1000}


def test_pyroute2_encodes_the_netem_options_as_tc_would() -> None:
    """What goes to the kernel: pyroute2's netem encoder turns the options into the netlink
    attributes `tc qdisc add ... netem corrupt 0.5% duplicate 2% reorder 25%` sends."""
    from pyroute2.netlink.rtnl.tcmsg import sched_netem
    from pyroute2.netlink.rtnl.tcmsg.common import percent2u32

    from fabric.net.kernel import netem_options

    shape = Shape(delay_ns=5 * MS, corrupt_ppm=5_000, duplicate_ppm=20_000,
                  reorder_ppm=250_000)
    p = sched_netem.get_parameters(netem_options(shape, 0))
    attrs = dict(p["attrs"])
    assert p["duplicate"] == percent2u32(2.0)
    assert attrs["TCA_NETEM_CORRUPT"] == {"prob_corrupt": percent2u32(0.5), "corr_corrupt": 0}
    assert attrs["TCA_NETEM_REORDER"] == {"prob_reorder": percent2u32(25.0), "corr_reorder": 0}
    assert p["gap"] == 1  # reorder P% with gap 1: each packet is sent at once with P
    plain = sched_netem.get_parameters(netem_options(Shape(delay_ns=5 * MS), 0))
    assert (plain["duplicate"], plain["gap"], plain["attrs"]) == (0, 0, [])


def test_the_engine_config_carries_the_faults() -> None:
    from fabric.net.engine import Endpoint, EngineConfig, EngineLink

    shape = Shape(delay_ns=MS, corrupt_ppm=1, duplicate_ppm=2, reorder_ppm=3)
    link = EngineLink("a--b", Endpoint("x", "t0"), Endpoint("y", "t1"), shape, Shape(), seed=4)
    cfg = EngineConfig(fabric="f", run_id="r", stats_path="", links=(link,))
    assert EngineConfig.from_json(cfg.to_json()).links[0].forward == shape


def test_route_count_matches_the_routes_and_bounds_the_plan() -> None:
    from fabric.plan import MAX_ROUTES, route_count

    for text in (LEAF_SPINE_TEXT_FOR_ROUTES, "name: t\nnodes: {a: {}, b: {}, c: {}, d: {}}\n"
                 "links:\n  - {endpoints: [a, b]}\n  - {endpoints: [b, c]}\n"):
        plan = plan_fabric(parse_topology(text), backend="userspace")
        assert route_count(plan.nodes, plan.links)[0] == len(plan.routes)
    n = 800  # a chain: 798 inner nodes route to 799 others, 2 ends have a default: refused
    chain = "name: c\nnodes: {" + ", ".join(f"n{i}: {{}}" for i in range(n)) + "}\nlinks:\n" + \
        "".join(f"  - {{endpoints: [n{i}, n{i + 1}]}}\n" for i in range(n - 1))
    want = (r"needs 637,604 routes, one per destination \(798 nodes with more than one "
            rf"neighbour .*at most {MAX_ROUTES:,}")
    with pytest.raises(TopologyError, match=want):
        plan_fabric(parse_topology(chain, source="c.yaml"), backend="userspace")


LEAF_SPINE_TEXT_FOR_ROUTES = """
name: t
generate:
  - leaf_spine: {spines: 2, leaves: 3, hosts_per_leaf: 4}
"""


def test_path_summary_samples_sources_over_the_limit() -> None:
    from fabric import checks

    text = ("name: t\ngenerate:\n  - leaf_spine: {spines: 2, leaves: 10, hosts_per_leaf: 20}\n")
    lines = checks.path_summary(parse_topology(text))
    # 200 hosts: 128 sources would be every second one, so 100 sources with 199 pairs each
    assert lines[0].startswith("paths (pairs from 100 of 200 hosts): ")
    total = sum(int(line.split(": ")[1].split(" host pair")[0]) for line in lines)
    assert total == 100 * 199


def _routes_by_destination(nodes, links):  # noqa: ANN001, ANN202 - the definition, slowly
    """Reference: a search from every destination; a multi-homed node's next hops towards it
    are its neighbours one hop closer."""
    from fabric.plan import AddRoute
    from fabric.topology.graph import search

    adj = {n: [] for n in nodes}
    for lp in links:
        adj[lp.a.node].append((lp.b.node, lp.b.address, lp.a.dev))
        adj[lp.b.node].append((lp.a.node, lp.a.address, lp.b.dev))
    single = {n for n, nbrs in adj.items() if len({nb for nb, _, _ in nbrs}) == 1}
    routes = [AddRoute(nodes[n].netns, "default", tuple(sorted((gw, dev) for _, gw, dev in
                       adj[n])), nodes[n].loopback) for n in single]
    for dst in nodes:
        dist = search(dst, lambda n: (nb for nb, _, _ in adj[n])).hops
        for n, d in dist.items():
            if n != dst and n not in single:
                hops = tuple(sorted((gw, dev) for nb, gw, dev in adj[n] if dist.get(nb) == d - 1))
                routes.append(AddRoute(nodes[n].netns, f"{nodes[dst].loopback}/32", hops,
                                       nodes[n].loopback))
    return sorted(routes, key=lambda r: (r.netns, r.dst))


def _random_plans(seed: int, count: int, most: int, links_per_node: int):  # noqa: ANN202
    """`count` plans of random graphs of 2 to `most` nodes (some not connected): (text, plan)."""
    import random

    rng = random.Random(seed)
    for _ in range(count):
        n = rng.randrange(2, most)
        edges: set[tuple[int, int]] = set()
        for _ in range(rng.randrange(1, links_per_node * n)):
            a, b = rng.sample(range(n), 2)
            if (b, a) not in edges:
                edges.add((a, b))
        text = ("name: r\nnodes: {" + ", ".join(f"n{i}: {{}}" for i in range(n)) + "}\nlinks:\n"
                + "".join(f"  - {{endpoints: [n{a}, n{b}]}}\n" for a, b in edges))
        yield text, plan_fabric(parse_topology(text), backend="userspace")


def test_routes_match_the_definition_on_random_graphs() -> None:
    for text, plan in _random_plans(7, 150, 30, 3):
        assert plan.routes == _routes_by_destination(plan.nodes, plan.links), text
        assert len(plan.routes) == route_count_of(plan)


def route_count_of(plan) -> int:  # noqa: ANN001
    from fabric.plan import route_count

    return route_count(plan.nodes, plan.links)[0]


def _lookup(routes, netns: str, address: str):  # noqa: ANN001, ANN202 - longest prefix match
    import ipaddress

    a = ipaddress.IPv4Address(address)
    best = None
    for r in routes:
        if r.netns != netns or r.dst == "default":
            continue
        net = ipaddress.ip_network(r.dst)
        if a in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, r.nexthops)
    return None if best is None else best[1]


def test_kernel_routes_forward_every_loopback_address_as_the_routes_per_destination() -> None:
    """`aggregate_routes` on random graphs (some not connected): for every namespace and every
    address of the loopback subnet's used range and a little past it, the longest matching
    kernel route has the next hops of that destination's own route, or there is none where
    there was none (an address no node holds, a node not reached). The node's own loopback is
    answered by the kernel's local table, so any match there is allowed."""
    import ipaddress

    for text, plan in _random_plans(11, 60, 40, 2):
        n = len(plan.nodes)
        per_dst = {(r.netns, r.dst): r.nexthops for r in plan.routes}
        base = ipaddress.IPv4Address(plan.nodes["n0"].loopback)
        for node in plan.nodes.values():
            if (node.netns, "default") in per_dst:
                assert [r for r in plan.kernel_routes if r.netns == node.netns] == \
                    [r for r in plan.routes if r.netns == node.netns]
                continue
            for k in range(-1, n + 8):
                address = str(base + k)
                if address == node.loopback:
                    continue
                want = per_dst.get((node.netns, f"{address}/32"))
                assert _lookup(plan.kernel_routes, node.netns, address) == want, (text, address)
        assert len(plan.kernel_routes) <= len(plan.routes)


def test_a_1000_namespace_leaf_spine_installs_a_tenth_of_its_routes() -> None:
    """The issue's fabric: 40,920 routes, one per destination, become about 4,600 kernel
    routes: a leaf keeps one per neighbour and a few blocks over the spines, a spine a few
    blocks per leaf (each leaf's 30 hosts are not one aligned block)."""
    text = ("name: big\ngenerate:\n  - leaf_spine: {spines: 8, leaves: 32, hosts_per_leaf: 30}\n")
    plan = plan_fabric(parse_topology(text), backend="userspace")
    assert len(plan.routes) == 40_920
    assert len(plan.kernel_routes) < 5_000
    leaf0 = plan.nodes["leaf-0"].netns
    assert sum(1 for r in plan.kernel_routes if r.netns == leaf0) < 70
    assert sum(1 for s in plan.steps if isinstance(s, type(plan.routes[0]))) == \
        len(plan.kernel_routes)
