"""Turn a validated topology into a plan: names, addresses, routes and typed kernel steps.

Pure: no sockets, no kernel. `plan_fabric(topology, backend=..., run_id=...)` returns a
`FabricPlan` whose `steps` one adapter (`fabric.net.kernel`) applies. A plan prints
(`fabric up --dry-run`) and is tested without root.

Addressing: link i gets the i-th /30 of the topology's link subnet (a = .1, b = .2); node j gets
the j-th address of the loopback subnet as a /32 on `lo`. Every route is to a node's loopback and
carries that loopback as preferred source, so traffic between nodes is addressed loopback to
loopback and never needs routes to the point-to-point subnets. Names resolve to loopbacks through
`/etc/netns/<netns>/hosts`, which `ip netns exec` bind-mounts over /etc/hosts.

Routing: hop-count shortest paths from a breadth-first search per destination; where several
neighbours are equally close the route is a kernel multipath (ECMP) route, hashed on the L4
5-tuple (`fib_multipath_hash_policy=1`), so flows spread across spines. A node with one link gets
a default route instead of one route per destination (leaf hosts: N routes -> 1).

RoCE switches: with a `switches:` section, every `kind: switch` node forwards in the emulator's
switch process (`fabric.switch`), not in its kernel: the plan turns the namespace's IP
forwarding off (the process reads every packet on its ports with packet sockets and the kernel
would otherwise forward a second copy) and leaves the rate of each link direction out of a
switch to the switch's egress port, which serialises, queues per class, marks ECN and pauses.
The link layer still applies that direction's delay, jitter and loss. `SwitchNodePlan` holds
what the process needs: its ports in fabric units and a forwarding table built from the same
routes the kernel would have used.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field, replace

from .errors import TopologyError
from .topology.document import Topology, link_classes, roce_classes
from .topology.graph import search
from .topology.linkprops import at_switch_egress
from .topology.model import Link, Shape, TrafficClass, queue_bytes

NETNS_PREFIX = "fab"


def netns_name(fabric: str, run_id: str, node: str) -> str:
    """Namespace name: `fab.<fabric>.<run_id>.<node>`. Names never contain '.', so it parses."""
    return f"{NETNS_PREFIX}.{fabric}.{run_id}.{node}"


def parse_netns_name(name: str) -> tuple[str, str, str] | None:
    """(fabric, run_id, node) of a namespace this program made, else None."""
    parts = name.split(".")
    if len(parts) != 4 or parts[0] != NETNS_PREFIX:
        return None
    return parts[1], parts[2], parts[3]


def new_run_id() -> str:
    return secrets.token_hex(3)


# ---- typed steps -------------------------------------------------------------------------


@dataclass(frozen=True)
class AddNamespace:
    netns: str


@dataclass(frozen=True)
class SetSysctl:
    netns: str
    key: str  # e.g. "net/ipv4/ip_forward"
    value: str


@dataclass(frozen=True)
class AddVeth:
    """A veth pair created inside `netns_a` whose peer lands in `netns_b`."""

    netns_a: str
    dev_a: str
    netns_b: str
    dev_b: str
    mtu: int


@dataclass(frozen=True)
class SetOffloadsOff:
    """Turn checksum and segmentation offloads off on a veth end, so every packet a RoCE
    switch process reads is a finished, MTU-sized IP packet it can forward as bytes (with
    offloads, veth hands over unfinished checksums and 64 KiB TCP super-packets)."""

    netns: str
    dev: str


@dataclass(frozen=True)
class AddTun:
    """A persistent layer-3 TUN device, driven by the link engine."""

    netns: str
    dev: str
    mtu: int
    txqueuelen: int


@dataclass(frozen=True)
class AddAddress:
    netns: str
    dev: str
    address: str
    prefixlen: int


@dataclass(frozen=True)
class SetUp:
    netns: str
    dev: str


@dataclass(frozen=True)
class SetNetem:
    """netem (delay, jitter, loss, corrupt, duplicate, reorder) as root qdisc, with a tbf
    child for the rate if any (an htb child with a class per traffic class where `classes`
    is given: `fabric.net.kernel.htb_tree`)."""

    netns: str
    dev: str
    shape: Shape
    queue_bytes: int
    classes: tuple[TrafficClass, ...] = ()


@dataclass(frozen=True)
class SetTbf:
    """tbf as root qdisc: the rate in the kernel, `queue_bytes` of drop-tail queue. With
    `classes`, htb instead: a class and a queue per traffic class under the rate, drop-tail,
    or RED marking ECN where the class sets `ecn` (`fabric.net.kernel.htb_tree`)."""

    netns: str
    dev: str
    rate_bps: int
    queue_bytes: int
    mtu: int
    classes: tuple[TrafficClass, ...] = ()


@dataclass(frozen=True)
class AddRoute:
    netns: str
    dst: str  # "a.b.c.d/32", "a.b.c.d/N" (`kernel_routes`: a block of loopbacks) or "default"
    nexthops: tuple[tuple[str, str], ...]  # (gateway, dev)
    src: str


@dataclass(frozen=True)
class WriteHosts:
    netns: str
    entries: tuple[tuple[str, str], ...]  # (address, name)


Step = (AddNamespace | SetSysctl | AddVeth | AddTun | AddAddress | SetUp | SetNetem | SetTbf
        | AddRoute | WriteHosts | SetOffloadsOff)


# ---- the plan --------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One end of a link: the device in a node's namespace and its address."""

    node: str
    netns: str
    dev: str
    address: str
    prefixlen: int


