"""Generators: a few numbers in, the nodes and links of a regular fabric out. Pure functions.

The loader parses and resolves a generator entry (counts, prefix, link shapes with defaults
applied) into a spec, and checks the names these functions produce against the rest of the
file; here is only the expansion, so it can be tested and reused (e.g. by a two-cluster
generator) without YAML.
"""

from __future__ import annotations

from dataclasses import dataclass

from fabric.topology.model import LeafSpineInfo, Link, Node, Shape


@dataclass(frozen=True)
class LeafSpineSpec:
    """A resolved `leaf_spine` generator entry.

    uplink / downlink: (forward, reverse) shapes. Every generated link has the leaf as endpoint
    `a`, so an uplink's forward direction is leaf->spine and a downlink's is leaf->host.
    """

    spines: int
    leaves: int
    hosts_per_leaf: int
    uplink: tuple[Shape, Shape]
    downlink: tuple[Shape, Shape]
    prefix: str = ""
    line: int | None = None


@dataclass(frozen=True)
class Expansion:
    """What one generator made: nodes in order (spines, leaves, hosts), links, and a summary."""

    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    info: LeafSpineInfo


def leaf_spine_names(spec: LeafSpineSpec) -> tuple[list[str], list[str], list[str]]:
    """The (spines, leaves, hosts) names `spec` makes; hosts are numbered across all leaves."""
    p = spec.prefix
    spines = [f"{p}spine-{i}" for i in range(spec.spines)]
    leaves = [f"{p}leaf-{i}" for i in range(spec.leaves)]
    hosts = [f"{p}host-{j}" for j in range(spec.leaves * spec.hosts_per_leaf)]
    return spines, leaves, hosts


def expand_leaf_spine(spec: LeafSpineSpec) -> Expansion:
    """A two-tier Clos: every leaf links to every spine, hosts `j*k .. j*k+k-1` to leaf `j`.

    Links come leaf by leaf: the leaf's uplinks (spine order), then its hosts' downlinks.
    """
    spines, leaves, hosts = leaf_spine_names(spec)
    line = spec.line
    nodes = (
        [Node(name, kind="switch", role="spine", line=line) for name in spines]
        + [Node(name, kind="switch", role="leaf", line=line) for name in leaves]
        + [Node(name, kind="host", line=line) for name in hosts]
    )
    up_fwd, up_rev = spec.uplink
    down_fwd, down_rev = spec.downlink
    links: list[Link] = []
    for j, leaf in enumerate(leaves):
        links.extend(Link(leaf, spine, up_fwd, up_rev, line=line) for spine in spines)
        mine = hosts[j * spec.hosts_per_leaf:(j + 1) * spec.hosts_per_leaf]
        links.extend(Link(leaf, host, down_fwd, down_rev, line=line) for host in mine)
    info = LeafSpineInfo(
        prefix=spec.prefix,
        spines=tuple(spines),
        leaves=tuple(leaves),
        hosts=tuple(hosts),
        hosts_per_leaf=spec.hosts_per_leaf,
        uplink_bps=up_fwd.rate_bps,
        downlink_bps=down_fwd.rate_bps,
    )
    return Expansion(nodes=tuple(nodes), links=tuple(links), info=info)
