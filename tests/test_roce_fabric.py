"""RoCE fabrics without a kernel: the topology's class and `switches:` keys, the plan for
emulator-forwarded switches, path figures (the "ideal" of FCT slowdown), the `--cc x --pfc`
comparison's variants and metrics, and the per-node RoCE plan. Pure: no root, sockets or
sleeps."""

from __future__ import annotations

import ipaddress
import json
import re
import struct
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fabric.errors import FabricError, TopologyError
from fabric.kinds import load
from fabric.metrics.records import ChunkRecord, TransferRecord
from fabric.metrics.summary import summarise
from fabric.plan import (
    NODE_SYSCTLS,
    AddVeth,
    SetNetem,
    SetOffloadsOff,
    SetSysctl,
    SetTbf,
    SwitchPort,
    plan_fabric,
)
from fabric.run.roce import (
    Variant,
    VariantResult,
    _with_cc,
    _worst_queue_series,
    parse_variants,
    render,
    variant_metrics,
    write_comparison,
    write_plots,
)
from fabric.run.traffic import roce_plan
from fabric.switch.core import (
    DROP_BUFFER,
    DROP_LOSSLESS,
    DROP_NO_ROUTE,
    DROPS,
    QUEUED,
    ClassSpec,
    PortSpec,
    RedParams,
    SwitchCore,
    SwitchSpec,
)
from fabric.topology import Shape, SwitchSettings, Topology, TrafficClass
from fabric.topology import parse_topology as _parse_topology
from fabric.topology.paths import PathFigures, path_figures
from fabric.traffic import schedule

GBPS = 1_000_000_000
US = 1_000
KIB = 1024

Write = Callable[[str], Path]


def parse(text: str) -> Topology:
    return _parse_topology(textwrap.dedent(text), source="t.yaml")


# h0 -- sw -- h1, 8 Gbit/s (one byte per ns) and 1 us each way, run 100x slower on the host.
# Base RTT h0->h1: delays 4 x 1 us + 1500 B at 8G twice (3000 ns) + a 64 B ACK twice (128 ns).
PAIR = """\
name: t
time_scale: 100
switches: {buffer: 1MiB}
classes:
  - {name: kv, dscp: 26, priority: 3, lossless: true, cc: dcqcn, cc_params: {g: 0.5}}
  - {name: bulk, dscp: 10, cc: hpcc}
nodes:
  h0: {}
  h1: {}
  sw: {kind: switch}
links:
  - {endpoints: [h0, sw], rate: 8Gbps, delay: 1us}
  - {endpoints: [sw, h1], rate: 8Gbps, delay: 1us}
traffic:
  flows:
    - {name: kv, pattern: one-to-one, from: h0, to: h1, class: kv, transport: roce,
       tokens: 16}
"""
PAIR_RTT_NS = 4 * US + 2 * 1500 + 2 * 64


def pair(*, switches: bool = True, transport: str = "roce") -> Topology:
    text = PAIR.replace("transport: roce", f"transport: {transport}")
    if not switches:
        text = text.replace("switches: {buffer: 1MiB}\n", "")
    return _parse_topology(text, source="t.yaml")


LEAF_SPINE = """\
name: ls
time_scale: 100
switches: {}
generate:
  - leaf_spine:
      spines: 2
      leaves: 2
      hosts_per_leaf: 2
      uplink: {rate: 100Gbps, delay: 1us}
      downlink: {rate: 25Gbps, delay: 500ns}
"""


# ---- topology: class keys ---------------------------------------------------------------


def test_class_roce_keys_parse() -> None:
    topo = parse("""\
        name: t
        classes:
          - name: kv
            dscp: 26
            priority: 3
            lossless: true
            weight: 4
            ecn: {kmin: 400KB, kmax: 1600KB, pmax: 0.5}
            cc: dcqcn
            cc_params: {rate_ai_bps: 40000000, g: 0.0625}
          - {name: control, dscp: 48, priority: 6, strict: true, ecn: {kmin: 1KiB, kmax: 1KiB}}
          - {name: bulk, dscp: 10}
        nodes: {a: {}}
        """)
    kv, control, bulk = topo.classes
    assert kv == TrafficClass("kv", dscp=26, priority=3, lossless=True, weight=4, strict=False,
                              red=(400_000, 1_600_000, 0.5), cc="dcqcn",
                              cc_params=(("g", 0.0625), ("rate_ai_bps", 40_000_000)), line=3)
    # pmax defaults to 0.2; kmax == kmin is allowed (a step marker)
    assert (control.strict, control.weight, control.red) == (True, 1, (1024, 1024, 0.2))
    assert (bulk.weight, bulk.strict, bulk.red, bulk.cc, bulk.cc_params) == (
        1, False, None, "none", ())


@pytest.mark.parametrize("value", ["false", "null", "~", ""])
def test_class_ecn_off(value: str) -> None:
    topo = parse(f"""\
        name: t
        classes:
          - name: kv
            ecn: {value}
        nodes: {{a: {{}}}}
        """)
    assert topo.classes[0].red is None


@pytest.mark.parametrize("value", ["False", "off"])
def test_class_ecn_off_any_yaml_false(value: str) -> None:
    topo = parse(f"""\
        name: t
        classes:
          - name: kv
            ecn: {value}
        nodes: {{a: {{}}, b: {{}}}}
        links:
          - {{endpoints: [a, b], ecn: {value}}}
        """)
    assert topo.links[0].forward.ecn_bytes is None  # the link accepts it
    assert topo.classes[0].red is None


def test_switches_defaults_and_full() -> None:
    assert parse("name: t\nswitches:\nnodes: {a: {}}\n").switches == SwitchSettings(line=2)
    assert parse("name: t\nnodes: {a: {}}\n").switches is None
    topo = parse("""\
        name: t
        switches:
          buffer: 16KiB
          buffer_mode: per_port
          pfc: false
          int: false
          xoff: 64KB
          xon: 64KB
        nodes: {a: {}}
        """)
    assert topo.switches == SwitchSettings(buffer_bytes=16 * KIB, buffer_mode="per_port",
                                           pfc=False, xoff_bytes=64_000, xon_bytes=64_000,
                                           int_enabled=False, line=3)
    auto = parse("name: t\nswitches: {xoff: auto, xon: auto}\nnodes: {a: {}}\n").switches
    assert auto is not None
    assert (auto.xoff_bytes, auto.xon_bytes) == (None, None)


