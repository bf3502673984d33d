"""RoCEv2 wire format: byte-exact headers, parse round trips, PSN wrap, padding, ICRC, pcap."""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest

from fabric.roce import wire
from fabric.roce.inttrailer import INT_FLAG, RECORD_SIZE, append_record, records_of
from fabric.roce.pcap import PcapWriter, ethernet_frame, write_pcap
from fabric.wire.ip import checksum

# A CNP captured on a ConnectX-4 Lx (the scapy RoCE test suite's sample), Ethernet onwards.
HW_CNP_FRAME = bytes.fromhex(
    "e41d2dab2bc27cfe90643b32080045c2003c718c400040119161"
    "0a0011010a0012010000" "12b700280000" "8100ffff40000118000000000000000000000000000000000000"
    "000082fd002a")


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# -- byte-exact headers -------------------------------------------------------------------------


def test_bth_layout_of_a_middle_packet() -> None:
    got = wire.header_bytes(wire.RDMA_WRITE_MIDDLE, 0x123456, 0xABCDEF, 1024, ack_req=True)
    #                opcode flags pkey  resv destqp  A|resv psn
    assert got == h("07     00    ffff  00   123456  80     abcdef")


def test_bth_pad_count_fecn_becn_and_int_flag() -> None:
    got = wire.header_bytes(wire.RDMA_WRITE_LAST, 1, 2, 1021, fecn=True, becn=True,
                            int_flag=True)
    assert got == h("08 30 ffff c1 000001 00 000002")  # PadCnt 3 in bits 5:4, FECN|BECN|INT


def test_bth_and_reth_of_a_first_packet() -> None:
    reth = wire.Reth(0x0102030405060708, 0xDEADBEEF, 4096)
    got = wire.header_bytes(wire.RDMA_WRITE_FIRST, 0xD2, 7, 1024, reth=reth)
    assert got == h("06 00 ffff 00 0000d2 00 000007" "0102030405060708 deadbeef 00001000")
    assert len(got) == wire.BTH_SIZE + wire.RETH_SIZE


def test_ack_and_nak_layout() -> None:
    assert wire.ack_packet(0x11, 5, 7) == h("11 00 ffff 00 000011 00 000005" "1f 000007"
                                             "00000000")
    assert wire.ack_packet(0x11, 5, 7, nak=True, becn=True) == h(
        "11 00 ffff 40 000011 00 000005" "60 000007" "00000000")


def test_ack_with_int_trailer_sets_the_flag_and_carries_it() -> None:
    trailer = bytes(RECORD_SIZE) + b"\x01"
    pkt = wire.ack_packet(3, 9, 1, int_trailer=trailer)
    assert pkt[4] == INT_FLAG
    assert pkt[16:-4] == trailer
    assert wire.parse(pkt).int_trailer == trailer


def test_cnp_matches_a_hardware_cnp_byte_for_byte() -> None:
    hw_payload = HW_CNP_FRAME[42:]
    assert wire.cnp_packet(0x118) == hw_payload[:-4] + b"\x00" * 4
    assert len(wire.cnp_packet(0x118)) == wire.CNP_SIZE == 32
    assert wire.cnp_packet(0x118)[:12] == h("81 00 ffff 40 000118 00 000000")  # BECN set


def test_tail_bytes_pad_trailer_icrc() -> None:
    assert wire.tail_bytes(0) == b"\x00" * 4
    assert wire.tail_bytes(3) == b"\x00" * 7
    assert wire.tail_bytes(2, wire.INT_EMPTY) == b"\x00\x00" + b"\x00" + b"\x00" * 4


def test_header_bytes_rejects_missing_or_extra_reth() -> None:
    with pytest.raises(ValueError, match="needs RETH"):
        wire.header_bytes(wire.RDMA_WRITE_ONLY, 1, 0, 10)
    with pytest.raises(ValueError, match="takes no RETH"):
        wire.header_bytes(wire.RDMA_WRITE_MIDDLE, 1, 0, 10, reth=(0, 0, 10))
    with pytest.raises(ValueError, match="not an RDMA WRITE"):
        wire.header_bytes(wire.ACKNOWLEDGE, 1, 0, 10)
    with pytest.raises(ValueError, match="24 bits"):
        wire.header_bytes(wire.RDMA_WRITE_MIDDLE, 1 << 24, 0, 10)


