"""Export a topology as a containerlab lab: one container per node running fabric's node agent.

What maps to what (docs/export.md has the table and the reasons):

- node -> a `kind: linux` container of the fabric node image, its command the node agent,
  a fixed `mgmt-ipv4` on the lab's own management network (containerlab gives it eth0);
- link -> a containerlab link between the two ends' interfaces in fabric's order, each one up
  (fabric's eth0 is the container's eth1), with the link's MTU; a link between two hosts of a
  multi-host export -> a `vxlan` link on each side with one VNI per link;
- addresses, routes (ECMP as multipath `nexthop` routes, as the kernel adapter installs them)
  -> the node's `exec:` commands; the node sysctls (`plan.NODE_SYSCTLS`) -> `sysctls:`, except
  the one containerlab's linux kind overrides, which is an `exec:` command;
- rate, delay, jitter, loss, corrupt per direction -> `containerlab tools netem set` on the
  sending end, in netem.sh. Every other link property, and every section containerlab has no
  knob for, is a warning: the table in `topology/linkprops.py` drives it, so a new property is
  warned about until it is mapped here.

Values are fabric time (what the file states): containerlab runs in real time, so
`time_scale` is not applied, and that is a warning.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import shlex
from collections.abc import Iterable
from typing import Any

import yaml

from ..errors import FabricError
from ..plan import NODE_SYSCTLS, AddRoute, FabricPlan, address_plan, roce_switches
from ..topology.document import Topology
from ..topology.linkprops import LINK_PROPERTIES
from ..topology.model import Link, Shape
from ..units import format_rate
from . import Export, ExportOptions
from .placement import Placement, even_split, load_placement, one_host

__all__ = ["AGENT_PORT", "IMAGE", "NETEM_FLAGS", "NOT_EXPORTED", "export", "fabric_version"]

AGENT_PORT = 7400
SECRET_FILE = "secret"
HOSTS_FILE = "fabric-hosts"  # name -> loopback, appended to each node's /etc/hosts
VXLAN_PORT = 4789  # IANA's VXLAN port
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
UNDERLAY_MTU = 1500
#: containerlab writes --rate into netem's 32-bit bytes-per-second field (netem/netem.go:
#: `uint32(rate * 1000 / 8)`), so a higher rate would wrap around
NETEM_MAX_KBIT = (2**32 - 1) * 8 // 1000
#: the management network: a /24 for labs that fit, else a /16 (nodes from .2, gateway .1)
MGMT_SMALL = ipaddress.IPv4Network("172.100.100.0/24")
MGMT_LARGE = ipaddress.IPv4Network("172.100.0.0/16")
#: sysctls containerlab's linux kind sets itself, over the node's `sysctls:` (nodes/linux:
#: it enables IPv6 on every linux node): these go into `exec:` instead
CLAB_OVERRIDES = frozenset({"net.ipv6.conf.all.disable_ipv6"})

# How each link property (`topology/linkprops.py:LINK_PROPERTIES`) reaches containerlab: as a
# `tools netem set` flag, as the link's `mtu:`, or not at all (with the reason). A property in
# none of these is still warned about, as one this exporter does not know.
NETEM_FLAGS: dict[str, str] = {"rate": "--rate", "delay": "--delay", "jitter": "--jitter",
                               "loss": "--loss", "corrupt": "--corruption"}
LINK_KEYS = frozenset({"mtu"})
NOT_EXPORTED: dict[str, str] = {
    "duplicate": "containerlab's `tools netem set` has no duplicate flag",
    "reorder": "containerlab's `tools netem set` has no reorder flag",
    "queue": ("containerlab's `tools netem set` has no queue flag (its netem holds up to 10000 "
              "packets)"),
    "ecn": ("containerlab has no ECN marking (no RED qdisc): ECT packets are never CE-marked "
            "at the queue threshold"),
}


def fabric_version() -> str:
    """This package's version: what the node image is tagged with and agents.json says."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    try:
        return version("fabric")
    except PackageNotFoundError:
        return __version__


IMAGE = f"fabric-node:{fabric_version()}"


