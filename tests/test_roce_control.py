"""The RoCE control class: CNPs, ACKs and NAKs in a strict-priority class of their own.

The file declares it (`control: true`, or a class named `control`) or gets the default (DSCP
48, priority 6, strict, lossy, 4 KiB queue); the loader checks it at its lines; the plan
gives it to the switches, the runner's node plan gives its DSCP to the RoCE nodes. The switch
core is driven by hand, with the classes the plan builds, to show a CNP no longer waits
behind a KV backlog (and that with DSCP 0, as before, it would have).
"""

from __future__ import annotations

import json
import struct
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fabric.errors import TopologyError
from fabric.net.lifecycle import switch_config
from fabric.plan import plan_fabric
from fabric.roce import wire
from fabric.run.roce import Variant, VariantResult, render, variant_metrics
from fabric.run.traffic import roce_plan
from fabric.switch.core import DROP_BUFFER, QUEUED, SwitchCore
from fabric.switch.node import build_spec
from fabric.topology import Topology, parse_topology
from fabric.topology.document import control_class, roce_classes
from fabric.topology.model import DEFAULT_CONTROL_CLASS
from fabric.traffic import schedule
from fabric.wire.ip import checksum

ROOT = Path(__file__).resolve().parent.parent

# h0 and h2 send to h1 through one switch; 8 Gbit/s is one byte per ns.
FILE = """\
name: t
switches: {buffer: 4MiB}
classes:
  - {name: kv, dscp: 26, priority: 3, lossless: true, cc: dcqcn}
CONTROL
nodes:
  h0: {}
  h1: {}
  h2: {}
  sw: {kind: switch}
links:
  - {endpoints: [h0, sw], rate: 8Gbps, delay: 1us}
  - {endpoints: [h2, sw], rate: 8Gbps, delay: 1us}
  - {endpoints: [sw, h1], rate: 8Gbps, delay: 1us}
traffic:
  flows:
    - {name: kv, pattern: one-to-one, from: h0, to: h1, class: kv, transport: roce,
       tokens: 16}
"""


def parse(text: str) -> Topology:
    return parse_topology(textwrap.dedent(text), source="t.yaml")


def topo(control: str = "") -> Topology:
    return parse(FILE.replace("CONTROL\n", control))


def error(text: str) -> str:
    with pytest.raises(TopologyError) as e:
        parse(text)
    return str(e.value)


# ---- which class is the control class ------------------------------------------------------


def test_a_file_without_one_gets_the_default_control_class() -> None:
    t = topo()
    assert [c.name for c in t.classes] == ["kv"]  # the file's classes stay the file's
    c = control_class(t)
    assert c == DEFAULT_CONTROL_CLASS
    assert c.line is None  # not in the file
    assert (c.name, c.dscp, c.priority, c.strict, c.lossless, c.queue_bytes) == (
        "control", 48, 6, True, False, 4 * 1024)
    assert [c.name for c in roce_classes(t)] == ["kv", "control"]


def test_a_file_without_roce_has_no_control_class() -> None:
    t = parse("""\
        name: t
        classes: [{name: kv, dscp: 48}]
        nodes: {a: {}}
        """)
    assert control_class(t) is None
    assert roce_classes(t) == t.classes


def test_a_class_named_control_or_marked_is_the_control_class() -> None:
    named = topo("  - {name: control, dscp: 46, priority: 5, strict: true}\n")
    assert control_class(named) == named.classes[1]
    assert named.classes[1].line == 5
    assert roce_classes(named) == named.classes
    marked = topo("  - {name: control, dscp: 46}\n"
                  "  - {name: cnp, dscp: 40, priority: 7, strict: true, control: true, "
                  "queue: 16KiB}\n")
    c = control_class(marked)
    assert c is not None
    assert (c.name, c.dscp, c.queue_bytes) == ("cnp", 40, 16 * 1024)
    assert not marked.classes[1].control  # the name yields to the mark
    assert [c.name for c in roce_classes(marked)] == ["kv", "control", "cnp"]


