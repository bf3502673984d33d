"""Topology loading: the shipped files, defaults and overrides, generators, and every error
with its exact `FILE:LINE: key: message`."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import fabric
from fabric.errors import TopologyError
from fabric.topology import (
    DEFAULT_CLASSES,
    LeafSpineInfo,
    Node,
    Shape,
    Topology,
    TrafficClass,
    load_topology,
    parse_topology,
)
from fabric.topology.generators import LeafSpineSpec, expand_leaf_spine

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "topologies").glob("*.yaml"))
DEFAULT_YAML = Path(fabric.__file__).parent / "data" / "default.yaml"

MS = 1_000_000
US = 1_000
MBPS = 1_000_000
GBPS = 1_000_000_000

Write = Callable[[str], Path]


def parse(text: str) -> Topology:
    return parse_topology(textwrap.dedent(text), source="t.yaml")


# ---- the shipped files ------------------------------------------------------------------


def test_shipped_files_exist() -> None:
    assert {p.name for p in SHIPPED} >= {"pair.yaml", "leaf-spine.yaml", "two-cluster.yaml"}
    assert DEFAULT_YAML.is_file()


@pytest.mark.parametrize("path", [*SHIPPED, DEFAULT_YAML], ids=lambda p: p.name)
def test_every_shipped_file_loads(path: Path) -> None:
    topo = load_topology(path)
    assert topo.name == path.stem
    assert topo.source == str(path)
    assert topo.nodes
    for link in topo.links:
        assert link.a in topo.nodes
        assert link.b in topo.nodes
        # whatever the host realises after time_scale must be within one Python host's reach
        for shape in (link.forward, link.reverse):
            scaled = shape.scaled(topo.time_scale)
            assert scaled.rate_bps is None or scaled.rate_bps <= 5 * GBPS


def test_pair() -> None:
    """The issue's contract example, exactly: symmetric 40 Mbit/s, 15 ms, no jitter, no loss."""
    topo = load_topology(REPO / "topologies" / "pair.yaml")
    assert list(topo.nodes) == ["a", "b"]
    assert topo.nodes["a"] == Node("a", kind="host", role=None, line=5)
    assert topo.time_scale == 1.0
    assert topo.classes == DEFAULT_CLASSES
    (link,) = topo.links
    assert (link.a, link.b, link.line) == ("a", "b", 8)
    assert link.forward == Shape(rate_bps=40 * MBPS, delay_ns=15 * MS, jitter_ns=0, loss_ppm=0,
                                 queue_bytes=None, queue_packets=None, ecn_bytes=None, mtu=1500)
    assert link.symmetric
    assert link.name == "a--b"


def test_default_topology() -> None:
    topo = load_topology(DEFAULT_YAML)
    assert topo.name == "default"
    assert list(topo.nodes) == ["spine-0", "spine-1", "leaf-0", "leaf-1",
                                "host-0", "host-1", "host-2", "host-3"]
    assert len(topo.links) == 2 * 2 + 4
    (info,) = topo.leaf_spines
    assert (info.uplink_bps, info.downlink_bps) == (200 * GBPS, 100 * GBPS)
    assert topo.time_scale == 1000.0
    # on the host: 200 Mbit/s and 2 ms per uplink
    up = topo.links[0].forward.scaled(topo.time_scale)
    assert (up.rate_bps, up.delay_ns) == (200 * MBPS, 2 * MS)


def test_leaf_spine_file() -> None:
    topo = load_topology(REPO / "topologies" / "leaf-spine.yaml")
    hosts = [n.name for n in topo.nodes.values() if n.kind == "host"]
    assert hosts == [f"host-{i}" for i in range(8)]
    assert len(topo.links) == 4 * 2 + 8
    assert {c.name: (c.dscp, c.priority, c.lossless) for c in topo.classes} == {
        "kv": (26, 3, True), "bulk": (10, 1, False), "control": (48, 6, False)}
    assert topo.time_scale == 2000.0
    assert topo.leaf_spines[0].oversubscription == 0.5


def test_two_cluster_file() -> None:
    topo = load_topology(REPO / "topologies" / "two-cluster.yaml")
    assert [i.prefix for i in topo.leaf_spines] == ["local-", "remote-"]
    assert sorted(topo.neighbours("gw-local")) == ["gw-remote", "local-spine-0", "local-spine-1"]
    assert sorted(topo.neighbours("gw-remote")) == ["gw-local", "remote-spine-0",
                                                    "remote-spine-1"]
    (egress,) = [link for link in topo.links if {link.a, link.b} == {"gw-local", "gw-remote"}]
    assert egress.forward.rate_bps == 200 * MBPS
    assert egress.forward.delay_ns == 5 * MS
    assert egress.forward.loss_ppm == 100
    assert egress.symmetric
    assert "local-host-3" in topo.nodes
    assert "remote-host-3" in topo.nodes


