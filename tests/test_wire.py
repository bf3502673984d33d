"""Frame codec and reliable-UDP state machines, driven in memory with a fake clock."""

from __future__ import annotations

import heapq
import random
import struct

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.errors import FabricError
from fabric.wire import (
    ACK,
    CLOSED,
    DATA,
    FIN,
    HEADER_SIZE,
    MAX_HEADER,
    NACK,
    NEED_DATA,
    FrameDecoder,
    Header,
    Payload,
    ProtocolError,
    Segment,
    UdpReceiver,
    UdpSender,
    encode_frame,
    encode_header,
    mss_for_mtu,
    pack_ack,
    pack_segment,
    unpack_nacks,
    unpack_segment,
)

# -- frames ---------------------------------------------------------------------------------


def _feed(dec: FrameDecoder, data: bytes) -> None:
    if data:  # b"" means end of stream
        dec.receive_data(data)


def _drain(dec: FrameDecoder) -> list[object]:
    events = []
    while True:
        ev = dec.next_event()
        if ev is NEED_DATA or ev is CLOSED:
            return events
        events.append(ev)


def _as_tuples(events: list[object]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for ev in events:
        if isinstance(ev, Header):
            out.append(("h", dict(ev)))
        else:
            assert isinstance(ev, Payload)
            out.append(("p", bytes(ev.data)))
    return out


def test_encode_header_is_byte_exact() -> None:
    header = {"t": "kv", "n": 3}
    packed = msgpack.packb(header, use_bin_type=True)
    assert encode_header(header) == struct.pack("!I", len(packed)) + packed
    assert encode_frame({"t": "kv"}, b"abc") == encode_header(header) + b"abc"


def test_round_trip_one_frame() -> None:
    dec = FrameDecoder()
    wire = encode_frame({"t": "kv", "req": 7, "digest": b"\x00" * 16}, b"hello")
    dec.receive_data(wire[:-5])
    ev = dec.next_event()
    assert isinstance(ev, Header)
    assert ev == {"t": "kv", "n": 5, "req": 7, "digest": b"\x00" * 16}
    assert dec.next_event() is NEED_DATA
    dec.receive_data(wire[-5:])
    ev = dec.next_event()
    assert isinstance(ev, Payload)
    assert ev.data == b"hello"
    assert dec.next_event() is NEED_DATA


FRAMES = [
    ({"t": "hello", "node": "h1"}, b""),
    ({"t": "kv", "req": 1, "i": 0}, bytes(range(256)) * 3),
    ({"t": "ping", "ts": 123456789}, b"\x01"),
    ({"t": "kv", "req": 1, "i": 1}, b"\xff" * 1000),
]


def _stream() -> bytes:
    return b"".join(encode_frame(h, p) for h, p in FRAMES)


def _expected() -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for h, p in FRAMES:
        out.append(("h", {**h, "n": len(p)}))
        if p:
            out.append(("p", p))
    return out


def test_many_frames_in_one_feed() -> None:
    dec = FrameDecoder()
    dec.receive_data(_stream())
    assert _as_tuples(_drain(dec)) == _expected()
    dec.receive_data(b"")
    assert dec.next_event() is CLOSED


def test_every_split_point() -> None:
    wire = _stream()
    for cut in range(len(wire) + 1):
        dec = FrameDecoder()
        events = []
        _feed(dec, wire[:cut])
        events += _drain(dec)
        _feed(dec, wire[cut:])
        events += _drain(dec)
        assert _as_tuples(events) == _expected(), cut


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=40))
def test_fragmentation_property(sizes: list[int]) -> None:
    wire = _stream()
    dec = FrameDecoder()
    events = []
    pos = 0
    for size in sizes:
        _feed(dec, wire[pos:pos + size])
        pos += size
        events += _drain(dec)
    _feed(dec, wire[pos:])
    events += _drain(dec)
    assert _as_tuples(events) == _expected()


