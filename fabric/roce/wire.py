"""RoCEv2 packet format: the UDP payload (destination port 4791) of a reliable-connected QP.

Headers are laid out exactly as InfiniBand (IBA vol. 1, ch. 9) and the RoCEv2 annex (A17)
define them, so Wireshark/tshark dissect captured packets as "InfiniBand" over UDP 4791::

    BTH  (12)  opcode u8 | SE:1 M:1 PadCnt:2 TVer:4 | P_Key u16 | FECN:1 BECN:1 resv:6 |
               DestQP u24 | AckReq:1 resv:7 | PSN u24
    RETH (16)  VA u64 | R_Key u32 | DMA length u32          (RDMA WRITE FIRST and ONLY)
    AETH  (4)  syndrome u8 | MSN u24                         (ACKNOWLEDGE)
    CNP        BTH (opcode 0x81, BECN=1, PSN 0) | 16 reserved bytes
    then       payload | pad to a multiple of 4 (PadCnt) | [INT trailer] | ICRC (4)

We send only the RC RDMA WRITE opcodes (a KV chunk is one WRITE message), ACKNOWLEDGE and
CNP. A message of `n` bytes is `ceil(n / pmtu)` packets (one ONLY packet when it fits, else
FIRST, MIDDLE..., LAST); FIRST and ONLY carry the RETH naming the whole message.

AETH syndromes: a positive ACK is `ACK_SYNDROME = 0x1F` (ACK type 0b00, credit count 0b11111,
which IBA defines as "invalid credit count": the requester must not limit itself by end-to-end
credits, the right thing for RDMA WRITEs, which consume no receive WQEs); a go-back-N NAK is
`NAK_PSN_SEQUENCE_ERROR = 0x60` (NAK type 0b11, code 0) carrying the responder's expected PSN.

INT: a packet whose BTH has `inttrailer.INT_FLAG` (0x01, the lowest reserved bit of byte 4)
set carries the in-band telemetry trailer of `fabric.roce.inttrailer` between the pad and the
ICRC. A sender emits an empty trailer (`INT_EMPTY`, just the zero record count); every switch
hop appends a record; the receiver copies the trailer into its ACK (which also sets the flag, so
`inttrailer.trailer_of` finds it there). Switches must append records to data packets only
(`carries_int_for_switch`), never to ACKs, or they would corrupt the echo.

ICRC: not computed on the live path; the 4 bytes are zero. The ICRC covers the IP and UDP
headers too (only TOS, TTL and the two checksums are masked), and the kernel chooses the IPv4
identification when it sends the datagram, so the sender cannot know what it covers; switches
appending INT records would invalidate it anyway. Wireshark's InfiniBand dissector shows the
last 4 bytes as the "Invariant CRC" and dissects every header whatever their value (at worst
it reports the CRC as wrong); nothing here checks it. Where the whole frame is known, as when
`fabric.roce.pcap` writes a capture, `icrc()` computes the real value (Linux rdma_rxe's
algorithm: CRC-32 over 8 bytes of ones for the masked LRH, the masked IP and UDP headers, the
BTH with byte 4 masked, and the rest; stored least significant byte first). It matches a CNP
captured from a ConnectX-4 Lx (see the tests).

PSNs are 24 bits on the wire; callers keep absolute ints and send `psn & PSN_MASK`.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final, NamedTuple

from fabric.roce.inttrailer import INT_FLAG, MAX_HOPS, RECORD_SIZE, has_int, strip, trailer_of

__all__ = [
    "ACKNOWLEDGE",
    "ACK_SYNDROME",
    "AETH_SIZE",
    "BTH_SIZE",
    "CNP",
    "CNP_SIZE",
    "DATA_OPCODES",
    "DEFAULT_PKEY",
    "ICRC_SIZE",
    "INT_EMPTY",
    "IPV4_HEADER_SIZE",
    "NAK_PSN_SEQUENCE_ERROR",
    "PACKET_OVERHEAD",
    "PATH_MTUS",
    "PSN_MASK",
    "RDMA_WRITE_FIRST",
    "RDMA_WRITE_LAST",
    "RDMA_WRITE_MIDDLE",
    "RDMA_WRITE_ONLY",
    "RETH_OPCODES",
    "RETH_SIZE",
    "ROCE_PORT",
    "UDP_HEADER_SIZE",
    "Aeth",
    "Parsed",
    "Reth",
    "ack_packet",
    "carries_int_for_switch",
    "cnp_packet",
    "data_packet",
    "header_bytes",
    "icrc",
    "is_nak",
    "pad_len",
    "parse",
    "payload_mtu",
    "tail_bytes",
    "wire_size",
]

ROCE_PORT: Final = 4791  # IANA's RoCEv2 port, Wireshark's default for the InfiniBand dissector

RDMA_WRITE_FIRST: Final = 0x06
RDMA_WRITE_MIDDLE: Final = 0x07
RDMA_WRITE_LAST: Final = 0x08
RDMA_WRITE_ONLY: Final = 0x0A
ACKNOWLEDGE: Final = 0x11
CNP: Final = 0x81
DATA_OPCODES: Final = frozenset((RDMA_WRITE_FIRST, RDMA_WRITE_MIDDLE, RDMA_WRITE_LAST,
                                 RDMA_WRITE_ONLY))
RETH_OPCODES: Final = frozenset((RDMA_WRITE_FIRST, RDMA_WRITE_ONLY))
_KNOWN_OPCODES = DATA_OPCODES | {ACKNOWLEDGE, CNP}

ACK_SYNDROME: Final = 0x1F  # ACK, credit count 31 = "invalid": no end-to-end credit limit
NAK_PSN_SEQUENCE_ERROR: Final = 0x60
DEFAULT_PKEY: Final = 0xFFFF
PSN_MASK: Final = 0xFFFFFF
_QPN_MASK = 0xFFFFFF

BTH_SIZE: Final = 12
RETH_SIZE: Final = 16
AETH_SIZE: Final = 4
ICRC_SIZE: Final = 4
CNP_RESERVED: Final = 16
CNP_SIZE: Final = BTH_SIZE + CNP_RESERVED + ICRC_SIZE  # 32
IPV4_HEADER_SIZE: Final = 20
UDP_HEADER_SIZE: Final = 8
# Bytes every packet adds on an IP link besides its payload (the IP MTU counts all of them).
PACKET_OVERHEAD: Final = IPV4_HEADER_SIZE + UDP_HEADER_SIZE + BTH_SIZE + ICRC_SIZE  # 44
PATH_MTUS: Final = (256, 512, 1024, 2048, 4096)  # the IB path MTUs RoCE negotiates
INT_EMPTY: Final = b"\x00"  # the trailer a sender emits: no records yet

_BTH_PACK = struct.Struct("!BBHII")  # opcode, flags, pkey, (fb << 24 | qp), (a << 31 | psn)
_RETH = struct.Struct("!QII")
_AETH = struct.Struct("!I")
_ZERO_ICRC = bytes(ICRC_SIZE)
_PADS = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")


class Reth(NamedTuple):
    """RDMA Extended Transport Header: where the whole message goes at the responder."""

    va: int
    rkey: int
    length: int


class Aeth(NamedTuple):
    """ACK Extended Transport Header: syndrome (ACK or NAK code) and message sequence number."""

    syndrome: int
    msn: int


class Parsed(NamedTuple):
    """A decoded RoCEv2 UDP payload; the payload is `datagram[payload_start:payload_end]`
    (pad, INT trailer and ICRC excluded)."""

    opcode: int
    dest_qp: int
    psn: int  # 24-bit wire value
    ack_req: bool
    fecn: bool
    becn: bool
    pad: int
    reth: Reth | None
    aeth: Aeth | None
    payload_start: int
    payload_end: int
    int_trailer: bytes  # b"" when the INT flag is clear

    @property
    def payload_len(self) -> int:
        return self.payload_end - self.payload_start


def pad_len(payload_len: int) -> int:
    """Pad bytes (PadCnt) that bring a payload to a multiple of 4."""
    return -payload_len & 3


def _bth(opcode: int, dest_qp: int, psn: int, *, ack_req: bool = False, pad: int = 0,
         fecn: bool = False, becn: bool = False, int_flag: bool = False, se: bool = False,
         pkey: int = DEFAULT_PKEY) -> bytes:
    if not 0 <= opcode <= 0xFF:
        raise ValueError(f"opcode {opcode!r} is not a byte")
    if not 0 <= dest_qp <= _QPN_MASK:
        raise ValueError(f"destination QP {dest_qp!r} does not fit 24 bits")
    if not 0 <= pad <= 3:
        raise ValueError(f"pad count {pad!r} must be 0..3")
    flags = (0x80 if se else 0) | (pad << 4)  # M = 0, TVer = 0
    fb = (0x80 if fecn else 0) | (0x40 if becn else 0) | (INT_FLAG if int_flag else 0)
    return _BTH_PACK.pack(opcode, flags, pkey, (fb << 24) | dest_qp,
                          (0x80000000 if ack_req else 0) | (psn & PSN_MASK))


def header_bytes(opcode: int, dest_qp: int, psn: int, payload_len: int, *,
                 ack_req: bool = False, reth: Reth | tuple[int, int, int] | None = None,
                 fecn: bool = False, becn: bool = False, int_flag: bool = False) -> bytes:
    """BTH (and RETH on WRITE FIRST/ONLY) of a data packet carrying `payload_len` bytes.

    `psn` may be absolute (it is reduced to 24 bits); the pad count is derived from
    `payload_len`; `int_flag` says an INT trailer follows (see `tail_bytes`)."""
    if opcode not in DATA_OPCODES:
        raise ValueError(f"opcode {opcode:#04x} is not an RDMA WRITE opcode")
    if (reth is not None) != (opcode in RETH_OPCODES):
        raise ValueError(f"opcode {opcode:#04x} {'needs' if reth is None else 'takes no'} RETH")
    bth = _bth(opcode, dest_qp, psn, ack_req=ack_req, pad=pad_len(payload_len), fecn=fecn,
               becn=becn, int_flag=int_flag)
    if reth is None:
        return bth
    va, rkey, length = reth
    try:
        return bth + _RETH.pack(va, rkey, length)
    except struct.error as exc:
        raise ValueError(f"RETH field out of range: {exc}") from None


def tail_bytes(pad: int, int_trailer: bytes = b"") -> bytes:
    """What follows the payload: `pad` zero bytes, the INT trailer (if any), a zero ICRC."""
    return _PADS[pad] + int_trailer + _ZERO_ICRC if int_trailer else _PADS[pad] + _ZERO_ICRC


def data_packet(opcode: int, dest_qp: int, psn: int,
                payload: bytes | bytearray | memoryview, *, ack_req: bool = False,
                reth: Reth | tuple[int, int, int] | None = None, fecn: bool = False,
                becn: bool = False, int_trailer: bytes = b"") -> list[bytes | memoryview]:
    """A data packet as scatter-gather pieces `[headers, payload, tail]` for `sendmsg`: the
    payload is passed through uncopied. `b"".join(...)` gives the datagram."""
    view = payload if isinstance(payload, bytes) else memoryview(payload).cast("B")
    n = len(view)
    head = header_bytes(opcode, dest_qp, psn, n, ack_req=ack_req, reth=reth, fecn=fecn,
                        becn=becn, int_flag=bool(int_trailer))
    return [head, view, tail_bytes(pad_len(n), int_trailer)]


def ack_packet(dest_qp: int, psn: int, msn: int, nak: bool = False, becn: bool = False,
               int_trailer: bytes = b"") -> bytes:
    """An ACKNOWLEDGE: positive (`ACK_SYNDROME`) for every PSN up to and including `psn`, or a
    PSN-sequence-error NAK asking the requester to resend from `psn`. `becn` echoes congestion
    experienced (DCTCP's ECN echo); `int_trailer` echoes the acknowledged packet's INT."""
    syndrome = NAK_PSN_SEQUENCE_ERROR if nak else ACK_SYNDROME
    return b"".join((_bth(ACKNOWLEDGE, dest_qp, psn, becn=becn, int_flag=bool(int_trailer)),
                     _AETH.pack((syndrome << 24) | (msn & 0xFFFFFF)), int_trailer, _ZERO_ICRC))


def cnp_packet(dest_qp: int) -> bytes:
    """A RoCEv2 congestion notification packet for `dest_qp` (annex A17.9.3: opcode 0x81,
    BECN set, PSN 0, AckReq clear, then 16 reserved bytes)."""
    return _bth(CNP, dest_qp, 0, becn=True) + bytes(CNP_RESERVED) + _ZERO_ICRC


def is_nak(aeth: Aeth) -> bool:
    """True for a NAK syndrome (top two bits 0b11); ACKs have 0b00."""
    return aeth.syndrome >> 5 == 0b11


def carries_int_for_switch(udp_payload: bytes | bytearray | memoryview) -> bool:
    """True when a switch should append its INT record: a data packet with the INT flag set.
    (ACKs also set the flag, to carry the echoed trailer, and must be left alone.)"""
    return has_int(udp_payload) and udp_payload[0] in DATA_OPCODES


def parse(udp_payload: bytes | bytearray | memoryview) -> Parsed:
    """Decode a RoCEv2 UDP payload. `ValueError` if it is short, garbled, or not one of the
    opcodes this transport uses (RDMA WRITE, ACKNOWLEDGE, CNP)."""
    data = udp_payload
    n = len(data)
    if n < BTH_SIZE + ICRC_SIZE:
        raise ValueError(f"RoCEv2 packet of {n} bytes is shorter than BTH + ICRC (16)")
    opcode, flags, _pkey, word1, word2 = _BTH_PACK.unpack_from(data)
    if flags & 0x0F:
        raise ValueError(f"BTH transport version {flags & 0x0F} is not 0")
    if opcode not in _KNOWN_OPCODES:
        raise ValueError(f"opcode {opcode:#04x} is not RDMA WRITE, ACKNOWLEDGE or CNP")
    pad = (flags >> 4) & 3
    fb = word1 >> 24
    dest_qp = word1 & _QPN_MASK
    ack_req = bool(word2 & 0x80000000)
    psn = word2 & PSN_MASK
    fecn, becn = bool(fb & 0x80), bool(fb & 0x40)
    trailer = trailer_of(data) if fb & INT_FLAG else b""  # ValueError if it overruns
    end = strip(data) if trailer else n - ICRC_SIZE
    reth = aeth = None
    start = BTH_SIZE
    if opcode == CNP:
        if n != CNP_SIZE:
            raise ValueError(f"CNP of {n} bytes; a CNP is {CNP_SIZE}")
        return Parsed(opcode, dest_qp, psn, ack_req, fecn, becn, 0, None, None, start, start,
                      b"")
    if opcode == ACKNOWLEDGE:
        if end != BTH_SIZE + AETH_SIZE or pad:
            raise ValueError(f"ACKNOWLEDGE of {n} bytes does not hold exactly BTH + AETH")
        (word,) = _AETH.unpack_from(data, BTH_SIZE)
        aeth = Aeth(word >> 24, word & 0xFFFFFF)
        start = end = BTH_SIZE + AETH_SIZE
        return Parsed(opcode, dest_qp, psn, ack_req, fecn, becn, 0, None, aeth, start, end,
                      trailer)
    if opcode in RETH_OPCODES:
        start += RETH_SIZE
        if end < start:
            raise ValueError(f"RDMA WRITE {opcode:#04x} of {n} bytes is too short for its RETH")
        reth = Reth(*_RETH.unpack_from(data, BTH_SIZE))
    if end - start < pad:
        raise ValueError(f"pad count {pad} exceeds the {end - start} bytes after the headers")
    return Parsed(opcode, dest_qp, psn, ack_req, fecn, becn, pad, reth, None, start, end - pad,
                  trailer)


def wire_size(opcode: int, payload_len: int, int_len: int = 0) -> int:
    """Bytes the packet occupies on an IP link: IPv4 + UDP + BTH [+ RETH | AETH] + payload +
    pad + INT trailer (`int_len` bytes) + ICRC. Ethernet framing is not included."""
    extra = (RETH_SIZE if opcode in RETH_OPCODES else AETH_SIZE if opcode == ACKNOWLEDGE
             else CNP_RESERVED if opcode == CNP else 0)
    return PACKET_OVERHEAD + extra + payload_len + pad_len(payload_len) + int_len


def payload_mtu(mtu: int, int_hops: int | None = None) -> int:
    """The RoCE path MTU (256, 512, 1024, 2048 or 4096 bytes of payload) for a link of this IP
    MTU: the largest that fits beside IPv4, UDP, BTH, RETH and ICRC and, when `int_hops` is
    given (INT on), an INT trailer of that many records (`MAX_HOPS` is the most a packet can
    collect)."""
    room = mtu - PACKET_OVERHEAD - RETH_SIZE
    if int_hops is not None:
        if not 0 <= int_hops <= MAX_HOPS:
            raise ValueError(f"int_hops must be 0..{MAX_HOPS}, got {int_hops}")
        room -= 1 + int_hops * RECORD_SIZE
    fitting = [p for p in PATH_MTUS if p <= room]
    if not fitting:
        need = PATH_MTUS[0] + mtu - room
        raise ValueError(f"IP MTU {mtu} leaves {room} bytes for RoCE payload; the smallest path "
                         f"MTU (256) needs an IP MTU of at least {need}")
    return fitting[-1]


def _masked_ip(ip_header: bytes | bytearray | memoryview) -> bytes:
    ip = bytearray(ip_header)
    version = ip[0] >> 4 if ip else 0
    if version == 4:
        ip[1] = 0xFF  # DSCP/ECN
        ip[8] = 0xFF  # TTL
        ip[10:12] = b"\xff\xff"  # header checksum
    elif version == 6:
        ip[0] |= 0x0F  # traffic class (low nibble of byte 0, high of byte 1), flow label
        ip[1:4] = b"\xff\xff\xff"
        ip[7] = 0xFF  # hop limit
    else:
        raise ValueError(f"IP version {version} header; the ICRC covers IPv4 or IPv6")
    return bytes(ip)


def icrc(ip_header: bytes | bytearray | memoryview, udp_header: bytes | bytearray | memoryview,
         udp_payload: bytes | bytearray | memoryview) -> bytes:
    """The 4 ICRC bytes of a RoCEv2 packet, as they go on the wire. `udp_payload` is the whole
    payload including its (ignored) last 4 ICRC bytes; the headers are as sent."""
    if len(udp_header) != UDP_HEADER_SIZE or len(udp_payload) < BTH_SIZE + ICRC_SIZE:
        raise ValueError("icrc needs the 8-byte UDP header and a payload of at least 16 bytes")
    udp = bytearray(udp_header)
    udp[6:8] = b"\xff\xff"  # UDP checksum
    bth = bytearray(udp_payload[:BTH_SIZE])
    bth[4] = 0xFF  # FECN, BECN and the reserved bits (our INT flag): switches may change them
    crc = zlib.crc32(b"\xff" * 8)  # the masked LRH of native InfiniBand
    for part in (_masked_ip(ip_header), bytes(udp), bytes(bth),
                 udp_payload[BTH_SIZE:len(udp_payload) - ICRC_SIZE]):
        crc = zlib.crc32(part, crc)
    return crc.to_bytes(4, "little")
