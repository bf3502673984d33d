"""Sans-IO model of one direction of an emulated link: loss, drop-tail queue, rate, delay, ECN.

The userspace link backend feeds every packet it reads from a TUN device to `LinkDirection.offer`
and delivers what `release` hands back when `next_deadline` has passed. Nothing here reads a
clock, sleeps or touches a socket, so the behaviour is tested exhaustively with hand-made times.

Semantics follow netem (+ tbf when the rate is shaped here):

* random duplication and loss first, in netem's order: a packet drawn for duplication and
  for loss goes on as one copy; one drawn only for loss is dropped (and never occupies the
  queue); one drawn only for duplication is accepted and its `Verdict.duplicate` asks the
  caller to offer a copy too (`copy=True`), which takes its own loss, corruption, queue and
  delay draws but is never duplicated again;
* random corruption: `Verdict.corrupt_bit` names one bit of the packet past its first
  `header` bytes, which the caller flips (netem flips one bit of the packet's data); the
  copy of a duplicated packet is made before that, so it stays intact;
* with `rate_in_engine`, a FIFO serialiser: a packet departs when the previous one has left and
  its own bits are on the wire (`ceil(bits * 1e9 / rate)` ns); the queue is the bytes accepted but
  not yet fully serialised, limited drop-tail by bytes or packets;
* ECN: an ECT packet that arrives while the queue holds more than `ecn_bytes` is CE-marked
  (non-ECT packets are never marked, and only dropped when the queue overflows);
* release = departure + delay + uniform(-jitter, +jitter), clipped at >= departure; with jitter
  packets may reorder (netem's default behaviour);
* reorder: with its probability a packet skips the delay (and jitter) and is released at its
  departure, overtaking the packets still held (netem's `reorder P%` with gap 1).

Without `rate_in_engine` the kernel's tbf enforces rate and queue; the model then only keeps a
delay line, bounded (see `delay_line_limit_bytes`) so a flood cannot exhaust memory.

Traffic classes (`classes=`, two or more, with `rate_in_engine`): the serialiser keeps a queue
per class instead of one FIFO (`ClassScheduler`). A packet's class is its DSCP's (`offer(...,
dscp=)`; an unknown DSCP goes to the first class of priority 0, as in the RoCE switch). Each
time the wire frees, the next packet is picked among the packets that had arrived by then:
strict classes first (highest priority first), then deficit round robin among the others with
quantum weight x MTU. Each class queue is drop-tail at the link's queue limit (and at the
class's own `queue:` where set), as htb's per-class leaf queues are on the netem backend; a
class with ECN thresholds is RED-marked on its own queue (no mark at or below kmin, always at
kmax), the others by the link's `ecn` threshold on the whole queue. A queued packet's release
is only known once it is picked, so its verdict's `release_ns` is when the caller should call
`release` next (the model's `next_deadline`).
"""

from __future__ import annotations

import enum
import heapq
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

from fabric.topology.model import Shape, TrafficClass
from fabric.topology.model import queue_bytes as model_queue_bytes

NS_PER_S = 1_000_000_000
# What one engine can move when a link has no rate (a Python TUN relay moves 1.1-11.5 Gbit/s
# per core at MTU 1500-65000); only used to size the delay line's memory bound for unshaped
# links.
UNSHAPED_ASSUMED_BPS = 10_000_000_000
DELAY_LINE_FLOOR_BYTES = 8 * 1024 * 1024


def bdp_bytes(rate_bps: int | None, delay_ns: int) -> int:
    """Bytes in flight at `rate_bps` over `delay_ns` (0 when the rate is unknown): sizes the
    delay line's memory bound."""
    if not rate_bps or delay_ns <= 0:
        return 0
    return rate_bps * delay_ns // (8 * NS_PER_S)


def queue_limit(shape: Shape) -> tuple[int | None, int | None]:
    """(bytes, packets) limit of the queue; exactly one is not None."""
    if shape.queue_packets is not None:
        return None, shape.queue_packets
    if shape.queue_bytes is not None:
        return shape.queue_bytes, None
    return model_queue_bytes(shape), None


def delay_line_limit_bytes(shape: Shape) -> int:
    """Memory bound on bytes held for delay when the kernel (not the engine) shapes the rate.

    Twice what the link can have in flight (rate x (delay + jitter)) plus its queue, and never
    less than `DELAY_LINE_FLOOR_BYTES`. Unshaped links assume `UNSHAPED_ASSUMED_BPS`.
    """
    rate = shape.rate_bps or UNSHAPED_ASSUMED_BPS
    qbytes, qpackets = queue_limit(shape)
    qb = qbytes if qbytes is not None else (qpackets or 0) * shape.mtu
    inflight = bdp_bytes(rate, shape.delay_ns + shape.jitter_ns)
    return max(DELAY_LINE_FLOOR_BYTES, 2 * inflight + qb)


