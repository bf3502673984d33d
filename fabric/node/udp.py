"""KV chunks over UDP: each chunk (its frame: msgpack header + payload) is one reliable bulk
unit of `fabric.wire.udp`, cut to the path MTU, with selective NACKs and a retransmission timer.

One UDP socket per node (port `UDP_PORT`) carries data, ACKs and NACKs for every peer. A sender
keeps one chunk in flight per (peer, class) and a retransmission timeout from measured RTTs
(RFC 6298, Karn's rule). What it learns of a peer's path (RTT, RTO, and whether the path
reorders, which sets RACK's reordering window) carries from one chunk to the next.

Congestion control: each (peer, class) is one flow driven by its class's `cc:` policy, the
same `fabric.cc` objects the RoCE transport uses, through `fabric.wire.udp.FlowControl`: the
policy's rate paces the segments, its window (if it has one) limits them in flight, and every
ACK tells it what was delivered, the RTT sample and how many segments arrived CE-marked (data
is ECT(0) when the policy reacts to ECN, and the receiver reads each datagram's TOS); a loss
recovery or a timeout is a NAK to it. `none`, the default, paces at the path's first-hop rate
within a fixed window of the path's tightest queue: one flow does not overrun that queue, but
flows sharing a bottleneck do, which shows up as drops and retransmissions, which the run
counts. The policy runs in fabric time, as RoCE's do (`cfg.udp`: `fabric.run.traffic.udp_plan`).

The endpoint's statistics say what the reliability cost: `udp_sent_bytes` (every DATA
payload byte put on the wire, repeats included) against `udp_unit_bytes` (each chunk's frame
once), retransmissions, the spurious ones (a DSACK showed the original had arrived) and
timeouts; `sent_line` turns them into one line for a report.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import trio

from ..cc import make_cc, resolve_cc
from ..kv.content import chunk_view, digest
from ..kv.layout import chunks_of
from ..net.tun import TimerFd
from ..traffic import Transfer
from ..units import format_size
from ..wire.frames import MAX_HEADER, FrameDecoder, chunk_header, encode_chunk_header
from ..wire.udp import (
    ACK,
    DATA,
    FIN,
    FlowControl,
    PathEstimate,
    UdpReceiver,
    UdpSender,
    pack_segment,
    unpack_segment,
)
from .transport import NodeSide, Transport

UDP_PORT = 7472

WINDOW_SEGMENTS = 128
RTO_NS = 100_000_000
ACK_TICK = 0.001
COMPLETION_ACKS = 3
ECT0 = 0b10
MAX_WINDOW_SEGMENTS = 4096  # a policy's window never lets more than this be in flight
# A paced sender sleeps at least this long (host time): the pacing clock lets it catch up on
# the slots it slept through (`FlowControl`), so a wake-up per segment is not needed; the
# first hop's link serialises a burst this short at its own rate anyway.
PACE_QUANTUM_NS = 100_000


@dataclass
class _Inbound:
    rx: UdpReceiver
    buf: np.ndarray
    addr: tuple[str, int]
    t_first: int
    done: bool = False


class UdpEndpoint:
    """The node's UDP socket and the state of every unit in flight through it."""

    def __init__(self, node: NodeSide, sock: trio.socket.SocketType) -> None:
        self.node = node
        self.sock = sock
        self.mss = node.cfg.udp_mss
        self.inbound: dict[tuple[int, int], _Inbound] = {}
        self.outbound: dict[int, tuple[UdpSender, Callable[[], None]]] = {}
        self.next_unit = 1
        self.flow_id = sorted(node.cfg.peers).index(node.cfg.name) + 1
        self.retransmitted = 0
        self.spurious = 0
        self.timeouts = 0
        self.sent_bytes = 0
        self.unit_bytes = 0
        self.paths: dict[str, PathEstimate] = {}  # per peer: what earlier units learnt
        self.flows: dict[tuple[str, str], FlowControl] = {}  # per (peer, class)
        self.ce_marked = 0  # data segments that arrived CE-marked

    def statistics(self) -> dict[str, int]:
        out = {"udp_retransmitted": self.retransmitted, "udp_spurious": self.spurious,
               "udp_timeouts": self.timeouts, "udp_sent_bytes": self.sent_bytes,
               "udp_unit_bytes": self.unit_bytes}
        if self.flows:
            out["udp_cc_losses"] = sum(f.losses for f in self.flows.values())
            out["udp_cc_marked_bytes"] = sum(f.marked_bytes for f in self.flows.values())
        if self.ce_marked:
            out["udp_ce_marked"] = self.ce_marked
        return out

    def open_flow(self, dst: str, cls: str) -> tuple[FlowControl | None, int]:
        """The congestion control of the flow to `dst` in `cls` (shared by its units) and the
        TOS its data leaves with (ECT(0) when the policy reacts to ECN). No plan for UDP
        (`cfg.udp`): no control, the sender's fixed window alone."""
        tos = (int(self.node.cfg.classes.get(cls, {}).get("dscp", 0)) << 2) & 0xFC
        plan = self.node.cfg.udp
        c, peer = plan.get("classes", {}).get(cls), plan.get("peers", {}).get(dst)
        if c is None or peer is None:
            return None, tos
        key = (dst, cls)
        if key not in self.flows:
            cc = make_cc(c["cc"], line_rate_bps=int(peer["rate_bps"]),
                         base_rtt_ns=int(peer["base_rtt_ns"]), mtu=self.mss, **c["cc_params"])
            self.flows[key] = FlowControl(cc, scale=float(plan["time_scale"]),
                                          origin_ns=self.node.cfg.t0_ns,
                                          max_window_bytes=MAX_WINDOW_SEGMENTS * self.mss)
        if "ecn" in resolve_cc(c["cc"]).needs:
            tos |= ECT0
        return self.flows[key], tos

    async def receive_loop(self) -> None:
        anc = socket.CMSG_SPACE(1)  # the datagram's TOS (IP_RECVTOS): its ECN field
        while True:
            data, ancdata, _flags, addr = await self.sock.recvmsg(65536, anc)
            now = time.monotonic_ns()
            seg, payload = unpack_segment(data)
            if seg.flags & DATA:
                ce = bool(ancdata) and ancdata[0][2][0] & 3 == 3
                await self._on_data(seg, payload, addr, now, ce)
            elif seg.flags & ACK and seg.transfer in self.outbound:
                sender, wake = self.outbound[seg.transfer]
                sender.on_ack_segment(seg, payload, now)  # cumulative, horizon, NACKs
                wake()

    async def _on_data(self, seg, payload: memoryview, addr: tuple[str, int],  # noqa: ANN001
                       now: int, ce: bool = False) -> None:
        key = (seg.flow, seg.transfer)
        inb = self.inbound.get(key)
        if inb is None:
            inb = self.inbound[key] = _Inbound(
                UdpReceiver(seg.flow, seg.transfer, seg.total, self.mss),
                np.empty(seg.total, dtype=np.uint8), addr, now)
        if ce:
            self.ce_marked += 1
        if inb.rx.on_data(seg.seq, seg.offset, len(payload), now, ce):
            inb.buf[seg.offset: seg.offset + len(payload)] = np.frombuffer(payload, np.uint8)
            self.node.rx_bytes += len(payload)
        completed = inb.rx.complete and not inb.done
        if completed:
            inb.done = True
            self._deliver(inb, now)
        if inb.rx.ack_due(now):
            await self._ack(inb, copies=COMPLETION_ACKS if completed else 1)

    async def _ack(self, inb: _Inbound, copies: int = 1) -> None:
        """Send the receiver's ACK. The one that completes a unit goes out `COMPLETION_ACKS`
        times, shielded from cancellation, so a sender rarely has to resend for it: its loss
        rate is the cube of the reverse path's. (A node that has received everything still
        lingers, serving, until the run ends, so the resend of a sender that lost all three is
        answered too: `runtime.serve_node`.)"""
        ack = inb.rx.ack_segment()
        with trio.CancelScope(shield=copies > 1):
            for _ in range(copies):
                await self.sock.sendto(ack, inb.addr)

    async def ack_timer(self) -> None:
        """Delayed ACKs fall due between datagrams; a coarse tick is enough for them."""
        while True:
            await trio.sleep(ACK_TICK)
            now = time.monotonic_ns()
            for key, inb in list(self.inbound.items()):
                if inb.rx.ack_due(now):
                    await self._ack(inb)
                elif inb.done and inb.rx.next_deadline() is None:
                    # keep finished units a while: a lost final ACK makes the sender resend
                    if now - inb.t_first > 30_000_000_000:
                        del self.inbound[key]

    def _deliver(self, inb: _Inbound, now: int) -> None:
        dec = FrameDecoder()
        # the header, not the payload
        dec.receive_data(memoryview(inb.buf)[: 4 + MAX_HEADER])  # type: ignore[arg-type]
        ev = dec.next_event()
        chunk = chunk_header(ev)
        if chunk is None:
            return
        n = chunk.nbytes
        view = inb.buf[inb.buf.nbytes - n:]
        ok = digest(view) == chunk.digest
        self.node.on_chunk(chunk.xfer, chunk.index, n, chunk.t_start, chunk.t_send,
                           inb.t_first, now, ok)

    async def send_unit(self, dst: str, unit: np.ndarray, tos: int,
                        control: FlowControl | None = None) -> None:
        """Move one chunk's frame reliably, paced and windowed by the flow's `control`;
        returns when the receiver has all of it."""
        uid = self.next_unit
        self.next_unit += 1
        dst_addr = self.node.cfg.peers[dst]
        window = self.node.cfg.udp_window.get(dst, WINDOW_SEGMENTS)
        path = self.paths.setdefault(dst, PathEstimate.initial(RTO_NS))
        sender = UdpSender(self.flow_id, uid, unit.nbytes, self.mss, window, path.rto_ns,
                           path=path, control=control)
        view = memoryview(unit)  # type: ignore[arg-type]
        # A paced sender sleeps on a timerfd (microsecond wake-ups for its pacing slots, where
        # trio's own timeouts are millisecond-coarse); an ACK fires it at once.
        timer = TimerFd() if control is not None else None
        woken = [False]
        wake = trio.Event()

        def on_ack() -> None:
            woken[0] = True
            wake.set()
            if timer is not None:
                timer.set_abs(1)

        self.outbound[uid] = (sender, on_ack)
        try:
            while not sender.done:
                woken[0] = False
                for seq, offset, length in sender.segments_to_send(time.monotonic_ns()):
                    flags = DATA | (FIN if seq == sender.segments - 1 else 0)
                    hdr = pack_segment(flags, self.flow_id, uid, seq, offset, unit.nbytes)
                    # the class's DSCP per datagram: senders of several classes share the socket
                    await self.sock.sendmsg([hdr, view[offset: offset + length]],
                                            [(socket.IPPROTO_IP, socket.IP_TOS, bytes([tos]))],
                                            0, (dst_addr, UDP_PORT))
                    self.node.tx_bytes += length
                if sender.done:
                    break
                deadline = sender.next_deadline()
                if timer is not None:
                    if woken[0]:  # an ACK came in while sending: read what it allows
                        await trio.lowlevel.checkpoint()
                        continue
                    now = time.monotonic_ns()
                    timer.set_abs(now + 1_000_000_000 if deadline is None
                                  else max(deadline, now + PACE_QUANTUM_NS))
                    await trio.lowlevel.wait_readable(timer.fileno())
                    timer.clear()
                    continue
                timeout = 1.0 if deadline is None else \
                    max(0.0, (deadline - time.monotonic_ns()) / 1e9)
                with trio.move_on_after(timeout):
                    await wake.wait()
                wake = trio.Event()
        finally:
            if timer is not None:
                timer.close()
            self.retransmitted += sender.retransmitted
            self.spurious += sender.spurious
            self.timeouts += sender.timeouts
            self.sent_bytes += sender.sent_bytes
            self.unit_bytes += unit.nbytes
            del self.outbound[uid]


