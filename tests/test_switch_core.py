"""The sans-IO switch core and its packet and PFC helpers, driven with hand-made packets and
times (no sockets, no sleeps). Checksums are verified with the from-scratch `ref_checksum`."""

from __future__ import annotations

import dataclasses
import heapq
import ipaddress
import json
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.errors import FabricError
from fabric.roce.inttrailer import INT_FLAG, MAX_HOPS, RECORD_SIZE, records_of, trailer_of
from fabric.switch.core import (
    DROP_BUFFER,
    DROP_LOSSLESS,
    DROP_MALFORMED,
    DROP_NO_ROUTE,
    DROP_TTL,
    LOCAL,
    MAX_SAMPLES,
    QUEUED,
    ClassSpec,
    PortSpec,
    RedParams,
    SwitchCore,
    SwitchError,
    SwitchSpec,
    headroom_bytes,
)
from fabric.switch.packet import append_int, decrement_ttl, parse
from fabric.switch.pfc import PFC_PORT, pack_pfc, unpack_pfc
from fabric.wire.ip import checksum, set_ce

GBIT = 1_000_000_000
UDP, TCP, ICMP = 17, 6, 1


# -- helpers ---------------------------------------------------------------------------------


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def ref_checksum(data: bytes) -> int:
    """RFC 1071 the slow way: add 16-bit words with end-around carry, complement."""
    data = bytes(data)
    if len(data) % 2:
        data += b"\x00"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def header_ok(pkt: bytes | bytearray) -> bool:
    ihl = (pkt[0] & 0x0F) * 4
    return ref_checksum(bytes(pkt[:ihl])) == 0


def make_packet(src: str = "10.0.0.1", dst: str = "10.0.1.1", *, proto: int = UDP,
                sport: int = 1000, dport: int = 4791, dscp: int = 0, ecn: int = 0,
                ttl: int = 64, size: int = 1000, options: bytes = b"", flags: int = 0x4000,
                ident: int = 0x1234, payload: bytes | None = None) -> bytearray:
    """An IPv4 packet of `size` bytes (unless `payload` is given) with a valid checksum."""
    ihl = 20 + len(options)
    if proto == UDP:
        l4_len = 8
    elif proto == TCP:
        l4_len = 20
    else:
        l4_len = 0
    body = payload if payload is not None else bytes(size - ihl - l4_len)
    if proto == UDP:
        l4 = struct.pack("!HHHH", sport, dport, l4_len + len(body), 0)
    elif proto == TCP:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 5 << 4, 0x10, 65535, 0, 0)
    else:
        l4 = b""
    total = ihl + len(l4) + len(body)
    hdr = bytearray(struct.pack("!BBHHHBBHII", 0x40 | ihl // 4, dscp << 2 | ecn, total,
                                ident, flags, ttl, proto, 0, ip(src), ip(dst))) + options
    struct.pack_into("!H", hdr, 10, ref_checksum(bytes(hdr)))
    return hdr + l4 + body


def roce_payload(data: int = 100, *, int_flag: bool = True, hops: int = 0,
                 opcode: int = 0x0A) -> bytes:
    """BTH (12 bytes: opcode, default RC RDMA WRITE ONLY; INT flag in byte 4) | data | `hops`
    empty records | count | ICRC."""
    bth = bytearray(12)
    bth[0] = opcode
    if int_flag:
        bth[4] |= INT_FLAG
    return bytes(bth) + bytes(data) + bytes(hops * RECORD_SIZE) + bytes((hops,)) + b"ICRC"


HOSTS = [ip(f"10.0.{i}.1") for i in range(8)]


def host(i: int) -> str:
    return f"10.0.{i}.1"


ROCE = ClassSpec("roce", dscp=26, priority=3, lossless=True, weight=2)
BULK = ClassSpec("bulk", dscp=10, priority=1, weight=1)
CNP = ClassSpec("cnp", dscp=48, priority=6, strict=True)
BEST = ClassSpec("best", dscp=0, priority=0)


def make_spec(n_ports: int = 4, *, classes: tuple[ClassSpec, ...] = (ROCE, BULK, CNP, BEST),
              rate: int = 100 * GBIT, delay: int = 1000, mtu: int = 1500,
              routes: dict[int, tuple[int, ...]] | None = None, **kw) -> SwitchSpec:
    ports = tuple(PortSpec(f"p{i}", rate, delay, mtu, peer=f"n{i}") for i in range(n_ports))
    if routes is None:
        routes = {HOSTS[i]: (i,) for i in range(n_ports)}
    kw.setdefault("buffer_bytes", 16 << 20)
    return SwitchSpec("sw", ports, classes, routes=routes, **kw)


def drain(core: SwitchCore, port: int, now: int = 0) -> list[bytearray]:
    out = []
    while (pkt := core.dequeue(now, port)) is not None:
        out.append(pkt)
    return out


# -- packet.py -------------------------------------------------------------------------------


def test_parse_udp_tcp_and_other_protocols() -> None:
    pkt = make_packet("10.0.0.1", "10.0.1.1", sport=49152, dport=4791, dscp=26, ecn=2, ttl=7,
                      size=200)
    assert parse(pkt) == (26, 2, 7, UDP, ip("10.0.0.1"), ip("10.0.1.1"), 49152, 4791, 20, 200)
    tcp = make_packet(proto=TCP, sport=5, dport=80, size=100)
    assert parse(tcp)[3:8] == (TCP, ip("10.0.0.1"), ip("10.0.1.1"), 5, 80)
    icmp = make_packet(proto=ICMP, size=84)
    assert parse(icmp)[6:8] == (0, 0)
    opts = make_packet(options=b"\x01\x01\x01\x00", sport=7, dport=9, size=100)
    assert parse(opts)[6:] == (7, 9, 24, 100)
    frag = make_packet(flags=0x0010, sport=7, dport=9)  # offset 16: no ports in it
    assert parse(frag)[6:8] == (0, 0)


