"""Sans-IO RoCE queue pairs: a sender and a receiver joined by a fake link in a hand-driven
discrete-event loop (delay, loss, reordering), plus unit tests of each end."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import pytest

from fabric.cc import Hpcc, make_cc
from fabric.cc.base import CongestionControl, IntRecord
from fabric.errors import FabricError
from fabric.roce import wire
from fabric.roce.inttrailer import append_record
from fabric.roce.transport import (
    MAX_BACKOFF,
    Ack,
    QpReceiver,
    QpSender,
    RoceProtocolError,
    RxResult,
    TxPacket,
    psn_delta,
)

T = TypeVar("T")
GBPS = 1_000_000_000
MTU = 1024


@dataclass(frozen=True)
class FixedParams:
    """No parameters."""


class FixedRateCC(CongestionControl):
    """A test policy: a rate and window the test sets, and a log of every event it got."""

    name: ClassVar[str] = "fixed"
    Params: ClassVar[type[Any]] = FixedParams

    def __init__(self, rate_bps: int = 10 * GBPS, window: int | None = None) -> None:
        super().__init__(max(rate_bps, 1), 10_000)
        self.rate = rate_bps
        self.window = window
        self.acks: list[tuple[int, int, int | None, bool, Sequence[IntRecord] | None]] = []
        self.naks: list[int] = []
        self.cnps: list[int] = []

    @property
    def rate_bps(self) -> int:
        return self.rate

    @property
    def window_bytes(self) -> int | None:
        return self.window

    def on_ack(self, now_ns: int, acked_bytes: int, rtt_ns: int | None = None,
               ecn_echo: bool = False, int_records: Sequence[IntRecord] | None = None) -> None:
        self.acks.append((now_ns, acked_bytes, rtt_ns, ecn_echo, int_records))

    def on_nak(self, now_ns: int) -> None:
        self.naks.append(now_ns)

    def on_cnp(self, now_ns: int) -> None:
        self.cnps.append(now_ns)


def req(value: T | None) -> T:
    """`value`, asserted present (narrows Optional for the type checker)."""
    assert value is not None
    return value


def content(msg_id: int, n: int) -> bytes:
    rng = random.Random(msg_id)
    return rng.randbytes(n)


# -- the fake network -------------------------------------------------------------------------


@dataclass
class Link:
    """One direction: fixed delay, random extra delay (reordering), loss, and a drop rule."""

    delay_ns: int
    jitter_ns: int = 0
    loss: float = 0.0
    drop: Callable[[bytes, int], bool] | None = None  # (datagram, now) -> drop it
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    sent: int = 0
    dropped: int = 0

    def transit(self, datagram: bytes, now: int) -> int | None:
        self.sent += 1
        if (self.drop is not None and self.drop(datagram, now)) or self.rng.random() < self.loss:
            self.dropped += 1
            return None
        return now + self.delay_ns + (self.rng.randrange(self.jitter_ns) if self.jitter_ns else 0)


class Net:
    """A sender and a receiver QP joined by two links, driven by a discrete-event loop.

    Every packet really goes through `wire` (build, join, parse) and payload bytes land in the
    receiver's buffers at the RETH address, so the test checks the data as well as the PSNs.
    """

    def __init__(self, sender: QpSender, receiver: QpReceiver, fwd: Link, rev: Link, *,
                 ce: Callable[[int, int], bool] | None = None,
                 switch_hops: int = 0) -> None:
        self.s, self.r, self.fwd, self.rev = sender, receiver, fwd, rev
        self.ce = ce  # (psn, now) -> mark CE
        self.switch_hops = switch_hops
        self.now = 0
        self.events: list[tuple[int, int, str, bytes]] = []
        self.seq = 0
        self.src: dict[int, bytes] = {}
        self.dst: dict[int, bytearray] = {}
        self.completed: list[int] = []
        self.tx_log: list[tuple[int, TxPacket]] = []
        self.rx_log: list[tuple[int, RxResult]] = []
        self.acks_seen: list[tuple[int, wire.Parsed]] = []
        self.timeouts_at: list[int] = []
        self.tx_bytes = 0

    def post(self, msg_id: int, nbytes: int) -> None:
        self.src[msg_id] = content(msg_id, nbytes)
        self.s.post(msg_id, nbytes)

    def _push(self, link: Link, kind: str, datagram: bytes) -> None:
        at = link.transit(datagram, self.now)
        if at is not None:
            self.seq += 1
            heapq.heappush(self.events, (at, self.seq, kind, datagram))

    def _send_data(self, pkt: TxPacket) -> None:
        self.tx_log.append((self.now, pkt))
        body = memoryview(self.src[pkt.msg_id])[pkt.msg_offset:pkt.msg_offset + pkt.length]
        reth = ((pkt.msg_id << 32, pkt.msg_id, pkt.msg_len)
                if pkt.opcode in wire.RETH_OPCODES else None)
        pieces = wire.data_packet(pkt.opcode, self.s.dest_qpn, pkt.psn, body,
                                  ack_req=pkt.ack_req, reth=reth,
                                  int_trailer=wire.INT_EMPTY if self.s.int_enabled else b"")
        datagram = b"".join(pieces)
        for hop in range(self.switch_hops):  # switches stamp INT on the way
            if wire.carries_int_for_switch(datagram):
                self.tx_bytes += len(datagram)
                datagram = append_record(datagram, rate_bps=100 * GBPS, ts_ns=self.now + hop,
                                         tx_bytes=self.tx_bytes, qlen_bytes=hop * 1000)
        self._push(self.fwd, "data", datagram)

    def _deliver(self, kind: str, datagram: bytes) -> None:
        p = wire.parse(datagram)
        if kind == "data":
            ce = self.ce(p.psn, self.now) if self.ce else False
            res = self.r.on_packet(self.now, p.psn, p.opcode, p.payload_len, p.ack_req, ce,
                                   p.reth, p.int_trailer)
            self.rx_log.append((self.now, res))
            if res.accept:
                if res.offset == 0:
                    self.dst[res.msg_va] = bytearray(res.msg_len)
                self.dst[res.msg_va][res.offset:res.offset + p.payload_len] = (
                    datagram[p.payload_start:p.payload_end])
            if res.ack is not None:
                a = res.ack
                assert res.msn == self.r.msn
                self._push(self.rev, "ctl", wire.ack_packet(self.r.dest_qpn, a.psn, res.msn,
                                                            a.nak, a.becn, a.int_trailer))
            if res.cnp:
                self._push(self.rev, "ctl", wire.cnp_packet(self.r.dest_qpn))
            return
        self.acks_seen.append((self.now, p))
        if p.opcode == wire.CNP:
            self.s.on_cnp(self.now)
        elif p.aeth is not None and wire.is_nak(p.aeth):
            self.s.on_nak(self.now, p.psn)
        else:
            self.s.on_ack(self.now, p.psn, p.int_trailer, p.becn)

    def run(self, until_ns: int = 10**12, max_steps: int = 2_000_000) -> None:
        for _ in range(max_steps):
            while (pkt := self.s.poll(self.now)) is not None:
                self._send_data(pkt)
            self.completed += self.s.take_completed()
            if self.s.idle and not self.events:
                return  # done (a policy's own timers may run forever)
            times = [t for t in (self.events[0][0] if self.events else None,
                                 self.s.next_send_ns(self.now), self.s.next_deadline())
                     if t is not None]
            if not times or min(times) > until_ns:
                return
            self.now = max(self.now, min(times))
            while self.events and self.events[0][0] <= self.now:
                _, _, kind, datagram = heapq.heappop(self.events)
                self._deliver(kind, datagram)
            deadline = self.s.next_deadline()
            if deadline is not None and deadline <= self.now:
                before = self.s.stats.timeouts
                self.s.on_timer(self.now)
                if self.s.stats.timeouts > before:
                    self.timeouts_at.append(self.now)
        raise AssertionError("event loop did not settle")

    def assert_intact(self) -> None:
        assert self.completed == sorted(self.src)
        for msg_id, data in self.src.items():
            assert bytes(self.dst[msg_id << 32]) == data, f"message {msg_id} corrupted"


def make_pair(cc: CongestionControl | None = None, *, rto_ns: int = 200_000,
              ack_every: int = 4, max_inflight_packets: int = 1 << 12,
              int_enabled: bool = False, initial_psn: int = 0, mtu: int = MTU,
              cnp_interval_ns: int = 50_000) -> tuple[QpSender, QpReceiver]:
    cc = cc if cc is not None else FixedRateCC(10 * GBPS)
    s = QpSender(qpn=0x11, dest_qpn=0x22, payload_mtu=mtu, cc=cc, rto_ns=rto_ns,
                 ack_every=ack_every, max_inflight_packets=max_inflight_packets,
                 int_enabled=int_enabled, initial_psn=initial_psn)
    r = QpReceiver(qpn=0x22, dest_qpn=0x11, cnp_interval_ns=cnp_interval_ns,
                   initial_psn=initial_psn)
    return s, r


SIZES = [0, 1, 1023, 1024, 1025, 4096, 10_000, 64 * 1024 + 5, 3 * 1024, 777]


# -- end to end ---------------------------------------------------------------------------------


def test_lossless_transfer_completes_intact_and_in_order() -> None:
    s, r = make_pair()
    net = Net(s, r, Link(5_000), Link(5_000))
    for i, n in enumerate(SIZES):
        net.post(i, n)
    net.run()
    net.assert_intact()
    assert s.idle
    assert s.inflight_bytes == 0
    assert s.next_deadline() is None
    assert s.stats.retransmitted == s.stats.timeouts == s.stats.naks == 0
    assert r.stats.messages == len(SIZES)
    assert r.msn == len(SIZES)
    assert r.stats.bytes_accepted == sum(SIZES) == s.stats.bytes_sent
    assert s.stats.rtt_samples > 0
    assert req(s.stats.rtt_min_ns) >= 10_000


def test_go_back_n_completes_under_5_percent_loss() -> None:
    s, r = make_pair(FixedRateCC(10 * GBPS), rto_ns=100_000)
    net = Net(s, r, Link(5_000, loss=0.05, rng=random.Random(7)),
              Link(5_000, loss=0.05, rng=random.Random(8)))
    for i in range(40):
        net.post(i, 3000 + 1111 * i)
    net.run()
    net.assert_intact()
    assert net.fwd.dropped > 10
    assert net.rev.dropped > 2
    assert s.stats.naks > 0
    assert s.stats.retransmitted > net.fwd.dropped
    assert r.stats.naks >= s.stats.naks  # some NAKs were lost on the way back
    assert s.stats.packets_sent == sum(-(-(3000 + 1111 * i) // MTU) for i in range(40)) + (
        s.stats.retransmitted)


def test_go_back_n_completes_with_loss_and_reordering() -> None:
    s, r = make_pair(FixedRateCC(10 * GBPS), rto_ns=100_000)
    net = Net(s, r, Link(5_000, jitter_ns=3_000, loss=0.05, rng=random.Random(3)),
              Link(5_000, jitter_ns=3_000, loss=0.05, rng=random.Random(4)))
    for i, n in enumerate(SIZES * 3):
        net.post(i, n)
    net.run()
    net.assert_intact()
    assert r.stats.out_of_order > 0
    assert r.stats.duplicates >= 0


def test_single_loss_resends_the_window_and_naks_once() -> None:
    # 1 Gbps: a 1024-byte MIDDLE packet is 1068 wire bytes = 8544 ns; 20 packets are all sent
    # before the NAK for PSN 3 returns (one-way delay 100 us), so PSNs 3..19 go again.
    first_send = {3}

    def drop(datagram: bytes, now: int) -> bool:
        psn = wire.parse(datagram).psn
        if psn in first_send:
            first_send.discard(psn)
            return True
        return False

    s, r = make_pair(FixedRateCC(GBPS), rto_ns=10_000_000)
    net = Net(s, r, Link(100_000, drop=drop), Link(100_000))
    net.post(0, 20 * MTU)
    net.run()
    net.assert_intact()
    assert r.stats.out_of_order == 16  # PSNs 4..19
    assert r.stats.naks == 1
    assert s.stats.naks == 1
    assert s.stats.retransmitted == 17  # PSNs 3..19
    assert s.stats.timeouts == 0
    resent = [p.psn for _, p in net.tx_log if p.retransmission]
    assert resent == list(range(3, 20))
    nak = [p for _, p in net.acks_seen if p.aeth and wire.is_nak(p.aeth)]
    assert [p.psn for p in nak] == [3]


def test_rto_backs_off_exponentially_while_everything_is_lost() -> None:
    blackout_until = 30_000_000

    def drop(datagram: bytes, now: int) -> bool:
        return now < blackout_until

    rto = 100_000
    s, r = make_pair(FixedRateCC(10 * GBPS), rto_ns=rto)
    net = Net(s, r, Link(5_000, drop=drop), Link(5_000))
    net.post(0, 8 * MTU)
    net.run()
    net.assert_intact()
    gaps = [b - a for a, b in zip(net.timeouts_at, net.timeouts_at[1:], strict=False)]
    assert gaps[:6] == [rto * 2, rto * 4, rto * 8, rto * 16, rto * 32, rto * 64]
    assert all(g == rto * MAX_BACKOFF for g in gaps[6:])  # capped at 64x
    assert net.timeouts_at[0] == rto  # first send at 0
    assert s.stats.timeouts == len(net.timeouts_at) >= 8
    assert s.backoff == 1  # progress reset it
    # every timeout resent the whole window (go back to the oldest unacked PSN)
    assert s.stats.retransmitted == 8 * s.stats.timeouts


def test_rto_estimate_follows_rtt_samples_with_a_floor() -> None:
    s, _ = make_pair(FixedRateCC(100 * GBPS), rto_ns=150_000, ack_every=1)
    s.post(0, 4 * MTU)
    for t in (0, 100, 200, 300):
        assert s.poll(t) is not None
    s.on_ack(100_000, 0)  # RTT 100 us: srtt 100k, rttvar 50k
    assert (s.srtt_ns, s.rttvar_ns, s.rto_ns) == (100_000, 50_000, 300_000)
    assert s.rto_deadline == 100_000 + 300_000
    s.on_ack(100_200, 1)  # RTT 100.1 us
    assert s.srtt_ns == 100_000 + 100 // 8
    assert s.rttvar_ns == 50_000 + (100 - 50_000) // 4
    for psn, t in ((2, 100_300), (3, 100_400)):
        s.on_ack(t, psn)
    assert s.rto_ns == max(150_000, s.srtt_ns + 4 * s.rttvar_ns) > 150_000
    assert s.stats.rtt_samples == 4
    assert s.stats.rtt_min_ns == 100_000
    # with a steady RTT the variance decays and the floor takes over
    s2, r2 = make_pair(FixedRateCC(100 * GBPS), rto_ns=150_000)
    net = Net(s2, r2, Link(50_000), Link(50_000))
    net.post(0, 256 * MTU)
    net.run()
    assert s2.stats.timeouts == 0
    assert s2.rto_ns == 150_000


def test_karn_no_rtt_sample_from_retransmitted_packets() -> None:
    s, r = make_pair(FixedRateCC(10 * GBPS), rto_ns=100_000)
    first = True

    def drop(datagram: bytes, now: int) -> bool:
        nonlocal first
        if first:
            first = False
            return True
        return False

    net = Net(s, r, Link(5_000, drop=drop), Link(5_000))
    net.post(0, 100)  # a single packet: its only ACK follows the retransmission
    net.run()
    net.assert_intact()
    assert s.stats.timeouts == 1
    assert s.stats.retransmitted == 1
    assert s.stats.rtt_samples == 0
    assert s.cc.acks[-1][2] is None  # type: ignore[attr-defined]


def test_psn_wraps_around_24_bits_end_to_end() -> None:
    start = (1 << 24) - 6
    s, r = make_pair(FixedRateCC(10 * GBPS), rto_ns=100_000, initial_psn=start)
    net = Net(s, r, Link(5_000, loss=0.05, rng=random.Random(11)), Link(5_000))
    for i in range(6):
        net.post(i, 5 * MTU)
    net.run()
    net.assert_intact()
    assert s.snd_una == start + 30
    assert r.epsn == start + 30
    wire_psns = {p.psn & 0xFFFFFF for _, p in net.tx_log}
    assert 0xFFFFFF in wire_psns
    assert 0 in wire_psns


def test_int_end_to_end_feeds_hpcc_records() -> None:
    cc = make_cc("hpcc", line_rate_bps=100 * GBPS, base_rtt_ns=20_000, mtu=MTU)
    assert isinstance(cc, Hpcc)
    s, r = make_pair(cc, int_enabled=True, rto_ns=1_000_000)
    net = Net(s, r, Link(5_000), Link(5_000), switch_hops=2)
    for i in range(10):
        net.post(i, 16 * MTU)
    net.run()
    net.assert_intact()
    assert cc.last_sample_u is not None  # HPCC computed utilisation from echoed INT


def test_int_records_reach_the_policy() -> None:
    cc = FixedRateCC(10 * GBPS)
    s, r = make_pair(cc, int_enabled=True)
    net = Net(s, r, Link(5_000), Link(5_000), switch_hops=3)
    net.post(0, 2 * MTU)
    net.run()
    with_int = [a for a in cc.acks if a[4]]
    assert with_int
    assert all(len(req(a[4])) == 3 for a in with_int)
    recs = req(with_int[-1][4])
    assert [x.hop for x in recs] == [0, 1, 2]
    assert [x.qlen_bytes for x in recs] == [0, 1000, 2000]
    assert all(x.line_rate_bps == 100 * GBPS for x in recs)


def test_ecn_marks_become_cnps_and_becn_for_the_policy() -> None:
    cc = FixedRateCC(10 * GBPS)
    s, r = make_pair(cc, cnp_interval_ns=50_000)
    net = Net(s, r, Link(5_000), Link(5_000), ce=lambda psn, now: psn % 2 == 0)
    net.post(0, 64 * MTU)  # 64 packets at ~0.85 us each: about 55 us of data
    net.run()
    net.assert_intact()
    assert r.stats.ce_marked == 32
    assert r.stats.cnps == len(cc.cnps) == s.stats.cnps == 2  # at 5 us and >= 55 us
    assert cc.cnps[1] - cc.cnps[0] >= 50_000
    assert any(a[3] for a in cc.acks)  # ECN echo reached the policy


def test_dcqcn_slows_down_on_cnps() -> None:
    cc = make_cc("dcqcn", line_rate_bps=10 * GBPS, base_rtt_ns=10_000, mtu=MTU)
    s, r = make_pair(cc, cnp_interval_ns=1_000)
    net = Net(s, r, Link(2_000), Link(2_000), ce=lambda psn, now: True)
    net.post(0, 32 * MTU)
    net.run()
    net.assert_intact()
    assert s.stats.cnps > 0
    assert cc.rate_bps < 10 * GBPS


def test_window_cc_limits_bytes_in_flight() -> None:
    cc = make_cc("dctcp", line_rate_bps=100 * GBPS, base_rtt_ns=10_000, mtu=MTU,
                 init_window_bytes=4 * MTU)
    s, r = make_pair(cc, ack_every=1)
    net = Net(s, r, Link(20_000), Link(20_000))
    worst = 0
    original = net._send_data

    def watch(pkt: TxPacket) -> None:
        nonlocal worst
        worst = max(worst, s.inflight_bytes - req(cc.window_bytes))
        original(pkt)

    net._send_data = watch  # type: ignore[method-assign]
    net.post(0, 40 * MTU)
    net.run()
    net.assert_intact()
    assert worst <= 0
    # the first window: 4 packets leave at once, then nothing until the first ACK (40 us)
    assert [p.psn for t, p in net.tx_log if t < 40_000] == [0, 1, 2, 3]


def test_window_close_requests_an_ack() -> None:
    cc = FixedRateCC(100 * GBPS, window=3 * MTU)
    s, _ = make_pair(cc, ack_every=16)
    s.post(0, 10 * MTU)
    sent = []
    now = 0
    while (t := s.next_send_ns(now)) is not None:
        now = t
        sent.append(req(s.poll(now)))
    assert [p.psn for p in sent] == [0, 1, 2]
    assert [p.ack_req for p in sent] == [False, False, True]
    assert s.inflight_bytes == 3 * MTU
    assert s.poll(now + 10**9) is None
    s.on_ack(now, 0)
    assert s.next_send_ns(now) is not None


def test_hpcc_window_limits_in_flight() -> None:
    cc = make_cc("hpcc", line_rate_bps=10 * GBPS, base_rtt_ns=8_000, mtu=MTU)
    s, _ = make_pair(cc)
    s.post(0, 100 * MTU)
    now = 0
    while (t := s.next_send_ns(now)) is not None:
        now = t
        assert s.poll(now) is not None
    window = req(cc.window_bytes)
    assert s.inflight_bytes <= window < s.inflight_bytes + MTU  # 10 KB BDP -> 9 pkts
    assert s.inflight_packets == window // MTU


def test_packet_limit_with_a_rate_only_policy() -> None:
    s, _ = make_pair(make_cc("none", line_rate_bps=10 * GBPS, base_rtt_ns=1_000),
                     max_inflight_packets=5)
    s.post(0, 50 * MTU)
    now = 0
    while (t := s.next_send_ns(now)) is not None:
        now = t
        s.poll(now)
    assert s.inflight_packets == 5
    assert s.next_send_ns(now) is None
    s.on_ack(now, 1)
    assert s.inflight_packets == 3
    assert s.next_send_ns(now) is not None


@pytest.mark.parametrize("rate", [GBPS, 3 * GBPS, 7 * GBPS, 100 * GBPS, 400 * GBPS])
def test_pacing_is_exactly_the_policy_rate(rate: int) -> None:
    s, _ = make_pair(make_cc("none", line_rate_bps=rate, base_rtt_ns=1_000))
    s.post(0, 100 * MTU)
    s.post(1, 500)
    now, times, bits = 0, [], [0]
    while (t := s.next_send_ns(now)) is not None:
        if t > 0:
            assert s.poll(t - 1) is None  # not before its time
        now = t
        pkt = s.poll(now)
        assert pkt is not None
        times.append(now)
        bits.append(bits[-1] + wire.wire_size(pkt.opcode, pkt.length) * 8)
    assert len(times) == 101
    # departure n is at floor(bits before it / rate): the rate exactly, no drift
    assert times == [b * 1_000_000_000 // rate for b in bits[:-1]]
    if rate == GBPS:
        assert times[1] - times[0] == 1084 * 8  # FIRST carries a RETH
        assert times[2] - times[1] == 1068 * 8


def test_pacing_counts_the_int_byte_and_restarts_after_idle() -> None:
    s, _ = make_pair(FixedRateCC(GBPS), int_enabled=True)
    s.post(0, 2 * MTU)
    assert s.poll(0) is not None
    assert s.next_send_ns(0) == (1084 + 1) * 8
    assert s.poll((1084 + 1) * 8) is not None
    s.post(1, 10)
    assert s.next_send_ns(0) == (1084 + 1 + 1068 + 1) * 8
    assert s.poll(10**6) is not None  # idle: leaves at once
    s.post(2, 10)
    assert s.next_send_ns(10**6) == 10**6 + (44 + 16 + 12 + 1) * 8


def test_rate_change_takes_effect_on_the_next_gap() -> None:
    cc = FixedRateCC(GBPS)
    s, _ = make_pair(cc)
    s.post(0, 4 * MTU)
    s.poll(0)
    cc.rate = 2 * GBPS
    t = s.next_send_ns(0)
    assert t == 1084 * 8  # already scheduled at the old rate
    s.poll(t)
    assert s.next_send_ns(t) == t + 1068 * 4


def test_ack_every_coalesces_acks() -> None:
    s, r = make_pair(ack_every=4)
    net = Net(s, r, Link(5_000), Link(5_000))
    net.post(0, 16 * MTU)
    net.post(1, 7 * MTU)
    net.run()
    net.assert_intact()
    asked = [p.psn for _, p in net.tx_log if p.ack_req]
    assert asked == [3, 7, 11, 15, 19, 22]  # every 4th PSN and each message's last
    assert r.stats.acks == 6
    assert s.stats.acks == 6
    assert s.stats.rtt_samples == 6


def test_completion_order_and_cumulative_acks() -> None:
    s, _ = make_pair(ack_every=100)
    for i, n in enumerate([MTU, 3 * MTU, 10, 2 * MTU]):
        s.post(10 + i, n)
    now = 0
    while (t := s.next_send_ns(now)) is not None:
        now = t
        s.poll(now)
    assert s.inflight_packets == 7
    s.on_ack(now, 2)  # PSN 0 (msg 10) and 1..2 of msg 11
    assert s.take_completed() == [10]
    s.on_ack(now, 5)  # rest of 11, all of 12, first of 13
    assert s.take_completed() == [11, 12]
    s.on_ack(now, 4)  # stale
    assert s.stats.stale_acks == 1
    s.on_ack(now, 6)
    assert s.take_completed() == [13]
    assert s.take_completed() == []
    assert s.idle
    assert s.next_deadline() is None


def test_nak_acknowledges_below_and_rewinds() -> None:
    cc = FixedRateCC(100 * GBPS)
    s, _ = make_pair(cc, ack_every=100)
    s.post(0, 8 * MTU)
    now = 0
    while (t := s.next_send_ns(now)) is not None:
        now = t
        s.poll(now)
    s.on_nak(now, 5)
    assert s.snd_una == 5
    assert s.snd_nxt == 5
    assert cc.naks == [now]
    assert cc.acks[-1][1] == 5 * MTU
    pkt = s.poll(req(s.next_send_ns(now)))
    assert pkt is not None
    assert pkt.psn == 5
    assert pkt.retransmission
    assert pkt.opcode == wire.RDMA_WRITE_MIDDLE
    assert pkt.msg_offset == 5 * MTU


def test_ack_for_an_unsent_psn_is_a_protocol_error() -> None:
    s, _ = make_pair()
    s.post(0, 2 * MTU)
    s.poll(0)
    with pytest.raises(RoceProtocolError, match="ACK for PSN 5 but PSN 1 is the next never sent"):
        s.on_ack(10, 5)
    assert issubclass(RoceProtocolError, FabricError)


def test_next_deadline_includes_the_policy_timer() -> None:
    cc = make_cc("dcqcn", line_rate_bps=10 * GBPS, base_rtt_ns=10_000, mtu=MTU)
    s, _ = make_pair(cc, rto_ns=10_000_000)
    assert s.next_deadline() is None
    s.on_cnp(1_000)
    assert cc.next_timer_ns() is not None
    assert s.next_deadline() == cc.next_timer_ns()
    s.post(0, MTU)
    s.poll(2_000)
    assert s.next_deadline() == min(req(cc.next_timer_ns()), 2_000 + 10_000_000)
    before = cc.rate_bps
    s.on_timer(req(cc.next_timer_ns()))  # the policy's timer runs through the sender
    assert s.stats.timeouts == 0
    assert cc.rate_bps >= before


def test_sender_rejects_bad_arguments() -> None:
    cc = FixedRateCC()
    with pytest.raises(ValueError, match="2\\*\\*23"):
        QpSender(qpn=1, dest_qpn=2, payload_mtu=MTU, cc=cc, max_inflight_packets=1 << 23)
    with pytest.raises(ValueError, match="ack_every"):
        QpSender(qpn=1, dest_qpn=2, payload_mtu=MTU, cc=cc, ack_every=0)
    s = QpSender(qpn=1, dest_qpn=2, payload_mtu=MTU, cc=cc)
    with pytest.raises(ValueError, match="nbytes must be >= 0"):
        s.post(1, -1)


# -- receiver unit tests ------------------------------------------------------------------------


def rx(r: QpReceiver, psn: int, opcode: int = wire.RDMA_WRITE_MIDDLE, length: int = MTU, *,
       ack_req: bool = False, ce: bool = False, now: int = 0,
       reth: tuple[int, int, int] | None = None, trailer: bytes = b"") -> RxResult:
    return r.on_packet(now, psn & 0xFFFFFF, opcode, length, ack_req, ce, reth, trailer)


def test_receiver_accepts_in_order_and_places_payload() -> None:
    r = QpReceiver(qpn=2, dest_qpn=1)
    a = rx(r, 0, wire.RDMA_WRITE_FIRST, reth=(0xA000, 7, 2500))
    assert a == RxResult(True, 0xA000, 2500, 0, False, None, False, 7, 0)
    b = rx(r, 1)
    assert (b.accept, b.offset, b.msg_va, b.msg_done) == (True, MTU, 0xA000, False)
    c = rx(r, 2, wire.RDMA_WRITE_LAST, 452, ack_req=True)
    assert (c.accept, c.offset, c.msg_done, c.ack) == (True, 2048, True, Ack(2, False, False,
                                                                             b""))
    assert r.msn == 1
    assert r.epsn == 3


def test_receiver_naks_once_per_gap() -> None:
    r = QpReceiver(qpn=2, dest_qpn=1)
    rx(r, 0, wire.RDMA_WRITE_FIRST, reth=(0, 0, 10 * MTU))
    first = rx(r, 2)
    assert not first.accept
    assert first.ack == Ack(1, True, False, b"")
    assert rx(r, 3, ack_req=True).ack is None  # same gap: no second NAK, no ACK
    assert rx(r, 4).ack is None
    assert rx(r, 1).accept  # the gap closes
    again = rx(r, 4)  # a new gap at 2
    assert again.ack == Ack(2, True, False, b"")
    assert r.stats.naks == 2
    assert r.stats.out_of_order == 4


def test_receiver_acks_duplicates_with_epsn_minus_one() -> None:
    r = QpReceiver(qpn=2, dest_qpn=1)
    rx(r, 0, wire.RDMA_WRITE_FIRST, reth=(0, 0, 10 * MTU))
    rx(r, 1)
    dup = rx(r, 0, wire.RDMA_WRITE_FIRST, ack_req=True, reth=(0, 0, 10 * MTU))
    assert not dup.accept
    assert dup.ack == Ack(1, False, False, b"")
    assert rx(r, 1).ack is None  # a duplicate without AckReq is silently dropped
    assert r.stats.duplicates == 2


def test_receiver_duplicate_before_anything_acks_the_wrapped_psn() -> None:
    r = QpReceiver(qpn=2, dest_qpn=1, initial_psn=0)
    dup = rx(r, 0xFFFFFF, ack_req=True)
    assert dup.ack == Ack(0xFFFFFF, False, False, b"")  # ePSN - 1, 24-bit


def test_receiver_psn_wrap() -> None:
    r = QpReceiver(qpn=2, dest_qpn=1, initial_psn=(1 << 24) - 1)
    assert rx(r, 0xFFFFFF, wire.RDMA_WRITE_FIRST, reth=(0, 0, 3 * MTU)).accept
    assert rx(r, 0).accept  # wire PSN 0 is absolute 2**24
    res = rx(r, 2, wire.RDMA_WRITE_LAST)
    assert not res.accept
    assert res.ack == Ack(1, True, False, b"")
    assert rx(r, 1, wire.RDMA_WRITE_LAST, ack_req=True).ack == Ack(1, False, False, b"")
    assert r.epsn == (1 << 24) + 2


def test_psn_delta() -> None:
    assert psn_delta(5, 3) == 2
    assert psn_delta(0, (1 << 24) - 1) == 1
    assert psn_delta(0xFFFFFF, 1 << 24) == -1
    assert psn_delta((1 << 23) - 1, 0) == (1 << 23) - 1
    assert psn_delta(1 << 23, 0) == -(1 << 23)


def test_receiver_cnp_rate_limit() -> None:
    r = QpReceiver(qpn=2, dest_qpn=1, cnp_interval_ns=50_000)
    rx(r, 0, wire.RDMA_WRITE_FIRST, reth=(0, 0, 100 * MTU))
    cnps = [t for i, t in enumerate(range(1_000, 131_000, 10_000))
            if rx(r, i + 1, ce=True, now=t).cnp]
    assert cnps == [1_000, 51_000, 101_000]
    assert r.stats.cnps == 3
    assert r.stats.ce_marked == 13
    # CE on a duplicate or out-of-order packet counts as well
    assert rx(r, 5, ce=True, now=200_000).cnp
    assert rx(r, 90, ce=True, now=300_000).cnp


def test_receiver_echoes_becn_once_on_the_next_ack() -> None:
    r = QpReceiver(qpn=2, dest_qpn=1)
    rx(r, 0, wire.RDMA_WRITE_FIRST, reth=(0, 0, 10 * MTU))
    assert rx(r, 1, ce=True).ack is None  # no AckReq: BECN waits
    assert rx(r, 2, ack_req=True).ack == Ack(2, False, True, b"")
    assert rx(r, 3, ack_req=True).ack == Ack(3, False, False, b"")
    rx(r, 5, ce=True)  # out of order: the NAK does not carry it...
    assert rx(r, 4, ack_req=True).ack == Ack(4, False, True, b"")  # ...the next ACK does


def test_receiver_echoes_the_int_trailer_of_the_acked_packet() -> None:
    r = QpReceiver(qpn=2, dest_qpn=1)
    trailer = bytes(28) + b"\x01"
    res = rx(r, 0, wire.RDMA_WRITE_ONLY, 10, ack_req=True, reth=(0, 0, 10), trailer=trailer)
    assert res.ack == Ack(0, False, False, trailer)
    assert rx(r, 1, wire.RDMA_WRITE_ONLY, 10, reth=(0, 0, 10), trailer=trailer).ack is None


def test_sender_turns_an_echoed_trailer_into_int_records() -> None:
    cc = FixedRateCC()
    s, _ = make_pair(cc)
    s.post(0, 10)
    s.poll(0)
    pkt = b"".join(wire.data_packet(wire.RDMA_WRITE_ONLY, 2, 0, bytes(10), reth=(0, 0, 10),
                                    int_trailer=wire.INT_EMPTY))
    pkt = append_record(pkt, rate_bps=25 * GBPS, ts_ns=123, tx_bytes=456, qlen_bytes=789)
    s.on_ack(1_000, 0, wire.parse(pkt).int_trailer, becn=True)
    (now, acked, rtt, ecn, records) = cc.acks[-1]
    assert (now, acked, rtt, ecn) == (1_000, 10, 1_000, True)
    assert records == (IntRecord(hop=0, line_rate_bps=25 * GBPS, ts_ns=123, tx_bytes=456,
                                 qlen_bytes=789),)


@pytest.mark.parametrize(("packets", "message"), [
    ([(0, wire.RDMA_WRITE_MIDDLE, None)], "opcode sequence error: WRITE 0x07 at PSN 0 without"),
    ([(0, wire.RDMA_WRITE_LAST, None)], "opcode sequence error: WRITE 0x08 at PSN 0 without"),
    ([(0, wire.RDMA_WRITE_FIRST, (0, 0, 4 * MTU)), (1, wire.RDMA_WRITE_FIRST, (0, 0, 4 * MTU))],
     "opcode sequence error: WRITE 0x06 at PSN 1 while a message is at 1024 of 4096"),
    ([(0, wire.RDMA_WRITE_ONLY, None)], "WRITE 0x0a without a RETH"),
    ([(0, wire.RDMA_WRITE_ONLY, (0, 0, 5))], "does not fit a message of 5"),
    ([(0, wire.RDMA_WRITE_FIRST, (0, 0, 2 * MTU)), (1, wire.RDMA_WRITE_MIDDLE, None)],
     "at offset 1024 does not fit the 2048-byte message"),
])
def test_receiver_opcode_sequence_errors_raise(packets, message) -> None:
    r = QpReceiver(qpn=2, dest_qpn=1)
    *ok, (psn, opcode, reth) = packets
    for p, op, rt in ok:
        assert rx(r, p, op, reth=rt).accept
    with pytest.raises(RoceProtocolError, match=message):
        rx(r, psn, opcode, reth=reth)
    assert r.epsn == len(ok)  # the bad packet changed nothing


def test_receiver_sequence_is_not_checked_on_out_of_order_packets() -> None:
    r = QpReceiver(qpn=2, dest_qpn=1)
    res = rx(r, 3, wire.RDMA_WRITE_MIDDLE)  # no FIRST yet, but not the expected PSN: NAK
    assert res.ack == Ack(0, True, False, b"")
    with pytest.raises(RoceProtocolError, match="is not an RDMA WRITE"):
        rx(r, 0, wire.ACKNOWLEDGE)