# ---- defaults, overrides, reverse -------------------------------------------------------


def test_minimal_file_gets_model_defaults() -> None:
    topo = parse("""\
        name: t
        nodes:
          a:
          b: {kind: switch, role: tor}
        links:
          - endpoints: [b, a]
        """)
    assert topo.nodes["a"] == Node("a", kind="host", role=None, line=3)
    assert topo.nodes["b"] == Node("b", kind="switch", role="tor", line=4)
    (link,) = topo.links
    assert (link.a, link.b) == ("b", "a")  # file order, not sorted
    assert link.forward == link.reverse == Shape()
    assert topo.time_scale == 1.0
    assert topo.link_subnet == "198.18.0.0/16"
    assert topo.loopback_subnet == "198.19.0.0/16"
    assert topo.classes == DEFAULT_CLASSES
    assert topo.leaf_spines == ()
    assert topo.source == "t.yaml"


def test_defaults_then_generator_then_link() -> None:
    topo = parse("""\
        name: t
        defaults:
          link: {rate: 1Gbps, delay: 1ms, jitter: 100us, loss: 0.1%, queue: 100 packets,
                 mtu: 9000, ecn: 64KiB}
        nodes:
          x: {}
        generate:
          - leaf_spine:
              spines: 1
              leaves: 1
              hosts_per_leaf: 1
              uplink: {rate: 400Mbps}
        links:
          - endpoints: [x, spine-0]
            delay: 2ms
            queue: 1MiB
            ecn: null
        """)
    by_pair = {(link.a, link.b): link for link in topo.links}
    defaults = Shape(rate_bps=1 * GBPS, delay_ns=1 * MS, jitter_ns=100 * US, loss_ppm=1000,
                     queue_bytes=None, queue_packets=100, ecn_bytes=65536, mtu=9000)
    assert by_pair[("leaf-0", "host-0")].forward == defaults
    assert by_pair[("leaf-0", "spine-0")].forward == Shape(
        rate_bps=400 * MBPS, delay_ns=1 * MS, jitter_ns=100 * US, loss_ppm=1000,
        queue_bytes=None, queue_packets=100, ecn_bytes=65536, mtu=9000)
    # a byte queue replaces the default packet queue; ecn: null switches marking off
    assert by_pair[("x", "spine-0")].forward == Shape(
        rate_bps=1 * GBPS, delay_ns=2 * MS, jitter_ns=100 * US, loss_ppm=1000,
        queue_bytes=1 << 20, queue_packets=None, ecn_bytes=None, mtu=9000)
    # explicit links come first, generated ones after
    assert [(link.a, link.b) for link in topo.links] == [
        ("x", "spine-0"), ("leaf-0", "spine-0"), ("leaf-0", "host-0")]


def test_ecn_false_disables_default() -> None:
    topo = parse("""\
        name: t
        defaults: {link: {ecn: 64KiB}}
        nodes: {a: {}, b: {}}
        links:
          - {endpoints: [a, b], ecn: false}
        """)
    assert topo.links[0].forward.ecn_bytes is None


def test_reverse_overrides_the_resolved_forward() -> None:
    topo = parse("""\
        name: t
        defaults: {link: {rate: 100Mbps, loss: 1%}}
        nodes: {a: {}, b: {}}
        links:
          - endpoints: [a, b]
            delay: 10ms
            queue: 64KiB
            reverse: {rate: 10Mbps, delay: 40ms, queue: 50p}
        """)
    (link,) = topo.links
    assert link.forward == Shape(rate_bps=100 * MBPS, delay_ns=10 * MS, loss_ppm=10_000,
                                 queue_bytes=65536)
    assert link.reverse == Shape(rate_bps=10 * MBPS, delay_ns=40 * MS, loss_ppm=10_000,
                                 queue_packets=50)
    assert not link.symmetric


def test_generator_reverse() -> None:
    topo = parse("""\
        name: t
        generate:
          - leaf_spine:
              spines: 1
              leaves: 1
              hosts_per_leaf: 1
              downlink: {rate: 100Mbps, reverse: {rate: 50Mbps}}
        """)
    down = next(link for link in topo.links if link.b == "host-0")
    assert down.a == "leaf-0"  # forward is leaf->host
    assert down.forward.rate_bps == 100 * MBPS
    assert down.reverse.rate_bps == 50 * MBPS


