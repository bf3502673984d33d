"""Read a topology file into a validated `Topology`, or fail with `FILE:LINE: key: message`.

We ask PyYAML only to *compose* the document (a tree of nodes that still carry their line
numbers) and walk that tree ourselves, rather than loading it into plain dicts, because:

- every error can then name the line of the offending key or value, not just the file;
- duplicate mapping keys, which `yaml.safe_load` silently merges (the second node `a:` would
  replace the first), are visible in the tree and become errors;
- unknown keys are caught wherever they are, so a typo like `dealy:` never silently means
  "no delay".

The walk is strict and fails on the first problem: one clear message beats a list of knock-on
errors. Link properties resolve in layers, `Shape()` <- `defaults.link` <- a generator's
`uplink`/`downlink` <- the link's own keys, and the reverse direction is the resolved forward
one with the link's `reverse:` overrides on top.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode

from fabric.errors import TopologyError
from fabric.topology.document import Topology
from fabric.topology.gate import compose, read_input
from fabric.topology.generators import LeafSpineSpec, expand_leaf_spine, leaf_spine_names
from fabric.topology.linkprops import (
    LINK_PROPERTIES,
    property_keys,
    reverse_keys,
    shape_conflict,
)
from fabric.topology.model import (
    DEFAULT_CLASSES,
    DEFAULT_CONTROL_CLASS,
    NODE_KINDS,
    LeafSpineInfo,
    Link,
    Node,
    Shape,
    SwitchSettings,
    TrafficClass,
)
from fabric.topology.walker import (
    NAME_RE,
    NAME_RULE,
    Entries,
    Walker,
    join_path,
    line_of,
)
from fabric.units import (
    format_size,
    format_time,
    parse_size,
)

__all__ = ["MAX_LINKS", "MAX_NODES", "NAME_RE", "TIME_SCALE_MAX", "TIME_SCALE_MIN",
           "load_topology", "parse_topology"]

#: a topology's size: ten times the 1,000-namespace fabric one host can build
MAX_NODES, MAX_LINKS = 10_000, 50_000
TIME_SCALE_MIN, TIME_SCALE_MAX = 0.001, 10_000.0

_PROPERTY = {p.key: p for p in LINK_PROPERTIES}

_TOP_KEYS = ("name", "time_scale", "addressing", "defaults", "classes", "nodes", "generate",
             "links", "traffic", "lpu", "prfaas", "switches", "memory", "expect", "events",
             "models", "workload")
_CLASS_KEYS = ("name", "dscp", "priority", "lossless", "tcp_cc", "weight", "strict", "ecn", "cc",
               "cc_params", "control", "queue")
_SWITCH_KEYS = ("buffer", "buffer_mode", "pfc", "xoff", "xon", "int")
_LINK_PROPS = property_keys()
_REVERSE_PROPS = reverse_keys()
_LINK_KEYS = ("endpoints", *_LINK_PROPS, "reverse")
_GEN_LINK_KEYS = (*_LINK_PROPS, "reverse")
_LEAF_SPINE_KEYS = ("prefix", "spines", "leaves", "hosts_per_leaf", "uplink", "downlink")
_GENERATORS = ("leaf_spine",)
_REVERSE_HINTS = {**{p.key: f"the {p.key} is per link, the same in both directions"
                     for p in LINK_PROPERTIES if not p.per_direction},
                  "endpoints": "a reverse block only overrides properties"}



def load_topology(path: str | Path) -> Topology:
    """Read and validate the topology file at `path`; errors name the file as given."""
    return parse_topology(read_input(path), source=str(path))


def parse_topology(text: str, source: str = "<string>") -> Topology:
    """Validate topology YAML `text`; `source` is the file name used in error messages."""
    root = compose(text, source)
    topo = _Parser(source).topology(root)
    return replace(topo, sha256=hashlib.sha256(text.encode()).hexdigest())


class _Parser(Walker):
    """Walks one document top-down, building the Topology section by section."""

    def topology(self, root: yaml.Node | None) -> Topology:
        if root is None:
            raise TopologyError("the file is empty: a topology needs at least `name:` and "
                                "`nodes:`", file=self.source)
        top = self.mapping(root, "", _TOP_KEYS, required=("name",))
        name = self.name(top["name"][1], "name", "topology name")

        time_scale = 1.0
        if "time_scale" in top:
            time_scale = self._time_scale(top["time_scale"][1])

        # models first: every section that names a model may name one the file defines
        from fabric.kv.models import use_file_models

        models: dict[str, Any] = {}
        if "models" in top:
            from fabric.topology.models import parse_models

            models = parse_models(self, top["models"][1])
        use_file_models(models)

        link_net, loop_net = self._addressing(top.get("addressing"))
        defaults = self._defaults(top.get("defaults"))
        classes: tuple[TrafficClass, ...] = DEFAULT_CLASSES
        if "classes" in top:
            classes = self._classes(top["classes"][1])

        switches = None
        if "switches" in top:
            switches = self._switches(top["switches"][1])

        nodes: dict[str, Node] = {}
        if "nodes" in top:
            nodes = self._nodes(top["nodes"][1])

        links: list[Link] = []
        # Explicit links may name generated nodes, so generators expand first; their links
        # are kept aside and appended after the explicit ones (nodes: explicit, then generated).
        generated: list[Link] = []
        leaf_spines: list[LeafSpineInfo] = []
        if "generate" in top:
            for info, gen_links in self._generate(top["generate"][1], nodes, defaults):
                leaf_spines.append(info)
                generated.extend(gen_links)

        lpu = None
        if "lpu" in top:
            from fabric.topology.lpu import parse_lpu

            lpu, lpu_nodes, lpu_links = parse_lpu(self, top["lpu"][1])
            for n in lpu_nodes:
                if n.name in nodes:
                    raise self.error(top["lpu"][0], "lpu", f"the lpu section makes node "
                                     f"'{n.name}', which is already defined at line "
                                     f"{nodes[n.name].line}")
                nodes[n.name] = n
            generated.extend(lpu_links)

        if not nodes:
            raise self.error(root, "nodes", "the topology has no nodes: add `nodes:` or a "
                             "`generate:` entry")
        if len(nodes) > MAX_NODES:
            raise self.error(top["nodes"][0] if "nodes" in top else root, "nodes",
                             f"{len(nodes):,} nodes: a topology has at most {MAX_NODES:,}")

        seen: dict[frozenset[str], int | None] = {
            frozenset((link.a, link.b)): link.line for link in generated}
        if "links" in top:
            path = "links"
            for i, item in enumerate(self.sequence(top["links"][1], path)):
                link = self._link(item, f"{path}[{i}]", nodes, defaults)
                pair = frozenset((link.a, link.b))
                if pair in seen:
                    raise self.error(item, f"{path}[{i}]", f"a link between '{link.a}' and "
                                     f"'{link.b}' already exists (line {seen[pair]}); "
                                     "parallel links are not supported")
                seen[pair] = link.line
                links.append(link)
                if len(links) + len(generated) > MAX_LINKS:
                    raise self.error(item, f"{path}[{i}]", f"more than {MAX_LINKS:,} links: "
                                     "a topology has at most that many")

        traffic = None
        if "traffic" in top:
            from fabric.topology.traffic import check_reachable, parse_traffic

            traffic = replace(parse_traffic(self, top["traffic"][1], nodes, classes),
                              line=line_of(top["traffic"][0]))
            check_reachable(traffic, links + generated, self.source)

        if switches is not None or (traffic is not None
                                    and any(f.transport == "roce" for f in traffic.flows)):
            self._control(classes)

        prfaas = None
        if "prfaas" in top:
            from fabric.topology.prfaas import parse_prfaas

            prfaas = parse_prfaas(self, top["prfaas"][1], nodes, links + generated)

        memory = None
        if "memory" in top:
            from fabric.topology.memory import parse_memory

            memory = parse_memory(self, top["memory"][1], nodes, links + generated)

        workload = None
        if "workload" in top:
            from fabric.topology.workload import parse_workload

            workload = parse_workload(self, top["workload"][1], nodes, links + generated,
                                      classes)

        events = None
        if "events" in top:
            from fabric.topology.events import parse_events

            events = parse_events(self, top["events"][1], nodes, tuple(links + generated))

        expect: tuple[Any, ...] = ()
        if "expect" in top:  # figure names are checked by `fabric.kinds.load`
            from fabric.topology.expect import parse_expect

            expect = parse_expect(self, top["expect"][1])

        return Topology(
            name=name,
            nodes=nodes,
            traffic=traffic,
            lpu=lpu,
            prfaas=prfaas,
            workload=workload,
            models=models,
            switches=switches,
            memory=memory,
            expect=expect,
            events=events,
            links=tuple(links + generated),
            classes=classes,
            time_scale=time_scale,
            source=self.source,
            link_subnet=link_net,
            loopback_subnet=loop_net,
            leaf_spines=tuple(leaf_spines),
        )

    # ---- sections -----------------------------------------------------------------------

    def _time_scale(self, node: yaml.Node) -> float:
        what = "a number > 0 (links run N times slower and longer on the host)"
        value = self.number(node, "time_scale", -math.inf, math.inf, what)
        if value <= 0:
            raise self.error(node, "time_scale", f"expected {what}, got {self.describe(node)}")
        if not TIME_SCALE_MIN <= value <= TIME_SCALE_MAX:
            raise self.error(node, "time_scale", f"time_scale {value:g} is outside "
                             f"{TIME_SCALE_MIN:g}..{TIME_SCALE_MAX:g}")
        return value

    def _addressing(self, entry: tuple[yaml.Node, yaml.Node] | None) -> tuple[str, str]:
        nets = {"links": Topology.link_subnet, "loopbacks": Topology.loopback_subnet}
        if entry is None:
            return nets["links"], nets["loopbacks"]
        parsed: dict[str, ipaddress.IPv4Network] = {k: ipaddress.IPv4Network(v)
                                                    for k, v in nets.items()}
        fields = self.mapping(entry[1], "addressing", ("links", "loopbacks"))
        for key, (_, node) in fields.items():
            path = f"addressing.{key}"
            text = self.text(node, path, "an IPv4 network such as 198.18.0.0/16")
            try:
                if "/" not in text:
                    raise ValueError("needs a prefix length, such as /16")
                parsed[key] = ipaddress.IPv4Network(text)
            except ValueError as e:
                raise self.error(node, path, f"bad IPv4 network '{text}': {e}") from None
            net = parsed[key]
            if net.is_loopback or net.is_multicast or net.is_link_local or \
                    net.is_unspecified or net.network_address.is_reserved or \
                    net.overlaps(ipaddress.IPv4Network("0.0.0.0/8")):  # "this network"
                raise self.error(node, path, f"{net} is a special-purpose range (loopback, "
                                 "multicast, link-local or reserved): use a private or "
                                 "benchmarking range such as 198.18.0.0/16")
        if parsed["links"].overlaps(parsed["loopbacks"]):
            where = fields.get("loopbacks") or fields["links"]
            raise self.error(where[1], f"addressing.{where[0].value}",
                             f"link subnet {parsed['links']} overlaps loopback subnet "
                             f"{parsed['loopbacks']}")
        return str(parsed["links"]), str(parsed["loopbacks"])

    def _defaults(self, entry: tuple[yaml.Node, yaml.Node] | None) -> dict[str, Any]:
        if entry is None:
            return {}
        fields = self.mapping(entry[1], "defaults", ("link",))
        if "link" not in fields:
            return {}
        props = self.mapping(fields["link"][1], "defaults.link", _LINK_PROPS)
        return self._props(props, "defaults.link")

    def _classes(self, node: yaml.Node) -> tuple[TrafficClass, ...]:
        items = self.sequence(node, "classes")
        if not items:
            raise self.error(node, "classes", "the list is empty; leave `classes:` out for the "
                             "single default class")
        out: list[TrafficClass] = []
        names: dict[str, TrafficClass] = {}
        dscps: dict[int, TrafficClass] = {}
        marked_at: dict[int, yaml.Node] = {}  # classes that say `control:`, its value
        for i, item in enumerate(items):
            path = f"classes[{i}]"
            f = self.mapping(item, path, _CLASS_KEYS, required=("name",))
            name = self.name(f["name"][1], f"{path}.name", "class name")
            if name in names:
                raise self.error(f["name"][1], f"{path}.name", f"duplicate class name '{name}' "
                                 f"(first at line {names[name].line})")
            dscp = priority = 0
            lossless = False
            if "dscp" in f:
                dscp = self.integer(f["dscp"][1], f"{path}.dscp", 0, 63, "a DSCP value 0..63",
                                    "DSCP")
            if dscp in dscps:
                # Switches classify by DSCP, so two classes on one code point can't be told apart.
                other = dscps[dscp]
                node_, path_, note = ((f["dscp"][1], f"{path}.dscp", "") if "dscp" in f
                                      else (item, path, " (the default)"))
                raise self.error(node_, path_, f"DSCP {dscp}{note} is already used by class "
                                 f"'{other.name}' (line {other.line}); give each class its own")
            if "priority" in f:
                priority = self.integer(f["priority"][1], f"{path}.priority", 0, 7,
                                        "a priority 0..7", "priority")
            if "lossless" in f:
                lossless = self.boolean(f["lossless"][1], f"{path}.lossless")
            tcp_cc = None
            if "tcp_cc" in f:
                tcp_cc = self.name(f["tcp_cc"][1], f"{path}.tcp_cc", "TCP congestion control")
            weight = 1
            if "weight" in f:
                weight = self.integer(f["weight"][1], f"{path}.weight", 1, 1000,
                                      "a round-robin weight 1..1000", "weight")
            strict = False
            if "strict" in f:
                strict = self.boolean(f["strict"][1], f"{path}.strict")
            red = self._red(f["ecn"][1], f"{path}.ecn") if "ecn" in f else None
            cc, cc_params = self._cc(f, path)
            # The RoCE control class: marked, or by its name (see `_control`).
            control = name == DEFAULT_CONTROL_CLASS.name
            if "control" in f:
                control = self.boolean(f["control"][1], f"{path}.control")
                marked_at[i] = f["control"][1]
            queue = None
            if "queue" in f:
                queue = self.unit(f["queue"][1], f"{path}.queue", parse_size,
                                  "a size such as 64KB")
                if queue <= 0:
                    raise self.error(f["queue"][1], f"{path}.queue", "a class's queue must "
                                     "hold at least one packet: give a size above 0, or leave "
                                     "`queue:` out for no limit but the buffer")
                if lossless:
                    raise self.error(f["queue"][1], f"{path}.queue", "a lossless class has "
                                     "no queue limit of its own: PFC pauses it before the "
                                     "buffer fills, where a limit would drop it; drop `queue:`")
            tc = TrafficClass(name=name, dscp=dscp, priority=priority, lossless=lossless,
                              tcp_cc=tcp_cc, weight=weight, strict=strict, red=red, cc=cc,
                              cc_params=cc_params, control=control, queue_bytes=queue,
                              line=line_of(item),
                              cc_line=line_of(f["cc"][1]) if "cc" in f else None,
                              cc_params_line=line_of(f["cc_params"][0]) if "cc_params" in f
                              else None)
            dscps[dscp] = tc
            names[name] = tc
            out.append(tc)
        # The RoCE control class: the one marked `control: true`, else the one named
        # `control` (the name alone yields to a mark, so a file may call another class that).
        explicit = [i for i in marked_at if out[i].control]
        if explicit:
            out = [replace(c, control=False) if c.control and i not in explicit else c
                   for i, c in enumerate(out)]
        marked = [i for i, c in enumerate(out) if c.control]
        if len(marked) > 1:
            first, i = out[marked[0]], marked[1]
            raise self.error(marked_at[i], f"classes[{i}].control", f"class '{out[i].name}' "
                             f"is marked as the RoCE control class, but so is '{first.name}' "
                             f"(line {first.line}); CNPs, ACKs and NAKs go in one class")
        for i in marked:
            if out[i].lossless:
                raise self.error(items[i], f"classes[{i}]", f"class '{out[i].name}' is the "
                                 "RoCE control class (CNPs, ACKs and NAKs) and cannot be "
                                 "lossless: a PFC pause would hold back the very packets that "
                                 "relieve congestion; drop `lossless:`, or make another class "
                                 "the control class (`control: true`)")
        return tuple(out)

    def _control(self, classes: tuple[TrafficClass, ...]) -> None:
        """A file that runs RoCE (switches or RoCE flows) and declares no control class gets
        `DEFAULT_CONTROL_CLASS`: its name, DSCP and (lossy) priority must be free for it."""
        if any(c.control for c in classes):
            return
        d = DEFAULT_CONTROL_CLASS
        for i, c in enumerate(classes):
            fix = ("; declare the control class yourself: `control: true` on a class with a "
                   "free DSCP")
            if c.name == d.name:
                problem = (f"class '{c.name}' has `control: false`, but '{d.name}' is the name "
                           "of the default RoCE control class (CNPs, ACKs and NAKs)")
                fix = "; rename this class, or mark one `control: true`"
            elif c.dscp == d.dscp:
                problem = (f"class '{c.name}' uses DSCP {d.dscp}, the default RoCE control "
                           "class's (CNPs, ACKs and NAKs)")
            elif c.priority == d.priority and c.lossless:
                problem = (f"lossless class '{c.name}' uses priority {d.priority}, the "
                           "default RoCE control class's, which is lossy (PFC pauses a whole "
                           "priority)")
            else:
                continue
            raise TopologyError(problem + fix, file=self.source, line=c.line,
                                key=f"classes[{i}]")

    def _red(self, node: yaml.Node, path: str) -> tuple[int, int, float] | None:
        """A class's `ecn: {kmin, kmax, pmax}` (RED-style marking at RoCE switches)."""
        if self.is_null(node) or (isinstance(node, ScalarNode)
                                  and self.scalar(node, path, "a mapping") is False):
            return None
        f = self.mapping(node, path, ("kmin", "kmax", "pmax"), required=("kmin", "kmax"))
        kmin = self.unit(f["kmin"][1], f"{path}.kmin", parse_size, "a size such as 100KB")
        kmax = self.unit(f["kmax"][1], f"{path}.kmax", parse_size, "a size such as 400KB")
        if kmax < kmin:
            raise self.error(f["kmax"][1], f"{path}.kmax", f"kmax {format_size(kmax)} is below "
                             f"kmin {format_size(kmin)}")
        pmax = 0.2  # DCQCN's and the HPCC simulator's default
        if "pmax" in f:
            value = self.scalar(f["pmax"][1], f"{path}.pmax", "a probability 0..1")
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not 0 <= value <= 1:
                raise self.error(f["pmax"][1], f"{path}.pmax", "expected a marking "
                                 f"probability from 0 to 1, got {self.describe(f['pmax'][1])}")
            pmax = float(value)
        return kmin, kmax, pmax

    def _cc(self, f: Entries, path: str) -> tuple[str, tuple[tuple[str, float | int], ...]]:
        """A class's RoCE congestion control, as written, and its numeric parameter overrides.
        The name and the parameters are checked against the policy when the file is loaded
        through `fabric.kinds.load` (the RoCE kind's `validate`), at these lines."""
        cc = "none"
        if "cc" in f:
            cc = self.text(f["cc"][1], f"{path}.cc").strip()
        params: dict[str, float | int] = {}
        if "cc_params" in f:
            entries = self.mapping(f["cc_params"][1], f"{path}.cc_params", (), what="parameter")
            for key, (_, value_node) in entries.items():
                value = self.scalar(value_node, f"{path}.cc_params.{key}", "a number")
                if isinstance(value, bool) or not isinstance(value, int | float) \
                        or not -1e18 <= value <= 1e18:  # also refuses nan and inf
                    raise self.error(value_node, f"{path}.cc_params.{key}", "expected a number, "
                                     f"got {self.describe(value_node)}")
                params[key] = value
        return cc, tuple(sorted(params.items()))

    def _switches(self, node: yaml.Node) -> SwitchSettings:
        path = "switches"
        f = self.mapping(node, path, _SWITCH_KEYS)
        kw: dict[str, Any] = {"line": line_of(node)}
        if "buffer" in f:
            kw["buffer_bytes"] = self.unit(f["buffer"][1], f"{path}.buffer", parse_size,
                                           "a size such as 4MiB")
            if kw["buffer_bytes"] < 16 * 1024:
                raise self.error(f["buffer"][1], f"{path}.buffer", "a switch buffer needs at "
                                 "least 16KiB")
        if "buffer_mode" in f:
            kw["buffer_mode"] = self.choice(f["buffer_mode"][1], f"{path}.buffer_mode",
                                            ("shared", "per_port"), "buffer mode")
        if "pfc" in f:
            kw["pfc"] = self.boolean(f["pfc"][1], f"{path}.pfc")
        if "int" in f:
            kw["int_enabled"] = self.boolean(f["int"][1], f"{path}.int")
        for key in ("xoff", "xon"):
            if key in f and not (isinstance(f[key][1], ScalarNode) and f[key][1].value == "auto"):
                kw[f"{key}_bytes"] = self.unit(f[key][1], f"{path}.{key}", parse_size,
                                               "a size such as 64KB, or auto")
        xoff, xon = kw.get("xoff_bytes"), kw.get("xon_bytes")
        if xoff is not None and xon is not None and xon > xoff:
            raise self.error(f["xon"][1], f"{path}.xon", f"xon {format_size(xon)} is above "
                             f"xoff {format_size(xoff)}: a paused port would never resume "
                             "before it pauses again")
        return SwitchSettings(**kw)

    def _nodes(self, node: yaml.Node) -> dict[str, Node]:
        nodes: dict[str, Node] = {}
        for name, (key_node, value_node) in self.mapping(node, "nodes", (), what="node").items():
            path = f"nodes.{name}"
            self.name(key_node, path, "node name")
            props = self.mapping(value_node, path, ("kind", "role"))
            kind = "host"
            role = None
            if "kind" in props:
                kind = self.text(props["kind"][1], f"{path}.kind", "host or switch")
                if kind not in NODE_KINDS:
                    raise self.error(props["kind"][1], f"{path}.kind", f"unknown kind '{kind}' "
                                     f"(expected one of: {', '.join(NODE_KINDS)})")
            if "role" in props and not self.is_null(props["role"][1]):
                role = self.text(props["role"][1], f"{path}.role")
            nodes[name] = Node(name=name, kind=kind, role=role, line=line_of(key_node))
        return nodes

    def _generate(self, node: yaml.Node, nodes: dict[str, Node],
                  defaults: dict[str, Any]) -> list[tuple[LeafSpineInfo, tuple[Link, ...]]]:
        """Expand every generator in order, adding its nodes to `nodes` (checked for clashes)."""
        out = []
        for i, item in enumerate(self.sequence(node, "generate")):
            path = f"generate[{i}]"
            if not isinstance(item, MappingNode) or len(item.value) != 1:
                raise self.error(item, path, "a generator entry is a mapping with one key, the "
                                 f"generator's name ({', '.join(_GENERATORS)})")
            kind = self.mapping(item, path, _GENERATORS)
            gen_key, body = kind["leaf_spine"]
            spec, prefix_node = self._leaf_spine(body, f"{path}.leaf_spine", line_of(gen_key),
                                                 defaults)
            spines, leaves, hosts = leaf_spine_names(spec)
            for made in (*spines, *leaves, *hosts):
                if not NAME_RE.match(made):
                    raise self.error(prefix_node or gen_key, f"{path}.leaf_spine.prefix",
                                     f"prefix '{spec.prefix}' makes the bad node name '{made}' "
                                     f"(node names: {NAME_RULE})")
                if made in nodes:
                    raise self.error(gen_key, f"{path}.leaf_spine", f"this generator makes node "
                                     f"'{made}', which is already defined at line "
                                     f"{nodes[made].line}; give it a different prefix")
            expansion = expand_leaf_spine(spec)
            nodes.update((n.name, n) for n in expansion.nodes)
            out.append((expansion.info, expansion.links))
        return out

    def _leaf_spine(self, node: yaml.Node, path: str, line: int,
                    defaults: dict[str, Any]) -> tuple[LeafSpineSpec, yaml.Node | None]:
        f = self.mapping(node, path, _LEAF_SPINE_KEYS,
                         required=("spines", "leaves", "hosts_per_leaf"))
        prefix = ""
        prefix_node = None
        if "prefix" in f and not self.is_null(f["prefix"][1]):
            prefix_node = f["prefix"][1]
            prefix = self.text(prefix_node, f"{path}.prefix")
        counts = {key: self.integer(f[key][1], f"{path}.{key}", 1, what="a count >= 1",
                                    label=key)
                  for key in ("spines", "leaves", "hosts_per_leaf")}
        made = counts["spines"] + counts["leaves"] * (1 + counts["hosts_per_leaf"])
        wired = counts["leaves"] * (counts["spines"] + counts["hosts_per_leaf"])
        if made > MAX_NODES or wired > MAX_LINKS:
            raise self.error(node, path, f"this leaf-spine makes {made:,} nodes and {wired:,} "
                             f"links; a topology has at most {MAX_NODES:,} nodes and "
                             f"{MAX_LINKS:,} links")
        shapes = {}
        for key, label in (("uplink", "leaf->spine"), ("downlink", "leaf->host")):
            if key in f:
                body = f[key][1]
                shapes[key] = self._shapes(body, f"{path}.{key}", _GEN_LINK_KEYS, defaults)
            else:  # defaults alone; still checked, as they now describe real links
                body = node
                shapes[key] = (Shape(**defaults),) * 2
            self._check_shapes(*shapes[key], body, f"{path}.{key}", label)
        spec = LeafSpineSpec(prefix=prefix, uplink=shapes["uplink"],
                             downlink=shapes["downlink"], line=line, **counts)
        return spec, prefix_node

    def _link(self, node: yaml.Node, path: str, nodes: dict[str, Node],
              defaults: dict[str, Any]) -> Link:
        f = self.mapping(node, path, _LINK_KEYS, required=("endpoints",))
        ends_node = f["endpoints"][1]
        ends = self.sequence(ends_node, f"{path}.endpoints")
        if len(ends) != 2:
            raise self.error(ends_node, f"{path}.endpoints", "expected a list of exactly two "
                             f"node names, such as [a, b]; got {len(ends)}")
        names = []
        for end in ends:
            name = self.text(end, f"{path}.endpoints", "a node name")
            if name not in nodes:
                close = difflib.get_close_matches(name, list(nodes), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise self.error(end, f"{path}.endpoints", f"unknown node '{name}'{hint}")
            names.append(name)
        a, b = names
        if a == b:
            raise self.error(ends_node, f"{path}.endpoints", f"a link from '{a}' to itself")
        forward, reverse = self._shapes(node, path, _LINK_KEYS, defaults, entries=f)
        self._check_shapes(forward, reverse, node, path, f"{a}->{b}")
        return Link(a=a, b=b, forward=forward, reverse=reverse, line=line_of(node))

    # ---- link properties ----------------------------------------------------------------

    def _shapes(self, node: yaml.Node, path: str, keys: tuple[str, ...],
                defaults: dict[str, Any], entries: Entries | None = None
                ) -> tuple[Shape, Shape]:
        """(forward, reverse) for a link body: defaults <- own keys; reverse <- `reverse:`."""
        f = entries if entries is not None else self.mapping(node, path, keys)
        own = self._props({k: v for k, v in f.items() if k in _LINK_PROPS}, path)
        forward = Shape(**{**defaults, **own})
        reverse = forward
        if "reverse" in f:
            rpath = join_path(path, "reverse")
            rev = self.mapping(f["reverse"][1], rpath, _REVERSE_PROPS, hints=_REVERSE_HINTS)
            reverse = replace(forward, **self._props(rev, rpath))
        return forward, reverse

    def _props(self, f: Entries, path: str) -> dict[str, Any]:
        """Parse link property keys into `Shape` field values (only the keys present)."""
        out: dict[str, Any] = {}
        for key, (_, node) in f.items():
            prop = _PROPERTY[key]  # mapping() already rejected unknown keys
            p = join_path(path, key)
            # null/false switch a nullable property off, e.g. to override a default
            what = prop.expects.split(" such as")[0]  # "a size"
            if prop.nullable and (self.is_null(node) or self.scalar(node, p, what) is False):
                out.update(dict.fromkeys(prop.fields))
                continue
            value = self.unit(node, p, prop.parse, prop.expects)
            if prop.bounds and not prop.bounds[0] <= value <= prop.bounds[1]:
                raise self.error(node, p, f"{key} {value} is outside "
                                 f"{prop.bounds[0]}..{prop.bounds[1]}")
            out.update(prop.values(value))
        return out

    def _check_shapes(self, forward: Shape, reverse: Shape, node: yaml.Node, path: str,
                      label: str) -> None:
        """Checks that need the resolved values (a default jitter against a link's delay)."""
        there, back = label.split("->")
        for shape, direction in ((forward, label), (reverse, f"{back}->{there}")):
            problem = shape_conflict(shape, direction)
            if problem is not None:
                raise self.error(node, path, problem)
            if shape.jitter_ns > shape.delay_ns:
                raise self.error(node, path, f"jitter {format_time(shape.jitter_ns)} exceeds "
                                 f"delay {format_time(shape.delay_ns)} on {direction}: delays "
                                 "would be clipped at 0, skewing the distribution; lower "
                                 "the jitter or raise the delay")
            if (shape.ecn_bytes is not None and shape.queue_bytes is not None
                    and shape.ecn_bytes > shape.queue_bytes):
                raise self.error(node, path, f"ecn threshold {format_size(shape.ecn_bytes)} is "
                                 f"above the queue limit {format_size(shape.queue_bytes)} on "
                                 f"{direction}: it would never mark")