class Action(enum.IntEnum):
    """What happened to an offered packet."""

    FORWARD = 0  # deliver now; the model does not hold it (no delay, jitter or engine rate)
    HOLD = 1  # held; `release` returns it at `release_ns`
    DROP_LOSS = 2  # dropped by random loss
    DROP_QUEUE = 3  # dropped: queue (or delay line) full
    DROP_DOWN = 4  # dropped: the link is down (`LinkDirection.set_up`)


class Verdict(NamedTuple):
    """The model's decision for one packet. `release_ns` is 0 for drops; for a packet held in
    a class queue (not yet picked for the wire) it is when to call `release` next.

    corrupt_bit: the bit the caller flips (bit `b` is `1 << (b & 7)` of byte `b >> 3`), or -1.
    duplicate: the caller offers a copy of the packet too, made before any corruption.
    """

    action: Action
    release_ns: int
    ce: bool
    corrupt_bit: int = -1
    duplicate: bool = False

    @property
    def accepted(self) -> bool:
        return self.action <= Action.HOLD


DROPPED_LOSS = Verdict(Action.DROP_LOSS, 0, False)
DROPPED_QUEUE = Verdict(Action.DROP_QUEUE, 0, False)
DROPPED_DOWN = Verdict(Action.DROP_DOWN, 0, False)


@dataclass(frozen=True)
class ClassStats:
    """Counters of one traffic class's queue on a link direction that queues by class.

    packets_in: offered to the class queue (after random loss); packets_out/bytes_out: picked
    for the wire; queue_bytes_max: high-water of the class queue (not counting the packet on
    the wire).
    """

    name: str
    dscp: int
    packets_in: int = 0
    drops_queue: int = 0
    ecn_marks: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    queue_bytes_max: int = 0


class ClassScheduler:
    """Per-class FIFO queues and the choice of the next packet for the wire (sans-IO).

    Strict classes first (highest priority first, then the order given), then deficit round
    robin (Shreedhar & Varghese) among the others: a class earns `weight x mtu` bytes once
    per visit and sends while its head packet fits; a class found empty forfeits its credit.
    The caller decides when the wire takes the next packet (`LinkDirection` does so each time
    the wire frees, among the packets that had arrived by then). The same policy as the RoCE
    switch's egress port (`fabric.switch.core`), here for one link direction.
    """

    __slots__ = ("classes", "dscp_class", "queues", "bytes", "count", "total_bytes", "ready",
                 "paused", "_strict", "_wrr", "_quantum", "_deficit", "_cur", "_granted")

    def __init__(self, classes: Sequence[TrafficClass], mtu: int) -> None:
        if not classes:
            raise ValueError("a class scheduler needs at least one class")
        self.classes = tuple(classes)
        default = next((i for i, c in enumerate(classes) if c.priority == 0), 0)
        table = [default] * 64
        for i, c in enumerate(classes):
            table[c.dscp & 63] = i
        self.dscp_class = table
        self.queues: list[deque[tuple[int, Any]]] = [deque() for _ in classes]
        self.bytes = [0] * len(classes)
        self.count = 0
        self.total_bytes = 0
        self.ready = 0  # packets queued in classes not paused: what the wire may take
        self.paused = 0  # bit k set: class k is paused (PFC, `pause`)
        self._strict = sorted((i for i, c in enumerate(classes) if c.strict),
                              key=lambda i: (-classes[i].priority, i))
        self._wrr = [i for i, c in enumerate(classes) if not c.strict]
        self._quantum = [max(1, c.weight) * max(1, mtu) for c in classes]
        self._deficit = [0] * len(classes)
        self._cur = 0
        self._granted = False

    def push(self, k: int, length: int, item: Any) -> None:  # noqa: ANN401
        """Queue a packet of `length` bytes in class `k`."""
        self.queues[k].append((length, item))
        self.bytes[k] += length
        self.count += 1
        self.total_bytes += length
        if not self.paused >> k & 1:
            self.ready += 1

    def pause(self, mask: int, paused: bool) -> None:
        """Pause (or resume) the classes of bit mask `mask`: the wire takes nothing from a
        paused class; what it holds waits, with its credit, as a switch port's paused class
        does (802.1Qbb pauses a priority at the transmitter)."""
        before = self.paused
        after = before | mask if paused else before & ~mask
        if after == before:
            return
        self.paused = after
        for k, q in enumerate(self.queues):
            bit = 1 << k
            if before & bit and not after & bit:
                self.ready += len(q)
            elif after & bit and not before & bit:
                self.ready -= len(q)

    def pop(self) -> tuple[int, int, Any] | None:
        """The packet the wire takes next: (class, length, item), or None when every class
        queue is empty or paused."""
        if not self.ready:
            return None
        queues = self.queues
        paused = self.paused
        for k in self._strict:
            if queues[k] and not paused >> k & 1:
                return self._take(k)
        deficit = self._deficit
        wrr = self._wrr
        cur = self._cur
        granted = self._granted
        while True:
            k = wrr[cur]
            q = queues[k]
            if q and not paused >> k & 1:
                if not granted:
                    deficit[k] += self._quantum[k]
                    granted = True
                if q[0][0] <= deficit[k]:
                    break
            elif not q:
                deficit[k] = 0
            cur = cur + 1 if cur + 1 < len(wrr) else 0
            granted = False
        out = self._take(k)
        if q:
            deficit[k] -= out[1]
        else:
            deficit[k] = 0
            cur = cur + 1 if cur + 1 < len(wrr) else 0
            granted = False
        self._cur = cur
        self._granted = granted
        return out

    def _take(self, k: int) -> tuple[int, int, Any]:
        length, item = self.queues[k].popleft()
        self.bytes[k] -= length
        self.count -= 1
        self.ready -= 1
        self.total_bytes -= length
        return k, length, item

    def clear(self) -> None:
        """Drop everything queued (the link went down) and every class's credit."""
        for q in self.queues:
            q.clear()
        self.bytes = [0] * len(self.queues)
        self.count = 0
        self.ready = 0
        self.paused = 0  # a link that goes down forgets its PFC state too
        self.total_bytes = 0
        self._deficit = [0] * len(self.queues)
        self._cur = 0
        self._granted = False