@pytest.mark.parametrize("mutate", [
    lambda p: p[:19],  # too short
    lambda p: bytearray([0x60]) + p[1:],  # IPv6
    lambda p: bytearray([0x44]) + p[1:],  # IHL 4
    lambda p: p[:2] + struct.pack("!H", len(p) + 1) + p[4:],  # total length > buffer
    lambda p: p[:2] + struct.pack("!H", 10) + p[4:],  # total length < header
    lambda p: bytearray(),
])
def test_parse_rejects_malformed(mutate) -> None:
    assert parse(mutate(make_packet(size=100))) is None


@given(st.binary(min_size=0, max_size=80))
def test_checksum_matches_reference(data: bytes) -> None:
    assert checksum(data) == ref_checksum(data)


@given(st.binary(min_size=20, max_size=20).map(bytearray))
def test_checksum_of_a_filled_header_verifies(hdr: bytearray) -> None:
    hdr[10:12] = b"\x00\x00"
    struct.pack_into("!H", hdr, 10, checksum(hdr))
    assert ref_checksum(bytes(hdr)) == 0
    assert checksum(hdr) == 0


headers = st.builds(
    lambda tos, ttl, ident, proto, src, dst, nopt: make_packet(
        str(ipaddress.IPv4Address(src)), str(ipaddress.IPv4Address(dst)), proto=proto,
        dscp=tos >> 2, ecn=tos & 3, ttl=ttl, ident=ident, options=bytes(range(4 * nopt)),
        size=100),
    st.integers(0, 255), st.integers(2, 255), st.integers(0, 0xFFFF),
    st.sampled_from([UDP, TCP, ICMP]), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(0, 10))


@settings(max_examples=300)
@given(headers)
def test_set_ce_keeps_the_checksum_valid(pkt: bytearray) -> None:
    before = bytes(pkt)
    ecn = pkt[1] & 3
    marked = set_ce(pkt)
    assert header_ok(pkt)
    if ecn in (1, 2):
        assert marked
        assert pkt[1] & 3 == 3
        assert pkt[1] >> 2 == before[1] >> 2
        assert pkt[:10] + pkt[12:] == before[:1] + bytes([before[1] | 3]) + before[2:10] + \
            before[12:]
    else:
        assert not marked
        assert bytes(pkt) == before


@settings(max_examples=300)
@given(headers)
def test_decrement_ttl_keeps_the_checksum_valid(pkt: bytearray) -> None:
    ttl = pkt[8]
    decrement_ttl(pkt)
    assert pkt[8] == ttl - 1
    assert header_ok(pkt)


def test_set_ce_examples() -> None:
    for ecn, marked in ((0, False), (1, True), (2, True), (3, False)):
        pkt = make_packet(ecn=ecn, dscp=26)
        assert set_ce(pkt) is marked
        assert pkt[1] & 3 == (3 if ecn else 0)
        assert header_ok(pkt)


def test_append_int_adds_a_readable_record() -> None:
    pkt = make_packet(payload=roce_payload(100))
    out = append_int(pkt, rate_bps=100 * GBIT, ts_ns=12345, tx_bytes=999, qlen_bytes=4000)
    assert out is not pkt
    assert len(out) == len(pkt) + RECORD_SIZE
    assert header_ok(out)
    assert struct.unpack_from("!H", out, 2)[0] == len(out)
    udp_len, udp_csum = struct.unpack_from("!HH", out, 24)
    assert udp_len == len(out) - 20
    assert udp_csum == 0
    (rec,) = records_of(trailer_of(out[28:]))
    assert (rec.hop, rec.line_rate_bps, rec.ts_ns, rec.tx_bytes, rec.qlen_bytes) == \
        (0, 100 * GBIT, 12345, 999, 4000)
    again = append_int(out, rate_bps=25 * GBIT, ts_ns=1, tx_bytes=2, qlen_bytes=3)
    recs = records_of(trailer_of(again[28:]))
    assert [r.line_rate_bps for r in recs] == [100 * GBIT, 25 * GBIT]
    assert bytes(again[-4:]) == b"ICRC"


@pytest.mark.parametrize("pkt", [
    make_packet(payload=roce_payload(100, int_flag=False)),  # no INT trailer
    make_packet(dport=4792, payload=roce_payload(100)),  # not RoCE
    make_packet(proto=TCP, dport=4791, size=200),
    make_packet(payload=roce_payload(10, hops=MAX_HOPS)),  # full
    make_packet(payload=roce_payload(10, opcode=0x11)),  # an ACK: its trailer is an echo
    make_packet(payload=roce_payload(100), flags=0x2000),  # a fragment
    make_packet(size=100)[:30],  # total length > buffer
], ids=["no-flag", "not-roce", "tcp", "full", "ack", "fragment", "malformed"])
def test_append_int_leaves_other_packets_alone(pkt: bytearray) -> None:
    before = bytes(pkt)
    assert append_int(pkt, rate_bps=1, ts_ns=1, tx_bytes=1, qlen_bytes=1) is pkt
    assert bytes(pkt) == before


# -- pfc.py ----------------------------------------------------------------------------------


def test_pfc_frames_are_byte_exact() -> None:
    assert pack_pfc(3, True) == bytes.fromhex("0101" "0008" "0000" "0000" "0000" "ffff"
                                              "0000" "0000" "0000" "0000")
    assert pack_pfc(0, False) == bytes.fromhex("0101" "0001") + bytes(16)
    assert len(pack_pfc(7, True)) == 20


@given(st.integers(0, 7), st.booleans())
def test_pfc_round_trip(priority: int, pause: bool) -> None:
    assert unpack_pfc(pack_pfc(priority, pause)) == [(priority, pause)]


def test_unpack_pfc_lists_every_enabled_priority() -> None:
    frame = struct.pack("!HH8H", 0x0101, 0xFF05, 0xFFFF, 7, 0, 0, 0, 0, 0, 0)
    assert unpack_pfc(frame) == [(0, True), (2, False)]  # reserved high byte ignored


