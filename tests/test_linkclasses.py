"""Per-class queues on a link direction (sans-IO): `ClassScheduler` and `LinkDirection` with
`classes=`, driven with hand-made times."""

from __future__ import annotations

import random

import pytest

from fabric.linkmodel import Action, ClassScheduler, LinkDirection
from fabric.topology.model import Shape, TrafficClass

US = 1_000
MS = 1_000_000
MBIT = 1_000_000

KV = TrafficClass(name="kv", dscp=26, priority=3, strict=True)
BULK = TrafficClass(name="bulk", dscp=10, priority=0)
GOLD = TrafficClass(name="gold", dscp=18, priority=1, weight=3)
SILVER = TrafficClass(name="silver", dscp=20, priority=0, weight=1)

# 8 Mbit/s: a 1000-byte packet takes 1 ms on the wire
SHAPE = Shape(rate_bps=8 * MBIT, queue_bytes=1_000_000)


def link(classes: tuple[TrafficClass, ...], shape: Shape = SHAPE, **kw: object) -> LinkDirection:
    return LinkDirection(shape, rate_in_engine=True, rng=random.Random(1), classes=classes,
                         **kw)  # type: ignore[arg-type]


def run(m: LinkDirection, until: int) -> list[tuple[int, object]]:
    """Release everything due up to `until`, stepping by the model's deadlines, as the
    engine does: (release time, item)."""
    out = []
    while (d := m.next_deadline()) is not None and d <= until:
        out.extend((d, item) for item in m.release(d))
    return out


# -- the scheduler alone ---------------------------------------------------------------------


def test_scheduler_serves_strict_first() -> None:
    s = ClassScheduler((BULK, KV), mtu=1500)
    for i in range(5):
        s.push(0, 1000, f"b{i}")
    assert s.pop() == (0, 1000, "b0")
    s.push(1, 100, "kv")
    # it goes before the rest of the bulk backlog
    assert s.pop() == (1, 100, "kv")
    assert [s.pop()[2] for _ in range(4)] == ["b1", "b2", "b3", "b4"]  # type: ignore[index]
    assert s.pop() is None
    assert s.count == 0
    assert s.total_bytes == 0


def test_scheduler_strict_classes_by_priority() -> None:
    hi = TrafficClass(name="hi", dscp=46, priority=5, strict=True)
    s = ClassScheduler((KV, hi, BULK), mtu=1500)
    s.push(2, 100, "bulk")
    s.push(0, 100, "kv")
    s.push(1, 100, "hi")
    assert [s.pop()[2] for _ in range(3)] == ["hi", "kv", "bulk"]  # type: ignore[index]


def test_scheduler_shares_by_weight_under_backlog() -> None:
    s = ClassScheduler((GOLD, SILVER), mtu=1500)
    for _i in range(400):
        s.push(0, 1500, "g")
        s.push(1, 1500, "s")
    picked = [s.pop()[0] for _ in range(200)]  # type: ignore[index]
    gold = picked.count(0)
    assert gold / len(picked) == pytest.approx(0.75, abs=0.02)


def test_scheduler_weight_counts_bytes_not_packets() -> None:
    # equal weights, silver sends packets 1/10 the size: it gets equal bytes, 10x packets
    s = ClassScheduler((TrafficClass("a", dscp=1), TrafficClass("b", dscp=2)), mtu=1500)
    for _ in range(1000):
        s.push(0, 1500, "a")
    for _ in range(10000):
        s.push(1, 150, "b")
    sent = [0, 0]
    for _ in range(2000):
        k, length, _ = s.pop()  # type: ignore[misc]
        sent[k] += length
    assert sent[0] / sent[1] == pytest.approx(1.0, abs=0.05)


def test_scheduler_work_conserving_and_unknown_dscp_goes_to_priority_0() -> None:
    s = ClassScheduler((KV, GOLD, SILVER), mtu=1500)
    assert s.dscp_class[KV.dscp] == 0
    assert s.dscp_class[63] == 2  # the first class of priority 0 (silver)
    s.push(1, 1500, "g")
    assert s.pop() == (1, 1500, "g")  # alone, a weighted class takes the wire at once
    assert s.pop() is None


def test_scheduler_clear() -> None:
    s = ClassScheduler((GOLD, SILVER), mtu=1500)
    s.push(0, 1500, "g")
    s.clear()
    assert s.count == 0
    assert s.pop() is None


