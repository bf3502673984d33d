"""A node process: moves real KV chunks over real sockets, records what arrived and when.

One trio process per endpoint node, inside the node's network namespace (the runner forks it
from a preloaded parent, see `fabric.node.spawn`). It talks to the runner over a control
socket (typed messages, `fabric.node.session`), and to its peers over:

- TCP: one persistent connection per (peer, traffic class), opened at start. Transfers to the
  same peer and class queue on it in order, as KV connectors keep one connection per peer:
  head-of-line waiting is then part of the measured latency, not hidden by extra connections.
  Each chunk is a frame (msgpack header + raw payload); header and payload leave together in
  one `sendmsg` from the content pool and the payload lands with `recv_into` a reused numpy
  buffer, never through Python bytes. The connections are plain
  non-blocking sockets driven directly (see "the chunk data path's socket I/O" below). The
  receiver answers a transfer's last chunk with an `ack` frame, which is what completes the
  transfer at the sender (and starts the next one of a closed-loop chain).
- UDP and RoCE: the transports registered in `fabric.node.transport` (`fabric.node.udp`,
  `fabric.node.roce`).

Every chunk's digest is checked on arrival (`fabric.node.faults`, a test-only sender fault,
shows the check catching a corrupt, missing or duplicate chunk). Times are CLOCK_MONOTONIC,
shared by every process on the host, so one-way latencies are exact.

**Blocks** (prefix-cache reuse, TCP only). A node whose plan moves cache blocks holds a
`BlockStore` (`fabric.node.blocks`): real bytes, proved on every reuse. A chunk of a block
transfer is also checked against the content generator's digest for its (key, part), so a
store serving wrong bytes is caught even when its header digest matches them (the chunk is
then delivered but wrong: the transfer completes, as `corrupt`); a `keep` transfer's verified
chunks are copied into the store; at its last chunk a transfer's `reuse` keys are proved,
waiting for those still due here (the ack leaves at once; the transfer's *ready* time waits).
A `from_store` sender sends the held bytes (zeros, reported missing, for a block it never
had), waiting for one still due; `release` frees them once acknowledged. The plan's
`block_ops` (append: prove, then make; drop) run at their times. One result per block
transfer, from_store send and operation, and the store's statistics, go to the runner in the
final `Records`. Transfers without blocks take none of these paths.
"""

from __future__ import annotations

import math
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from ..kv.content import chunk_view, digest
from ..kv.layout import ChunkSpec, chunks_of
from ..kv.models import ModelSpec, use_file_models
from ..metrics.records import ChunkRecord, TransferRecord
from ..traffic import Transfer
from ..wire.frames import (
    CLOSED,
    NEED_DATA,
    FrameDecoder,
    Payload,
    chunk_header,
    encode_ack,
    encode_chunk_header,
)
from ..wire.frames import acked as acked_transfer
from . import faults
from .blocks import BlockStore
from .faults import Fault
from .session import Channel, Done, Go, Plan, Progress, Ready, Records
from .transport import NodeConfig, transport

KV_PORT = 7471
# a receiver reads frame headers this many bytes at a time: a chunk header (~80 bytes) and
# the start of its payload, which then lands in the chunk buffer by itself (more here would
# be copied twice: into the decoder, then out of it)
HEAD_READ = 256
# a sender makes the content and digest of this many of its TCP chunks before the run starts
# (`Node.prehash`): 4 GiB of 1 MiB chunks, a few MB of views and digests
PREHASH_CHUNKS = 4096
RCVLOWAT_MAX = 256 * 1024
PROGRESS_INTERVAL = 0.25
# with an event timeline, the node samples its retransmission counters this often (host
# time), so each failure's retransmissions can be told from the next one's
COUNTERS_INTERVAL = 0.02
# struct tcp_info (linux/tcp.h): tcpi_bytes_sent and tcpi_bytes_retrans, u64s at these
# offsets since Linux 4.19
TCPI_BYTES_SENT = 200
TCPI_BYTES_RETRANS = 208
TCPI_LEN = 216
CONNECT_ATTEMPTS = 50
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)


@dataclass
class _Incoming:
    """What a receiver knows of one expected transfer while its chunks arrive."""

    tr: Transfer
    nchunks: int
    got: set[int] = field(default_factory=set)
    bad: int = 0
    dups: int = 0
    t_start: int | None = None
    t_first: int | None = None
    t_done: int | None = None
    wrong: int = 0  # block chunks delivered intact whose bytes are not the block's


@dataclass
class _BlockRx:
    """What a receiver needs per chunk of a block transfer."""

    tr: Transfer
    specs: list[ChunkSpec]
    sizes: dict[int, int]  # block key -> bytes
    result: dict[str, Any]
    wrong: set[int] = field(default_factory=set)  # carried blocks that came with wrong bytes