@dataclass(frozen=True)
class LinkPlan:
    """A link as built: ends, subnet, and the shape each end's egress realises (host time)."""

    link: Link
    a: Endpoint
    b: Endpoint
    a_egress: Shape  # a -> b, scaled by time_scale
    b_egress: Shape  # b -> a
    a_queue_bytes: int
    b_queue_bytes: int
    # userspace backend: the engine serialises this link itself (see `engine_serialises`)
    engine_rate: bool = False
    # the classes each shaped direction queues by (`link_classes`; () = one FIFO queue)
    classes: tuple[TrafficClass, ...] = ()

    @property
    def name(self) -> str:
        return self.link.name


@dataclass(frozen=True)
class NodePlan:
    name: str
    kind: str
    netns: str
    loopback: str


@dataclass(frozen=True)
class SwitchPort:
    """One port of a RoCE switch node, in fabric units (the switch converts to host time)."""

    dev: str
    peer: str  # the neighbour node
    peer_address: str  # its end of the link: where PFC frames for it go
    rate_bps: int
    delay_ns: int
    mtu: int


@dataclass(frozen=True)
class SwitchNodePlan:
    """What one RoCE switch process needs: ports, forwarding table, own addresses."""

    node: str
    netns: str
    ports: tuple[SwitchPort, ...]
    # destination address -> egress port indices (ECMP set), for every address routed here
    routes: tuple[tuple[str, tuple[int, ...]], ...]
    local: tuple[str, ...]


@dataclass
class FabricPlan:
    name: str
    run_id: str
    backend: str
    topology: Topology
    nodes: dict[str, NodePlan]
    links: list[LinkPlan]
    routes: list[AddRoute]  # per destination (`compute_routes`): the switch tables' source
    kernel_routes: list[AddRoute] = field(default_factory=list)  # `aggregate_routes(routes)`
    steps: list[Step] = field(default_factory=list)
    switches: dict[str, SwitchNodePlan] = field(default_factory=dict)

    @property
    def namespaces(self) -> list[str]:
        return [n.netns for n in self.nodes.values()]

    @property
    def link_backend(self) -> LinkBackend:
        return link_backend(self.backend)