def test_roce_transport_flow() -> None:
    flows = pair().traffic.flows  # type: ignore[union-attr]
    assert [f.transport for f in flows] == ["roce"]


CLASS_KEYS = ("name, dscp, priority, lossless, tcp_cc, weight, strict, ecn, cc, cc_params, "
              "control, queue")
DCQCN_PARAMS = ("g, alpha_interval_ns, rate_decrease_interval_ns, rate_increase_interval_ns, "
                "fast_recovery_stages, rate_ai_bps, rate_hai_bps, min_rate_bps, "
                "rate_on_first_cnp, clamp_target_rate, initial_alpha")
N = "nodes: {a: {}}\n"


def cls(*lines: str) -> str:
    """A one-class file; the class's first added line is line 4."""
    return "name: t\nclasses:\n  - name: kv\n" + "".join(f"    {x}\n" for x in lines) + N


ERRORS = [
    (cls("weight: 0"), "4: classes[0].weight: weight 0 is outside 1..1000"),
    (cls("weight: 1001"), "4: classes[0].weight: weight 1001 is outside 1..1000"),
    (cls("weight: 2.5"),
     "4: classes[0].weight: expected a round-robin weight 1..1000, got 2.5"),
    (cls("strict: 1"), "4: classes[0].strict: expected true or false, got 1"),
    (cls("ecn: {kmin: 400KB, kmax: 100KB}"),
     "4: classes[0].ecn.kmax: kmax 97.656 KiB is below kmin 390.625 KiB"),
    (cls("ecn:", "  kmin: 400KB"), "5: classes[0].ecn: missing required key 'kmax'"),
    (cls("ecn: {kmin: 4KB, kmax: 8KB, pmax: 1.5}"),
     "4: classes[0].ecn.pmax: expected a marking probability from 0 to 1, got 1.5"),
    (cls("ecn: {kmin: 4KB, kmax: 8KB, pmax: true}"),
     "4: classes[0].ecn.pmax: expected a marking probability from 0 to 1, got true"),
    (cls("ecn: {kmin: 4K, kmax: 8KB}"), "4: classes[0].ecn.kmin: bad size '4K': say 4KB or 4KiB"),
    (cls("ecn: {kmin: 4KB, kmax: 8KB, kmid: 6KB}"),
     "4: classes[0].ecn.kmid: unknown key 'kmid'; did you mean 'kmin'? (allowed: kmin, kmax, "
     "pmax)"),
    (cls("ecn: 64KiB"), "4: classes[0].ecn: expected a mapping, got '64KiB'"),
    (cls("cc: reno"),
     "4: classes[0].cc: unknown congestion control 'reno' (one of: none, dcqcn, timely, swift, "
     "hpcc, dctcp)"),
    # unknown parameter names: at the cc_params line, as make_cc words it
    (cls("cc: dcqcn", "cc_params: {g: 0.5, foo: 1}"),
     f"5: classes[0].cc_params: dcqcn: unknown parameter(s) foo; its parameters are: "
     f"{DCQCN_PARAMS}"),
    (cls("cc_params: {g: 0.5}"),
     "4: classes[0].cc_params: none: unknown parameter(s) g; its parameters are: none"),
    (cls("cc: dcqcn", "cc_params: {g: 2}"),
     "5: classes[0].cc_params: dcqcn: g must be in (0, 1], got 2"),
    (cls("cc: dcqcn", "cc_params:", "  g: fast"),
     "6: classes[0].cc_params.g: expected a number, got 'fast'"),
    (cls("colour: red"),
     f"4: classes[0].colour: unknown key 'colour' (allowed: {CLASS_KEYS})"),
    # switches:
    ("name: t\nswitches:\n  buffer: 16383\n" + N,
     "3: switches.buffer: a switch buffer needs at least 16KiB"),
    ("name: t\nswitches:\n  buffer_mode: dynamic\n" + N,
     "3: switches.buffer_mode: unknown buffer mode 'dynamic' (one of: shared, per_port)"),
    ("name: t\nswitches:\n  pfc: maybe\n" + N, "3: switches.pfc: expected true or false, got "
                                              "'maybe'"),
    ("name: t\nswitches:\n  int: 1\n" + N, "3: switches.int: expected true or false, got 1"),
    ("name: t\nswitches:\n  xoff: 64KB\n  xon: 128KB\n" + N,
     "4: switches.xon: xon 125 KiB is above xoff 62.5 KiB: a paused port would never resume "
     "before it pauses again"),
    ("name: t\nswitches:\n  xoff: 64K\n" + N, "3: switches.xoff: bad size '64K': say 64KB or "
                                             "64KiB"),
    ("name: t\nswitches:\n  headroom: 64KB\n" + N,
     "3: switches.headroom: unknown key 'headroom' (allowed: buffer, buffer_mode, pfc, xoff, "
     "xon, int)"),
    ("name: t\nswitches: [1]\n" + N, "2: switches: expected a mapping, got a list"),
    # flows
    ("name: t\nnodes: {a: {}, b: {}}\nlinks:\n  - {endpoints: [a, b]}\ntraffic:\n  flows:\n"
     "    - {pattern: one-to-one, from: a, to: b, tokens: 16,\n       transport: rdma}\n",
     "8: traffic.flows[0].transport: unknown transport 'rdma' (one of: tcp, udp, roce)"),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS,
                         ids=[f"{i}:{e[:40]}" for i, (_, e) in enumerate(ERRORS)])
def test_errors(write: Write, text: str, expected: str) -> None:
    path = write(text)
    with pytest.raises(TopologyError, match=f"^{re.escape(f'{path}:{expected}')}$"):
        load(path)  # loaded and checked by every kind, as the CLI loads it


def test_cc_params_unknown_name_in_block_style_names_the_cc_params_line(write: Write) -> None:
    path = write(cls("cc: dcqcn", "cc_params:", "  g: 0.5", "  foo: 1"))
    # line 5 is `cc_params:`; line 6 is the valid `g: 0.5`, line 7 the unknown `foo: 1`
    with pytest.raises(TopologyError, match=f"^{re.escape(str(path))}:5: classes\\[0\\]"
                                            r"\.cc_params: dcqcn: unknown parameter\(s\) foo;"):
        load(path)


