"""Sans-IO RoCEv2 reliable-connected queue pairs: a go-back-N sender and its receiver.

`QpSender` turns posted RDMA WRITE messages (one KV chunk each) into packets of at most
`payload_mtu` bytes, paced at the congestion-control policy's rate and limited by its window;
`QpReceiver` accepts packets in PSN order, says where each payload goes, and answers with ACKs,
NAKs and CNPs. Neither touches a socket or a clock: every call takes `now_ns`, and the I/O
layer sleeps until `QpSender.next_send_ns()` / `next_deadline()`.

Why go-back-N: it is what RoCE NICs implement (IBA's RC responder accepts only the expected
PSN and NAKs the first gap with "PSN sequence error"), and the point of this transport is to
behave like RoCE under loss: a drop costs the whole window in flight, which is why RoCE fabrics
are run lossless (PFC) and why loss hurts them so much. `fabric.wire.udp` is the selective
alternative for lossy long-haul links.

Semantics, following IBA:

* PSNs are consecutive across messages; a message of `n` bytes takes `max(1, ceil(n / pmtu))`
  packets: WRITE ONLY, or FIRST, MIDDLE..., LAST.
* An ACK for PSN `p` acknowledges every packet up to and including `p`. A NAK (PSN sequence
  error) for `p` acknowledges everything below `p` and asks for a resend from `p`.
* The sender sets AckReq on every `ack_every`-th PSN, on the last packet of every message, and
  on a packet after which the window (or the packet limit) is closed, so the ACK that reopens
  it is always requested.
* The receiver NAKs a gap once; it NAKs again only after the expected PSN has arrived and a new
  gap opens. A lost NAK or a lost retransmission is recovered by the sender's RTO.

PSN wrap: PSNs are absolute ints in here and 24 bits on the wire (`psn & 0xFFFFFF`). Both ends
map a wire PSN back to the absolute PSN nearest their reference (the sender's oldest unacked
PSN, the receiver's expected PSN): the signed 24-bit difference, in [-2**23, 2**23). That is
exact as long as fewer than 2**23 packets are outstanding, IBA's own limit, so
`max_inflight_packets` must stay below 2**23.

RTO: RFC 6298 from RTT samples (srtt + 4 * rttvar), never below the `rto_ns` floor the caller
gives (in fabric time). A timeout goes back to the oldest unacked PSN, doubles the backoff (at
most 64x) and is reported to the policy as a loss (`cc.on_nak`); an ACK that acknowledges new
data resets the backoff. RTT samples come only from ACKs for ack-requested packets that were
never retransmitted (Karn).

Opcode sequence errors (a MIDDLE or LAST without a FIRST, a FIRST inside an unfinished
message, a payload overrunning the RETH length) raise `RoceProtocolError` rather than NAK:
IBA answers them with a fatal "NAK invalid request" that moves the QP to the error state, and
our own sender never produces them (go-back-N resumes at a PSN, so the receiver's message
state stays right), so one means a bug or a stray packet, and the I/O layer should tear the QP
down. Only packets with the expected PSN are checked, as in IBA.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from dataclasses import dataclass
from typing import Final, NamedTuple

from fabric.cc.base import CongestionControl
from fabric.errors import FabricError
from fabric.roce.inttrailer import records_of
from fabric.roce.wire import (
    DATA_OPCODES,
    INT_EMPTY,
    PSN_MASK,
    RDMA_WRITE_FIRST,
    RDMA_WRITE_LAST,
    RDMA_WRITE_MIDDLE,
    RDMA_WRITE_ONLY,
    RETH_OPCODES,
    wire_size,
)

__all__ = [
    "MAX_BACKOFF",
    "Ack",
    "QpReceiver",
    "QpSender",
    "ReceiverStats",
    "RoceProtocolError",
    "RxResult",
    "SenderStats",
    "TxPacket",
    "psn_delta",
]

NS_PER_S: Final = 1_000_000_000
MAX_BACKOFF: Final = 64
_PSN_MOD = 1 << 24
_PSN_HALF = 1 << 23


class RoceProtocolError(FabricError):
    """The peer broke the RC protocol (opcode sequence error, overrun, ACK of an unsent PSN);
    the queue pair cannot continue and should be torn down."""


def psn_delta(psn_wire: int, reference: int) -> int:
    """Signed distance from absolute PSN `reference` to the 24-bit `psn_wire`, in
    [-2**23, 2**23): `reference + psn_delta(w, reference)` is the absolute PSN of `w`."""
    d = (psn_wire - reference) & PSN_MASK
    return d - _PSN_MOD if d >= _PSN_HALF else d


class TxPacket(NamedTuple):
    """One packet to transmit now. `psn` is absolute (send `psn & 0xFFFFFF`); the payload is
    bytes `[msg_offset, msg_offset + length)` of message `msg_id` (of `msg_len` bytes), whose
    RETH the I/O layer adds on FIRST/ONLY packets."""

    psn: int
    opcode: int
    msg_id: int
    msg_offset: int
    length: int
    msg_len: int
    ack_req: bool
    retransmission: bool


class Ack(NamedTuple):
    """An ACK (or NAK) the receiver wants sent: build it with `wire.ack_packet(dest_qp, psn,
    result.msn, nak, becn, int_trailer)`."""

    psn: int  # 24-bit wire PSN
    nak: bool
    becn: bool
    int_trailer: bytes


class RxResult(NamedTuple):
    """What to do with one received data packet. When `accept` is set, write the payload at
    `offset` of the message at (`msg_va`, `msg_rkey`) of `msg_len` bytes; `msg_done` says it was
    the message's last packet. `ack`, when not None, is to be sent now (with `msn` in its AETH);
    so is a CNP if `cnp`."""

    accept: bool
    msg_va: int
    msg_len: int
    offset: int
    msg_done: bool
    ack: Ack | None
    cnp: bool
    msg_rkey: int = 0
    msn: int = 0  # the receiver's MSN after this packet (24-bit), for the ACK's AETH


@dataclass(slots=True)
class SenderStats:
    """Counters of one `QpSender` (payload bytes; RTTs in ns)."""

    packets_sent: int = 0
    bytes_sent: int = 0
    retransmitted: int = 0  # packets sent again (go-back-N resends count one each)
    timeouts: int = 0
    naks: int = 0
    cnps: int = 0
    acks: int = 0
    stale_acks: int = 0  # ACKs/NAKs for PSNs already acknowledged
    messages_completed: int = 0
    rtt_samples: int = 0
    rtt_last_ns: int | None = None
    rtt_min_ns: int | None = None
    rtt_max_ns: int | None = None
    rtt_sum_ns: int = 0


@dataclass(slots=True)
class ReceiverStats:
    """Counters of one `QpReceiver`."""

    accepted: int = 0
    bytes_accepted: int = 0
    duplicates: int = 0
    out_of_order: int = 0  # packets past a gap, dropped
    messages: int = 0
    acks: int = 0
    naks: int = 0
    cnps: int = 0
    ce_marked: int = 0


class _Msg:
    __slots__ = ("first_byte", "first_psn", "msg_id", "nbytes", "npkts")

    def __init__(self, msg_id: int, nbytes: int, first_psn: int, npkts: int,
                 first_byte: int) -> None:
        self.msg_id = msg_id
        self.nbytes = nbytes
        self.first_psn = first_psn
        self.npkts = npkts
        self.first_byte = first_byte


def _first_psn(m: _Msg) -> int:
    return m.first_psn


class QpSender:
    """The requester side of one RC queue pair: RDMA WRITEs, go-back-N, paced by `cc`.

    Drive it with `poll(now)` until it returns None, then sleep until the earlier of
    `next_send_ns(now)` and `next_deadline()` (or until an ACK, NAK or CNP arrives), calling
    `on_timer(now)` once a deadline has passed. `initial_psn` is the QP's starting PSN (absolute;
    the receiver must be given the same). Window and pacing count payload bytes for the
    window (what the policy's `window_bytes` and `on_ack(acked_bytes)` mean) and wire bytes
    (`wire.wire_size`: IPv4 + UDP + BTH [+ RETH] + payload + pad [+ INT] + ICRC) for pacing.
    """

    def __init__(self, *, qpn: int, dest_qpn: int, payload_mtu: int, cc: CongestionControl,
                 rto_ns: int = 1_000_000, ack_every: int = 4,
                 max_inflight_packets: int = 1 << 12, int_enabled: bool = False,
                 initial_psn: int = 0) -> None:
        if not 0 <= qpn <= PSN_MASK or not 0 <= dest_qpn <= PSN_MASK:
            raise ValueError(f"QP numbers are 24-bit; got qpn={qpn}, dest_qpn={dest_qpn}")
        if payload_mtu <= 0:
            raise ValueError(f"payload_mtu must be positive bytes, got {payload_mtu}")
        if rto_ns <= 0:
            raise ValueError(f"rto_ns must be positive, got {rto_ns}")
        if ack_every <= 0:
            raise ValueError(f"ack_every must be >= 1, got {ack_every}")
        if not 0 < max_inflight_packets < _PSN_HALF:
            raise ValueError(f"max_inflight_packets must be in [1, 2**23) for 24-bit PSNs, got "
                             f"{max_inflight_packets}")
        self.qpn = qpn
        self.dest_qpn = dest_qpn
        self.payload_mtu = payload_mtu
        self.cc = cc
        self.min_rto_ns = rto_ns
        self.ack_every = ack_every
        self.max_inflight_packets = max_inflight_packets
        self.int_enabled = int_enabled
        self._int_len = len(INT_EMPTY) if int_enabled else 0
        self.stats = SenderStats()

        self._msgs: list[_Msg] = []
        self._head = 0  # index of the oldest message not yet completed
        self._cur = 0  # index of the message holding PSN _nxt (len(_msgs) at the end)
        self._end_psn = initial_psn  # first PSN not yet posted
        self._end_byte = 0
        self._una = initial_psn  # oldest unacknowledged PSN
        self._una_byte = 0  # stream offset of packet _una
        self._nxt = initial_psn  # next PSN to send
        self._nxt_byte = 0
        self._high = initial_psn  # highest PSN ever sent + 1: below it are retransmissions
        self._sent_at: dict[int, int] = {}  # ack-requested, never-resent PSN -> send time
        self._completed: list[int] = []

        self._next_tx_ns = -1  # earliest departure of the next packet (pacing)
        self._pace_rem = 0  # sub-ns remainder of the pacing clock, in 1/rate ns
        self._pace_rate = 0
        self.srtt_ns: int | None = None
        self.rttvar_ns = 0
        self.rto_ns = rto_ns  # current RTO before backoff
        self.backoff = 1
        self._rto_deadline: int | None = None

    # -- posting and sending -----------------------------------------------------------------

    def post(self, msg_id: int, nbytes: int) -> None:
        """Queue one RDMA WRITE of `nbytes` (0 allowed: one empty WRITE ONLY), sent after every
        message posted before it."""
        if nbytes < 0:
            raise ValueError(f"message {msg_id}: nbytes must be >= 0, got {nbytes}")
        npkts = max(1, -(-nbytes // self.payload_mtu))
        self._msgs.append(_Msg(msg_id, nbytes, self._end_psn, npkts, self._end_byte))
        self._end_psn += npkts
        self._end_byte += nbytes

    def _window_allows(self, length: int) -> bool:
        if self._nxt - self._una >= self.max_inflight_packets:
            return False
        window = self.cc.window_bytes
        inflight = self._nxt_byte - self._una_byte
        # one packet may always be in flight, so a window below one MTU cannot stall the QP
        return window is None or inflight == 0 or inflight + length <= window

    def _next_length(self) -> int:
        m = self._msgs[self._cur]
        return min(self.payload_mtu, m.nbytes - (self._nxt - m.first_psn) * self.payload_mtu)

    def _sendable(self) -> bool:
        return self._nxt < self._end_psn and self._window_allows(self._next_length())

    @property
    def paced_ns(self) -> int:
        """The pacing clock: when the next packet may leave (in the past when idle). An I/O
        layer whose timer fired late polls with `max(paced_ns, now - slack)` so the lateness
        costs burstiness, not rate."""
        return self._next_tx_ns

    def next_send_ns(self, now_ns: int) -> int | None:
        """When `poll` could next return a packet; None while nothing is posted or the window
        is closed (only an event can change that)."""
        if not self._sendable():
            return None
        return max(now_ns, self._next_tx_ns)

    def poll(self, now_ns: int) -> TxPacket | None:
        """The packet to transmit now, if one is posted, the window allows it and its paced
        departure time has come; the caller sends it at once."""
        if now_ns < self._next_tx_ns or not self._sendable():
            return None
        m = self._msgs[self._cur]
        psn = self._nxt
        k = psn - m.first_psn
        offset = k * self.payload_mtu
        length = min(self.payload_mtu, m.nbytes - offset)
        last = k == m.npkts - 1
        if m.npkts == 1:
            opcode = RDMA_WRITE_ONLY
        elif k == 0:
            opcode = RDMA_WRITE_FIRST
        else:
            opcode = RDMA_WRITE_LAST if last else RDMA_WRITE_MIDDLE
        retransmission = psn < self._high
        self._nxt = psn + 1
        self._nxt_byte += length
        if last:
            self._cur += 1
        if self._nxt > self._high:
            self._high = self._nxt
        ack_req = last or (psn + 1) % self.ack_every == 0 or not self._sendable()
        if ack_req and not retransmission:
            self._sent_at[psn] = now_ns

        rate = max(1, self.cc.rate_bps)
        start = self._next_tx_ns
        if now_ns > start or rate != self._pace_rate:  # idle, or a new rate: no carried remainder
            start, self._pace_rem, self._pace_rate = now_ns, 0, rate
        num = wire_size(opcode, length, self._int_len) * 8 * NS_PER_S + self._pace_rem
        gap, self._pace_rem = divmod(num, rate)
        self._next_tx_ns = start + gap

        if self._rto_deadline is None:
            self._rto_deadline = now_ns + self.rto_ns * self.backoff
        st = self.stats
        st.packets_sent += 1
        st.bytes_sent += length
        if retransmission:
            st.retransmitted += 1
        return TxPacket(psn, opcode, m.msg_id, offset, length, m.nbytes, ack_req, retransmission)

    # -- PSN bookkeeping ---------------------------------------------------------------------

    def _locate(self, psn: int) -> int:
        """Index of the message holding `psn` (len(_msgs) when `psn` is the end)."""
        if psn >= self._end_psn:
            return len(self._msgs)
        return bisect_right(self._msgs, psn, lo=self._head, key=_first_psn) - 1

    def _byte_at(self, psn: int) -> int:
        i = self._locate(psn)
        if i == len(self._msgs):
            return self._end_byte
        m = self._msgs[i]
        return m.first_byte + (psn - m.first_psn) * self.payload_mtu

    def _rewind(self, psn: int) -> None:
        """Go back: the next packet sent is `psn`; later RTT samples would be ambiguous."""
        self._nxt = psn
        self._nxt_byte = self._byte_at(psn)
        self._cur = self._locate(psn)
        sent_at = self._sent_at
        while sent_at:
            last = next(reversed(sent_at))
            if last < psn:
                break
            del sent_at[last]

    def _advance(self, new_una: int) -> int:
        """Everything below `new_una` is acknowledged; returns the newly acked payload bytes."""
        new_byte = self._byte_at(new_una)
        acked = new_byte - self._una_byte
        self._una, self._una_byte = new_una, new_byte
        if self._nxt < new_una:  # the receiver had more than we thought (e.g. after an RTO)
            self._nxt, self._nxt_byte = new_una, new_byte
            self._cur = self._locate(new_una)
        msgs = self._msgs
        head = self._head
        while head < len(msgs) and msgs[head].first_psn + msgs[head].npkts <= new_una:
            self._completed.append(msgs[head].msg_id)
            head += 1
        self.stats.messages_completed += head - self._head
        self._head = head
        if head > 256 and head * 2 > len(msgs):  # drop completed messages now and then
            del msgs[:head]
            self._cur -= head
            self._head = 0
        return acked

    def _absolute(self, psn: int) -> int:
        return self._una + psn_delta(psn, self._una)

    # -- events ------------------------------------------------------------------------------

    def on_ack(self, now_ns: int, psn: int, int_trailer: bytes = b"",
               becn: bool = False) -> None:
        """A positive ACK for (24-bit) `psn`: every PSN up to it arrived. `becn` is the ECN
        echo and `int_trailer` the echoed INT, both handed to the policy."""
        self.stats.acks += 1
        p = self._absolute(psn)
        if p < self._una:
            self.stats.stale_acks += 1
            return
        if p >= self._high:
            raise RoceProtocolError(
                f"QP {self.qpn}: ACK for PSN {psn & PSN_MASK} but PSN {self._high & PSN_MASK} "
                f"is the next never sent")
        acked = self._advance(p + 1)
        rtt = None
        sent_at = self._sent_at
        while sent_at:
            first = next(iter(sent_at))
            if first > p:
                break
            at = sent_at.pop(first)
            if first == p:
                rtt = now_ns - at
        if rtt is not None:
            self._rtt_sample(rtt)
        self.backoff = 1
        self._rto_deadline = now_ns + self.rto_ns if self._una < self._high else None
        records = records_of(int_trailer) if int_trailer else None
        self.cc.on_ack(now_ns, acked, rtt, ecn_echo=becn, int_records=records or None)

    def on_nak(self, now_ns: int, psn: int) -> None:
        """A PSN-sequence-error NAK for (24-bit) `psn`: every PSN below it arrived; go back and
        resend from it."""
        self.stats.naks += 1
        p = self._absolute(psn)
        if p < self._una:
            self.stats.stale_acks += 1
            return
        if p >= self._high:
            raise RoceProtocolError(
                f"QP {self.qpn}: NAK for PSN {psn & PSN_MASK} but PSN {self._high & PSN_MASK} is "
                f"the next never sent")
        if p > self._una:
            acked = self._advance(p)
            sent_at = self._sent_at
            while sent_at and next(iter(sent_at)) < p:
                del sent_at[next(iter(sent_at))]
            self.backoff = 1
            self.cc.on_ack(now_ns, acked)
        if self._nxt > p:
            self._rewind(p)
        self._rto_deadline = now_ns + self.rto_ns * self.backoff
        self.cc.on_nak(now_ns)

    def on_cnp(self, now_ns: int) -> None:
        """A congestion notification packet for this QP arrived."""
        self.stats.cnps += 1
        self.cc.on_cnp(now_ns)

    def on_timer(self, now_ns: int) -> None:
        """Run the retransmission timer and the policy's timers if they are due."""
        deadline = self._rto_deadline
        if deadline is not None and now_ns >= deadline:
            if self._una < self._high:
                self.stats.timeouts += 1
                self._rewind(self._una)
                self.backoff = min(self.backoff * 2, MAX_BACKOFF)
                self._rto_deadline = now_ns + self.rto_ns * self.backoff
                self.cc.on_nak(now_ns)
            else:
                self._rto_deadline = None
        cc_at = self.cc.next_timer_ns()
        if cc_at is not None and cc_at <= now_ns:
            self.cc.on_timer(now_ns)

    def next_deadline(self) -> int | None:
        """The earlier of the RTO deadline and the policy's next timer (None if neither)."""
        cc_at = self.cc.next_timer_ns()
        rto_at = self._rto_deadline
        if cc_at is None:
            return rto_at
        return cc_at if rto_at is None else min(cc_at, rto_at)

    def _rtt_sample(self, rtt: int) -> None:
        st = self.stats
        st.rtt_samples += 1
        st.rtt_last_ns = rtt
        st.rtt_sum_ns += rtt
        st.rtt_min_ns = rtt if st.rtt_min_ns is None else min(st.rtt_min_ns, rtt)
        st.rtt_max_ns = rtt if st.rtt_max_ns is None else max(st.rtt_max_ns, rtt)
        if self.srtt_ns is None:
            self.srtt_ns, self.rttvar_ns = rtt, rtt // 2
        else:
            self.rttvar_ns += (abs(self.srtt_ns - rtt) - self.rttvar_ns) // 4
            self.srtt_ns += (rtt - self.srtt_ns) // 8
        self.rto_ns = max(self.min_rto_ns, self.srtt_ns + 4 * self.rttvar_ns)

    # -- state -------------------------------------------------------------------------------

    def take_completed(self) -> list[int]:
        """Message ids fully acknowledged since the last call, in posting order."""
        done, self._completed = self._completed, []
        return done

    def statistics(self) -> SenderStats:
        """A snapshot of `stats`."""
        return dataclasses.replace(self.stats)

    @property
    def idle(self) -> bool:
        """Every posted message is acknowledged."""
        return self._una == self._end_psn

    @property
    def inflight_bytes(self) -> int:
        """Payload bytes sent and not yet acknowledged (since the last go-back)."""
        return self._nxt_byte - self._una_byte

    @property
    def inflight_packets(self) -> int:
        return self._nxt - self._una

    @property
    def snd_una(self) -> int:
        """Oldest unacknowledged PSN (absolute)."""
        return self._una

    @property
    def snd_nxt(self) -> int:
        """Next PSN to send (absolute)."""
        return self._nxt

    @property
    def rto_deadline(self) -> int | None:
        return self._rto_deadline


class QpReceiver:
    """The responder side of one RC queue pair for RDMA WRITEs (go-back-N, IBA rules).

    Feed every data packet to `on_packet`; it says whether to write the payload and where, and
    which ACK/NAK/CNP to send. The receiver keeps no timers: it answers only AckReq packets and
    gaps, as an RC responder does. ECN: a CE-marked packet triggers a CNP at most once every
    `cnp_interval_ns` (DCQCN's notification point) and sets BECN on the next positive ACK
    (DCTCP's ECN echo). NAKs carry no BECN and no INT (the pending BECN waits for the next ACK).
    """

    def __init__(self, *, qpn: int, dest_qpn: int, cnp_interval_ns: int = 50_000,
                 initial_psn: int = 0) -> None:
        if cnp_interval_ns < 0:
            raise ValueError(f"cnp_interval_ns must be >= 0, got {cnp_interval_ns}")
        self.qpn = qpn
        self.dest_qpn = dest_qpn
        self.cnp_interval_ns = cnp_interval_ns
        self.stats = ReceiverStats()
        self._epsn = initial_psn  # expected PSN, absolute
        self._nak_sent = False  # a NAK for the current _epsn is out
        self._last_cnp_ns: int | None = None
        self._becn = False
        self._msn = 0
        self._in_msg = False
        self._va = 0
        self._rkey = 0
        self._len = 0
        self._offset = 0  # bytes of the current message received

    @property
    def epsn(self) -> int:
        """The expected PSN (absolute)."""
        return self._epsn

    @property
    def msn(self) -> int:
        """Message sequence number for the AETH: messages completed, mod 2**24."""
        return self._msn & 0xFFFFFF

    def _check_sequence(self, opcode: int, length: int,
                        reth: tuple[int, int, int] | None) -> tuple[int, int, int, int]:
        """Validate an in-order packet; returns (va, rkey, msg_len, offset)."""
        if opcode in RETH_OPCODES:
            if reth is None:
                raise RoceProtocolError(f"QP {self.qpn}: WRITE {opcode:#04x} without a RETH")
            if self._in_msg:
                raise RoceProtocolError(
                    f"QP {self.qpn}: opcode sequence error: WRITE {opcode:#04x} at PSN "
                    f"{self._epsn & PSN_MASK} while a message is at {self._offset} of "
                    f"{self._len} bytes")
            va, rkey, msg_len = reth
            if (length != msg_len if opcode == RDMA_WRITE_ONLY else length >= msg_len):
                raise RoceProtocolError(
                    f"QP {self.qpn}: WRITE {opcode:#04x} of {length} bytes does not fit a "
                    f"message of {msg_len} (RETH length)")
            return va, rkey, msg_len, 0
        if not self._in_msg:
            raise RoceProtocolError(
                f"QP {self.qpn}: opcode sequence error: WRITE {opcode:#04x} at PSN "
                f"{self._epsn & PSN_MASK} without a WRITE FIRST")
        end = self._offset + length
        if (end != self._len) if opcode == RDMA_WRITE_LAST else (end >= self._len):
            raise RoceProtocolError(
                f"QP {self.qpn}: WRITE {opcode:#04x} of {length} bytes at offset {self._offset} "
                f"does not fit the {self._len}-byte message")
        return self._va, self._rkey, self._len, self._offset

    def on_packet(self, now_ns: int, psn_wire: int, opcode: int, length: int, ack_req: bool,
                  ce: bool, reth: tuple[int, int, int] | None,
                  int_trailer: bytes = b"") -> RxResult:
        """One data packet: `ce` is its IP ECN congestion-experienced mark, `reth` its
        (va, rkey, length) on FIRST/ONLY, `int_trailer` its INT (echoed on the ACK)."""
        if opcode not in DATA_OPCODES:
            raise RoceProtocolError(f"QP {self.qpn}: opcode {opcode:#04x} is not an RDMA WRITE")
        st = self.stats
        d = psn_delta(psn_wire, self._epsn)
        checked = self._check_sequence(opcode, length, reth) if d == 0 else None

        cnp = False
        if ce:
            st.ce_marked += 1
            self._becn = True
            last = self._last_cnp_ns
            if last is None or now_ns - last >= self.cnp_interval_ns:
                self._last_cnp_ns = now_ns
                cnp = True
                st.cnps += 1

        if checked is not None:
            va, rkey, msg_len, offset = checked
            self._epsn += 1
            self._nak_sent = False
            done = opcode in (RDMA_WRITE_LAST, RDMA_WRITE_ONLY)
            if done:
                self._in_msg = False
                self._msn += 1
                st.messages += 1
            else:
                self._in_msg = True
                self._va, self._rkey, self._len = va, rkey, msg_len
                self._offset = offset + length
            st.accepted += 1
            st.bytes_accepted += length
            ack = self._ack(psn_wire & PSN_MASK, int_trailer) if ack_req else None
            return RxResult(True, va, msg_len, offset, done, ack, cnp, rkey, self.msn)

        if d > 0:  # a gap: PSNs [epsn, psn) are missing; NAK the first packet past it, once
            st.out_of_order += 1
            ack = None
            if not self._nak_sent:
                self._nak_sent = True
                st.naks += 1
                ack = Ack(self._epsn & PSN_MASK, True, False, b"")
            return RxResult(False, 0, 0, 0, False, ack, cnp, 0, self.msn)

        # a duplicate: the sender went back further than needed, perhaps having lost our ACK
        st.duplicates += 1
        ack = self._ack((self._epsn - 1) & PSN_MASK, int_trailer) if ack_req else None
        return RxResult(False, 0, 0, 0, False, ack, cnp, 0, self.msn)

    def _ack(self, psn_wire: int, int_trailer: bytes) -> Ack:
        becn, self._becn = self._becn, False
        self.stats.acks += 1
        return Ack(psn_wire, False, becn, bytes(int_trailer))

    def statistics(self) -> ReceiverStats:
        """A snapshot of `stats`."""
        return dataclasses.replace(self.stats)
