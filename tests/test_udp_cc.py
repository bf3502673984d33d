"""Congestion control on the UDP transport: the `fabric.cc` policies drive it as they drive RoCE.

Sans-IO first: the ECN echo on the wire, the receiver's CE count, `FlowControl`'s pacing clock,
window and the events it feeds a policy (with a recording policy and hand-made times), then
four senders through a simulated bottleneck (drop-tail queue with an ECN threshold) on
virtual time, where `dctcp` and `dcqcn` must drop far less than `none`. Then the plan a node
gets, the topology's `cc:` key for UDP flows, and as root four UDP flows through a built
fabric's 1 Gbit/s link.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from fabric.cc import CongestionControl, make_cc
from fabric.wire.frames import ProtocolError
from fabric.wire.udp import (
    ACK,
    DATA,
    ECE,
    HEADER_SIZE,
    IP_UDP_OVERHEAD,
    FlowControl,
    PathEstimate,
    UdpReceiver,
    UdpSender,
    ack_ce_count,
    pack_ack,
    pack_segment,
    unpack_ack_payload,
    unpack_segment,
)

MS = 1_000_000
US = 1_000
MSS = 1440
WIRE = MSS + IP_UDP_OVERHEAD + HEADER_SIZE  # 1500


@dataclass(frozen=True, slots=True)
class RecParams:
    pass


class Recording(CongestionControl):
    """A policy that records what it is fed and holds a fixed rate and window."""

    name: ClassVar[str] = "recording"
    Params: ClassVar[type[Any]] = RecParams

    def __init__(self, rate_bps: int = 1_000_000_000, window: int | None = None) -> None:
        super().__init__(rate_bps, 100 * US)
        self._rate, self._window = rate_bps, window
        self.events: list[tuple[Any, ...]] = []
        self.timer_at: int | None = None

    @property
    def rate_bps(self) -> int:
        return self._rate

    @property
    def window_bytes(self) -> int | None:
        return self._window

    def on_ack(self, now_ns: int, acked_bytes: int, rtt_ns: int | None = None,
               ecn_echo: bool = False, int_records: Any = None) -> None:  # noqa: ANN401
        self.events.append(("ack", now_ns, acked_bytes, rtt_ns, ecn_echo))

    def on_nak(self, now_ns: int) -> None:
        self.events.append(("nak", now_ns))

    def on_cnp(self, now_ns: int) -> None:
        self.events.append(("cnp", now_ns))

    def on_timer(self, now_ns: int) -> None:
        self.events.append(("timer", now_ns))
        self.timer_at = None

    def next_timer_ns(self) -> int | None:
        return self.timer_at


# -- the ECN echo on the wire --------------------------------------------------------------------


def test_an_ack_carries_its_ce_count_before_dsacks_and_nacks() -> None:
    data = pack_ack(1, 2, 100_000, 5, 12, nacks=[7, 9], dsacks=[3], ce=4)
    seg, payload = unpack_segment(data)
    assert seg.flags & ECE
    assert seg.flags & ACK
    assert ack_ce_count(seg.flags, payload) == 4
    assert unpack_ack_payload(seg.flags, payload) == ([3], [7, 9])
    plain, p2 = unpack_segment(pack_ack(1, 2, 100_000, 5, 12, nacks=[7]))
    assert not plain.flags & ECE
    assert ack_ce_count(plain.flags, p2) == 0
    assert unpack_ack_payload(plain.flags, p2) == ([], [7])


def test_ece_is_an_ack_flag_and_needs_its_count() -> None:
    with pytest.raises(ProtocolError, match="not a valid combination"):
        unpack_segment(pack_segment(DATA | ECE, 1, 1, 0, 0, 10))
    seg, payload = unpack_segment(pack_segment(ACK | ECE, 1, 1, 0, 0, 10))
    with pytest.raises(ProtocolError, match="ECE flag on an ACK without its CE count"):
        ack_ce_count(seg.flags, payload)
    with pytest.raises(ProtocolError, match="ECE flag on an ACK without its CE count"):
        unpack_ack_payload(seg.flags, payload)


def test_the_receiver_echoes_how_many_new_segments_arrived_ce_marked() -> None:
    rx = UdpReceiver(1, 1, 10 * MSS, MSS)
    for seq in range(4):
        rx.on_data(seq, seq * MSS, MSS, 0, ce=seq % 2 == 1)
    rx.on_data(1, MSS, MSS, 0, ce=True)  # a duplicate is not counted again
    seg, payload = unpack_segment(rx.ack_segment())
    assert ack_ce_count(seg.flags, payload) == 2
    assert rx.ce == 2
    rx.on_data(4, 4 * MSS, MSS, 0)
    seg, payload = unpack_segment(rx.ack_segment())
    assert not seg.flags & ECE  # the count is per ACK
    assert rx.ce_marked == 2


# -- FlowControl: pacing, window, signals ---------------------------------------------------------


def test_segments_leave_one_pacing_slot_apart_at_the_policy_rate() -> None:
    cc = Recording(rate_bps=120_000_000)  # 1500 B on the wire every 100 us
    tx = UdpSender(1, 1, 20 * MSS, MSS, 64, 100 * MS, control=FlowControl(cc))
    assert [s[0] for s in tx.segments_to_send(0)] == [0]
    assert tx.next_deadline() == 100 * US
    assert tx.segments_to_send(50 * US) == []
    assert [s[0] for s in tx.segments_to_send(100 * US)] == [1]
    # woken 350 us late: it catches up (three slots have passed), not more
    assert [s[0] for s in tx.segments_to_send(550 * US)] == [2, 3, 4, 5]
    assert tx.next_deadline() == 600 * US


def test_a_late_wakeup_catches_up_at_most_late_cap() -> None:
    cc = Recording(rate_bps=120_000_000)
    control = FlowControl(cc, late_cap_ns=300 * US)
    tx = UdpSender(1, 1, 40 * MSS, MSS, 64, 100 * MS, control=control)
    tx.segments_to_send(0)
    sent = tx.segments_to_send(10 * MS)  # 10 ms late: only 300 us worth, plus this slot
    assert len(sent) == 4


def test_time_scale_slows_the_pacing_and_the_policy_sees_fabric_time() -> None:
    cc = Recording(rate_bps=1_200_000_000)  # 10 us a segment in fabric time
    control = FlowControl(cc, scale=10.0, origin_ns=5 * MS)
    tx = UdpSender(1, 1, 4 * MSS, MSS, 64, 100 * MS, control=control)
    tx.segments_to_send(5 * MS)
    assert tx.next_deadline() == 5 * MS + 100 * US  # 100 us on the host
    tx.on_ack(1, 5 * MS + 400 * US)
    assert cc.events == [("ack", 40 * US, MSS, 40 * US, False)]  # fabric time and RTT


def test_the_policys_window_limits_what_is_in_flight() -> None:
    cc = Recording(rate_bps=100_000_000_000, window=3 * MSS)
    tx = UdpSender(1, 1, 20 * MSS, MSS, 64, 100 * MS, control=FlowControl(cc))
    assert [s[0] for s in tx.segments_to_send(0)] == [0]  # the next slot is 120 ns away
    assert [s[0] for s in tx.segments_to_send(10 * US)] == [1, 2]
    assert tx.next_deadline() == 100 * MS  # only the RTO: the window is shut
    tx.on_ack(2, 1 * MS)
    assert [s[0] for s in tx.segments_to_send(1 * MS) + tx.segments_to_send(1 * MS + US)] \
        == [3, 4]


def test_a_rate_based_policy_leaves_the_fixed_window() -> None:
    cc = make_cc("none", line_rate_bps=100_000_000_000, base_rtt_ns=10 * US, mtu=MSS)
    tx = UdpSender(1, 1, 100 * MSS, MSS, 16, 100 * MS, control=FlowControl(cc))
    assert len(tx.segments_to_send(0) + tx.segments_to_send(10 * US)) == 16


def test_a_window_below_one_segment_still_moves() -> None:
    cc = Recording(rate_bps=100_000_000_000, window=100)
    tx = UdpSender(1, 1, 3 * MSS, MSS, 64, 100 * MS, control=FlowControl(cc))
    assert len(tx.segments_to_send(0) + tx.segments_to_send(10 * US)) == 1


def send_for(tx: UdpSender, until: int, step: int = 1 * US) -> int:
    """Let `tx` send at every `step` from 0 up to `until`; how many segments it sent."""
    return sum(len(tx.segments_to_send(t)) for t in range(0, until, step))


def test_acks_feed_delivered_bytes_rtt_and_ce_marked_bytes_first() -> None:
    cc = Recording(rate_bps=100_000_000_000)
    tx = UdpSender(1, 1, 20 * MSS, MSS, 64, 100 * MS, control=FlowControl(cc))
    assert send_for(tx, 1) == 1
    assert send_for(tx, 10 * US) == 19
    seg, payload = unpack_segment(pack_ack(1, 1, 20 * MSS, 8, 8, ce=3))
    tx.on_ack_segment(seg, payload, 200 * US)
    assert cc.events == [("cnp", 200 * US), ("ack", 200 * US, 3 * MSS, 200 * US, True),
                         ("ack", 200 * US, 5 * MSS, None, False)]  # one RTT sample: the
    # longest of the newly acknowledged (segment 0, sent at 0)
    # within the CNP interval (4 us, fabric time) an echo is no CNP; after it, one
    cc.events.clear()
    tx.on_ack_segment(*unpack_segment(pack_ack(1, 1, 20 * MSS, 9, 9, ce=1)), 202 * US)
    tx.on_ack_segment(*unpack_segment(pack_ack(1, 1, 20 * MSS, 10, 10, ce=1)), 210 * US)
    assert [e[0] for e in cc.events] == ["ack", "cnp", "ack"]


def test_selectively_acked_bytes_count_once() -> None:
    cc = Recording(rate_bps=100_000_000_000)
    tx = UdpSender(1, 1, 10 * MSS, MSS, 64, 100 * MS, control=FlowControl(cc))
    assert send_for(tx, 10 * US) == 10
    tx.on_ack_segment(*unpack_segment(pack_ack(1, 1, 10 * MSS, 2, 6, nacks=[2])), 1 * MS)
    tx.on_ack_segment(*unpack_segment(pack_ack(1, 1, 10 * MSS, 2, 6, nacks=[2])), 2 * MS)
    acked = sum(e[2] for e in cc.events if e[0] == "ack")
    assert acked == 5 * MSS  # 0, 1 and 3..5; the repeated ACK adds nothing


def test_a_loss_recovery_is_one_nak_and_its_resends_are_paced_first() -> None:
    cc = Recording(rate_bps=120_000_000)  # a slot per 100 us
    control = FlowControl(cc)
    tx = UdpSender(1, 1, 40 * MSS, MSS, 64, 100 * MS, control=control, reorder_ns=0)
    now = 0
    for _ in range(8):  # segments 0..7, 100 us apart
        tx.segments_to_send(now)
        now += 100 * US
    # 1 and 2 are missing, 3..7 arrived
    tx.on_ack_segment(*unpack_segment(pack_ack(1, 1, 40 * MSS, 1, 8, nacks=[1, 2])), now)
    first = tx.segments_to_send(now)
    assert [s[0] for s in first] == [1]
    assert [e[0] for e in cc.events].count("nak") == 1
    assert [s[0] for s in tx.segments_to_send(now + 100 * US)] == [2]
    assert [s[0] for s in tx.segments_to_send(now + 200 * US)] == [8]  # then new data
    assert [e[0] for e in cc.events].count("nak") == 1
    assert control.losses == 1
    assert tx.retransmitted == 2


def test_a_timeout_is_a_nak_and_queues_its_resends_without_counting_twice() -> None:
    cc = Recording(rate_bps=100_000_000_000)
    tx = UdpSender(1, 1, 4 * MSS, MSS, 64, 1 * MS, control=FlowControl(cc),
                   path=PathEstimate(rto_ns=1 * MS, min_rto_ns=1 * MS))
    assert send_for(tx, 10 * US) == 4  # within 10 us
    cc._rate = 120_000_000  # now a slot per 100 us
    resent = tx.segments_to_send(1 * MS + 10 * US)  # all four expired: one leaves now
    assert [s[0] for s in resent] == [0]
    assert tx.timeouts == 1
    assert cc.events == [("nak", 1 * MS + 10 * US)]
    assert [s[0] for s in tx.segments_to_send(1 * MS + 60 * US)] == []  # paced
    later = tx.segments_to_send(1 * MS + 110 * US)
    assert [s[0] for s in later] == [1]
    assert tx.timeouts == 1
    assert len(cc.events) == 1
    assert [s[0] for s in tx.segments_to_send(1 * MS + 310 * US)] == [2, 3]
    assert tx.retransmitted == 4


def test_the_policys_timers_run_when_the_flow_is_polled() -> None:
    cc = Recording(rate_bps=120_000_000)
    cc.timer_at = 50 * US
    tx = UdpSender(1, 1, 4 * MSS, MSS, 64, 100 * MS, control=FlowControl(cc))
    tx.segments_to_send(0)
    assert cc.events == []
    tx.segments_to_send(100 * US)
    assert cc.events == [("timer", 100 * US)]


def test_without_a_control_the_sender_is_unchanged() -> None:
    tx = UdpSender(1, 1, 100 * MSS, MSS, 16, 100 * MS)
    assert len(tx.segments_to_send(0)) == 16
    assert tx.next_deadline() == 100 * MS


# -- four flows into one bottleneck, on virtual time ----------------------------------------------


@dataclass
class Bottleneck:
    """A drop-tail FIFO at `rate_bps` holding at most `queue` bytes, CE-marking ECT packets
    that arrive while it holds more than `ecn` bytes; then `delay_ns` of propagation."""

    rate_bps: int
    queue: int
    ecn: int
    delay_ns: int
    busy: int = 0  # when the wire is free
    backlog: list[tuple[int, int]] = field(default_factory=list)  # (departure, bytes)
    drops: int = 0
    marks: int = 0

    def arrive(self, now: int, nbytes: int, ect: bool) -> tuple[int, bool] | None:
        while self.backlog and self.backlog[0][0] <= now:
            heapq.heappop(self.backlog)
        held = sum(b for _, b in self.backlog)
        if held + nbytes > self.queue:
            self.drops += 1
            return None
        ce = ect and held > self.ecn
        self.marks += ce
        self.busy = max(self.busy, now) + nbytes * 8 * 1_000_000_000 // self.rate_bps
        heapq.heappush(self.backlog, (self.busy, nbytes))
        return self.busy + self.delay_ns, ce


def four_into_one(cc_name: str, *, units: int = 4, unit_segments: int = 400,
                  ) -> tuple[Bottleneck, int, int]:
    """Four senders at 1 Gbit/s each, one 1 Gbit/s bottleneck (128 KiB queue, marks above
    32 KiB, 100 us each way): (the bottleneck, the last completion time, bytes delivered)."""
    rate, delay = 1_000_000_000, 100 * US
    link = Bottleneck(rate, 128 * 1024, 32 * 1024, delay)
    ect = "ecn" in make_cc(cc_name, line_rate_bps=rate, base_rtt_ns=1).needs
    events: list[tuple[int, int, str, int, Any]] = []
    n = 0
    total = unit_segments * MSS
    flows = []
    for _ in range(4):
        cc = make_cc(cc_name, line_rate_bps=rate, base_rtt_ns=4 * delay, mtu=MSS)
        flows.append({"control": FlowControl(cc), "path": PathEstimate.initial(100 * MS),
                      "unit": 0, "tx": None, "rx": None, "done_at": 0})
    for f, fl in enumerate(flows):
        fl["tx"] = UdpSender(f, 0, total, MSS, 90, 100 * MS, path=fl["path"],
                             control=fl["control"])
        fl["rx"] = UdpReceiver(f, 0, total, MSS)
    now = 0
    delivered = 0
    for _ in range(5_000_000):
        for f, fl in enumerate(flows):
            tx = fl["tx"]
            if tx is None:
                continue
            for seq, off, length in tx.segments_to_send(now):
                got = link.arrive(now + delay, length + IP_UDP_OVERHEAD + HEADER_SIZE, ect)
                if got is not None:
                    n += 1
                    heapq.heappush(events, (got[0], n, "data", f,
                                            (fl["unit"], (seq, off, length, got[1]))))
        if all(fl["tx"] is None for fl in flows):
            break
        times = [t for fl in flows if fl["tx"] is not None
                 for t in (fl["tx"].next_deadline(), fl["rx"].next_deadline()) if t is not None]
        if events:
            times.append(events[0][0])
        now = max(now, min(times))
        while events and events[0][0] <= now:
            _, _, kind, f, item = heapq.heappop(events)
            fl = flows[f]
            if kind == "data" and item[0] == fl["unit"] and fl["rx"] is not None:
                seq, off, length, ce = item[1]
                fl["rx"].on_data(seq, off, length, now, ce=ce)
            elif kind == "ack" and item[0] == fl["unit"] and fl["tx"] is not None:
                fl["tx"].on_ack_segment(*unpack_segment(item[1]), now)
        for f, fl in enumerate(flows):
            rx = fl["rx"]
            if rx is not None and rx.ack_due(now):
                n += 1
                heapq.heappush(events, (now + 2 * delay, n, "ack", f,
                                        (fl["unit"], rx.ack_segment())))
            tx = fl["tx"]
            if tx is not None and tx.done:
                delivered += total
                fl["unit"] += 1
                if fl["unit"] == units:
                    fl["tx"] = fl["rx"] = None
                    fl["done_at"] = now
                else:
                    fl["tx"] = UdpSender(f, fl["unit"], total, MSS, 90, 100 * MS,
                                         path=fl["path"], control=fl["control"])
                    fl["rx"] = UdpReceiver(f, fl["unit"], total, MSS)
    else:
        raise AssertionError(f"{cc_name}: the flows did not finish")
    return link, max(fl["done_at"] for fl in flows), delivered


@pytest.fixture(scope="module")
def simulated() -> dict[str, tuple[Bottleneck, int, int]]:
    return {cc: four_into_one(cc) for cc in ("none", "dctcp")}


def test_without_congestion_control_four_flows_overrun_the_queue(simulated: dict) -> None:
    link, _, delivered = simulated["none"]
    assert link.drops > 0.05 * delivered / MSS


def test_dctcp_drops_far_less_and_keeps_the_link_busy(simulated: dict) -> None:
    none_link, none_end, _ = simulated["none"]
    link, end, delivered = simulated["dctcp"]
    assert link.marks > 0
    assert link.drops * 20 <= none_link.drops
    assert delivered * 8 / (end / 1e9) > 0.9 * 1_000_000_000
    assert end < none_end  # sooner than the flows that overran the queue


# -- the plan a node gets, and the topology's `cc:` for UDP flows ---------------------------------

UDP_FILE = """\
name: u
time_scale: 10
classes:
  - {{name: kv, dscp: 26, cc: {cc}}}