class Node:
    def __init__(self, cfg: NodeConfig, ctl: Channel, block_ops: list[dict] | None = None,
                 ) -> None:
        self.cfg = cfg
        self.ctl = ctl
        self.chunk_records: list[ChunkRecord] = []  # arrived, not yet sent to the runner
        self._reporting = trio.Lock()  # one send_records at a time
        self.incoming = {tr.id: _Incoming(tr, len(chunks_of(tr))) for tr in cfg.expects}
        self.sent_done: set[int] = set()
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.expected_left = len(self.incoming)
        self.sends_left = len(cfg.sends)
        self.all_done = trio.Event()
        self.stopped = trio.Event()  # the runner said Stop, or closed the channel: the run ended
        self._followers: dict[int, list[Transfer]] = defaultdict(list)
        for tr in cfg.sends:
            if tr.after is not None:
                self._followers[tr.after].append(tr)
        # (dst, class, transport) -> the sender's queue of (transfer, time it became ready)
        self._queues: dict[tuple[str, str, str], trio.MemorySendChannel] = {}
        self.endpoints: dict[str, Any] = {}  # transport name -> its endpoint (UDP, RoCE)
        self.fault: Fault | None = None  # test-only (node/faults.py); None in a real run
        self._tcp_out: set[socket.socket] = set()  # open sender connections
        self._tcp_retrans_closed = 0  # bytes the closed ones retransmitted
        # blocks: set up only for a plan that moves, keeps or reuses blocks
        self.block_ops = sorted(block_ops or [], key=lambda op: op["t_ns"])
        self.store: BlockStore | None = None
        self.tasks: trio.Nursery | None = None  # where waiting proofs run (serve_node's)
        self._block_rx: dict[int, _BlockRx] = {}
        self._results: dict[tuple[str, int], dict[str, Any]] = {}
        self._sent_copies: dict[int, dict[int, np.ndarray]] = {}  # from_store: what left
        self.blocks_left = 0  # block results still to settle
        # TCP transfer id -> its first chunks' content and digest, made before the run
        self._prehashed: dict[int, list[tuple[np.ndarray, bytes]]] = {}
        self._store_changed = trio.Event()
        self._setup_blocks()
        self._check_done()

    # ---- control channel ----------------------------------------------------------------

    async def progress_loop(self) -> None:
        """Progress, and the chunk records so far: streamed, so a node's memory does not grow
        with the number of chunks it receives."""
        while True:
            await self.ctl.send(Progress(rx=self.rx_bytes, tx=self.tx_bytes))
            await self.send_records(final=False)
            await trio.sleep(PROGRESS_INTERVAL)

    async def counters_loop(self) -> None:
        """Progress with the retransmission counters, often: the runner's record of when
        each transport resent what (during an event timeline)."""
        while True:
            await trio.sleep(COUNTERS_INTERVAL)
            await self.ctl.send(Progress(rx=self.rx_bytes, tx=self.tx_bytes,
                                         counters=self.counters()))

    def counters(self) -> dict[str, int]:
        """What this node's senders retransmitted so far: TCP bytes (the kernel's count,
        `tcp_info`), and the packets its own transports resent (RoCE, UDP)."""
        out = {"tcp_bytes_retrans": self._tcp_retrans_closed + sum(
            tcp_bytes_retrans(s) for s in self._tcp_out)}
        stats = self.transport_stats()
        for key, name in (("retransmitted", "roce_retransmitted"),
                          ("udp_retransmitted", "udp_retransmitted")):
            if key in stats:
                out[name] = int(stats[key])
        return out

    def _check_done(self) -> None:
        if self.expected_left == 0 and self.sends_left == 0 and self.blocks_left == 0:
            self.all_done.set()

    # ---- sockets ------------------------------------------------------------------------

    def _tune(self, sock: trio.socket.SocketType, cls: str) -> None:
        c = self.cfg.classes.get(cls, {})
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, (int(c.get("dscp", 0)) << 2) & 0xFC)
        if sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cc = c.get("tcp_cc")
            if cc:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, cc.encode())
                except OSError as e:
                    raise RuntimeError(f"class {cls}: TCP congestion control {cc!r}: "
                                       f"{e.strerror} (see `fabric doctor`)") from None

    async def listen_tcp(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                         ) -> None:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lsock:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await lsock.bind((self.cfg.address, KV_PORT))
            lsock.listen(128)
            task_status.started()
            async with trio.open_nursery() as nursery:
                while True:
                    conn, _ = await lsock.accept()
                    nursery.start_soon(self._tcp_receive, conn)

    # ---- sending ------------------------------------------------------------------------

    async def run_sends(self) -> None:
        async with trio.open_nursery() as nursery:
            for tr in self.cfg.sends:
                key = (tr.dst, tr.cls, tr.transport)
                if key not in self._queues:
                    send, recv = trio.open_memory_channel[tuple[Transfer, int]](math.inf)
                    self._queues[key] = send
                    if tr.transport == "tcp":
                        nursery.start_soon(self._tcp_sender, tr.dst, tr.cls, recv)
                    else:
                        nursery.start_soon(transport(tr.transport).send, self, tr.dst,
                                           tr.cls, recv)
            for tr in self.cfg.sends:
                if tr.start_ns is not None:
                    nursery.start_soon(self._start_at, tr)
            await self.all_done.wait()
            nursery.cancel_scope.cancel()

    async def _start_at(self, tr: Transfer) -> None:
        assert tr.start_ns is not None
        delay = (self.cfg.t0_ns + tr.start_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            await trio.sleep(delay)
        self._enqueue(tr)

    def _enqueue(self, tr: Transfer) -> None:
        """`tr` is ready now: its latency counts from here, waiting in its queue included."""
        self._queues[(tr.dst, tr.cls, tr.transport)].send_nowait((tr, time.monotonic_ns()))

    def transfer_sent(self, tr: Transfer) -> None:
        """The receiver confirmed `tr`: start what waited for it."""
        self.sent_done.add(tr.id)
        self.sends_left -= 1
        for nxt in self._followers.pop(tr.id, []):
            self._enqueue(nxt)
        self._check_done()

    async def _connect(self, dst: str, cls: str) -> trio.socket.SocketType:
        addr = self.cfg.peers[dst]
        for attempt in range(CONNECT_ATTEMPTS):
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._tune(sock, cls)
            try:
                await sock.connect((addr, KV_PORT))
                return sock
            except OSError:
                sock.close()
                if attempt == CONNECT_ATTEMPTS - 1:
                    raise
                await trio.sleep(0.05)
        raise AssertionError("unreachable")

    async def _tcp_sender(self, dst: str, cls: str,
                          queue: trio.MemoryReceiveChannel[tuple[Transfer, int]]) -> None:
        sock = _stream(await self._connect(dst, cls))
        acked: dict[int, trio.Event] = {}
        self._tcp_out.add(sock)
        try:
            await self._tcp_send_queue(sock, queue, acked)
        finally:
            self._tcp_out.discard(sock)
            self._tcp_retrans_closed += tcp_bytes_retrans(sock)
            _close(sock)

    async def _tcp_send_queue(self, sock: socket.socket,
                              queue: trio.MemoryReceiveChannel[tuple[Transfer, int]],
                              acked: dict[int, trio.Event]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ack_reader, sock, acked)
            async for tr, t_start in queue:
                acked[tr.id] = trio.Event()
                if tr.from_store:
                    await self._send_from_store(sock, tr, t_start)
                    await acked[tr.id].wait()
                    del acked[tr.id]
                    self._store_sent(tr)
                    self.transfer_sent(tr)
                    continue
                chunks = chunks_of(tr)
                fault = self.fault
                ready = self._prehashed.pop(tr.id, [])
                for i, spec in enumerate(chunks):
                    if i < len(ready):
                        payload, dg = ready[i]
                    else:
                        payload = chunk_view(spec, self.cfg.seed)  # sent from the pool itself
                        dg = digest(payload)
                    header = encode_chunk_header(tr.id, spec.index, len(chunks),
                                                 spec.nbytes, dg, t_start, time.monotonic_ns())
                    if fault is not None:  # test-only: what leaves instead
                        for frame in fault.frames(tr.id, spec.index, len(chunks), payload):
                            await _send_all(sock, header, frame)
                        self.tx_bytes += spec.nbytes
                        continue
                    if not await _send_all(sock, header, payload):
                        await trio.lowlevel.checkpoint()  # see _send_all
                    self.tx_bytes += spec.nbytes
                await acked[tr.id].wait()
                del acked[tr.id]
                if tr.release:
                    self._store_sent(tr)
                self.transfer_sent(tr)
            nursery.cancel_scope.cancel()

    async def _ack_reader(self, sock: socket.socket, acked: dict[int, trio.Event]) -> None:
        dec = FrameDecoder()
        buf = bytearray(4096)
        view = memoryview(buf)
        while True:
            ev = dec.next_event()
            if ev is NEED_DATA:
                k = await _recv_into(sock, view)
                dec.receive_data(view[:k])
                continue
            if ev is CLOSED:
                return
            xfer = acked_transfer(ev)
            if xfer in acked:
                acked[xfer].set()

    def prehash(self, budget: int | None = None) -> None:
        """Before the run starts: the content and digest of this node's first `budget`
        (default PREHASH_CHUNKS) TCP chunks, in send order. A chunk leaves from the content
        pool, so its digest is the pool window's, the same whether made now or as it leaves;
        made now, a sender at line rate only sends (hashing 1 MiB took ~30 us of the ~450 us
        a 1 MiB chunk takes at 19 Gbit/s, on a core the kernel's TCP work shares). The
        receiver's check of every byte is unchanged. A store-served transfer's bytes are
        only known as it leaves: hashed then."""
        left = PREHASH_CHUNKS if budget is None else budget
        seed = self.cfg.seed
        for tr in self.cfg.sends:
            if left <= 0:
                return
            if tr.transport != "tcp" or tr.from_store:
                continue
            views = [chunk_view(spec, seed) for spec in chunks_of(tr)[:left]]
            self._prehashed[tr.id] = [(v, digest(v)) for v in views]
            left -= len(views)

    def transport_stats(self) -> dict[str, int]:
        """Counters of the node's own transports (retransmissions and the like)."""
        out: dict[str, int] = {}
        for ep in self.endpoints.values():
            out.update(ep.statistics())
        return out

    # ---- receiving ----------------------------------------------------------------------

    async def _tcp_receive(self, conn: trio.socket.SocketType) -> None:
        sock = _stream(conn)
        try:
            await self._tcp_receive_frames(sock)
        finally:
            _close(sock)

    async def _tcp_receive_frames(self, sock: socket.socket) -> None:
        """Chunk frames from one sender: the header through the frame decoder, the payload
        straight into a reused buffer, then checked against the header's digest."""
        dec = FrameDecoder()
        buf = np.empty(1 << 20, dtype=np.uint8)
        head = memoryview(bytearray(HEAD_READ))
        lowat = 1
        while True:
            ev = dec.next_event()
            if ev is NEED_DATA:
                k = await _recv_into(sock, head)
                dec.receive_data(head[:k])
                continue
            if ev is CLOSED:
                return
            if isinstance(ev, Payload):
                continue
            chunk = chunk_header(ev)
            if chunk is None:
                continue
            t_first = time.monotonic_ns()
            n = chunk.nbytes
            if buf.nbytes < n:
                buf = np.empty(n, dtype=np.uint8)
            view = memoryview(buf)[:n]  # type: ignore[arg-type]
            got = dec.take_buffered_payload(view)
            self.rx_bytes += got
            waited = False
            while got < n:
                try:
                    k = sock.recv_into(view[got:])
                except BlockingIOError:
                    # wake only when a large piece of what is still due has arrived: a 1 MiB
                    # payload then costs a few wake-ups instead of one per segment burst
                    want = min(n - got, RCVLOWAT_MAX)
                    if want != lowat:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
                        lowat = want
                    await trio.lowlevel.wait_readable(sock)
                    waited = True
                    continue
                if k == 0:
                    return  # peer gone mid-chunk: the transfer stays incomplete
                dec.payload_consumed(k)
                got += k
                self.rx_bytes += k
            t_last = time.monotonic_ns()
            if lowat != 1:  # the next header is small
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
                lowat = 1
            ok = digest(buf[:n]) == chunk.digest
            blk = self._block_rx.get(chunk.xfer) if self._block_rx else None
            if blk is not None:
                if self._on_block_chunk(blk, chunk.index, buf[:n], chunk.digest,
                                        chunk.t_start, chunk.t_send, t_first, t_last, ok):
                    waited = await _send_all(sock, encode_ack(chunk.xfer)) or waited
                    self._block_transfer_in(blk, t_last)
            elif self.on_chunk(chunk.xfer, chunk.index, n, chunk.t_start, chunk.t_send,
                               t_first, t_last, ok):
                waited = await _send_all(sock, encode_ack(chunk.xfer)) or waited
            if not waited:
                await trio.lowlevel.checkpoint()  # see _send_all

    def on_chunk(self, tid: int, index: int, nbytes: int, t_start: int, t_send: int,
                 t_first: int, t_last: int, ok: bool, *, wrong: bool = False) -> bool:
        """Record one arrived chunk; True when it completes its transfer (send the ack).
        `wrong`: a block chunk that arrived intact (its header digest matches) but whose
        bytes are not the block's (its sender's store served wrong bytes): delivered, so
        the transfer completes, and counted as corrupt."""
        inc = self.incoming.get(tid)
        if inc is None:
            return False  # not ours: never expected, so never counted as good
        tr = inc.tr
        if index in inc.got:
            inc.dups += 1
        elif ok:
            inc.got.add(index)
        elif wrong and 0 <= index < inc.nchunks:
            inc.got.add(index)
            inc.wrong += 1
        else:
            inc.bad += 1
        self.chunk_records.append(ChunkRecord(
            flow=tr.flow, cls=tr.cls, kind=tr.kind, request=tr.request, chunk=index,
            nbytes=nbytes, t_send_ns=t_send, t_first_ns=t_first, t_last_ns=t_last, ok=ok))
        inc.t_start = t_start if inc.t_start is None else inc.t_start
        inc.t_first = t_first if inc.t_first is None else inc.t_first
        if len(inc.got) == inc.nchunks and inc.t_done is None:
            inc.t_done = t_last
            self.expected_left -= 1
            self._check_done()
            return True
        return False

    def transfer_records(self) -> list[TransferRecord]:
        out = []
        for inc in self.incoming.values():
            tr = inc.tr
            if inc.t_done is not None:
                status = "corrupt" if inc.wrong else "duplicate" if inc.dups else "ok"
            elif inc.bad:
                status = "corrupt"
            else:
                status = "incomplete"
            out.append(TransferRecord(
                flow=tr.flow, cls=tr.cls, kind=tr.kind, src=tr.src, dst=tr.dst,
                request=tr.request, nbytes=tr.nbytes, chunks=inc.nchunks,
                t_start_ns=inc.t_start or 0, t_first_byte_ns=inc.t_first or 0,
                t_done_ns=inc.t_done or 0, status=status))
        return out

    async def send_records(self, *, final: bool = True) -> None:
        """Send the chunk records not sent yet; with `final`, the transfer records too.

        The progress loop's call is cancelled when the run ends, maybe while it waits for the
        channel (nothing sent: its records stay for the final report) or with its Records
        going out (`Channel.send` finishes a message it has started). A record is forgotten
        only once sent, and one call at a time takes records, so none is lost or sent twice."""
        async with self._reporting:
            if not final and not self.chunk_records:
                return
            n = len(self.chunk_records)
            chunks = [list(_astuple(r)) for r in self.chunk_records[:n]]
            transfers = [list(_astuple(r)) for r in self.transfer_records()] if final else []
            body: dict[str, Any] = {"chunks": chunks, "transfers": transfers}
            if final and (self._results or self.store is not None):
                body["blocks"] = self.block_results()
                body["block_stores"] = self.block_stores()
            await self.ctl.send(Records(body))
            del self.chunk_records[:n]

    # ---- blocks -------------------------------------------------------------------------

    def _setup_blocks(self) -> None:
        """Tell the store what the plan brings, reuses and serves here (nothing for a plan
        without blocks)."""
        cfg = self.cfg
        rx = [tr for tr in cfg.expects if tr.blocks or tr.reuse]
        tx = [tr for tr in cfg.sends if tr.from_store or tr.release]
        if not (rx or tx or self.block_ops):
            return
        for tr in rx + tx:
            if tr.transport != "tcp":  # Transfer refuses these; a hand-made plan may not
                raise RuntimeError(f"transfer {tr.id} ({tr.flow}#{tr.request} {tr.src} -> "
                                   f"{tr.dst}): blocks move over tcp only, not "
                                   f"{tr.transport!r}")
        # a block's bytes do not depend on how it is cut: the store makes and proves the blocks
        # made here at its own part size
        store = self.store = BlockStore(cfg.seed)
        for tr in rx:
            who = ("transfer", tr.id)
            store.expect(who, tr.start_ns, arrives=[k for k, _ in tr.blocks] if tr.keep else (),
                         reuse=tr.reuse)
            res = self._result("transfer", tr.id, len(tr.reuse))
            res.update(carried=len(tr.blocks), carried_bad=0, kept=0)
            self._block_rx[tr.id] = _BlockRx(tr, chunks_of(tr) if tr.blocks else [],
                                             dict(tr.blocks), res)
        for tr in tx:
            if tr.from_store:
                store.expect(("send", tr.id), tr.start_ns, reuse=[k for k, _ in tr.blocks])
                self._result("send", tr.id, 0).update(sent=len(tr.blocks), released=0)
        for op in self.block_ops:
            if op["op"] == "append":
                store.expect(("op", op["id"]), op["t_ns"],
                             arrives=[k for k, _ in op.get("make", ())],
                             reuse=op.get("reuse", ()))
                self._result("append", op["id"], len(op.get("reuse", ()))).update(
                    made=len(op.get("make", ())))
            elif op["op"] == "drop":
                self._result("drop", op["id"], 0).update(dropped=0, deferred=0)
            else:
                raise RuntimeError(f"block op {op.get('id')}: unknown op {op['op']!r} "
                                   "(append or drop)")

    def _result(self, what: str, ident: int, reused: int) -> dict[str, Any]:
        """A block result, to fill in; it counts as open until `_settled`. A from_store
        send's says how many blocks it `served` and when it was acknowledged
        (`t_acked_ns`): no `ok` or `t_ready_ns`, which are the receiver's."""
        res: dict[str, Any] = {"node": self.cfg.name, "id": ident, "what": what,
                               "reused": reused, "ok": 0, "missing": 0, "corrupt": 0,
                               "pending": 0, "t_ready_ns": 0, "done": False}
        if what == "send":
            del res["ok"], res["t_ready_ns"]
            res.update(served=0, t_acked_ns=0)
        self._results[("send" if what == "send" else "op" if what in ("append", "drop")
                       else "transfer", ident)] = res
        if what != "send":  # a send settles with its transfer (sends_left)
            self.blocks_left += 1
        return res

    def _settled(self, res: dict[str, Any], t_ready: int) -> None:
        res["t_acked_ns" if res["what"] == "send" else "t_ready_ns"] = t_ready
        res["done"] = True
        if res["what"] != "send":
            self.blocks_left -= 1
            self._check_done()

    def _poke(self) -> None:
        """The store changed: wake whoever waits for a pending block."""
        self._store_changed.set()
        self._store_changed = trio.Event()

    def _now(self) -> int:
        """Host time from the run's start: the plan's times."""
        return time.monotonic_ns() - self.cfg.t0_ns

    def _on_block_chunk(self, blk: _BlockRx, index: int, data: np.ndarray, claimed: bytes,
                        t_start: int, t_send: int, t_first: int, t_last: int,
                        ok: bool) -> bool:
        """A chunk of a block transfer: also the generator's digest for its (key, part);
        into the store when kept. True when it completes the transfer. A carried block
        with wrong bytes counts as `corrupt` in the transfer's result (and `carried_bad`
        counts its chunks)."""
        wrong = False
        tr = blk.tr
        store = self.store
        assert store is not None
        if ok and 0 <= index < len(blk.specs):
            spec = blk.specs[index]
            assert spec.content is not None
            key, part = spec.content
            size = blk.sizes[key]
            if claimed != store.expected_digests(key, size, tr.chunk_bytes)[part]:
                ok, wrong = False, True
                blk.wrong.add(key)
            elif tr.keep and tr.id in self.incoming and index not in self.incoming[tr.id].got:
                if store.put_part(key, part, data, block_bytes=size, chunk_bytes=tr.chunk_bytes,
                                  source=("transfer", tr.id), now_ns=self._now()):
                    blk.result["kept"] += 1
                    self._poke()
        if wrong:
            blk.result["carried_bad"] += 1
        return self.on_chunk(tr.id, index, data.nbytes, t_start, t_send, t_first, t_last, ok,
                             wrong=wrong)

    def _block_transfer_in(self, blk: _BlockRx, t_done: int) -> None:
        """A block transfer's last chunk is in (acknowledged): what it did not bring is no
        longer due; prove its reuse, now or once the pending keys are in."""
        tr = blk.tr
        store = self.store
        assert store is not None
        who = ("transfer", tr.id)
        if tr.keep:
            store.settle(who)
            self._poke()
        if blk.wrong:  # the request's KV has blocks with wrong bytes: corrupt, as held ones
            blk.result["corrupt"] += len(blk.wrong)
            blk.result.setdefault("bad_keys", []).extend(sorted(blk.wrong)[:16])
        self._prove(blk.result, list(tr.reuse), who, t_done, None)

    def _prove(self, res: dict[str, Any], keys: list[int], who: tuple[str, int],
               t_ready: int, then: Callable[[], None] | None) -> None:
        """Prove `keys` for `who` into `res`; when some are pending, wait for them in a
        task of their own (the ready time is when the last one is proved); then `then`."""
        store = self.store
        assert store is not None
        proof = store.prove(keys, self._now(), who)
        self._count(res, proof)
        if not proof.pending:
            if then is not None:  # an append: its KV is whole once made
                then()
                t_ready = time.monotonic_ns()
            self._settled(res, t_ready)
            return
        res["pending"] = len(proof.pending)
        assert self.tasks is not None
        self.tasks.start_soon(self._prove_pending, res, list(proof.pending), who, then)

    async def _prove_pending(self, res: dict[str, Any], keys: list[int], who: tuple[str, int],
                             then: Callable[[], None] | None) -> None:
        store = self.store
        assert store is not None
        while keys:
            changed = self._store_changed
            await changed.wait()
            proof = store.prove(keys, self._now(), who)
            self._count(res, proof)
            keys = list(proof.pending)
            res["pending"] = len(keys)
        if then is not None:
            then()
        self._settled(res, time.monotonic_ns())

    @staticmethod
    def _count(res: dict[str, Any], proof: Any) -> None:  # noqa: ANN401 - a blocks.Proof
        res["ok"] += len(proof.ok)
        res["missing"] += len(proof.missing)
        res["corrupt"] += len(proof.corrupt)
        if proof.missing or proof.corrupt:
            res.setdefault("bad_keys", []).extend([*proof.missing, *proof.corrupt][:16])

    async def run_block_ops(self) -> None:
        """Each block operation at its time, in plan order (an append's wait for pending
        blocks runs on its own, so it holds up no later operation)."""
        store = self.store
        for op in self.block_ops:
            at = self.cfg.t0_ns + op["t_ns"]
            delay = (at - time.monotonic_ns()) / 1e9
            if delay > 0:
                await trio.sleep(delay)
            assert store is not None
            if op["op"] == "drop":
                res = self._results[("op", op["id"])]
                now, later = store.drop([int(k) for k in op["drop"]], op["t_ns"])
                res.update(dropped=now, deferred=later)
                self._settled(res, time.monotonic_ns())
                continue
            who = ("op", op["id"])
            make = [(int(k), int(b)) for k, b in op.get("make", ())]

            def made(make: list[tuple[int, int]] = make, who: tuple[str, int] = who) -> None:
                for key, nbytes in make:
                    store.make(key, nbytes, source=who, now_ns=self._now())
                store.settle(who)
                self._poke()

            self._prove(self._results[who], [int(k) for k in op.get("reuse", ())], who,
                        time.monotonic_ns(), made)

    async def _send_from_store(self, sock: socket.socket, tr: Transfer,
                               t_start: int) -> None:
        """Send `tr`'s blocks from this node's store: each part a slice of the held block
        (waiting for one still due here); a block never held leaves as zeros, and the
        receiver's generator check finds it (reported missing here too)."""
        store = self.store
        assert store is not None
        res = self._results[("send", tr.id)]
        who = ("send", tr.id)
        chunks = chunks_of(tr)
        sizes = dict(tr.blocks)
        held: np.ndarray | None = None
        sent: dict[int, np.ndarray] = {}
        for spec in chunks:
            assert spec.content is not None
            key, part = spec.content
            if part == 0:
                held = store.bytes_of(key)
                while held is None and store.is_pending(key, tr.start_ns):
                    changed = self._store_changed
                    await changed.wait()
                    held = store.bytes_of(key)
                if held is None or held.nbytes != sizes[key]:
                    held = None
                    res["missing"] += 1
                    res.setdefault("bad_keys", []).append(key)
                else:
                    res["served"] += 1
                    sent[key] = held
            lo = spec.block_offset
            payload = (held[lo: lo + spec.nbytes] if held is not None
                       else np.zeros(spec.nbytes, dtype=np.uint8))
            header = encode_chunk_header(tr.id, spec.index, len(chunks), spec.nbytes,
                                         digest(payload), t_start, time.monotonic_ns())
            if not await _send_all(sock, header, payload):
                await trio.lowlevel.checkpoint()  # see _send_all
            self.tx_bytes += spec.nbytes
        store.unpin([k for k, _ in tr.blocks], who, self._now())
        self._sent_copies[tr.id] = sent

    def _store_sent(self, tr: Transfer) -> None:
        """`tr` was acknowledged: with `release`, its blocks leave this node's store."""
        res = self._results.get(("send", tr.id))
        if tr.release and self.store is not None:
            copies = self._sent_copies.pop(tr.id, None)
            now, later = self.store.release([k for k, _ in tr.blocks], tr.start_ns, copies)
            if res is not None:
                res["released"] = now + later
        if res is not None:
            self._settled(res, time.monotonic_ns())

    def block_results(self) -> list[dict[str, Any]]:
        """Every block result (transfer, send, append, drop); one not done yet says so."""
        return [dict(r) for r in self._results.values()]

    def block_stores(self) -> list[dict[str, Any]]:
        if self.store is None:
            return []
        from dataclasses import asdict

        return [{"node": self.cfg.name, **asdict(self.store.statistics())}]


def tcp_info_bytes(sock: trio.socket.SocketType | socket.socket) -> tuple[int, int]:
    """(bytes sent, bytes retransmitted) of a TCP socket, from the kernel's `tcp_info`;
    (0, 0) once it is closed or where the kernel is older than 4.19."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCPI_LEN)
    except OSError:
        return 0, 0
    if len(raw) < TCPI_LEN:
        return 0, 0
    return (int.from_bytes(raw[TCPI_BYTES_SENT:TCPI_BYTES_SENT + 8], "little"),
            int.from_bytes(raw[TCPI_BYTES_RETRANS:TCPI_BYTES_RETRANS + 8], "little"))


def tcp_bytes_retrans(sock: trio.socket.SocketType | socket.socket) -> int:
    return tcp_info_bytes(sock)[1]


def _astuple(r: ChunkRecord | TransferRecord) -> tuple:
    from dataclasses import astuple

    return astuple(r)


# ---- the chunk data path's socket I/O ----------------------------------------------------
#
# The KV connections run on plain non-blocking stdlib sockets, not trio's socket wrappers: a
# trio socket method yields to the scheduler after every system call that succeeds (a
# run-loop pass with its own epoll_wait), several times per chunk on this path. Here a call
# is tried first and the task waits for the socket (`wait_readable`/`wait_writable`) only
# when the kernel has nothing for it, which is also when it yields; a chunk that never had
# to wait yields once at its end, so a fast stream cannot starve the node's other tasks or
# dodge cancellation. (Measured on the 2-core machine: a 64 KiB chunk's one-way p50 went
# from ~62 to ~38 us; the rest is the event loop's wake-up, see scripts/bench_kv.py.)


def _stream(sock: trio.socket.SocketType) -> socket.socket:
    """The connected trio socket `sock` as a non-blocking stdlib socket (which now owns it)."""
    raw = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    raw.setblocking(False)
    return raw


def _close(sock: socket.socket) -> None:
    """Close a socket trio may be waiting on (wakes any waiter with ClosedResourceError)."""
    trio.lowlevel.notify_closing(sock)
    sock.close()


async def _send_all(sock: socket.socket, *parts: bytes | memoryview | np.ndarray) -> bool:
    """Send `parts` in order, whole: one system call for all of them while the kernel takes
    them (a chunk's header and payload leave together), waiting only when it takes nothing.
    True when it waited (and so yielded); a caller that streams should checkpoint otherwise."""
    views = [memoryview(p).cast("B") for p in parts]  # type: ignore[arg-type]
    waited = False
    while views:
        try:
            k = sock.sendmsg(views)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            waited = True
            continue
        while k:
            first = views[0].nbytes
            if k >= first:
                k -= first
                views.pop(0)
            else:
                views[0] = views[0][k:]
                k = 0
        while views and not views[0].nbytes:
            views.pop(0)
    return waited


async def _recv_into(sock: socket.socket, view: memoryview) -> int:
    """Read what the kernel has into `view` (at least 1 byte; 0 at end of stream), waiting
    for the socket only when it has nothing."""
    while True:
        try:
            return sock.recv_into(view)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)


async def serve_node(ctl_fd: int, name: str) -> None:
    """The node's whole life: wait for its plan, run it, report, exit."""
    ctl = Channel.from_fd(ctl_fd)
    msg = await ctl.receive()
    if not isinstance(msg, Plan):
        return
    plan = msg.body
    if plan.get("models"):  # the file's own models (a remote agent has not got them)
        use_file_models({n: ModelSpec(**d) for n, d in plan["models"].items()})
    cfg = NodeConfig(
        name=name, address=plan["address"], peers=plan["peers"], classes=plan["classes"],
        seed=plan["seed"], t0_ns=0,
        sends=[Transfer.from_dict(d) for d in plan["sends"]],
        expects=[Transfer.from_dict(d) for d in plan["expects"]],
        udp_mss=plan["udp_mss"], udp_window=plan["udp_window"], roce=plan.get("roce", {}),
        udp=plan.get("udp", {}),
    )
    node = Node(cfg, ctl, block_ops=plan.get("block_ops"))
    rss_start = _vm("VmRSS")
    async with trio.open_nursery() as nursery:
        await nursery.start(node.listen_tcp)
        # the transports this node moves traffic over (RoCE also when it only has a QP plan)
        needed = {tr.transport for tr in cfg.sends + cfg.expects} | ({"roce"} if cfg.roce
                                                                      else set())
        for kind in sorted(needed - {"tcp"}):
            await nursery.start(transport(kind).serve, node)
        node.fault = faults.from_env(cfg.sends)  # FABRIC_TEST_FAULT: tests only
        if node.fault is not None:
            faults.wrap_endpoints(node.endpoints, node.fault)
        node.prehash()
        await ctl.send(Ready())
        go = await ctl.receive()  # the shared start time
        if not isinstance(go, Go):
            nursery.cancel_scope.cancel()
            return
        cfg.t0_ns = go.t0
        node.tasks = nursery
        progress = trio.CancelScope()
        nursery.start_soon(_within, progress, node.progress_loop)
        counting = trio.CancelScope()
        if plan.get("sample_counters"):
            nursery.start_soon(_within, counting, node.counters_loop)
        nursery.start_soon(_stop_on_ctl, ctl, node)
        nursery.start_soon(node.run_sends)
        if node.block_ops:
            nursery.start_soon(node.run_block_ops)
        await node.all_done.wait()
        progress.cancel()
        counting.cancel()
        await node.send_records()
        await ctl.send(Done(rss_start_kb=rss_start, hwm_kb=_vm("VmHWM"),
                            transport=node.transport_stats()))
        # Linger until the run ends (the runner's Stop, or its end of the channel): a peer
        # whose last acknowledgement from us was lost resends, and only a node still serving
        # answers it; a node that left at once would leave that sender waiting for the timeout.
        await node.stopped.wait()
        nursery.cancel_scope.cancel()


async def _within(scope: trio.CancelScope, run: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await run()


def _vm(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


async def _stop_on_ctl(ctl: Channel, node: Node) -> None:
    """A `stop` from the runner (or its end) ends the node with what it has."""
    await ctl.receive()
    node.stopped.set()
    node.all_done.set()
