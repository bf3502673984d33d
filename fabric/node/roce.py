"""KV chunks over the RoCEv2-style transport (`fabric.roce`): queue pairs on UDP port 4791.

Each (peer, class) a node sends to is one reliable-connected queue pair: a `QpSender` paced by
the class's congestion-control policy, its own UDP socket (an ephemeral source port, which is
the flow's ECMP entropy as RoCE NICs vary it per QP) and its own timerfd for pacing and
retransmission deadlines. Each chunk (its frame: msgpack header + payload, as on the other
transports) is one RDMA WRITE message. Every node has one socket bound to port 4791 that
receives data, ACKs and CNPs for all its queue pairs, and one on the PFC port: a pause from
the node's switch stops every queue pair of that priority until the resume.

Queue pair numbers are derived, not negotiated: the sender's QPN is `src << 13 | dst << 3 |
class` (node indices in sorted order), the receiver's the same with bit 23 set, so either end
finds the other's from the packet. The transport's sans-IO cores run in fabric time: `now =
(monotonic - t0) / time_scale`; the policies see the rates and delays of the topology file.

Data packets are ECT(0) with the class's DSCP, so switches can mark CE; the receiver reads the
TOS of every datagram (IP_RECVTOS) to see the marks. ACKs, NAKs and CNPs leave with the RoCE
control class's DSCP (`fabric.topology.document.control_class`), in a queue of their own.
A sender's transfer completes when the last message's ACK arrives (RC semantics:
acknowledged = placed at the responder).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from ..cc import make_cc, resolve_cc
from ..kv.content import chunk_view, digest
from ..kv.layout import chunks_of
from ..net.tun import TimerFd
from ..roce import wire
from ..roce.transport import QpReceiver, QpSender, RoceProtocolError
from ..switch.pfc import PFC_PORT, unpack_pfc
from ..traffic import Transfer
from ..wire.frames import MAX_HEADER, FrameDecoder, chunk_header, encode_chunk_header
from .transport import NodeSide, Transport

ROCE_PORT = 4791
QP_RX_BIT = 1 << 23
MAX_POSTED = 8  # messages (chunks) a queue pair holds in flight or queued
HEADER_ROOM = 512
BATCH = 64
# A pacing timer that fires this much (host time) late still sends in virtual time; beyond
# it the queue pair restarts from now (it was paused or the host stalled).
LATE_CAP_WALL_NS = 2_000_000
RTO_FLOOR_WALL_NS = 50_000_000  # retransmission timeout never below 50 ms of host time
ECT0 = 0b10
# The notification point sends at most one CNP per queue pair per 4 us (fabric time): the
# HPCC simulator's pairing with DCQCN's defaults here (alpha timer 1 us, cuts at most every
# 4 us). The DCQCN paper's 50 us pairs with its 55 us alpha timer; with a 1 us timer it would
# let alpha decay between CNPs and DCQCN would barely cut.
CNP_INTERVAL_NS = 4_000


def udp_rcvbuf_errors() -> int:
    """The namespace's count of UDP datagrams dropped at a full receive buffer (RcvbufErrors
    in /proc/self/net/snmp: the node has its own namespace, so these are its sockets')."""
    try:
        with open("/proc/self/net/snmp") as fh:
            rows = [line.split() for line in fh if line.startswith("Udp:")]
        header, values = rows[0], rows[1]
        return int(values[header.index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return 0


def sender_qpn(src: int, dst: int, cls: int) -> int:
    return (src << 13) | (dst << 3) | cls


@dataclass
class _Qp:
    """One sending queue pair: its core, socket, timer and the messages it holds."""

    core: QpSender
    sock: socket.socket
    timer: TimerFd
    dst: str
    cls: str
    priority: int
    tos: int
    int_on: bool
    buffers: dict[int, np.ndarray] = field(default_factory=dict)
    room: trio.Event = field(default_factory=trio.Event)  # a message completed
    done_msgs: set[int] = field(default_factory=set)

    def wake(self) -> None:
        self.timer.set_abs(1)  # already passed: fires at once


@dataclass
class _Rx:
    """One receiving queue pair and the message it is assembling."""

    core: QpReceiver
    addr: tuple[str, int]
    ack_qpn: int
    buf: np.ndarray | None = None
    t_first: int = 0


class RoceEndpoint:
    """The node's RoCE sockets and every queue pair through them."""

    def __init__(self, node: NodeSide, sock: socket.socket, pfc: socket.socket) -> None:
        self.node = node
        self.sock = sock
        self.pfc = pfc
        rc = node.cfg.roce
        self.rc = rc
        self.scale = float(rc["time_scale"])
        self.names: list[str] = rc["nodes"]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.me = self.index[node.cfg.name]
        self.senders: dict[int, _Qp] = {}
        self.receivers: dict[int, _Rx] = {}
        self.paused: dict[int, int] = {}  # priority -> fabric time the pause began
        self.paused_ns = 0
        self.pauses_received = 0
        self.next_msg = 1
        self.rcvbuf_base = udp_rcvbuf_errors()
        # The NIC: every queue pair's packets leave through one port at its line rate, so
        # the pacers of several queue pairs never add up to more than the link (a real NIC
        # arbitrates between its send queues the same way). A virtual clock, fabric ns.
        self.nic_bps = int(rc.get("nic_rate_bps") or 0)
        self.nic_free_ns = 0
        self.counters = {"cnps_sent": 0, "acks_sent": 0, "naks_sent": 0, "send_errors": 0,
                         "protocol_errors": 0}
        # Everything this socket sends is control: ACKs, NAKs and CNPs, in the RoCE control
        # class (not ECT: nothing should mark or pause them), so a switch serves them in their
        # own queue instead of behind the data they acknowledge.
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS,
                        (int(rc.get("control_dscp", 0)) << 2) & 0xFC)

    # time

    def now(self) -> int:
        return int((time.monotonic_ns() - self.node.cfg.t0_ns) / self.scale)

    def wall(self, fabric_ns: int) -> int:
        return self.node.cfg.t0_ns + int(fabric_ns * self.scale)

    # queue pairs

    def open_qp(self, dst: str, cls: str) -> _Qp:
        c = self.rc["classes"][cls]
        peer = self.rc["peers"][dst]
        int_on = bool(self.rc["int"]) and "int" in resolve_cc(c["cc"]).needs
        pmtu = wire.payload_mtu(peer["mtu"], int_hops=peer["hops"] if int_on else None)
        cc = make_cc(c["cc"], line_rate_bps=int(peer["rate_bps"]),
                     base_rtt_ns=int(peer["base_rtt_ns"]), mtu=pmtu, **c["cc_params"])
        qpn = sender_qpn(self.me, self.index[dst], c["index"])
        rto = max(int(peer["rto_ns"]), int(RTO_FLOOR_WALL_NS / self.scale))
        core = QpSender(qpn=qpn, dest_qpn=qpn | QP_RX_BIT, payload_mtu=pmtu, cc=cc,
                        rto_ns=rto, int_enabled=int_on)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dscp = int(self.node.cfg.classes.get(cls, {}).get("dscp", 0))
        tos = ((dscp << 2) & 0xFC) | ECT0
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.bind((self.node.cfg.address, 0))
        s.connect((self.node.cfg.peers[dst], ROCE_PORT))
        s.setblocking(False)
        qp = _Qp(core, s, TimerFd(), dst, cls, int(c["priority"]), tos, int_on)
        self.senders[qpn] = qp
        return qp

    async def tx_loop(self, qp: _Qp) -> None:
        """Send what the core allows, when it allows it; sleep on the queue pair's timer."""
        core = qp.core
        late_cap = int(LATE_CAP_WALL_NS / self.scale)
        tail_int = wire.INT_EMPTY if qp.int_on else b""
        sent = 0
        while True:
            now = self.now()
            deadline = core.next_deadline()
            if deadline is not None and deadline <= now:
                core.on_timer(now)
            self._collect(qp)
            pkt = None
            nic_busy = self.nic_free_ns > now
            if qp.priority not in self.paused and not nic_busy:
                t = core.next_send_ns(now)
                if t is not None and t <= now:
                    when = max(core.paced_ns, now - late_cap, 0)
                    pkt = core.poll(when)
                    if pkt is not None and self.nic_bps:
                        size = wire.wire_size(pkt.opcode, pkt.length,
                                              len(tail_int) if tail_int else 0)
                        start = max(self.nic_free_ns, when)
                        self.nic_free_ns = start + size * 8 * 1_000_000_000 // self.nic_bps
            if pkt is not None:
                buf = qp.buffers[pkt.msg_id]
                view = memoryview(buf)[pkt.msg_offset: pkt.msg_offset + pkt.length]  # type: ignore[arg-type]
                reth = None
                if pkt.opcode in wire.RETH_OPCODES:
                    reth = (pkt.msg_id << 20, core.qpn, pkt.msg_len)
                parts = wire.data_packet(pkt.opcode, core.dest_qpn, pkt.psn, view,
                                         ack_req=pkt.ack_req, reth=reth, int_trailer=tail_int)
                while True:
                    try:
                        qp.sock.sendmsg(parts)
                        break
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(qp.sock)
                    except OSError:
                        self.counters["send_errors"] += 1
                        break
                if not pkt.retransmission:
                    self.node.tx_bytes += pkt.length
                sent += 1
                if sent % 16 == 0:
                    await trio.lowlevel.checkpoint()
                continue
            # nothing to send now: sleep until the next pacing slot or deadline, or a wake-up
            wake = None
            if qp.priority not in self.paused:
                wake = core.next_send_ns(now)
                if wake is not None and nic_busy:
                    wake = max(wake, self.nic_free_ns)
            deadline = core.next_deadline()
            if deadline is not None and (wake is None or deadline < wake):
                wake = deadline
            if wake is None:
                qp.timer.disarm()
            else:
                qp.timer.set_abs(self.wall(wake))
            await trio.lowlevel.wait_readable(qp.timer.fileno())
            qp.timer.clear()

    def _collect(self, qp: _Qp) -> None:
        done = qp.core.take_completed()
        if done:
            for msg_id in done:
                qp.buffers.pop(msg_id, None)
                qp.done_msgs.add(msg_id)
            qp.room.set()
            qp.room = trio.Event()

    # receiving

    async def receive_loop(self) -> None:
        sock = self.sock
        buf = bytearray(65536)
        view = memoryview(buf)
        anc = socket.CMSG_SPACE(1)
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(BATCH):
                try:
                    n, ancdata, _flags, addr = sock.recvmsg_into([buf], anc)
                except BlockingIOError:
                    break
                tos = ancdata[0][2][0] if ancdata else 0
                try:
                    p = wire.parse(view[:n])
                except ValueError:
                    continue
                self._on_packet(p, view, tos, addr)

    def _on_packet(self, p: wire.Parsed, view: memoryview, tos: int,
                   addr: tuple[str, int]) -> None:
        now = self.now()
        if p.opcode in wire.DATA_OPCODES:
            rx = self.receivers.get(p.dest_qp)
            if rx is None:
                src = (p.dest_qp & ~QP_RX_BIT) >> 13
                if src >= len(self.names):
                    return
                peer = self.node.cfg.peers[self.names[src]]
                rx = self.receivers[p.dest_qp] = _Rx(
                    QpReceiver(qpn=p.dest_qp, dest_qpn=p.dest_qp & ~QP_RX_BIT,
                               cnp_interval_ns=CNP_INTERVAL_NS),
                    (peer, ROCE_PORT), p.dest_qp & ~QP_RX_BIT)
            try:
                res = rx.core.on_packet(now, p.psn, p.opcode, p.payload_len, p.ack_req,
                                        tos & 3 == 3, p.reth, p.int_trailer)
            except RoceProtocolError:
                # an opcode sequence our senders never produce (a stray or forged packet):
                # IB would move the QP to an error state; we drop the packet and count it
                self.counters["protocol_errors"] += 1
                return
            if res.accept:
                if p.reth is not None:
                    rx.buf = np.empty(res.msg_len, dtype=np.uint8)
                    rx.t_first = time.monotonic_ns()
                if rx.buf is not None:
                    payload = view[p.payload_start:p.payload_end]
                    rx.buf[res.offset: res.offset + len(payload)] = np.frombuffer(payload,
                                                                                 np.uint8)
                    self.node.rx_bytes += len(payload)
                    if res.msg_done:
                        self._deliver(rx)
            if res.ack is not None:
                psn, nak, becn, trailer = res.ack
                self._send(wire.ack_packet(rx.ack_qpn, psn, res.msn, nak=nak, becn=becn,
                                           int_trailer=trailer), rx.addr)
                self.counters["naks_sent" if nak else "acks_sent"] += 1
            if res.cnp:
                self._send(wire.cnp_packet(rx.ack_qpn), rx.addr)
                self.counters["cnps_sent"] += 1
            return
        qp = self.senders.get(p.dest_qp)
        if qp is None:
            return
        if p.opcode == wire.ACKNOWLEDGE:
            assert p.aeth is not None
            if wire.is_nak(p.aeth):
                qp.core.on_nak(now, p.psn)
            else:
                qp.core.on_ack(now, p.psn, p.int_trailer, p.becn)
        elif p.opcode == wire.CNP:
            qp.core.on_cnp(now)
        qp.wake()

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:
            self.counters["send_errors"] += 1  # buffer full: the ACK is lost, as on a wire

    def _deliver(self, rx: _Rx) -> None:
        buf = rx.buf
        rx.buf = None
        assert buf is not None
        dec = FrameDecoder()
        dec.receive_data(memoryview(buf)[: 4 + MAX_HEADER])  # type: ignore[arg-type]
        ev = dec.next_event()
        chunk = chunk_header(ev)
        if chunk is None:
            return
        n = chunk.nbytes
        view = buf[buf.nbytes - n:]
        ok = digest(view) == chunk.digest
        self.node.on_chunk(chunk.xfer, chunk.index, n, chunk.t_start, chunk.t_send, rx.t_first,
                           time.monotonic_ns(), ok)

    # PFC

    async def pfc_loop(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.pfc)
            while True:
                try:
                    data = self.pfc.recv(256)
                except BlockingIOError:
                    break
                try:
                    frames = unpack_pfc(data)
                except ValueError:
                    continue
                now = self.now()
                for priority, pause in frames:
                    if pause and priority not in self.paused:
                        self.paused[priority] = now
                        self.pauses_received += 1
                    elif not pause and priority in self.paused:
                        self.paused_ns += now - self.paused.pop(priority)
                        for qp in self.senders.values():
                            if qp.priority == priority:
                                qp.wake()

    def statistics(self) -> dict[str, int]:
        now = self.now()
        out = dict(self.counters)
        # datagrams the kernel dropped because this process did not read them in time
        out["host_rx_drops"] = udp_rcvbuf_errors() - self.rcvbuf_base
        out["paused_ns"] = self.paused_ns + sum(now - t for t in self.paused.values())
        out["pauses_received"] = self.pauses_received
        for key in ("retransmitted", "timeouts", "naks", "cnps"):
            out[key] = sum(int(getattr(qp.core.stats, key)) for qp in self.senders.values())
        return out

    def close(self) -> None:
        for qp in self.senders.values():
            qp.sock.close()
            qp.timer.close()


async def serve_roce(node: NodeSide, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                     ) -> None:
    """Bind the node's RoCE and PFC sockets and receive until cancelled."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    sock.bind((node.cfg.address, ROCE_PORT))
    sock.setblocking(False)
    pfc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pfc.bind(("0.0.0.0", PFC_PORT))
    pfc.setblocking(False)
    ep = node.endpoints["roce"] = RoceEndpoint(node, sock, pfc)
    task_status.started()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ep.receive_loop)
            nursery.start_soon(ep.pfc_loop)
    finally:
        ep.close()
        sock.close()
        pfc.close()


async def roce_sender(node: NodeSide, dst: str, cls: str,
                      queue: trio.MemoryReceiveChannel[tuple[Transfer, int]]) -> None:
    """Send the transfers queued for (dst, cls) over one queue pair, chunk = message."""
    ep = node.endpoints["roce"]  # serve_roce runs first
    qp = ep.open_qp(dst, cls)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ep.tx_loop, qp)
        async for tr, t_start in queue:
            chunks = chunks_of(tr)
            msgs: list[int] = []
            for spec in chunks:
                while len(qp.buffers) >= MAX_POSTED:
                    await qp.room.wait()
                unit = _unit(node, tr, spec, len(chunks), t_start)
                msg_id = ep.next_msg
                ep.next_msg += 1
                qp.buffers[msg_id] = unit
                qp.core.post(msg_id, unit.nbytes)
                msgs.append(msg_id)
                qp.wake()
            while not all(m in qp.done_msgs for m in msgs):
                await qp.room.wait()
            qp.done_msgs.difference_update(msgs)
            node.transfer_sent(tr)
        nursery.cancel_scope.cancel()


def _unit(node: NodeSide, tr: Transfer, spec: Any, nchunks: int, t_start: int) -> np.ndarray:
    """A chunk's frame (msgpack header + payload) in one buffer: the RDMA WRITE message."""
    buf = np.empty(HEADER_ROOM + spec.nbytes, dtype=np.uint8)
    payload = buf[HEADER_ROOM:]
    payload[:] = chunk_view(spec, node.cfg.seed)
    header = encode_chunk_header(tr.id, spec.index, nchunks, spec.nbytes, digest(payload),
                                 t_start, time.monotonic_ns())
    assert len(header) <= HEADER_ROOM
    start = HEADER_ROOM - len(header)
    buf[start:HEADER_ROOM] = np.frombuffer(header, np.uint8)
    return buf[start:]


TRANSPORT = Transport("roce", serve_roce, roce_sender)