class _Warnings:
    """Warnings in the order found; one per issue, naming the places it applies to."""

    def __init__(self) -> None:
        self._issues: dict[str, list[str]] = {}

    def add(self, issue: str, where: str | None = None) -> None:
        places = self._issues.setdefault(issue, [])
        if where is not None and where not in places:
            places.append(where)

    def render(self) -> list[str]:
        out = []
        for issue, places in self._issues.items():
            if not places:
                out.append(issue)
                continue
            shown = ", ".join(places[:6]) + (f" and {len(places) - 6} more"
                                             if len(places) > 6 else "")
            out.append(f"{issue} ({len(places)}: {shown})")
        return out


def export(topo: Topology, options: ExportOptions) -> Export:
    """`topo` as a containerlab lab on one or several hosts (see the module docstring)."""
    plan = _plan(topo)
    if options.placement is not None:
        placement = load_placement(options.placement, topo)
    elif options.hosts > 1:
        placement = even_split(topo, options.hosts)
    else:
        placement = one_host(topo)
    warn = _Warnings()
    multi = len(placement.hosts) > 1
    mgmt_net = _mgmt_net(len(topo.nodes))
    mgmt = {name: str(mgmt_net.network_address + 2 + j) for j, name in enumerate(topo.nodes)}
    ports = _agent_ports(placement) if multi else {}
    vnis = _vnis(plan, placement)

    _warn_sections(topo, plan, warn)
    netem: dict[str, list[str]] = {h: [] for h in placement.hosts}
    for lp, link in zip(plan.links, topo.links, strict=True):
        for end, shape, arrow in ((lp.a, link.forward, "->"), (lp.b, link.reverse, "<-")):
            flags = _netem_flags(shape, f"{lp.name} {arrow}", warn)
            if flags:
                netem[placement.nodes[end.node]].append(shlex.join(
                    ["containerlab", "tools", "netem", "set", "-n",
                     f"clab-{topo.name}-{end.node}", "-i", _dev(end.dev), *flags]))
        _warn_properties(link, warn)
    if multi:
        for lp in plan.links:
            if lp.link.forward.mtu + VXLAN_OVERHEAD > UNDERLAY_MTU and lp.name in vnis:
                warn.add(f"cross-host links' MTU lowered to {UNDERLAY_MTU - VXLAN_OVERHEAD}: "
                         f"VXLAN adds {VXLAN_OVERHEAD} bytes and the underlay is taken as "
                         f"{UNDERLAY_MTU} bytes (raise the underlay MTU to the link's MTU + "
                         f"{VXLAN_OVERHEAD} and set the vxlan links' mtu: back)",
                         f"{lp.name} mtu {lp.link.forward.mtu}")
        if placement.placeholder:
            warn.add(f"--hosts {len(placement.hosts)}: the hosts' addresses are placeholders "
                     f"({', '.join(a for a in placement.hosts.values() if a)}, TEST-NET-1): "
                     "edit the vxlan `remote:`s in the .clab.yml files and the agents' "
                     "addresses in agents.json, or export with --placement FILE")

    files: dict[str, str] = {}
    for host in placement.hosts:
        name = f"{topo.name}.clab.yml" if not multi else f"{topo.name}-{host}.clab.yml"
        files[name] = _lab(topo, plan, placement, host, mgmt_net, mgmt, ports, vnis)
    files["netem.sh"] = _netem_script(topo, placement, netem)
    files["agents.json"] = json.dumps({
        "fabric": topo.name, "version": fabric_version(), "secret_file": SECRET_FILE,
        "agents": {n: {"address": _agent_address(n, placement, mgmt, ports),
                       "host": placement.nodes[n]} for n in topo.nodes},
    }, indent=2) + "\n"
    files[SECRET_FILE] = secrets.token_hex(32) + "\n"
    files[HOSTS_FILE] = "".join(f"{n.loopback}\t{n.name}\n" for n in plan.nodes.values())
    files["Dockerfile"] = _dockerfile()
    warnings = warn.render()
    files["README.md"] = _readme(topo, options, placement, files, warnings)
    return Export(target="containerlab", files=files, executable={"netem.sh"},
                  private={SECRET_FILE},
                  warnings=warnings)


def _plan(topo: Topology) -> FabricPlan:
    """The plan's names, devices, addresses and routes (`plan.address_plan`): the shapes
    are read from `topo` and checked against containerlab's own limits, not this host's."""
    return address_plan(topo)


# ---- the lab file -----------------------------------------------------------------------


def _dev(fabric_dev: str) -> str:
    """The container's interface for fabric's `ethK`: containerlab keeps eth0 for management."""
    return f"eth{int(fabric_dev.removeprefix('eth')) + 1}"


