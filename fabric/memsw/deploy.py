"""Where the memory fabric's pieces go: the memory-switch processes' configs and the endpoint
node plans, worked out from a topology's `memory:` section and its plan (pure), and the
daemons bring-up starts for them.

Each memory switch's ports are its neighbours. A window's port is its owner when the owner is
a neighbour. Otherwise it is the neighbour on a shortest path to the owner over memory
switches: the next tier. Hypercast members and reduce members must hang off the switch that
replicates or sums for them, and that switch is the one the group's members share.

The link layer shapes every direction as the topology says, the memory switch's own too, so
memory transactions and message passing cross the same links at the same rates. The switch
core adds its port-to-port latency, credit stalls and its own serialisation model on top.
"""

from __future__ import annotations

from typing import Any

from fabric.errors import TopologyError
from fabric.net.daemon import DaemonSpec
from fabric.plan import FabricPlan
from fabric.topology.document import Topology
from fabric.topology.graph import adjacency, search


def _next_hops(topo: Topology, switch: str, mem_switches: set[str]) -> dict[str, str]:
    """Owner node -> the neighbour of `switch` to reach it through memory switches."""
    adj = adjacency(topo.links)
    found = search(switch, lambda n: adj.get(n, []) if n == switch or n in mem_switches
                   else ())
    return {n: found.path(n)[1] for n in found.hops if n != switch}


def _home(topo: Topology, members: tuple[str, ...], what: str, line: int | None,
          mem_switches: set[str]) -> str:
    adj = adjacency(topo.links)
    homes = [{nb for nb in adj.get(m, []) if nb in mem_switches} for m in members]
    common = set.intersection(*homes) if homes else set()
    if not common:
        raise TopologyError(f"{what}: members {', '.join(members)} do not all hang off one "
                            "memory switch; replication and in-network reduce happen in the "
                            "switch the members share", file=topo.source, line=line)
    return sorted(common)[0]


def switch_configs(plan: FabricPlan) -> dict[str, dict[str, Any]]:
    """One process config per memory switch (see `fabric.memsw.node`)."""
    topo = plan.topology
    mem = topo.memory
    assert mem is not None
    mem_switches = set(mem.switches)
    mcast_home = {m.name: _home(topo, m.members, f"multicast window {m.name}", m.line,
                                mem_switches) for m in mem.multicast}
    reduce_home = {g.name: _home(topo, g.members, f"reduce group {g.name}", g.line,
                                 mem_switches) for g in mem.reduce}
    out = {}
    for sw in mem.switches:
        ports = []
        for lp in plan.links:
            for me, other, shape in ((lp.a, lp.b, lp.link.forward), (lp.b, lp.a, lp.link.reverse)):
                if me.node == sw:
                    ports.append({"name": other.node, "address": other.address,
                                  "rate_bps": shape.rate_bps or 400_000_000_000,
                                  "latency_ns": mem.latency_ns, "credits": mem.credits,
                                  "mtu": shape.mtu})
        hops = _next_hops(topo, sw, mem_switches)
        windows = [{"name": w.name, "base": w.base, "size": w.size, "port": hops[w.node]}
                   for w in mem.windows if w.node in hops]
        out[sw] = {
            "node": sw, "netns": plan.nodes[sw].netns, "time_scale": topo.time_scale,
            "ports": ports, "txn": mem.txn, "timeout_ns": mem.timeout_ns, "windows": windows,
            "multicast": [{"name": m.name, "base": m.base, "size": m.size,
                           "members": list(m.members)}
                          for m in mem.multicast if mcast_home[m.name] == sw],
            "reduce": [{"name": g.name, "members": list(g.members), "dtype": g.dtype}
                       for g in mem.reduce if reduce_home[g.name] == sw],
            "switch_ports": [p["name"] for p in ports if p["name"] in mem_switches],
        }
    return out


def gateway_of(plan: FabricPlan, node: str, mem_switches: set[str]) -> str:
    """The address of the memory switch's end of `node`'s link to it."""
    for lp in plan.links:
        for me, other in ((lp.a, lp.b), (lp.b, lp.a)):
            if me.node == node and other.node in mem_switches:
                return other.address
    raise TopologyError(f"node {node} has no link to a memory switch",
                        file=plan.topology.source)


def daemon_name(sw: str) -> str:
    """Memory switch `sw`'s daemon name: its files in the state directory are NAME.json
    (statistics), NAME.log and NAME.config.json."""
    return f"memswitch-{sw}"


def daemons(plan: FabricPlan) -> list[DaemonSpec]:
    """One daemon per memory switch, for bring-up (`fabric.net.lifecycle.bring_up`); a
    topology the switches would refuse fails here, before anything is built."""
    return [DaemonSpec(node=sw, role="memory", module="fabric.memsw.node",
                       name=daemon_name(sw), config=cfg)
            for sw, cfg in switch_configs(plan).items()]
