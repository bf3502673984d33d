"""A memory-semantic switch as a sans-IO state machine, and a fabric of cascaded switches.

`MemorySwitch` is fed events with the time they happen and answers with actions:

- `submit(op, now_ns)`: a request's last byte reached the switch on port `op.src_port`;
- `complete(port, request, resp, now_ns)`: the endpoint on `port` answered a request it was
  delivered (its last byte reached the switch now);
- `on_credit(port, n, now_ns)`: the endpoint on `port` freed `n` request buffers;
- `advance(now_ns)`: time passed.

Each returns the actions due by `now_ns`: `Deliver(port, op, at_ns)` (a request's last byte
reaches the endpoint on `port` at `at_ns`) and `Respond(port, resp, at_ns)` (a response reaches
the requester). `next_deadline()` says when the next action falls due. The switch has no
clock and no I/O; times are integer nanoseconds and must not go backwards.

**Timing.** A message leaving on port P is ready `P.latency_ns` after it arrived (the
port-to-port latency toward P) and then serialises on P's link at `P.rate_bps`, after whatever
P is already sending: `at = max(arrival + latency, link free) + ceil(wire_bits / rate)`. On the
wire every message is whole 64-byte flits, at least one (a read or an ack is one header flit).

**Frames.** With `frame_bytes` (the switch node passes the datagram limit of its links), a
message that falls due is released with the messages serialised right behind it on the same
port (each starting when the one before ends), up to `frame_bytes` of flits: one frame, sent
as one datagram, as a link layer packs back-to-back transactions into one frame. They leave
when the first is due, so each reaches its endpoint within one frame's serialisation of its
own time (the link serialises the frame at the same rate). Without `frame_bytes` (0, the
default) every message is released at its own time, alone.

**Credits.** Each port has `credits` request buffers at its endpoint. Sending a request
takes one; the endpoint returns it with `on_credit`. A request finding no credit waits in
that port's FIFO (no drops), counted in `stalls` and `stall_ns`; only that port waits.
Responses do not take credits: a requester reserves room for the responses it asked for,
and keeping responses off the request credits is what prevents request/response deadlock.

**Hypercast.** A write into a multicast window is taken in once on the source link and
replicated inside the switch to every member of the window's group (except the source),
each copy taking a credit on its member's port. The source gets one `WriteAck` when every
member has acknowledged.

**In-network reduce.** A `ReduceGroup` sums its members' `Contribute` vectors (float16,
float32, or bfloat16) in float32, in member order, and rounds once to the dtype; when the last
member of a round has contributed, each member gets a `ReduceResult`. Each member's link
carries N bytes up and N down, against 2(k-1)/k N each way for a ring all-reduce
(`ring_allreduce`, the message-passing reference).

**Counters.** `bytes_in`/`bytes_out` count payload bytes (write data, read data, atomic
operands and old values, reduce vectors), not headers. A rejected request changes only
`rejected`. `statistics()` returns a frozen snapshot.

`Fabric` connects switches port to port (a window's port may lead to the next switch) and
routes through every hop, so latencies add per hop.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from fabric.errors import FabricError
from fabric.memsw.addrmap import AccessError, AddressMap, Port
from fabric.memsw.ops import (
    REDUCE_DTYPES,
    TXN_SIZES,
    Contribute,
    Error,
    Op,
    ReadResp,
    ReduceResult,
    Response,
    Write,
    WriteAck,
    decode,
    encode,
    flits,
    itemsize,
    wire_bytes,
)

__all__ = [
    "Action",
    "Deliver",
    "Fabric",
    "MemorySwitch",
    "PortConfig",
    "PortStatistics",
    "ReduceGroup",
    "Respond",
    "RingResult",
    "SwitchStatistics",
    "ring_allreduce",
    "serialisation_ns",
]


def serialisation_ns(nbytes: int, rate_bps: int) -> int:
    """Nanoseconds to put `nbytes` on a link of `rate_bps`, rounded up."""
    return -(-nbytes * 8 * 1_000_000_000 // rate_bps)


@dataclass(frozen=True)
class PortConfig:
    """One switch port: link rate, port-to-port latency toward it, request credits."""

    rate_bps: int
    latency_ns: int
    credits: int

    def __post_init__(self) -> None:
        if not isinstance(self.rate_bps, int) or self.rate_bps <= 0:
            raise FabricError(f"rate_bps must be a positive int, got {self.rate_bps!r}")
        if not isinstance(self.latency_ns, int) or self.latency_ns < 0:
            raise FabricError(f"latency_ns must be a non-negative int, got {self.latency_ns!r}")
        if not isinstance(self.credits, int) or self.credits < 1:
            raise FabricError(f"credits must be an int >= 1 (request buffers at the endpoint), "
                              f"got {self.credits!r}")


@dataclass(frozen=True)
class ReduceGroup:
    """Members whose `Contribute` vectors the switch sums (`op` is "sum", the one supported)."""

    group_id: Hashable
    member_ports: tuple[Port, ...]
    dtype: str
    op: str = "sum"

    def __post_init__(self) -> None:
        members = tuple(self.member_ports)
        object.__setattr__(self, "member_ports", members)
        if not members:
            raise FabricError(f"reduce group {self.group_id!r} has no members")
        if len(set(members)) != len(members):
            raise FabricError(f"reduce group {self.group_id!r}: members {list(members)} repeat "
                              f"a port")
        if self.dtype not in REDUCE_DTYPES:
            raise FabricError(f"reduce group {self.group_id!r}: dtype {self.dtype!r} is not one "
                              f"of {', '.join(REDUCE_DTYPES)}")
        if self.op != "sum":
            raise FabricError(f"reduce group {self.group_id!r}: op {self.op!r} is not supported "
                              f"(only 'sum')")


@dataclass(frozen=True)
class Deliver:
    """The request `op`'s last byte reaches the endpoint on `port` at `at_ns`."""

    port: Port
    op: Op
    at_ns: int


