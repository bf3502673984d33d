"""A memory endpoint node process: exposes memory windows, issues loads and stores, and takes
part in the memory runs (`fabric.run.memory`).

The process is forked by the runner into its node's namespace (`fabric.node.spawn`). It has
two roles at once:

- **Memory.** The node's windows, and a local copy of every Hypercast window it is a member
  of, are `MemoryEndpoint`s. A request the switch delivers is applied in delivery order, and
  the response goes back with the request buffer (one credit).
- **Requester.** `request(op)` splits an operation into transactions of at most `txn` bytes,
  keeps up to `window` of them outstanding, and reassembles the answers. It returns the
  response and the operation's latency in fabric time.

Memory transactions go to the memory switch's address on the node's link (its gateway).
Message-passing baselines (the ring all-reduce, the KV push) use TCP between node loopbacks,
which the kernels forward over the same links.

Control: plan -> ready -> go, then `task` frames, each answered by a `result`, until `stop`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import numpy as np
import trio
import xxhash

from fabric.memsw.ops import (
    AtomicAdd,
    Contribute,
    Error,
    MemoryEndpoint,
    Op,
    Read,
    ReadResp,
    ReduceResult,
    Response,
    Write,
    WriteAck,
    completion_timeout_s,
    itemsize,
    reassemble,
    split,
)
from fabric.memsw.ops import decode as decode_values
from fabric.memsw.ops import encode as encode_values
from fabric.memsw.wire import (
    MEM_PORT,
    Create,
    Join,
    Leave,
    Packer,
    datagram_limit,
    decode_all,
    encode,
)
from fabric.node.session import Channel, Go, Plan, Ready, Result, Task

RING_PORT = 7480
# Transactions a node keeps outstanding, over all its operations (the plan sizes it from the
# node's link queue; this is the fallback): the stand-in for the link-level credits a
# UALink/PCIe port has toward its switch. With it the node's link queue never overflows, so
# no transaction is lost to a full queue. There is no retransmission, as on a memory fabric,
# where a lost transaction is a hardware error: a transaction unanswered within the completion
# timeout (`memory.timeout`; a link down, a node down) is counted lost and its operation fails
# with an `Error`, which the runner reports.
WINDOW = 64
LOST = "lost: no answer within the completion timeout"


def values_for(seed: int, n: int, dtype: str) -> np.ndarray:
    """Member `seed`'s reduce vector: small integers, exact in every reduce dtype's sum (so the
    ring's and the switch's different summation orders give bit-identical results)."""
    rng = np.random.default_rng(seed)
    ints = rng.integers(-8, 9, n).astype(np.float32)
    return ints


def pattern(seed: int, nbytes: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def digest(data: bytes | memoryview | np.ndarray) -> str:
    return xxhash.xxh3_64_hexdigest(memoryview(data))  # type: ignore[arg-type]


class _Flight:
    """The transactions of one operation in flight: the receive loop hands each answer to
    `answer`, which wakes the task that issued them."""

    __slots__ = ("done", "wake")

    def __init__(self) -> None:
        self.done: list[tuple[tuple[int, int], object]] = []
        self.wake = trio.Event()

    def answer(self, key: tuple[int, int], msg: object) -> None:
        self.done.append((key, msg))
        self.wake.set()


class MemoryNode:
    def __init__(self, plan: dict[str, Any], sock: socket.socket) -> None:
        self.plan = plan
        self.sock = sock
        self.scale = float(plan["time_scale"])
        self.txn = int(plan["txn"])
        self.gateway = (plan["gateway"], MEM_PORT)
        self.memories = [MemoryEndpoint(w["base"], w["size"])
                         for w in plan["windows"] + plan["mcast"]]
        self.tags = iter(range(1, 1 << 31))
        # transactions in flight, by (tag, offset) and by reduce (seq, offset): their operation
        self.waiting: dict[tuple[int, int], _Flight] = {}
        self.reduce_wait: dict[tuple[int, int], _Flight] = {}
        self.reduce_out: dict[tuple[int, int], bytes] = {}
        self.served = 0
        self.t0 = 0
        self.limiter: trio.Semaphore | None = None
        self.timeout_s = completion_timeout_s(int(plan.get("timeout_ns", 100_000)), self.scale)
        self.lost: list[int] = []  # fabric time each lost transaction was issued
        self.send_errors = 0  # sends the kernel refused (no route: the link is down)
        self.packer = Packer(datagram_limit(int(plan.get("mtu", 1500))))
        self._wake = trio.Event()

    def now(self) -> int:
        return int((time.monotonic_ns() - self.t0) / self.scale)

    def _memory(self, addr: int) -> MemoryEndpoint | None:
        for m in self.memories:
            if m.base <= addr < m.base + m.size:
                return m
        return None

    # -- serving ------------------------------------------------------------------------------

    async def receive_loop(self) -> None:
        """Serve and collect answers until cancelled; also runs the sender (`flush_loop`)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.flush_loop)
            while True:
                await trio.lowlevel.wait_readable(self.sock)
                self._drain()
                self.flush()

    def _drain(self) -> None:
        for _ in range(64):
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            for msg, src, _credit in decode_all(data):
                if isinstance(msg, (ReadResp, WriteAck, Error)):
                    key = (msg.tag, msg.offset)
                    flight = self.waiting.get(key)
                    if flight is not None:
                        flight.answer(key, msg)
                elif isinstance(msg, ReduceResult):
                    key = (msg.seq, msg.offset)
                    self.reduce_out[key] = bytes(msg.data)
                    flight = self.reduce_wait.get(key)
                    if flight is not None:
                        flight.answer(key, msg)
                else:  # a request delivered by the switch: apply it, answer with the credit
                    msg = cast(Op, msg)  # what is left of the decoded union: requests
                    mem = self._memory(getattr(msg, "addr", -1))
                    if mem is None:
                        resp: Response = Error(msg.tag, f"{self.plan['name']} has no memory at "
                                                        f"{getattr(msg, 'addr', -1):#x}",
                                               offset=msg.offset)
                    else:
                        resp = mem.apply(msg)
                    self.served += 1
                    self._send(resp, src=src, credit=1)

    def _send(self, msg: Any, *, src: int = 0, credit: int = 0) -> None:  # noqa: ANN401
        """Queue `msg` for the switch. Messages queued by the tasks that run in one pass of
        the scheduler leave together, several to a datagram (`flush`, run by `flush_loop`
        and after each receive batch), in the order they were queued."""
        for _, parts in self.packer.add(self.gateway, encode(msg, src=src, credit=credit)):
            self._sendmsg(parts)
        if not self._wake.is_set():  # set() is trio's KI-protected call: once per pass
            self._wake.set()

    def flush(self) -> None:
        """Send every queued message now."""
        for _, parts in self.packer.flush():
            self._sendmsg(parts)

    async def flush_loop(self) -> None:
        """Send what was queued once the tasks that queued it have run: woken by the first
        `_send`, this task runs after the other tasks ready in the same scheduler pass."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self.flush()

    def _sendmsg(self, parts: list) -> None:
        while True:
            try:
                self.sock.sendmsg(parts, [], 0, self.gateway)
                return
            except BlockingIOError:
                time.sleep(0.0001)  # the socket buffer is 8 MiB: this is a rare stall
            except OSError:
                # the link to the switch is down (no route, network down): the datagram is
                # lost as on the wire, and the completion timeout reports its transactions
                self.send_errors += 1
                return

    # -- requesting ---------------------------------------------------------------------------

    async def request(self, op: Op) -> tuple[Response, int]:
        """Issue `op` (split into transactions); returns its response and latency (fabric)."""
        t = self.now()
        parts = {(p.tag, p.offset): p for p in split(op, self.txn)}
        got, lost = await self._issue(
            [(key, partial(self._send, p)) for key, p in parts.items()], self.waiting)
        answers = [cast(Response, m) for m in got.values()]
        answers += [Error(parts[key].tag, LOST, offset=parts[key].offset) for key in lost]
        return reassemble(op, answers, self.txn), self.now() - t

    async def _issue(self, items: list[tuple[tuple[int, int], Callable[[], None]]],
                     table: dict[tuple[int, int], _Flight],
                     ) -> tuple[dict[tuple[int, int], object], list[tuple[int, int]]]:
        """Send `items` (key, send) in order, each taking a slot of the window shared by all
        operations until its answer (`table[key]`, set by the receive loop) comes back or
        the completion timeout gives it up. Returns the answers by key and the keys lost.

        One task does it all: it sends what the free slots allow (one flush, so they leave
        together), then sleeps until answers or the oldest deadline. A task per transaction
        cost more than the transaction's own handling."""
        limiter = self._limiter()
        flight = _Flight()
        inflight: dict[tuple[int, int], tuple[int, int]] = {}  # key -> (deadline, issued)
        answers: dict[tuple[int, int], object] = {}
        lost: list[tuple[int, int]] = []
        timeout_ns = int(self.timeout_s * 1e9)
        i = 0
        try:
            while i < len(items) or inflight:
                sent = False
                while i < len(items):
                    if inflight or sent:
                        try:
                            limiter.acquire_nowait()
                        except trio.WouldBlock:
                            break
                    else:  # the window is held by other operations: wait for a slot
                        await limiter.acquire()
                    key, send = items[i]
                    i += 1
                    table[key] = flight
                    inflight[key] = (time.monotonic_ns() + timeout_ns, self.now())
                    send()
                    sent = True
                if sent:
                    self.flush()
                if not flight.done and inflight:
                    first = next(iter(inflight.values()))[0]
                    with trio.move_on_after(max(0, first - time.monotonic_ns()) / 1e9):
                        await flight.wake.wait()
                flight.wake = trio.Event()
                done, flight.done = flight.done, []
                for key, msg in done:
                    if inflight.pop(key, None) is not None:
                        del table[key]
                        answers[key] = msg
                        limiter.release()
                now = time.monotonic_ns()
                while inflight:
                    key, (deadline, issued) = next(iter(inflight.items()))
                    if deadline > now:
                        break
                    del inflight[key], table[key]
                    self.lost.append(issued)
                    lost.append(key)
                    limiter.release()
        finally:  # cancelled: give back what is still out
            for key in inflight:
                table.pop(key, None)
                limiter.release()
        return answers, lost

    def tag(self) -> int:
        return next(self.tags)

    def _limiter(self) -> trio.Semaphore:
        if self.limiter is None:
            self.limiter = trio.Semaphore(int(self.plan.get("window", WINDOW)))
        return self.limiter

    # -- tasks --------------------------------------------------------------------------------

    async def task(self, t: dict[str, Any]) -> dict[str, Any]:
        kind = t["k"]
        if "at" in t:  # a shared start time, host clock
            delay = (t["at"] - time.monotonic_ns()) / 1e9
            if delay > 0:
                await trio.sleep(delay)
        if kind == "loadstore":
            out: dict[str, Any] = {}
            base = t["base"]
            for size in t["sizes"]:
                w_lat, r_lat = [], []
                ok, lost = True, len(self.lost)
                for i in range(t["count"]):
                    addr = base + (i * size) % max(t["span"] - size + 1, 1) // 64 * 64
                    data = pattern(i + size, size)
                    resp, lat = await self.request(Write(self.tag(), 0, addr, data))
                    w_lat.append(lat)
                    ok &= isinstance(resp, WriteAck)
                    resp, lat = await self.request(Read(self.tag(), 0, addr, size))
                    r_lat.append(lat)
                    ok &= isinstance(resp, ReadResp) and bytes(resp.data) == data
                out[str(size)] = {"write": w_lat, "read": r_lat, "ok": ok,
                                  "lost": len(self.lost) - lost}
            # fetch-and-add on one int64: each returns the value before it, in issue order
            a_lat, olds = [], []
            lost = len(self.lost)
            slot = base + t["span"] - 64  # the window's last flit
            resp, _ = await self.request(Write(self.tag(), 0, slot, bytes(8)))
            for _ in range(t["count"]):
                resp, lat = await self.request(AtomicAdd(self.tag(), 0, slot, 1, "int64"))
                a_lat.append(lat)
                if isinstance(resp, ReadResp):
                    olds.append(int(decode_values(bytes(resp.data), "int64")[0]))
            resp, _ = await self.request(Read(self.tag(), 0, slot, 8))
            final = int(decode_values(bytes(resp.data), "int64")[0]) \
                if isinstance(resp, ReadResp) else None
            out["atomic"] = {"atomic": a_lat, "lost": len(self.lost) - lost,
                             "ok": olds == list(range(t["count"])) and final == t["count"]}
            return out
        if kind in ("hypercast", "unicast"):
            data = pattern(t["seed"], t["size"])
            t0 = self.now()
            results = []
            async with trio.open_nursery() as nursery:
                async def put(addr: int) -> None:
                    results.append((await self.request(Write(self.tag(), 0, addr, data)))[0])

                for addr in t["addrs"]:
                    nursery.start_soon(put, addr)
            ok = all(isinstance(r, WriteAck) for r in results)
            return {"ok": ok, "ns": self.now() - t0, "digest": digest(data)}
        if kind == "group":  # Hypercast groups from the node: Create, Join, Leave
            if t["op"] == "create":
                msg: Any = Create(t["group"], t["base"], t["size"])
            elif t["op"] == "join":
                if "base" in t and self._memory(t["base"]) is None:  # room for its copy
                    self.memories.append(MemoryEndpoint(t["base"], t["size"]))
                msg = Join(t["group"], 0)
            else:
                msg = Leave(t["group"], 0)
            self._send(msg)
            await trio.sleep(0.05)  # a datagram, unanswered: give it time to arrive first
            return {"ok": True}
        if kind == "digest":
            mem = self._memory(t["addr"])
            assert mem is not None
            lo = t["addr"] - mem.base
            return {"digest": digest(memoryview(mem.data)[lo: lo + t["size"]])}
        if kind == "reduce-switch":
            return await self._reduce_switch(t)
        if kind == "reduce-ring":
            return await self._reduce_ring(t)
        if kind == "pull":
            t0 = self.now()
            lats, ok_all = [], True
            chunks = bytearray()
            for off in range(0, t["size"], t["chunk"]):
                n = min(t["chunk"], t["size"] - off)
                resp, lat = await self.request(Read(self.tag(), 0, t["addr"] + off, n))
                lats.append(lat)
                ok_all &= isinstance(resp, ReadResp)
                if isinstance(resp, ReadResp):
                    chunks += resp.data
            return {"ok": ok_all, "ns": self.now() - t0, "lat": lats,
                    "digest": digest(bytes(chunks))}
        if kind == "fill":
            mem = self._memory(t["addr"])
            assert mem is not None
            lo = t["addr"] - mem.base
            mem.data[lo: lo + t["size"]] = pattern(t["seed"], t["size"])
            return {"digest": digest(memoryview(mem.data)[lo: lo + t["size"]])}
        if kind == "push-send":
            return await self._push_send(t)
        if kind == "push-recv":
            return await self._push_recv(t)
        raise ValueError(f"unknown task {kind!r}")

    async def _reduce_switch(self, t: dict[str, Any]) -> dict[str, Any]:
        vec = values_for(t["seed"], t["n"], "float32")
        raw = encode_values(vec, t["dtype"])
        seq = t["seq"]
        t0 = self.now()
        keys = [(seq, off) for off in range(0, len(raw), self.txn)]

        def contribute(off: int) -> None:
            key = (seq, off)
            if key in self.reduce_out:  # its result is here already
                self.reduce_wait[key].answer(key, None)
            else:
                self._send(Contribute(self.tag(), 0, t["group"], raw[off: off + self.txn],
                                      offset=off, seq=seq))

        # Contributions go strictly in offset order, each taking a window slot until its
        # round's result is back. Every member does the same, so the lowest open round always
        # has every member's contribution on the way; slots taken out of order could leave
        # two members each waiting for rounds only the other can complete.
        _, lost = await self._issue(
            [(key, partial(contribute, key[1])) for key in keys], self.reduce_wait)
        for key in lost:  # the contribution or its result was lost
            self.reduce_out.setdefault(key, bytes(len(raw[key[1]: key[1] + self.txn])))
        out = b"".join(self.reduce_out.pop(k) for k in keys)
        return {"ns": self.now() - t0, "digest": digest(out),
                "bytes": len(raw)}

    async def _reduce_ring(self, t: dict[str, Any]) -> dict[str, Any]:
        members: list[str] = t["members"]
        me = members.index(self.plan["name"])
        k = len(members)
        vec = values_for(t["seed"], t["n"], "float32")
        dtype = t["dtype"]
        work = decode_values(encode_values(vec, dtype), dtype).astype(np.float32)
        bounds = np.linspace(0, len(work), k + 1).astype(int)
        nxt = self.plan["peers"][members[(me + 1) % k]]
        lsock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await lsock.bind((self.plan["address"], RING_PORT + t["seq"] % 100))
        lsock.listen(1)
        out_sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        out_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for attempt in range(200):
            try:
                await out_sock.connect((nxt, RING_PORT + t["seq"] % 100))
                break
            except OSError:
                out_sock.close()
                if attempt == 199:
                    raise
                out_sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                await trio.sleep(0.01)
        in_sock, _ = await lsock.accept()
        send = trio.SocketStream(out_sock)
        recv = trio.SocketStream(in_sock)
        t0 = self.now()

        def piece(i: int) -> np.ndarray:
            return work[bounds[i % k]: bounds[i % k + 1]]

        pending = bytearray()  # bytes of the next step that arrived with this one's

        async def exchange(out: np.ndarray, n_in: int) -> np.ndarray:
            """Send `out` to the next member while taking exactly `n_in` elements from the
            previous one (it may already be sending its next step: keep the rest)."""
            payload = encode_values(out, dtype)
            want = n_in * itemsize(dtype)

            async def sender() -> None:
                await send.send_all(payload)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                while len(pending) < want:
                    chunk = await recv.receive_some(65536)
                    if not chunk:
                        raise ConnectionError("ring neighbour closed")
                    pending.extend(chunk)
            got = bytes(pending[:want])
            del pending[:want]
            return decode_values(got, dtype).astype(np.float32)

        for step in range(k - 1):  # reduce-scatter
            s_i, r_i = me - step, me - step - 1
            incoming = await exchange(piece(s_i), len(piece(r_i)))
            piece(r_i)[:] = decode_values(encode_values(piece(r_i) + incoming, dtype), dtype)
        for step in range(k - 1):  # all-gather
            s_i, r_i = me + 1 - step, me - step
            incoming = await exchange(piece(s_i), len(piece(r_i)))
            piece(r_i)[:] = incoming
        elapsed = self.now() - t0
        for s in (send, recv):
            await s.aclose()
        lsock.close()
        return {"ns": elapsed, "digest": digest(encode_values(work, dtype)),
                "bytes": len(encode_values(vec, dtype))}

    async def _push_send(self, t: dict[str, Any]) -> dict[str, Any]:
        """Push the KV bytes to every receiver over TCP, all at once (message passing)."""
        mem = self._memory(t["addr"])
        assert mem is not None
        lo = t["addr"] - mem.base
        data = memoryview(mem.data)[lo: lo + t["size"]]
        t0 = self.now()

        async def one(dst: str) -> None:
            s = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            for attempt in range(200):
                try:
                    await s.connect((self.plan["peers"][dst], RING_PORT + 200))
                    break
                except OSError:
                    s.close()
                    if attempt == 199:
                        raise
                    s = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    await trio.sleep(0.01)
            stream = trio.SocketStream(s)
            await stream.send_all(data)
            await stream.receive_some(1)  # the receiver's confirmation: it has every byte
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            for dst in t["to"]:
                nursery.start_soon(one, dst)
        return {"ns": self.now() - t0}

    async def _push_recv(self, t: dict[str, Any]) -> dict[str, Any]:
        lsock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await lsock.bind((self.plan["address"], RING_PORT + 200))
        lsock.listen(1)
        conn, _ = await lsock.accept()
        stream = trio.SocketStream(conn)
        t0 = self.now()
        got = bytearray()
        while len(got) < t["size"]:
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                break
            got += chunk
        await stream.send_all(b"k")
        await stream.aclose()
        lsock.close()
        return {"ns": self.now() - t0, "digest": digest(bytes(got))}


async def serve_memory(ctl_fd: int, name: str) -> None:
    """The node's life: plan, ready, go, tasks until stop."""
    ctl = Channel.from_fd(ctl_fd)
    msg = await ctl.receive()
    if not isinstance(msg, Plan):
        return
    plan = msg.body
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.bind(("0.0.0.0", MEM_PORT))
    sock.setblocking(False)
    node = MemoryNode(plan, sock)
    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.receive_loop)
            await ctl.send(Ready())
            go = await ctl.receive()
            if not isinstance(go, Go):
                nursery.cancel_scope.cancel()
                return
            node.t0 = go.t0
            while True:
                msg = await ctl.receive()
                if not isinstance(msg, Task):  # Stop, or the runner is gone
                    break
                lost = len(node.lost)
                try:
                    result = await node.task(msg.body)
                except Exception as e:  # noqa: BLE001 - reported to the runner, which fails
                    result = {"error": f"{type(e).__name__}: {e}"}
                result["served"] = node.served
                result["lost"] = node.lost[lost:]  # fabric times the lost ones were issued
                result["send_errors"] = node.send_errors
                await ctl.send(Result(result))
            nursery.cancel_scope.cancel()