async def serve_udp(node: NodeSide, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    await sock.bind((node.cfg.address, UDP_PORT))
    ep = node.endpoints["udp"] = UdpEndpoint(node, sock)
    task_status.started()
    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ep.receive_loop)
            nursery.start_soon(ep.ack_timer)


HEADER_ROOM = 512  # a chunk frame's msgpack header fits in this (checked)


async def udp_sender(node: NodeSide, dst: str, cls: str,
                     queue: trio.MemoryReceiveChannel[tuple[Transfer, int]]) -> None:
    """Send the transfers queued for (dst, cls), one chunk unit at a time.

    The payload is copied from the content pool to just after `HEADER_ROOM` bytes and its
    header written right in front of it, so each segment is a slice of one buffer.
    """
    ep = node.endpoints["udp"]  # serve_udp runs first
    control, tos = ep.open_flow(dst, cls)
    buf = np.empty(0, dtype=np.uint8)
    async for tr, t_start in queue:
        chunks = chunks_of(tr)
        for spec in chunks:
            if buf.nbytes < HEADER_ROOM + spec.nbytes:
                buf = np.empty(HEADER_ROOM + spec.nbytes, dtype=np.uint8)
            payload = buf[HEADER_ROOM: HEADER_ROOM + spec.nbytes]
            payload[:] = chunk_view(spec, node.cfg.seed)
            header = encode_chunk_header(tr.id, spec.index, len(chunks), spec.nbytes,
                                         digest(payload), t_start, time.monotonic_ns())
            assert len(header) <= HEADER_ROOM
            start = HEADER_ROOM - len(header)
            buf[start:HEADER_ROOM] = np.frombuffer(header, np.uint8)
            await ep.send_unit(dst, buf[start: HEADER_ROOM + spec.nbytes], tos, control)
        node.transfer_sent(tr)


def sent_line(stats: Mapping[str, int]) -> str | None:
    """`udp: sent N for M of payload (x1.04): R retransmitted, S spurious, T timeouts` from a
    node's (or several nodes' summed) UDP statistics; None when it sent nothing over UDP."""
    unit = int(stats.get("udp_unit_bytes", 0))
    if unit <= 0:
        return None
    sent = int(stats.get("udp_sent_bytes", 0))
    return (f"udp: sent {format_size(sent)} for {format_size(unit)} of payload "
            f"(x{sent / unit:.2f}): {stats.get('udp_retransmitted', 0)} retransmitted, "
            f"{stats.get('udp_spurious', 0)} spurious, {stats.get('udp_timeouts', 0)} timeouts")


TRANSPORT = Transport("udp", serve_udp, udp_sender)