@pytest.mark.parametrize(("control", "match"), [
    ("  - {name: a, dscp: 40, control: true}\n  - {name: b, dscp: 41, control: true}\n",
     r"t.yaml:6: classes\[2\].control: class 'b' is marked as the RoCE control class, but so "
     r"is 'a' \(line 5\)"),
    ("  - {name: control, dscp: 40, priority: 6, lossless: true}\n",
     r"t.yaml:5: classes\[1\]: class 'control' is the RoCE control class .* cannot be "
     r"lossless"),
    ("  - {name: bulk, dscp: 48}\n",
     r"t.yaml:5: classes\[1\]: class 'bulk' uses DSCP 48, the default RoCE control class's"
     r".*`control: true` on a class with a free DSCP"),
    ("  - {name: gold, dscp: 40, priority: 6, lossless: true}\n",
     r"t.yaml:5: classes\[1\]: lossless class 'gold' uses priority 6, the default RoCE "
     r"control class's, which is lossy"),
    ("  - {name: control, dscp: 40, control: false}\n",
     r"t.yaml:5: classes\[1\]: class 'control' has `control: false`, but 'control' is the "
     r"name of the default RoCE control class"),
    ("  - {name: c, dscp: 40, control: yes-please}\n",
     r"t.yaml:5: classes\[1\].control: expected true or false"),
    ("  - {name: c, dscp: 40, queue: 0B}\n",
     r"t.yaml:5: classes\[1\].queue: a class's queue must hold at least one packet"),
    ("  - {name: c, dscp: 40, priority: 2, lossless: true, queue: 8KB}\n",
     r"t.yaml:5: classes\[1\].queue: a lossless class has no queue limit of its own"),
])
def test_bad_control_classes_are_refused_at_their_line(control: str, match: str) -> None:
    with pytest.raises(TopologyError, match=match):
        topo(control)


def test_dscp_48_is_free_without_roce() -> None:
    t = parse("""\
        name: t
        classes: [{name: bulk, dscp: 48}]
        nodes: {a: {}}
        """)
    assert t.classes[0].dscp == 48


def test_shipped_roce_files_have_a_strict_lossy_control_class() -> None:
    from fabric.topology import load_topology

    for name in ("roce-incast", "roce-mixed", "roce-alltoall", "failover", "memsem-roce"):
        t = load_topology(ROOT / "topologies" / f"{name}.yaml")
        c = control_class(t)
        assert c is not None, name
        assert (c.strict, c.lossless, c.queue_bytes) == (True, False, 4 * 1024), name
        assert c in roce_classes(t)


# ---- what the switches and nodes are given ---------------------------------------------------


def test_the_switch_process_and_the_nodes_get_the_control_class(tmp_path: Path) -> None:
    t = topo()
    plan = plan_fabric(t, backend="userspace", run_id="r1")
    cfg = switch_config(plan, "sw", tmp_path)
    assert cfg["classes"][-1] == {"name": "control", "dscp": 48, "priority": 6,
                                  "lossless": False, "weight": 1, "strict": True, "red": None,
                                  "queue_bytes": 4 * 1024}
    spec = build_spec(cfg)
    assert [c.name for c in spec.classes] == ["kv", "control"]
    transfers = schedule(t)
    assert roce_plan("h0", t, transfers)["control_dscp"] == 48  # the sender's ACK socket
    assert roce_plan("h1", t, transfers)["control_dscp"] == 48  # the receiver's: CNPs, ACKs
    named = topo("  - {name: control, dscp: 46, priority: 5, strict: true}\n")
    assert roce_plan("h1", named, schedule(named))["control_dscp"] == 46


def test_check_prints_the_control_class() -> None:
    from fabric.kinds import kinds

    t = topo()
    roce = next(k for k in kinds() if k.name == "roce")
    lines = roce.check_lines(t, plan_fabric(t, backend="userspace", run_id="r"))
    assert any(line.startswith("RoCE control class: control (default): DSCP 48, priority 6, "
                               "strict, lossy, queue 4 KiB") for line in lines), lines


# ---- the switch: a CNP overtakes a KV backlog ------------------------------------------------


def ipv4_udp(src: str, dst: str, payload: bytes, *, dscp: int, ecn: int = 0,
             sport: int = 49152) -> bytearray:
    """An IPv4/UDP packet to RoCE's port 4791 with a valid header checksum."""
    udp = struct.pack("!HHHH", sport, wire.ROCE_PORT, 8 + len(payload), 0)
    total = 20 + len(udp) + len(payload)
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, dscp << 2 | ecn, total, 0, 0x4000, 64,
                                17, 0, bytes(map(int, src.split("."))),
                                bytes(map(int, dst.split(".")))))
    struct.pack_into("!H", hdr, 10, checksum(hdr))
    return hdr + udp + payload