# -- a link direction with classes -----------------------------------------------------------


def test_one_class_keeps_the_fifo() -> None:
    assert not link((BULK,)).classed
    assert not link(()).classed
    assert link((KV, BULK)).classed
    # the kernel shapes rate (engine does not serialise): no class queues
    m = LinkDirection(SHAPE, rate_in_engine=False, classes=(KV, BULK))
    assert not m.classed


def backlog_then_kv(classes: tuple[TrafficClass, ...]) -> int:
    """50 bulk packets of 1000 B arrive at t=0 (50 ms of backlog at 8 Mbit/s), a KV packet at
    t=0.5 ms: when the KV packet is released."""
    m = link(classes, Shape(rate_bps=8 * MBIT, delay_ns=2 * MS, queue_bytes=1_000_000))
    for i in range(50):
        assert m.offer(1000, False, 0, f"b{i}", dscp=BULK.dscp).action is Action.HOLD
    v = m.offer(1000, False, MS // 2, "kv", dscp=KV.dscp)
    assert v.action is Action.HOLD
    released = run(m, 10**12)
    assert len(released) == 51
    return next(t for t, item in released if item == "kv")


def test_strict_kv_overtakes_a_deep_bulk_backlog() -> None:
    fifo = backlog_then_kv((BULK,))
    classed = backlog_then_kv((KV, BULK))
    # FIFO: behind 50 packets (50 ms of wire) plus its own 1 ms and the 2 ms delay
    assert fifo == 51 * MS + 2 * MS
    # strict: the wire finishes the bulk packet it is sending (until 1 ms), then takes the
    # KV packet: out at 2 ms, released at 4 ms
    assert classed == 2 * MS + 2 * MS


def test_late_release_calls_decide_as_the_wire_would() -> None:
    # the engine may call release late: decisions use the times the wire freed, and only the
    # packets that had arrived by then
    m = link((KV, BULK))
    for i in range(3):
        m.offer(1000, False, 0, f"b{i}", dscp=BULK.dscp)
    m.offer(1000, False, int(2.5 * MS), "kv", dscp=KV.dscp)  # offer runs the wire to 2.5 ms
    out = [item for item in m.release(10 * MS)]
    # b0 0-1 ms, b1 1-2 ms, b2 picked at 2 ms (kv not there yet), kv at 3 ms
    assert out == ["b0", "b1", "b2", "kv"]


def test_verdict_release_is_the_next_deadline_for_queued_packets() -> None:
    m = link((KV, BULK))
    v0 = m.offer(1000, False, 0, "b0", dscp=BULK.dscp)
    assert v0.release_ns == 1 * MS  # on the wire at once: departs after 1 ms, no delay
    v1 = m.offer(1000, False, 0, "b1", dscp=BULK.dscp)
    assert v1.release_ns == 1 * MS  # queued: call release when the wire frees
    assert m.release(1 * MS) == ["b0"]
    assert m.next_deadline() == 2 * MS
    assert m.release(2 * MS) == ["b1"]
    assert m.next_deadline() is None


def test_each_class_has_its_own_drop_tail_queue() -> None:
    m = link((KV, BULK), Shape(rate_bps=8 * MBIT, queue_bytes=5000))
    accepted = [m.offer(1000, False, 0, i, dscp=BULK.dscp).accepted for i in range(10)]
    # one on the wire, then 5000 bytes queued; the rest dropped
    assert accepted.count(True) == 6
    # a full bulk queue does not drop KV packets: they have a queue of their own
    assert all(m.offer(1000, False, 0, i, dscp=KV.dscp).accepted for i in range(5))
    st = m.statistics()
    by = {c.name: c for c in st.classes}
    assert by["bulk"].drops_queue == 4
    assert by["kv"].drops_queue == 0
    assert st.drops_queue == 4
    assert by["bulk"].queue_bytes_max == 5000
    assert by["kv"].queue_bytes_max == 5000


def test_class_queue_cap() -> None:
    capped = TrafficClass(name="kv", dscp=26, priority=3, strict=True, queue_bytes=2000)
    m = link((capped, BULK), Shape(rate_bps=8 * MBIT, queue_bytes=100_000))
    accepted = [m.offer(1000, False, 0, i, dscp=26).accepted for i in range(6)]
    assert accepted.count(True) == 3  # one on the wire, 2000 bytes queued


def test_class_ecn_red_marks_on_its_own_queue() -> None:
    red = TrafficClass(name="kv", dscp=26, priority=3, red=(2000, 4000, 1.0))
    m = link((red, BULK))
    # a deep bulk queue marks nothing in the KV class
    for i in range(20):
        assert not m.offer(1000, True, 0, i, dscp=BULK.dscp).ce
    marks = [m.offer(1000, True, 0, i, dscp=26).ce for i in range(8)]
    # queue before each: 0,1000,...: no mark at or below kmin (2000), always at kmax (4000)
    assert marks[:3] == [False, False, False]
    assert marks[5:] == [True, True, True]
    st = m.statistics()
    assert {c.name: c.ecn_marks for c in st.classes}["bulk"] == 0
    assert st.ecn_marks == sum(marks)


def test_link_ecn_threshold_marks_classes_without_their_own() -> None:
    m = link((KV, BULK), Shape(rate_bps=8 * MBIT, queue_bytes=100_000, ecn_bytes=3000))
    marks = [m.offer(1000, True, 0, i, dscp=BULK.dscp).ce for i in range(6)]
    assert marks == [False, False, False, False, True, True]
    assert not m.offer(1000, False, 0, "x", dscp=BULK.dscp).ce  # not ECT: never marked


def test_weighted_classes_share_the_wire_by_weight() -> None:
    m = link((GOLD, SILVER), Shape(rate_bps=8 * MBIT, queue_bytes=10_000_000))
    for i in range(300):
        m.offer(1000, False, 0, ("g", i), dscp=GOLD.dscp)
        m.offer(1000, False, 0, ("s", i), dscp=SILVER.dscp)
    out = run(m, 200 * MS)  # 200 packets' worth of wire
    gold = sum(1 for _, item in out if item[0] == "g")  # type: ignore[index]
    assert len(out) == 200
    assert gold / len(out) == pytest.approx(0.75, abs=0.03)


def test_delay_and_jitter_apply_after_the_wire() -> None:
    m = link((KV, BULK), Shape(rate_bps=8 * MBIT, delay_ns=5 * MS, jitter_ns=1 * MS))
    for i in range(10):
        m.offer(1000, False, 0, i, dscp=BULK.dscp)
    out = run(m, 10**12)
    assert len(out) == 10
    for t, i in out:
        departure = (i + 1) * MS  # type: ignore[operator]
        assert departure + 4 * MS <= t <= departure + 6 * MS


def test_rate_change_retimes_what_is_still_queued() -> None:
    m = link((KV, BULK))
    for i in range(4):
        m.offer(1000, False, 0, i, dscp=BULK.dscp)
    # at 0.5 ms the rate doubles: packet 0 keeps its 1 ms departure, the rest take 0.5 ms each
    m.set_shape(Shape(rate_bps=16 * MBIT, queue_bytes=1_000_000), int(0.5 * MS))
    out = run(m, 10**12)
    assert [t for t, _ in out] == [1 * MS, int(1.5 * MS), 2 * MS, int(2.5 * MS)]


def test_rate_removed_live_releases_the_class_queues() -> None:
    m = link((KV, BULK), Shape(rate_bps=8 * MBIT, delay_ns=1 * MS, queue_bytes=1_000_000))
    for i in range(4):
        m.offer(1000, False, 0, i, dscp=BULK.dscp)
    m.set_shape(Shape(delay_ns=1 * MS), int(0.5 * MS))
    assert not m.classed
    out = run(m, 10**12)
    # packet 0 was on the wire (departs 1 ms, released 2 ms); the queued ones leave at 0.5 ms
    # and, as on a FIFO link whose rate goes, wait behind it in the one delay line
    assert out == [(2 * MS, 0), (2 * MS, 1), (2 * MS, 2), (2 * MS, 3)]
    assert m.held_packets == 0
    assert m.held_bytes == 0


def test_link_down_drops_the_class_queues() -> None:
    m = link((KV, BULK))
    for i in range(5):
        m.offer(1000, False, 0, i, dscp=BULK.dscp)
    m.offer(1000, False, 0, "kv", dscp=KV.dscp)
    assert m.held_packets == 6
    assert m.set_up(False, 100) == 6
    assert m.held_packets == 0
    assert m.next_deadline() is None
    m.set_up(True, 200)
    assert m.offer(1000, False, 300, "after", dscp=KV.dscp).release_ns == 300 + 1 * MS


def test_queue_bytes_and_stats_count_every_class() -> None:
    m = link((KV, BULK))
    for i in range(3):
        m.offer(1000, False, 0, i, dscp=BULK.dscp)
    m.offer(500, False, 0, "kv", dscp=KV.dscp)
    assert m.queue_bytes(0) == 3500
    assert m.class_queue_bytes() == (500, 2000)  # b0 is on the wire
    run(m, 10**12)
    st = m.statistics()
    by = {c.name: c for c in st.classes}
    assert by["kv"].packets_out == 1
    assert by["kv"].bytes_out == 500
    assert by["bulk"].packets_out == 3
    assert by["bulk"].packets_in == 3
    assert st.packets_out == 4
    assert st.queue_bytes_max == 3500
    assert st.to_dict()["classes"][0]["name"] == "kv"


def test_fifo_stats_have_no_classes() -> None:
    m = link((BULK,))
    m.offer(1000, False, 0, "x")
    assert m.statistics().classes == ()


# -- the plan and the engine's configuration -------------------------------------------------


def test_plan_queues_shaped_links_by_class_in_the_engine() -> None:
    from fabric.plan import SetTbf, plan_fabric
    from fabric.topology.document import Topology
    from fabric.topology.model import Link, Node

    fast = Shape(rate_bps=2000 * MBIT, delay_ns=MS)  # tbf would shape it without classes
    nodes = {"a": Node("a"), "b": Node("b")}
    one = Topology(name="t", nodes=nodes, links=(Link("a", "b", fast, fast),))
    two = Topology(name="t", nodes=nodes, links=(Link("a", "b", fast, fast),),
                   classes=(KV, BULK))
    p1 = plan_fabric(one, backend="userspace", run_id="r")
    assert p1.links[0].classes == ()
    assert not p1.links[0].engine_rate
    p2 = plan_fabric(two, backend="userspace", run_id="r")
    assert p2.links[0].classes == (KV, BULK)
    assert p2.links[0].engine_rate  # the queue must be the engine's to queue by class
    assert not any(isinstance(s, SetTbf) for s in p2.steps)


def test_engine_link_carries_its_classes() -> None:
    from fabric.net.engine import Endpoint, EngineLink

    red = TrafficClass(name="kv", dscp=26, priority=3, strict=True, red=(1000, 5000, 0.5),
                       queue_bytes=64_000)
    link = EngineLink(id="a--b", a=Endpoint(None, "x"), b=Endpoint(None, "y"),
                      forward=SHAPE, reverse=SHAPE, rate_in_engine=True,
                      classes=(red, GOLD))
    back = EngineLink.from_dict(link.to_dict())
    assert back.classes == (red, GOLD)
    assert "classes" not in EngineLink.from_dict({**link.to_dict(), "classes": []}).to_dict()


def test_engine_reads_dscp_and_ect_from_ipv4_and_ipv6() -> None:
    from fabric.net.engine import _ect_dscp

    v4 = bytearray(20)
    v4[0], v4[1] = 0x45, 26 << 2 | 2
    assert _ect_dscp(v4) == (True, 26)
    v6 = bytearray(40)
    tc = 46 << 2  # traffic class: DSCP 46, not ECT
    v6[0], v6[1] = 0x60 | tc >> 4, (tc & 0x0F) << 4
    assert _ect_dscp(v6) == (False, 46)
    assert _ect_dscp(bytearray(b"\x00")) == (False, 0)


# -- the netem backend: htb and u32 DSCP filters (the calls, without a kernel) ----------------


def test_netem_backend_plans_htb_where_the_file_has_classes() -> None:
    from fabric.plan import SetNetem, SetTbf, plan_fabric
    from fabric.topology.document import Topology
    from fabric.topology.model import Link, Node

    rated = Shape(rate_bps=100 * MBIT)
    delayed = Shape(rate_bps=100 * MBIT, delay_ns=MS)
    nodes = {"a": Node("a"), "b": Node("b"), "c": Node("c")}
    links = (Link("a", "b", rated, rated), Link("b", "c", delayed, delayed))
    steps = plan_fabric(Topology(name="t", nodes=nodes, links=links, classes=(KV, BULK)),
                        backend="netem", run_id="r").steps
    assert {s.classes for s in steps if isinstance(s, SetTbf | SetNetem)} == {(KV, BULK)}
    one = plan_fabric(Topology(name="t", nodes=nodes, links=links), backend="netem",
                      run_id="r").steps
    assert {s.classes for s in one if isinstance(s, SetTbf | SetNetem)} == {()}


def test_htb_tree_serves_strict_first_then_weights_under_the_link_rate() -> None:
    from fabric.net.kernel import HTB_CHILD_HANDLE, HTB_ROOT_HANDLE, htb_tree

    capped = TrafficClass(name="ctl", dscp=48, priority=6, strict=True, queue_bytes=64_000)
    classes = (KV, GOLD, SILVER, capped)
    calls = htb_tree(100 * MBIT, 500_000, 1500, classes, parent=None)
    qdisc, inner, *rest = calls
    assert qdisc == ("add", "htb", {"handle": HTB_ROOT_HANDLE, "default": 0x12})  # silver
    assert inner[2]["rate"] == inner[2]["ceil"] == "100000000bit"
    leaves = [kw for cmd, kind, kw in rest if kind == "htb"]
    # strict by priority (ctl 6 before kv 3), the weighted ones one prio below
    assert [kw["prio"] for kw in leaves] == [1, 2, 2, 0]
    assert [kw["quantum"] for kw in leaves] == [1514, 3 * 1514, 1514, 1514]
    # each borrows up to the link rate from a floor; the floors add up to 0.4% of it
    assert all(kw["ceil"] == "100000000bit" for kw in leaves)
    assert all(kw["rate"] == "100000bit" for kw in leaves)
    fifos = [kw["limit"] for cmd, kind, kw in rest if kind == "bfifo"]
    assert fifos == [500_000, 500_000, 500_000, 64_000]
    filters = {kw["target"] & 0xFFFF: kw["keys"] for cmd, kind, kw in rest
               if kind == "u32" and kw["protocol"] == 0x0800}
    # DSCP 26 -> TOS 0x68, 18 -> 0x48, 48 -> 0xc0; silver is htb's default (no filter)
    assert filters == {0x10: ["0x68/0xfc+1"], 0x11: ["0x48/0xfc+1"], 0x13: ["0xc0/0xfc+1"]}
    under = htb_tree(100 * MBIT, 500_000, 1500, classes, parent=0x00010001)
    assert under[0][2]["handle"] == HTB_CHILD_HANDLE
    assert under[0][2]["parent"] == 0x00010001


# -- the per-class counters reach the run's links.json and its table --------------------------


def test_per_class_link_counters_are_kept_and_shown() -> None:
    from fabric.metrics.records import parse_links
    from fabric.metrics.report import render_links

    m = link((KV, BULK))
    for i in range(3):
        m.offer(1000, False, 0, i, dscp=BULK.dscp)
    m.offer(500, False, 0, "kv", dscp=KV.dscp)
    run(m, 10**12)
    engine = {"links": {"a--b": {"forward": m.statistics().to_dict()}}}
    (rec,) = parse_links(engine)
    assert rec.forward is not None
    by = {c["name"]: c for c in rec.forward.classes}
    assert by["kv"]["bytes_out"] == 500
    assert by["bulk"]["packets_out"] == 3
    saved = rec.forward.to_dict()
    assert saved["classes"][1]["name"] == "bulk"
    table = render_links({"links": [{"id": "a--b", "forward": saved}]})
    rows = table.splitlines()
    assert any(r.split()[:3] == ["class", "kv", "1"] for r in rows)
    assert any(r.split()[:3] == ["class", "bulk", "3"] for r in rows)


def test_check_says_both_backends_mark_ecn_per_class(monkeypatch) -> None:
    """The netem backend marks a class's ECN with a red qdisc per htb class, so `check` warns
    on neither backend; a backend whose class queues did not mark would be warned about."""
    from fabric.checks import backend_warnings
    from fabric.plan import LINK_BACKENDS
    from fabric.topology.document import Topology
    from fabric.topology.model import Link, Node

    red = TrafficClass(name="kv", dscp=26, priority=3, red=(10_000, 40_000, 0.2))
    shaped = Shape(rate_bps=100 * MBIT)
    topo = Topology(name="t", nodes={"a": Node("a"), "b": Node("b")},
                    links=(Link("a", "b", shaped, shaped),), classes=(red, BULK))
    assert all(b.class_ecn for b in LINK_BACKENDS.values())
    for backend in ("netem", "userspace"):
        assert not any(w.startswith("class ECN") for w in backend_warnings(topo, backend))
    monkeypatch.setattr(type(LINK_BACKENDS["netem"]), "class_ecn", False)
    (w,) = [w for w in backend_warnings(topo, "netem") if w.startswith("class ECN")]
    assert w.startswith("class ECN (kv) is not realised on links by the netem backend")
    assert w.endswith("use --links userspace")


def test_htb_tree_gives_an_ecn_class_a_red_queue() -> None:
    """A class with `ecn` gets red (ECN on) as its htb leaf instead of bfifo: min kmin, max
    kmax, probability pmax, the class queue's limit, a frame as avpkt; the others bfifo."""
    from pyroute2.netlink.rtnl.tcmsg import plugins

    from fabric.net.kernel import _red_codec, htb_tree

    kv = TrafficClass(name="kv", dscp=26, priority=3, strict=True, red=(30_000, 150_000, 0.1))
    capped = TrafficClass(name="gold", dscp=18, priority=1, weight=3, queue_bytes=200_000,
                          red=(20_000, 400_000, 1.0))
    calls = htb_tree(100 * MBIT, 500_000, 1500, (kv, BULK, capped), parent=None)
    leaves = {kw["parent"] & 0xFFFF: (kind, kw) for cmd, kind, kw in calls
              if cmd == "add" and kind in ("bfifo", "red")}
    assert leaves[0x11] == ("bfifo", {"handle": 0x210000, "parent": 0x10011,
                                      "limit": 500_000})
    kind, red = leaves[0x10]
    assert kind == "red"
    assert red == {"handle": 0x200000, "parent": 0x10010, "limit": 500_000, "min": 30_000,
                   "max": 150_000, "probability": 0.1, "avpkt": 1514, "burst": 21,
                   "bandwidth": 100 * MBIT, "ecn": True}
    kind, gold = leaves[0x12]
    # kmax above the class's own queue: RED's max is held to the queue's limit
    assert (kind, gold["limit"], gold["min"], gold["max"]) == ("red", 200_000, 20_000, 200_000)
    # what the kernel is sent (linux/pkt_sched.h tc_red_qopt): thresholds in bytes, the ECN
    # flag, pmax as a fraction of 2^32, the 256-byte idle-damping table
    _red_codec()
    attrs = dict(plugins["red"].get_parameters(dict(red))["attrs"])
    parms = attrs["TCA_RED_PARMS"]
    assert (parms["limit"], parms["qth_min"], parms["qth_max"], parms["flags"]) == (
        500_000, 30_000, 150_000, 1)
    assert parms["Wlog"] == 2  # the average follows the queue within a few packets
    assert attrs["TCA_RED_MAX_P"] == int(0.1 * 2**32)
    assert len(attrs["TCA_RED_STAB"]) == 256


def test_htb_tree_classifies_ipv6_by_its_traffic_class() -> None:
    """u32 filters for IPv6 (protocol 0x86dd, their own prio) match the DSCP bits of the
    traffic class: the first header word's bits 22-27, mask 0x0fc00000."""
    from pyroute2.netlink.rtnl.tcmsg import plugins, tcmsg

    from fabric.net.kernel import htb_tree

    calls = htb_tree(100 * MBIT, 500_000, 1500, (KV, GOLD, SILVER), parent=0x00010001)
    v4 = [kw for cmd, kind, kw in calls if kind == "u32" and kw["protocol"] == 0x0800]
    v6 = [kw for cmd, kind, kw in calls if kind == "u32" and kw["protocol"] == 0x86DD]
    assert {kw["prio"] for kw in v4} == {1}
    assert {kw["prio"] for kw in v6} == {2}
    # silver (priority 0) is htb's default: no filter; kv DSCP 26, gold DSCP 18
    assert {kw["target"]: kw["keys"] for kw in v6} == {
        0x00100010: ["0x0680/0x0fc0+0"], 0x00100011: ["0x0480/0x0fc0+0"]}
    # encoded as the kernel gets it: one key, mask and value on the header's first word
    msg = tcmsg()
    msg["attrs"] = [["TCA_KIND", "u32"], ["TCA_OPTIONS", plugins["u32"].get_parameters(
        dict(v6[0]))]]
    msg.encode()
    key = bytes(msg.data)[-16:]
    assert key[:12].hex() == "0fc00000" + f"{26 << 22:08x}" + "00000000"