@dataclass(frozen=True)
class Respond:
    """The response `resp`'s last byte reaches the requester on `port` at `at_ns`."""

    port: Port
    resp: Response
    at_ns: int


Action = Deliver | Respond


@dataclass(frozen=True)
class PortStatistics:
    """Counters of one port (payload bytes; `ops_*` count messages; `credits` now available)."""

    bytes_in: int
    bytes_out: int
    ops_in: int
    ops_out: int
    stalls: int
    stall_ns: int
    credits: int
    queued: int
    rejected: int


@dataclass(frozen=True)
class SwitchStatistics:
    """A snapshot of every port's counters plus switch-wide totals."""

    ports: Mapping[Port, PortStatistics]
    replicated: int
    reductions: int
    rejected: int


@dataclass
class _Port:
    cfg: PortConfig
    credits: int
    free_at: int = 0
    queue: deque[_Txn] = field(default_factory=deque)
    bytes_in: int = 0
    bytes_out: int = 0
    ops_in: int = 0
    ops_out: int = 0
    stalls: int = 0
    stall_ns: int = 0
    rejected: int = 0


@dataclass
class _Pending:
    """A request accepted and not yet answered to its source."""

    op: Op
    lo: int
    hi: int
    waiting: set[Port]
    multicast: bool = False
    error: str | None = None
    final: Response | None = None


@dataclass
class _Txn:
    op: Op
    port: Port
    ready: int
    size: int  # bytes on the wire (`wire_bytes(op)`)


@dataclass
class _Round:
    parts: dict[Port, Contribute] = field(default_factory=dict)