# ---- plan ---------------------------------------------------------------------------------

PLAN_TOPO = """\
name: t
time_scale: 10
switches: {buffer: 1MiB}
nodes:
  h0: {}
  h1: {}
  sw: {kind: switch}
links:
  - {endpoints: [h0, sw], rate: 10Gbps, delay: 1us, jitter: 100ns, loss: 0.1%, queue: 100KiB,
     ecn: 10KiB, mtu: 9000}
  - {endpoints: [sw, h1], rate: 10Gbps, reverse: {rate: 5Gbps}}
"""


def test_plan_switch_turns_kernel_forwarding_off() -> None:
    plan = plan_fabric(parse(PLAN_TOPO), backend="netem", run_id="r1")
    sysctls: dict[str, list[tuple[str, str]]] = {}
    for s in plan.steps:
        if isinstance(s, SetSysctl):
            sysctls.setdefault(s.netns, []).append((s.key, s.value))
    sw, h0 = plan.nodes["sw"].netns, plan.nodes["h0"].netns
    assert sysctls[sw] == [*NODE_SYSCTLS, ("net/ipv4/ip_forward", "0")]
    assert sysctls[h0] == list(NODE_SYSCTLS)  # hosts keep ip_forward=1
    assert list(plan.switches) == ["sw"]


def test_plan_switch_egress_keeps_only_delay_jitter_loss_mtu() -> None:
    plan = plan_fabric(parse(PLAN_TOPO), backend="netem", run_id="r1")
    first, second = plan.links
    # h0 -> sw: the host's NIC shapes as before, scaled 10x
    assert first.a_egress == Shape(rate_bps=GBPS, delay_ns=10 * US, jitter_ns=1 * US,
                                   loss_ppm=1000, queue_bytes=100 * KIB, ecn_bytes=10 * KIB,
                                   mtu=9000)
    # sw -> h0: the switch's port serialises and queues; the link only delays and loses
    assert first.b_egress == Shape(delay_ns=10 * US, jitter_ns=1 * US, loss_ppm=1000, mtu=9000)
    assert second.a_egress == Shape()  # sw -> h1: nothing left for the link layer
    assert second.b_egress.rate_bps == 500_000_000  # h1 -> sw: 5 Gbit/s / 10
    sw = plan.nodes["sw"].netns
    shaped = [s for s in plan.steps if isinstance(s, SetTbf | SetNetem)]
    assert not [s for s in shaped if isinstance(s, SetTbf) and s.netns == sw]
    assert [s.shape.rate_bps for s in shaped if isinstance(s, SetNetem) and s.netns == sw] == [
        None]
    tbf = [(s.netns, s.rate_bps) for s in shaped if isinstance(s, SetTbf)]
    assert tbf == [(plan.nodes["h1"].netns, 500_000_000)]


def test_plan_switch_node_plan() -> None:
    plan = plan_fabric(parse(PLAN_TOPO), backend="netem", run_id="r1")
    sp = plan.switches["sw"]
    assert sp.netns == plan.nodes["sw"].netns
    # fabric units: not scaled by time_scale
    assert sp.ports == (
        SwitchPort(dev="eth0", peer="h0", peer_address="198.18.0.1", rate_bps=10 * GBPS,
                   delay_ns=1 * US, mtu=9000),
        SwitchPort(dev="eth1", peer="h1", peer_address="198.18.0.6", rate_bps=10 * GBPS,
                   delay_ns=0, mtu=1500),
    )
    assert dict(sp.routes) == {
        "198.19.0.1": (0,), "198.19.0.2": (1,),  # h0's and h1's loopbacks
        "198.18.0.1": (0,), "198.18.0.6": (1,),  # the connected peers
    }
    assert sp.local == ("198.19.0.3", "198.18.0.2", "198.18.0.5")


def test_plan_switch_port_needs_a_rate() -> None:
    text = PLAN_TOPO.replace("{endpoints: [sw, h1], rate: 10Gbps, reverse: {rate: 5Gbps}}",
                             "{endpoints: [sw, h1], delay: 1us}")
    with pytest.raises(TopologyError, match=re.escape(
            "t.yaml:11: sw--h1: a RoCE switch port needs a rate (its egress serialises at the "
            "port rate): give the link `rate:`")):
        plan_fabric(parse(text), backend="netem", run_id="r1")


def test_plan_checks_the_switch_buffer_fits_pfc_headroom() -> None:
    text = PLAN_TOPO.replace("switches: {buffer: 1MiB}",
                             "switches: {buffer: 16KiB}\nclasses:\n  - {name: kv, lossless: true}")
    # headroom per port: 2 x 10 Gbit/s x 1 us + 2 x 9000 (eth0); 2 x 1500 (eth1, no delay)
    with pytest.raises(TopologyError, match=re.escape(
            "t.yaml:3: switches: switch 'sw': PFC headroom (23500 bytes) and class queues (8192 "
            "bytes: queue_bytes x 2 ports) leave no room in buffer_bytes (16384 bytes); raise "
            "buffer_bytes, use fewer lossless priorities or give classes smaller queues")):
        plan_fabric(parse(text), backend="netem", run_id="r1")
    lossy = text.replace("lossless: true", "lossless: false")
    assert list(plan_fabric(parse(lossy), backend="netem", run_id="r1").switches) == ["sw"]


def test_plan_veth_links_of_a_switched_fabric_turn_offloads_off() -> None:
    # a switch process forwards veth frames as bytes: they must be whole, checksummed packets
    steps = plan_fabric(pair(), backend="netem", run_id="r1").steps
    veths = [s for s in steps if isinstance(s, AddVeth)]
    offs = {(s.netns, s.dev) for s in steps if isinstance(s, SetOffloadsOff)}
    assert len(veths) == 2
    assert offs == {(v.netns_a, v.dev_a) for v in veths} | {(v.netns_b, v.dev_b) for v in veths}
    assert not any(isinstance(s, SetOffloadsOff)
                   for s in plan_fabric(pair(switches=False), backend="netem",
                                        run_id="r1").steps)
    assert not any(isinstance(s, SetOffloadsOff)
                   for s in plan_fabric(pair(), backend="userspace", run_id="r1").steps)