def test_everything_optional_given() -> None:
    topo = parse("""\
        name: full
        time_scale: 2.5
        addressing:
          links: 10.10.0.0/16
          loopbacks: 10.20.0.0/24
        classes:
          - name: kv
            dscp: 26
            priority: 3
            lossless: true
          - {name: bulk, dscp: 10}
        nodes:
          a: {}
          b: {}
        links:
          - {endpoints: [a, b]}
        """)
    assert topo.time_scale == 2.5
    assert (topo.link_subnet, topo.loopback_subnet) == ("10.10.0.0/16", "10.20.0.0/24")
    assert topo.classes == (
        TrafficClass("kv", dscp=26, priority=3, lossless=True, line=7),
        TrafficClass("bulk", dscp=10, priority=0, lossless=False, line=11),
    )


def test_yaml_merge_keys_and_anchors() -> None:
    topo = parse("""\
        name: t
        nodes: {a: {}, b: {}, c: {}}
        links:
          - &slow {endpoints: [a, b], rate: 10Mbps, delay: 5ms}
          - <<: *slow
            endpoints: [b, c]
            delay: 7ms
        """)
    first, second = topo.links
    assert (second.a, second.b) == ("b", "c")
    assert second.forward == Shape(rate_bps=10 * MBPS, delay_ns=7 * MS)
    assert first.forward == Shape(rate_bps=10 * MBPS, delay_ns=5 * MS)


def test_names_are_taken_as_written() -> None:
    # YAML 1.1 would read `no`, `on` and `1` as false, true and an integer.
    topo = parse("""\
        name: "no"
        nodes: {no: {}, on: {role: yes}, 1: {}}
        links:
          - endpoints: [no, on]
          - endpoints: [on, 1]
        """)
    assert topo.name == "no"
    assert list(topo.nodes) == ["no", "on", "1"]
    assert topo.nodes["on"].role == "yes"
    assert [(link.a, link.b) for link in topo.links] == [("no", "on"), ("on", "1")]


def test_yaml_numbers_for_units() -> None:
    topo = parse("""\
        name: t
        nodes: {a: {}, b: {}, c: {}}
        links:
          - {endpoints: [a, b], mtu: 9000, loss: 0, delay: 0, jitter: 0, queue: 100000,
             ecn: 50000}
          - {endpoints: [b, c], loss: 0.001}
        """)
    first, second = topo.links
    assert first.forward == Shape(mtu=9000, queue_bytes=100_000, ecn_bytes=50_000)
    assert second.forward.loss_ppm == 1000


# ---- generators -------------------------------------------------------------------------


def test_leaf_spine_generator() -> None:
    topo = parse("""\
        name: t
        generate:
          - leaf_spine:
              spines: 2
              leaves: 3
              hosts_per_leaf: 4
              uplink: {rate: 400Mbps, delay: 10us}
              downlink: {rate: 100Mbps, delay: 5us}
        """)
    assert list(topo.nodes) == (
        ["spine-0", "spine-1", "leaf-0", "leaf-1", "leaf-2"] + [f"host-{j}" for j in range(12)])
    assert topo.nodes["spine-1"] == Node("spine-1", kind="switch", role="spine", line=3)
    assert topo.nodes["leaf-2"] == Node("leaf-2", kind="switch", role="leaf", line=3)
    assert topo.nodes["host-11"] == Node("host-11", kind="host", role=None, line=3)
    assert len(topo.links) == 3 * 2 + 3 * 4
    assert all(link.line == 3 for link in topo.links)
    # hosts are numbered across leaves: host-4..host-7 hang off leaf-1
    assert sorted(topo.neighbours("leaf-1")) == sorted(
        ["spine-0", "spine-1", "host-4", "host-5", "host-6", "host-7"])
    assert topo.neighbours("host-7") == ["leaf-1"]
    assert sorted(topo.neighbours("spine-0")) == ["leaf-0", "leaf-1", "leaf-2"]
    up = next(link for link in topo.links if link.b == "spine-0")
    assert up.a.startswith("leaf-")
    assert up.forward == up.reverse == Shape(rate_bps=400 * MBPS, delay_ns=10 * US)
    (info,) = topo.leaf_spines
    assert info == LeafSpineInfo(
        prefix="", spines=("spine-0", "spine-1"), leaves=("leaf-0", "leaf-1", "leaf-2"),
        hosts=tuple(f"host-{j}" for j in range(12)), hosts_per_leaf=4,
        uplink_bps=400 * MBPS, downlink_bps=100 * MBPS)
    assert info.oversubscription == pytest.approx(4 * 100 / (2 * 400))