nodes: {{a: {{}}, b: {{}}, sw: {{kind: switch}}}}
links:
  - {{endpoints: [a, sw], rate: 1Gbps, delay: 100us}}
  - {{endpoints: [sw, b], rate: 1Gbps, delay: 100us{ecn}}}
traffic:
  flows: [{{name: f, pattern: bulk, from: a, to: b, class: kv, transport: udp, size: 1MiB}}]
"""


def udp_topology(cc: str = "dctcp", ecn: str = ", ecn: 32KiB") -> Any:  # noqa: ANN401
    from fabric.kinds import validate
    from fabric.topology import parse_topology

    return validate(parse_topology(UDP_FILE.format(cc=cc, ecn=ecn), source="t.yaml"))


def test_a_udp_senders_plan_names_its_class_policy_and_the_paths_rate_and_rtt() -> None:
    from fabric.run.traffic import udp_plan
    from fabric.topology.paths import path_figures
    from fabric.traffic import schedule

    topo = udp_topology()
    transfers = schedule(topo)
    plan = udp_plan("a", topo, transfers)
    assert plan == {"time_scale": 10,
                    "classes": {"kv": {"cc": "dctcp", "cc_params": {}}},
                    "peers": {"b": {"rate_bps": 1_000_000_000,
                                    "base_rtt_ns": path_figures(topo, "a", "b").base_rtt_ns}}}
    assert udp_plan("b", topo, transfers) == {}  # it sends nothing over UDP


def test_a_udp_flows_class_names_its_policy_with_the_roce_keys_errors() -> None:
    from fabric.errors import TopologyError

    with pytest.raises(TopologyError, match=r"^t\.yaml:4: classes\[0\]\.cc: unknown congestion "
                       r"control 'reno' \(one of: none, dcqcn, timely, swift, hpcc, dctcp\)$"):
        udp_topology("reno")
    with pytest.raises(TopologyError, match=r"^t\.yaml:4: classes\[0\]\.cc_params: dctcp: "
                       r"g must be in \(0, 1\], got 2$"):
        udp_topology("dctcp, cc_params: {g: 2}")


def test_check_warns_when_nothing_marks_a_udp_flows_ecn_policy() -> None:
    from fabric.checks import cc_warnings

    assert any("dctcp reacts to ECN marks, but nothing marks this class" in w
               for w in cc_warnings(udp_topology(ecn="")))
    assert not any("ECN" in w for w in cc_warnings(udp_topology()))


# -- as root: four flows through a built fabric ---------------------------------------------------

FOUR = """\
name: {name}
time_scale: 10
classes:
  - {{name: kv, dscp: 26, cc: {cc}}}