def test_plan_without_switches_section_is_unchanged() -> None:
    topo = parse(PLAN_TOPO.replace("switches: {buffer: 1MiB}\n", ""))
    plan = plan_fabric(topo, backend="netem", run_id="r1")
    assert plan.switches == {}
    sw = plan.nodes["sw"].netns
    forward = [s.value for s in plan.steps if isinstance(s, SetSysctl) and s.netns == sw
               and s.key == "net/ipv4/ip_forward"]
    assert forward == ["1"]
    assert plan.links[0].b_egress == topo.links[0].reverse.scaled(10)
    assert [s.rate_bps for s in plan.steps if isinstance(s, SetTbf) and s.netns == sw] == [
        GBPS]  # sw -> h1 shaped by the kernel


def test_plan_leaf_spine_switches() -> None:
    plan = plan_fabric(parse(LEAF_SPINE), backend="userspace", run_id="r1")
    loop = {n: p.loopback for n, p in plan.nodes.items()}
    assert sorted(plan.switches) == ["leaf-0", "leaf-1", "spine-0", "spine-1"]
    leaf = plan.switches["leaf-0"]
    assert [(p.peer, p.rate_bps, p.delay_ns) for p in leaf.ports] == [
        ("spine-0", 100 * GBPS, 1 * US), ("spine-1", 100 * GBPS, 1 * US),
        ("host-0", 25 * GBPS, 500), ("host-1", 25 * GBPS, 500)]
    routes = dict(leaf.routes)
    # remote hosts and the other leaf: ECMP over both spines; own hosts: their port
    for far in ("host-2", "host-3", "leaf-1"):
        assert routes[loop[far]] == (0, 1)
    assert routes[loop["host-0"]] == (2,)
    assert routes[loop["spine-1"]] == (1,)
    for i, port in enumerate(leaf.ports):
        assert routes[port.peer_address] == (i,)
    # every other loopback and every connected peer, nothing else
    assert set(routes) == ({a for n, a in loop.items() if n != "leaf-0"}
                           | {p.peer_address for p in leaf.ports})
    own = [lp.a.address if lp.a.node == "leaf-0" else lp.b.address for lp in plan.links
           if "leaf-0" in (lp.a.node, lp.b.node)]
    assert leaf.local == (loop["leaf-0"], *own)
    # every switch-sent direction has lost its rate; host-sent ones kept theirs (scaled)
    for lp in plan.links:
        for end, shape in ((lp.a, lp.a_egress), (lp.b, lp.b_egress)):
            kind = plan.nodes[end.node].kind
            assert (shape.rate_bps is None) == (kind == "switch")
            if kind == "host":
                assert shape.rate_bps == 250_000_000


# ---- path figures -------------------------------------------------------------------------

ASYM = """\
name: t
nodes: {h0: {}, h1: {}, h2: {}, sw: {kind: switch}, lone: {}}
links:
  - endpoints: [h0, sw]
    rate: 8Gbps
    delay: 1us
    reverse: {rate: 16Gbps, delay: 2us}
  - {endpoints: [sw, h1], rate: 4Gbps, delay: 3us, mtu: 9000}
  - {endpoints: [sw, h2], delay: 1us}
"""


def test_path_figures_by_hand() -> None:
    topo = parse(ASYM)
    there = path_figures(topo, "h0", "h1")
    # delays 1+2+3+3 us; 1500 B at 8G (1500 ns) and 4G (3000 ns); a 64 B ACK back at 16G
    # (32 ns) and 4G (128 ns); the MTU is the path's smallest
    assert there == PathFigures(hops=2, base_rtt_ns=9000 + 4500 + 160, bottleneck_bps=4 * GBPS,
                                first_hop_bps=8 * GBPS, mtu=1500)
    back = path_figures(topo, "h1", "h0")
    assert back == PathFigures(hops=2, base_rtt_ns=9000 + (3000 + 750) + (128 + 64),
                               bottleneck_bps=4 * GBPS, first_hop_bps=4 * GBPS, mtu=1500)
    assert there.ideal_fct_ns(1_000_000) == 13_660 + 2_000_000  # 8e6 bits at 4 Gbit/s
    assert there.ideal_fct_ns(0) == 13_660


def test_path_figures_unshaped_hop_and_no_path() -> None:
    topo = parse(ASYM)
    pf = path_figures(topo, "h0", "h2")
    # sw -> h2 is unshaped: no bottleneck, the ideal is the base RTT alone
    assert (pf.bottleneck_bps, pf.first_hop_bps) == (None, 8 * GBPS)
    assert pf.base_rtt_ns == 1000 + 2000 + 1000 + 1000 + 1500 + 32
    assert pf.ideal_fct_ns(10**9) == float(pf.base_rtt_ns)
    with pytest.raises(KeyError, match="no path from h0 to lone"):
        path_figures(topo, "h0", "lone")


def test_path_figures_leaf_spine() -> None:
    topo = parse(LEAF_SPINE)
    far = path_figures(topo, "host-0", "host-3")
    # host-leaf-spine-leaf-host: delays 2 x (0.5 + 1 + 1 + 0.5) us; 1500 B: 480 + 120 + 120 +
    # 480 ns; ACK: 20.48 + 5.12 + 5.12 + 20.48 ns -> 7251.2
    assert far == PathFigures(hops=4, base_rtt_ns=7251, bottleneck_bps=25 * GBPS,
                              first_hop_bps=25 * GBPS, mtu=1500)
    near = path_figures(topo, "host-0", "host-1")
    assert (near.hops, near.base_rtt_ns) == (2, 3001)  # 2000 + 960 + 40.96
    assert far.ideal_fct_ns(1 << 20) == pytest.approx(7251 + (1 << 20) * 8 / 25)


# ---- variants -----------------------------------------------------------------------------


def test_parse_variants_cross_product() -> None:
    topo = pair()
    assert parse_variants(topo, None, None) == [Variant(None, None, "dcqcn")]
    vs = parse_variants(topo, " DCQCN ,hpcc", "on,off")
    assert vs == [Variant("dcqcn", True), Variant("hpcc", True), Variant("dcqcn", False),
                  Variant("hpcc", False)]
    assert [v.label for v in vs] == ["dcqcn/pfc", "hpcc/pfc", "dcqcn/no-pfc", "hpcc/no-pfc"]
    assert [v.label for v in parse_variants(topo, None, "off")] == ["dcqcn/no-pfc"]
    assert [v.label for v in parse_variants(topo, "none", None)] == ["none"]


