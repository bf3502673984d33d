"""A simple reliable bulk transfer over UDP, sans-IO: segments, selective NACKs, timers.

One transfer moves `total` bytes cut into `ceil(total / mss)` DATA segments; segment `seq`
carries bytes `[seq * mss, seq * mss + length)`. Every segment starts with a fixed 32-byte
header (network byte order)::

    magic u16 | flags u8 | reserved u8 | flow u32 | transfer u32 | seq u32 | offset u64 | total u64

`flags` is DATA, or ACK (with NACK when a list follows, DSACK when a duplicate is reported),
plus FIN on the last DATA segment. An ACK's `seq` is the cumulative ack (every seq below it
arrived); its `offset` is the *horizon*: the NACK payload (big-endian u32 seqs) lists every
missing seq in `[seq, horizon)`, so every other seq in that range has arrived (a selective ack).
The horizon is the highest seq seen + 1, or the last NACKed seq + 1 when the list was cut at
`max_nacks`. With DSACK the payload starts, before the NACK list, with a u32 count and that many
seqs that arrived again since the last ACK (RFC 2883's duplicate SACK, at most `MAX_DSACKS`).
With ECE (the ECN echo) the payload starts, before all of that, with a u32 count of the
segments that arrived CE-marked since the last ACK: what a congestion-control policy reads
(`FlowControl`).
`mss = mtu - 28 - 32` (IPv4 + UDP headers, then ours).

Why selective NACKs rather than RoCE's go-back-N: a cross-cluster link with 1-30 % loss and a
window of hundreds of segments would resend most of the window for every drop. The receiver
keeps a bitmap and names the holes; the sender resends only those, and a retransmission timer
(with exponential backoff, reset by progress) covers lost ACKs and lost retransmissions.

Why a reordering window: on a path that reorders, a hole in the receiver's bitmap is most often
a segment that is merely late. Losses are judged as RACK does (RFC 8985), by time, not by the
NACK: a segment is lost once a segment *sent after it* is known to have arrived and a
reordering window has passed since then; until then a reorder timer waits for it. On a path
that has shown no reordering the window is 0 once DupThresh = 3 later segments have arrived
(fast retransmit); otherwise it is a quarter of the minimum RTT times a multiplier, at most the
smoothed RTT. The multiplier grows by one each time the receiver's DSACK shows that a resend
was spurious (at most once a round trip) and falls back to 1 after 16 loss recoveries without
one. A resent segment counts as sent at its resend, so a NACK that predates the resend is never
acted on again: it takes a segment sent after the resend to arrive, roughly an RTT. A NACK alone
marks a segment lost only once it has been outstanding for an RTO (`nack_holdoff_ns`). On a
path that reorders the RTO is at least 2 srtt, so the timer never calls a segment lost before
RACK would. Timeouts resend only seqs not known to have arrived, so a lost ACK does not resend
the whole window. What the sender learns of the path (RTT, RTO, minimum RTT, reordering) lives
in a `PathEstimate` that outlives one transfer.

Both ends are fed events and the time (`now_ns`) and say when they next need attention
(`next_deadline()`); the I/O layer owns the socket and the clock. Drive the sender by calling
`segments_to_send(now)` after every `on_ack`/`on_nack` and whenever `next_deadline()` passes;
drive the receiver by calling `make_ack()` (or `ack_segment()`) whenever `ack_due(now)`.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from dataclasses import dataclass
from typing import Final

from fabric.cc.base import NS_PER_S, CongestionControl
from fabric.wire.frames import ProtocolError

__all__ = [
    "ACK",
    "DATA",
    "DSACK",
    "ECE",
    "FIN",
    "FlowControl",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_DSACKS",
    "NACK",
    "PathEstimate",
    "Segment",
    "UdpReceiver",
    "UdpSender",
    "ack_ce_count",
    "mss_for_mtu",
    "pack_ack",
    "pack_segment",
    "unpack_ack_payload",
    "unpack_nacks",
    "unpack_segment",
]

MAGIC: Final = 0xFAB1
DATA: Final = 0x01
ACK: Final = 0x02
NACK: Final = 0x04
FIN: Final = 0x08
DSACK: Final = 0x10
ECE: Final = 0x20  # ACK: the payload starts with a u32 count of CE-marked segments
MAX_DSACKS: Final = 16  # duplicates one ACK reports; more in between go unreported
_KNOWN_FLAGS = DATA | ACK | NACK | FIN | DSACK | ECE
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
    if (flags & ~_KNOWN_FLAGS or not flags & (DATA | ACK) or (flags & DATA and flags & ACK)
            or (flags & (DSACK | ECE) and not flags & ACK)):
        raise ProtocolError(f"segment flags {flags:#04x} are not a valid combination")
    if reserved:
        raise ProtocolError(f"segment reserved byte is {reserved}, must be 0")
    return Segment(flags, flow, transfer, seq, offset, total), view[HEADER_SIZE:]


def pack_ack(flow: int, transfer: int, total: int, cum_seq: int, horizon: int,
             nacks: list[int] | tuple[int, ...] = (),
             dsacks: list[int] | tuple[int, ...] = (), ce: int = 0) -> bytes:
    """An ACK datagram: cumulative ack, horizon, the missing seqs in [cum_seq, horizon), the
    seqs that arrived twice since the last ACK (`dsacks`) and how many segments arrived
    CE-marked since the last ACK (`ce`, the ECN echo)."""
    if len(dsacks) > MAX_DSACKS:
        raise ValueError(f"{len(dsacks)} DSACK seqs; at most {MAX_DSACKS} fit an ACK")
    seqs = [len(dsacks), *dsacks, *nacks] if dsacks else list(nacks)
    if ce:
        seqs.insert(0, ce)
    try:
        payload = b"".join(_U32.pack(s) for s in seqs)
    except struct.error as exc:
        raise ValueError(f"ACK seq out of range: {exc}") from None
    flags = ACK | (NACK if nacks else 0) | (DSACK if dsacks else 0) | (ECE if ce else 0)
    return pack_segment(flags, flow, transfer, cum_seq, horizon, total, payload)


def unpack_ack_payload(flags: int, payload: bytes | memoryview) -> tuple[list[int], list[int]]:
    """`(dsacks, nacks)` of an ACK's payload: the seqs that arrived twice and the missing
    ones (an ECN echo's count, `ack_ce_count`, is skipped)."""
    seqs = unpack_nacks(payload) if flags & (NACK | DSACK | ECE) else []
    if flags & ECE:
        if not seqs:
            raise ProtocolError("ECE flag on an ACK without its CE count")
        seqs = seqs[1:]
    dsacks: list[int] = []
    if flags & DSACK:
        n = seqs[0] if seqs else 0
        if not 0 < n <= min(MAX_DSACKS, len(seqs) - 1):
            raise ProtocolError(f"DSACK count {n} does not fit the ACK's {len(seqs)} u32s "
                                f"(1..{MAX_DSACKS} seqs after the count)")
        dsacks, seqs = seqs[1:n + 1], seqs[n + 1:]
    if flags & NACK and not seqs:
        raise ProtocolError("NACK flag on an ACK without a missing seq")
    return dsacks, seqs


def ack_ce_count(flags: int, payload: bytes | memoryview) -> int:
    """How many segments an ACK reports as having arrived CE-marked since the ACK before it."""
    if not flags & ECE:
        return 0
    if len(payload) < 4:
        raise ProtocolError("ECE flag on an ACK without its CE count")
    count: int = _U32.unpack_from(payload)[0]
    return count


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


MIN_RTO_NS: Final = 5_000_000
DUPTHRESH: Final = 3
REO_WND_PERSIST: Final = 16


@dataclass
class PathEstimate:
    """What a sender learns of one path and keeps from one transfer to the next (a node moves
    many units to the same peer): RFC 6298's smoothed RTT, its variation and the RTO they give,
    the minimum RTT, and RFC 8985's reordering state (seen or not, and the window multiplier
    that DSACKs of spurious retransmissions grow)."""

    rto_ns: int
    min_rto_ns: int = MIN_RTO_NS
    srtt_ns: int | None = None
    rttvar_ns: int = 0
    min_rtt_ns: int | None = None
    reordering: bool = False
    reo_wnd_mult: int = 1
    reo_wnd_persist: int = 0  # loss recoveries left before the multiplier falls back to 1

    @classmethod
    def initial(cls, rto_ns: int) -> PathEstimate:
        """A path nothing is known of yet: `rto_ns` until RTT samples refine it."""
        if rto_ns <= 0:
            raise ValueError(f"rto_ns must be positive, not {rto_ns}")
        return cls(rto_ns=rto_ns, min_rto_ns=min(rto_ns, MIN_RTO_NS))

    def rtt_sample(self, rtt_ns: int) -> None:
        """RFC 6298: srtt, rttvar, and the RTO they give (never below `min_rto_ns`)."""
        if self.srtt_ns is None:
            self.srtt_ns, self.rttvar_ns = rtt_ns, rtt_ns // 2
        else:
            self.rttvar_ns += (abs(self.srtt_ns - rtt_ns) - self.rttvar_ns) // 4
            self.srtt_ns += (rtt_ns - self.srtt_ns) // 8
        self._update_rto()

    def _update_rto(self) -> None:
        """srtt + 4 rttvar, never below `min_rto_ns`; on a path that reorders, never below
        2 srtt either: RACK may wait up to an srtt past an RTT before it calls a segment
        lost, and the timer must not call it lost first (RFC 8985's probe timeout is 2 srtt
        for the same reason). The late segments give no RTT samples once resent (Karn), so
        rttvar alone would not see how late they are."""
        if self.srtt_ns is None:
            return
        rto = max(self.min_rto_ns, self.srtt_ns + 4 * self.rttvar_ns)
        self.rto_ns = max(rto, 2 * self.srtt_ns) if self.reordering else rto

    def saw_reordering(self) -> None:
        """A segment arrived after one sent later (or a resend proved spurious)."""
        if not self.reordering:
            self.reordering = True
            self._update_rto()

    def min_rtt_sample(self, rtt_ns: int) -> None:
        self.min_rtt_ns = rtt_ns if self.min_rtt_ns is None else min(self.min_rtt_ns, rtt_ns)

    def reo_wnd_ns(self, *, confident: bool) -> int:
        """RFC 8985's reordering window. 0 while no reordering has been seen on the path and
        the loss is `confident` (DupThresh later segments arrived, or already recovering);
        else a quarter of the minimum RTT times the multiplier, at most the smoothed RTT."""
        if not self.reordering and confident:
            return 0
        if self.min_rtt_ns is None:
            return self.rto_ns // 8
        wnd = self.reo_wnd_mult * self.min_rtt_ns // 4
        return wnd if self.srtt_ns is None else min(wnd, self.srtt_ns)

    def spurious(self) -> None:
        """A DSACK showed a retransmission was spurious: widen the window (once a round)."""
        self.reo_wnd_mult += 1
        self.reo_wnd_persist = REO_WND_PERSIST

    def recovered(self) -> None:
        """A loss recovery ended: after 16 without a DSACK the window narrows back."""
        if self.reo_wnd_persist > 0:
            self.reo_wnd_persist -= 1
            if self.reo_wnd_persist == 0:
                self.reo_wnd_mult = 1


LATE_CAP_NS: Final = 2_000_000
CNP_INTERVAL_NS: Final = 4_000


class FlowControl:
    """One UDP flow's (peer, class) congestion control and pacing, across its transfers.

    A `fabric.cc` policy decides; this feeds it what the UDP path can tell and turns its two
    outputs into a pacing clock and a window. Every input is host time (`now_ns`, the
    sender's clock); the policy runs in fabric time, `(now - origin_ns) / scale`, so it sees
    the rates and delays of the topology file, as the RoCE transport's policies do.

    * **Pacing.** Each segment sent moves the pacing clock on by its wire size (payload +
      our header + IP/UDP) at the policy's `rate_bps` (over `scale` on the host). A sender
      woken late may catch up by at most `late_cap_ns`: lateness costs burstiness, not rate.
      A sender that stopped for its window or for data (`stalled`) restarts the clock when
      it resumes: waiting for an ACK earns no burst.
    * **Window.** The policy's `window_bytes` limits the payload in flight; a rate-based
      policy (`None`) leaves the sender's own fixed window.
    * **Signals.** Newly delivered bytes (cumulatively or selectively acknowledged) and the
      ACK's RTT sample go to `on_ack`; the bytes of segments the receiver saw CE-marked go
      first, with `ecn_echo` (DCTCP's marked fraction); an ACK with any CE mark is also a
      CNP, at most one per `cnp_interval_ns` of fabric time (DCQCN's notification point, as
      the RoCE receiver sends them). A loss recovery or a retransmission timeout is one
      `on_nak`. The policy's own timers (DCQCN's) run whenever the flow is polled: at every
      send slot and every ACK, rather than waking the sender on their own.
    """

    def __init__(self, cc: CongestionControl, *, scale: float = 1.0, origin_ns: int = 0,
                 cnp_interval_ns: int = CNP_INTERVAL_NS, late_cap_ns: int = LATE_CAP_NS,
                 overhead: int = IP_UDP_OVERHEAD + HEADER_SIZE,
                 max_window_bytes: int | None = None) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, not {scale}")
        self.cc = cc
        self.scale = scale
        self.origin_ns = origin_ns
        self.cnp_interval_ns = cnp_interval_ns
        self.late_cap_ns = late_cap_ns
        self.overhead = overhead
        self.max_window_bytes = max_window_bytes
        self._next_tx: int | None = None  # host ns the next segment may leave
        self._last_cnp: int | None = None  # fabric ns
        self.losses = 0  # loss events told to the policy
        self.marked_bytes = 0  # acknowledged bytes the receiver saw CE-marked
        self.cnps = 0

    def fabric_ns(self, now_ns: int) -> int:
        """Host time `now_ns` as the policy's (fabric) time."""
        return int((now_ns - self.origin_ns) / self.scale)

    @property
    def rate_bps(self) -> float:
        """The pacing rate on the host: the policy's rate over the time scale."""
        return max(1, self.cc.rate_bps) / self.scale

    @property
    def window_bytes(self) -> int | None:
        """Payload bytes the policy allows in flight (at most `max_window_bytes`), or None."""
        w = self.cc.window_bytes
        if w is None or self.max_window_bytes is None:
            return w
        return min(w, self.max_window_bytes)

    def may_send(self, now_ns: int) -> bool:
        """The pacing clock lets a segment leave now."""
        return self._next_tx is None or now_ns >= self._next_tx

    def next_send_ns(self, now_ns: int) -> int:
        """When the pacing clock next lets a segment leave (host ns)."""
        return now_ns if self._next_tx is None else max(now_ns, self._next_tx)

    @property
    def paced_ns(self) -> int:
        """The pacing clock: when the next segment may leave (0 before the first)."""
        return 0 if self._next_tx is None else self._next_tx

    def stalled(self, now_ns: int) -> None:
        """The sender stopped for its window or for want of data, not for the pacing clock:
        when it resumes, the clock starts from then, so a pause is no credit for a burst."""
        if self._next_tx is not None and self._next_tx <= now_ns:
            self._next_tx = None

    def sent(self, now_ns: int, payload: int) -> None:
        """A segment of `payload` bytes left at `now_ns`: move the pacing clock on."""
        start = now_ns if self._next_tx is None else max(self._next_tx,
                                                         now_ns - self.late_cap_ns)
        self._next_tx = start + round((payload + self.overhead) * 8 * NS_PER_S / self.rate_bps)

    def poll(self, now_ns: int) -> None:
        """Run the policy's timers that have fallen due."""
        t = self.fabric_ns(now_ns)
        at = self.cc.next_timer_ns()
        if at is not None and at <= t:
            self.cc.on_timer(t)

    def on_ack(self, now_ns: int, acked_bytes: int, rtt_ns: int | None = None,
               marked_bytes: int = 0) -> None:
        """An ACK newly delivered `acked_bytes`, `marked_bytes` of them CE-marked; `rtt_ns`
        its RTT sample (host time), if it had one."""
        self.poll(now_ns)
        t = self.fabric_ns(now_ns)
        rtt = None if rtt_ns is None else max(1, int(rtt_ns / self.scale))
        marked = min(marked_bytes, acked_bytes)
        if marked:
            self.marked_bytes += marked
            if self._last_cnp is None or t - self._last_cnp >= self.cnp_interval_ns:
                self._last_cnp = t
                self.cnps += 1
                self.cc.on_cnp(t)
            self.cc.on_ack(t, marked, rtt, ecn_echo=True)
            rtt = None
        if acked_bytes > marked or rtt is not None:
            self.cc.on_ack(t, acked_bytes - marked, rtt)

    def on_loss(self, now_ns: int) -> None:
        """A loss recovery began, or the retransmission timer fired."""
        self.losses += 1
        self.cc.on_nak(self.fabric_ns(now_ns))


class UdpSender:
    """The sending end of one transfer: which segments to (re)send, and when.

    `sent` counts every DATA transmission and `sent_bytes` their payload bytes (repeats
    included); `retransmitted` the transmissions that were repeats, `timeouts` the
    retransmission-timer expiries and `spurious` the retransmissions a DSACK showed were not
    needed (the original had arrived).

    `path` carries what is known of the path between transfers (give the same `PathEstimate`
    to every sender to one peer; with it, its RTO replaces `rto_ns`). `reorder_ns` fixes the
    reordering window instead of RACK's adaptive one; `nack_holdoff_ns` (default: the RTO) is
    how long a NACKed segment must have been outstanding before the NACK alone marks it lost.

    `control` (a `FlowControl`, shared by every transfer of one flow) paces what the sender
    sends and limits it by the congestion-control policy's window (else `window_segments`),
    and is told what every ACK delivered and every loss; without it the sender sends all the
    window allows at once, as it always did. With it, segments marked lost or timed out wait
    for their pacing slot in a resend queue (ahead of new data, and outside the window: they
    replace segments that left the path).
    """

    def __init__(self, flow: int, transfer: int, total: int, mss: int, window_segments: int,
                 rto_ns: int, *, nack_holdoff_ns: int | None = None,
                 reorder_ns: int | None = None, max_backoff: int = 8,
                 path: PathEstimate | None = None,
                 control: FlowControl | None = None) -> None:
        if window_segments <= 0 or rto_ns <= 0:
            raise ValueError("window_segments and rto_ns must be positive")
        self.flow, self.transfer, self.total, self.mss = flow, transfer, total, mss
        self.segments = _segment_count(total, mss)
        self.window_segments = window_segments
        self.path = path if path is not None else PathEstimate.initial(rto_ns)
        self._holdoff = nack_holdoff_ns
        self._fixed_reo = reorder_ns
        self.max_backoff = max_backoff
        self._next = 0  # next never-sent seq
        self._cum = 0  # every seq below this is acknowledged
        # outstanding seq -> (last send time, send serial); in send order, so oldest first
        self._out: dict[int, tuple[int, int]] = {}
        self._serial = 0
        self._rack_serial = -1  # the newest transmission known to have arrived ...
        self._rack_rtt = 0  # ... and its RTT
        self._fack = -1  # highest seq known to have arrived
        self._lost: set[int] = set()  # marked lost, to resend
        self._resent: set[int] = set()  # sent more than once: ambiguous RTT (Karn)
        self._fast: set[int] = set()  # last sent because RACK or a NACK marked it lost
        self._timed_out: set[int] = set()  # last sent because the retransmission timer fired
        self._reo_deadline: int | None = None
        self._recover: int | None = None  # in a loss recovery until this seq is acknowledged
        self._dsack_round: int | None = None  # the window grows once until this is acked
        self._sample: int | None = None  # this ACK's RTT sample so far
        self._backoff = 1
        self.control = control
        self._resend: dict[int, bool] = {}  # paced: seq -> resent for the timer (else lost)
        self._newly = 0  # payload bytes the ACK being read newly delivered
        self.sent = 0
        self.sent_bytes = 0
        self.retransmitted = 0
        self.timeouts = 0
        self.spurious = 0

    @property
    def rto_ns(self) -> int:
        """The current retransmission timeout (before backoff)."""
        return self.path.rto_ns

    @property
    def srtt_ns(self) -> int | None:
        return self.path.srtt_ns

    @property
    def nack_holdoff_ns(self) -> int:
        return self.path.rto_ns if self._holdoff is None else self._holdoff

    @property
    def reorder_ns(self) -> int:
        """The reordering window now: how long after a later-sent segment arrived a missing
        one is still given before it counts as lost."""
        if self._fixed_reo is not None:
            return self._fixed_reo
        sacked = (self._next - self._cum) - len(self._out)
        recovering = self._recover is not None
        return self.path.reo_wnd_ns(confident=recovering or sacked >= DUPTHRESH)

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
        if self._out.pop(seq, None) is not None:
            self._resent.add(seq)
            self.retransmitted += 1
        self._serial += 1
        self._out[seq] = (now_ns, self._serial)  # re-insert: dict order stays send order
        self.sent += 1
        segment = self.segment(seq)
        self.sent_bytes += segment[2]
        out.append(segment)

    def _delivered(self, seq: int, now_ns: int) -> None:
        """`seq` is known to have arrived (cumulatively or selectively acknowledged)."""
        entry = self._out.pop(seq, None)
        self._lost.discard(seq)
        if entry is None:
            return
        self._resend.pop(seq, None)
        self._newly += self.segment(seq)[2]
        at, serial = entry
        rtt = now_ns - at
        path = self.path
        if seq in self._resent:
            # acknowledged sooner than the resend could have travelled: the original arrived
            # (RFC 8985 step 2), which says nothing of when the resend left
            if path.min_rtt_ns is not None and rtt < path.min_rtt_ns:
                return
        else:
            path.min_rtt_sample(rtt)
            if self._sample is None or rtt > self._sample:
                self._sample = rtt
            if seq < self._fack:  # sent once, and a later seq was reported before it
                path.saw_reordering()
        self._fack = max(self._fack, seq)
        if serial > self._rack_serial:
            self._rack_serial, self._rack_rtt = serial, rtt

    def _detect_losses(self, now_ns: int) -> None:
        """RACK (RFC 8985): a segment sent before the newest one known to have arrived is lost
        once the reordering window has passed since that newer one would have told us; else
        the reorder timer waits for it."""
        self._reo_deadline = None
        if self._rack_serial < 0:
            return
        reo = self.reorder_ns
        rack_serial, rack_rtt = self._rack_serial, self._rack_rtt
        for seq, (at, serial) in self._out.items():
            if serial > rack_serial:
                break  # sent after the newest delivery: no evidence yet
            if seq in self._lost:
                continue
            when = at + rack_rtt + reo
            if when > now_ns:
                self._reo_deadline = when  # send order: every later one is due later still
                break
            self._lost.add(seq)

    def segments_to_send(self, now_ns: int) -> list[tuple[int, int, int]]:
        """Segments to transmit now: ones marked lost, timed-out ones, then new ones in the
        window (with a `control`, only as many as its pacing clock lets leave now)."""
        if self.control is not None:
            return self._paced(now_ns, self.control)
        out: list[tuple[int, int, int]] = []
        self._detect_losses(now_ns)
        if self._lost:
            if self._recover is None:
                self._recover = self._next
            for seq in sorted(self._lost):
                if seq in self._out:
                    self._send(seq, now_ns, out)
                    self._fast.add(seq)
                    self._timed_out.discard(seq)
            self._lost.clear()

        for seq in self._expire(now_ns, ()):
            self._send(seq, now_ns, out)
            self._fast.discard(seq)
            self._timed_out.add(seq)

        limit = min(self.segments, self._cum + self.window_segments)
        while self._next < limit:
            self._send(self._next, now_ns, out)
            self._next += 1
        return out

    def _expire(self, now_ns: int, queued: Container[int]) -> list[int]:
        """The segments in flight longer than the retransmission timeout, in send order, but
        those already `queued` for a resend; if any, one timeout: the backoff doubles."""
        rto = self.path.rto_ns * self._backoff
        expired = []
        for seq, (at, _) in self._out.items():
            if at + rto > now_ns:
                break
            if seq not in queued:
                expired.append(seq)
        if expired:
            self.timeouts += 1
            self._backoff = min(self._backoff * 2, self.max_backoff)
        return expired

    def _paced(self, now_ns: int, control: FlowControl) -> list[tuple[int, int, int]]:
        """`segments_to_send` under a `FlowControl`: losses and timeouts queue resends and
        tell the policy; then segments leave one pacing slot at a time, resends first, new
        ones while the window has room."""
        out: list[tuple[int, int, int]] = []
        control.poll(now_ns)
        self._detect_losses(now_ns)
        if self._lost:
            if self._recover is None:
                self._recover = self._next
                control.on_loss(now_ns)  # one cut per recovery, as TCP's
            for seq in sorted(self._lost):
                if seq in self._out:
                    self._resend.setdefault(seq, False)
            self._lost.clear()
        expired = self._expire(now_ns, self._resend)
        if expired:
            control.on_loss(now_ns)
            for seq in expired:
                self._resend[seq] = True
        while control.may_send(now_ns):
            if self._resend:
                seq = next(iter(self._resend))
                timed = self._resend.pop(seq)
                self._send(seq, now_ns, out)
                (self._timed_out if timed else self._fast).add(seq)
                (self._fast if timed else self._timed_out).discard(seq)
            elif self._window_open():
                self._send(self._next, now_ns, out)
                self._next += 1
            else:
                control.stalled(now_ns)
                break
            control.sent(now_ns, out[-1][2])
        return out

    def _window_open(self) -> bool:
        """A new segment may leave: there is one, and the window has room for it (one
        segment may always be in flight, so a window below one segment cannot stall)."""
        if self._next >= self.segments:
            return False
        assert self.control is not None
        window = self.control.window_bytes
        if window is None:
            window = self.window_segments * self.mss
        in_flight = (len(self._out) - len(self._resend)) * self.mss
        return in_flight <= 0 or in_flight + self.segment(self._next)[2] <= window

    def _fed(self, ce: int, now_ns: int) -> None:
        """Tell the flow's policy what the ACK just read delivered (its RTT sample is still
        pending in `_sample`), `ce` segments of it CE-marked."""
        newly, self._newly = self._newly, 0
        if self.control is not None and (newly or self._sample is not None):
            self.control.on_ack(now_ns, newly, self._sample, ce * self.mss)

    def _rtt_sample(self) -> None:
        """One RTT sample per ACK (RFC 6298): the longest RTT of the segments it newly reports
        that were sent only once (Karn). Not the newest one's: on a reordering path that is
        biased to the segments that overtook others, which leaves the RTO below the RTT of
        the late ones, and then the timer resends what is merely late."""
        if self._sample is not None:
            self.path.rtt_sample(self._sample)
            self._sample = None

    def on_ack(self, cum_seq: int, now_ns: int) -> None:
        """The receiver has every seq below `cum_seq`."""
        self._cumulative(cum_seq, now_ns)
        self._fed(0, now_ns)
        self._rtt_sample()

    def _cumulative(self, cum_seq: int, now_ns: int) -> None:
        if cum_seq > self._next:
            raise ProtocolError(f"ACK of seq {cum_seq} but only {self._next} segments were sent")
        if cum_seq <= self._cum:
            return
        for seq in range(self._cum, cum_seq):
            self._delivered(seq, now_ns)
            self._resent.discard(seq)
        self._cum = cum_seq
        self._backoff = 1
        if self._recover is not None and cum_seq >= self._recover:
            self._recover = None  # every seq outstanding when the recovery began has arrived
            self.path.recovered()
        if self._dsack_round is not None and cum_seq >= self._dsack_round:
            self._dsack_round = None

    def on_nack(self, seqs: list[int] | tuple[int, ...], now_ns: int, *,
                horizon: int | None = None) -> None:
        """The receiver reports these seqs missing. With `horizon` (from the ACK), every other
        seq in [acked, horizon) has arrived: what RACK judges losses by. A NACKed seq
        outstanding for `nack_holdoff_ns` is lost whatever else arrived."""
        self._selective(seqs, now_ns, horizon)
        self._fed(0, now_ns)
        self._rtt_sample()

    def _selective(self, seqs: list[int] | tuple[int, ...], now_ns: int,
                   horizon: int | None) -> None:
        if horizon is not None:
            missing = set(seqs)
            for seq in range(self._cum, min(horizon, self._next)):
                if seq not in missing:
                    self._delivered(seq, now_ns)
        holdoff = self.nack_holdoff_ns
        for seq in seqs:
            entry = self._out.get(seq)
            if entry is not None and now_ns - entry[0] >= holdoff:
                self._lost.add(seq)

    def on_dsack(self, seq: int) -> None:
        """The receiver got `seq` twice, so its last resend was not needed. If RACK or a NACK
        had marked it lost, reordering fooled the window: widen it (RFC 8985, once a round).
        A resend after a timeout counts as spurious too (the timer fired early, or an ACK was
        lost) but says nothing of reordering; a duplicate of a seq never resent is the link's."""
        if seq in self._timed_out:
            self._timed_out.discard(seq)
            self.spurious += 1
            return
        if seq not in self._fast:
            return
        self._fast.discard(seq)
        self.spurious += 1
        self.path.saw_reordering()
        if self._fixed_reo is None and self._dsack_round is None:
            self.path.spurious()
            self._dsack_round = self._next

    def on_ack_segment(self, segment: Segment, payload: memoryview | bytes, now_ns: int) -> None:
        """Feed a whole decoded ACK datagram (cumulative ack, horizon, DSACK, NACK list)."""
        if not segment.flags & ACK:
            raise ProtocolError(f"expected an ACK segment, got flags {segment.flags:#04x}")
        dsacks, nacks = unpack_ack_payload(segment.flags, payload)
        for seq in dsacks:
            self.on_dsack(seq)
        self._cumulative(segment.seq, now_ns)
        self._selective(nacks, now_ns, segment.offset)
        self._fed(ack_ce_count(segment.flags, payload), now_ns)
        self._rtt_sample()

    def next_deadline(self) -> int | None:
        """The earlier of the reorder timer and the oldest unacked segment's timeout (None
        when nothing is outstanding); with a `control`, also the next pacing slot while a
        resend waits or the window has room for a new segment."""
        if self.done:
            return None
        at = None
        # the oldest segment not already waiting for its resend's pacing slot
        oldest = next((t for seq, (t, _) in self._out.items() if seq not in self._resend),
                      None)
        if oldest is not None:
            at = oldest + self.path.rto_ns * self._backoff
            if self._reo_deadline is not None:
                at = min(at, self._reo_deadline)
        control = self.control
        if control is not None and (self._resend or self._window_open()):
            slot = control.paced_ns
            at = slot if at is None else min(at, slot)
        return at


class UdpReceiver:
    """The receiving end of one transfer: a bitmap of seqs, and when to ACK/NACK.

    ACKs go out every `ack_every` new segments, `ack_delay_ns` after the first unacked one, and
    at once on a new hole, a duplicate (the sender is retransmitting: our ACK was lost, or
    reordering fooled it; the ACK reports the seq as a DSACK) or completion. `duplicates`
    counts segments that arrived more than once.
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
        self._dups: list[int] = []  # duplicates since the last ACK
        self.horizon = 0
        """The horizon of the last `make_ack()`: every missing seq below it was in the list."""
        self.dsacks: list[int] = []
        """The duplicates the last `make_ack()` reports (those since the one before, at most
        `MAX_DSACKS`)."""
        self._ce_pending = 0
        self.ce = 0
        """The CE-marked new segments the last `make_ack()` reports (those since the one
        before): the ECN echo the sender's congestion control reads."""
        self.ce_marked = 0  # every new segment that arrived CE-marked

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

    def on_data(self, seq: int, offset: int, length: int, now_ns: int, ce: bool = False,
                ) -> bool:
        """A DATA segment arrived; True if it is new (the caller then stores its payload).
        `ce`: it arrived CE-marked (its IP ECN field), which the next ACK echoes."""
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
            if len(self._dups) < MAX_DSACKS:
                self._dups.append(seq)
            self._due(now_ns)
            return False
        self._have[seq] = 1
        self._count += 1
        if ce:
            self._ce_pending += 1
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
        seq seen, lowest first; sets `horizon` and `dsacks`. Resets the ACK timer."""
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
        self.dsacks, self._dups = self._dups, []
        self.ce, self._ce_pending = self._ce_pending, 0
        self.ce_marked += self.ce
        self._pending = 0
        self._due_at = None
        return self._cum, nacks

    def ack_segment(self) -> bytes:
        """`make_ack()` packed as an ACK datagram, horizon and DSACK included."""
        cum, nacks = self.make_ack()
        return pack_ack(self.flow, self.transfer, self.total, cum, self.horizon, nacks,
                        self.dsacks, self.ce)