nodes: {{h0: {{}}, h1: {{}}, h2: {{}}, h3: {{}}, sw: {{kind: switch}}, dst: {{}}}}
links:
  - {{endpoints: [h0, sw], rate: 1Gbps, delay: 100us}}
  - {{endpoints: [h1, sw], rate: 1Gbps, delay: 100us}}
  - {{endpoints: [h2, sw], rate: 1Gbps, delay: 100us}}
  - {{endpoints: [h3, sw], rate: 1Gbps, delay: 100us}}
  - {{endpoints: [sw, dst], rate: 1Gbps, delay: 100us, queue: 128KiB, ecn: 32KiB}}
traffic:
  flows:
{flows}
"""


def four_flows(name: str, cc: str) -> tuple[int, int, dict]:
    """(bottleneck queue drops, its ECN marks, the senders' UDP counters summed)."""
    from fabric.kinds import validate
    from fabric.net import lifecycle
    from fabric.plan import plan_fabric
    from fabric.run.traffic import run_traffic
    from fabric.topology import parse_topology

    flows = "\n".join(f"    - {{name: f{i}, pattern: bulk, from: h{i}, to: dst, class: kv, "
                      "transport: udp, size: 3MiB, requests: 2}" for i in range(4))
    topo = validate(parse_topology(FOUR.format(name=name, cc=cc, flows=flows)))
    state = lifecycle.bring_up(plan_fabric(topo, backend="userspace"))
    try:
        result = run_traffic(state, topo, timeout=120)
    finally:
        lifecycle.remove_fabric(state)
    assert not result.errors
    assert all(r.status == "ok" for r in result.transfer_records)
    assert len(result.transfer_records) == 8
    link = max(result.links["links"]["sw--dst"].values(), key=lambda d: d["bytes_out"])
    totals: dict[str, int] = {}
    for stats in result.transport.values():
        for key, value in stats.items():
            totals[key] = totals.get(key, 0) + value
    return link["drops_queue"], link["ecn_marks"], totals


@pytest.mark.netns
def test_four_udp_flows_with_dctcp_drop_far_fewer_packets_than_without(fabric_name,
                                                                       state_dir) -> None:
    none_drops, none_marks, _ = four_flows(fabric_name, "none")
    drops, marks, udp = four_flows(fabric_name, "dctcp")
    assert none_marks == 0
    assert none_drops >= 40
    assert marks > 0
    assert udp["udp_cc_marked_bytes"] > 0
    assert drops * 4 <= none_drops