# -- ICRC ---------------------------------------------------------------------------------------


def test_icrc_matches_hardware_cnp() -> None:
    ip, udp, payload = HW_CNP_FRAME[14:34], HW_CNP_FRAME[34:42], HW_CNP_FRAME[42:]
    assert wire.icrc(ip, udp, payload) == h("82fd002a")


def test_icrc_matches_reference_uc_send_packet() -> None:
    # scapy's RoCE regression packet (UC SEND ONLY, MigReq, PadCnt 2): ICRC 0x78f353f3
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 1, 64, 1144, 0x4000, 64, 17, 0xB4D5,
                     bytes([192, 168, 0, 7]), bytes([192, 168, 0, 7]))
    udp = struct.pack("!HHHH", 49152, 4791, 44, 0xACA2)
    bth = struct.pack("!BBHII", 0x24, 0x60, 0xFFFF, 211, 13571856)
    payload = bth + b"F0\x81\x8b\xe2\x895\xd9\x0e\x9a\x95PT\x01\xbe\x88^P\x00\x00" + bytes(4)
    assert wire.icrc(ip, udp, payload) == h("78f353f3")


def test_icrc_ignores_the_masked_fields() -> None:
    ip, udp, payload = HW_CNP_FRAME[14:34], HW_CNP_FRAME[34:42], HW_CNP_FRAME[42:]
    ip2 = bytearray(ip)
    ip2[1], ip2[8], ip2[10:12] = 0, 3, b"\x12\x34"  # TOS (ECN!), TTL, checksum
    bth2 = bytearray(payload)
    bth2[4] = 0x81  # FECN + INT flag
    assert wire.icrc(bytes(ip2), udp[:6] + b"\xab\xcd", bytes(bth2)) == h("82fd002a")
    ip2[4] = 0  # the IP identification is covered
    assert wire.icrc(bytes(ip2), udp, payload) != h("82fd002a")


# -- parse --------------------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", sorted(wire.DATA_OPCODES))
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 1021, 1024])
def test_data_packet_round_trip(opcode: int, n: int) -> None:
    payload = bytes((i * 7) & 0xFF for i in range(n))
    reth = wire.Reth(0xFFEE_0000_1234, 0x55, 5000) if opcode in wire.RETH_OPCODES else None
    pieces = wire.data_packet(opcode, 0xABCDE, (1 << 24) + 77, payload, ack_req=n % 2 == 1,
                              reth=reth, becn=n == 3)
    datagram = b"".join(pieces)
    assert len(datagram) % 4 == 0
    assert len(datagram) == wire.wire_size(opcode, n) - 28
    p = wire.parse(datagram)
    assert (p.opcode, p.dest_qp, p.psn, p.ack_req) == (opcode, 0xABCDE, 77, n % 2 == 1)
    assert (p.fecn, p.becn, p.pad, p.aeth, p.int_trailer) == (False, n == 3, -n & 3, None, b"")
    assert p.reth == reth
    assert datagram[p.payload_start:p.payload_end] == payload
    assert p.payload_len == n


def test_data_packet_keeps_a_numpy_payload_uncopied() -> None:
    buf = np.arange(4096, dtype=np.uint8)
    view = memoryview(buf.data)[1000:2024]
    pieces = wire.data_packet(wire.RDMA_WRITE_MIDDLE, 1, 2, view)
    assert isinstance(pieces[1], memoryview)
    assert np.shares_memory(np.asarray(pieces[1]), buf)
    p = wire.parse(b"".join(pieces))
    assert b"".join(pieces)[p.payload_start:p.payload_end] == bytes(buf[1000:2024])


