"""IP header helpers on raw packets, shared by the link engine, the RoCE switch and the pcap
writer: the ECN field, the Internet checksum, CE marking with the checksum patched, and the
header's length and a bit flip (the link engine's `corrupt`).

They sit on per-packet paths, so they work on plain bytes (a `bytearray` or a writable
`memoryview` starting at the IP header, no L2 header), make no objects, and patch the IPv4
header checksum incrementally (RFC 1624, eqn. 3) instead of recomputing it.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ECN_CE",
    "ECN_ECT0",
    "ECN_ECT1",
    "ECN_NOT_ECT",
    "checksum",
    "ecn_of",
    "flip_bit",
    "header_length",
    "patch_checksum",
    "set_ce",
]

ECN_NOT_ECT: Final = 0
ECN_ECT1: Final = 1
ECN_ECT0: Final = 2
ECN_CE: Final = 3

Packet = bytearray | memoryview


def ecn_of(pkt: bytes | bytearray | memoryview) -> int:
    """The ECN field (0-3) of an IPv4 or IPv6 packet; 0 for anything else."""
    if len(pkt) < 2:
        return 0
    version = pkt[0] >> 4
    if version == 4:
        return pkt[1] & 3
    if version == 6:
        return (pkt[1] >> 4) & 3
    return 0


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


def patch_checksum(pkt: Packet, old_word: int, new_word: int) -> None:
    """Update an IPv4 header's checksum after one 16-bit word changed from `old_word`.

    RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'): the form that RFC shows correct for every header,
    where RFC 1141's HC' = HC + m - m' can leave a wrong "-0".
    """
    s = (((pkt[10] << 8) | pkt[11]) ^ 0xFFFF) + (old_word ^ 0xFFFF) + new_word
    s = (s & 0xFFFF) + (s >> 16)
    s = ((s & 0xFFFF) + (s >> 16)) ^ 0xFFFF
    pkt[10] = s >> 8
    pkt[11] = s & 0xFF


def set_ce(pkt: Packet) -> bool:
    """Mark an ECT(0)/ECT(1) IPv4 or IPv6 packet Congestion Experienced in place; True if this
    call marked it. Not-ECT packets (must not be marked), CE packets (already are) and non-IP
    ones are left untouched."""
    if len(pkt) < 2:
        return False
    version = pkt[0] >> 4
    if version == 4:
        tos = pkt[1]
        ecn = tos & 3
        if len(pkt) < 20 or ecn == ECN_NOT_ECT or ecn == ECN_CE:
            return False
        pkt[1] = tos | 3
        first = pkt[0] << 8
        patch_checksum(pkt, first | tos, first | tos | 3)
        return True
    if version == 6:
        ecn = (pkt[1] >> 4) & 3
        if ecn == ECN_NOT_ECT or ecn == ECN_CE:
            return False
        pkt[1] |= 0x30
        return True
    return False


def header_length(pkt: bytes | bytearray | memoryview) -> int:
    """Bytes of the IP header (IPv4: IHL x 4; IPv6: the fixed 40); 0 for anything else."""
    if not pkt:
        return 0
    version = pkt[0] >> 4
    if version == 4:
        return (pkt[0] & 0x0F) * 4
    if version == 6:
        return 40
    return 0


def flip_bit(pkt: Packet, bit: int) -> None:
    """Invert bit `bit` of `pkt` in place: `1 << (bit & 7)` of byte `bit >> 3`. No checksum is
    patched: a corrupted packet is meant to fail the receiver's check."""
    pkt[bit >> 3] ^= 1 << (bit & 7)