@settings(max_examples=100, deadline=None)
@given(
    frames=st.lists(
        st.tuples(
            st.dictionaries(st.text(min_size=1, max_size=5).filter(lambda k: k not in "tn"),
                            st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10)
                            | st.binary(max_size=10), max_size=4),
            st.text(max_size=8),
            st.binary(max_size=300),
        ),
        max_size=6,
    ),
    cuts=st.lists(st.integers(0, 3000), max_size=10),
)
def test_round_trip_property(frames: list[tuple[dict, str, bytes]], cuts: list[int]) -> None:
    wire = b"".join(encode_frame({**extra, "t": t}, p) for extra, t, p in frames)
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    dec = FrameDecoder()
    events = []
    for a, b in zip(points, points[1:], strict=False):
        _feed(dec, wire[a:b])
        events += _drain(dec)
    expected: list[tuple[str, object]] = []
    for extra, t, p in frames:
        expected.append(("h", {**extra, "t": t, "n": len(p)}))
        if p:
            expected.append(("p", p))
    assert _as_tuples(events) == expected


def test_direct_payload_into_numpy_buffer() -> None:
    payload = np.arange(10_000, dtype=np.uint16)
    wire = encode_header({"t": "kv", "n": payload.nbytes}) + payload.tobytes()
    wire += encode_frame({"t": "after"}, b"zz")
    head, rest = wire[:100], wire[100:]
    dec = FrameDecoder()
    dec.receive_data(head)  # header plus the first payload bytes
    ev = dec.next_event()
    assert isinstance(ev, Header)
    assert ev["n"] == payload.nbytes
    dest = np.zeros(10_000, dtype=np.uint16)
    view = memoryview(dest).cast("B")
    got = dec.take_buffered_payload(view)
    assert got == 100 - len(encode_header({"t": "kv", "n": payload.nbytes}))
    assert dec.payload_remaining() == payload.nbytes - got
    # "recv_into": the caller copies from its socket straight into the numpy buffer
    sock = memoryview(rest)
    while got < payload.nbytes:
        k = min(3000, payload.nbytes - got)
        view[got:got + k] = sock[:k]
        sock = sock[k:]
        dec.payload_consumed(k)
        got += k
    assert np.array_equal(dest, payload)
    assert dec.payload_remaining() == 0
    dec.receive_data(sock)
    assert _as_tuples(_drain(dec)) == [("h", {"t": "after", "n": 2}), ("p", b"zz")]


def test_take_buffered_stops_at_frame_end() -> None:
    wire = encode_frame({"t": "a"}, b"12345") + encode_frame({"t": "b"}, b"678")
    dec = FrameDecoder()
    dec.receive_data(wire)
    assert isinstance(dec.next_event(), Header)
    dest = bytearray(100)
    assert dec.take_buffered_payload(memoryview(dest)) == 5
    assert bytes(dest[:5]) == b"12345"
    assert _as_tuples(_drain(dec)) == [("h", {"t": "b", "n": 3}), ("p", b"678")]


def test_take_buffered_into_small_dest() -> None:
    dec = FrameDecoder()
    dec.receive_data(encode_frame({"t": "a"}, b"abcdef"))
    dec.next_event()
    dest = bytearray(4)
    assert dec.take_buffered_payload(memoryview(dest)) == 4
    assert dec.buffered_payload() == 2
    with pytest.raises(RuntimeError, match="call take_buffered_payload"):
        dec.payload_consumed(1)
    with pytest.raises(RuntimeError, match="reading a payload directly"):
        dec.next_event()
    assert dec.take_buffered_payload(memoryview(dest)) == 2
    assert dec.next_event() is NEED_DATA


def test_misuse_is_runtime_error() -> None:
    dec = FrameDecoder()
    with pytest.raises(RuntimeError, match="outside a payload"):
        dec.payload_consumed(1)
    with pytest.raises(RuntimeError, match="outside a payload"):
        dec.take_buffered_payload(memoryview(bytearray(1)))
    dec.receive_data(encode_header({"t": "a", "n": 2}))
    dec.next_event()
    with pytest.raises(RuntimeError, match=r"payload_consumed\(3\) but 2 bytes remain"):
        dec.payload_consumed(3)


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (struct.pack("!I", 0), "outside 1..65536"),
        (struct.pack("!I", MAX_HEADER + 1), "outside 1..65536"),
        (struct.pack("!I", 1) + b"\xc1", "not valid msgpack"),
        (struct.pack("!I", 4) + b"\x93\x01\x02\x03", r"must be a map, got list"),
        (struct.pack("!I", 1) + b"\x80", r"lacks 't', 'n'"),
        (struct.pack("!I", 3) + b"\x81\x01\x02", "not valid msgpack"),  # int key
        (struct.pack("!I", 2) + b"\x81\x01", "not valid msgpack"),  # truncated
        (struct.pack("!I", 2) + b"\x80\x80", "not valid msgpack"),  # trailing bytes
    ],
)
def test_protocol_errors(wire: bytes, match: str) -> None:
    dec = FrameDecoder()
    dec.receive_data(wire)
    with pytest.raises(ProtocolError, match=match):
        dec.next_event()