def test_int_trailer_survives_switch_hops_and_parse() -> None:
    payload = b"kv" * 301  # 602 bytes: pad 2
    pkt = b"".join(wire.data_packet(wire.RDMA_WRITE_ONLY, 9, 4, payload, ack_req=True,
                                    reth=(0, 1, 602), int_trailer=wire.INT_EMPTY))
    assert wire.carries_int_for_switch(pkt)
    for hop in range(3):
        pkt = append_record(pkt, rate_bps=100_000_000_000, ts_ns=1000 + hop, tx_bytes=hop,
                            qlen_bytes=hop * 100)
    p = wire.parse(pkt)
    assert pkt[p.payload_start:p.payload_end] == payload
    assert p.pad == 2
    records = records_of(p.int_trailer)
    assert [r.ts_ns for r in records] == [1000, 1001, 1002]
    assert [r.qlen_bytes for r in records] == [0, 100, 200]
    ack = wire.ack_packet(9, 4, 1, int_trailer=p.int_trailer)
    assert not wire.carries_int_for_switch(ack)
    assert wire.parse(ack).int_trailer == p.int_trailer


def test_parse_ack_and_cnp() -> None:
    p = wire.parse(wire.ack_packet(0x42, 0xFFFFFF, 0x123456, nak=True, becn=True))
    assert (p.opcode, p.dest_qp, p.psn, p.becn) == (wire.ACKNOWLEDGE, 0x42, 0xFFFFFF, True)
    assert p.aeth == wire.Aeth(wire.NAK_PSN_SEQUENCE_ERROR, 0x123456)
    assert wire.is_nak(p.aeth)
    assert not wire.is_nak(wire.Aeth(wire.ACK_SYNDROME, 0))
    c = wire.parse(wire.cnp_packet(0x77))
    assert (c.opcode, c.dest_qp, c.becn, c.fecn, c.psn) == (wire.CNP, 0x77, True, False, 0)


def test_psn_wraps_to_24_bits() -> None:
    for absolute in (0xFFFFFF, 1 << 24, (1 << 24) + 1, 5 * (1 << 24) + 3):
        pkt = wire.header_bytes(wire.RDMA_WRITE_MIDDLE, 1, absolute, 4) + bytes(8)
        assert wire.parse(pkt).psn == absolute & 0xFFFFFF
    assert wire.parse(wire.ack_packet(1, (1 << 24) + 9, 0)).psn == 9