def test_unpack_pfc_rejects_bad_frames() -> None:
    with pytest.raises(ValueError, match="PFC payload is 20 bytes, got 19"):
        unpack_pfc(pack_pfc(1, True)[:19])
    with pytest.raises(ValueError, match="opcode must be 0x0101, got 0x0001"):
        unpack_pfc(b"\x00\x01" + pack_pfc(1, True)[2:])
    with pytest.raises(ValueError, match="priority must be 0..7"):
        pack_pfc(8, True)


def test_pfc_datagrams_to_the_switch_are_local() -> None:
    # the I/O layer reads them from its UDP socket and calls on_pfc; receive() leaves them be
    core = SwitchCore(make_spec(local=frozenset({ip("10.0.1.254")})))
    pkt = make_packet("10.0.1.1", "10.0.1.254", sport=PFC_PORT, dport=PFC_PORT,
                      payload=pack_pfc(3, True), ttl=1)
    assert core.receive(0, 1, pkt) == LOCAL
    assert not core.paused(1, 3)
    core.on_pfc(5, 1, 3, True)
    assert core.paused(1, 3)
    assert not core.paused(1, 1)
    with pytest.raises(ValueError, match="priority must be 0..7"):
        core.on_pfc(5, 1, 8, True)


# -- spec validation -------------------------------------------------------------------------


@pytest.mark.parametrize(("build", "match"), [
    (lambda: make_spec(buffer_mode="bogus"), "unknown buffer_mode 'bogus'; use 'shared'"),
    (lambda: make_spec(xoff_bytes=5000, xon_bytes=6000),
     "xon_bytes 6000 > xoff_bytes 5000; resume must come at or below"),
    (lambda: make_spec(classes=(ROCE, ClassSpec("dup", dscp=26, priority=1))),
     "classes 'roce' and 'dup' both use dscp 26"),
    (lambda: ClassSpec("x", dscp=1, priority=8), "priority 8 is outside 0..7"),
    (lambda: ClassSpec("x", dscp=64, priority=1), "dscp 64 is outside 0..63"),
    (lambda: ClassSpec("x", dscp=1, priority=1, weight=0), "weight 0 must be an integer >= 1"),
    (lambda: RedParams(5000, 1000, 0.1), "kmin_bytes 5000 > kmax_bytes 1000"),
    (lambda: RedParams(1000, 5000, 1.5), r"pmax 1.5 is outside \[0, 1\]"),
    (lambda: make_spec(routes={HOSTS[1]: (1, 9)}),
     "route to 10.0.1.1 uses port 9, but the switch has ports 0..3"),
    (lambda: make_spec(routes={HOSTS[1]: ()}), "route to 10.0.1.1 has no egress port"),
    (lambda: make_spec(buffer_bytes=100_000),
     r"PFC headroom of 112000 bytes \(4 ports x 1 lossless priorities.*leaves no room in "
     r"buffer_bytes \(100000 bytes\)"),
    (lambda: make_spec(classes=(ROCE, ClassSpec("lossy3", dscp=1, priority=3))),
     "classes 'roce' and 'lossy3' share priority 3 but only one is lossless"),
    (lambda: PortSpec("p", 0, 1, 1500), "port 'p': rate_bps must be a positive integer"),
    (lambda: make_spec(classes=()), "has no classes"),
])
def test_spec_validation(build, match: str) -> None:
    with pytest.raises(SwitchError, match=match) as info:
        build()
    assert isinstance(info.value, FabricError)


def test_headroom_too_big_for_a_per_port_slice() -> None:
    with pytest.raises(SwitchError, match="leaves no room in its per-port slice"):
        make_spec(buffer_mode="per_port", buffer_bytes=100_000)
    make_spec(buffer_mode="per_port", buffer_bytes=100_000, pfc=False)  # no headroom needed


# -- headroom and thresholds -----------------------------------------------------------------


def test_headroom_formula_and_derived_thresholds() -> None:
    # 100 Gbit/s x 1 us = 12500 bytes in flight each way
    assert headroom_bytes(PortSpec("a", 100 * GBIT, 1000, 1500)) == 2 * 12500 + 2 * 1500
    # 25 Gbit/s x 333 ns = 1040.6 bytes, rounded up
    assert headroom_bytes(PortSpec("b", 25 * GBIT, 333, 1000)) == 2 * 1041 + 2 * 1000
    assert headroom_bytes(PortSpec("c", 10 * GBIT, 0, 9000)) == 18000

    two_lossless = (ROCE, ClassSpec("roce2", dscp=27, priority=4, lossless=True), BULK)
    spec = make_spec(classes=two_lossless, buffer_bytes=1_000_000)
    reserved = 4 * 2 * 28000
    assert spec.reserved_headroom_bytes() == reserved
    assert spec.pool_bytes() == 1_000_000 - reserved
    xoff = (1_000_000 - reserved) // (4 * 2)
    core = SwitchCore(spec)
    assert core.headroom == (28000,) * 4
    assert core.xoff == (xoff,) * 4
    assert core.xon == (xoff - 3000,) * 4
    port = core.stats(0)["ports"][0]
    assert (port["headroom_bytes"], port["xoff_bytes"], port["xon_bytes"]) == \
        (28000, xoff, xoff - 3000)
    assert core.stats(0)["buffer"]["reserved_headroom_bytes"] == reserved

    tight = make_spec(buffer_bytes=120_000)  # pool 8000: xoff floors at 2 x MTU
    assert tight.xoff_for(0) == 3000
    assert tight.xon_for(0) == 0
    assert make_spec(pfc=False).reserved_headroom_bytes() == 0


# -- verdicts --------------------------------------------------------------------------------


