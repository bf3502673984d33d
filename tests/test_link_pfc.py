"""PFC at a link's transmitter (sans-IO): a pause frame the link engine delivers pauses the
opposite direction's class queue of that priority, as a NIC's MAC does (`ClassScheduler.pause`,
`LinkDirection.pause`, `Engine._on_pfc`), so a RoCE switch's headroom holds what is on the
wire and no more."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time

import pytest

from fabric.linkmodel import Action, ClassScheduler, LinkDirection
from fabric.net.engine import _INF, Engine, EngineConfig, _Direction
from fabric.net.tun import TimerFd
from fabric.switch.pfc import PFC_IP_SIZE, PFC_PORT, pack_pfc, pfc_in_packet
from fabric.topology.model import Shape, TrafficClass

MS = 1_000_000
KV = TrafficClass(name="kv", dscp=26, priority=3, lossless=True)
BULK = TrafficClass(name="bulk", dscp=10, priority=0)
CTRL = TrafficClass(name="ctrl", dscp=48, priority=6, strict=True)
# 8 Mbit/s: a 1000-byte packet takes 1 ms on the wire
SHAPE = Shape(rate_bps=8_000_000, queue_bytes=1_000_000, delay_ns=2 * MS)


def link(classes: tuple[TrafficClass, ...] = (BULK, KV, CTRL)) -> LinkDirection:
    return LinkDirection(SHAPE, rate_in_engine=True, rng=random.Random(1), classes=classes)


def run(m: LinkDirection, until: int) -> list[tuple[int, object]]:
    out = []
    while (d := m.next_deadline()) is not None and d <= until:
        out.extend((d, item) for item in m.release(d))
    return out


def pfc_packet(priority: int, pause: bool, *, dport: int = PFC_PORT) -> bytes:
    payload = pack_pfc(priority, pause)
    udp = struct.pack("!HHHH", dport, dport, 8 + len(payload), 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(payload), 0, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return ip + udp + payload


def test_scheduler_skips_a_paused_class_and_keeps_its_queue() -> None:
    s = ClassScheduler((BULK, KV, CTRL), mtu=1500)
    for i in range(3):
        s.push(1, 1000, f"kv{i}")
    s.push(0, 1000, "b0")
    s.push(2, 100, "c0")
    s.pause(1 << 1, True)
    assert (s.count, s.ready) == (5, 2)
    assert [s.pop()[2] for _ in range(2)] == ["c0", "b0"]  # type: ignore[index]
    assert s.pop() is None  # only the paused class holds packets
    assert (s.count, s.ready) == (3, 0)
    s.push(1, 1000, "kv3")  # joins the paused queue, not the ready count
    assert s.ready == 0
    s.pause(1 << 1, False)
    assert s.ready == 4
    assert [s.pop()[2] for _ in range(4)] == ["kv0", "kv1", "kv2", "kv3"]  # type: ignore[index]
    s.pause(1 << 1, True)
    s.pause(1 << 1, True)  # twice: once
    s.push(1, 1000, "kv4")
    s.pause(1 << 1, False)
    assert s.ready == 1


def test_a_paused_strict_class_lets_the_others_go() -> None:
    s = ClassScheduler((BULK, CTRL), mtu=1500)
    s.push(1, 100, "c0")
    s.push(0, 1000, "b0")
    s.pause(1 << 1, True)
    assert s.pop() == (0, 1000, "b0")
    assert s.pop() is None


def test_pause_holds_the_priority_at_the_transmitter_and_not_what_is_on_the_wire() -> None:
    m = link()
    for i in range(4):
        m.offer(1000, False, 0, f"kv{i}", dscp=KV.dscp)
    # kv0 is on the wire 0-1 ms; the pause lands at 0.5 ms
    assert m.pause(KV.priority, True, MS // 2)
    m.offer(1000, False, MS // 2, "b0", dscp=BULK.dscp)
    got = run(m, 10 * MS)
    # kv0 finishes and arrives (1 ms + 2 ms delay); bulk takes the wire next; kv1-3 wait
    assert got == [(3 * MS, "kv0"), (4 * MS, "b0")]
    assert m.held_packets == 3
    assert m.pfc_pauses == 1
    # resumed at 20 ms, long after the wire idled: it starts at 20 ms, not back in the pause
    assert m.pause(KV.priority, False, 20 * MS)
    assert run(m, 40 * MS) == [(23 * MS, "kv1"), (24 * MS, "kv2"), (25 * MS, "kv3")]
    assert m.held_packets == 0


def test_resume_while_the_wire_is_busy_queues_behind_it() -> None:
    m = link()
    m.offer(1000, False, 0, "kv0", dscp=KV.dscp)
    m.pause(KV.priority, True, 0)  # kv0 already took the wire at 0
    m.offer(1000, False, 0, "kv1", dscp=KV.dscp)
    m.offer(1000, False, 0, "b0", dscp=BULK.dscp)
    m.offer(1000, False, 0, "b1", dscp=BULK.dscp)
    m.pause(KV.priority, False, int(1.5 * MS))  # b0 is on the wire 1-2 ms
    # kv1 takes the wire when b0 leaves it (round robin), then b1: no gap, no overlap
    assert run(m, 10 * MS) == [(3 * MS, "kv0"), (4 * MS, "b0"), (5 * MS, "kv1"),
                               (6 * MS, "b1")]


def test_pause_needs_class_queues_and_a_class_of_that_priority() -> None:
    assert not LinkDirection(SHAPE, rate_in_engine=True).pause(3, True, 0)  # FIFO link
    assert not link((BULK, KV)).pause(5, True, 0)  # no class of priority 5
    assert link((BULK, KV)).pause(3, True, 0)


def test_pfc_frames_are_read_from_the_switchs_packet_only() -> None:
    assert len(pfc_packet(3, True)) == PFC_IP_SIZE
    assert pfc_in_packet(pfc_packet(3, True)) == [(3, True)]
    assert pfc_in_packet(bytearray(pfc_packet(3, False))) == [(3, False)]
    assert pfc_in_packet(pfc_packet(3, True, dport=4791)) is None
    other = bytearray(pfc_packet(3, True))
    other[9] = 6  # TCP
    assert pfc_in_packet(other) is None
    bad = bytearray(pfc_packet(3, True))
    bad[28] = 0  # not the PFC opcode
    assert pfc_in_packet(bad) is None
    assert pfc_in_packet(pfc_packet(3, True) + b"\0") is None


def test_engine_pauses_the_opposite_direction_and_reschedules_it() -> None:
    eng = Engine(EngineConfig(fabric="f", run_id="r", stats_path=""))
    up = _Direction("l", "forward", -1, -1, link(), 0)  # host -> switch: data
    down = _Direction("l", "reverse", -1, -1, link(), 1)  # switch -> host: the PFC frames
    up.pfc_to, down.pfc_to = down, up
    eng.directions += [up, down]
    for i in range(3):
        up.model.offer(1000, False, 0, f"kv{i}", dscp=KV.dscp)
    eng._on_pfc(up, pfc_packet(KV.priority, True), MS // 2)
    assert up.model.held_packets == 3  # kv0 on the wire, kv1-2 paused
    assert eng._heap == [(3 * MS, 0)]  # kv0's arrival
    assert run(up.model, 10 * MS) == [(3 * MS, "kv0")]
    eng._heap.clear()  # what the engine's timer did: nothing more is due
    up.scheduled = _INF
    eng._on_pfc(up, b"\x45" + bytes(PFC_IP_SIZE - 1), 5 * MS)  # not a PFC frame: ignored
    assert up.model.held_packets == 2
    eng._on_pfc(up, pfc_packet(KV.priority, False), 20 * MS)
    assert up.scheduled == 21 * MS  # the engine's timer is due when kv1 is serialised
    assert eng._heap == [(21 * MS, 0)]


def test_a_paused_class_queue_drops_nothing() -> None:
    """The paused class is the NIC's paused ring: what the host sent before the pause reached
    it waits there, past the link's queue limit; a class not paused still drops at the tail."""
    m = LinkDirection(Shape(rate_bps=8_000_000, queue_bytes=3000), rate_in_engine=True,
                      classes=(BULK, KV))
    m.offer(1000, False, 0, "kv0", dscp=KV.dscp)  # on the wire
    m.pause(KV.priority, True, 0)
    verdicts = [m.offer(1000, False, 0, f"kv{i}", dscp=KV.dscp).action for i in range(1, 8)]
    assert set(verdicts) == {Action.HOLD}
    bulk = [m.offer(1000, False, 0, f"b{i}", dscp=BULK.dscp).action for i in range(5)]
    assert bulk.count(Action.DROP_QUEUE) == 2  # 3000 bytes of queue
    m.pause(KV.priority, False, 10 * MS)
    got = [item for _, item in run(m, 100 * MS)]
    assert [x for x in got if x.startswith("kv")] == [f"kv{i}" for i in range(8)]
    assert m.statistics().drops_queue == 2