def plan_fabric(topology: Topology, *, backend: str, run_id: str | None = None) -> FabricPlan:
    """Compute names, addresses, routes and the ordered kernel steps for `topology`."""
    if backend not in LINK_BACKENDS:
        raise TopologyError(f"unknown link backend {backend!r} (choose "
                            f"{' or '.join(LINK_BACKENDS)})")
    run_id = run_id or new_run_id()
    ts = topology.time_scale
    link_net = ipaddress.ip_network(topology.link_subnet)
    lo_net = ipaddress.ip_network(topology.loopback_subnet)
    if len(topology.links) > link_net.num_addresses // 4:
        raise TopologyError(f"{len(topology.links)} links do not fit in {link_net} (/30 each)",
                            file=topology.source, key="addressing.links")
    if len(topology.nodes) > lo_net.num_addresses - 2:
        raise TopologyError(f"{len(topology.nodes)} nodes do not fit in {lo_net}",
                            file=topology.source, key="addressing.loopbacks")

    nodes: dict[str, NodePlan] = {}
    for j, node in enumerate(topology.nodes.values()):
        nodes[node.name] = NodePlan(
            name=node.name, kind=node.kind,
            netns=netns_name(topology.name, run_id, node.name),
            loopback=str(lo_net.network_address + j + 1),
        )

    dev_count: dict[str, int] = {name: 0 for name in nodes}

    def next_dev(node: str) -> str:
        k = dev_count[node]
        dev_count[node] = k + 1
        return f"eth{k}"

    links: list[LinkPlan] = []
    roce = set(roce_switches(topology))
    classes = link_classes(topology)
    for i, link in enumerate(topology.links):
        base = link_net.network_address + 4 * i
        a_shape = _link_layer(link.forward.scaled(ts), roce, link.a)
        b_shape = _link_layer(link.reverse.scaled(ts), roce, link.b)
        links.append(LinkPlan(
            link=link,
            a=Endpoint(link.a, nodes[link.a].netns, next_dev(link.a), str(base + 1), 30),
            b=Endpoint(link.b, nodes[link.b].netns, next_dev(link.b), str(base + 2), 30),
            a_egress=a_shape, b_egress=b_shape,
            a_queue_bytes=queue_bytes(a_shape),
            b_queue_bytes=queue_bytes(b_shape),
            engine_rate=engine_serialises(a_shape, b_shape, lpu=topology.lpu is not None,
                                          classes=bool(classes)),
            classes=classes,
        ))

    for lp in links:
        _check_kernel_limits(lp, backend, topology.source)
    need, multi = route_count(nodes, links)
    if need > MAX_ROUTES:
        raise TopologyError(
            f"this fabric needs {need:,} routes, one per destination ({multi:,} nodes with more "
            f"than one neighbour each route to every node they reach); at most "
            f"{MAX_ROUTES:,} (a 1,000-host leaf-spine needs 42,000): build a smaller fabric",
            file=topology.source, key="links")
    routes = compute_routes(nodes, links)
    plan = FabricPlan(name=topology.name, run_id=run_id, backend=backend, topology=topology,
                      nodes=nodes, links=links, routes=routes,
                      kernel_routes=aggregate_routes(routes, nodes, topology.loopback_subnet))
    plan.switches = {n: _switch_plan(n, plan) for n in roce_switches(topology)}
    plan.steps = _steps(plan)
    return plan


def address_plan(topology: Topology) -> FabricPlan:
    """The plan's names, devices, addresses and routes for a fabric built elsewhere
    (containerlab from `fabric export`): they do not depend on the links' shapes or the
    RoCE switches, so it is planned without them, and this host's limits (tbf's top rate,
    the switch ports' rates) do not refuse a file the other engine can take."""
    bare = replace(topology, switches=None, links=tuple(
        replace(link, forward=Shape(mtu=link.forward.mtu), reverse=Shape(mtu=link.reverse.mtu))
        for link in topology.links))
    return plan_fabric(bare, backend="netem", run_id="x")


def roce_switches(topology: Topology) -> list[str]:
    """The nodes the emulator's RoCE switch process forwards for (file order): with a
    `switches:` section, every `kind: switch` node that is not a memory switch."""
    if topology.switches is None:
        return []
    memory = set(topology.memory.switches) if topology.memory is not None else set()
    return [n.name for n in topology.nodes.values() if n.kind == "switch" and n.name not in memory]


def _link_layer(shape: Shape, roce: set[str], sender: str) -> Shape:
    """What the link layer realises for a direction: a RoCE switch's egress port serialises,
    queues and marks itself (`topology.linkprops`)."""
    return at_switch_egress(shape) if sender in roce else shape