def _mgmt_net(nodes: int) -> ipaddress.IPv4Network:
    for net in (MGMT_SMALL, MGMT_LARGE):
        if nodes + 3 <= net.num_addresses:  # network, gateway, broadcast
            return net
    raise FabricError(f"{nodes} nodes do not fit containerlab's management network "
                      f"{MGMT_LARGE}")


def _agent_ports(placement: Placement) -> dict[str, int]:
    """Each node's published agent port on its host: 7401, 7402, ... per host."""
    out: dict[str, int] = {}
    for host in placement.hosts:
        for k, node in enumerate(placement.on(host)):
            out[node] = AGENT_PORT + 1 + k
    return out


def _vnis(plan: FabricPlan, placement: Placement) -> dict[str, int]:
    """A VNI per link whose ends are on different hosts: 1000 + the link's index, unique."""
    return {lp.name: 1000 + i for i, lp in enumerate(plan.links)
            if placement.nodes[lp.a.node] != placement.nodes[lp.b.node]}


def _agent_address(node: str, placement: Placement, mgmt: dict[str, str],
                   ports: dict[str, int]) -> str:
    if node not in ports:
        return f"{mgmt[node]}:{AGENT_PORT}"
    address = placement.hosts[placement.nodes[node]] or ""
    if ":" in address:  # IPv6
        address = f"[{address}]"
    return f"{address}:{ports[node]}"


def _route(r: AddRoute, loopbacks: str) -> str:
    """`ip route replace` for one of the plan's routes, as `net/kernel.py` installs it: one
    gateway, or a multipath route with a `nexthop` per gateway. A single-homed node's default
    route becomes a route to the loopback subnet (every fabric address a node sends to), so
    the container's own default route stays on its management interface."""
    dst = loopbacks if r.dst == "default" else r.dst
    if len(r.nexthops) == 1:
        gw, dev = r.nexthops[0]
        return f"ip route replace {dst} via {gw} dev {_dev(dev)} src {r.src}"
    hops = " ".join(f"nexthop via {gw} dev {_dev(dev)}" for gw, dev in r.nexthops)
    return f"ip route replace {dst} src {r.src} {hops}"


def _node_exec(name: str, plan: FabricPlan) -> list[str]:
    node = plan.nodes[name]
    cmds = [f"sysctl -w {key.replace('/', '.')}={value}" for key, value in NODE_SYSCTLS
            if key.replace("/", ".") in CLAB_OVERRIDES]
    cmds.append(f"ip addr replace {node.loopback}/32 dev lo")
    for lp in plan.links:
        for end in (lp.a, lp.b):
            if end.node == name:
                cmds.append(f"ip addr replace {end.address}/{end.prefixlen} dev {_dev(end.dev)}")
                cmds.append(f"ip link set {_dev(end.dev)} up")
    loopbacks = plan.topology.loopback_subnet
    cmds += [_route(r, loopbacks) for r in plan.kernel_routes if r.netns == node.netns]
    cmds.append(f"sh -c 'cat /etc/fabric/{HOSTS_FILE} >> /etc/hosts'")
    return cmds