class MemorySwitch:
    """A memory-semantic switch: routes loads/stores by address, replicates, reduces.

    `ports` maps each port id to its `PortConfig`; every unicast window of `address_map` must
    lead to one of them. `max_txn` is the largest transaction accepted (bigger requests are
    rejected with an `Error` telling the requester to `split()` them).
    """

    def __init__(self, address_map: AddressMap, ports: Mapping[Port, PortConfig],
                 reduce_groups: Iterable[ReduceGroup] = (), *, max_txn: int = 256,
                 frame_bytes: int = 0) -> None:
        if max_txn not in TXN_SIZES:
            raise FabricError(f"max_txn is {max_txn}; use one of {TXN_SIZES}")
        if not ports:
            raise FabricError("a switch needs at least one port")
        for p, cfg in ports.items():
            if not isinstance(cfg, PortConfig):
                raise FabricError(f"port {p!r}: expected PortConfig, got {cfg!r}")
        for w in address_map.windows:
            if not w.multicast and w.port not in ports:
                raise FabricError(f"{w} leads to port {w.port!r}, which this switch does not "
                                  f"have (ports: {list(ports)})")
        self.address_map = address_map
        self.max_txn = max_txn
        self._ports = {p: _Port(cfg, cfg.credits) for p, cfg in ports.items()}
        self._reduce: dict[Hashable, ReduceGroup] = {}
        self._rounds: dict[tuple[Hashable, int, int], _Round] = {}
        self._pending: dict[tuple[Port, int, int], _Pending] = {}
        self._by_src: dict[Port, list[_Pending]] = {p: [] for p in ports}
        # per source port, how many of its answered requests an earlier overlapping one holds
        # back (final, still in `_by_src`): while none is, an answer can only release itself
        self._held: dict[Port, int] = dict.fromkeys(ports, 0)
        self._heap: list[tuple[int, int, Action]] = []
        if not isinstance(frame_bytes, int) or frame_bytes < 0:
            raise FabricError(f"frame_bytes must be an int >= 0 (0: no frames), got "
                              f"{frame_bytes!r}")
        self.frame_bytes = frame_bytes
        # per port, what is scheduled there in release order: (start, at, seq, action, wire
        # bytes); a port's messages are serialised one after another, so this is the heap's
        # order too
        self._lines: dict[Port, deque[tuple[int, int, int, Action, int]]] = {p: deque()
                                                                        for p in ports}
        self._early: set[int] = set()  # seqs released with a frame, still in the heap
        self._seq = itertools.count()
        self._now = 0
        self._replicated = 0
        self._reductions = 0
        for g in reduce_groups:
            self.add_reduce_group(g)

    # -- configuration ------------------------------------------------------------------------

    def add_reduce_group(self, group: ReduceGroup) -> None:
        """Register an in-network reduce group."""
        if group.group_id in self._reduce:
            raise FabricError(f"reduce group {group.group_id!r} already exists")
        unknown = [p for p in group.member_ports if p not in self._ports]
        if unknown:
            raise FabricError(f"reduce group {group.group_id!r}: ports {unknown} are not ports "
                              f"of this switch (ports: {list(self._ports)})")
        self._reduce[group.group_id] = group

    def join(self, group: Port, port: Port) -> None:
        """Add one of this switch's ports to Hypercast group `group`."""
        self._port(port)
        self.address_map.join(group, port)

    def leave(self, group: Port, port: Port) -> None:
        """Remove `port` from Hypercast group `group`."""
        self.address_map.leave(group, port)

    # -- events -------------------------------------------------------------------------------

    def submit(self, op: Op, now_ns: int) -> list[Action]:
        """A request arrived on `op.src_port` at `now_ns`; returns the actions due by now."""
        self._tick(now_ns)
        try:
            src = self._ports[op.src_port]
        except (KeyError, TypeError):  # the error's words are made only when they are needed
            src = self._port(op.src_port, what=f"{type(op).__name__} tag {op.tag}'s src_port")
        try:
            if isinstance(op, Contribute):
                group = self._check_contribution(op)
                targets: tuple[Port, ...] = ()
            else:
                targets, multicast = self._route(op)
        except AccessError as e:
            src.rejected += 1
            self._send_response(op.src_port, Error(op.tag, str(e), offset=op.offset), now_ns,
                                count=False)
            return self._release(now_ns)
        src.ops_in += 1
        src.bytes_in += op.payload
        if isinstance(op, Contribute):
            self._contribute(group, op, now_ns)
            return self._release(now_ns)
        pending = _Pending(op, op.addr, op.addr + op.length, set(targets), multicast=multicast)
        self._pending[(op.src_port, op.tag, op.offset)] = pending
        self._by_src[op.src_port].append(pending)
        if len(targets) > 1:
            self._replicated += len(targets) - 1
        size = wire_bytes(op)
        for t in targets:
            self._enqueue(_Txn(op, t, now_ns + self._ports[t].cfg.latency_ns, size))
        return self._release(now_ns)

    def complete(self, port: Port, request: Op, resp: Response, now_ns: int) -> list[Action]:
        """The endpoint on `port` answered `request` (delivered to it) with `resp` at `now_ns`."""
        self._tick(now_ns)
        p = self._port(port)
        key = (request.src_port, request.tag, request.offset)
        pending = self._pending.get(key)
        if pending is None or port not in pending.waiting:
            raise FabricError(
                f"port {port!r} answered tag {request.tag} (offset {request.offset}) from port "
                f"{request.src_port!r}, but no such request is waiting for it; answer only "
                f"requests delivered to that port, once each")
        if resp.tag != request.tag or resp.offset != request.offset:
            raise FabricError(f"response tag {resp.tag} offset {resp.offset} does not match "
                              f"request tag {request.tag} offset {request.offset}")
        want = WriteAck if isinstance(request, Write) else ReadResp
        if not isinstance(resp, (want, Error)):
            raise FabricError(f"a {type(request).__name__} must be answered by {want.__name__} "
                              f"or Error, not {type(resp).__name__}")
        if isinstance(resp, ReadResp) and len(resp.data) != request.length:
            raise FabricError(f"tag {request.tag}: the response carries {len(resp.data)} bytes "
                              f"for a {request.length}-byte request")
        pending.waiting.discard(port)
        p.ops_in += 1
        p.bytes_in += resp.payload
        if isinstance(resp, Error) and pending.error is None:
            pending.error = f"member port {port!r}: {resp.reason}" if pending.multicast else \
                resp.reason
        if not pending.waiting:
            if pending.error is not None:
                pending.final = Error(request.tag, pending.error, offset=request.offset)
            else:  # the answer itself (an Error set `error` above): tag and offset match
                pending.final = resp
            self._flush(request.src_port, pending, now_ns)
        return self._release(now_ns)

    def on_credit(self, port: Port, n: int, now_ns: int) -> list[Action]:
        """The endpoint on `port` freed `n` request buffers; waiting requests go now."""
        self._tick(now_ns)
        p = self._port(port)
        if not isinstance(n, int) or n <= 0:
            raise FabricError(f"port {port!r}: credits returned must be a positive int, got {n!r}")
        if p.credits + n > p.cfg.credits:
            raise FabricError(
                f"port {port!r}: returning {n} credits would make {p.credits + n}, more than its "
                f"{p.cfg.credits} buffers; return only credits taken by delivered requests")
        p.credits += n
        while p.queue and p.credits:
            txn = p.queue.popleft()
            p.credits -= 1
            p.stall_ns += max(0, now_ns - txn.ready)
            self._transmit(txn, max(now_ns, txn.ready))
        return self._release(now_ns)

    def next_deadline(self) -> int | None:
        """When the next action falls due (None if nothing is scheduled)."""
        heap = self._heap
        while heap and heap[0][1] in self._early:  # released with a frame already
            self._early.discard(heapq.heappop(heap)[1])
        return heap[0][0] if heap else None

    def advance(self, now_ns: int) -> list[Action]:
        """Time is now `now_ns`; returns the actions due by then, in time order."""
        self._tick(now_ns)
        return self._release(now_ns)

    def statistics(self) -> SwitchStatistics:
        """A frozen snapshot of the counters."""
        ports = {
            k: PortStatistics(p.bytes_in, p.bytes_out, p.ops_in, p.ops_out, p.stalls, p.stall_ns,
                              p.credits, len(p.queue), p.rejected)
            for k, p in self._ports.items()
        }
        return SwitchStatistics(MappingProxyType(ports), self._replicated, self._reductions,
                                sum(p.rejected for p in self._ports.values()))

    @property
    def ports(self) -> tuple[Port, ...]:
        """This switch's port ids."""
        return tuple(self._ports)

    # -- internals ----------------------------------------------------------------------------

    def _tick(self, now_ns: int) -> None:
        if not isinstance(now_ns, int):
            raise FabricError(f"now_ns must be an int of nanoseconds, got {now_ns!r}")
        if now_ns < self._now:
            raise FabricError(f"time went backwards: now_ns={now_ns} after {self._now}; pass "
                              f"non-decreasing times")
        self._now = now_ns

    def _port(self, port: Port, what: str = "port") -> _Port:
        try:
            return self._ports[port]
        except (KeyError, TypeError):
            raise FabricError(f"{what} {port!r} is not a port of this switch "
                              f"(ports: {list(self._ports)})") from None

    def _route(self, op: Op) -> tuple[tuple[Port, ...], bool]:
        """The egress ports of a request and whether its window is multicast, or
        AccessError; changes nothing."""
        assert not isinstance(op, Contribute)
        if (op.src_port, op.tag, op.offset) in self._pending:
            raise AccessError(f"tag {op.tag} (offset {op.offset}) from port {op.src_port!r} is "
                              f"still outstanding; use a fresh tag")
        w = self.address_map.lookup(op.addr, op.length)
        n = flits(op)
        if n * 64 > self.max_txn:
            raise AccessError(
                f"{type(op).__name__} of {op.length} B at {op.addr:#x} touches {n} flits; one "
                f"transaction carries at most {self.max_txn} B ({self.max_txn // 64} flits): "
                f"split it with fabric.memsw.split()")
        if not w.multicast:
            return (w.port,), False
        if not isinstance(op, Write):
            raise AccessError(f"{type(op).__name__} at {op.addr:#x} targets multicast {w}; only "
                              f"writes can be multicast")
        try:
            members = self.address_map.members(w.port)
        except FabricError as e:
            raise AccessError(f"{w}: {e}") from None
        targets = tuple(m for m in members if m != op.src_port)
        unknown = [m for m in targets if m not in self._ports]
        if unknown:
            raise AccessError(f"{w}: group {w.port!r} has members {unknown} that are not ports "
                              f"of this switch")
        if not targets:
            raise AccessError(f"{w}: group {w.port!r} has no members besides the sender; join() "
                              f"ports first")
        return targets, True

    def _check_contribution(self, op: Contribute) -> ReduceGroup:
        group = self._reduce.get(op.group_id)
        if group is None:
            raise AccessError(f"no reduce group {op.group_id!r} (groups: {list(self._reduce)})")
        if op.src_port not in group.member_ports:
            raise AccessError(f"port {op.src_port!r} is not a member of reduce group "
                              f"{op.group_id!r} (members: {list(group.member_ports)})")
        size = itemsize(group.dtype)
        if op.length % size or op.offset % size:
            raise AccessError(f"contribution of {op.length} B at offset {op.offset} is not whole "
                              f"{group.dtype} elements ({size} B each)")
        if op.length > self.max_txn:
            raise AccessError(f"contribution of {op.length} B exceeds one {self.max_txn}-byte "
                              f"transaction: split it with fabric.memsw.split()")
        rnd = self._rounds.get((op.group_id, op.seq, op.offset))
        if rnd is not None:
            if op.src_port in rnd.parts:
                raise AccessError(f"port {op.src_port!r} already contributed to round {op.seq} "
                                  f"offset {op.offset} of reduce group {op.group_id!r}")
            other = next(iter(rnd.parts.values()))
            if other.length != op.length:
                raise AccessError(f"contribution of {op.length} B to round {op.seq} offset "
                                  f"{op.offset} of {op.group_id!r}; the others sent "
                                  f"{other.length} B")
        return group

    def _contribute(self, group: ReduceGroup, op: Contribute, now_ns: int) -> None:
        key = (group.group_id, op.seq, op.offset)
        rnd = self._rounds.setdefault(key, _Round())
        rnd.parts[op.src_port] = op
        if len(rnd.parts) < len(group.member_ports):
            return
        del self._rounds[key]
        acc = np.zeros(op.length // itemsize(group.dtype), dtype=np.float32)
        for m in group.member_ports:  # member order: the result does not depend on arrivals
            acc += decode(rnd.parts[m].data, group.dtype)
        data = encode(acc, group.dtype)
        self._reductions += 1
        for m in group.member_ports:
            part = rnd.parts[m]
            self._send_response(m, ReduceResult(part.tag, group.group_id, data,
                                                offset=part.offset, seq=part.seq), now_ns)

    def _enqueue(self, txn: _Txn) -> None:
        p = self._ports[txn.port]
        if p.credits > 0 and not p.queue:
            p.credits -= 1
            self._transmit(txn, txn.ready)
        else:
            p.stalls += 1
            p.queue.append(txn)

    def _transmit(self, txn: _Txn, earliest: int) -> None:
        p = self._ports[txn.port]
        start = max(earliest, p.free_at)
        size = txn.size
        p.free_at = start + serialisation_ns(size, p.cfg.rate_bps)
        p.ops_out += 1
        p.bytes_out += txn.op.payload
        self._schedule(Deliver(txn.port, txn.op, p.free_at), start, size)

    def _send_response(self, port: Port, resp: Response, now_ns: int, *,
                       count: bool = True) -> None:
        """Serialise `resp` toward `port`; `count=False` for a rejection (only `rejected`)."""
        p = self._ports[port]
        start = max(now_ns + p.cfg.latency_ns, p.free_at)
        size = wire_bytes(resp)
        p.free_at = start + serialisation_ns(size, p.cfg.rate_bps)
        if count:
            p.ops_out += 1
            p.bytes_out += resp.payload
        self._schedule(Respond(port, resp, p.free_at), start, size)

    def _flush(self, src: Port, answered: _Pending, now_ns: int) -> None:
        """`answered` (a request of `src`) has its final answer: send the finished responses
        of `src` that no earlier overlapping request holds back."""
        line = self._by_src[src]
        if not self._held[src]:
            # nothing else is finished: only `answered` can go, unless an earlier request
            # overlaps it (the common case, answers in order, stops at the first entry)
            lo, hi = answered.lo, answered.hi
            for i, q in enumerate(line):
                if q is answered:
                    del line[i]
                    break
                if q.lo < hi and lo < q.hi:
                    self._held[src] = 1
                    return
            self._send_done(src, answered, now_ns)
            return
        blocked: list[tuple[int, int]] = []
        keep: list[_Pending] = []
        done: list[_Pending] = []
        for q in line:
            if q.final is not None and not any(lo < q.hi and q.lo < hi for lo, hi in blocked):
                done.append(q)
            else:
                keep.append(q)
                blocked.append((q.lo, q.hi))
        self._by_src[src] = keep
        self._held[src] = sum(q.final is not None for q in keep)
        for q in done:
            self._send_done(src, q, now_ns)

    def _send_done(self, src: Port, q: _Pending, now_ns: int) -> None:
        assert q.final is not None
        self._send_response(src, q.final, now_ns)
        del self._pending[(src, q.op.tag, q.op.offset)]

    def _schedule(self, action: Action, start: int, size: int) -> None:
        """`action` (of `size` bytes on the wire) falls due at its `at_ns`; it started then."""
        seq = next(self._seq)
        heapq.heappush(self._heap, (action.at_ns, seq, action))
        if self.frame_bytes:
            self._lines[action.port].append((start, action.at_ns, seq, action, size))

    def _release(self, now_ns: int) -> list[Action]:
        out: list[Action] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ns:
            at, seq, a = heapq.heappop(heap)
            if not self.frame_bytes:
                out.append(a)
                continue
            if seq in self._early:
                self._early.discard(seq)
                continue
            line = self._lines[a.port]
            size = line.popleft()[4]  # `a` itself: a port's line is in heap order
            out.append(a)
            # its frame: what follows it on the port back to back, up to frame_bytes
            while line and line[0][0] == at:
                nxt = line[0]
                if size + nxt[4] > self.frame_bytes:
                    break
                line.popleft()
                at = nxt[1]
                self._early.add(nxt[2])
                out.append(nxt[3])
                size += nxt[4]
        return out


# -- ring all-reduce reference ------------------------------------------------------------------


@dataclass(frozen=True)
class RingResult:
    """What every node ends with, and the payload bytes each node sent and received."""

    outputs: tuple[bytes, ...]
    bytes_sent: tuple[int, ...]
    bytes_received: tuple[int, ...]
    messages: int


def ring_allreduce(vectors: Sequence[bytes], dtype: str) -> RingResult:
    """Sum `vectors` (raw little-endian `dtype`) by a ring all-reduce, message by message.

    Node i sends only to node i+1. Reduce-scatter: in step s, node i sends chunk (i - s) mod k
    to i+1, which adds it to its own copy (in float32, rounded to `dtype`, as on a GPU whose
    messages carry `dtype`); after k-1 steps node i holds the total of chunk (i+1) mod k.
    All-gather: k-1 more steps pass the totals around. Each node sends 2(k-1)/k of the vector
    when the elements divide by k.
    """
    if dtype not in REDUCE_DTYPES:
        raise FabricError(f"dtype {dtype!r} is not one of {', '.join(REDUCE_DTYPES)}")
    k = len(vectors)
    if k == 0:
        raise FabricError("ring_allreduce needs at least one vector")
    size = itemsize(dtype)
    lengths = {len(v) for v in vectors}
    if len(lengths) != 1 or next(iter(lengths)) % size:
        raise FabricError(f"vectors must have one length in whole {dtype} elements, got "
                          f"{sorted(lengths)}")
    elements = len(vectors[0]) // size
    bounds = np.array([elements * i // k for i in range(k + 1)])
    buf = [[bytes(v[bounds[c] * size:bounds[c + 1] * size]) for c in range(k)] for v in vectors]
    sent = [0] * k
    received = [0] * k
    messages = 0

    def step(choose: int, combine: bool) -> None:
        nonlocal messages
        msgs = []
        for i in range(k):
            c = (i - choose) % k if combine else (i + 1 - choose) % k
            msgs.append(((i + 1) % k, c, buf[i][c]))
            sent[i] += len(buf[i][c])
        for dst, c, data in msgs:
            received[dst] += len(data)
            messages += 1
            if combine:
                total = decode(buf[dst][c], dtype) + decode(data, dtype)
                buf[dst][c] = encode(total, dtype) if len(total) else b""
            else:
                buf[dst][c] = data

    for s in range(k - 1):
        step(s, combine=True)
    for s in range(k - 1):
        step(s, combine=False)
    return RingResult(tuple(b"".join(chunks) for chunks in buf), tuple(sent), tuple(received),
                      messages)


# -- cascaded switches --------------------------------------------------------------------------


class Fabric:
    """Switches joined port to port, driven as one sans-IO machine.

    `links` pairs `(switch, port)` ends. A request delivered to a linked port enters the peer
    switch at the delivery time (so each hop adds its port-to-port latency and serialisation)
    under a fresh tag; the response travels back the same way and is handed to the previous
    switch as the answer of its hop. The link's credit is returned as soon as the next switch
    has taken the request (switch buffers are not modelled; back-pressure is at endpoint
    ports). Actions for endpoints name ports as `(switch, port)`.
    """

    def __init__(self, switches: Mapping[str, MemorySwitch],
                 links: Iterable[tuple[tuple[str, Port], tuple[str, Port]]]) -> None:
        self._switches = dict(switches)
        self._links: dict[tuple[str, Port], tuple[str, Port]] = {}
        for a, b in links:
            for end in (a, b):
                name, port = end
                if name not in self._switches:
                    raise FabricError(f"link end {end!r}: no switch {name!r} (switches: "
                                      f"{list(self._switches)})")
                if port not in self._switches[name].ports:
                    raise FabricError(f"link end {end!r}: switch {name!r} has no port {port!r}")
                if end in self._links:
                    raise FabricError(f"link end {end!r} is used by two links")
            self._links[a] = b
            self._links[b] = a
        self._tags = itertools.count(1 << 40)
        self._proxied: dict[tuple[str, Port, int], tuple[str, Port, Op]] = {}

    @property
    def switches(self) -> Mapping[str, MemorySwitch]:
        """The switches by name."""
        return MappingProxyType(self._switches)

    def submit(self, switch: str, op: Op, now_ns: int) -> list[Action]:
        """An endpoint's request reached `switch` on `op.src_port` at `now_ns`."""
        out = self.advance(now_ns)
        self._handle(switch, self._switch(switch).submit(op, now_ns), out)
        return out

    def complete(self, at: tuple[str, Port], request: Op, resp: Response,
                 now_ns: int) -> list[Action]:
        """The endpoint at `(switch, port)` answered `request` (as delivered to it)."""
        out = self.advance(now_ns)
        name, port = at
        self._handle(name, self._switch(name).complete(port, request, resp, now_ns), out)
        return out

    def on_credit(self, at: tuple[str, Port], n: int, now_ns: int) -> list[Action]:
        """The endpoint at `(switch, port)` freed `n` request buffers."""
        out = self.advance(now_ns)
        name, port = at
        self._handle(name, self._switch(name).on_credit(port, n, now_ns), out)
        return out

    def next_deadline(self) -> int | None:
        """The earliest deadline of any switch."""
        times = [d for s in self._switches.values() if (d := s.next_deadline()) is not None]
        return min(times, default=None)

    def advance(self, now_ns: int) -> list[Action]:
        """Run every hop due by `now_ns`, in time order; returns the endpoint actions."""
        out: list[Action] = []
        while True:
            due = [(d, name) for name, s in self._switches.items()
                   if (d := s.next_deadline()) is not None and d <= now_ns]
            if not due:
                break
            t, name = min(due, key=lambda x: x[0])
            self._handle(name, self._switches[name].advance(t), out)
        return out

    def statistics(self) -> dict[str, SwitchStatistics]:
        """Every switch's counters."""
        return {n: s.statistics() for n, s in self._switches.items()}

    def _switch(self, name: str) -> MemorySwitch:
        try:
            return self._switches[name]
        except KeyError:
            raise FabricError(f"no switch {name!r} (switches: {list(self._switches)})") from None

    def _handle(self, name: str, actions: list[Action], out: list[Action]) -> None:
        for a in actions:
            peer = self._links.get((name, a.port))
            if peer is None:
                out.append(replace(a, port=(name, a.port)))
                continue
            pname, pport = peer
            if isinstance(a, Deliver):
                tag = next(self._tags)
                fwd = replace(a.op, tag=tag, src_port=pport)
                self._proxied[(pname, pport, tag)] = (name, a.port, a.op)
                self._handle(pname, self._switches[pname].submit(fwd, a.at_ns), out)
                self._handle(name, self._switches[name].on_credit(a.port, 1, a.at_ns), out)
            else:
                key = (name, a.port, a.resp.tag)
                origin = self._proxied.pop(key, None)
                if origin is None:
                    raise FabricError(f"switch {name!r} port {a.port!r} answered tag "
                                      f"{a.resp.tag}, which no hop forwarded")
                oname, oport, op = origin
                back = replace(a.resp, tag=op.tag)
                self._handle(oname, self._switches[oname].complete(oport, op, back, a.at_ns),
                             out)