def _switch_plan(name: str, plan: FabricPlan) -> SwitchNodePlan:
    ports: list[SwitchPort] = []
    local = [plan.nodes[name].loopback]
    for lp in plan.links:
        for me, other, fabric_shape in ((lp.a, lp.b, lp.link.forward),
                                        (lp.b, lp.a, lp.link.reverse)):
            if me.node != name:
                continue
            if fabric_shape.rate_bps is None:
                raise TopologyError(
                    f"{lp.name}: a RoCE switch port needs a rate (its egress serialises at the "
                    f"port rate): give the link `rate:`", file=plan.topology.source,
                    line=lp.link.line)
            ports.append(SwitchPort(dev=me.dev, peer=other.node, peer_address=other.address,
                                    rate_bps=fabric_shape.rate_bps,
                                    delay_ns=fabric_shape.delay_ns, mtu=fabric_shape.mtu))
            local.append(me.address)
    netns = plan.nodes[name].netns
    switch_spec(name, ports, plan.topology)  # what the process would refuse fails here
    return SwitchNodePlan(node=name, netns=netns, ports=tuple(ports),
                          routes=switch_table(name, plan, plan.routes), local=tuple(local))


def switch_table(name: str, plan: FabricPlan, routes: list[AddRoute]
                 ) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """RoCE switch `name`'s forwarding table from `routes` (the plan's, or routes computed
    again without failed links): each directly connected neighbour on its port, and per
    routed destination the ECMP set of its egress ports. Ports are numbered over every link
    of the switch, up or down, as the switch process numbers them."""
    by_dev: dict[str, int] = {}
    table: dict[str, tuple[int, ...]] = {}
    for lp in plan.links:
        for me, other in ((lp.a, lp.b), (lp.b, lp.a)):
            if me.node == name:
                by_dev[me.dev] = len(by_dev)
                table[other.address] = (by_dev[me.dev],)
    netns = plan.nodes[name].netns
    for r in routes:
        if r.netns != netns:
            continue
        idx = tuple(sorted({by_dev[dev] for _, dev in r.nexthops}))
        table["default" if r.dst == "default" else r.dst.split("/")[0]] = idx
    return tuple(sorted(table.items()))


def switch_spec(name: str, ports: list[SwitchPort] | tuple[SwitchPort, ...],
                topo: Topology):  # noqa: ANN201 - a fabric.switch.core.SwitchSpec
    """The switch core's spec for one switch (without routes), validated: what the switch
    process would refuse at start (a buffer its PFC headroom does not fit, thresholds that
    contradict each other) is a TopologyError at the `switches:` line."""
    from .switch.core import ClassSpec, PortSpec, RedParams, SwitchError, SwitchSpec

    sw = topo.switches
    assert sw is not None
    try:
        return SwitchSpec(
            name=name,
            ports=tuple(PortSpec(name=p.dev, rate_bps=p.rate_bps, delay_ns=p.delay_ns,
                                 mtu=p.mtu, peer=p.peer) for p in ports),
            classes=tuple(ClassSpec(name=c.name, dscp=c.dscp, priority=c.priority,
                                    lossless=c.lossless, weight=c.weight, strict=c.strict,
                                    red=None if c.red is None else RedParams(*c.red),
                                    queue_bytes=c.queue_bytes)
                          for c in roce_classes(topo)),
            buffer_bytes=sw.buffer_bytes, buffer_mode=sw.buffer_mode, pfc=sw.pfc,
            xoff_bytes=sw.xoff_bytes, xon_bytes=sw.xon_bytes, int_enabled=sw.int_enabled)
    except SwitchError as e:
        raise TopologyError(str(e), file=topo.source, line=sw.line, key="switches") from None


TBF_MAX_BPS = (2**32 - 1) * 8  # tbf's rate field: u32 bytes/s
TBF_MAX_BYTES = 2**32 - 1  # tbf's queue limit: u32 bytes
MAX_DELAY_NS = 60 * 10**9