def test_local_ttl_no_route_and_malformed_verdicts() -> None:
    core = SwitchCore(make_spec(local=frozenset({ip("10.0.0.254")})))
    assert core.receive(0, 0, make_packet(dst="10.0.0.254", ttl=1)) == LOCAL
    assert core.receive(0, 0, make_packet(dst=host(1), ttl=1)) == DROP_TTL
    assert core.receive(0, 0, make_packet(dst=host(1), ttl=0)) == DROP_TTL
    assert core.receive(0, 0, make_packet(dst="192.168.0.1")) == DROP_NO_ROUTE
    assert core.receive(0, 2, bytearray(b"\x45\x00")) == DROP_MALFORMED
    assert core.receive(0, 2, bytearray([0x60]) + bytearray(59)) == DROP_MALFORMED
    assert core.receive(0, 2, make_packet(options=b"\0\0\0\0")[:30]) == DROP_MALFORMED
    pkt = make_packet(dst=host(1), ttl=2)
    assert core.receive(0, 0, pkt) == QUEUED
    out = core.dequeue(0, 1)
    assert out is pkt
    assert out[8] == 1
    assert header_ok(out)
    stats = core.stats(0)
    assert stats["drops"] == {DROP_MALFORMED: 3, DROP_TTL: 2, DROP_NO_ROUTE: 1,
                              DROP_BUFFER: 0, DROP_LOSSLESS: 0}
    assert stats["ports"][0]["classes"]["best"]["drops"] == {DROP_TTL: 2, DROP_NO_ROUTE: 1}
    assert stats["ports"][0]["local_packets"] == 1
    assert stats["ports"][2]["malformed"] == 3
    assert stats["ports"][0]["classes"]["best"]["rx_packets"] == 5
    assert stats["ports"][1]["classes"]["best"]["tx_packets"] == 1


def test_unknown_dscp_goes_to_the_first_priority_0_class() -> None:
    core = SwitchCore(make_spec())
    core.receive(0, 0, make_packet(dst=host(1), dscp=33))
    assert core.queue_bytes(1, "best") == 1000
    no_prio0 = SwitchCore(make_spec(classes=(BULK, CNP)))
    no_prio0.receive(0, 0, make_packet(dst=host(1), dscp=33))
    assert no_prio0.queue_bytes(1, "bulk") == 1000


# -- scheduling and serialisation ------------------------------------------------------------


def test_serialisation_times_are_exact() -> None:
    core = SwitchCore(make_spec(rate=3 * GBIT))
    assert core.next_departure(1) is None
    assert core.dequeue(0, 1) is None
    for _ in range(4):
        core.receive(0, 0, make_packet(dst=host(1), size=1000))
    assert core.next_departure(1) == 0
    busy = []
    for _ in range(3):
        core.dequeue(0, 1)  # called early: departures stay back to back
        busy.append(core.next_departure(1))
    # 1000 bytes at 3 Gbit/s = 2666.67 ns; the remainder carries, so no drift
    assert busy == [2666, 5333, 8000]
    core.dequeue(50_000, 1)  # idle gap: starts now
    core.receive(50_000, 0, make_packet(dst=host(1), size=1500))
    assert core.next_departure(1) == 50_000 + 2666
    core.dequeue(60_000, 1)
    assert core.next_departure(1) is None
    core.receive(60_000, 0, make_packet(dst=host(1), size=1500))
    assert core.next_departure(1) == 64_000  # 1500 B at 3 Gbit/s = 4000 ns

    fast = SwitchCore(make_spec(rate=100 * GBIT))
    for _ in range(3):
        fast.receive(0, 0, make_packet(dst=host(2), size=1500))
    fast.dequeue(7, 2)
    fast.dequeue(7, 2)
    assert fast.next_departure(2) == 7 + 2 * 120


def test_strict_priority_before_round_robin() -> None:
    hi = ClassSpec("hi", dscp=48, priority=6, strict=True)
    mid = ClassSpec("mid", dscp=40, priority=5, strict=True)
    a = ClassSpec("a", dscp=10, priority=1, weight=8)
    core = SwitchCore(make_spec(classes=(a, mid, hi)))
    for dscp in (10, 10, 10, 40, 40, 48, 48):
        core.receive(0, 0, make_packet(dst=host(1), dscp=dscp))
    order = [pkt[1] >> 2 for pkt in drain(core, 1)]
    assert order == [48, 48, 40, 40, 10, 10, 10]


def test_wrr_shares_bytes_by_weight() -> None:
    a = ClassSpec("a", dscp=10, priority=1, weight=3)
    b = ClassSpec("b", dscp=12, priority=2, weight=1)
    core = SwitchCore(make_spec(classes=(a, b), pfc=False, buffer_bytes=64 << 20))
    rng = random.Random(7)
    for _ in range(6000):
        core.receive(0, 0, make_packet(dst=host(1), dscp=10, size=rng.randrange(64, 1501)))
        core.receive(0, 0, make_packet(dst=host(1), dscp=12, size=rng.randrange(64, 1501)))
    sent = {10: 0, 12: 0}
    total = 0
    while total < 3_000_000:  # both stay backlogged throughout
        pkt = core.dequeue(0, 1)
        sent[pkt[1] >> 2] += len(pkt)
        total += len(pkt)
    assert sent[10] / sent[12] == pytest.approx(3.0, rel=0.05)


def test_wrr_skips_paused_and_empty_classes() -> None:
    core = SwitchCore(make_spec())
    for dscp in (26, 26, 10, 10):
        core.receive(0, 0, make_packet(dst=host(1), dscp=dscp))
    core.kick_ports()
    core.on_pfc(100, 1, 3, True)  # the neighbour pauses priority 3 (roce)
    assert [p[1] >> 2 for p in drain(core, 1, 100)] == [10, 10]
    assert core.next_departure(1) is None  # roce queued but paused
    assert core.queue_bytes(1, "roce") == 2000
    core.on_pfc(300, 1, 3, False)
    assert 1 in core.kick_ports()
    assert core.next_departure(1) is not None
    assert [p[1] >> 2 for p in drain(core, 1, 300)] == [26, 26]


def test_paused_time_is_accounted_including_ongoing_pauses() -> None:
    core = SwitchCore(make_spec())
    core.on_pfc(100, 1, 3, True)
    core.on_pfc(200, 1, 3, True)  # a refresh: counted, time unaffected
    port = core.stats(600)["ports"][1]
    assert port["paused_ns"] == 500
    assert port["classes"]["roce"]["paused_ns"] == 500
    assert port["pauses_received"] == 2
    core.on_pfc(1000, 1, 3, False)
    core.on_pfc(1100, 1, 3, False)  # a resume while not paused changes nothing
    port = core.stats(5000)["ports"][1]
    assert port["paused_ns"] == 900
    assert port["classes"]["bulk"]["paused_ns"] == 0