def test_bad_header_fields() -> None:
    for header, match in [
        ({"t": 1, "n": 0}, "'t' must be a string"),
        ({"t": "a", "n": -1}, "'n' must be an int >= 0"),
        ({"t": "a", "n": True}, "'n' must be an int >= 0"),
        ({"n": 0}, "lacks 't'"),
    ]:
        packed = msgpack.packb(header)
        dec = FrameDecoder()
        dec.receive_data(struct.pack("!I", len(packed)) + packed)
        with pytest.raises(ProtocolError, match=match):
            dec.next_event()
        with pytest.raises(ProtocolError, match=match):
            encode_header(header)
    assert issubclass(ProtocolError, FabricError)


def test_header_too_big_to_encode() -> None:
    with pytest.raises(ProtocolError, match="limit is 65536"):
        encode_header({"t": "a", "n": 0, "pad": b"x" * MAX_HEADER})


def test_payload_limit() -> None:
    dec = FrameDecoder(max_payload=10)
    dec.receive_data(encode_header({"t": "a", "n": 11}))
    with pytest.raises(ProtocolError, match="exceeds the limit of 10"):
        dec.next_event()


def test_close_mid_frame() -> None:
    wire = encode_frame({"t": "a"}, b"xyz")
    for cut in range(1, len(wire)):
        dec = FrameDecoder()
        _feed(dec, wire[:cut])
        _drain(dec)
        dec.receive_data(b"")
        with pytest.raises(ProtocolError, match="closed the stream in the middle of a frame"):
            _drain(dec)


# -- udp codec ------------------------------------------------------------------------------


def test_segment_header_layout() -> None:
    raw = pack_segment(DATA | FIN, 1, 2, 3, 4, 5, b"pay")
    assert len(raw) == HEADER_SIZE + 3 == 35
    assert raw[:HEADER_SIZE] == struct.pack("!HBBIIIQQ", 0xFAB1, DATA | FIN, 0, 1, 2, 3, 4, 5)
    seg, payload = unpack_segment(raw)
    assert seg == Segment(DATA | FIN, 1, 2, 3, 4, 5)
    assert bytes(payload) == b"pay"
    assert mss_for_mtu(1500) == 1440
    assert mss_for_mtu(9000) == 8940


