"""An LPU node process: executes a compiled plan of vector batches, or the same transfers
dynamically, over real UDP sockets through the fabric's links.

Scheduled mode: every batch leaves when this node's own clock reads the planned departure.
The clock is plesiosynchronous: it runs `drift_ppm` fast (or slow) against the host's
CLOCK_MONOTONIC, and the runner resynchronises it with a `sync` message on the control channel
every resync period (the message's own latency is the resync error, as with a real sync
message). Departures are timed with a timerfd (trio and epoll sleeps round to ~1 ms here).
A batch that must be forwarded, or whose transfer's input data has not arrived, by its
planned departure leaves when it arrives: that is how lateness propagates.

Dynamic mode: no plan. A transfer starts once the transfers it depends on have arrived here;
its batches go out back to back, paced at the link rate per outgoing link (one NIC per link,
FIFO), and intermediate nodes forward on arrival into the same FIFOs: the links are arbitrated
by queues, as in an ordinary fabric.

Datagram: 16-byte header (transfer u32, batch u32, hop u16, final-destination index u16,
unused u32) then `batch_vectors x vector_bytes` bytes of content.
"""

from __future__ import annotations

import socket
import struct
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from ..net.tun import TimerFd
from ..node.session import Channel, Go, Plan, Ready, Records, Stop, Sync

LPU_PORT = 7480
HEADER = struct.Struct("!IIHHI")


class DriftClock:
    """This node's clock: true time (CLOCK_MONOTONIC) stretched by `drift_ppm`, reset by syncs."""

    def __init__(self, drift_ppm: float) -> None:
        self.rate = 1.0 + drift_ppm * 1e-6
        self.base_true = time.monotonic_ns()
        self.base_local = self.base_true
        self.version = 0

    def sync(self, reference_ns: int) -> None:
        """A sync message says the reference time is `reference_ns` (it was, when sent)."""
        self.base_true = time.monotonic_ns()
        self.base_local = reference_ns
        self.version += 1

    def true_at(self, local_ns: int) -> int:
        """When (true time) this clock will read `local_ns`."""
        return self.base_true + round((local_ns - self.base_local) / self.rate)


@dataclass
class LpuNodePlan:
    name: str
    mode: str  # "scheduled" | "dynamic"
    address: str
    peers: dict[str, str]  # name -> address
    index: dict[str, int]  # name -> index (in datagram headers)
    next_hop: dict[str, str]  # final destination -> neighbour to send to
    sends: list[list[int]]  # scheduled: [transfer, batch, hop, dst_index, next_index, depart]
    originates: list[list[Any]]  # dynamic: [transfer, dst, batches, [deps]]
    expects: dict[int, int]  # transfer -> batches that end here
    payload_bytes: int
    slot_ns: dict[str, int]  # neighbour -> host ns per batch on that link (dynamic pacing)
    drift_ppm: float
    t0_ns: int = 0