def test_two_generators_with_prefixes_and_explicit_links() -> None:
    topo = parse("""\
        name: t
        nodes:
          gw: {kind: switch, role: gateway}
        generate:
          - leaf_spine: {prefix: local-, spines: 1, leaves: 2, hosts_per_leaf: 1,
                         uplink: {rate: 100Mbps}, downlink: {rate: 100Mbps}}
          - leaf_spine: {prefix: remote-, spines: 2, leaves: 1, hosts_per_leaf: 3}
        links:
          - endpoints: [gw, local-spine-0]
          - endpoints: [gw, remote-spine-1]
        """)
    assert list(topo.nodes)[:5] == ["gw", "local-spine-0", "local-leaf-0", "local-leaf-1",
                                    "local-host-0"]
    assert "remote-host-2" in topo.nodes
    local, remote = topo.leaf_spines
    assert local.hosts == ("local-host-0", "local-host-1")
    assert local.oversubscription == 1.0
    assert remote.oversubscription is None  # unshaped: no figure
    assert remote.hosts_per_leaf == 3
    assert topo.nodes["remote-leaf-0"].line == 7
    assert len(topo.links) == 2 + (2 + 2) + (2 + 3)


def test_expand_leaf_spine_is_pure() -> None:
    up = (Shape(rate_bps=10), Shape(rate_bps=20))
    down = (Shape(rate_bps=5), Shape(rate_bps=5))
    spec = LeafSpineSpec(spines=3, leaves=2, hosts_per_leaf=2, uplink=up, downlink=down,
                         prefix="p-", line=9)
    out = expand_leaf_spine(spec)
    assert [n.name for n in out.nodes] == ["p-spine-0", "p-spine-1", "p-spine-2", "p-leaf-0",
                                           "p-leaf-1", "p-host-0", "p-host-1", "p-host-2",
                                           "p-host-3"]
    assert [(link.a, link.b) for link in out.links] == [
        ("p-leaf-0", "p-spine-0"), ("p-leaf-0", "p-spine-1"), ("p-leaf-0", "p-spine-2"),
        ("p-leaf-0", "p-host-0"), ("p-leaf-0", "p-host-1"),
        ("p-leaf-1", "p-spine-0"), ("p-leaf-1", "p-spine-1"), ("p-leaf-1", "p-spine-2"),
        ("p-leaf-1", "p-host-2"), ("p-leaf-1", "p-host-3"),
    ]
    assert out.links[0].forward.rate_bps == 10
    assert out.links[0].reverse.rate_bps == 20
    assert out.info.oversubscription == pytest.approx(2 * 5 / (3 * 10))
    assert expand_leaf_spine(spec) == out


# ---- errors -----------------------------------------------------------------------------

BASE = """\
name: t
nodes:
  a: {}
  b: {}
links:
  - endpoints: [a, b]
"""

NAME_RULE = ("1-31 characters: lower-case letters, digits, '-' and '_', starting with a letter "
             "or digit")
TOP_KEYS = ("name, time_scale, addressing, defaults, classes, nodes, generate, links, traffic, "
            "lpu, prfaas, switches, memory, expect, events, models, workload")
LINK_KEYS = ("endpoints, rate, delay, jitter, loss, corrupt, duplicate, reorder, queue, mtu, ecn, "
             "reverse")


def link(*lines: str) -> str:
    """BASE plus properties on the link (the first added line is line 7)."""
    return BASE + "".join(f"    {line}\n" for line in lines)