def test_kick_ports_names_ports_that_got_work() -> None:
    core = SwitchCore(make_spec())
    assert core.kick_ports() == set()
    core.receive(0, 0, make_packet(dst=host(2)))
    core.receive(0, 0, make_packet(dst=host(3)))
    assert core.kick_ports() == {2, 3}
    assert core.kick_ports() == set()


# -- buffer admission ------------------------------------------------------------------------


def test_shared_buffer_is_one_pool() -> None:
    core = SwitchCore(make_spec(pfc=False, buffer_bytes=8000))
    verdicts = [core.receive(0, 0, make_packet(dst=host(1), size=1000)) for _ in range(9)]
    assert verdicts == [QUEUED] * 8 + [DROP_BUFFER]
    assert core.receive(0, 0, make_packet(dst=host(2), size=1000)) == DROP_BUFFER
    core.dequeue(0, 1)
    assert core.receive(0, 0, make_packet(dst=host(2), size=1000)) == QUEUED
    stats = core.stats(0)
    assert stats["ports"][1]["classes"]["best"]["drops"] == {DROP_BUFFER: 1}
    assert stats["ports"][2]["classes"]["best"]["drops"] == {DROP_BUFFER: 1}


def test_per_port_buffer_is_sliced() -> None:
    core = SwitchCore(make_spec(pfc=False, buffer_bytes=8000, buffer_mode="per_port"))
    verdicts = [core.receive(0, 0, make_packet(dst=host(1), size=1000)) for _ in range(3)]
    assert verdicts == [QUEUED, QUEUED, DROP_BUFFER]
    assert [core.receive(0, 0, make_packet(dst=host(2), size=1000)) for _ in range(3)] == \
        [QUEUED, QUEUED, DROP_BUFFER]
    assert core.stats(0)["buffer"]["partition_bytes"] == 2000


def test_lossy_packets_stop_short_of_the_reserved_headroom() -> None:
    spec = make_spec(buffer_bytes=200_000)  # 4 x 28000 reserved
    pool = spec.pool_bytes()
    assert pool == 200_000 - 112_000
    core = SwitchCore(spec)
    n = 0
    while core.receive(0, 0, make_packet(dst=host(1), size=1000, sport=n)) == QUEUED:
        n += 1
    assert n == pool // 1000
    # lossless packets may still use the headroom (and pause their ingress at once)
    assert core.receive(0, 2, make_packet(dst=host(1), dscp=26, size=1000)) == QUEUED
    assert core.take_pfc() == [(2, 3, True)]
    assert core.stats(0)["buffer"]["headroom_used_bytes"] == 1000


def test_without_pfc_lossless_classes_are_drop_tail() -> None:
    core = SwitchCore(make_spec(pfc=False, buffer_bytes=3000))
    verdicts = [core.receive(0, 0, make_packet(dst=host(1), dscp=26)) for _ in range(4)]
    assert verdicts == [QUEUED] * 3 + [DROP_BUFFER]
    assert core.take_pfc() == []
    assert core.stats(0)["drops"][DROP_LOSSLESS] == 0


# -- RED / ECN -------------------------------------------------------------------------------


RED = RedParams(kmin_bytes=10_000, kmax_bytes=30_000, pmax=0.5)
FILLER = 65000  # the source port of the Not-ECT packets that hold a queue at its level


