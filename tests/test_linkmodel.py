"""The sans-IO link direction model, driven with hand-made times (no clocks, no sockets)."""

from __future__ import annotations

import random

import pytest

from fabric.linkmodel import (
    DELAY_LINE_FLOOR_BYTES,
    Action,
    LinkDirection,
    LinkStats,
    Verdict,
    delay_line_limit_bytes,
    queue_limit,
)
from fabric.topology.model import Shape
from fabric.topology.model import queue_bytes as default_queue_bytes
from fabric.wire.ip import ECN_CE, ECN_ECT0, checksum, ecn_of, flip_bit, header_length, set_ce

MS = 1_000_000
GBIT = 1_000_000_000


def model(shape: Shape, *, rate_in_engine: bool = True, seed: int = 1) -> LinkDirection:
    return LinkDirection(shape, rate_in_engine=rate_in_engine, rng=random.Random(seed))


# -- default queue ---------------------------------------------------------------------------


def test_default_queue_is_64_packets_without_rate() -> None:
    assert default_queue_bytes(Shape()) == 64 * 1500
    assert default_queue_bytes(Shape(mtu=9000, delay_ns=10 * MS)) == 64 * 9000


def test_default_queue_is_one_bdp_when_larger() -> None:
    # 1 Gbit/s x 10 ms = 1.25 MB > 64 x 1500
    # rate x the link's round trip (2 x 10 ms), the model's one rule
    assert default_queue_bytes(Shape(rate_bps=GBIT, delay_ns=10 * MS)) == 2_500_000
    # 1 Gbit/s x 100 us = 12.5 kB < 96 kB
    assert default_queue_bytes(Shape(rate_bps=GBIT, delay_ns=100_000)) == 96_000


def test_queue_limit_prefers_the_stated_one() -> None:
    assert queue_limit(Shape(queue_packets=10)) == (None, 10)
    assert queue_limit(Shape(queue_bytes=5000)) == (5000, None)
    assert queue_limit(Shape()) == (96_000, None)


def test_delay_line_limit() -> None:
    assert delay_line_limit_bytes(Shape()) == DELAY_LINE_FLOOR_BYTES
    shape = Shape(rate_bps=10 * GBIT, delay_ns=50 * MS, queue_bytes=1_000_000)
    assert delay_line_limit_bytes(shape) == 2 * 62_500_000 + 1_000_000


# -- pass-through, loss ----------------------------------------------------------------------


def test_no_delay_no_rate_forwards_immediately() -> None:
    m = model(Shape(), rate_in_engine=False)
    assert m.immediate
    v = m.offer(100, False, 5, "p")
    assert v == Verdict(Action.FORWARD, 5, False)
    assert v.accepted
    assert m.next_deadline() is None
    assert m.release(10**12) == []
    s = m.statistics()
    assert (s.packets_in, s.bytes_in, s.packets_out, s.bytes_out) == (1, 100, 1, 100)


def test_rate_in_engine_without_rate_is_ignored() -> None:
    m = model(Shape(ecn_bytes=0), rate_in_engine=True)
    assert not m.rate_in_engine
    assert m.immediate
    assert m.offer(100, True, 0).action is Action.FORWARD


@pytest.mark.parametrize("ppm", [10_000, 200_000, 500_000])
def test_loss_ratio(ppm: int) -> None:
    m = model(Shape(loss_ppm=ppm), rate_in_engine=False, seed=ppm)
    n = 20_000
    drops = sum(m.offer(100, False, i).action is Action.DROP_LOSS for i in range(n))
    p = ppm / 1e6
    tolerance = 5 * (p * (1 - p) / n) ** 0.5  # five sigma
    assert abs(drops / n - p) < tolerance
    s = m.statistics()
    assert s.drops_loss == drops
    assert s.packets_out == n - drops
    assert s.packets_in == n