ERRORS = [
    # YAML itself
    ("name: t\nnodes:\n  a: {}\n  b: [\n",
     "5: YAML syntax error: while parsing a flow node, expected the node content, but found "
     "'<stream end>'"),
    ("name: t\nnodes:\n\ta: {}\n",
     "3: YAML syntax error: while scanning for the next token, found character '\\t' that "
     "cannot start any token"),
    ("name: t\n---\nname: u\n",
     "2: YAML syntax error: expected a single document in the stream, but found another "
     "document"),
    ("name: t\n\n  \x07\n", "3: YAML syntax error: special characters are not allowed (#x0007)"),
    ("- a\n", "1: expected a mapping, got a list"),
    ("name: t\ntime_scale: !!python/name:os.system 1\nnodes: {a: {}}\n",
     "2: time_scale: unsupported YAML value: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/name:os.system'"),
    # required and unknown keys, anywhere
    ("nodes: {a: {}}\n", "1: missing required key 'name'"),
    ("name: t\nnode:\n  a: {}\n",
     f"2: node: unknown key 'node'; did you mean 'nodes'? (allowed: {TOP_KEYS})"),
    (link("dealy: 5ms"),
     f"7: links[0].dealy: unknown key 'dealy'; did you mean 'delay'? (allowed: {LINK_KEYS})"),
    ("name: t\nnodes:\n  a: {kind: host, colour: red}\n",
     "3: nodes.a.colour: unknown key 'colour' (allowed: kind, role)"),
    ("name: t\ndefaults:\n  links: {rate: 1Gbps}\nnodes: {a: {}}\n",
     "3: defaults.links: unknown key 'links'; did you mean 'link'? (allowed: link)"),
    ("name: t\ndefaults:\n  link: {endpoints: [a, b]}\nnodes: {a: {}}\n",
     "3: defaults.link.endpoints: unknown key 'endpoints' (allowed: rate, delay, jitter, loss, "
     "corrupt, duplicate, reorder, queue, mtu, ecn)"),
    ("name: t\nclasses:\n  - {name: kv, pcp: 3}\nnodes: {a: {}}\n",
     "3: classes[0].pcp: unknown key 'pcp' (allowed: name, dscp, priority, lossless, tcp_cc, "
     "weight, strict, ecn, cc, cc_params, control, queue)"),
    ("name: t\naddressing:\n  link: 10.0.0.0/8\nnodes: {a: {}}\n",
     "3: addressing.link: unknown key 'link'; did you mean 'links'? (allowed: links, "
     "loopbacks)"),
    (link("reverse: {mtu: 9000}"),
     "7: links[0].reverse.mtu: unknown key 'mtu' (the mtu is per link, the same in both "
     "directions) (allowed: rate, delay, jitter, loss, corrupt, duplicate, reorder, queue, "
     "ecn)"),
    (link("reverse:", "  endpoints: [b, a]"),
     "8: links[0].reverse.endpoints: unknown key 'endpoints' (a reverse block only overrides "
     "properties) (allowed: rate, delay, jitter, loss, corrupt, duplicate, reorder, queue, "
     "ecn)"),
    ("name: t\ngenerate:\n  - leaf_spine: {spines: 1, leaves: 1, hosts_per_leaf: 1, hosts: 2}\n",
     "3: generate[0].leaf_spine.hosts: unknown key 'hosts' (allowed: prefix, spines, leaves, "
     "hosts_per_leaf, uplink, downlink)"),
    ("name: t\ngenerate:\n  - clos: {spines: 1}\n",
     "3: generate[0].clos: unknown key 'clos' (allowed: leaf_spine)"),
    ("name: t\ngenerate:\n  - leaf_spine: {spines: 1, leaves: 1, hosts_per_leaf: 1}\n"
     "    clos: {}\n",
     "3: generate[0]: a generator entry is a mapping with one key, the generator's name "
     "(leaf_spine)"),
    ("name: t\ngenerate:\n  - leaf_spine: {spines: 1}\n",
     "3: generate[0].leaf_spine: missing required key 'leaves'"),
    ("name: t\nnodes: {a: {}, b: {}}\nlinks:\n  - rate: 1Gbps\n",
     "4: links[0]: missing required key 'endpoints'"),
    # wrong types
    ("name: t\nnodes: [a, b]\n", "2: nodes: expected a mapping, got a list"),
    ("name: t\nnodes: {a: {}, b: {}}\nlinks:\n  endpoints: [a, b]\n",
     "4: links: expected a list, got a mapping"),
    ("name: t\nnodes: {a: {}, b: {}}\nlinks:\n  - a b\n",
     "4: links[0]: expected a mapping, got 'a b'"),
    ("name: [t]\nnodes: {a: {}}\n", "1: name: expected a topology name, got a list"),
    ("name: t\nnodes:\n  [a, b]: {}\n", "3: nodes: a node must be a plain name, got a list"),
    ("name: t\nnodes:\n  a: host\n", "3: nodes.a: expected a mapping, got 'host'"),
    ("name: t\nnodes:\n  a: {kind: router}\n",
     "3: nodes.a.kind: unknown kind 'router' (expected one of: host, switch)"),
    ("name: t\nclasses:\n  - {name: kv, dscp: '26'}\nnodes: {a: {}}\n",
     "3: classes[0].dscp: expected a DSCP value 0..63, got '26'"),
    ("name: t\nclasses:\n  - {name: kv, lossless: 'yes'}\nnodes: {a: {}}\n",
     "3: classes[0].lossless: expected true or false, got 'yes'"),
    ("name: t\ngenerate:\n  - leaf_spine: {spines: true, leaves: 1, hosts_per_leaf: 1}\n",
     "3: generate[0].leaf_spine.spines: expected a count >= 1, got true"),
    ("name: t\ngenerate:\n  - leaf_spine: {spines: 0, leaves: 1, hosts_per_leaf: 1}\n",
     "3: generate[0].leaf_spine.spines: spines must be at least 1, got 0"),
    ("name: t\nnodes:\n  a:\n    <<: 5\n", "4: nodes.a: '<<' can only merge a mapping"),
    # bad units, at the line of the value
    (link("rate: 40Mbs"),
     "7: links[0].rate: bad rate '40Mbs': expected a number and a unit such as 40Mbps, 25Gbit, "
     "400Gbps"),
    (link("rate: 40"), "7: links[0].rate: bad rate 40: a rate needs a unit, such as 40Mbps or "
                       "40Gbps"),
    (link("rate:"), "7: links[0].rate: missing value: expected a rate such as 40Mbps"),
    (link("rate: [1]"), "7: links[0].rate: expected a rate such as 40Mbps, got a list"),
    (link("delay: 5"), "7: links[0].delay: bad time 5: a time needs a unit, such as 5ms or 5us"),
    (link("jitter: -1ms"), "7: links[0].jitter: bad time '-1ms': a time cannot be negative"),
    (link("loss: 150%"), "7: links[0].loss: bad loss '150%': loss cannot exceed 100%"),
    (link("queue: lots"),
     "7: links[0].queue: bad queue 'lots': expected a size (1500, 1500B, 64KB, 256KiB, 1MiB) "
     "or a packet count (100 packets, 100p, 100pkts)"),
    (link("ecn: 64K"), "7: links[0].ecn: bad size '64K': say 64KB or 64KiB"),
    (link("reverse:", "  rate: 1Gbit/sec"),
     "8: links[0].reverse.rate: bad rate '1Gbit/sec': expected a number and a unit such as "
     "40Mbps, 25Gbit, 400Gbps"),
    ("name: t\ndefaults:\n  link:\n    delay: 1\nnodes: {a: {}}\n",
     "4: defaults.link.delay: bad time 1: a time needs a unit, such as 1ms or 1us"),
    ("name: t\ngenerate:\n  - leaf_spine:\n      spines: 1\n      leaves: 1\n"
     "      hosts_per_leaf: 1\n      uplink: {rate: 10 gbps}\n",
     "7: generate[0].leaf_spine.uplink.rate: bad rate '10 gbps': expected a number and a unit "
     "such as 40Mbps, 25Gbit, 400Gbps"),
    # queue given both ways
    (link("queue: 256KiB, 100 packets"),
     "7: links[0].queue: bad queue '256KiB, 100 packets': a queue is limited in bytes or in "
     "packets, not both; pick one"),
    # mtu
    (link("mtu: 500"), "7: links[0].mtu: mtu 500 is outside 576..65535"),
    (link("mtu: 70000"), "7: links[0].mtu: mtu 70000 is outside 576..65535"),
    ("name: t\ndefaults: {link: {mtu: 64KiB}}\nnodes: {a: {}}\n",
     "2: defaults.link.mtu: mtu 65536 is outside 576..65535"),
    # endpoints
    ("name: t\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints:\n      - a\n      - c\n",
     "6: links[0].endpoints: unknown node 'c'"),
    ("name: t\nnodes: {spine-0: {}, leaf-0: {}}\nlinks:\n  - endpoints: [leaf-0, spine-9]\n",
     "4: links[0].endpoints: unknown node 'spine-9'; did you mean 'spine-0'?"),
    ("name: t\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, a]\n",
     "4: links[0].endpoints: a link from 'a' to itself"),
    ("name: t\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a]\n",
     "4: links[0].endpoints: expected a list of exactly two node names, such as [a, b]; got 1"),
    ("name: t\nnodes: {a: {}, b: {}, c: {}}\nlinks:\n  - endpoints: [a, b, c]\n",
     "4: links[0].endpoints: expected a list of exactly two node names, such as [a, b]; got 3"),
    ("name: t\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: a\n",
     "4: links[0].endpoints: expected a list, got 'a'"),
    ("name: t\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, {b: 1}]\n",
     "4: links[0].endpoints: expected a node name, got a mapping"),
    (BASE + "  - endpoints: [b, a]\n",
     "7: links[1]: a link between 'b' and 'a' already exists (line 6); parallel links are not "
     "supported"),
    # node names and duplicates
    ("name: t\nnodes:\n  a: {}\n  b: {}\n  a: {kind: switch}\n",
     "5: nodes.a: duplicate node 'a' (first at line 3)"),
    ("name: t\nnodes:\n  Host-A: {}\n", f"3: nodes.Host-A: bad node name 'Host-A': {NAME_RULE}"),
    ("name: t\nnodes:\n  a.b: {}\n", f"3: nodes.a.b: bad node name 'a.b': {NAME_RULE}"),
    ("name: t\nnodes:\n  -a: {}\n", f"3: nodes.-a: bad node name '-a': {NAME_RULE}"),
    ("name: t\nnodes:\n  " + "a" * 32 + ": {}\n",
     f"3: nodes.{'a' * 32}: bad node name '{'a' * 32}': {NAME_RULE}"),
    ("name: My Topo\nnodes: {a: {}}\n", f"1: name: bad topology name 'My Topo': {NAME_RULE}"),
    ("name: t\nnodes: {a: {}}\nlinks:\n  - {endpoints: [a, b]}\n  - {endpoints: [a, b]}\n"
     "dup: 1\n",
     f"6: dup: unknown key 'dup' (allowed: {TOP_KEYS})"),
    ("name: t\nnodes: {a: {}}\nname: u\n", "3: name: duplicate key 'name' (first at line 1)"),
    ("name: t\nnodes:\n  spine-0: {}\ngenerate:\n  - leaf_spine: {spines: 1, leaves: 1, "
     "hosts_per_leaf: 1}\n",
     "5: generate[0].leaf_spine: this generator makes node 'spine-0', which is already defined "
     "at line 3; give it a different prefix"),
    ("name: t\ngenerate:\n  - leaf_spine: {spines: 1, leaves: 1, hosts_per_leaf: 1}\n"
     "  - leaf_spine: {spines: 1, leaves: 1, hosts_per_leaf: 1}\n",
     "4: generate[1].leaf_spine: this generator makes node 'spine-0', which is already defined "
     "at line 3; give it a different prefix"),
    ("name: t\ngenerate:\n  - leaf_spine:\n      prefix: Local-\n      spines: 1\n"
     "      leaves: 1\n      hosts_per_leaf: 1\n",
     f"4: generate[0].leaf_spine.prefix: prefix 'Local-' makes the bad node name "
     f"'Local-spine-0' (node names: {NAME_RULE})"),
    ("name: t\nnodes:\n  leaf-0: {}\ngenerate:\n  - leaf_spine: {spines: 1, leaves: 1, "
     "hosts_per_leaf: 1}\nlinks:\n  - endpoints: [leaf-0, spine-0]\n",
     "5: generate[0].leaf_spine: this generator makes node 'leaf-0', which is already defined "
     "at line 3; give it a different prefix"),
    ("name: t\ngenerate:\n  - leaf_spine: {spines: 1, leaves: 1, hosts_per_leaf: 1}\n"
     "links:\n  - endpoints: [spine-0, leaf-0]\n",
     "5: links[0]: a link between 'spine-0' and 'leaf-0' already exists (line 3); parallel "
     "links are not supported"),
    ("name: t\n", "1: nodes: the topology has no nodes: add `nodes:` or a `generate:` entry"),
    # time_scale
    ("name: t\ntime_scale: 0\nnodes: {a: {}}\n",
     "2: time_scale: expected a number > 0 (links run N times slower and longer on the host), "
     "got 0"),
    ("name: t\ntime_scale: -2.5\nnodes: {a: {}}\n",
     "2: time_scale: expected a number > 0 (links run N times slower and longer on the host), "
     "got -2.5"),
    ("name: t\ntime_scale: fast\nnodes: {a: {}}\n",
     "2: time_scale: expected a number > 0 (links run N times slower and longer on the host), "
     "got 'fast'"),
    ("name: t\ntime_scale: .inf\nnodes: {a: {}}\n",
     "2: time_scale: expected a number > 0 (links run N times slower and longer on the host), "
     "got '.inf' (not finite)"),
    # classes
    ("name: t\nclasses:\n  - {name: kv, dscp: 64}\nnodes: {a: {}}\n",
     "3: classes[0].dscp: DSCP 64 is outside 0..63"),
    ("name: t\nclasses:\n  - {name: kv, dscp: -1}\nnodes: {a: {}}\n",
     "3: classes[0].dscp: DSCP -1 is outside 0..63"),
    ("name: t\nclasses:\n  - {name: kv, priority: 8}\nnodes: {a: {}}\n",
     "3: classes[0].priority: priority 8 is outside 0..7"),
    ("name: t\nclasses:\n  - {name: kv, dscp: 26}\n  - {name: kv, dscp: 10}\nnodes: {a: {}}\n",
     "4: classes[1].name: duplicate class name 'kv' (first at line 3)"),
    ("name: t\nclasses:\n  - {name: kv, dscp: 26}\n  - {name: bulk, dscp: 26}\n"
     "nodes: {a: {}}\n",
     "4: classes[1].dscp: DSCP 26 is already used by class 'kv' (line 3); give each class "
     "its own"),
    ("name: t\nclasses:\n  - {name: kv}\n  - {name: bulk}\nnodes: {a: {}}\n",
     "4: classes[1]: DSCP 0 (the default) is already used by class 'kv' (line 3); give each "
     "class its own"),
    ("name: t\nclasses: []\nnodes: {a: {}}\n",
     "2: classes: the list is empty; leave `classes:` out for the single default class"),
    ("name: t\nclasses:\n  - {dscp: 1}\nnodes: {a: {}}\n",
     "3: classes[0]: missing required key 'name'"),
    # checks on resolved values
    (link("delay: 1ms", "jitter: 2ms"),
     "6: links[0]: jitter 2 ms exceeds delay 1 ms on a->b: delays would be clipped at 0, "
     "skewing the distribution; lower the jitter or raise the delay"),
    ("name: t\ndefaults: {link: {jitter: 1ms}}\nnodes: {a: {}, b: {}}\nlinks:\n"
     "  - endpoints: [a, b]\n    delay: 5ms\n    reverse: {delay: 0.5ms}\n",
     "5: links[0]: jitter 1 ms exceeds delay 500 us on b->a: delays would be clipped at 0, "
     "skewing the distribution; lower the jitter or raise the delay"),
    ("name: t\ndefaults: {link: {jitter: 1ms}}\ngenerate:\n"
     "  - leaf_spine: {spines: 1, leaves: 1, hosts_per_leaf: 1}\n",
     "4: generate[0].leaf_spine.uplink: jitter 1 ms exceeds delay 0 on leaf->spine: delays "
     "would be clipped at 0, skewing the distribution; lower the jitter or raise the delay"),
    ("name: t\ngenerate:\n  - leaf_spine:\n      spines: 1\n      leaves: 1\n"
     "      hosts_per_leaf: 1\n      downlink: {delay: 1ms, reverse: {jitter: 2ms}}\n",
     "7: generate[0].leaf_spine.downlink: jitter 2 ms exceeds delay 1 ms on host->leaf: delays "
     "would be clipped at 0, skewing the distribution; lower the jitter or raise the delay"),
    (link("queue: 10KiB", "ecn: 64KiB"),
     "6: links[0]: ecn threshold 64 KiB is above the queue limit 10 KiB on a->b: it would never "
     "mark"),
    # addressing
    ("name: t\naddressing: {links: 198.18.0.1/16}\nnodes: {a: {}}\n",
     "2: addressing.links: bad IPv4 network '198.18.0.1/16': 198.18.0.1/16 has host bits set"),
    ("name: t\naddressing: {loopbacks: 'fd00::/8'}\nnodes: {a: {}}\n",
     "2: addressing.loopbacks: bad IPv4 network 'fd00::/8': Expected 4 octets in 'fd00::'"),
    ("name: t\naddressing: {links: 10.0.0.0}\nnodes: {a: {}}\n",
     "2: addressing.links: bad IPv4 network '10.0.0.0': needs a prefix length, such as /16"),
    ("name: t\naddressing:\n  links: 10.0.0.0/8\n  loopbacks: 10.1.0.0/16\nnodes: {a: {}}\n",
     "4: addressing.loopbacks: link subnet 10.0.0.0/8 overlaps loopback subnet 10.1.0.0/16"),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS,
                         ids=[f"{i}:{e[:40]}" for i, (_, e) in enumerate(ERRORS)])