def _lab(topo: Topology, plan: FabricPlan, placement: Placement, host: str,
         mgmt_net: ipaddress.IPv4Network, mgmt: dict[str, str], ports: dict[str, int],
         vnis: dict[str, int]) -> str:
    here = set(placement.on(host))
    nodes: dict[str, Any] = {}
    sysctls = {key.replace("/", "."): value for key, value in NODE_SYSCTLS
               if key.replace("/", ".") not in CLAB_OVERRIDES}
    for name in placement.on(host):
        node: dict[str, Any] = {
            "kind": "linux", "image": IMAGE, "mgmt-ipv4": mgmt[name],
            "cmd": (f"fabric agent --listen 0.0.0.0:{AGENT_PORT} --secret-file "
                    f"/etc/fabric/{SECRET_FILE} --node {name} --host {host}"),
            "binds": [f"{SECRET_FILE}:/etc/fabric/{SECRET_FILE}:ro",
                      f"{HOSTS_FILE}:/etc/fabric/{HOSTS_FILE}:ro"],
            "sysctls": dict(sysctls),
            "exec": _node_exec(name, plan),
            "labels": {"fabric-node-kind": topo.nodes[name].kind},
        }
        if name in ports:
            node["ports"] = [f"{ports[name]}:{AGENT_PORT}"]
        nodes[name] = node
    links: list[dict[str, Any]] = []
    for lp in plan.links:
        mtu = lp.link.forward.mtu
        if lp.a.node in here and lp.b.node in here:
            links.append({"endpoints": [f"{lp.a.node}:{_dev(lp.a.dev)}",
                                        f"{lp.b.node}:{_dev(lp.b.dev)}"], "mtu": mtu})
            continue
        for me, other in ((lp.a, lp.b), (lp.b, lp.a)):
            if me.node in here:
                remote = placement.hosts[placement.nodes[other.node]]
                links.append({"type": "vxlan",
                              "endpoint": {"node": me.node, "interface": _dev(me.dev)},
                              "remote": remote, "vni": vnis[lp.name], "dst-port": VXLAN_PORT,
                              "mtu": min(mtu, UNDERLAY_MTU - VXLAN_OVERHEAD),
                              "labels": {"fabric-link": lp.name,
                                         "fabric-peer": f"{other.node}:{_dev(other.dev)}"}})
    doc: dict[str, Any] = {
        "name": topo.name,
        "mgmt": {"network": f"fabric-{topo.name}", "ipv4-subnet": str(mgmt_net)},
        "topology": {"nodes": nodes, **({"links": links} if links else {})},
    }
    where = f" (host {host}: {len(nodes)} of {len(topo.nodes)} nodes)" \
        if len(placement.hosts) > 1 else ""
    head = (f"# containerlab lab for fabric topology {topo.name}{where}, written by "
            f"`fabric export --to containerlab` (fabric {fabric_version()}).\n"
            "# Deploy: containerlab deploy -t THIS_FILE, then ./netem.sh (README.md).\n")
    return head + yaml.safe_dump(doc, sort_keys=False, width=10_000)


# ---- impairments --------------------------------------------------------------------------


def _duration(ns: int) -> str:
    """A Go duration containerlab's flag takes: whole ms where exact, else whole us."""
    us = round(ns / 1000)
    return f"{us // 1000}ms" if us % 1000 == 0 else f"{us}us"


def _percent(ppm: int) -> str:
    """ppm as the percentage containerlab's --loss and --corruption take (15000 -> '1.5')."""
    whole, frac = divmod(ppm, 10_000)
    return f"{whole}.{frac:04d}".rstrip("0").rstrip(".")


def _netem_flags(shape: Shape, where: str, warn: _Warnings) -> list[str]:
    """The `tools netem set` flags for one link direction (its sender's egress)."""
    flags: list[str] = []
    rounded = "delays rounded to whole microseconds (containerlab passes netem microseconds)"
    delay_us = round(shape.delay_ns / 1000)
    if shape.delay_ns % 1000 or shape.jitter_ns % 1000:
        warn.add(rounded, where)
    if delay_us:
        flags += [NETEM_FLAGS["delay"], _duration(shape.delay_ns)]
    if round(shape.jitter_ns / 1000):  # the loader keeps jitter <= delay, as --jitter needs
        flags += [NETEM_FLAGS["jitter"], _duration(shape.jitter_ns)]
    if shape.loss_ppm:
        flags += [NETEM_FLAGS["loss"], _percent(shape.loss_ppm)]
    if shape.rate_bps is not None:
        kbit = round(shape.rate_bps / 1000)
        if kbit < 1:
            warn.add("rates below 1 kbit/s are not exported (containerlab's --rate is whole "
                     "kbit/s; 0 means unlimited)", f"{where} {format_rate(shape.rate_bps)}")
        else:
            if kbit > NETEM_MAX_KBIT:
                warn.add(f"rates above {format_rate(NETEM_MAX_KBIT * 1000)} capped at "
                         f"{NETEM_MAX_KBIT} kbit/s (containerlab writes --rate into netem's "
                         "32-bit bytes/s field)", f"{where} {format_rate(shape.rate_bps)}")
                kbit = NETEM_MAX_KBIT
            elif kbit * 1000 != shape.rate_bps:
                warn.add("rates rounded to whole kbit/s (containerlab's --rate unit)", where)
            flags += [NETEM_FLAGS["rate"], str(kbit)]
    if shape.corrupt_ppm:
        flags += [NETEM_FLAGS["corrupt"], _percent(shape.corrupt_ppm)]
    return flags