@dataclass(frozen=True)
class LinkStats:
    """Counters of one link direction (see `LinkDirection.statistics`).

    queue_bytes_max: high-water of the engine queue (bytes not yet serialised; 0 when the
        kernel shapes the rate). held_bytes_max: high-water of bytes held for delay.
    samples: (time_ns, queue_bytes) at most one per sample interval, the latest ones.
    class_samples: where the direction has classes, (time_ns, bytes waiting in each class
        queue, in the order of `classes`) taken with each of `samples` (so thinned with
        them); the packet on the wire is in neither (it is in `samples`' queue bytes).
    """

    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    drops_loss: int
    drops_queue: int
    ecn_marks: int
    queue_bytes_max: int
    held_bytes_max: int
    samples: tuple[tuple[int, int, int], ...]  # (t_ns, queue bytes, cumulative bytes out)
    # netem's faults: packets given a flipped bit, copies asked for, packets sent at once
    packets_corrupted: int = 0
    packets_duplicated: int = 0
    packets_reordered: int = 0
    # live changes (`set_shape`, `set_up`): packets dropped while the link was down (those
    # that arrived, and those it held when it went down), and whether it is up now
    drops_down: int = 0
    up: bool = True
    bytes_dropped_down: int = 0  # the bytes of those packets
    bytes_lost_in_flight: int = 0  # of which the link held (queued or on its way) going down
    # per traffic class, where the direction queues by class (`LinkDirection(classes=...)`)
    classes: tuple[ClassStats, ...] = ()
    class_samples: tuple[tuple[int, tuple[int, ...]], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; `class_samples` (only where there are some) as {"columns": [class
        names], "rows": [[t_ns, [bytes per column]], ...]}, as the RoCE switches write theirs."""
        # field by field, not `asdict`: that deep-copies every sample only for this to throw
        # the copies away, ~3 ms a direction with full samples, and the engine writes its
        # statistics inline between packets every second
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "class_samples"}
        d["samples"] = [list(s) for s in self.samples]
        d["classes"] = tuple(asdict(c) for c in self.classes)
        if self.class_samples:
            d["class_samples"] = {"columns": [c.name for c in self.classes],
                                  "rows": [[t, list(b)] for t, b in self.class_samples]}
        return d


class LinkDirection:
    """One direction of a link: offer packets with their arrival time, release them when due.

    `item` is opaque to the model (the engine passes the packet buffer); it comes back from
    `release`. Per packet the cost is O(1) without jitter (FIFO delay line) and O(log n) with
    jitter (a heap, which is what lets packets reorder).
    """

    def __init__(
        self,
        shape: Shape,
        *,
        rate_in_engine: bool = False,
        rng: random.Random | None = None,
        sample_interval_ns: int = 1_000_000,
        max_samples: int = 1024,
        classes: Sequence[TrafficClass] = (),
    ) -> None:
        self._engine_may_rate = bool(rate_in_engine)
        self._rng = rng if rng is not None else random.Random(0)
        # one class (or none) keeps the single FIFO: nothing to tell apart
        self._classes = tuple(classes) if len(classes) > 1 else ()
        self._sched: ClassScheduler | None = None
        self._cls_in = [0] * len(self._classes)
        self._cls_drops = [0] * len(self._classes)
        self._cls_marks = [0] * len(self._classes)
        self._cls_out = [0] * len(self._classes)
        self._cls_bytes_out = [0] * len(self._classes)
        self._cls_max = [0] * len(self._classes)
        self._cls_red = [None if c.red is None else
                         (c.red[0], c.red[1], c.red[2] / max(1, c.red[1] - c.red[0]))
                         for c in self._classes]
        self._cls_cap = [c.queue_bytes for c in self._classes]
        self._apply_shape(shape)
        # serialiser: departures of packets not yet fully serialised, FIFO
        self._busy_until = 0
        self.pfc_pauses = 0  # PFC pause frames that paused a class here (`pause`)
        self._queue: deque[tuple[int, int]] = deque()
        self._queue_bytes = 0
        # delay line
        # (release, length, item, seq), no jitter; seq: the packet's place among all accepted
        self._line: deque[tuple[int, int, Any, int]] = deque()
        # (release, seq, length, item): with jitter or reordering, where releases are not in
        # arrival order
        self._heap: list[tuple[int, int, int, Any]] = []
        self._seq = 0
        self._held_bytes = 0
        self._down = False
        self._drops_down = 0
        self._bytes_down = 0
        self._in_flight_lost = 0
        # counters
        self._packets_in = 0
        self._bytes_in = 0
        self._packets_out = 0
        self._bytes_out = 0
        self._drops_loss = 0
        self._drops_queue = 0
        self._ecn_marks = 0
        self._corrupted = 0
        self._duplicated = 0
        self._reordered = 0
        self._queue_max = 0
        self._held_max = 0
        self._sample_interval = sample_interval_ns
        self._next_sample = 0
        self._max_samples = max(2, max_samples)
        self._samples: list[tuple[int, int, int]] = []
        # per class, with each sample, where the direction has classes (`class_samples`)
        self._cls_samples: list[tuple[int, tuple[int, ...]]] = []

    def _apply_shape(self, shape: Shape) -> None:
        """Derive the per-packet parameters from `shape` (at construction and on a change)."""
        self.shape = shape
        self.rate_in_engine = bool(self._engine_may_rate and shape.rate_bps)
        self._rate = shape.rate_bps if self.rate_in_engine else None
        self._loss = shape.loss_ppm / 1_000_000 if shape.loss_ppm > 0 else 0.0
        self._corrupt = max(0, shape.corrupt_ppm) / 1_000_000
        self._duplicate = max(0, shape.duplicate_ppm) / 1_000_000
        # reordering needs something to overtake: without a delay it is a no-op (and the
        # loading a file refuses it)
        self._reorder = max(0, shape.reorder_ppm) / 1_000_000 if shape.delay_ns > 0 else 0.0
        self._dup_or_corrupt = bool(self._corrupt or self._duplicate)
        self._delay = max(0, shape.delay_ns)
        self._jitter = max(0, shape.jitter_ns)
        qbytes, qpackets = queue_limit(shape)
        self.queue_limit_bytes = qbytes
        self.queue_limit_packets = qpackets
        self._ecn = shape.ecn_bytes if self.rate_in_engine else None
        self.delay_line_limit = delay_line_limit_bytes(shape)
        self.immediate = self._rate is None and self._delay == 0 and self._jitter == 0
        self._reorders = bool(self._jitter or self._reorder)
        if self._classes and self._rate is not None and self._sched is None:
            self._sched = ClassScheduler(self._classes, shape.mtu)
            self._bind()

    def _bind(self) -> None:
        """Where packets queue by class, `release` and `next_deadline` first run the wire's
        decisions; bound per instance, so a FIFO direction's per-packet path pays nothing."""
        if self._sched is not None:
            self.release = self._release_classed  # type: ignore[method-assign]
            self.next_deadline = self._next_deadline_classed  # type: ignore[method-assign]
        else:
            self.__dict__.pop("release", None)
            self.__dict__.pop("next_deadline", None)

    @property
    def classed(self) -> bool:
        """Whether packets queue by class now (classes given, and the engine serialises):
        `offer` then needs each packet's `dscp`."""
        return self._sched is not None

    # -- live changes --------------------------------------------------------------------------

    def set_shape(self, shape: Shape, now_ns: int) -> None:
        """Put `shape` in force from `now_ns` on, keeping what the link holds.

        A rate change applies to the packets not yet serialised: the packet on the wire at
        `now_ns` keeps its departure, the ones queued behind it are serialised again at the
        new rate, one after the other, and their releases move by as much (so the queue's byte
        accounting carries over and nothing queued is lost). Delay, jitter, loss, ECN and the
        queue limit apply to packets offered from `now_ns` on; a held packet keeps the delay it
        was given. A link without jitter keeps one FIFO delay line, so after a delay decrease
        new packets leave right behind the ones still held, never before them (no reordering
        that the link does not model). A smaller queue limit drops nothing already queued;
        arrivals find it full until it drains below the new limit.
        """
        if self._sched is not None:
            self._set_shape_classed(shape, now_ns)
            return
        old_rate = self._rate
        self._apply_shape(shape)
        new_rate = self._rate
        q = self._queue
        while q and q[0][0] <= now_ns:
            self._queue_bytes -= q.popleft()[1]
        if old_rate is None or new_rate is None or old_rate == new_rate or len(q) < 2:
            if new_rate is None and q:
                q.clear()  # no serialiser any more: what it queued is now only delayed
                self._queue_bytes = 0
            return
        # the head is on the wire (its serialisation began at or before now_ns); re-time the rest
        t = q[0][0]
        retimed: list[tuple[int, int]] = [q[0]]
        shifts: list[int] = []
        for departure, length in list(q)[1:]:
            t += -(-length * 8 * NS_PER_S // new_rate)
            retimed.append((t, length))
            shifts.append(t - departure)
        self._queue = deque(retimed)
        self._busy_until = t
        self._shift_releases(shifts)

    def _set_shape_classed(self, shape: Shape, now_ns: int) -> None:
        """`set_shape` where packets queue by class: the wire's decisions up to `now_ns` are
        made at the old rate; the packets still in class queues have no departure yet, so
        they simply take the new rate when picked. Without a rate any more, nothing
        serialises: what the class queues hold leaves now (in the scheduler's order) and is
        only delayed, as a FIFO link's queue is."""
        self._schedule(now_ns)
        self._apply_shape(shape)
        q = self._queue
        while q and q[0][0] <= now_ns:
            self._queue_bytes -= q.popleft()[1]
        if self._rate is None:
            sched = self._sched
            assert sched is not None
            while (picked := sched.pop()) is not None:
                k, length, item = picked
                self._cls_out[k] += 1
                self._cls_bytes_out[k] += length
                self._hold(now_ns, length, item)
            self._sched = None
            self._bind()
            q.clear()
            self._queue_bytes = 0

    def _shift_releases(self, shifts: list[int]) -> None:
        """Move the releases of the last `len(shifts)` packets offered by `shifts` (oldest
        first): the queued packets are always the most recently accepted ones. Every held
        packet carries its place among those accepted (seq), in the delay line or the heap:
        after a live change turned jitter on or off, the queued ones may be in both."""
        n = len(shifts)
        first = self._seq - n + 1
        if self._heap:
            self._heap = [(r + shifts[seq - first], seq, length, item) if seq >= first
                          else (r, seq, length, item)
                          for r, seq, length, item in self._heap]
            heapq.heapify(self._heap)
        line = self._line
        tail = []
        while line and line[-1][3] >= first:
            tail.append(line.pop())
        for release, length, item, seq in reversed(tail):
            line.append((release + shifts[seq - first], length, item, seq))

    def set_up(self, up: bool, now_ns: int) -> int:
        """Take the link down (`up=False`) or bring it back; returns the packets dropped.

        Down, it carries nothing: each packet offered is dropped and counted in `drops_down`,
        and what it held at that moment (queued or on its way) is dropped with it, as a cut
        fibre loses what was in flight and as the kernel resets a device's qdiscs when it goes
        down. Up again, it starts empty with the shape it had, and with no class paused (a
        resume sent while it was down was lost with the rest).
        """
        if not up and not self._down:
            self._down = True
            dropped = self.held_packets
            self._drops_down += dropped
            self._bytes_down += self._held_bytes
            self._in_flight_lost += self._held_bytes
            self._line.clear()
            self._heap.clear()
            self._queue.clear()
            if self._sched is not None:
                self._sched.clear()
            self._queue_bytes = 0
            self._held_bytes = 0
            self._busy_until = now_ns
            return dropped
        if up:
            self._down = False
        return 0

    def pause(self, priority: int, paused: bool, now_ns: int) -> bool:
        """PFC (802.1Qbb) at this direction's transmitter: a pause frame from the far end,
        arriving at `now_ns`, pauses (or resumes) this direction's classes of `priority`.
        The wire first takes what it would have up to `now_ns`; a paused class then waits
        in its queue, and the packets on the wire or in the delay line still arrive, as on
        a real link. A wire that idled through the pause starts again at `now_ns`.

        Only where the direction queues by class (`classed`): returns False otherwise (no
        class queue to hold) and for a priority no class has."""
        sched = self._sched
        if sched is None:
            return False
        mask = 0
        for k, c in enumerate(self._classes):
            if c.priority == priority:
                mask |= 1 << k
        if not mask:
            return False
        self._schedule(now_ns)
        sched.pause(mask, paused)
        if paused:
            self.pfc_pauses += 1
        elif self._busy_until < now_ns:
            self._busy_until = now_ns
            self._schedule(now_ns)
        return True

    @property
    def up(self) -> bool:
        return not self._down

    # -- the per-packet path -------------------------------------------------------------------

    @property
    def faults(self) -> bool:
        """Whether a verdict may ask the caller to flip a bit or offer a copy."""
        return self._dup_or_corrupt

    def offer(self, length: int, ect: bool, now_ns: int, item: Any = None, *,  # noqa: ANN401
              header: int = 0, copy: bool = False, dscp: int = 0) -> Verdict:
        """Decide the fate of a packet of `length` bytes that arrives at `now_ns`.

        `ect`: the packet is ECN-capable (ECT(0), ECT(1), or already CE). On `Action.HOLD` the
        model keeps `item` until `release`; on `Action.FORWARD` the caller delivers it now.
        `header`: leading bytes a corruption leaves alone (the IP header, so that the
        receiver's TCP/UDP checksum is what catches it). `copy`: this is the copy a
        `Verdict.duplicate` asked for (never duplicated again). `dscp`: the packet's DSCP,
        which picks its class queue where the direction queues by class (`classed`).
        """
        self._packets_in += 1
        self._bytes_in += length
        if now_ns >= self._next_sample:
            self._take_sample(now_ns)
        if self._down:
            self._drops_down += 1
            self._bytes_down += length
            return DROPPED_DOWN
        rng = self._rng
        dup = False
        if self._dup_or_corrupt and self._duplicate and not copy:
            dup = rng.random() < self._duplicate
        if self._loss and rng.random() < self._loss:
            if not dup:
                self._drops_loss += 1
                return DROPPED_LOSS
            dup = False  # netem: duplicated and lost leaves one copy
        bit = -1
        if self._dup_or_corrupt:
            if self._corrupt and rng.random() < self._corrupt and length > 0:
                span = length - header if 0 <= header < length else length
                bit = (length - span) * 8 + rng.randrange(span * 8)
        if self.immediate:
            self._packets_out += 1
            self._bytes_out += length
            if bit >= 0 or dup:
                self._count_faults(bit, dup)
                return Verdict(Action.FORWARD, now_ns, False, bit, dup)
            return Verdict(Action.FORWARD, now_ns, False)
        ce = False
        rate = self._rate
        if rate is not None:
            if self._sched is not None:
                return self._offer_classed(length, ect, now_ns, item, dscp, bit, dup)
            q = self._queue
            while q and q[0][0] <= now_ns:
                self._queue_bytes -= q.popleft()[1]
            qbytes = self._queue_bytes
            if q:
                limit = self.queue_limit_bytes
                if limit is not None:
                    if qbytes + length > limit:
                        self._drops_queue += 1
                        return DROPPED_QUEUE
                elif len(q) >= self.queue_limit_packets:  # type: ignore[operator]
                    self._drops_queue += 1
                    return DROPPED_QUEUE
            if ect and self._ecn is not None and qbytes > self._ecn:
                ce = True
                self._ecn_marks += 1
            start = self._busy_until if self._busy_until > now_ns else now_ns
            departure = start + -(-length * 8 * NS_PER_S // rate)
            self._busy_until = departure
            q.append((departure, length))
            qbytes += length
            self._queue_bytes = qbytes
            if qbytes > self._queue_max:
                self._queue_max = qbytes
        else:
            if self._held_bytes + length > self.delay_line_limit and self._held_bytes:
                self._drops_queue += 1
                return DROPPED_QUEUE
            departure = now_ns
        if self._reorders:
            release = self._hold_unordered(departure, length, item)
        else:  # the FIFO delay line, inline: most links take this path for every packet
            release = departure + self._delay
            self._seq += 1
            self._line.append((release, length, item, self._seq))
        held = self._held_bytes + length
        self._held_bytes = held
        if held > self._held_max:
            self._held_max = held
        if bit >= 0 or dup:
            self._count_faults(bit, dup)
            return Verdict(Action.HOLD, release, ce, bit, dup)
        return Verdict(Action.HOLD, release, ce)

    def _offer_classed(self, length: int, ect: bool, now_ns: int, item: Any,  # noqa: ANN401
                       dscp: int, bit: int, dup: bool) -> Verdict:
        """The serialiser's part of `offer` where packets queue by class."""
        sched = self._sched
        assert sched is not None
        if sched.ready and self._busy_until <= now_ns:
            self._schedule(now_ns)  # what the wire picked before this packet arrived
        q = self._queue
        while q and q[0][0] <= now_ns:
            self._queue_bytes -= q.popleft()[1]
        k = sched.dscp_class[dscp & 63]
        self._cls_in[k] += 1
        kq = sched.bytes[k]
        # a class paused by PFC drops nothing: its queue is the NIC's paused ring, which
        # holds what the host sent before the pause reached it (`pause`)
        if kq and not sched.paused >> k & 1:
            limit = self.queue_limit_bytes
            if limit is not None:
                cap = self._cls_cap[k]
                if cap is not None and cap < limit:
                    limit = cap
                if kq + length > limit:
                    self._drops_queue += 1
                    self._cls_drops[k] += 1
                    return DROPPED_QUEUE
            elif len(sched.queues[k]) >= self.queue_limit_packets:  # type: ignore[operator]
                self._drops_queue += 1
                self._cls_drops[k] += 1
                return DROPPED_QUEUE
        ce = False
        if ect:
            red = self._cls_red[k]
            if red is not None:
                kmin, kmax, slope = red
                ce = kq > kmin and (kq >= kmax or self._rng.random() < slope * (kq - kmin))
            elif self._ecn is not None:
                ce = self._queue_bytes + sched.total_bytes > self._ecn
            if ce:
                self._ecn_marks += 1
                self._cls_marks[k] += 1
        if not sched.ready and self._busy_until < now_ns:
            self._busy_until = now_ns  # the wire idled until this packet came
        sched.push(k, length, item)
        kq += length
        if kq > self._cls_max[k]:
            self._cls_max[k] = kq
        held = self._held_bytes + length
        self._held_bytes = held
        if held > self._held_max:
            self._held_max = held
        if self._busy_until <= now_ns:
            self._schedule(now_ns)  # an idle wire takes it at once
        total = self._queue_bytes + sched.total_bytes
        if total > self._queue_max:
            self._queue_max = total
        if bit >= 0 or dup:
            self._count_faults(bit, dup)
        nxt = self.next_deadline()
        return Verdict(Action.HOLD, now_ns if nxt is None else nxt, ce, bit, dup)

    def _schedule(self, now_ns: int) -> None:
        """Put on the wire, one after the other, the packets the class queues hand it up to
        `now_ns`: each time the wire frees (`_busy_until`), `ClassScheduler.pop` picks the
        next; the packet departs when its bits are on the wire.

        Every queued packet had arrived by the time the wire frees: `offer` runs the wire's
        decisions up to a packet's arrival before queueing it, so a packet joins the queues
        only while the wire is busy, or when it is idle, and then the wire takes it at once
        (`_busy_until` moves up to its arrival). A caller that runs late decides as the
        wire would have."""
        sched = self._sched
        if sched is None or not sched.ready:
            return
        rate = self._rate
        assert rate is not None
        q = self._queue
        pop = sched.pop
        while self._busy_until <= now_ns and (picked := pop()) is not None:
            k, length, item = picked
            departure = self._busy_until + -(-length * 8 * NS_PER_S // rate)
            self._busy_until = departure
            q.append((departure, length))
            self._queue_bytes += length
            self._cls_out[k] += 1
            self._cls_bytes_out[k] += length
            self._hold(departure, length, item)

    def _hold(self, departure: int, length: int, item: Any) -> None:  # noqa: ANN401
        """Hold a packet that leaves the serialiser at `departure` for its delay, jitter or
        reordering (its bytes are already counted as held)."""
        if self._reorders:
            self._hold_unordered(departure, length, item)
        else:
            self._seq += 1
            self._line.append((departure + self._delay, length, item, self._seq))

    def _hold_unordered(self, departure: int, length: int, item: Any) -> int:  # noqa: ANN401
        """Hold a packet where releases are not in arrival order (jitter or reordering): draw
        its release and put it in the heap; returns the release. With the reorder
        probability it is sent at its departure, overtaking what waits out the delay; else
        departure + delay + uniform(-jitter, +jitter), never before its departure."""
        rng = self._rng
        if self._reorder and rng.random() < self._reorder:
            release = departure
            self._reordered += 1
        else:
            release = departure + self._delay
            if self._jitter:
                release += int((2.0 * rng.random() - 1.0) * self._jitter)
                if release < departure:
                    release = departure
        self._seq += 1
        heapq.heappush(self._heap, (release, self._seq, length, item))
        return release

    def _count_faults(self, bit: int, dup: bool) -> None:
        """Count what an accepted packet's verdict asks for (a dropped one asks nothing)."""
        if bit >= 0:
            self._corrupted += 1
        if dup:
            self._duplicated += 1

    def next_deadline(self) -> int | None:
        """When the earliest held packet is due, or None when nothing is held. Where packets
        queue by class, also when the wire next frees while a class queue waits."""
        line = self._line
        heap = self._heap
        if line:
            # both hold packets only after a live change turned jitter or reordering on or off
            return min(line[0][0], heap[0][0]) if heap else line[0][0]
        if heap:
            return heap[0][0]
        return None

    def _next_deadline_classed(self) -> int | None:
        d = LinkDirection.next_deadline(self)
        if self._sched is not None and self._sched.ready and (d is None or self._busy_until < d):
            return self._busy_until
        return d

    def _release_classed(self, now_ns: int) -> list[Any]:
        self._schedule(now_ns)
        return LinkDirection.release(self, now_ns)

    def release(self, now_ns: int) -> list[Any]:
        """Remove and return the items due at `now_ns`, in release order."""
        out: list[Any] = []
        nbytes = 0
        line = self._line
        if line:
            while line and line[0][0] <= now_ns:
                _, length, item, _ = line.popleft()
                nbytes += length
                out.append(item)
        heap = self._heap
        if heap:
            pop = heapq.heappop
            while heap and heap[0][0] <= now_ns:
                _, _, length, item = pop(heap)
                nbytes += length
                out.append(item)
        if out:
            self._packets_out += len(out)
            self._bytes_out += nbytes
            self._held_bytes -= nbytes
        return out

    # -- inspection ----------------------------------------------------------------------------

    @property
    def held_packets(self) -> int:
        """Packets held (accepted, not yet released): queued by class or held for delay."""
        queued = self._sched.count if self._sched is not None else 0
        return len(self._line) + len(self._heap) + queued

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def _take_sample(self, now_ns: int) -> None:
        """(time, queue bytes, bytes out so far), at most one per interval, while traffic flows.

        When the buffer is full, every other sample goes and the interval doubles: samples
        always span the whole run, at a resolution that coarsens as it grows (a ring buffer
        would keep only its last second).
        """
        if len(self._samples) >= self._max_samples:
            self._samples = self._samples[::2]
            self._cls_samples = self._cls_samples[::2]
            self._sample_interval *= 2
        self._samples.append((now_ns, self.queue_bytes(now_ns), self._bytes_out))
        if self._classes:  # in step with `_samples`: zeros while nothing queues by class
            sched = self._sched
            self._cls_samples.append((now_ns, tuple(sched.bytes) if sched is not None
                                      else (0,) * len(self._classes)))
        self._next_sample = now_ns + self._sample_interval

    def queue_bytes(self, now_ns: int) -> int:
        """Bytes accepted but not yet serialised at `now_ns` (0 when the kernel shapes rate)."""
        sched = self._sched
        if sched is not None:
            self._schedule(now_ns)
        q = self._queue
        while q and q[0][0] <= now_ns:
            self._queue_bytes -= q.popleft()[1]
        return self._queue_bytes + (sched.total_bytes if sched is not None else 0)

    def class_queue_bytes(self) -> tuple[int, ...]:
        """Bytes waiting in each class queue now (empty where the direction has no classes
        or does not serialise)."""
        return tuple(self._sched.bytes) if self._sched is not None else ()

    def statistics(self) -> LinkStats:
        """A frozen snapshot of the counters."""
        return LinkStats(
            packets_in=self._packets_in,
            bytes_in=self._bytes_in,
            packets_out=self._packets_out,
            bytes_out=self._bytes_out,
            drops_loss=self._drops_loss,
            drops_queue=self._drops_queue,
            ecn_marks=self._ecn_marks,
            queue_bytes_max=self._queue_max,
            held_bytes_max=self._held_max,
            samples=tuple(self._samples),
            packets_corrupted=self._corrupted,
            packets_duplicated=self._duplicated,
            packets_reordered=self._reordered,
            drops_down=self._drops_down,
            up=not self._down,
            bytes_dropped_down=self._bytes_down,
            bytes_lost_in_flight=self._in_flight_lost,
            classes=tuple(
                ClassStats(name=c.name, dscp=c.dscp, packets_in=self._cls_in[i],
                           drops_queue=self._cls_drops[i], ecn_marks=self._cls_marks[i],
                           packets_out=self._cls_out[i], bytes_out=self._cls_bytes_out[i],
                           queue_bytes_max=self._cls_max[i])
                for i, c in enumerate(self._classes))
            if self._sched is not None or any(self._cls_in) else (),
            class_samples=tuple(self._cls_samples)
            if self._sched is not None or any(self._cls_in) else (),
        )
