"""802.1Qbb priority flow control (PFC) frames, carried in UDP because our links carry IP only.

A real PFC frame is an Ethernet MAC control frame (ethertype 0x8808) that the receiving MAC
consumes and never forwards. Its 20-byte payload, big-endian::

    opcode u16 (0x0101) | class-enable vector u16 | quanta u16 x 8 (priority 0..7)

Bit `p` of the vector says the frame speaks for priority `p`: quanta > 0 pauses it for that
many 512-bit times, 0 resumes it. The emulator sends that payload, unchanged, as a UDP datagram
to `PFC_PORT` at the neighbour's address on the point-to-point link; the receiving switch's I/O
layer decodes it (`unpack_pfc`) and reports it to its core (`SwitchCore.on_pfc`).

The emulator's pause is XOFF/XON: a pause (quanta `PAUSE_QUANTA`, the longest) holds until the
matching resume, rather than expiring after its quanta, so the I/O layer need not refresh it.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["PAUSE_QUANTA", "PFC_IP_SIZE", "PFC_OPCODE", "PFC_PORT", "PFC_SIZE", "pack_pfc",
           "pfc_in_packet", "unpack_pfc"]

PFC_PORT: Final = 8808  # after the MAC control ethertype 0x8808
PFC_OPCODE: Final = 0x0101
PAUSE_QUANTA: Final = 0xFFFF
_FRAME = struct.Struct("!HH8H")
PFC_SIZE: Final = _FRAME.size  # 20
PFC_IP_SIZE: Final = 20 + 8 + PFC_SIZE  # the whole IPv4 packet a switch sends (48 bytes)


def pack_pfc(priority: int, pause: bool) -> bytes:
    """The 20-byte PFC payload pausing (quanta 0xFFFF) or resuming (quanta 0) one priority."""
    if not isinstance(priority, int) or not 0 <= priority <= 7:
        raise ValueError(f"PFC priority must be 0..7, got {priority!r}")
    quanta = [0] * 8
    if pause:
        quanta[priority] = PAUSE_QUANTA
    return _FRAME.pack(PFC_OPCODE, 1 << priority, *quanta)


def unpack_pfc(data: bytes | bytearray | memoryview) -> list[tuple[int, bool]]:
    """`(priority, pause)` for every priority the frame enables, lowest first.

    Raises ValueError unless `data` is exactly one 20-byte PFC payload with opcode 0x0101.
    The reserved high byte of the enable vector is ignored, as 802.1Qbb asks receivers to.
    """
    if len(data) != PFC_SIZE:
        raise ValueError(f"a PFC payload is {PFC_SIZE} bytes, got {len(data)}")
    opcode, vector, *quanta = _FRAME.unpack_from(data)
    if opcode != PFC_OPCODE:
        raise ValueError(f"PFC opcode must be 0x{PFC_OPCODE:04x}, got 0x{opcode:04x}")
    return [(p, quanta[p] != 0) for p in range(8) if vector >> p & 1]


def pfc_in_packet(pkt: bytes | bytearray) -> list[tuple[int, bool]] | None:
    """The frames (`unpack_pfc`) of an IPv4 packet that carries one PFC payload to
    `PFC_PORT`, as a switch sends it (no IP options: `PFC_IP_SIZE` bytes); None for any
    other packet. The link engine reads them to pause a link's transmitter."""
    if (len(pkt) != PFC_IP_SIZE or pkt[0] != 0x45 or pkt[9] != 17
            or pkt[22] << 8 | pkt[23] != PFC_PORT):
        return None
    try:
        return unpack_pfc(pkt[28:])
    except ValueError:
        return None
