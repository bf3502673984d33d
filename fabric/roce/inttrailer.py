"""In-band network telemetry (INT) carried at the end of a RoCEv2-style packet.

HPCC needs every switch hop to append (line rate, timestamp, transmitted bytes, queue length)
to data packets, and the receiver to echo the records back in its ACK. RoCEv2 has no field for
this, so, as HPCC's own simulator does with a custom header, we add one: a packet whose BTH has
`INT_FLAG` set in its otherwise reserved byte 4 carries a trailer between the payload (with its
pad) and the 4-byte ICRC::

    record * n | n (u8)         record = rate_bps u64 | ts_ns u64 | tx_bytes u64 | qlen u32

A switch appends one record per hop (`append_record`); a receiver reads them (`records_of`) and
copies the trailer into its ACK. Wireshark shows the trailer as payload bytes; the BTH, AETH and
RETH still decode as RoCEv2.

Everything here works on the UDP payload (BTH .. ICRC), not on the IP packet.
"""

from __future__ import annotations

import struct
from typing import Final

from fabric.cc.base import IntRecord

__all__ = ["INT_FLAG", "MAX_HOPS", "RECORD_SIZE", "append_record", "has_int", "records_of", "strip",
           "trailer_of"]

BTH_FLAG_BYTE: Final = 4  # FECN | BECN | 6 reserved bits
INT_FLAG: Final = 0x01  # the lowest reserved bit of BTH byte 4
ICRC_SIZE: Final = 4
_RECORD = struct.Struct("!QQQI")
RECORD_SIZE: Final = _RECORD.size  # 28
MAX_HOPS: Final = 8
_WRITE_OPCODES: Final = frozenset((0x06, 0x07, 0x08, 0x0A))  # RC RDMA WRITE FIRST/MIDDLE/LAST/ONLY


def has_int(udp_payload: bytes | bytearray | memoryview) -> bool:
    return len(udp_payload) >= 12 and bool(udp_payload[BTH_FLAG_BYTE] & INT_FLAG)


def _count(udp_payload: bytes | bytearray | memoryview) -> int:
    n = udp_payload[-ICRC_SIZE - 1]
    if len(udp_payload) < 12 + n * RECORD_SIZE + 1 + ICRC_SIZE:
        raise ValueError("INT trailer longer than the packet")
    return n


def append_record(udp_payload: bytes | bytearray, *, rate_bps: int, ts_ns: int, tx_bytes: int,
                  qlen_bytes: int) -> bytes:
    """The payload with one more hop's record; unchanged if the packet is not an RDMA WRITE
    data packet with an INT trailer (an ACK's trailer is an echo, not to be stamped) or
    already holds `MAX_HOPS` records."""
    if not has_int(udp_payload) or udp_payload[0] not in _WRITE_OPCODES:
        return bytes(udp_payload)
    n = _count(udp_payload)
    if n >= MAX_HOPS:
        return bytes(udp_payload)
    end = len(udp_payload) - ICRC_SIZE - 1
    rec = _RECORD.pack(rate_bps, ts_ns & (2**64 - 1), tx_bytes & (2**64 - 1),
                       min(qlen_bytes, 2**32 - 1))
    return b"".join((udp_payload[:end], rec, bytes((n + 1,)), udp_payload[end + 1:]))


def trailer_of(udp_payload: bytes | bytearray | memoryview) -> bytes:
    """The raw trailer (records and count) to copy into an ACK; b'' when there is none."""
    if not has_int(udp_payload):
        return b""
    n = _count(udp_payload)
    end = len(udp_payload) - ICRC_SIZE
    return bytes(udp_payload[end - 1 - n * RECORD_SIZE: end])


def strip(udp_payload: bytes | bytearray | memoryview) -> int:
    """Length of the payload without the trailer and ICRC (where the pad/payload ends)."""
    if not has_int(udp_payload):
        return len(udp_payload) - ICRC_SIZE
    return len(udp_payload) - ICRC_SIZE - 1 - _count(udp_payload) * RECORD_SIZE


def records_of(trailer: bytes | bytearray | memoryview) -> tuple[IntRecord, ...]:
    """Decode a trailer (as `trailer_of` returns it) into one `IntRecord` per hop, in order."""
    if not trailer:
        return ()
    n = trailer[-1]
    if len(trailer) != n * RECORD_SIZE + 1:
        raise ValueError(f"INT trailer of {len(trailer)} bytes does not hold {n} records")
    out = []
    for hop in range(n):
        rate, ts, tx, q = _RECORD.unpack_from(trailer, hop * RECORD_SIZE)
        out.append(IntRecord(hop=hop, line_rate_bps=rate, ts_ns=ts, tx_bytes=tx, qlen_bytes=q))
    return tuple(out)
