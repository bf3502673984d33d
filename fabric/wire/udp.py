"""A simple reliable bulk transfer over UDP, sans-IO: segments, selective NACKs, timers.

One transfer moves `total` bytes cut into `ceil(total / mss)` DATA segments; segment `seq`
carries bytes `[seq * mss, seq * mss + length)`. Every segment starts with a fixed 32-byte
header (network byte order)::

    magic u16 | flags u8 | reserved u8 | flow u32 | transfer u32 | seq u32 | offset u64 | total u64

`flags` is DATA, or ACK (with NACK when a list follows), plus FIN on the last DATA segment. An
ACK's `seq` is the cumulative ack (every seq below it arrived); its `offset` is the *horizon*:
the NACK payload (big-endian u32 seqs) lists every missing seq in `[seq, horizon)`, so every
other seq in that range has arrived (a selective ack). The horizon is the highest seq seen + 1,
or the last NACKed seq + 1 when the list was cut at `max_nacks`. `mss = mtu - 28 - 32`
(IPv4 + UDP headers, then ours).

Why selective NACKs rather than RoCE's go-back-N: a cross-cluster link with 1-30 % loss and a
window of hundreds of segments would resend most of the window for every drop. The receiver
keeps a bitmap and names the holes; the sender resends only those, and a retransmission timer
(with exponential backoff, reset by progress) covers lost ACKs and lost retransmissions.

A NACKed seq is resent at once when a segment sent more than `reorder_ns` after it is known to
have arrived (RACK's time-based rule: it was not merely overtaken by reordering), or when it was
last sent at least `nack_holdoff_ns` ago; otherwise the NACK is ignored (it most likely reports
reordering, or predates the latest retransmission). Timeouts
resend only seqs not known to have arrived, so a lost ACK does not resend the whole window.

Both ends are fed events and the time (`now_ns`) and say when they next need attention
(`next_deadline()`); the I/O layer owns the socket and the clock. Drive the sender by calling
`segments_to_send(now)` after every `on_ack`/`on_nack` and whenever `next_deadline()` passes;
drive the receiver by calling `make_ack()` (or `ack_segment()`) whenever `ack_due(now)`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from fabric.wire.frames import ProtocolError

__all__ = [
    "ACK",
    "DATA",
    "FIN",
    "HEADER_SIZE",
    "MAGIC",
    "NACK",
    "Segment",
    "UdpReceiver",
    "UdpSender",
    "mss_for_mtu",
    "pack_ack",
    "pack_segment",
    "unpack_nacks",
    "unpack_segment",
]

MAGIC: Final = 0xFAB1
DATA: Final = 0x01
ACK: Final = 0x02
NACK: Final = 0x04
FIN: Final = 0x08
_KNOWN_FLAGS = DATA | ACK | NACK | FIN
IP_UDP_OVERHEAD: Final = 28  # IPv4 20 + UDP 8

_HEADER = struct.Struct("!HBBIIIQQ")
HEADER_SIZE: Final = _HEADER.size  # 32
_U32 = struct.Struct("!I")


def mss_for_mtu(mtu: int) -> int:
    """Payload bytes per DATA segment on a link of this MTU."""
    mss = mtu - IP_UDP_OVERHEAD - HEADER_SIZE
    if mss <= 0:
        raise ValueError(f"MTU {mtu} leaves no room for payload (needs > {IP_UDP_OVERHEAD + 32})")
    return mss


@dataclass(frozen=True)
class Segment:
    """A decoded segment header."""

    flags: int
    flow: int
    transfer: int
    seq: int
    offset: int
    total: int


def pack_segment(flags: int, flow: int, transfer: int, seq: int, offset: int, total: int,
                 payload: bytes | memoryview = b"") -> bytes:
    """Header plus payload as one datagram. (The I/O layer may `sendmsg([header, view])`
    with `pack_segment(...)` of an empty payload to avoid copying large payloads.)"""
    try:
        header = _HEADER.pack(MAGIC, flags, 0, flow, transfer, seq, offset, total)
    except struct.error as exc:
        raise ValueError(f"segment field out of range: {exc}") from None
    return header + bytes(payload) if payload else header


def unpack_segment(data: bytes | bytearray | memoryview) -> tuple[Segment, memoryview]:
    """Header and payload (a view into `data`, no copy). `ProtocolError` if not ours."""
    view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    if view.nbytes < HEADER_SIZE:
        raise ProtocolError(f"segment of {view.nbytes} bytes is shorter than the 32-byte header")
    magic, flags, reserved, flow, transfer, seq, offset, total = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise ProtocolError(f"segment magic {magic:#06x} is not {MAGIC:#06x}")
    if flags & ~_KNOWN_FLAGS or not flags & (DATA | ACK) or (flags & DATA and flags & ACK):
        raise ProtocolError(f"segment flags {flags:#04x} are not a valid combination")
    if reserved:
        raise ProtocolError(f"segment reserved byte is {reserved}, must be 0")
    return Segment(flags, flow, transfer, seq, offset, total), view[HEADER_SIZE:]


def pack_ack(flow: int, transfer: int, total: int, cum_seq: int, horizon: int,
             nacks: list[int] | tuple[int, ...] = ()) -> bytes:
    """An ACK datagram: cumulative ack, horizon, and the missing seqs in [cum_seq, horizon)."""
    payload = b"".join(_U32.pack(s) for s in nacks)
    flags = ACK | (NACK if nacks else 0)
    return pack_segment(flags, flow, transfer, cum_seq, horizon, total, payload)


def unpack_nacks(payload: bytes | memoryview) -> list[int]:
    """The seqs of a NACK payload."""
    if len(payload) % 4:
        raise ProtocolError(f"NACK payload of {len(payload)} bytes is not a list of u32")
    return [s for (s,) in _U32.iter_unpack(payload)]


def _segment_count(total: int, mss: int) -> int:
    if total < 0:
        raise ValueError(f"total must be >= 0, not {total}")
    if mss <= 0:
        raise ValueError(f"mss must be positive, not {mss}")
    return -(-total // mss)


class UdpSender:
    """The sending end of one transfer: which segments to (re)send, and when.

    `sent` counts every DATA transmission, `retransmitted` the ones that were repeats,
    `timeouts` the retransmission-timer expiries.
    """

    def __init__(self, flow: int, transfer: int, total: int, mss: int, window_segments: int,
                 rto_ns: int, *, nack_holdoff_ns: int | None = None,
                 reorder_ns: int | None = None, max_backoff: int = 8) -> None:
        if window_segments <= 0 or rto_ns <= 0:
            raise ValueError("window_segments and rto_ns must be positive")
        self.flow, self.transfer, self.total, self.mss = flow, transfer, total, mss
        self.segments = _segment_count(total, mss)
        self.window_segments = window_segments
        self.rto_ns = rto_ns
        # A NACK that arrives sooner than this after the segment's last send most likely
        # predates that send; acting on it would only duplicate the retransmission.
        self.nack_holdoff_ns = rto_ns // 2 if nack_holdoff_ns is None else nack_holdoff_ns
        self.reorder_ns = rto_ns // 8 if reorder_ns is None else reorder_ns
        # defaults follow the RTO as RTT samples refine it
        self._follow_rto = (nack_holdoff_ns is None, reorder_ns is None)
        self.max_backoff = max_backoff
        self._next = 0  # next never-sent seq
        self._cum = 0  # every seq below this is acknowledged
        self._sent_at: dict[int, int] = {}  # unacked seq -> last send time, oldest first
        self._delivered_sent_at = -1  # send time of the newest transmission known to arrive
        self._nacked: set[int] = set()
        self._resent: set[int] = set()  # seqs sent more than once: no RTT samples (Karn)
        self._backoff = 1
        self.srtt_ns: int | None = None  # RFC 6298 smoothed RTT and its variation
        self._rttvar_ns = 0
        self.min_rto_ns = min(rto_ns, 5_000_000)
        self.sent = 0
        self.retransmitted = 0
        self.timeouts = 0

    @property
    def done(self) -> bool:
        """Every segment is acknowledged."""
        return self._cum >= self.segments

    @property
    def acked(self) -> int:
        """Cumulatively acknowledged segments."""
        return self._cum

    def segment(self, seq: int) -> tuple[int, int, int]:
        """`(seq, offset, length)` of a segment."""
        offset = seq * self.mss
        return seq, offset, min(self.mss, self.total - offset)

    def header(self, seq: int) -> bytes:
        """The 32-byte DATA header of `seq` (FIN on the last segment)."""
        seq, offset, _ = self.segment(seq)
        flags = DATA | (FIN if seq == self.segments - 1 else 0)
        return pack_segment(flags, self.flow, self.transfer, seq, offset, self.total)

    def _send(self, seq: int, now_ns: int, out: list[tuple[int, int, int]]) -> None:
        if self._sent_at.pop(seq, None) is not None:
            self._resent.add(seq)
        self._sent_at[seq] = now_ns  # re-insert: dict order stays oldest send first
        self.sent += 1
        out.append(self.segment(seq))

    def _delivered(self, seq: int) -> None:
        at = self._sent_at.pop(seq, None)
        if at is not None:
            self._delivered_sent_at = max(self._delivered_sent_at, at)
        self._nacked.discard(seq)

    def segments_to_send(self, now_ns: int) -> list[tuple[int, int, int]]:
        """Segments to transmit now: NACKed ones, timed-out ones, then new ones in the window."""
        out: list[tuple[int, int, int]] = []
        for seq in sorted(self._nacked):
            if seq in self._sent_at:
                self.retransmitted += 1
                self._send(seq, now_ns, out)
        self._nacked.clear()

        rto = self.rto_ns * self._backoff
        expired = []
        for seq, at in self._sent_at.items():
            if at + rto > now_ns:
                break
            expired.append(seq)
        if expired:
            self.timeouts += 1
            self._backoff = min(self._backoff * 2, self.max_backoff)
            for seq in expired:
                self.retransmitted += 1
                self._send(seq, now_ns, out)

        limit = min(self.segments, self._cum + self.window_segments)
        while self._next < limit:
            self._send(self._next, now_ns, out)
            self._next += 1
        return out

    def on_ack(self, cum_seq: int, now_ns: int) -> None:
        """The receiver has every seq below `cum_seq`."""
        if cum_seq > self._next:
            raise ProtocolError(f"ACK of seq {cum_seq} but only {self._next} segments were sent")
        if cum_seq > self._cum:
            newest = cum_seq - 1
            at = self._sent_at.get(newest)
            if at is not None and newest not in self._resent:
                self._rtt_sample(now_ns - at)
            for seq in range(self._cum, cum_seq):
                self._delivered(seq)
                self._resent.discard(seq)
            self._cum = cum_seq
            self._backoff = 1

    def _rtt_sample(self, rtt: int) -> None:
        """RFC 6298: srtt, rttvar, and the RTO they give (never below `min_rto_ns`)."""
        if self.srtt_ns is None:
            self.srtt_ns, self._rttvar_ns = rtt, rtt // 2
        else:
            self._rttvar_ns += (abs(self.srtt_ns - rtt) - self._rttvar_ns) // 4
            self.srtt_ns += (rtt - self.srtt_ns) // 8
        self.rto_ns = max(self.min_rto_ns, self.srtt_ns + 4 * self._rttvar_ns)
        if self._follow_rto[0]:
            self.nack_holdoff_ns = self.rto_ns // 2
        if self._follow_rto[1]:
            self.reorder_ns = self.rto_ns // 8

    def on_nack(self, seqs: list[int] | tuple[int, ...], now_ns: int, *,
                horizon: int | None = None) -> None:
        """The receiver reports these seqs missing. With `horizon` (from the ACK), every other
        seq in [acked, horizon) has arrived. Resend the missing ones that are really lost."""
        if horizon is not None:
            missing = set(seqs)
            for seq in range(self._cum, min(horizon, self._next)):
                if seq not in missing:
                    self._delivered(seq)
        for seq in seqs:
            at = self._sent_at.get(seq)
            if at is None:
                continue  # already acknowledged (a stale NACK)
            if (at + self.reorder_ns < self._delivered_sent_at
                    or now_ns - at >= self.nack_holdoff_ns):
                self._nacked.add(seq)

    def on_ack_segment(self, segment: Segment, payload: memoryview | bytes, now_ns: int) -> None:
        """Feed a whole decoded ACK datagram (cumulative ack, horizon, NACK list)."""
        if not segment.flags & ACK:
            raise ProtocolError(f"expected an ACK segment, got flags {segment.flags:#04x}")
        self.on_ack(segment.seq, now_ns)
        nacks = unpack_nacks(payload) if segment.flags & NACK else []
        self.on_nack(nacks, now_ns, horizon=segment.offset)

    def next_deadline(self) -> int | None:
        """When the oldest unacked segment times out (None when nothing is outstanding)."""
        if self.done or not self._sent_at:
            return None
        oldest = next(iter(self._sent_at.values()))
        return oldest + self.rto_ns * self._backoff


class UdpReceiver:
    """The receiving end of one transfer: a bitmap of seqs, and when to ACK/NACK.

    ACKs go out every `ack_every` new segments, `ack_delay_ns` after the first unacked one, and
    at once on a new hole, a duplicate (the sender is retransmitting: our ACK was lost) or
    completion. `duplicates` counts segments that arrived more than once.
    """

    def __init__(self, flow: int, transfer: int, total: int, mss: int, *, ack_every: int = 8,
                 ack_delay_ns: int = 100_000, max_nacks: int = 64) -> None:
        self.flow, self.transfer, self.total, self.mss = flow, transfer, total, mss
        self.segments = _segment_count(total, mss)
        self.ack_every = ack_every
        self.ack_delay_ns = ack_delay_ns
        self.max_nacks = max_nacks
        self._have = bytearray(self.segments)
        self._cum = 0
        self._high = 0  # highest seq seen + 1
        self._count = 0
        self._pending = 0  # new segments since the last ACK
        self._due_at: int | None = None
        self.duplicates = 0
        self.horizon = 0
        """The horizon of the last `make_ack()`: every missing seq below it was in the list."""

    @property
    def complete(self) -> bool:
        """Every segment has arrived."""
        return self._count == self.segments

    @property
    def received(self) -> int:
        """Distinct segments received."""
        return self._count

    def _due(self, at: int) -> None:
        self._due_at = at if self._due_at is None else min(self._due_at, at)

    def on_data(self, seq: int, offset: int, length: int, now_ns: int) -> bool:
        """A DATA segment arrived; True if it is new (the caller then stores its payload)."""
        if seq >= self.segments:
            raise ProtocolError(f"segment seq {seq} beyond the transfer's {self.segments}")
        expect = min(self.mss, self.total - seq * self.mss)
        if offset != seq * self.mss or length != expect:
            raise ProtocolError(
                f"segment {seq} at offset {offset} with {length} bytes; expected offset "
                f"{seq * self.mss} with {expect} bytes"
            )
        if self._have[seq]:
            self.duplicates += 1
            self._due(now_ns)
            return False
        self._have[seq] = 1
        self._count += 1
        if seq > self._high:  # skipped over seqs never seen: a new hole
            self._due(now_ns)
        self._high = max(self._high, seq + 1)
        if seq == self._cum:
            nxt = self._have.find(0, self._cum)
            self._cum = self.segments if nxt < 0 else nxt
        self._pending += 1
        if self._pending >= self.ack_every or self.complete:
            self._due(now_ns)
        else:
            self._due(now_ns + self.ack_delay_ns)
        return True

    def ack_due(self, now_ns: int) -> bool:
        """True when an ACK should go out now."""
        return self._due_at is not None and now_ns >= self._due_at

    def next_deadline(self) -> int | None:
        """When the next ACK falls due (None if nothing to acknowledge)."""
        return self._due_at

    @property
    def high_seq(self) -> int:
        """Highest seq seen + 1."""
        return self._high

    def make_ack(self) -> tuple[int, list[int]]:
        """`(cum_seq, nacks)`: the cumulative ack and up to `max_nacks` holes below the highest
        seq seen, lowest first; sets `horizon`. Resets the ACK timer."""
        nacks: list[int] = []
        pos = self._cum
        horizon = self._high
        while True:
            pos = self._have.find(0, pos, self._high)
            if pos < 0:
                break
            if len(nacks) == self.max_nacks:
                horizon = pos  # the list is complete only up to here
                break
            nacks.append(pos)
            pos += 1
        self.horizon = max(horizon, self._cum)
        self._pending = 0
        self._due_at = None
        return self._cum, nacks

    def ack_segment(self) -> bytes:
        """`make_ack()` packed as an ACK datagram, horizon included."""
        cum, nacks = self.make_ack()
        return pack_ack(self.flow, self.transfer, self.total, cum, self.horizon, nacks)
