"""IPv4 helpers on raw packets (a `bytearray` starting at the IPv4 header, no L2 header).

These sit on the switch's per-packet path, so they avoid objects: `parse` returns a plain tuple,
the in-place edits (`set_ce`, `decrement_ttl`) patch the header checksum incrementally
(RFC 1624, eqn. 3) instead of recomputing it, and nothing here raises on a bad packet.
"""

from __future__ import annotations

import struct
from typing import Final

from fabric.roce.inttrailer import INT_FLAG, append_record

__all__ = [
    "ECN_CE",
    "ECN_ECT0",
    "ECN_ECT1",
    "ECN_NOT_ECT",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "ROCE_PORT",
    "append_int",
    "checksum",
    "decrement_ttl",
    "parse",
    "set_ce",
]

IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
ROCE_PORT: Final = 4791
ECN_NOT_ECT: Final = 0
ECN_ECT1: Final = 1
ECN_ECT0: Final = 2
ECN_CE: Final = 3

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


def checksum(header: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) of `header`: the value for its checksum field when that
    field is zero, and 0 when the header already carries a valid checksum.

    Uses 2**16 == 1 (mod 0xFFFF): the one's-complement sum of the 16-bit words is the whole
    header read as one big integer, mod 0xFFFF (with 0xFFFF, "negative zero", for non-zero data).
    """
    data = bytes(header)
    if len(data) & 1:
        data += b"\x00"
    value = int.from_bytes(data, "big")
    s = value % 0xFFFF
    if s == 0 and value:
        s = 0xFFFF
    return ~s & 0xFFFF


def _patch(pkt: bytearray, old_word: int, new_word: int) -> None:
    # RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'): the form that RFC shows correct for every
    # header, where RFC 1141's HC' = HC + m - m' can leave a wrong "-0"
    s = (((pkt[10] << 8) | pkt[11]) ^ 0xFFFF) + (old_word ^ 0xFFFF) + new_word
    s = (s & 0xFFFF) + (s >> 16)
    s = ((s & 0xFFFF) + (s >> 16)) ^ 0xFFFF
    pkt[10] = s >> 8
    pkt[11] = s & 0xFF


def set_ce(pkt: bytearray) -> bool:
    """Mark an ECT(0)/ECT(1) IPv4 packet Congestion Experienced in place; True if marked.

    Not-ECT packets (must not be marked) and CE packets (already are) are left untouched.
    """
    tos = pkt[1]
    ecn = tos & 3
    if ecn != 1 and ecn != 2:
        return False
    pkt[1] = tos | 3
    first = pkt[0] << 8
    _patch(pkt, first | tos, first | tos | 3)
    return True


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
    _patch(out, total, new_total)
    _U16.pack_into(out, ihl + 4, new_total - ihl)
    out[ihl + 6] = out[ihl + 7] = 0
    return out