@pytest.mark.parametrize(("topo", "ccs", "pfcs", "message"), [
    (pair(), "dcqcn,reno", None,
     "--cc: unknown congestion control 'reno' (one of: none, dcqcn, timely, swift, hpcc, "
     "dctcp; or your own as FILE.py:Class or module:Class)"),
    (pair(transport="tcp"), "dcqcn", None,
     "--cc sets the RoCE transport's congestion control, but t.yaml has no `transport: roce` "
     "flow"),
    (pair(switches=False), None, "on", "--pfc needs RoCE switches: add a `switches:` section "
                                       "to t.yaml"),
    (pair(), None, "on,yes", "--pfc: expected on or off, got 'yes'"),
], ids=["unknown-cc", "no-roce-flow", "no-switches", "bad-word"])
def test_parse_variants_errors(topo: Topology, ccs: str | None, pfcs: str | None,
                               message: str) -> None:
    with pytest.raises(FabricError, match=f"^{re.escape(message)}$"):
        parse_variants(topo, ccs, pfcs)


def test_parse_variants_cc_without_traffic() -> None:
    topo = parse("name: t\nnodes: {a: {}}\n")
    with pytest.raises(FabricError, match="has no `transport: roce` flow"):
        parse_variants(topo, "hpcc", None)


def test_with_cc() -> None:
    topo = pair()
    assert _with_cc(topo, None) is topo
    same = _with_cc(topo, "dcqcn")
    # the class already on dcqcn keeps its parameters; others get the policy's defaults
    assert [(c.name, c.cc, c.cc_params) for c in same.classes] == [
        ("kv", "dcqcn", (("g", 0.5),)), ("bulk", "dcqcn", ())]
    other = _with_cc(topo, "timely")
    assert [(c.cc, c.cc_params) for c in other.classes] == [("timely", ()), ("timely", ())]
    assert [c.cc for c in topo.classes] == ["dcqcn", "hpcc"]  # the original is untouched
    assert other.links == topo.links
    assert other.switches == topo.switches


# ---- variant metrics ------------------------------------------------------------------------

IDEAL_1M = PAIR_RTT_NS + 1_000_000  # 8 Gbit/s: one ns per byte


def record(nbytes: int, slowdown: float, *, status: str = "ok", request: int = 0,
           time_scale: float = 100) -> TransferRecord:
    """An h0 -> h1 transfer whose wall FCT is `slowdown` x ideal x time_scale."""
    wall = round(slowdown * (PAIR_RTT_NS + nbytes) * time_scale)
    return TransferRecord(flow="kv", cls="kv", kind="one-to-one", src="h0", dst="h1",
                          request=request, nbytes=nbytes, chunks=1, t_start_ns=1_000,
                          t_first_byte_ns=2_000, t_done_ns=1_000 + wall, status=status)


def fake_result(records: list[TransferRecord],
                transport: dict[str, dict[str, int]] | None = None) -> Any:
    return SimpleNamespace(transfer_records=records, transport=transport or {})


SUMMARY = {"total": {"chunk_latency": {"fabric_ns": {"p99": 1234.0}},
                     "goodput": {"fabric_bps": 5e9}}}


def test_variant_metrics_slowdown_in_fabric_time() -> None:
    topo = pair()
    recs = [record(100_000, 3.0, request=0), record(1_000_000, 2.0, request=1),
            record(5 << 20, 1.5, request=2), record(4096, 1.0, status="failed", request=3)]
    m = variant_metrics(topo, fake_result(recs), SUMMARY, {})
    assert (m["transfers"], m["transfers_ok"]) == (4, 3)
    by_flow = [(f["nbytes"], f["slowdown"]) for f in m["fcts"]]
    assert by_flow == [(100_000, pytest.approx(3.0)), (1_000_000, pytest.approx(2.0)),
                       (5 << 20, pytest.approx(1.5))]
    assert m["fcts"][1]["ideal_ns"] == IDEAL_1M
    assert m["fcts"][1]["fct_ns"] == 2 * IDEAL_1M  # wall / time_scale
    assert m["slowdown_p50"] == pytest.approx(2.0)
    assert m["fct_mean_ns"] == pytest.approx(
        (3 * (PAIR_RTT_NS + 100_000) + 2 * IDEAL_1M + 1.5 * (PAIR_RTT_NS + (5 << 20))) / 3)
    assert list(m["slowdown_by_size"]) == ["<=256 KiB", "256 KiB-1 MiB", "4 MiB-16 MiB"]
    assert m["slowdown_by_size"]["256 KiB-1 MiB"] == {
        "flows": 1, "p50": pytest.approx(2.0), "p99": pytest.approx(2.0)}
    assert (m["chunk_p99_ns"], m["goodput_bps"]) == (1234.0, 5e9)
    # no switches: zero switch counters, not errors
    assert (m["max_queue_bytes"], m["drops"], m["ecn_marks"], m["pauses"]) == (0, 0, 0, 0)
    assert m["queue_samples"] == {}


def test_variant_metrics_size_buckets() -> None:
    topo = pair()
    sizes = [1, 256 * KIB, 256 * KIB + 1, 1 << 20, (1 << 20) + 1, 4 << 20, (4 << 20) + 1,
             16 << 20, (16 << 20) + 1]
    recs = [record(n, 1.0 + i, request=i) for i, n in enumerate(sizes)]
    m = variant_metrics(topo, fake_result(recs), {}, {})
    flows = {k: v["flows"] for k, v in m["slowdown_by_size"].items()}
    assert flows == {"<=256 KiB": 2, "256 KiB-1 MiB": 2, "1 MiB-4 MiB": 2, "4 MiB-16 MiB": 2,
                     ">16 MiB": 1}
    assert m["slowdown_by_size"]["<=256 KiB"]["p50"] == pytest.approx(1.5)
    assert (m["chunk_p99_ns"], m["goodput_bps"]) == (None, None)