def _check_kernel_limits(lp: LinkPlan, backend: str, source: str) -> None:
    """What the kernel's qdiscs cannot express fails here, before anything is built."""
    from .units import format_rate, format_size, format_time

    for arrow, shape, queue in (("->", lp.a_egress, lp.a_queue_bytes),
                                ("<-", lp.b_egress, lp.b_queue_bytes)):
        where = f"{lp.name} {arrow}"

        def fail(msg: str, where: str = where) -> None:
            raise TopologyError(f"{where}: {msg}", file=source, line=lp.link.line)

        if shape.delay_ns + shape.jitter_ns > MAX_DELAY_NS:
            fail(f"delay {format_time(shape.delay_ns + shape.jitter_ns)} on the host is beyond "
                 f"{format_time(MAX_DELAY_NS)}: lower it or time_scale")
        in_kernel = shape.rate_bps is not None and link_backend(backend).kernel_rate(lp)
        if in_kernel and shape.rate_bps > TBF_MAX_BPS:  # type: ignore[operator]
            fail(f"rate {format_rate(shape.rate_bps)} on the host is above what the kernel's "
                 f"tbf can shape ({format_rate(TBF_MAX_BPS)}): raise time_scale")
        if in_kernel and queue > TBF_MAX_BYTES:
            fail(f"queue {format_size(queue)} is above the kernel's tbf limit "
                 f"({format_size(TBF_MAX_BYTES)}): set a smaller queue (the default is one "
                 "bandwidth x round-trip product)")


#: routes one per destination (before `aggregate_routes`) one fabric may compute: a 1,000-host
#: leaf-spine needs ~42,000 (4,633 once aggregated); a 2,000-node chain would need 4 million
#: (every node multi-homed), more than planning and bring-up could handle
MAX_ROUTES = 250_000


def _ports(nodes: dict[str, NodePlan],
           links: list[LinkPlan]) -> dict[str, list[tuple[str, str, str]]]:
    """Node -> its links as (neighbour, the neighbour's address as gateway, our device)."""
    adj: dict[str, list[tuple[str, str, str]]] = {n: [] for n in nodes}
    for lp in links:
        adj[lp.a.node].append((lp.b.node, lp.b.address, lp.a.dev))
        adj[lp.b.node].append((lp.a.node, lp.a.address, lp.b.dev))
    return adj


def route_count(nodes: dict[str, NodePlan], links: list[LinkPlan]) -> tuple[int, int]:
    """How many routes `compute_routes` would make, and for how many multi-homed nodes, in
    time linear in nodes and links: a single-homed node has one default route, any other
    one route per node it reaches."""
    adj = {n: {nb for nb, _, _ in nbrs} for n, nbrs in _ports(nodes, links).items()}
    total, multi_homed = 0, 0
    seen: set[str] = set()
    for start in nodes:
        if start in seen:
            continue
        part = search(start, lambda n: adj[n]).hops  # one connected component
        seen.update(part)
        multi = sum(1 for n in part if len(adj[n]) > 1)
        multi_homed += multi
        if len(part) > 1:  # an isolated node has no route at all
            total += (len(part) - multi) + multi * (len(part) - 1)
    return total, multi_homed