def red_marks(level: int, probes: int, *, ecn: int = 2) -> tuple[int, list[bytearray]]:
    """Hold the roce queue of port 1 at `level` bytes and send `probes` packets through it."""
    red_class = dataclasses.replace(ROCE, lossless=False, red=RED)
    core = SwitchCore(make_spec(classes=(red_class, BEST)))
    for _ in range(level // 100):
        assert core.receive(0, 0, make_packet(dst=host(1), dscp=26, size=100,
                                              sport=FILLER)) == QUEUED
    out = []
    for i in range(probes):
        assert core.queue_bytes(1, "roce") == level
        core.receive(0, 0, make_packet(dst=host(1), dscp=26, ecn=ecn, size=100, sport=i))
        out.append(core.dequeue(0, 1))  # the head: keeps the queue at `level`
    out += drain(core, 1)
    probes_out = [p for p in out if parse(p)[6] != FILLER]
    return core.stats(0)["ports"][1]["classes"]["roce"]["ecn_marks"], probes_out


def test_red_never_marks_at_or_below_kmin() -> None:
    assert red_marks(5_000, 500)[0] == 0
    assert red_marks(10_000, 500)[0] == 0


def test_red_always_marks_at_or_above_kmax() -> None:
    marks, out = red_marks(30_000, 500)
    assert marks == 500
    assert len(out) == 500
    assert all(p[1] & 3 == 3 and header_ok(p) for p in out)
    assert all(p[1] >> 2 == 26 for p in out)


def test_red_marks_pmax_over_2_at_the_midpoint() -> None:
    marks, out = red_marks(20_000, 4000)
    assert marks / 4000 == pytest.approx(0.25, abs=0.03)
    marked = [p for p in out if p[1] & 3 == 3]
    assert len(marked) == marks
    assert all(header_ok(p) for p in out)
    assert marks == red_marks(20_000, 4000)[0]  # seeded: the same run gives the same marks


def test_red_never_marks_not_ect_packets() -> None:
    marks, out = red_marks(40_000, 300, ecn=0)
    assert marks == 0
    assert all(p[1] & 3 == 0 for p in out)
    marks, out = red_marks(40_000, 300, ecn=3)  # already CE: stays CE, not counted again
    assert marks == 0
    assert all(p[1] & 3 == 3 for p in out)


# -- PFC -------------------------------------------------------------------------------------


def test_pause_at_xoff_once_and_resume_at_xon() -> None:
    core = SwitchCore(make_spec(xoff_bytes=5000, xon_bytes=2000))
    for t in range(4):
        core.receive(t, 0, make_packet(dst=host(1), dscp=26))
    assert core.take_pfc() == []
    assert core.ingress_bytes(0, 3) == 4000
    core.receive(10, 0, make_packet(dst=host(1), dscp=26))
    assert core.take_pfc() == [(0, 3, True)]
    assert core.pausing(0, 3)
    for t in range(11, 14):
        core.receive(t, 0, make_packet(dst=host(1), dscp=26))
    assert core.take_pfc() == []  # already pausing
    core.receive(14, 2, make_packet(dst=host(1), dscp=26))  # another ingress: its own count
    core.receive(15, 0, make_packet(dst=host(1), dscp=10))  # lossy: not counted
    assert core.take_pfc() == []
    assert core.ingress_bytes(0, 3) == 8000
    sent = 0
    while core.ingress_bytes(0, 3) > 3000:
        core.dequeue(100, 1)
        sent += 1
    assert core.take_pfc() == []
    while core.pausing(0, 3):
        core.dequeue(510, 1)
    assert core.ingress_bytes(0, 3) == 2000
    assert core.take_pfc() == [(0, 3, False)]
    stats = core.stats(1000)
    port = stats["ports"][0]
    assert port["pauses_sent"] == 1
    assert stats["pause_log"] == [[10, 0, 3]]  # when, which ingress, which priority
    assert port["pausing_ns"] == 500
    assert port["classes"]["roce"]["pausing_ns"] == 500


def test_pausing_time_includes_an_ongoing_pause() -> None:
    core = SwitchCore(make_spec(xoff_bytes=1000, xon_bytes=0))
    core.receive(100, 0, make_packet(dst=host(1), dscp=26))
    assert core.take_pfc() == [(0, 3, True)]
    assert core.stats(700)["ports"][0]["pausing_ns"] == 600


class Upstream:
    """A sender on the far end of one ingress link: sends back to back at line rate and
    (if it honours PFC) starts no lossless packet while paused; the packet it is sending
    finishes."""

    def __init__(self, port: int, mix: list[int], honour: bool) -> None:
        self.port = port
        self.mix = mix  # DSCPs to cycle through
        self.honour = honour
        self.paused = False
        self.sent = 0
        self.idle = False


def run_incast(*, honour: bool, lossy_background: int = 0, delay: int = 2000,
               duration_ns: int = 3_000_000) -> tuple[SwitchCore, dict[str, int], int]:
    """Three upstreams at 10 Gbit/s into one 10 Gbit/s egress, for `duration_ns`; the first
    `lossy_background` of them alternate lossless and lossy packets.

    Returns the core, the verdict counts and the largest headroom one ingress ever used.
    With `honour`, checks on every arrival that no ingress uses more than its headroom.
    """
    rate, mtu = 10 * GBIT, 1000
    spec = make_spec(classes=(ROCE, BEST), rate=rate, delay=delay, mtu=mtu,
                     buffer_bytes=150_000)
    core = SwitchCore(spec)
    ser = mtu * 8 * GBIT // rate
    upstreams = [Upstream(i, [26, 0] if i < lossy_background else [26], honour)
                 for i in range(3)]
    verdicts: dict[str, int] = {}
    events: list[tuple[int, int, int, str, object]] = []
    seq = 0

    def push(t: int, order: int, kind: str, arg: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, order, seq, kind, arg))

    egress_armed = False
    for u in upstreams:
        push(0, 2, "send", u)
    max_headroom = total_headroom = 0
    while events:
        t, _, _, kind, arg = heapq.heappop(events)
        if t > duration_ns:
            break
        if kind == "pfc":  # (order 0) a pause landing at t stops a send at t
            port, pause = arg
            u = upstreams[port]
            u.paused = pause
            if not pause and u.idle:
                u.idle = False
                push(t, 2, "send", u)
        elif kind == "send":
            u = arg
            dscp = u.mix[u.sent % len(u.mix)]
            if dscp == 26 and u.paused and u.honour:
                if len(u.mix) == 1:
                    u.idle = True
                    continue
                dscp = 0  # lossy traffic is never paused
            pkt = make_packet(host(4 + u.port), host(3), dscp=dscp, ecn=2, size=mtu,
                              sport=u.sent)
            u.sent += 1
            push(t + ser + delay, 1, "arrive", (u.port, pkt))
            push(t + ser, 2, "send", u)
        elif kind == "arrive":
            port, pkt = arg
            v = core.receive(t, port, pkt)
            verdicts[v] = verdicts.get(v, 0) + 1
        elif kind == "egress":
            egress_armed = False
            due = core.next_departure(3)
            if due is not None and due <= t:
                core.dequeue(t, 3)
        for port, _prio, pause in core.take_pfc():
            push(t + delay, 0, "pfc", (port, pause))  # sent at once, one link delay away
        if kind == "arrive":
            used = [core.headroom_used_bytes(port, 3) for port in range(3)]
            if honour:  # the per-ingress bound the lossless guarantee rests on
                assert all(u <= core.headroom[p] for p, u in enumerate(used))
            max_headroom = max(max_headroom, *used)
            total_headroom = max(total_headroom, sum(used))
        kicked = core.kick_ports() | ({3} if kind == "egress" else set())
        if 3 in kicked and not egress_armed:
            due = core.next_departure(3)
            if due is not None:
                egress_armed = True
                push(max(t, due), 3, "egress", None)
    assert total_headroom <= core.reserved_bytes or not honour
    return core, verdicts, max_headroom


def test_lossless_is_never_dropped_when_the_upstream_honours_pauses() -> None:
    core, verdicts, max_headroom = run_incast(honour=True)
    stats = core.stats(3_000_000)
    assert verdicts.get(DROP_LOSSLESS, 0) == 0
    assert sum(p["pauses_sent"] for p in stats["ports"]) > 3
    assert verdicts[QUEUED] > 3000
    assert stats["ports"][3]["classes"]["roce"]["tx_bytes"] > 0.95 * 3_000_000 * 10 / 8