def test_variant_metrics_reads_summarise_output() -> None:
    topo = pair()
    rec = record(1_000_000, 2.0)
    chunk = ChunkRecord(flow="kv", cls="kv", kind="one-to-one", request=0, chunk=0,
                        nbytes=1_000_000, t_send_ns=rec.t_start_ns, t_first_ns=rec.t_first_byte_ns,
                        t_last_ns=rec.t_done_ns, ok=True)
    summary = summarise([chunk], [rec], time_scale=100)
    m = variant_metrics(topo, fake_result([rec]), summary, {})
    assert m["chunk_p99_ns"] == pytest.approx(rec.fct_ns / 100)
    assert m["goodput_bps"] == pytest.approx(1_000_000 * 8 / (rec.fct_ns / 1e9) * 100)


def test_variant_metrics_host_transport_counters() -> None:
    transport = {"h0": {"retransmitted": 3, "udp_retransmitted": 1, "cnps": 2, "naks": 1,
                        "timeouts": 0, "paused_ns": 500},
                 "h1": {"cnps": 4, "timeouts": 2, "paused_ns": 900}}
    m = variant_metrics(pair(), fake_result([], transport), {}, {})
    assert (m["retransmitted"], m["cnps"], m["naks"], m["timeouts"], m["host_paused_ns"]) == (
        4, 6, 1, 2, 900)
    assert (m["fct_mean_ns"], m["slowdown_p50"], m["slowdown_by_size"]) == (None, None, {})


# A real SwitchCore: h0 (port 0) and h1 (port 1) both send lossless, ECT packets to port 2.
def _ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def packet(src: str, dst: str, dscp: int, *, ecn: int = 2, size: int = 1000) -> bytearray:
    body = bytes(size - 28)
    udp = struct.pack("!HHHH", 49152, 4791, 8 + len(body), 0)
    hdr = struct.pack("!BBHHHBBHII", 0x45, dscp << 2 | ecn, size, 0, 0x4000, 64, 17, 0,
                      _ip(src), _ip(dst))
    return bytearray(hdr + udp + body)


KV = ClassSpec("kv", dscp=26, priority=3, lossless=True, red=RedParams(1000, 2000, 0.2))
BULK = ClassSpec("bulk", dscp=0, priority=0)


def run_switch() -> tuple[dict[str, Any], dict[str, int]]:
    """Drive a 3-port switch through marks, pauses, a lossless overflow and lossy drops; return
    its stats as the switch process writes them (JSON) and what we counted ourselves."""
    ports = tuple(PortSpec(f"eth{i}", 10 * GBPS, 1000, 1500, peer=f"n{i}") for i in range(3))
    spec = SwitchSpec("sw", ports, (KV, BULK), routes={_ip("10.0.2.1"): (2,)},
                      buffer_bytes=32_000)
    core = SwitchCore(spec)
    seen = {"marks": 0, "pauses": 0, DROP_LOSSLESS: 0, DROP_BUFFER: 0, DROP_NO_ROUTE: 0,
            "queued_bytes": 0}
    for i in range(40):  # 20 at t=0, 20 at t=1000: the last 8 overflow the whole buffer
        pkt = packet(f"10.0.{i % 2}.1", "10.0.2.1", 26)
        verdict = core.receive(0 if i < 20 else 1000, i % 2, pkt)
        if verdict == QUEUED:
            seen["queued_bytes"] += len(pkt)
            seen["marks"] += pkt[1] & 3 == 3
        else:
            seen[verdict] += 1
    for dst in ("10.0.2.1", "10.0.2.1", "10.9.9.9"):  # lossy: pool full, then no route
        seen[core.receive(1000, 0, packet("10.0.0.1", dst, 0))] += 1
    seen["pauses"] = sum(1 for _, _, pause in core.take_pfc() if pause)
    core.on_pfc(1100, 2, 3, True)  # h2's side pauses our port 2 for 500 ns
    core.on_pfc(1600, 2, 3, False)
    assert core.dequeue(2000, 2) is not None  # one 1000 B packet leaves; a sample at t=2000
    return json.loads(json.dumps(core.stats(3000))), seen


def test_switch_run_is_what_the_metrics_tests_assume() -> None:
    _, seen = run_switch()
    assert seen == {"marks": 30, "pauses": 2, DROP_LOSSLESS: 8, DROP_BUFFER: 2,
                    DROP_NO_ROUTE: 1, "queued_bytes": 32_000}


def test_variant_metrics_from_switch_stats() -> None:
    stats, seen = run_switch()
    idle = json.loads(json.dumps(SwitchCore(SwitchSpec(
        "idle", (PortSpec("eth0", GBPS, 0, 1500),), (BULK,))).stats(0)))
    m = variant_metrics(pair(), fake_result([]), {}, {"sw": stats, "idle": idle})
    assert m["ecn_marks"] == seen["marks"]
    assert m["pauses"] == seen["pauses"]
    assert m["paused_ns"] == 500
    assert m["max_queue_bytes"] == seen["queued_bytes"]
    # port 2 held 20 kB over [0, 1000), 32 kB over [1000, 2000), 31 kB over [2000, 3000)
    assert m["mean_queue_bytes"] == pytest.approx((20_000 + 32_000 + 31_000) / 3)
    assert m["drops"] == seen[DROP_LOSSLESS] + seen[DROP_BUFFER] + seen[DROP_NO_ROUTE]
    assert m["queue_samples"] == {"sw": stats["samples"], "idle": []}
    t, q = _worst_queue_series(m["queue_samples"])
    assert t.tolist() == [0, 1000, 2000]
    assert q.tolist() == [0, 20_000, 32_000]  # port 2, sampled before each event


def test_variant_metrics_counts_lossless_drops_and_per_class() -> None:
    stats, seen = run_switch()
    recs = [record(100_000, 2.0), replace(record(200_000, 3.0), flow="b", cls="bulk")]
    summary = summarise([], recs, time_scale=100)
    m = variant_metrics(pair(), fake_result(recs), summary, {"sw": stats})
    assert m["drops_lossless"] == seen[DROP_LOSSLESS] == 8
    kv, bulk = m["by_class"]["kv"], m["by_class"]["bulk"]
    assert (kv["transfers"], kv["drops"], kv["ecn_marks"]) == (1, 8, 30)
    assert (bulk["transfers"], bulk["drops"], bulk["ecn_marks"]) == (1, 3, 0)
    assert kv["fct_mean_ns"] == pytest.approx(2 * (PAIR_RTT_NS + 100_000))
    text = render([VariantResult(Variant(None, None), m, summary)], pair())
    assert "by traffic class" in text