def compute_routes(nodes: dict[str, NodePlan], links: list[LinkPlan]) -> list[AddRoute]:
    """Shortest-path (hop count) routes to every node's loopback, ECMP where paths tie.

    A single-homed node gets one default route. Every other node gets a route to each node it
    reaches, over each neighbour that lies on a shortest path there: one breadth-first search
    from that node, carrying each reached node's set of such first hops (a bit per neighbour),
    so the cost is the multi-homed nodes times the links, not every node times the links."""
    adj = _ports(nodes, links)
    neighbours = {n: [nb for nb, _, _ in nbrs] for n, nbrs in adj.items()}

    routes: list[AddRoute] = []
    for n, nbrs in adj.items():
        src = nodes[n].loopback
        if len(set(neighbours[n])) == 1:
            hops = tuple(sorted((gw, dev) for _, gw, dev in nbrs))
            routes.append(AddRoute(nodes[n].netns, "default", hops, src))
            continue
        if not nbrs:
            continue
        dist = {n: 0}
        first: dict[str, int] = {}  # reached node -> bit set of first hops on shortest paths
        frontier = []
        for i, nb in enumerate(neighbours[n]):
            dist[nb] = 1
            first[nb] = first.get(nb, 0) | 1 << i
            frontier.append(nb)
        d = 1
        while frontier:
            d += 1
            reached = []
            for u in frontier:
                for v in neighbours[u]:
                    seen = dist.get(v)
                    if seen is None:
                        dist[v] = d
                        first[v] = first[u]
                        reached.append(v)
                    elif seen == d:
                        first[v] |= first[u]
            frontier = reached
        by_mask: dict[int, tuple[tuple[str, str], ...]] = {}
        for dst, mask in first.items():
            if mask not in by_mask:  # each set bit once: a switch has many neighbours
                chosen, rest = [], mask
                while rest:
                    low = rest & -rest
                    _, gw, dev = nbrs[low.bit_length() - 1]
                    chosen.append((gw, dev))
                    rest ^= low
                by_mask[mask] = tuple(sorted(chosen))
            hops = by_mask[mask]
            routes.append(AddRoute(nodes[n].netns, f"{nodes[dst].loopback}/32", hops, src))
    routes.sort(key=lambda r: (r.netns, r.dst))
    return routes


def aggregate_routes(routes: list[AddRoute], nodes: dict[str, NodePlan],
                     loopbacks: str) -> list[AddRoute]:
    """`routes` (one per destination, `compute_routes`) as the kernel installs them: per
    namespace, each run of consecutive loopbacks with the same next hops becomes the fewest
    aligned prefixes that cover exactly that run (a leaf-spine of 1,000 namespaces: 40,920
    routes -> about 3,900, and bring-up's time is mostly route installs).

    Forwarding is unchanged for every address of the loopback subnet (`loopbacks`): an
    assigned loopback takes the same next hops as its own route did, and an address no node
    holds, or a node the namespace does not reach, matches no prefix, as before. A node's own
    loopback may fall inside a prefix (a run may cross it): the kernel's local table answers
    for it first. Default routes (single-homed nodes) and destinations outside the subnet are
    kept as they are."""
    pool = ipaddress.ip_network(loopbacks)
    own = {n.netns: int(ipaddress.IPv4Address(n.loopback)) for n in nodes.values()}
    by_ns: dict[str, list[AddRoute]] = {}
    for r in routes:
        by_ns.setdefault(r.netns, []).append(r)
    out: list[AddRoute] = []
    for ns, rs in by_ns.items():
        hosts: list[tuple[int, AddRoute]] = []
        for r in rs:
            if r.dst.endswith("/32") and ipaddress.IPv4Address(r.dst[:-3]) in pool:
                hosts.append((int(ipaddress.IPv4Address(r.dst[:-3])), r))
            else:
                out.append(r)
        hosts.sort(key=lambda h: h[0])
        me = own.get(ns)
        i = 0
        while i < len(hosts):
            first, r = hosts[i]
            last = first
            j = i + 1
            while j < len(hosts):
                nxt, other = hosts[j]
                adjacent = nxt == last + 1 or (nxt == last + 2 and last + 1 == me)
                if not adjacent or other.nexthops != r.nexthops:
                    break
                last = nxt
                j += 1
            for net in ipaddress.summarize_address_range(ipaddress.IPv4Address(first),
                                                         ipaddress.IPv4Address(last)):
                out.append(replace(r, dst=str(net)))
            i = j
    out.sort(key=lambda r: (r.netns, r.dst))
    return out


# Every node forwards (a gateway or switch must; a host only does when routes make it transit),
# hashes multipath on L4 ports, does not drop asymmetric ECMP return paths, and negotiates ECN
# on its TCP connections (a new namespace only answers ECN, so no packet would be ECT and an
# `ecn` threshold would never mark), as datacenter hosts are configured to.
# The fabric is IPv4: IPv6 would only add router solicitations and the like to link counters.
NODE_SYSCTLS = (
    ("net/ipv6/conf/all/disable_ipv6", "1"),
    ("net/ipv6/conf/default/disable_ipv6", "1"),
    ("net/ipv4/tcp_ecn", "1"),
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv4/fib_multipath_hash_policy", "1"),
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
    ("net/ipv4/icmp_ratelimit", "0"),
)