def _warn_properties(link: Link, warn: _Warnings) -> None:
    """Every link property the link sets that containerlab cannot express, by the table."""
    for prop in LINK_PROPERTIES:
        if prop.key in NETEM_FLAGS or prop.key in LINK_KEYS:
            continue
        reason = NOT_EXPORTED.get(prop.key, "the containerlab exporter does not map it")
        for shape, arrow in ((link.forward, "->"), (link.reverse, "<-")):
            if prop.is_set(shape):
                warn.add(f"link {prop.label} not exported: {reason}", f"{link.name} {arrow}")


def _netem_script(topo: Topology, placement: Placement, netem: dict[str, list[str]]) -> str:
    lines = ["#!/bin/sh",
             f"# Link impairments of fabric topology {topo.name}, per direction on the sending",
             "# end (containerlab tools netem set; needs root). Run after containerlab deploy.",
             "# Values are the file's own (fabric time): time_scale is not applied.",
             "set -e"]
    if len(placement.hosts) == 1:
        lines += netem[next(iter(placement.hosts))] or [": # no link sets an impairment"]
        return "\n".join(lines) + "\n"
    names = " ".join(placement.hosts)
    lines += ["# Several hosts: run it on each host with that host's name.", 'case "${1:-}" in']
    for host, cmds in netem.items():
        lines.append(f"  {host})")
        lines += [f"    {c}" for c in cmds] or ["    :"]
        lines.append("    ;;")
    lines += [f'  *) echo "usage: $0 HOST (one of: {names})" >&2; exit 2 ;;', "esac"]
    return "\n".join(lines) + "\n"


# ---- what containerlab cannot express ----------------------------------------------------


def _warn_sections(topo: Topology, plan: FabricPlan, warn: _Warnings) -> None:
    if topo.time_scale != 1:
        warn.add(f"time_scale {topo.time_scale:g} is not applied: containerlab runs in real "
                 "time, so links get the file's own (fabric-time) rates and delays and a run's "
                 "figures are wall-clock; to emulate the scaled host instead, edit netem.sh "
                 f"(rate / {topo.time_scale:g}, delays x {topo.time_scale:g})")
    if topo.events is not None:
        warn.add(f"events: ({len(topo.events.steps)} steps) not exported: containerlab has no "
                 "timeline; apply them with `containerlab tools netem set` and `ip link set "
                 "... down` inside the nodes, and routing does not reconverge by itself")
    if topo.expect:
        warn.add(f"expect: ({len(topo.expect)} lines) is judged by `fabric run --agents`: "
                 "figures that need this host's link or switch counters fail there")
    roce = roce_switches(topo)
    if roce:
        warn.add("RoCE switches (`switches:`) forward in their container's kernel: fabric's "
                 "switch process (python -m fabric.switch.node CONFIG.json) is not run, so its "
                 "per-class queues, ECN marking, PFC pauses, INT and shared buffer are not "
                 "emulated; netem sets their ports' rate", None)
        for name in roce:
            warn.add("RoCE switch nodes exported as plain forwarding containers", name)
    if topo.memory is not None:
        for name in topo.memory.switches:
            warn.add("memory switches (`memory:`) are not exported: fabric's memory-switch "
                     "process (python -m fabric.memsw.node) is not run, so load/store, "
                     "Hypercast and reduce do not happen; the switch nodes forward IP in the "
                     "kernel", name)
    if topo.lpu is not None:
        warn.add("the `lpu:` section's schedule assumes each link serialises exactly one "
                 "slot per batch (fabric's link engine does); netem's rate under containerlab "
                 "is not slot-exact, so arrivals against the plan are not comparable")
    marked = [c.name for c in topo.classes
              if c.red is not None or c.lossless or c.strict or c.weight != 1]
    for name in marked:
        warn.add("traffic classes' switch settings (ECN kmin/kmax, lossless/PFC, strict "
                 "priority, weights) are not emulated: they act only in fabric's RoCE switch "
                 "process; DSCP is still set by the senders", name)


# ---- the other files -----------------------------------------------------------------------