def test_a_link_that_goes_down_forgets_its_pauses() -> None:
    m = link()
    m.pause(KV.priority, True, 0)
    m.offer(1000, False, 0, "kv0", dscp=KV.dscp)
    assert m.set_up(False, MS) == 1
    m.set_up(True, 2 * MS)  # the resume, had the switch sent one meanwhile, was lost
    m.offer(1000, False, 2 * MS, "kv1", dscp=KV.dscp)
    assert run(m, 10 * MS) == [(5 * MS, "kv1")]



def _pfc_through(down_shape: Shape) -> tuple[LinkDirection, int, list[bytes]]:
    """Write one KV pause frame into the switch's end of a link whose switch -> host direction
    has `down_shape`, let the engine read it (`Engine._drain`, real sockets for the two ends)
    and return the host -> switch direction's model, when its 3 packets were offered, and what
    reached the host."""
    eng = Engine(EngineConfig(fabric="f", run_id="r", stats_path=""))
    eng._timer = TimerFd()
    switch_end, engine_in = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    host_end, engine_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    socks = (switch_end, engine_in, host_end, engine_out)
    try:
        for s in socks:
            s.setblocking(False)
        up = _Direction("l", "forward", -1, -1, link(), 0)
        down_model = LinkDirection(down_shape, rate_in_engine=False, rng=random.Random(1),
                                   classes=(BULK, KV, CTRL))
        down = _Direction("l", "reverse", engine_in.fileno(), engine_out.fileno(), down_model, 1)
        up.pfc_to, down.pfc_to = down, up
        eng.directions += [up, down]
        base = time.monotonic_ns()
        for i in range(3):
            up.model.offer(1000, False, base, f"kv{i}", dscp=KV.dscp)
        switch_end.send(pfc_packet(KV.priority, True))
        eng._drain(down)
        got = []
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(host_end.recv(2048))
        return up.model, base, got
    finally:
        eng._timer.close()
        for s in socks:
            s.close()


@pytest.mark.parametrize(("shape", "copies"), [
    (Shape(), 1),  # forwarded by `_drain` itself
    (Shape(duplicate_ppm=1_000_000), 2),  # by `_offer_faulty`: the frame and its duplicate
    # by `_offer_faulty`, which (1 ppm, this seed) corrupts and duplicates nothing here
    (Shape(corrupt_ppm=1, duplicate_ppm=1), 1),
])
def test_a_pause_frame_the_engine_forwards_pauses_the_opposite_transmitter(
        shape: Shape, copies: int) -> None:
    """Whichever path the engine's read takes (a direction that corrupts or duplicates takes
    the per-packet `_offer_faulty`), a PFC frame it forwards at once to the host pauses the
    host's transmitter for that priority: kv0 was on the wire, kv1 and kv2 wait."""
    up, base, got = _pfc_through(shape)
    assert got == [pfc_packet(KV.priority, True)] * copies
    assert up.held_packets == 3
    assert run(up, base + 100 * MS) == [(base + 3 * MS, "kv0")]
