"""Which host runs which node, for an export spread over several machines.

Two sources: an even split (`--hosts N`), which keeps every host-like node with the first
switch it is linked to (so a leaf's host links stay on one machine and only switch-to-switch
links cross hosts), or a placement file (`--placement FILE`) naming each node's host and each
host's underlay address. The file is read through the input gate and the YAML walker, so its
errors name FILE:LINE and the key, as topology errors do.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import FabricError, TopologyError
from ..topology.document import Topology
from ..topology.gate import compose, read_input
from ..topology.walker import Walker, join_path

__all__ = ["HOST_RE", "Placement", "even_split", "load_placement", "one_host"]

#: a host name: it becomes part of a file name (`NAME-HOST.clab.yml`) and of agents.json
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

#: what an even split calls its hosts; their addresses are TEST-NET-1 (RFC 5737), which no
#: real network routes, so a placeholder left in agents.json fails loudly instead of reaching
#: some other machine
PLACEHOLDER_NET = ipaddress.IPv4Network("192.0.2.0/24")


@dataclass(frozen=True)
class Placement:
    """Hosts in order (name -> underlay address, None for the one local host), each node's
    host, and whether the addresses are placeholders the user must edit."""

    hosts: dict[str, str | None]
    nodes: dict[str, str]
    placeholder: bool = False

    def on(self, host: str) -> list[str]:
        """The nodes `host` runs, in the topology's order."""
        return [n for n, h in self.nodes.items() if h == host]


def one_host(topo: Topology, name: str = "localhost") -> Placement:
    return Placement(hosts={name: None}, nodes={n: name for n in topo.nodes})


def groups(topo: Topology) -> list[list[str]]:
    """The nodes that must share a machine: each switch with the non-switch nodes whose first
    switch neighbour it is; a non-switch node with no switch neighbour is a group alone.
    Groups come in the file's order of their first node."""
    owner: dict[str, str] = {}
    for node in topo.nodes.values():
        if node.kind == "switch":
            owner[node.name] = node.name
            continue
        switch = next((nb for nb in topo.neighbours(node.name)
                       if topo.nodes[nb].kind == "switch"), None)
        owner[node.name] = switch or node.name
    out: dict[str, list[str]] = {}
    for name in topo.nodes:
        out.setdefault(owner[name], []).append(name)
    return list(out.values())


def even_split(topo: Topology, hosts: int) -> Placement:
    """`hosts` machines, balanced by node count: the largest groups first, each to the host
    with the fewest nodes so far (ties to the first), so leaves with their hosts spread
    round-robin and spines and cores, groups of one, fill in after them."""
    parts = groups(topo)
    if hosts > len(parts):
        raise FabricError(
            f"--hosts {hosts}: {topo.source} has {len(parts)} group(s) of nodes that stay on one "
            f"machine (each switch with the hosts attached to it): use --hosts {len(parts)} or "
            "fewer, or a --placement file")
    names = [f"host-{i + 1}" for i in range(hosts)]
    load = dict.fromkeys(names, 0)
    where: dict[str, str] = {}
    for group in sorted(parts, key=len, reverse=True):  # stable: file order among equals
        host = min(names, key=lambda h: load[h])
        load[host] += len(group)
        where.update(dict.fromkeys(group, host))
    return Placement(
        hosts={h: str(PLACEHOLDER_NET.network_address + i + 1) for i, h in enumerate(names)},
        nodes={n: where[n] for n in topo.nodes}, placeholder=True)


def load_placement(path: str | Path, topo: Topology) -> Placement:
    """The placement file at `path` for `topo`: every node placed once on a declared host, every
    host with an IP address (distinct) and at least one node. Errors name FILE:LINE and key."""
    source = str(path)
    w = Walker(source)
    root = compose(read_input(path, what="placement file"), source)
    if root is None:
        raise TopologyError("the placement file is empty: it needs `hosts:` and `nodes:`",
                            file=source)
    top = w.mapping(root, "", ("hosts", "nodes"), required=("hosts", "nodes"))

    hosts: dict[str, str] = {}
    host_lines: dict[str, yaml.Node] = {}
    seen: dict[str, str] = {}
    for name, (key_node, value) in w.mapping(top["hosts"][1], "hosts", (), what="host").items():
        path_ = join_path("hosts", name)
        if not HOST_RE.match(name):
            raise w.error(key_node, path_, f"bad host name {name!r}: 1-63 letters, digits, "
                          "'.', '-' and '_', starting with a letter or digit")
        f = w.mapping(value, path_, ("address",), required=("address",))
        a_node = f["address"][1]
        text = w.text(a_node, join_path(path_, "address"), "an IP address such as 10.0.0.1")
        try:
            address = str(ipaddress.ip_address(text))
        except ValueError:
            raise w.error(a_node, join_path(path_, "address"),
                          f"bad address {text!r}: expected an IP address such as 10.0.0.1"
                          ) from None
        if address in seen:
            raise w.error(a_node, join_path(path_, "address"),
                          f"address {address} is host {seen[address]}'s too")
        seen[address] = name
        hosts[name] = address
        host_lines[name] = key_node
    if not hosts:
        raise w.error(top["hosts"][1], "hosts", "no hosts: name at least one, with its address")

    nodes_node = top["nodes"][1]
    placed: dict[str, str] = {}
    for node, (key_node, value) in w.mapping(nodes_node, "nodes", (), what="node").items():
        path_ = join_path("nodes", node)
        if node not in topo.nodes:
            raise w.error(key_node, path_, f"unknown node '{node}': {topo.source} has no node "
                          "by that name")
        host = w.text(value, path_, "a host name from `hosts:`")
        if host not in hosts:
            raise w.error(value, path_, f"unknown host '{host}' (hosts: {', '.join(hosts)})")
        placed[node] = host
    missing = [n for n in topo.nodes if n not in placed]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise w.error(nodes_node, "nodes", f"every node must be placed; missing: {shown}")
    for name, key_node in host_lines.items():
        if name not in placed.values():
            raise w.error(key_node, join_path("hosts", name),
                          f"host '{name}' runs no node: place a node on it or remove it")
    return Placement(hosts=dict(hosts), nodes={n: placed[n] for n in topo.nodes})