@pytest.mark.parametrize(("data", "message"), [
    (b"\x06" * 10, "shorter than BTH"),
    (h("07 01 ffff 00 000001 00 000001") + bytes(4), "transport version"),
    (h("04 00 ffff 00 000001 00 000001") + bytes(4), "not RDMA WRITE"),
    (h("06 00 ffff 00 000001 00 000001") + bytes(8), "too short for its RETH"),
    (h("07 30 ffff 00 000001 00 000001") + bytes(2 + 4), "pad count 3 exceeds"),
    (h("11 00 ffff 00 000001 00 000001") + bytes(4), "exactly BTH \\+ AETH"),
    (h("11 00 ffff 00 000001 00 000001") + bytes(12), "exactly BTH \\+ AETH"),
    (h("81 00 ffff 40 000001 00 000000") + bytes(8), "a CNP is 32"),
    (h("07 00 ffff 01 000001 00 000001") + b"\x05" + bytes(4), "INT trailer longer"),
])
def test_parse_rejects_garbage(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wire.parse(data)


# -- sizes --------------------------------------------------------------------------------------


def test_wire_size_counts_every_header() -> None:
    assert wire.PACKET_OVERHEAD == 20 + 8 + 12 + 4
    assert wire.wire_size(wire.RDMA_WRITE_MIDDLE, 1024) == 1068
    assert wire.wire_size(wire.RDMA_WRITE_FIRST, 1024) == 1084
    assert wire.wire_size(wire.RDMA_WRITE_LAST, 1021, int_len=1) == 44 + 1024 + 1
    assert wire.wire_size(wire.ACKNOWLEDGE, 0) == 48
    assert wire.wire_size(wire.CNP, 0) == 60 == 28 + wire.CNP_SIZE


@pytest.mark.parametrize(("mtu", "hops", "expected"), [
    (1500, None, 1024), (9000, None, 4096), (4156, None, 4096), (4155, None, 2048),
    (1500, 8, 1024), (1280, 8, 512), (4200, 8, 2048), (316, None, 256), (1085, 0, 1024),
    (1084, 0, 512),
])
def test_payload_mtu_is_a_roce_path_mtu(mtu: int, hops: int | None, expected: int) -> None:
    assert wire.payload_mtu(mtu, int_hops=hops) == expected
    assert wire.payload_mtu(mtu, int_hops=hops) in wire.PATH_MTUS


def test_payload_mtu_too_small() -> None:
    with pytest.raises(ValueError, match="IP MTU of at least 316"):
        wire.payload_mtu(315)
    with pytest.raises(ValueError, match="int_hops must be 0..8"):
        wire.payload_mtu(1500, int_hops=9)


def test_pad_len() -> None:
    assert [wire.pad_len(n) for n in range(6)] == [0, 3, 2, 1, 0, 3]


# -- pcap ---------------------------------------------------------------------------------------


def _roce_packets() -> list[tuple[int, bytes]]:
    reth = wire.Reth(0x7F00_0000_0000, 0x1234, 2000)
    first = b"".join(wire.data_packet(wire.RDMA_WRITE_FIRST, 0x11, 100, bytes(1024),
                                      reth=reth))
    last = b"".join(wire.data_packet(wire.RDMA_WRITE_LAST, 0x11, 101, bytes(976),
                                     ack_req=True))
    return [(1_000, first), (2_500, last), (9_000, wire.ack_packet(0x22, 101, 1)),
            (9_100, wire.cnp_packet(0x22))]


def test_ethernet_frame_is_valid_ipv4_udp_with_icrc(tmp_path) -> None:
    payload = wire.ack_packet(0x22, 101, 1)
    frame = ethernet_frame(payload, src_ip="10.0.0.1", dst_ip="10.0.0.2", ident=7, tos=2)
    assert frame[12:14] == b"\x08\x00"
    ip, udp = frame[14:34], frame[34:42]
    assert checksum(ip) == 0  # a valid header sums to ones
    assert struct.unpack("!HHHH", udp) == (49152, 4791, 8 + len(payload), 0)
    assert frame[42:-4] == payload[:-4]
    assert frame[-4:] == wire.icrc(ip, udp, payload) != b"\x00" * 4
    assert ethernet_frame(payload, fill_icrc=False)[-4:] == b"\x00" * 4


def test_write_pcap_layout(tmp_path) -> None:
    path = tmp_path / "qp.pcap"
    assert write_pcap(str(path), _roce_packets()) == 4
    data = path.read_bytes()
    magic, major, minor, _zone, _sig, snaplen, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, major, minor, snaplen, linktype) == (0xA1B23C4D, 2, 4, 65535, 1)
    off, stamps = 24, []
    while off < len(data):
        sec, nsec, incl, orig = struct.unpack_from("<IIII", data, off)
        assert incl == orig
        stamps.append(sec * 1_000_000_000 + nsec)
        off += 16 + incl
    assert off == len(data)
    assert stamps == [1_000, 2_500, 9_000, 9_100]


def test_pcap_writer_rejects_negative_time(tmp_path) -> None:
    with open(tmp_path / "x.pcap", "wb") as f:
        writer = PcapWriter(f)
        with pytest.raises(ValueError, match=">= 0 ns"):
            writer.write(-1, b"")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_dissects_our_packets_as_roce(tmp_path) -> None:
    path = tmp_path / "qp.pcap"
    write_pcap(str(path), _roce_packets())
    out = subprocess.run(["tshark", "-r", str(path), "-V"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "InfiniBand" in out
    assert "RDMA Extended Transport Header" in out or "RETH" in out
    assert "ACK Extended Transport Header" in out or "AETH" in out