def _steps(plan: FabricPlan) -> list[Step]:
    steps: list[Step] = []
    for n in plan.nodes.values():
        steps.append(AddNamespace(n.netns))
    for n in plan.nodes.values():
        steps.extend(SetSysctl(n.netns, k, v) for k, v in NODE_SYSCTLS)
        if n.name in plan.switches:  # the switch process forwards; the kernel must not
            steps.append(SetSysctl(n.netns, "net/ipv4/ip_forward", "0"))
        steps.append(SetUp(n.netns, "lo"))
        steps.append(AddAddress(n.netns, "lo", n.loopback, 32))
    backend = link_backend(plan.backend)
    for lp in plan.links:
        steps.extend(backend.link_steps(lp, switches=bool(plan.switches)))
    steps.extend(plan.kernel_routes)
    hosts = tuple((n.loopback, n.name) for n in plan.nodes.values())
    for n in plan.nodes.values():
        steps.append(WriteHosts(n.netns, hosts))
    return steps


def _needs_netem(shape: Shape) -> bool:
    return bool(shape.delay_ns or shape.jitter_ns or shape.loss_ppm or shape.corrupt_ppm
                or shape.duplicate_ppm or shape.reorder_ppm)


SERIALISATION_VISIBLE_NS = 50_000


def engine_serialises(a: Shape, b: Shape, *, lpu: bool, classes: bool = False) -> bool:
    """Userspace backend: does the engine serialise this link itself, rather than kernel tbf?

    tbf is a token bucket, not a wire: a packet that finds tokens leaves at once, so on a slow
    link a lone 1500-byte packet skips the 1.2 ms it takes at 10 Mbit/s. The engine serialises
    where the exact departure of each packet matters: a shaped direction with an ECN threshold
    (it must see the queue to mark), the links of an LPU fabric (a compiled schedule assumes
    each batch holds its link for exactly one slot), and any direction whose MTU takes 50 us
    or more to serialise (below ~240 Mbit/s at MTU 1500), where that delay is visible above
    the engine's own timer noise. Faster links keep the kernel's tbf, which shapes at
    near-zero CPU and stops excess packets before they cost the engine (its packet rate is the
    scarce budget on this machine); there one packet's serialisation is under 50 us. Where
    the file has traffic classes (`classes`), every shaped direction serialises in the
    engine: the queue must be the engine's for it to queue by class (tbf has one FIFO).
    """
    shaped = [s for s in (a, b) if s.rate_bps is not None]
    slow = any(s.mtu * 8 * 1_000_000_000 // s.rate_bps >= SERIALISATION_VISIBLE_NS
               for s in shaped if s.rate_bps is not None)
    return bool(shaped) and (lpu or slow or classes
                             or any(s.ecn_bytes is not None for s in shaped))


# ---- link backends ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendLimits:
    """What a link backend delivers within 5% on the 2-core class of host (`fabric check`)."""

    max_rate_bps: int  # highest link rate delivered within 5% (TCP goodput vs its ceiling)
    max_pps: int | None  # packets/s one link direction can carry (None: the kernel's, no cap)
    min_delay_ns: int  # below this, the backend's own latency is a large part of the delay

    def rate_limit(self, mtu: int) -> int:
        """The accurate range at this MTU: the packet rate caps small-MTU links."""
        if self.max_pps is None:
            return self.max_rate_bps
        return min(self.max_rate_bps, self.max_pps * mtu * 8)


class LinkBackend:
    """How one kind of link is built and shaped: the kernel steps of each link, whether a
    link-engine process relays the links (and counts their packets), whether links carry
    Ethernet frames (a RoCE switch then writes its peers' MAC addresses), and where its
    figures stay accurate. `--links NAME` picks one (`net.doctor.choose_backend`)."""

    name: str = ""
    engine: bool = False
    ethernet: bool = False
    class_ecn: bool = False  # a link's class queues RED-mark the classes that set `ecn`
    limits: BackendLimits

    def link_steps(self, lp: LinkPlan, *, switches: bool) -> list[Step]:
        raise NotImplementedError

    def kernel_rate(self, lp: LinkPlan) -> bool:
        """Whether the kernel's tbf shapes `lp`'s rate (else the engine serialises it)."""
        return True

    def _ends(self, lp: LinkPlan) -> list[tuple[Endpoint, Shape, int]]:
        return [(lp.a, lp.a_egress, lp.a_queue_bytes), (lp.b, lp.b_egress, lp.b_queue_bytes)]