def test_errors(write: Write, text: str, expected: str) -> None:
    path = write(text)
    with pytest.raises(TopologyError, match=f"^{re.escape(f'{path}:{expected}')}$"):
        load_topology(path)


def test_error_carries_file_line_key(write: Write) -> None:
    path = write(link("rate: 40Mbs"))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), 7, "links[0].rate")
    assert err.message.startswith("bad rate '40Mbs'")


def test_parse_topology_names_its_source() -> None:
    with pytest.raises(TopologyError, match=r"^x\.yaml:1: name: bad topology name 'X'"):
        parse_topology("name: X\n", source="x.yaml")
    with pytest.raises(TopologyError, match=r"^<string>:1: missing required key 'name'$"):
        parse_topology("nodes: {a: {}}\n")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(TopologyError, match=f"^{re.escape(str(path))}: cannot read topology "
                                            "file: No such file or directory$"):
        load_topology(path)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=f"^{re.escape(str(tmp_path))}: cannot read "
                                            "topology file: it is a directory, not a "
                                            "regular file$"):
        load_topology(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(TopologyError, match=f"^{re.escape(str(path))}:1: not a UTF-8 text file "
                                            r"\(invalid start byte\)$"):
        load_topology(path)


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file(write: Write, text: str) -> None:
    path = write(text)
    with pytest.raises(TopologyError, match=f"^{re.escape(str(path))}: the file is empty: a "
                                            "topology needs at least `name:` and `nodes:`$"):
        load_topology(path)


def test_load_accepts_str_path() -> None:
    path = str(REPO / "topologies" / "pair.yaml")
    assert load_topology(path).source == path


def test_time_scale_in_exponent_form() -> None:
    """YAML 1.1 reads 1e3 (no dot) as a string; a user means the number."""
    topo = parse_topology("name: t\ntime_scale: 1e3\nnodes: {a: {}}\n")
    assert topo.time_scale == 1000.0


@pytest.mark.parametrize("net", ["127.0.0.0/16", "224.0.0.0/16", "169.254.0.0/16",
                                 "0.0.0.0/16", "240.0.0.0/16"])
def test_special_purpose_ranges_are_refused(net: str) -> None:
    with pytest.raises(TopologyError, match=f"addressing.links: {net} is a special-purpose"):
        parse_topology(f"name: t\naddressing: {{links: {net}}}\nnodes: {{a: {{}}}}\n")