def queueing_delays(control_dscp: int, *, backlog: int = 100) -> dict[str, Any]:
    """A switch built as the plan builds it; its port to h1 holds `backlog` KV packets of
    1000 bytes from h0 (one already on the wire), then a CNP and an ACK from h2 to h1 arrive
    with `control_dscp`. How long each waited in the queue, in ns (8 Gbit/s: 1 ns a byte)."""
    t = topo()
    plan = plan_fabric(t, backend="userspace", run_id="r1")
    cfg = switch_config(plan, "sw", Path("/nonexistent"))
    core = SwitchCore(build_spec(cfg))
    addr = {n: p.loopback for n, p in plan.nodes.items()}
    port = next(i for i, p in enumerate(plan.switches["sw"].ports) if p.peer == "h1")
    ingress = {p.peer: i for i, p in enumerate(plan.switches["sw"].ports)}
    kv = b"".join(bytes(p) for p in wire.data_packet(wire.RDMA_WRITE_ONLY, 1, 0,
                                                      bytes(1000 - 20 - 8 - 12 - 16 - 4),
                                                      reth=(0, 1, 952)))
    now = 0
    for _ in range(backlog):
        pkt = ipv4_udp(addr["h0"], addr["h1"], kv, dscp=26, ecn=2)
        assert core.receive(now, ingress["h0"], pkt) == QUEUED
    first = core.dequeue(now, port)  # the port is busy with the first KV packet
    assert first is not None
    arrivals = {}
    now = 500  # the control packets arrive after the backlog
    for name, payload in (("cnp", wire.cnp_packet(7)), ("ack", wire.ack_packet(7, 3, 1))):
        pkt = ipv4_udp(addr["h2"], addr["h1"], bytes(payload), dscp=control_dscp, sport=50000)
        assert core.receive(now, ingress["h2"], pkt) == QUEUED
        arrivals[len(pkt)] = name
    waits: dict[str, int] = {}
    kv_waits = []
    while (t_dep := core.next_departure(port)) is not None:
        pkt = core.dequeue(t_dep, port)
        assert pkt is not None
        if pkt[1] >> 2 == 26:
            kv_waits.append(t_dep)
        else:
            waits[arrivals[len(pkt)]] = t_dep - now
    waits["kv_last"] = kv_waits[-1]
    stats = core.stats(kv_waits[-1])
    waits["control_max_wait_ns"] = stats["ports"][port]["classes"]["control"]["max_wait_ns"]
    waits["stats"] = json.loads(json.dumps(stats))  # as the switch process writes them
    return waits


def test_a_cnp_no_longer_waits_behind_kv_data_in_the_switch() -> None:
    after = queueing_delays(control_dscp=48)
    # the CNP leaves as soon as the KV packet on the wire is out: 1000 ns after it started,
    # 500 after the CNP came; the ACK right behind it
    assert after["cnp"] == 500
    assert after["ack"] == 500 + len(wire.cnp_packet(7)) + 28
    assert after["control_max_wait_ns"] == after["ack"]  # the switch counts it per class
    # before: CNPs and ACKs left with DSCP 0, which no class has, so they went to the
    # file's first class -- the lossless KV queue -- and waited out the whole backlog
    before = queueing_delays(control_dscp=0)
    assert before["cnp"] > 99 * 1000 - 500
    assert before["cnp"] > 190 * after["cnp"]
    assert before["ack"] > before["cnp"]
    assert before["control_max_wait_ns"] == 0  # nothing went through the control queue


def test_the_control_queue_is_small() -> None:
    t = topo()
    plan = plan_fabric(t, backend="userspace", run_id="r1")
    core = SwitchCore(build_spec(switch_config(plan, "sw", Path("/nonexistent"))))
    addr = {n: p.loopback for n, p in plan.nodes.items()}
    ingress = {p.peer: i for i, p in enumerate(plan.switches["sw"].ports)}
    cnp = ipv4_udp(addr["h2"], addr["h1"], wire.cnp_packet(7), dscp=48)
    verdicts = [core.receive(0, ingress["h2"], bytearray(cnp)) for _ in range(2000)]
    queued = verdicts.count(QUEUED)
    assert queued == 4 * 1024 // len(cnp)
    assert set(verdicts[queued:]) == {DROP_BUFFER}


