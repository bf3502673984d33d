"""Write RoCEv2 packets to a pcap file that Wireshark/tshark open and dissect.

Each UDP payload (BTH .. ICRC, as `fabric.roce.wire` builds it) is wrapped in an Ethernet II /
IPv4 / UDP frame (destination port 4791 by default, which Wireshark decodes as RoCEv2) and
written as one record of a classic pcap file with nanosecond timestamps (magic 0xa1b23c4d,
link type 1 = Ethernet). Since the whole frame is known here, the ICRC (zero on the live path,
see `fabric.roce.wire`) is filled in by default, so Wireshark shows consistent packets.

    with open("qp.pcap", "wb") as f:
        pcap = PcapWriter(f)
        pcap.write(t_ns, ethernet_frame(udp_payload, src_ip="10.0.0.1", dst_ip="10.0.0.2"))

or `write_pcap(path, [(t_ns, udp_payload), ...])` for a list of payloads on one flow.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import BinaryIO, Final

from fabric.roce.wire import ICRC_SIZE, ROCE_PORT, icrc
from fabric.wire.ip import checksum

__all__ = ["LINKTYPE_ETHERNET", "PcapWriter", "ethernet_frame", "write_pcap"]

LINKTYPE_ETHERNET: Final = 1
_MAGIC_NS = 0xA1B23C4D  # classic pcap, nanosecond timestamps
_GLOBAL = struct.Struct("<IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
_RECORD = struct.Struct("<IIII")  # ts_sec, ts_nsec, incl_len, orig_len
_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_ETHERTYPE_IPV4 = 0x0800
_PROTO_UDP = 17


def _mac(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"MAC address {mac!r} is not 6 bytes")
    return raw


def ethernet_frame(udp_payload: bytes | bytearray | memoryview, *, src_ip: str = "10.0.0.1",
                   dst_ip: str = "10.0.0.2", src_port: int = 49152, dst_port: int = ROCE_PORT,
                   tos: int = 0, ttl: int = 64, ident: int = 0,
                   src_mac: str = "02:00:00:00:00:01", dst_mac: str = "02:00:00:00:00:02",
                   fill_icrc: bool = True) -> bytes:
    """One Ethernet II / IPv4 (DF set, valid checksum) / UDP (checksum 0, as RoCEv2 senders
    send it) frame around `udp_payload`; with `fill_icrc` its last 4 bytes become the ICRC."""
    payload = bytes(udp_payload)
    udp_len = 8 + len(payload)
    total = 20 + udp_len
    if total > 0xFFFF:
        raise ValueError(f"UDP payload of {len(payload)} bytes does not fit one IPv4 packet")
    src = ipaddress.IPv4Address(src_ip).packed
    dst = ipaddress.IPv4Address(dst_ip).packed
    ip = _IPV4.pack(0x45, tos, total, ident, 0x4000, ttl, _PROTO_UDP, 0, src, dst)
    ip = ip[:10] + checksum(ip).to_bytes(2, "big") + ip[12:]
    udp = _UDP.pack(src_port, dst_port, udp_len, 0)
    if fill_icrc and len(payload) >= 16:
        payload = payload[:-ICRC_SIZE] + icrc(ip, udp, payload)
    return _ETH.pack(_mac(dst_mac), _mac(src_mac), _ETHERTYPE_IPV4) + ip + udp + payload


class PcapWriter:
    """Appends frames to a binary file as a nanosecond-resolution pcap (header written first)."""

    def __init__(self, file: BinaryIO, *, snaplen: int = 65535,
                 linktype: int = LINKTYPE_ETHERNET) -> None:
        self.file = file
        self.snaplen = snaplen
        file.write(_GLOBAL.pack(_MAGIC_NS, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts_ns: int, frame: bytes | bytearray | memoryview) -> None:
        """One record captured at `ts_ns` (ns since the epoch, or any origin: tools show it)."""
        if ts_ns < 0:
            raise ValueError(f"pcap timestamp must be >= 0 ns, got {ts_ns}")
        data = bytes(frame)
        incl = data[: self.snaplen]
        sec, nsec = divmod(ts_ns, 1_000_000_000)
        self.file.write(_RECORD.pack(sec, nsec, len(incl), len(data)))
        self.file.write(incl)


def write_pcap(path: str, packets: Iterable[tuple[int, bytes | bytearray | memoryview]],
               **frame_options: object) -> int:
    """Write `(ts_ns, udp_payload)` pairs of one flow to `path`, each wrapped by
    `ethernet_frame(payload, **frame_options)`; returns the number of records written."""
    count = 0
    with open(path, "wb") as f:
        writer = PcapWriter(f)
        for ts_ns, payload in packets:
            writer.write(ts_ns, ethernet_frame(payload, **frame_options))  # type: ignore[arg-type]
            count += 1
    return count