@dataclass
class LpuNode:
    plan: LpuNodePlan
    sock: trio.socket.SocketType
    ctl: Channel
    clock: DriftClock
    arrivals: list[tuple[int, int, int, int]] = field(default_factory=list)  # x, batch, hop, t
    have: dict[tuple[int, int], trio.Event] = field(default_factory=dict)
    done_transfers: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    transfer_arrived: dict[int, trio.Event] = field(default_factory=dict)
    sent: list[tuple[int, int, int, int, int]] = field(default_factory=list)  # x,b,hop,plan,t
    payload: bytes = b""
    deps: dict[int, list[int]] = field(default_factory=dict)  # transfer -> its dependencies
    _hdr: bytearray = field(default_factory=lambda: bytearray(HEADER.size))  # reused per send
    # dynamic mode: hands an arrived batch to its next hop's queue (set when the node starts)
    _forward: Callable[[int, int, int, int, str], None] | None = None

    def forward_batch(self, tid: int, batch: int, hop: int, dst_index: int, dst: str) -> None:
        """Dynamic mode: queue a batch that arrived here for its next hop."""
        assert self._forward is not None  # set by run_dynamic before any batch arrives
        self._forward(tid, batch, hop, dst_index, dst)

    def event(self, key: tuple[int, int]) -> trio.Event:
        ev = self.have.get(key)
        if ev is None:
            ev = self.have[key] = trio.Event()
        return ev

    def arrived(self, tid: int) -> trio.Event:
        ev = self.transfer_arrived.get(tid)
        if ev is None:
            ev = self.transfer_arrived[tid] = trio.Event()
        return ev

    async def receive_loop(self, forward: Any) -> None:
        me = self.plan.index[self.plan.name]
        names = {i: n for n, i in self.plan.index.items()}
        while True:
            data = await self.sock.recv(65536)
            now = time.monotonic_ns()
            tid, batch, hop, dst, _ = HEADER.unpack_from(data)
            if dst == me:
                self.arrivals.append((tid, batch, hop, now))
                self.done_transfers[tid] += 1
                if self.done_transfers[tid] == self.plan.expects.get(tid, -1):
                    self.arrived(tid).set()
            else:
                self.event((tid, batch)).set()  # a scheduled forward may go now
                if forward is not None:
                    forward(tid, batch, hop + 1, dst, names[dst])

    async def send(self, tid: int, batch: int, hop: int, dst_index: int, to: str) -> None:
        HEADER.pack_into(self._hdr, 0, tid, batch, hop, dst_index, 0)
        await self.sock.sendmsg([self._hdr, self.payload], [], 0, (self.plan.peers[to], LPU_PORT))

    # ---- scheduled -----------------------------------------------------------------------

    async def run_scheduled(self) -> None:
        timer = TimerFd()
        names = {i: n for n, i in self.plan.index.items()}
        try:
            for tid, batch, hop, dst_index, next_index, depart in self.plan.sends:
                local_target = self.plan.t0_ns + depart
                while True:  # a sync may move the true time of the target: re-arm
                    version = self.clock.version
                    target = self.clock.true_at(local_target)
                    if target <= time.monotonic_ns():
                        break
                    timer.set_abs(target)
                    await trio.lowlevel.wait_readable(timer.fileno())
                    timer.clear()
                    if version == self.clock.version:
                        break
                if hop > 0:  # forwarding: the batch must be here first
                    await self.event((tid, batch)).wait()
                else:  # the data this transfer is computed from must be here too
                    for dep in self.deps.get(tid, ()):
                        await self.arrived(dep).wait()
                self.sent.append((tid, batch, hop, depart, time.monotonic_ns()))
                await self.send(tid, batch, hop, dst_index, names[next_index])
        finally:
            timer.close()

    # ---- dynamic -------------------------------------------------------------------------

    async def run_dynamic(self) -> None:
        queues: dict[str, trio.MemorySendChannel] = {}
        async with trio.open_nursery() as nursery:
            for neighbour in self.plan.slot_ns:
                send, recv = trio.open_memory_channel[tuple[int, int, int, int]](1_000_000)
                queues[neighbour] = send
                nursery.start_soon(self._pacer, neighbour, recv)
            self._forward = lambda tid, b, hop, dst_i, dst: queues[
                self.plan.next_hop[dst]].send_nowait((tid, b, hop, dst_i))
            delay = (self.plan.t0_ns - time.monotonic_ns()) / 1e9
            if delay > 0:
                await trio.sleep(delay)
            async with trio.open_nursery() as starts:
                for tid, dst, batches, deps in self.plan.originates:
                    starts.start_soon(self._originate, queues, tid, dst, batches, deps)
            # originated traffic is queued; the pacers finish it, forwarding goes on
            await trio.sleep_forever()

    async def _originate(self, queues: dict, tid: int, dst: str, batches: int,
                         deps: list[int]) -> None:
        for dep in deps:
            await self.arrived(dep).wait()
        q = queues[self.plan.next_hop[dst]]
        for b in range(batches):
            q.send_nowait((tid, b, 0, self.plan.index[dst]))

    async def _pacer(self, neighbour: str, recv: trio.MemoryReceiveChannel) -> None:
        """One NIC: batches leave in order, one per slot at the link rate."""
        slot = self.plan.slot_ns[neighbour]
        free_at = 0
        async for tid, b, hop, dst_i in recv:
            now = time.monotonic_ns()
            if free_at > now:
                await trio.sleep((free_at - now) / 1e9)
            self.sent.append((tid, b, hop, -1, time.monotonic_ns()))
            await self.send(tid, b, hop, dst_i, neighbour)
            free_at = max(now, free_at) + slot


async def serve_lpu(ctl_fd: int, name: str) -> None:
    """The node's life: plan, ready, go, run, report; `stop` ends it."""
    ctl = Channel.from_fd(ctl_fd)
    msg = await ctl.receive()
    if not isinstance(msg, Plan):
        return
    raw = msg.body
    plan = LpuNodePlan(**raw)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 20)
    await sock.bind((plan.address, LPU_PORT))
    node = LpuNode(plan=plan, sock=sock, ctl=ctl, clock=DriftClock(plan.drift_ppm),
                   deps={tid: deps for tid, _dst, _n, deps in plan.originates})
    node.payload = np.random.default_rng(plan.index[name]).integers(
        0, 256, plan.payload_bytes, dtype=np.uint8).tobytes()
    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.receive_loop,
                               node.forward_batch if plan.mode == "dynamic" else None)
            await ctl.send(Ready())
            go = await ctl.receive()
            if not isinstance(go, Go):
                nursery.cancel_scope.cancel()
                return
            plan.t0_ns = go.t0
            node.clock.sync(go.now)
            nursery.start_soon(node.run_scheduled if plan.mode == "scheduled"
                               else node.run_dynamic)
            while True:  # syncs until the runner says stop
                msg = await ctl.receive()
                if msg is None or isinstance(msg, Stop):
                    break
                if isinstance(msg, Sync):
                    node.clock.sync(msg.now)
            await ctl.send(Records({"arrivals": node.arrivals, "sent": node.sent}))
            nursery.cancel_scope.cancel()


__all__ = ["LPU_PORT", "DriftClock", "LpuNodePlan", "serve_lpu"]