def test_ack_round_trip() -> None:
    seg, payload = unpack_segment(pack_ack(9, 8, 1000, 3, 7, [4, 6]))
    assert seg.flags == ACK | NACK
    assert seg.seq == 3
    assert seg.offset == 7
    assert unpack_nacks(payload) == [4, 6]
    seg, payload = unpack_segment(pack_ack(9, 8, 1000, 3, 3))
    assert seg.flags == ACK
    assert unpack_nacks(payload) == []


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x00" * 10, "shorter than the 32-byte header"),
        (struct.pack("!HBBIIIQQ", 0x1234, DATA, 0, 0, 0, 0, 0, 0), "magic 0x1234"),
        (struct.pack("!HBBIIIQQ", 0xFAB1, 0x40, 0, 0, 0, 0, 0, 0), "not a valid combination"),
        (struct.pack("!HBBIIIQQ", 0xFAB1, DATA | ACK, 0, 0, 0, 0, 0, 0), "not a valid"),
        (struct.pack("!HBBIIIQQ", 0xFAB1, DATA, 1, 0, 0, 0, 0, 0), "reserved byte is 1"),
    ],
)
def test_bad_segments(raw: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        unpack_segment(raw)


def test_receiver_rejects_inconsistent_segments() -> None:
    rx = UdpReceiver(1, 1, 2500, 1000)
    with pytest.raises(ProtocolError, match="beyond"):
        rx.on_data(3, 3000, 1000, 0)
    with pytest.raises(ProtocolError, match="expected offset 2000 with 500 bytes"):
        rx.on_data(2, 2000, 1000, 0)


# -- udp state machines over a lossy in-memory link -----------------------------------------


class LossyLink:
    """One direction: seeded loss, duplication and reordering (delay + jitter)."""

    def __init__(self, rng: random.Random, *, loss: float = 0.0, dup: float = 0.0,
                 delay_ns: int = 50_000, jitter_ns: int = 0,
                 drops: list[bool] | None = None) -> None:
        self.rng, self.loss, self.dup = rng, loss, dup
        self.delay_ns, self.jitter_ns = delay_ns, jitter_ns
        self.drops = drops  # an explicit pattern (cycled) instead of random loss
        self.sent = 0
        self._q: list[tuple[int, int, bytes]] = []
        self._n = 0

    def send(self, now: int, datagram: bytes) -> None:
        i = self.sent
        self.sent += 1
        if self.drops is not None:
            if self.drops and self.drops[i % len(self.drops)]:
                return
        elif self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            at = now + self.delay_ns + (self.rng.randrange(self.jitter_ns + 1)
                                        if self.jitter_ns else 0)
            heapq.heappush(self._q, (at, self._n, datagram))
            self._n += 1

    def next_time(self) -> int | None:
        return self._q[0][0] if self._q else None

    def due(self, now: int) -> list[bytes]:
        out = []
        while self._q and self._q[0][0] <= now:
            out.append(heapq.heappop(self._q)[2])
        return out


def run_transfer(total: int, *, mss: int = 1000, window: int = 64, rto_ns: int = 1_000_000,
                 fwd: LossyLink, rev: LossyLink, max_steps: int = 200_000
                 ) -> tuple[UdpSender, UdpReceiver, int]:
    data = np.random.default_rng(total).integers(0, 256, total, dtype=np.uint8).tobytes()
    tx = UdpSender(5, 9, total, mss, window, rto_ns)
    rx = UdpReceiver(5, 9, total, mss)
    got = bytearray(total)
    writes = [0] * rx.segments
    now = 0
    for _ in range(max_steps):
        for seq, off, length in tx.segments_to_send(now):
            fwd.send(now, tx.header(seq) + data[off:off + length])
        if tx.done:
            break
        times = [t for t in (fwd.next_time(), rev.next_time(), tx.next_deadline(),
                             rx.next_deadline()) if t is not None]
        assert times, "stalled: nothing in flight and no timer armed"
        now = max(now, min(times))
        for dgram in fwd.due(now):
            seg, payload = unpack_segment(dgram)
            assert seg.flags & DATA
            assert (seg.flow, seg.transfer, seg.total) == (5, 9, total)
            assert bool(seg.flags & FIN) == (seg.seq == tx.segments - 1)
            if rx.on_data(seg.seq, seg.offset, len(payload), now):
                got[seg.offset:seg.offset + len(payload)] = payload
                writes[seg.seq] += 1
        if rx.ack_due(now):
            rev.send(now, rx.ack_segment())
        for dgram in rev.due(now):
            seg, payload = unpack_segment(dgram)
            assert (seg.flow, seg.transfer) == (5, 9)
            tx.on_ack_segment(seg, payload, now)
    else:
        pytest.fail(f"transfer did not finish in {max_steps} steps")
    assert tx.done
    assert rx.complete
    assert writes == [1] * rx.segments  # every byte stored exactly once
    assert bytes(got) == data
    return tx, rx, now


def test_clean_link() -> None:
    rng = random.Random(0)
    tx, rx, now = run_transfer(100_000, fwd=LossyLink(rng), rev=LossyLink(rng))
    assert tx.sent == 100
    assert tx.retransmitted == 0
    assert rx.duplicates == 0
    assert now < 5_000_000


@pytest.mark.parametrize("loss", [0.01, 0.10, 0.30])
@pytest.mark.parametrize("seed", range(4))
def test_lossy_link_completes(loss: float, seed: int) -> None:
    rng = random.Random(seed)
    tx, rx, _ = run_transfer(
        300_000,
        fwd=LossyLink(rng, loss=loss, jitter_ns=30_000),
        rev=LossyLink(rng, loss=loss, jitter_ns=30_000),
    )
    assert tx.retransmitted > 0 or loss < 0.05


def test_reordering_and_duplication() -> None:
    rng = random.Random(7)
    tx, rx, _ = run_transfer(
        200_000,
        fwd=LossyLink(rng, dup=0.2, delay_ns=10_000, jitter_ns=500_000),
        rev=LossyLink(rng, dup=0.2, delay_ns=10_000, jitter_ns=500_000),
    )
    assert rx.duplicates > 0


def test_window_limits_in_flight() -> None:
    tx = UdpSender(1, 1, 100_000, 1000, 8, 1_000_000)
    first = tx.segments_to_send(0)
    assert [s for s, _, _ in first] == list(range(8))
    assert tx.segments_to_send(10) == []
    tx.on_ack(3, 20)
    assert [s for s, _, _ in tx.segments_to_send(20)] == [8, 9, 10]


def test_sender_timeout_and_backoff() -> None:
    tx = UdpSender(1, 1, 3000, 1000, 8, 1_000)
    tx.segments_to_send(0)
    assert tx.next_deadline() == 1_000
    assert tx.segments_to_send(999) == []
    assert [s for s, _, _ in tx.segments_to_send(1_000)] == [0, 1, 2]
    assert tx.timeouts == 1
    assert tx.retransmitted == 3
    assert tx.next_deadline() == 1_000 + 2_000  # backoff doubled
    tx.on_ack(3, 1_500)
    assert tx.done
    assert tx.next_deadline() is None


def test_nack_holdoff() -> None:
    tx = UdpSender(1, 1, 5000, 1000, 8, 1_000, nack_holdoff_ns=100)
    tx.segments_to_send(0)
    tx.on_nack([1], 50)  # too soon after the send: ignored
    assert tx.segments_to_send(50) == []
    tx.on_nack([1, 3], 200)
    assert [s for s, _, _ in tx.segments_to_send(200)] == [1, 3]
    with pytest.raises(ProtocolError, match="only 5 segments were sent"):
        tx.on_ack(6, 300)


def test_receiver_acks_and_nacks() -> None:
    rx = UdpReceiver(1, 1, 10_000, 1000, ack_every=4, ack_delay_ns=500)
    assert rx.on_data(0, 0, 1000, 0)
    assert not rx.ack_due(0)
    assert rx.next_deadline() == 500
    assert rx.ack_due(500)
    assert rx.make_ack() == (1, [])
    assert rx.on_data(3, 3000, 1000, 600)  # new hole at 1, 2: ACK at once
    assert rx.ack_due(600)
    assert rx.make_ack() == (1, [1, 2])
    assert not rx.on_data(3, 3000, 1000, 700)  # duplicate: ACK at once
    assert rx.duplicates == 1
    assert rx.ack_due(700)
    rx.make_ack()
    for seq in (1, 2, 4):
        rx.on_data(seq, seq * 1000, 1000, 800)
    assert not rx.ack_due(800)
    rx.on_data(5, 5000, 1000, 800)  # fourth new segment since the last ACK
    assert rx.ack_due(800)
    assert rx.make_ack() == (6, [])


def test_nack_list_is_limited() -> None:
    rx = UdpReceiver(1, 1, 1_000_000, 1000, max_nacks=5)
    rx.on_data(999, 999_000, 1000, 0)
    cum, nacks = rx.make_ack()
    assert cum == 0
    assert nacks == [0, 1, 2, 3, 4]


def test_empty_transfer() -> None:
    tx = UdpSender(1, 1, 0, 1000, 8, 1000)
    rx = UdpReceiver(1, 1, 0, 1000)
    assert tx.done
    assert rx.complete
    assert tx.segments_to_send(0) == []


@settings(max_examples=300, deadline=None)
@given(
    fwd_drops=st.lists(st.booleans(), max_size=40).filter(lambda d: not d or not all(d)),
    rev_drops=st.lists(st.booleans(), max_size=40).filter(lambda d: not d or not all(d)),
    total=st.integers(1, 40_000),
    window=st.integers(1, 32),
    seed=st.integers(0, 2**16),
    jitter=st.sampled_from([0, 20_000, 400_000]),
)
def test_any_loss_pattern_completes(fwd_drops: list[bool], rev_drops: list[bool], total: int,
                                    window: int, seed: int, jitter: int) -> None:
    rng = random.Random(seed)
    run_transfer(total, mss=700, window=window, rto_ns=300_000,
                 fwd=LossyLink(rng, drops=fwd_drops, jitter_ns=jitter, dup=0.05),
                 rev=LossyLink(rng, drops=rev_drops, jitter_ns=jitter, dup=0.05))


def test_periodic_drop_regression() -> None:
    # Every third datagram lost: timeouts used to resend the whole window in step with the
    # pattern, forever. Selective acks (the horizon) break the lockstep.
    rng = random.Random(0)
    tx, rx, _ = run_transfer(10_390, mss=700, window=15, rto_ns=300_000,
                             fwd=LossyLink(rng, drops=[True, False, False], dup=0.05),
                             rev=LossyLink(rng, drops=[], dup=0.05))
    assert tx.retransmitted < 3 * rx.segments


def test_horizon_acks_selectively() -> None:
    tx = UdpSender(1, 1, 10_000, 1000, 5, 1_000_000, reorder_ns=5)
    rx = UdpReceiver(1, 1, 10_000, 1000)
    assert [s for s, _, _ in tx.segments_to_send(0)] == [0, 1, 2, 3, 4]
    for seq in (0, 1, 3, 4):  # 2 is lost
        rx.on_data(seq, seq * 1000, 1000, 5)
    seg, payload = unpack_segment(rx.ack_segment())
    assert (seg.seq, seg.offset, unpack_nacks(payload)) == (2, 5, [2])
    tx.on_ack_segment(seg, payload, 10)
    # 2 was sent with 3 and 4: maybe just reordered, so no resend yet; the window moves on
    assert [s for s, _, _ in tx.segments_to_send(10)] == [5, 6]
    for seq in (5, 6):
        rx.on_data(seq, seq * 1000, 1000, 15)
    seg, payload = unpack_segment(rx.ack_segment())
    assert (seg.seq, seg.offset, unpack_nacks(payload)) == (2, 7, [2])
    tx.on_ack_segment(seg, payload, 20)
    # a segment sent well after 2 has arrived: 2 is lost, resend at once (no holdoff)
    assert [s for s, _, _ in tx.segments_to_send(20)] == [2]
    # 3-6 are selectively acked: a timeout resends only 2
    assert [s for s, _, _ in tx.segments_to_send(2_000_000)] == [2]


def test_truncated_nack_list_limits_the_horizon() -> None:
    rx = UdpReceiver(1, 1, 100_000, 1000, max_nacks=2)
    for seq in (1, 3, 5, 7):
        rx.on_data(seq, seq * 1000, 1000, 0)
    assert rx.make_ack() == (0, [0, 2])
    assert rx.horizon == 4  # seq 4 is missing but not listed: the horizon stops there


def test_the_chunk_frame_round_trips_and_is_told_from_others() -> None:
    """Every transport sends and reads a chunk through these; an ack and other frames are
    not chunks, a chunk missing a field is a ProtocolError."""
    from fabric.wire.frames import (
        ChunkHeader,
        acked,
        chunk_header,
        encode_ack,
        encode_chunk_header,
    )

    def first(data: bytes) -> object:
        dec = FrameDecoder()
        dec.receive_data(data)
        return dec.next_event()

    ev = first(encode_chunk_header(7, 2, 5, 1024, b"\x01" * 8, 100, 200) + bytes(1024))
    assert chunk_header(ev) == ChunkHeader(7, 2, 5, 1024, b"\x01" * 8, 100, 200)
    assert acked(ev) is None
    ack = first(encode_ack(7))
    assert acked(ack) == 7
    assert chunk_header(ack) is None
    assert chunk_header(NEED_DATA) is None
    with pytest.raises(ProtocolError, match="chunk frame without 'd'"):
        chunk_header(first(encode_header({"t": "chunk", "n": 0, "x": 1, "i": 0, "c": 1})))
