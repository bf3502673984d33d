"""IPv4 helpers on raw packets (a `bytearray` starting at the IPv4 header, no L2 header).

These sit on the switch's per-packet path, so they avoid objects: `parse` returns a plain tuple,
the in-place edit `decrement_ttl` patches the header checksum incrementally (RFC 1624, eqn. 3)
instead of recomputing it, and nothing here raises on a bad packet. The ECN field, CE marking
and the checksum itself are `fabric.wire.ip`'s, shared with the link engine.
"""

from __future__ import annotations

import struct
from typing import Final

from fabric.roce.inttrailer import INT_FLAG, append_record
from fabric.wire.ip import patch_checksum

__all__ = [
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "ROCE_PORT",
    "append_int",
    "decrement_ttl",
    "parse",
]

IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
ROCE_PORT: Final = 4791

# version/IHL, TOS, total length, id, flags/fragment offset, TTL, protocol, checksum, src, dst
_IPV4 = struct.Struct("!BBHHHBBHII")
_PORTS = struct.Struct("!HH")
_U16 = struct.Struct("!H")
UDP_HEADER: Final = 8


def parse(pkt: bytes | bytearray | memoryview
          ) -> tuple[int, int, int, int, int, int, int, int, int, int] | None:
    """`(dscp, ecn, ttl, proto, src, dst, sport, dport, ihl_bytes, total_len)` of an IPv4 packet.

    None when the packet is not IPv4 or is malformed: shorter than 20 bytes, IHL below 5, or a
    total length shorter than the header or longer than the buffer. `sport`/`dport` are 0 for
    protocols other than TCP and UDP, for non-first fragments (they carry no ports) and when the
    ports are cut off.
    """
    if len(pkt) < 20:
        return None
    vihl, tos, total, _, frag, ttl, proto, _, src, dst = _IPV4.unpack_from(pkt)
    ihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or ihl < 20 or total < ihl or total > len(pkt):
        return None
    if (proto == 17 or proto == 6) and not frag & 0x1FFF and total >= ihl + 4:
        sport, dport = _PORTS.unpack_from(pkt, ihl)
    else:
        sport = dport = 0
    return tos >> 2, tos & 3, ttl, proto, src, dst, sport, dport, ihl, total


def decrement_ttl(pkt: bytearray) -> None:
    """TTL - 1 in place (the caller has checked TTL > 1), with the checksum patched."""
    pkt[8] -= 1
    # RFC 1624 eqn. 3 with m = TTL<<8 | proto and m' = m - 0x100: ~m + m' is 0xFEFF whatever
    # the TTL, so HC' = ~(~HC + 0xFEFF); one fold suffices (the sum is below 0x1FEFF)
    s = (((pkt[10] << 8) | pkt[11]) ^ 0xFFFF) + 0xFEFF
    s = ((s & 0xFFFF) + (s >> 16)) ^ 0xFFFF
    pkt[10] = s >> 8
    pkt[11] = s & 0xFF


def append_int(pkt: bytearray, *, rate_bps: int, ts_ns: int, tx_bytes: int,
               qlen_bytes: int) -> bytearray:
    """A new packet with one more INT hop record, or `pkt` itself when it carries no trailer.

    Only UDP datagrams to `ROCE_PORT` get a record, and only those `inttrailer.append_record`
    stamps (RDMA WRITE data packets with the INT flag and fewer than `MAX_HOPS` records; an
    ACK's trailer is an echo); fragments and malformed packets are returned unchanged. The
    IPv4 total length and checksum and the UDP length are rewritten; the UDP checksum becomes
    0 ("none", allowed over IPv4) rather than being recomputed over the payload, which would
    cost more than the rest of the switch's path.
    """
    if len(pkt) < 20 or pkt[9] != IPPROTO_UDP or pkt[0] >> 4 != 4:
        return pkt
    ihl = (pkt[0] & 0x0F) << 2
    total = (pkt[2] << 8) | pkt[3]
    if ihl < 20 or total > len(pkt) or total < ihl + UDP_HEADER or (pkt[6] & 0x3F) or pkt[7]:
        return pkt  # malformed, or a fragment (MF set or offset non-zero)
    if ((pkt[ihl + 2] << 8) | pkt[ihl + 3]) != ROCE_PORT:
        return pkt
    start = ihl + UDP_HEADER
    # the INT flag lives in BTH byte 4 (see fabric.roce.inttrailer); test it before copying
    if total - start < 12 or not pkt[start + 4] & INT_FLAG:
        return pkt
    payload = pkt[start:total]
    try:
        new_payload = append_record(payload, rate_bps=rate_bps, ts_ns=ts_ns,
                                    tx_bytes=tx_bytes, qlen_bytes=qlen_bytes)
    except (ValueError, IndexError):
        return pkt  # a trailer that does not fit the packet: forward it as it is
    if len(new_payload) == total - start:
        return pkt  # already MAX_HOPS records
    out = bytearray(pkt[:start])
    out += new_payload
    new_total = len(out)
    if new_total > 0xFFFF:
        return pkt
    _U16.pack_into(out, 2, new_total)
    patch_checksum(out, total, new_total)
    _U16.pack_into(out, ihl + 4, new_total - ihl)
    out[ihl + 6] = out[ihl + 7] = 0
    return out