def test_variant_metrics_paused_is_the_longest_of_ports_and_nics() -> None:
    stats, _ = run_switch()
    m = variant_metrics(pair(), fake_result([], {"h0": {"paused_ns": 900}}), {}, {"sw": stats})
    assert (m["paused_ns"], m["host_paused_ns"]) == (900, 900)
    m = variant_metrics(pair(), fake_result([], {"h0": {"paused_ns": 90}}), {}, {"sw": stats})
    assert (m["paused_ns"], m["host_paused_ns"]) == (500, 90)


def test_variant_metrics_queue_samples_on_the_run_clock() -> None:
    """A switch counts fabric time from its own start; samples move onto the run's clock."""
    stats, _ = run_switch()
    stats["t0_monotonic_ns"] = 1_000_000  # what the switch process adds to core.stats()
    result = fake_result([])
    result.started_ns = 5_000_000  # the run started 4 ms of host time = 40 us fabric later
    m = variant_metrics(pair(), result, {}, {"sw": stats})
    assert [t for t, _ in m["queue_samples"]["sw"]] == [-40_000, -39_000, -38_000]
    assert [q for _, q in m["queue_samples"]["sw"]] == [q for _, q in stats["samples"]]


PORT_KEYS = ("max_queue_bytes", "mean_queue_bytes", "pauses_sent", "paused_ns")


@pytest.mark.parametrize("key", PORT_KEYS)
def test_stats_have_the_port_keys_variant_metrics_reads(key: str) -> None:
    stats, _ = run_switch()
    assert all(key in port for port in stats["ports"])


def test_stats_have_the_class_drop_and_sample_layout_variant_metrics_reads() -> None:
    stats, _ = run_switch()
    assert set(stats["drops"]) == set(DROPS)
    kv = stats["ports"][2]["classes"]["kv"]
    assert kv["drops"] == {DROP_LOSSLESS: 8}
    assert kv["ecn_marks"] == 30
    # samples: [(t, [queue bytes per port])]
    assert all(isinstance(t, int) and len(q) == 3 for t, q in stats["samples"])


# ---- reporting ------------------------------------------------------------------------------


def chunks_of_records(recs: list[TransferRecord]) -> list[ChunkRecord]:
    """One chunk per transfer as its receiver records it: a corrupt transfer's chunk with a
    digest that did not match."""
    return [ChunkRecord(flow=r.flow, cls=r.cls, kind=r.kind, request=r.request, chunk=0,
                        nbytes=r.nbytes, t_send_ns=r.t_start_ns, t_first_ns=r.t_first_byte_ns,
                        t_last_ns=r.t_done_ns, ok=r.status != "corrupt") for r in recs]


def results() -> list[VariantResult]:
    """Two variants; the second also had a transfer whose chunk arrived corrupt."""
    topo = pair()
    stats, _ = run_switch()
    out = []
    for i, v in enumerate([Variant("dcqcn", True), Variant("hpcc", False)]):
        recs = [record(100_000, 2.0 + i, request=0), record(2 << 20, 1.5 + i, request=1)]
        recs += [record(4096, 1.0, request=2, status="corrupt")] if i else []
        counted = summarise(chunks_of_records(recs), recs, time_scale=100)
        m = variant_metrics(topo, fake_result(recs, {"h0": {"cnps": i}}),
                            {**SUMMARY, "integrity": counted["integrity"]}, {"sw": stats})
        out.append(VariantResult(v, m, {"total": {}}, {"sw": stats},
                                 ["timed out"] if i else []))
    return out


def test_render_table() -> None:
    text = render(results(), pair())
    assert text.startswith("t: fabric time (host ran 100x slower)")
    for label in ("dcqcn/pfc", "hpcc/no-pfc"):  # its row, its integrity line, its slowdowns
        assert sum(line.lstrip().startswith(label) for line in text.splitlines()) == 3
    assert "FCT slowdown by flow size" in text
    assert "<=256 KiB" in text
    assert "1 MiB-4 MiB" in text
    assert "2.00 / 2.00 (1)" in text
    assert "3.00 / 3.00 (1)" in text


def test_render_prints_each_variants_integrity_from_its_counted_chunks() -> None:
    lines = render(results(), pair()).splitlines()
    assert "dcqcn/pfc: integrity: OK (2 chunks, 2 transfers)" in lines
    assert "hpcc/no-pfc: integrity: FAILED: 1 corrupt, 1 transfer failed" in lines
    # right under the table, before the per-class and per-size tables
    first = lines.index("dcqcn/pfc: integrity: OK (2 chunks, 2 transfers)")
    assert lines[first + 1].startswith("hpcc/no-pfc: integrity: FAILED")
    assert lines[first - 1].lstrip().startswith("hpcc/no-pfc ")
    # a comparison.json from before integrity was kept says so rather than claim OK
    old = results()[0]
    del old.metrics["integrity"]
    assert "dcqcn/pfc: integrity: not recorded" in render([old], pair()).splitlines()


def test_render_without_flows() -> None:
    m = variant_metrics(pair(), fake_result([]), {}, {})
    text = render([VariantResult(Variant(None, None), m, {})], pair())
    assert "\nfile " in text
    assert "FCT slowdown by flow size" not in text