@pytest.mark.parametrize(("lossy", "delay"), [(1, 2000), (3, 2000), (3, 10_000), (2, 10_000)])
def test_lossless_survives_lossy_traffic_filling_the_pool(lossy: int, delay: int) -> None:
    core, verdicts, max_headroom = run_incast(honour=True, lossy_background=lossy, delay=delay)
    assert verdicts.get(DROP_LOSSLESS, 0) == 0
    assert verdicts.get(DROP_BUFFER, 0) > 0  # the lossy class took the losses
    assert max_headroom > 0  # pauses came from the full pool, and headroom absorbed the rest
    stats = core.stats(3_000_000)
    assert stats["buffer"]["max_partition_used_bytes"] <= 150_000


def test_lossless_drops_are_counted_when_the_upstream_ignores_pauses() -> None:
    core, verdicts, _ = run_incast(honour=False)
    assert verdicts.get(DROP_LOSSLESS, 0) > 0
    assert verdicts.get(DROP_BUFFER, 0) == 0
    stats = core.stats(3_000_000)
    assert stats["drops"][DROP_LOSSLESS] == verdicts[DROP_LOSSLESS]
    assert stats["ports"][3]["classes"]["roce"]["drops"] == {DROP_LOSSLESS:
                                                             verdicts[DROP_LOSSLESS]}


# -- ECMP ------------------------------------------------------------------------------------


def ecmp_spec(seed: int = 0) -> SwitchSpec:
    return make_spec(routes={HOSTS[5]: (2, 1)}, ecmp_seed=seed)


def test_ecmp_is_stable_per_flow_and_spreads_flows() -> None:
    core = SwitchCore(ecmp_spec())
    rng = random.Random(1)
    flows = [(rng.getrandbits(32), rng.randrange(1024, 65536)) for _ in range(1000)]
    picks = [core.ecmp_port(src, HOSTS[5], UDP, sport, 4791) for src, sport in flows]
    assert set(picks) == {1, 2}
    assert 450 <= picks.count(1) <= 550
    # the same 5-tuple always takes the same port, in a fresh core too (no hidden state)
    fresh = SwitchCore(ecmp_spec())
    assert picks == [fresh.ecmp_port(src, HOSTS[5], UDP, sport, 4791) for src, sport in flows]
    # and receive() follows it: the UDP source port (RoCE's entropy) moves the flow
    for i, (src, sport) in enumerate(flows[:50]):
        pkt = make_packet(str(ipaddress.IPv4Address(src)), host(5), sport=sport, size=100)
        before = [core.queue_bytes(p) for p in (1, 2)]
        core.receive(i, 0, pkt)
        grew = [p for p, b in zip((1, 2), before, strict=True) if core.queue_bytes(p) > b]
        assert grew == [picks[i]]


def test_ecmp_spreads_sequential_source_ports() -> None:
    core = SwitchCore(ecmp_spec())
    picks = [core.ecmp_port(HOSTS[0], HOSTS[5], UDP, 49152 + i, 4791) for i in range(1000)]
    assert 450 <= picks.count(1) <= 550


def test_ecmp_seeds_make_independent_choices() -> None:
    # two tiers with different seeds must not split flows the same way (polarisation)
    a, b = SwitchCore(ecmp_spec(0)), SwitchCore(ecmp_spec(12345))
    agree = sum(a.ecmp_port(HOSTS[0], HOSTS[5], UDP, s, 4791) ==
                b.ecmp_port(HOSTS[0], HOSTS[5], UDP, s, 4791) for s in range(2000))
    assert 0.4 < agree / 2000 < 0.6


# -- INT -------------------------------------------------------------------------------------