def _dockerfile() -> str:
    version = fabric_version()
    return f"""\
# The fabric node image: Python 3.11, iproute2 and this package; starts the node agent.
# Build it from a fabric checkout (the build context):
#   docker build -t fabric-node:{version} -f DIR/Dockerfile /path/to/fabric-checkout
FROM python:3.11-slim
RUN apt-get update \\
    && apt-get install -y --no-install-recommends iproute2 procps ethtool \\
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY fabric /src/fabric
RUN pip install --no-cache-dir /src && rm -rf /src
EXPOSE {AGENT_PORT}
# each lab node overrides this with its own --node NAME (the topology's cmd:)
CMD ["fabric", "agent", "--listen", "0.0.0.0:{AGENT_PORT}", \\
     "--secret-file", "/etc/fabric/{SECRET_FILE}"]
"""


def _bullets(items: Iterable[str]) -> str:
    return "\n".join(f"- {i}" for i in items) or "- none"


def _readme(topo: Topology, options: ExportOptions, placement: Placement,
            files: dict[str, str], warnings: list[str]) -> str:
    version = fabric_version()
    source = options.command_file or topo.source
    labs = sorted(f for f in files if f.endswith(".clab.yml"))
    multi = len(placement.hosts) > 1
    if multi:
        per_host = "\n".join(
            f"   - on `{h}` ({a}): `sudo containerlab deploy -t {topo.name}-{h}.clab.yml` then "
            f"`sudo ./netem.sh {h}`" for h, a in placement.hosts.items())
        deploy = f"""\
## Deploy on several hosts

The nodes are spread over {len(placement.hosts)} hosts, one lab file each. A link between
two hosts is a containerlab `vxlan` link on each side (the same VNI on both, UDP port
{VXLAN_PORT}, `remote:` the other host's underlay address); links within a host are veth
pairs. Copy this directory to every host, build (or load) the image on each, then:

{per_host}

The hosts must reach each other's underlay addresses over UDP {VXLAN_PORT}, and the machine
that runs `fabric run` must reach each host's published agent ports (7401 and up, listed in
agents.json).
"""
    else:
        deploy = f"""\
## Deploy on one host

```sh
sudo containerlab deploy -t {labs[0]}
sudo ./netem.sh
```
"""
    return f"""\
# {topo.name}: fabric topology exported to containerlab

Written by `fabric export --to containerlab` (fabric {version}) from `{source}`.
Files: {", ".join(f"`{f}`" for f in sorted(files) if f != "README.md")}.

Each node is a `kind: linux` container of the image `{IMAGE}` running the fabric node agent
(`fabric agent --listen 0.0.0.0:{AGENT_PORT} --secret-file /etc/fabric/{SECRET_FILE} --node
NODE`). Its addresses, routes and sysctls are set by the lab file (`exec:`, `sysctls:`); the
link impairments by `netem.sh`. Fabric's `eth0` of a node is the container's `eth1`
(containerlab gives eth0 to the management network `fabric-{topo.name}`).

**`{SECRET_FILE}` is the agents' key: keep it private** (anyone holding it can drive the
agents). It is bind-mounted read-only into every node.

## Build the node image

```sh
docker build -t {IMAGE} -f DIR/Dockerfile /path/to/fabric-checkout
```

(DIR is this directory; the build context is a fabric source checkout.)

{deploy}
## Kubernetes (clabernetes)

clabernetes ("c9s") deploys a containerlab topology onto a Kubernetes cluster: `clabverter`
turns the lab file into a `Topology` resource (`clabverter --stdout --naming non-prefixed |
kubectl apply -f -`, run in this directory), each node then runs in a launcher pod of its own,
and links between pods become VXLAN tunnels clabernetes sets up itself (containerlab's docs,
docs/manual/clabernetes). Give it the single-host lab file (export without --hosts: the
cluster does the placement) and push `{IMAGE}` to a registry the cluster pulls from. Each
node gets a LoadBalancer service with clabernetes' default ports, which do not include
{AGENT_PORT}: add it to the Topology's exposed ports and put the services' addresses into
agents.json. Not checked here: that the bind-mounted `{SECRET_FILE}` and `{HOSTS_FILE}`, the
`exec:` commands and `netem.sh` (`tools netem` runs on the launcher, not on this host) carry
over unchanged.

## Run

```sh
fabric run --agents DIR/agents.json {source}
```

`agents.json` names each node's agent address and host; `secret_file` is relative to it.

## Warnings: what containerlab does not express

{_bullets(warnings)}
"""