def test_loss_is_reproducible_with_a_seed() -> None:
    def run(seed: int) -> list[Action]:
        m = model(Shape(loss_ppm=300_000), seed=seed)
        return [m.offer(100, False, i).action for i in range(200)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_no_loss_never_draws_random_numbers() -> None:
    rng = random.Random(5)
    m = LinkDirection(Shape(delay_ns=MS), rng=rng)
    for i in range(100):
        m.offer(100, False, i)
    assert rng.random() == random.Random(5).random()


def test_lost_packets_do_not_occupy_the_queue() -> None:
    m = model(Shape(rate_bps=8_000_000, loss_ppm=1_000_000, queue_packets=1))
    for _ in range(5):
        assert m.offer(1000, False, 0) is not None
    assert m.queue_bytes(0) == 0
    assert m.statistics().drops_queue == 0


# -- serialisation and queue -----------------------------------------------------------------


def test_serialisation_timing_is_exact() -> None:
    m = model(Shape(rate_bps=GBIT, queue_packets=100))
    # 1500 B at 1 Gbit/s = 12 us each, back to back
    releases = [m.offer(1500, False, 0).release_ns for _ in range(4)]
    assert releases == [12_000, 24_000, 36_000, 48_000]
    # an idle link starts serialising at arrival
    assert m.offer(1500, False, 100_000).release_ns == 112_000
    # a busy link queues behind the backlog
    assert m.offer(125, False, 105_000).release_ns == 113_000


def test_serialisation_rounds_up_to_the_nanosecond() -> None:
    m = model(Shape(rate_bps=3))  # 1 byte = 8/3 s
    assert m.offer(1, False, 0).release_ns == 2_666_666_667


def test_delay_adds_to_serialisation() -> None:
    m = model(Shape(rate_bps=GBIT, delay_ns=5 * MS))
    assert m.offer(1500, False, 1000).release_ns == 1000 + 12_000 + 5 * MS


def test_drop_tail_by_bytes() -> None:
    m = model(Shape(rate_bps=8_000_000, queue_bytes=3000))  # 1 byte per us
    verdicts = [m.offer(1000, False, 0).action for _ in range(5)]
    assert verdicts == [Action.HOLD] * 3 + [Action.DROP_QUEUE] * 2
    assert m.queue_bytes(0) == 3000
    # after 1000 us the first packet has left the queue: room for one more
    assert m.queue_bytes(1000_000) == 2000
    assert m.offer(1000, False, 1000_000).action is Action.HOLD
    assert m.offer(1, False, 1000_000).action is Action.DROP_QUEUE
    s = m.statistics()
    assert s.drops_queue == 3
    assert s.queue_bytes_max == 3000


def test_drop_tail_by_packets() -> None:
    m = model(Shape(rate_bps=8_000_000, queue_packets=2))
    verdicts = [m.offer(10, False, 0).action for _ in range(4)]
    assert verdicts == [Action.HOLD, Action.HOLD, Action.DROP_QUEUE, Action.DROP_QUEUE]
    assert m.offer(10, False, 10_000).action is Action.HOLD  # first left after 10 us


def test_an_empty_queue_takes_a_packet_larger_than_its_limit() -> None:
    m = model(Shape(rate_bps=GBIT, queue_bytes=100))
    assert m.offer(1500, False, 0).action is Action.HOLD
    assert m.offer(1, False, 0).action is Action.DROP_QUEUE


def test_default_queue_applies() -> None:
    m = model(Shape(rate_bps=8_000, mtu=1000))  # 64 x 1000 bytes
    held = sum(m.offer(1000, False, 0).action is Action.HOLD for _ in range(100))
    assert held == 64


def test_without_engine_rate_only_the_delay_line_is_bounded() -> None:
    shape = Shape(rate_bps=GBIT, delay_ns=MS, queue_packets=1)
    m = model(shape, rate_in_engine=False)
    for _ in range(1000):  # the kernel's tbf enforces queue_packets, not the engine
        assert m.offer(1500, False, 0).action is Action.HOLD
    assert m.queue_bytes(0) == 0
    limit = m.delay_line_limit
    n = limit // 1500
    for _ in range(n - 1000):
        m.offer(1500, False, 0)
    assert m.offer(1500, False, 0).action is Action.DROP_QUEUE
    s = m.statistics()
    assert s.drops_queue == 1
    assert s.held_bytes_max == n * 1500
    assert s.queue_bytes_max == 0


# -- delay, jitter, release ------------------------------------------------------------------


def test_fixed_delay_release_order_and_counters() -> None:
    m = model(Shape(delay_ns=10 * MS), rate_in_engine=False)
    for i in range(3):
        assert m.offer(100 + i, False, i * MS, i) == Verdict(Action.HOLD, 10 * MS + i * MS, False)
    assert m.next_deadline() == 10 * MS
    assert m.release(10 * MS - 1) == []
    assert m.release(11 * MS) == [0, 1]
    assert m.next_deadline() == 12 * MS
    assert m.held_packets == 1
    assert m.held_bytes == 102
    assert m.release(10**12) == [2]
    assert m.next_deadline() is None
    s = m.statistics()
    assert (s.packets_out, s.bytes_out, s.held_bytes_max) == (3, 303, 303)


def test_jitter_bounds() -> None:
    delay, jitter = 10 * MS, 2 * MS
    m = model(Shape(delay_ns=delay, jitter_ns=jitter), rate_in_engine=False)
    extra = [m.offer(100, False, 0).release_ns - delay for _ in range(5000)]
    assert min(extra) >= -jitter
    assert max(extra) <= jitter
    assert min(extra) < -0.9 * jitter
    assert max(extra) > 0.9 * jitter
    assert abs(sum(extra) / len(extra)) < 0.05 * jitter


def test_jitter_is_clipped_at_departure() -> None:
    m = model(Shape(delay_ns=MS, jitter_ns=5 * MS), rate_in_engine=False)
    releases = [m.offer(100, False, 1000).release_ns for _ in range(2000)]
    assert min(releases) == 1000
    assert max(releases) <= 1000 + 6 * MS


def test_jitter_reorders_and_release_is_in_time_order() -> None:
    m = model(Shape(delay_ns=10 * MS, jitter_ns=5 * MS), rate_in_engine=False)
    times = {}
    for i in range(200):
        times[i] = m.offer(100, False, i * 100_000, i).release_ns
    out = []
    t = 0
    while (deadline := m.next_deadline()) is not None:
        assert deadline >= t
        t = deadline
        out.extend(m.release(t))
    assert sorted(out) == list(range(200))
    assert out != list(range(200)), "jitter larger than the spacing must reorder"
    assert [times[i] for i in out] == sorted(times.values())


def test_release_at_deadline_is_inclusive() -> None:
    m = model(Shape(delay_ns=MS), rate_in_engine=False)
    m.offer(1, False, 0, "x")
    assert m.release(MS) == ["x"]


# -- ECN ---------------------------------------------------------------------------------------


def test_ecn_marks_only_ect_and_only_above_threshold() -> None:
    m = model(Shape(rate_bps=8_000_000, queue_bytes=100_000, ecn_bytes=2500))
    marks = [m.offer(1000, True, 0).ce for _ in range(6)]
    # queue before each packet: 0, 1000, 2000, 3000 ... -> marked above 2500
    assert marks == [False, False, False, True, True, True]
    assert not m.offer(1000, False, 0).ce, "non-ECT is never marked"
    assert m.offer(1000, False, 0).action is Action.HOLD, "and not dropped below the limit"
    assert m.statistics().ecn_marks == 3


def test_ecn_threshold_follows_the_draining_queue() -> None:
    m = model(Shape(rate_bps=8_000_000, ecn_bytes=1500))
    for _ in range(3):
        m.offer(1000, True, 0)
    assert m.offer(1000, True, 0).ce  # 3000 queued
    assert not m.offer(1000, True, 3_000_000).ce  # 1000 queued


def test_no_ecn_without_engine_rate_or_threshold() -> None:
    m1 = model(Shape(rate_bps=8_000, ecn_bytes=0), rate_in_engine=False)
    m2 = model(Shape(rate_bps=8_000))
    for m in (m1, m2):
        assert not any(m.offer(1000, True, 0).ce for _ in range(20))


# -- statistics ------------------------------------------------------------------------------


def test_samples_cover_a_long_run_and_links_without_engine_rate() -> None:
    m = LinkDirection(Shape(rate_bps=10_000_000, delay_ns=MS), rng=random.Random(1),
                      sample_interval_ns=MS, max_samples=8)
    for i in range(1000):  # 1 s of traffic, one packet per ms
        m.offer(1000, False, i * MS)
        m.release(i * MS + MS)
    samples = m.statistics().samples
    assert len(samples) <= 8
    assert samples[0][0] == 0
    assert samples[-1][0] >= 800 * MS  # still covers the end of the run
    assert all(q == 0 for _, q, _ in samples)  # the kernel's tbf holds this queue
    outs = [b for _, _, b in samples]
    assert outs == sorted(outs)
    assert outs[-1] > 700_000  # cumulative bytes out: utilisation over time


def test_statistics_is_a_frozen_record_with_samples() -> None:
    m = LinkDirection(Shape(rate_bps=8_000_000, ecn_bytes=0), rate_in_engine=True,
                      rng=random.Random(1), sample_interval_ns=MS, max_samples=3)
    for i in range(10):
        m.offer(1000, True, i * MS // 2)
    s = m.statistics()
    assert isinstance(s, LinkStats)
    with pytest.raises(AttributeError):
        s.packets_in = 0  # type: ignore[misc]
    # one sample per ms while packets arrive, the queue growing by 500 B per 0.5 ms arrival;
    # at 3 ms the buffer (3) was full: every other sample went and the interval doubled
    assert [(t, q) for t, q, _ in s.samples] == [(0, 0), (2 * MS, 2000), (3 * MS, 3000)]
    d = s.to_dict()
    assert d["packets_in"] == 10
    assert d["samples"][1][:2] == [2 * MS, 2000]
    assert d["ecn_marks"] == s.ecn_marks == 9


# -- corrupt, duplicate, reorder (netem's) ------------------------------------------------------


def five_sigma(p: float, n: int) -> float:
    return 5 * (p * (1 - p) / n) ** 0.5


def drain(m: LinkDirection, until_ns: int | None = None) -> list[tuple[int, object]]:
    """Step time from deadline to deadline (as the engine's timer does), collecting
    (release time, item) until nothing is held (or `until_ns`)."""
    out: list[tuple[int, object]] = []
    while (t := m.next_deadline()) is not None and (until_ns is None or t <= until_ns):
        out += [(t, item) for item in m.release(t)]
    return out


@pytest.mark.parametrize("ppm", [10_000, 300_000])
def test_corrupt_ratio_and_the_bit_lies_past_the_header(ppm: int) -> None:
    m = model(Shape(corrupt_ppm=ppm), rate_in_engine=False, seed=ppm)
    n = 20_000
    bits = [m.offer(100, False, i, header=20).corrupt_bit for i in range(n)]
    hit = [b for b in bits if b >= 0]
    p = ppm / 1e6
    assert abs(len(hit) / n - p) < five_sigma(p, n)
    assert all(160 <= b < 800 for b in hit)  # bytes 20..99, never the IP header
    s = m.statistics()
    assert s.packets_corrupted == len(hit)
    # corruption drops nothing: every packet goes on (the receiver's checksum rejects it)
    assert s.packets_out == s.packets_in == n
    assert s.drops_loss == 0


def test_corrupt_bits_cover_the_whole_payload_uniformly() -> None:
    m = model(Shape(corrupt_ppm=1_000_000), rate_in_engine=False, seed=9)
    n = 32_000
    bits = [m.offer(60, False, i, header=40).corrupt_bit for i in range(n)]
    span = range(40 * 8, 60 * 8)  # 160 possible bits
    assert set(bits) == set(span)
    per_bit = n / len(span)
    counts = [bits.count(b) for b in span]
    assert max(abs(c - per_bit) for c in counts) < 5 * per_bit ** 0.5


def test_a_packet_without_payload_is_corrupted_anywhere() -> None:
    m = model(Shape(corrupt_ppm=1_000_000), rate_in_engine=False, seed=2)
    bits = {m.offer(20, False, i, header=20).corrupt_bit for i in range(5000)}
    assert bits == set(range(160))


def test_corrupt_flips_the_bit_the_verdict_names() -> None:
    m = model(Shape(corrupt_ppm=1_000_000), rate_in_engine=False, seed=4)
    for i in range(50):
        pkt = bytearray(random.Random(i).randbytes(64))
        before = bytes(pkt)
        bit = m.offer(len(pkt), False, i, pkt, header=20).corrupt_bit
        flip_bit(pkt, bit)
        diff = [(j, a ^ b) for j, (a, b) in enumerate(zip(before, pkt, strict=True)) if a != b]
        assert diff == [(bit >> 3, 1 << (bit & 7))]


@pytest.mark.parametrize("ppm", [10_000, 250_000])
def test_duplicate_ratio_and_every_copy_is_delivered(ppm: int) -> None:
    """The caller offers a copy for each `duplicate` verdict; everything then comes out of
    the delay line once per offer: originals once, the duplicated ones twice."""
    m = model(Shape(duplicate_ppm=ppm, delay_ns=MS), rate_in_engine=False, seed=ppm)
    n = 20_000
    dups = 0
    for i in range(n):
        v = m.offer(100, False, i * 1000, ("orig", i))
        assert v.action is Action.HOLD
        if v.duplicate:
            dups += 1
            copy = m.offer(100, False, i * 1000, ("copy", i), copy=True)
            assert copy.action is Action.HOLD
            assert not copy.duplicate
    p = ppm / 1e6
    assert abs(dups / n - p) < five_sigma(p, n)
    out = [item for _, item in drain(m)]
    origs = [i for kind, i in out if kind == "orig"]
    copies = [i for kind, i in out if kind == "copy"]
    assert origs == list(range(n))
    assert len(copies) == dups
    s = m.statistics()
    assert s.packets_duplicated == dups
    # a copy is a packet the link carries: in and out both count it
    assert s.packets_in == s.packets_out == n + dups


def test_duplicate_and_loss_together_leave_one_copy_as_in_netem() -> None:
    both = model(Shape(duplicate_ppm=1_000_000, loss_ppm=1_000_000), rate_in_engine=False)
    verdicts = [both.offer(100, False, i) for i in range(100)]
    assert all(v.action is Action.FORWARD and not v.duplicate for v in verdicts)
    s = both.statistics()
    assert (s.drops_loss, s.packets_duplicated, s.packets_out) == (0, 0, 100)
    # a copy takes its own loss draw
    lossy = model(Shape(duplicate_ppm=1_000_000, loss_ppm=1_000_000), rate_in_engine=False)
    assert lossy.offer(100, False, 0, copy=True).action is Action.DROP_LOSS


def test_duplicate_and_loss_counts_follow_netem() -> None:
    """netem's copies per packet: 1 + duplicated - lost, so with duplicate d and loss l a
    packet is dropped with (1-d)l, and doubled with d(1-l) (its copy then draws loss again)."""
    d, loss, n = 0.3, 0.2, 40_000
    m = model(Shape(duplicate_ppm=int(d * 1e6), loss_ppm=int(loss * 1e6)), rate_in_engine=False,
              seed=11)
    dropped = doubled = 0
    for i in range(n):
        v = m.offer(100, False, i)
        dropped += v.action is Action.DROP_LOSS
        doubled += v.duplicate
    assert abs(dropped / n - (1 - d) * loss) < five_sigma((1 - d) * loss, n)
    assert abs(doubled / n - d * (1 - loss)) < five_sigma(d * (1 - loss), n)


def test_a_packet_the_queue_drops_asks_for_no_copy() -> None:
    m = model(Shape(rate_bps=8_000_000, queue_packets=2, duplicate_ppm=1_000_000))
    first = m.offer(1000, False, 0)
    assert first.action is Action.HOLD
    assert first.duplicate
    assert m.offer(1000, False, 0, copy=True).action is Action.HOLD  # queued behind it
    dropped = m.offer(1000, False, 0)  # the queue is full
    assert dropped.action is Action.DROP_QUEUE
    assert not dropped.duplicate
    assert m.statistics().packets_duplicated == 1


def test_corrupt_and_duplicate_on_an_immediate_link_forward_at_once() -> None:
    m = model(Shape(corrupt_ppm=1_000_000, duplicate_ppm=1_000_000), rate_in_engine=False)
    assert m.immediate
    v = m.offer(100, False, 7, header=20)
    assert (v.action, v.release_ns, v.duplicate) == (Action.FORWARD, 7, True)
    assert 160 <= v.corrupt_bit < 800


@pytest.mark.parametrize("ppm", [50_000, 250_000])
def test_reorder_sends_some_packets_at_once_past_the_delayed_ones(ppm: int) -> None:
    delay = 10 * MS
    m = model(Shape(delay_ns=delay, reorder_ppm=ppm), rate_in_engine=False, seed=ppm)
    n = 20_000
    gap = 1000  # 1 us between arrivals: 10,000 packets in flight during one delay
    at_once = set()
    for i in range(n):
        v = m.offer(100, False, i * gap, i)
        assert v.action is Action.HOLD
        if v.release_ns == i * gap:
            at_once.add(i)
        else:
            assert v.release_ns == i * gap + delay
    p = ppm / 1e6
    assert abs(len(at_once) / n - p) < five_sigma(p, n)
    assert m.statistics().packets_reordered == len(at_once)
    out = drain(m)
    order = [i for _, i in out]
    assert sorted(order) == list(range(n))
    assert [t for t, _ in out] == sorted(t for t, _ in out)  # released in time order
    # each reordered packet leaves at its arrival, ahead of everything still in the delay line
    pos = {i: k for k, i in enumerate(order)}
    for i in list(at_once)[:200]:
        overtaken = [j for j in range(max(0, i - 100), i) if j not in at_once]
        assert all(pos[j] > pos[i] for j in overtaken)


def test_reorder_keeps_serialisation_and_skips_only_the_delay() -> None:
    m = model(Shape(rate_bps=GBIT, delay_ns=MS, reorder_ppm=1_000_000, queue_packets=100))
    # 1500 B at 1 Gbit/s = 12 us each, back to back: every packet reordered leaves at its
    # departure from the serialiser, not at its arrival
    assert [m.offer(1500, False, 0).release_ns for _ in range(3)] == [12_000, 24_000, 36_000]


def test_reorder_with_jitter_draws_no_jitter_for_a_reordered_packet() -> None:
    m = model(Shape(delay_ns=10 * MS, jitter_ns=5 * MS, reorder_ppm=500_000),
              rate_in_engine=False, seed=3)
    releases = [m.offer(100, False, 0).release_ns for _ in range(2000)]
    assert all(r == 0 or 5 * MS <= r <= 15 * MS for r in releases)
    assert 0 in releases
    assert any(r != 10 * MS for r in releases if r)


def test_reorder_without_delay_does_nothing_and_draws_nothing() -> None:
    rng = random.Random(5)
    m = LinkDirection(Shape(reorder_ppm=1_000_000), rng=rng)
    assert m.immediate
    assert {m.offer(100, False, i).action for i in range(100)} == {Action.FORWARD}
    assert m.statistics().packets_reordered == 0
    assert rng.random() == random.Random(5).random()


def test_faults_are_reproducible_with_a_seed() -> None:
    shape = Shape(delay_ns=MS, corrupt_ppm=200_000, duplicate_ppm=200_000, reorder_ppm=200_000,
                  loss_ppm=100_000)

    def run(seed: int) -> list[Verdict]:
        m = model(shape, rate_in_engine=False, seed=seed)
        return [m.offer(100, False, i * 1000, header=20) for i in range(500)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_fault_counters_are_in_the_statistics() -> None:
    m = model(Shape(delay_ns=MS, corrupt_ppm=1_000_000, duplicate_ppm=1_000_000,
                    reorder_ppm=1_000_000), rate_in_engine=False)
    v = m.offer(100, False, 0, header=20)
    m.offer(100, False, 0, header=20, copy=True)
    assert v.duplicate
    assert v.corrupt_bit >= 0
    d = m.statistics().to_dict()
    assert (d["packets_corrupted"], d["packets_duplicated"], d["packets_reordered"]) == (2, 1, 2)


# -- IP ECN helpers (fabric.net.tun, pure) -----------------------------------------------------


def _ipv4_header(tos: int, rng: random.Random) -> bytearray:
    hdr = bytearray(rng.randbytes(20))
    hdr[0] = 0x45
    hdr[1] = tos
    hdr[10] = hdr[11] = 0
    csum = checksum(hdr)
    hdr[10], hdr[11] = csum >> 8, csum & 0xFF
    return hdr


def test_set_ce_fixes_the_ipv4_checksum() -> None:
    rng = random.Random(9)
    for _ in range(2000):
        tos = (rng.randrange(64) << 2) | rng.choice([1, 2, 3])
        hdr = _ipv4_header(tos, rng)
        assert checksum(hdr) == 0
        assert set_ce(hdr) is (tos & 3 != ECN_CE)  # True only when this call marked it
        assert ecn_of(hdr) == ECN_CE
        assert hdr[1] >> 2 == tos >> 2, "DSCP untouched"
        assert checksum(hdr) == 0


def test_set_ce_leaves_non_ect_alone() -> None:
    hdr = _ipv4_header(0xB8, random.Random(1))
    before = bytes(hdr)
    assert not set_ce(hdr)
    assert bytes(hdr) == before
    assert not set_ce(bytearray(b"\x00\x00"))


def test_ecn_of_ipv6() -> None:
    pkt = bytearray(40)
    pkt[0] = 0x60 | 0x0B  # version 6, traffic class high nibble 0xB
    pkt[1] = 0x80 | 0x20  # traffic class low nibble 0x8 -> ECN 0b10 (ECT(0))
    assert ecn_of(pkt) == ECN_ECT0
    assert set_ce(pkt)
    assert ecn_of(pkt) == ECN_CE
    assert pkt[0] == 0x6B
    assert pkt[1] == 0xB0


def test_header_length() -> None:
    assert header_length(bytes([0x45]) + bytes(19)) == 20
    assert header_length(bytes([0x46]) + bytes(23)) == 24  # with options
    assert header_length(bytes([0x60]) + bytes(39)) == 40
    assert header_length(b"") == header_length(b"\x00") == 0