def test_the_run_report_shows_the_control_class() -> None:
    """The comparison's per-class rows come from the switches' counters too: the control
    class moves no transfers but has its own row, with its packets and their waits."""
    t = topo()
    result = SimpleNamespace(transfer_records=[], transport={}, links=None, started_ns=0)
    rows = {}
    for dscp in (48, 0):
        stats = queueing_delays(control_dscp=dscp)["stats"]
        rows[dscp] = variant_metrics(t, result, {}, {"sw": stats})["by_class"]
    control, kv = rows[48]["control"], rows[48]["kv"]
    assert (control["transfers"], control["switch_packets"], control["drops"]) == (0, 2, 0)
    assert control["wait_max_ns"] == 560  # the ACK, behind the CNP
    assert control["wait_mean_ns"] == (500 + 560) / 2
    assert control["max_queue_bytes"] == 2 * 28 + len(wire.cnp_packet(7)) + len(
        wire.ack_packet(7, 3, 1))
    assert kv["switch_packets"] == 100
    assert kv["wait_max_ns"] > 90_000
    assert "control" not in rows[0]  # before: no packet went through a control queue
    assert rows[0]["kv"]["switch_packets"] == 102  # the CNP and ACK went with the KV data
    text = render([VariantResult(Variant(None, None), {
        **variant_metrics(t, result, {}, {"sw": queueing_delays(48)["stats"]})}, {})], t)
    line = next(x for x in text.splitlines() if " control " in x)
    assert line.split()[-7:] == ["2", "108", "B", "530", "ns", "560", "ns"], line


def test_an_expectation_can_name_the_control_wait() -> None:
    from fabric.metrics.expect import RunFigures, evaluate

    t = topo()
    result = SimpleNamespace(transfer_records=[], transport={}, links=None, started_ns=0)
    m = variant_metrics(t, result, {}, {"sw": queueing_delays(48)["stats"]})
    assert m["control_wait_max_ns"] == 560
    e = parse(FILE.replace("CONTROL\n", "") + "expect:\n  - control.wait_max < 1us\n").expect
    (outcome,) = evaluate(e, RunFigures({}, m))
    assert outcome.passed, outcome
    before = variant_metrics(t, result, {}, {"sw": queueing_delays(0)["stats"]})
    assert before["control_wait_max_ns"] is None  # nothing crossed a control queue


def test_the_control_queue_is_reserved_so_data_cannot_starve_it() -> None:
    """Data that fills the shared pool leaves the control class its own queue at every
    port: it is carved out of the buffer, as PFC headroom is."""
    from fabric.switch.core import ClassSpec, PortSpec, SwitchError, SwitchSpec

    ports = tuple(PortSpec(f"eth{i}", 8_000_000_000, 1000, 1500, peer=f"n{i}")
                  for i in range(3))
    bulk = ClassSpec("bulk", dscp=10, priority=1)
    control = ClassSpec("control", dscp=48, priority=6, strict=True, queue_bytes=4096)
    dst = {"h1": 0x0A000101, "h2": 0x0A000201}
    spec = SwitchSpec("sw", ports, (bulk, control), routes={dst["h1"]: (1,), dst["h2"]: (2,)},
                      buffer_bytes=64 * 1024)
    assert spec.reserved_class_bytes() == 3 * 4096
    assert spec.pool_bytes() == 64 * 1024 - 3 * 4096
    core = SwitchCore(spec)
    n = 0
    while core.receive(0, 0, ipv4_udp("10.0.0.1", "10.0.1.1", bytes(972), dscp=10)) == QUEUED:
        n += 1
    assert n == spec.pool_bytes() // 1000  # the pool is full of data
    # a CNP to the same port and one to another still have their queues
    for to in ("10.0.1.1", "10.0.2.1"):
        assert core.receive(0, 0, ipv4_udp("10.0.0.1", to, wire.cnp_packet(7), dscp=48)) == QUEUED
    assert core.stats(0)["buffer"]["reserved_class_bytes"] == 3 * 4096
    with pytest.raises(SwitchError, match=r"switch 'sw': class queues \(196608 bytes: "
                       r"queue_bytes x 3 ports\) leave no room in buffer_bytes \(65536 bytes\); "
                       r"raise buffer_bytes or give classes smaller queues"):
        SwitchSpec("sw", ports, (bulk, ClassSpec("control", dscp=48, priority=6,
                                                 queue_bytes=64 * 1024)), buffer_bytes=64 * 1024)