def test_write_plots(tmp_path: Path) -> None:
    paths = write_plots(results(), pair(), tmp_path / "out")
    assert [p.name for p in paths] == ["fct_slowdown.png", "queues.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_plots_without_switches_is_quiet(tmp_path: Path) -> None:
    recs = [record(100_000, 2.0)]
    m = variant_metrics(pair(switches=False), fake_result(recs), {}, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_plots([VariantResult(Variant("dcqcn", None), m, {})], pair(switches=False),
                    tmp_path)


def test_write_comparison_round_trip(tmp_path: Path) -> None:
    rs = results()
    path = write_comparison(rs, pair(), tmp_path / "cmp")
    assert path == tmp_path / "cmp" / "comparison.json"
    data = json.loads(path.read_text())
    assert (data["fabric"], data["time_scale"]) == ("t", 100.0)
    rows = data["variants"]
    assert [(r["variant"], r["cc"], r["pfc"], r["errors"]) for r in rows] == [
        ("dcqcn/pfc", "dcqcn", True, []), ("hpcc/no-pfc", "hpcc", False, ["timed out"])]
    for row, r in zip(rows, rs, strict=True):
        assert "fcts" not in row
        assert "queue_samples" not in row
        assert row["slowdown_p50"] == pytest.approx(r.metrics["slowdown_p50"])
        assert row["ecn_marks"] == r.metrics["ecn_marks"]
        assert row["cnps"] == r.metrics["cnps"]
        assert row["slowdown_by_size"] == json.loads(json.dumps(r.metrics["slowdown_by_size"]))


# ---- the runner's per-node RoCE plan ---------------------------------------------------------


def test_roce_plan_sender_receiver_and_bystander() -> None:
    topo = pair()
    transfers = schedule(topo)
    assert {(t.src, t.dst, t.transport) for t in transfers} == {("h0", "h1", "roce")}
    sender = roce_plan("h0", topo, transfers)
    # drain: 1 MiB of switch buffer at the 8 Gbit/s NIC = 1048576 ns, twice
    assert sender == {
        "time_scale": 100.0,
        "nic_rate_bps": 8 * GBPS,  # h0 has one link: its NIC paces every queue pair
        "int": True,
        "nodes": ["h0", "h1", "sw"],
        "classes": {"kv": {"cc": "dcqcn", "cc_params": {"g": 0.5}, "priority": 3, "index": 0},
                    "bulk": {"cc": "hpcc", "cc_params": {}, "priority": 0, "index": 1}},
        "control_dscp": 48,  # the default RoCE control class: CNPs, ACKs and NAKs
        "peers": {"h1": {"rate_bps": 8 * GBPS, "base_rtt_ns": PAIR_RTT_NS, "mtu": 1500,
                         "hops": 2, "rto_ns": 2 * 1_048_576}},
    }
    receiver = roce_plan("h1", topo, transfers)
    assert receiver["peers"] == {}
    assert receiver["classes"] == sender["classes"]
    assert roce_plan("sw", topo, transfers) == {}


def test_roce_plan_without_switches_or_roce() -> None:
    topo = pair(switches=False)
    plan = roce_plan("h0", topo, schedule(topo))
    assert plan["int"] is False
    assert plan["peers"]["h1"]["rto_ns"] == 4 * PAIR_RTT_NS  # no buffer to drain
    tcp = pair(transport="tcp")
    assert roce_plan("h0", tcp, schedule(tcp)) == {}


def test_check_prints_the_switches_line() -> None:
    from click.testing import CliRunner

    from fabric.cli import cli

    result = CliRunner().invoke(cli, ["check", "--links", "userspace",
                                      "topologies/roce-incast.yaml"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("RoCE switches:"))
    # 100 Gbit/s x 1 us twice + 2 x 9000 B = 43000 B of headroom per port and priority
    assert line.startswith("RoCE switches: 6 (buffer 4 MiB shared, PFC on, INT on); spine-0: "
                           "headroom 41.992 KiB per port and lossless priority, XOFF ")


CC_WARN = """\
name: w
time_scale: {ts}
{switches}
classes:
  - {{name: kv, dscp: 26, priority: 3, lossless: true, cc: {cc}{ecn}}}
defaults: {{link: {{rate: 100Gbps, delay: 1us, mtu: 9000}}}}
nodes: {{a: {{}}, b: {{}}, sw: {{kind: switch}}}}
links: [{{endpoints: [a, sw]}}, {{endpoints: [sw, b]}}]
traffic:
  flows: [{{name: f, pattern: one-to-one, from: a, to: b, class: kv, transport: roce,
           tokens: 16}}]
"""


@pytest.mark.parametrize(("cc", "switches", "ecn", "ts", "expected"), [
    ("hpcc", "switches: {int: false}", "", 2000, "hpcc reads in-band telemetry, but "
     "switches.int is off"),
    ("hpcc", "", "", 2000, "hpcc reads in-band telemetry, but there are no RoCE switches"),
    ("dcqcn", "switches: {}", "", 2000, "dcqcn reacts to ECN marks, but nothing marks"),
    ("timely", "switches: {}", "", 2000, "timely needs RTT samples finer than this host's "
     "~0.5 ms of timing noise, which is 250 ns of fabric time at time_scale 2000"),
    ("none", "", ", ecn: {kmin: 1KB, kmax: 2KB}", 2000, "classes with ecn thresholds (kv) "
     "only mark at RoCE switches"),
])
def test_cc_warnings(cc: str, switches: str, ecn: str, ts: int, expected: str) -> None:
    from fabric.checks import cc_warnings

    topo = parse(CC_WARN.format(cc=cc, switches=switches, ecn=ecn, ts=ts))
    warnings = cc_warnings(topo)
    assert any(expected in w for w in warnings), warnings


def test_cc_warnings_quiet_when_the_policy_can_work() -> None:
    from fabric.checks import cc_warnings

    for cc, ecn in (("dcqcn", ", ecn: {kmin: 1KB, kmax: 2KB}"), ("hpcc", ""), ("swift", "")):
        topo = parse(CC_WARN.format(cc=cc, switches="switches: {}", ecn=ecn, ts=10000))
        assert cc_warnings(topo) == []
    topo = parse(CC_WARN.format(cc="timely", switches="switches: {}", ecn="", ts=10000))
    assert cc_warnings(topo) == []


def test_report_reprints_the_comparison_from_comparison_json(tmp_path: Path) -> None:
    """`fabric report DIR` of a RoCE comparison prints the table the run printed."""
    from click.testing import CliRunner

    from fabric.cli import cli
    from fabric.run.roce import read_comparison

    rs = results()
    write_comparison(rs, pair(), tmp_path)
    back, label = read_comparison(tmp_path / "comparison.json")
    assert [r.variant.label for r in back] == ["dcqcn/pfc", "hpcc/no-pfc"]
    assert (label.name, label.time_scale) == ("t", 100.0)
    (tmp_path / "dcqcn-pfc").mkdir()
    (tmp_path / "dcqcn-pfc" / "summary.json").write_text("{}")
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        render(rs, pair()) + "\nerror: hpcc/no-pfc: timed out\n"
        f"per variant (fabric report {tmp_path}/VARIANT): dcqcn-pfc\n"
    )