def test_int_records_are_appended_on_dequeue() -> None:
    core = SwitchCore(make_spec(int_enabled=True, rate=25 * GBIT))
    first = make_packet(dst=host(1), dscp=26, payload=roce_payload(972))
    second = make_packet(dst=host(1), dscp=26, payload=roce_payload(472))
    plain = make_packet(dst=host(1), dscp=26, size=300)
    for pkt in (first, second, plain):
        core.receive(0, 0, pkt)
    a = core.dequeue(1000, 1)
    b = core.dequeue(1000, 1)
    c = core.dequeue(1000, 1)
    assert len(a) == len(first) + RECORD_SIZE
    assert len(b) == len(second) + RECORD_SIZE
    assert c is plain
    assert len(c) == 300
    (ra,) = records_of(trailer_of(a[28:]))
    (rb,) = records_of(trailer_of(b[28:]))
    assert (ra.line_rate_bps, ra.ts_ns, ra.tx_bytes, ra.qlen_bytes) == \
        (25 * GBIT, 1000, 0, len(second) + len(plain))
    # the second starts when the first has left; tx counts the first as sent (with its record)
    assert (rb.ts_ns, rb.tx_bytes, rb.qlen_bytes) == \
        (1000 + len(a) * 8 * GBIT // (25 * GBIT), len(a), len(plain))
    for pkt in (a, b):
        assert header_ok(pkt)
        assert parse(pkt) is not None
        assert struct.unpack_from("!HH", pkt, 24) == (len(pkt) - 20, 0)
    port = core.stats(1000)["ports"][1]
    assert port["tx_bytes"] == len(a) + len(b) + len(c)
    assert core.used_bytes == 0


def test_int_disabled_leaves_packets_alone() -> None:
    core = SwitchCore(make_spec())
    pkt = make_packet(dst=host(1), dscp=26, payload=roce_payload(100))
    core.receive(0, 0, pkt)
    assert len(core.dequeue(0, 1)) == 20 + 8 + len(roce_payload(100))


# -- samples and stats -----------------------------------------------------------------------


def test_samples_decimate_and_span_the_run() -> None:
    core = SwitchCore(make_spec(sample_interval_ns=10, pfc=False))
    end = 0
    for i in range(100_000):
        end = i * 5
        core.receive(end, 0, make_packet(dst=host(1), size=100, sport=i & 0xFFFF))
        if i % 2:
            core.dequeue(end, 1)
    samples = core.samples
    assert MAX_SAMPLES // 2 <= len(samples) <= MAX_SAMPLES
    times = [t for t, _ in samples]
    assert times[0] == 0
    assert times == sorted(times)
    assert times[-1] >= end - 2 * core.stats(end)["sample_interval_ns"]
    assert core.stats(end)["sample_interval_ns"] > 10
    assert all(len(q) == 4 for _, q in samples)
    assert samples[-1][1][1] > samples[1][1][1]  # the queue of port 1 grew over the run


def test_stats_are_json_and_the_mean_queue_is_time_weighted() -> None:
    core = SwitchCore(make_spec())
    core.receive(0, 0, make_packet(dst=host(1), size=1000))
    core.dequeue(1000, 1)
    core.receive(1000, 0, make_packet(dst=host(2), size=400))
    stats = core.stats(2000)
    json.dumps(stats)
    p1, p2 = stats["ports"][1], stats["ports"][2]
    assert p1["mean_queue_bytes"] == pytest.approx(500)  # 1000 bytes for half the time
    assert p2["mean_queue_bytes"] == pytest.approx(200)
    assert p1["max_queue_bytes"] == 1000
    assert p1["classes"]["best"]["max_queue_bytes"] == 1000
    assert {"name", "peer", "rate_bps", "headroom_bytes", "xoff_bytes", "xon_bytes", "classes",
            "max_queue_bytes", "mean_queue_bytes", "paused_ns", "pausing_ns", "pauses_sent",
            "pauses_received"} <= set(p1)
    assert set(p1["classes"]) == {"roce", "bulk", "cnp", "best"}
    assert p1["peer"] == "n1"
    assert stats["name"] == "sw"
    assert stats["buffer"]["used_bytes"] == 400


# -- invariants under random traffic ---------------------------------------------------------


ops = st.lists(st.one_of(
    st.tuples(st.just("rx"), st.integers(0, 3), st.sampled_from([26, 10, 48, 0]),
              st.integers(64, 1500), st.integers(0, 7)),
    st.tuples(st.just("tx"), st.integers(0, 3)),
    st.tuples(st.just("pfc"), st.integers(0, 3), st.sampled_from([1, 3]), st.booleans()),
), max_size=150)


@settings(max_examples=150, deadline=None)
@given(ops, st.sampled_from(["shared", "per_port"]), st.booleans())
def test_buffer_and_pfc_invariants(script, mode: str, pfc: bool) -> None:
    spec = make_spec(buffer_bytes=200_000, buffer_mode=mode, pfc=pfc, xoff_bytes=3000,
                     xon_bytes=1000, mtu=1500, delay=100, rate=10 * GBIT,
                     routes={HOSTS[i]: (i,) for i in range(4)} | {HOSTS[7]: (1, 2, 3)})
    core = SwitchCore(spec)
    cap = spec.partition_bytes()
    queued = 0
    frames: dict[tuple[int, int], list[bool]] = {}
    t = 0
    for op in script:
        t += 50
        if op[0] == "rx":
            _, port, dscp, size, dst = op
            dst_host = host(7) if dst >= 4 else host(dst)
            v = core.receive(t, port, make_packet(dst=dst_host, dscp=dscp, size=size,
                                                  sport=size))
            queued += v == QUEUED
        elif op[0] == "tx":
            pkt = core.dequeue(t, op[1])
            if pkt is not None:
                assert header_ok(pkt)
        else:
            core.on_pfc(t, op[1], op[2], op[3])
        for port, prio, pause in core.take_pfc():
            frames.setdefault((port, prio), []).append(pause)
        qs = [core.queue_bytes(p) for p in range(4)]
        assert sum(qs) == core.used_bytes
        if mode == "shared":
            assert core.used_bytes <= cap
        else:
            assert all(q <= cap for q in qs)
        assert all(core.ingress_bytes(p, 3) >= 0 for p in range(4))
    for port in range(4):  # lift every pause on our egress and drain
        for prio in range(8):
            core.on_pfc(t, port, prio, False)
        drain(core, port, t)
    for port, prio, pause in core.take_pfc():
        frames.setdefault((port, prio), []).append(pause)
    stats = core.stats(t)
    assert core.used_bytes == 0
    assert stats["buffer"]["headroom_used_bytes"] == 0
    assert all(not core.pausing(p, 3) and core.ingress_bytes(p, 3) == 0 for p in range(4))
    for seq in frames.values():  # pauses and resumes alternate, and all were lifted
        assert seq == [True, False] * (len(seq) // 2)
    assert queued == sum(c["tx_packets"] for p in stats["ports"] for c in p["classes"].values())
    if not pfc:
        assert not frames
        assert stats["drops"][DROP_LOSSLESS] == 0


@pytest.mark.parametrize("used", ["all", "some", "one", "none"])
def test_stats_export_the_samples_and_only_the_used_class_columns(used: str) -> None:
    """`stats` hands out the sampled lists without copying them and picks the class columns
    that ever held a byte (three ways, by how many): the same rows as picking one by one."""
    rng = random.Random(used)
    core = SwitchCore(make_spec(8))
    n, m = len(core._port_q), len(core._qbytes)
    for t in range(40):
        core.samples.append((t, [rng.randrange(9) for _ in range(n)]))
        core.class_samples.append((t, [rng.randrange(9) for _ in range(m)]))
    core._max_qbytes = {"all": [1] * m, "some": [rng.choice((0, 1)) for _ in range(m)],
                        "one": [0] * (m - 1) + [1], "none": [0] * m}[used]
    cols = [ix for ix, peak in enumerate(core._max_qbytes) if peak]
    assert len(cols) == {"all": m, "one": 1, "none": 0}.get(used, len(cols))
    assert used != "some" or 1 < len(cols) < m
    stats = json.loads(json.dumps(core.stats(100)))
    assert stats["samples"] == [[t, q] for t, q in core.samples]
    assert stats["class_samples"]["rows"] == [[t, [q[ix] for ix in cols]]
                                              for t, q in core.class_samples]
    assert len(stats["class_samples"]["columns"]) == len(cols)