class NetemBackend(LinkBackend):
    """veth pairs; netem (delay, jitter, loss, corrupt, duplicate, reorder) with tbf inside
    it for the rate, tbf alone for a rate without them; where the file has traffic classes,
    htb with a class per traffic class takes tbf's place. Needs `sch_netem` (native, or in a
    guest kernel), and `sch_red` where a class sets `ecn`."""

    name = "netem"
    ethernet = True
    class_ecn = True  # a red qdisc (ECN on) is the queue of each htb class that sets `ecn`
    # Mininet documents netem links accurate to ~1 Gbit/s; tbf on veth measured TCP goodput
    # 0.96 / 0.956 / 0.953 of 100M / 1G / 5G on the development machine.
    limits = BackendLimits(max_rate_bps=5_000_000_000, max_pps=None, min_delay_ns=100_000)

    def link_steps(self, lp: LinkPlan, *, switches: bool) -> list[Step]:
        steps: list[Step] = [AddVeth(lp.a.netns, lp.a.dev, lp.b.netns, lp.b.dev,
                                     lp.link.forward.mtu)]
        if switches:  # a switch process reads whole frames: no offloads merging them
            steps.extend(SetOffloadsOff(end.netns, end.dev) for end in (lp.a, lp.b))
        for end, shape, queue in self._ends(lp):
            steps += [AddAddress(end.netns, end.dev, end.address, end.prefixlen),
                      SetUp(end.netns, end.dev)]
            classes = lp.classes if shape.rate_bps else ()
            if _needs_netem(shape):
                steps.append(SetNetem(end.netns, end.dev, shape, queue, classes))
            elif shape.rate_bps:
                steps.append(SetTbf(end.netns, end.dev, shape.rate_bps, queue, shape.mtu,
                                    classes))
        return steps


class UserspaceBackend(LinkBackend):
    """A TUN device at each end, relayed by the link engine (`net/engine.py`), which delays,
    jitters, drops and (where `engine_serialises`) serialises; kernel tbf shapes the rate of
    the other links."""

    name = "userspace"
    engine = True
    class_ecn = True  # the engine's class queues (`fabric.linkmodel`)
    # measured by scripts/bench_links.py on the 2-core machine: TCP goodput within 1% of its
    # header ceiling to 1 Gbit/s at MTU 1500 and 5 Gbit/s at MTU 9000 (the engine moves ~85k
    # packets/s); each traversal adds ~0.17 ms, so delays under 1 ms are mostly the engine's.
    limits = BackendLimits(max_rate_bps=5_000_000_000, max_pps=85_000, min_delay_ns=1_000_000)

    def link_steps(self, lp: LinkPlan, *, switches: bool) -> list[Step]:
        steps: list[Step] = [AddTun(end.netns, end.dev, lp.link.forward.mtu, txqueuelen=1000)
                             for end in (lp.a, lp.b)]
        for end, shape, queue in self._ends(lp):
            steps += [AddAddress(end.netns, end.dev, end.address, end.prefixlen),
                      SetUp(end.netns, end.dev)]
            if shape.rate_bps and not lp.engine_rate:
                steps.append(SetTbf(end.netns, end.dev, shape.rate_bps, queue, shape.mtu))
        return steps

    def kernel_rate(self, lp: LinkPlan) -> bool:
        return not lp.engine_rate


LINK_BACKENDS: dict[str, LinkBackend] = {b.name: b for b in (NetemBackend(), UserspaceBackend())}
BACKENDS = tuple(LINK_BACKENDS)


def link_backend(name: str) -> LinkBackend:
    """The link backend `name` (KeyError if there is none)."""
    return LINK_BACKENDS[name]
