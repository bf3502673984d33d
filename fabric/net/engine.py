"""The userspace link engine: relays packets between TUN pairs through `LinkDirection` models.

    python -m fabric.net.engine CONFIG.json [--loop=trio|epoll]

Each link a<->b is a pair of persistent TUN devices, one in each node's namespace. What node a's
kernel sends out of its TUN (read from a's fd) goes through the link's `forward` model and is
written into b's TUN fd (b's kernel receives it), and the reverse likewise.

One trio loop serves every link: a reader task per fd drains it until EAGAIN (batching
amortises trio's per-wakeup cost), and ONE timerfd armed to the earliest release across all
links wakes a task that writes every due packet. The timerfd matters: epoll and trio sleeps
round to ~1 ms on the target hosts, a timerfd wakes within ~0.1 ms.

Spinning (`EngineConfig.spin_ns`, `fabric up --engine-spin`): the timerfd wakes that long
before a release, and the engine busy-waits the rest of the way, watching its TUN fds (a packet
that comes in meanwhile is read at once, then the wait goes on). A timer wake-up on the
development machine's VM is ~50 us late at the median and ~130 us at p99, and now and then ms
late when the host stalls a sleeping VM; spinning 150 us removes most of that from every held
packet, for up to that much CPU per release. By default the engine spins 150 us within a budget
of a tenth of one CPU (`SpinBudget`, `EngineConfig.spin_share`): sparse, latency-bound traffic
(probes, requests) spins before every release, steady traffic through a delaying link spins
until the budget is spent and then sleeps to its releases as it would without spinning. An
explicit `--engine-spin` spins without a budget; `--engine-spin 0` never spins.

Live changes: the engine listens on a Unix socket (`EngineConfig.control`, by default
`engine.sock` beside the stats file) for one JSON line per connection, `show` or `set` (new
shapes, link down and up), and answers with one JSON line (`control_request`). Both loops serve
it between packets: the trio loop (the default, and what `fabric up` starts) in a task of its
own, the epoll loop inline when the socket is readable.

Protocol with the orchestrator: after attaching every fd the engine prints `READY <pid>` on
stdout; it writes stats JSON atomically to `stats_path` every second and at exit; SIGTERM or
SIGINT ends it with exit status 0; a missing device or namespace prints
`engine: <link id>: <what>` on stderr and exits 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
import os
import random
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from fabric.linkmodel import Action, LinkDirection, Verdict
from fabric.net.daemon import Turns, serve_until_signal, write_json_atomic, write_json_sliced
from fabric.net.tun import (
    TimerFd,
    keep_freed_memory,
    open_tun,
    set_thread_name,
    set_timer_slack,
)
from fabric.switch.pfc import PFC_IP_SIZE, pfc_in_packet
from fabric.topology.model import Shape, TrafficClass
from fabric.wire.ip import flip_bit, header_length, set_ce

READ_SIZE = 65536  # any IP packet; os.read's buffer is shrunk to the packet, no cost to size it
BATCH = 64  # packets per reader wake-up before yielding (bounds timer lateness under flood)
STATS_INTERVAL_S = 1.0
# Under load, re-arm the timer no sooner than this after a flush so that one wake-up writes
# several packets (each wake-up costs ~3 syscalls and a trip through the loop). It only delays
# packets that are due within this window of the previous batch; sparse traffic is unaffected.
COALESCE_NS = int(os.environ.get("FABRIC_ENGINE_COALESCE_NS", "20000"))
_INF = 1 << 62
LATE_WINDOW = 4096  # releases whose lateness the engine keeps (`release_lateness`)
LATE_MASK = LATE_WINDOW - 1
MAX_SPIN_NS = 1_000_000  # spinning longer than a ms only burns CPU: timer wake-ups are closer
DEFAULT_SPIN_NS = 150_000  # what the engine spins without `--engine-spin`...
DEFAULT_SPIN_SHARE = 0.1  # ...within this share of one CPU (`SpinBudget`)
SPIN_BURST_NS = 20_000_000  # spinning a budget saves up while the engine does not spin
_SHAPE_FIELDS = tuple(f.name for f in dataclasses.fields(Shape))
CONTROL_NAME = "engine.sock"
CONTROL_TIMEOUT_S = 5.0


# -- configuration -----------------------------------------------------------------------------


def shape_to_dict(shape: Shape) -> dict[str, Any]:
    """A Shape as a JSON-able dict of its fields."""
    return dataclasses.asdict(shape)


def class_to_dict(c: TrafficClass) -> dict[str, Any]:
    """What the engine needs of a traffic class to queue by it, JSON-able."""
    return {"name": c.name, "dscp": c.dscp, "priority": c.priority, "strict": c.strict,
            "weight": c.weight, "red": list(c.red) if c.red is not None else None,
            "queue_bytes": c.queue_bytes}


def class_from_dict(data: dict[str, Any]) -> TrafficClass:
    """The inverse of `class_to_dict`."""
    red = data.get("red")
    return TrafficClass(name=str(data["name"]), dscp=int(data.get("dscp", 0)),
                        priority=int(data.get("priority", 0)),
                        strict=bool(data.get("strict", False)),
                        weight=int(data.get("weight", 1)),
                        red=(int(red[0]), int(red[1]), float(red[2])) if red else None,
                        queue_bytes=(int(data["queue_bytes"]) if data.get("queue_bytes")
                                     is not None else None))


def shape_from_dict(data: dict[str, Any]) -> Shape:
    """The inverse of `shape_to_dict`; unknown keys are an error, missing ones default."""
    unknown = set(data) - set(_SHAPE_FIELDS)
    if unknown:
        raise ValueError(f"unknown shape field(s): {', '.join(sorted(unknown))}")
    return Shape(**data)


@dataclass(frozen=True)
class Endpoint:
    """One end of a link: the TUN device `dev` in network namespace `netns` (None: the
    engine's own namespace)."""

    netns: str | None
    dev: str

    def to_dict(self) -> dict[str, Any]:
        return {"netns": self.netns, "dev": self.dev}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Endpoint:
        return cls(netns=data.get("netns"), dev=data["dev"])


@dataclass(frozen=True)
class EngineLink:
    """One link the engine relays. `forward` shapes a->b, `reverse` b->a. With
    `rate_in_engine` the engine serialises at the shape's rate (and so can queue and ECN-mark);
    otherwise the kernel's tbf on the TUN shapes rate and queue. `classes` (two or more): the
    serialiser keeps a queue per class, picked by each packet's DSCP (`LinkDirection`)."""

    id: str
    a: Endpoint
    b: Endpoint
    forward: Shape
    reverse: Shape
    rate_in_engine: bool = False
    seed: int = 0
    classes: tuple[TrafficClass, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "forward": shape_to_dict(self.forward),
            "reverse": shape_to_dict(self.reverse),
            "rate_in_engine": self.rate_in_engine,
            "seed": self.seed,
        }
        if self.classes:
            out["classes"] = [class_to_dict(c) for c in self.classes]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineLink:
        return cls(
            id=str(data["id"]),
            a=Endpoint.from_dict(data["a"]),
            b=Endpoint.from_dict(data["b"]),
            forward=shape_from_dict(data.get("forward", {})),
            reverse=shape_from_dict(data.get("reverse", {})),
            rate_in_engine=bool(data.get("rate_in_engine", False)),
            seed=int(data.get("seed", 0)),
            classes=tuple(class_from_dict(c) for c in data.get("classes") or ()),
        )


@dataclass(frozen=True)
class EngineConfig:
    """What one engine process serves; `to_json` is what the orchestrator writes for it."""

    fabric: str
    run_id: str
    stats_path: str
    links: tuple[EngineLink, ...] = field(default=())
    # the control socket (`control_request`); "" = `engine.sock` beside the stats file
    control_path: str = ""
    # busy-wait up to this long before each release instead of sleeping (0: sleep only)...
    spin_ns: int = DEFAULT_SPIN_NS
    # ...spending at most this share of one CPU on it (1: no limit; `SpinBudget`)
    spin_share: float = DEFAULT_SPIN_SHARE

    def __post_init__(self) -> None:
        if not isinstance(self.spin_ns, int) or not 0 <= self.spin_ns <= MAX_SPIN_NS:
            raise ValueError(f"spin_ns {self.spin_ns!r}: an int of nanoseconds in 0.."
                             f"{MAX_SPIN_NS} (1 ms)")
        if (not isinstance(self.spin_share, int | float) or isinstance(self.spin_share, bool)
                or not 0 < self.spin_share <= 1):
            raise ValueError(f"spin_share {self.spin_share!r}: a share of one CPU, more than 0 "
                             f"and at most 1")

    @property
    def control(self) -> str | None:
        """Where the engine listens for live changes, None when it has no state directory."""
        if self.control_path:
            return self.control_path
        if self.stats_path:
            return os.path.join(os.path.dirname(self.stats_path), CONTROL_NAME)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fabric": self.fabric,
            "run_id": self.run_id,
            "stats_path": self.stats_path,
            "control_path": self.control_path,
            "spin_ns": self.spin_ns,
            "spin_share": self.spin_share,
            "links": [link.to_dict() for link in self.links],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineConfig:
        links = tuple(EngineLink.from_dict(item) for item in data.get("links", []))
        ids = [link.id for link in links]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate link id")
        return cls(
            fabric=str(data["fabric"]),
            run_id=str(data["run_id"]),
            stats_path=str(data["stats_path"]),
            links=links,
            control_path=str(data.get("control_path") or ""),
            spin_ns=int(data.get("spin_ns", DEFAULT_SPIN_NS)),
            spin_share=float(data.get("spin_share", DEFAULT_SPIN_SHARE)),
        )

    @classmethod
    def from_json(cls, text: str) -> EngineConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str) -> EngineConfig:
        with open(path) as fh:
            return cls.from_json(fh.read())


class SpinBudget:
    """How long the engine may still busy-wait: a bucket of nanoseconds that fills at `share`
    of one CPU (ns of spinning per ns of host time), up to `burst_ns`, and empties by each
    spin's length. With `share` 1 there is no limit. Sans-IO: fed the time."""

    def __init__(self, share: float, burst_ns: int = SPIN_BURST_NS, now: int = 0) -> None:
        self.share = share
        self.unlimited = share >= 1
        self.burst_ns = burst_ns
        self.level = float(burst_ns)  # starts full
        self.t_ns = now

    def allows(self, now: int, ns: int) -> bool:
        """May the engine spin `ns` from `now`?"""
        if self.unlimited:
            return True
        level = self.level + (now - self.t_ns) * self.share
        self.level = level if level < self.burst_ns else self.burst_ns
        self.t_ns = now
        return self.level >= ns

    def spend(self, ns: int) -> None:
        """It spun `ns`."""
        if not self.unlimited:
            self.level -= ns


class EngineError(Exception):
    """Attaching a link failed; `link_id` and `what` make the engine's one-line message."""

    def __init__(self, link_id: str, what: str) -> None:
        super().__init__(f"{link_id}: {what}")
        self.link_id = link_id
        self.what = what


# -- runtime -----------------------------------------------------------------------------------


class _Direction:
    """One direction of a link at run time: read from `src_fd`, model, write to `dst_fd`."""

    __slots__ = ("link_id", "name", "src_fd", "dst_fd", "model", "may_mark", "faults",
                 "classed", "drops_write", "index", "scheduled", "dead", "pfc_to")

    def __init__(self, link_id: str, name: str, src_fd: int, dst_fd: int,
                 model: LinkDirection, index: int) -> None:
        self.link_id = link_id
        self.name = name
        self.src_fd = src_fd
        self.dst_fd = dst_fd
        self.model = model
        self.may_mark = model.rate_in_engine and model.shape.ecn_bytes is not None
        self.faults = model.faults  # corrupts or duplicates: packets take `_offer_faulty`
        self.classed = model.classed  # queues by class: packets take `_drain_classed`
        self.drops_write = 0
        self.index = index
        self.scheduled = _INF  # deadline of this direction's live entry in the engine heap
        self.dead: str | None = None
        # the opposite direction of the link, where the link has traffic classes: a PFC
        # frame this direction delivers pauses that one's transmitter (`Engine._on_pfc`)
        self.pfc_to: _Direction | None = None


def _ect_dscp(pkt: bytearray) -> tuple[bool, int]:
    """(ECN-capable, DSCP) of an IPv4 or IPv6 packet; (False, 0) for anything else."""
    version = pkt[0] >> 4 if pkt else 0
    if version == 4 and len(pkt) > 1:
        tos = pkt[1]
    elif version == 6 and len(pkt) > 1:
        tos = (pkt[0] & 0x0F) << 4 | pkt[1] >> 4
    else:
        return False, 0
    return bool(tos & 3), tos >> 2


class Engine:
    """Serves the links of an `EngineConfig`. `attach()` opens the TUN fds (before trio runs:
    it switches namespaces on the calling thread), then `serve()` runs inside trio."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.directions: list[_Direction] = []
        self._fds: list[int] = []
        self._heap: list[tuple[int, int]] = []  # (deadline, direction index), lazily cleaned
        self._timer: TimerFd | None = None
        self._armed = _INF  # the release the timer is armed for...
        self._wake = _INF  # ...and when it fires: spin_ns sooner when the engine spins to it
        self._spin_ns = config.spin_ns
        self._budget = SpinBudget(config.spin_share, now=time.monotonic_ns())
        self._inputs: select.epoll | None = None  # the TUN fds a spin watches
        self.spin_s = 0.0  # time spent spinning (host seconds, a lower bound of its CPU)
        self.spins = 0  # releases the engine spun to (or began to: a packet may cut it short)
        self.spin_denied = 0  # timers armed to sleep to a release: the budget was spent
        # how late each release was written, ns after its due time, the last LATE_WINDOW
        # of them (a ring): the engine's own part of a delay's lateness, before the kernel
        # delivers the packet and a receiver wakes (`release_lateness`)
        self._late = [0] * LATE_WINDOW
        self._late_n = 0
        self._late_max = 0
        # every release since the start, by power-of-two microseconds late (`hist_log2_us`
        # of `release_lateness`): a run takes the difference of two snapshots for its own
        self._late_hist = [0] * 64
        self._started_ns = time.monotonic_ns()
        self._control: socket.socket | None = None
        self._by_link: dict[str, dict[str, _Direction]] = {}

    # lifecycle

    def attach(self) -> None:
        """Open every link's TUN fds. Raises EngineError naming the link on failure."""
        for link in self.config.links:
            fds = []
            for end in (link.a, link.b):
                try:
                    fds.append(open_tun(end.dev, end.netns))
                except OSError as exc:
                    for fd in fds:
                        os.close(fd)
                    what = exc.strerror or str(exc)
                    raise EngineError(link.id, what) from None
            fd_a, fd_b = fds
            self._fds.extend(fds)
            rng = random.Random(link.seed)
            fwd = LinkDirection(link.forward, rate_in_engine=link.rate_in_engine,
                                rng=random.Random(rng.getrandbits(64)), classes=link.classes)
            rev = LinkDirection(link.reverse, rate_in_engine=link.rate_in_engine,
                                rng=random.Random(rng.getrandbits(64)), classes=link.classes)
            n = len(self.directions)
            d_fwd = _Direction(link.id, "forward", fd_a, fd_b, fwd, n)
            d_rev = _Direction(link.id, "reverse", fd_b, fd_a, rev, n + 1)
            if len(link.classes) > 1:
                d_fwd.pfc_to, d_rev.pfc_to = d_rev, d_fwd
            self.directions += [d_fwd, d_rev]
        self._timer = TimerFd()
        if self._spin_ns:
            self._inputs = select.epoll()
            for d in self.directions:
                self._inputs.register(d.src_fd, select.EPOLLIN)
        path = self.config.control
        if path:
            try:
                self._control = listen_control(path)
            except OSError as exc:
                raise EngineError("control", f"{path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        if self._timer is not None:
            self._timer.close()
        if self._inputs is not None:
            self._inputs.close()
            self._inputs = None
        if self._control is not None:
            self._control.close()
            self._control = None
            with contextlib.suppress(OSError):
                os.unlink(self.config.control or "")

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
        """Relay until cancelled. Signals `task_status.started()` once every task runs."""
        async with trio.open_nursery() as nursery:
            for d in self.directions:
                nursery.start_soon(self._read_loop, d)
            nursery.start_soon(self._timer_loop)
            nursery.start_soon(self._stats_loop)
            if self._control is not None:
                nursery.start_soon(self._control_loop)
            task_status.started()

    def run_epoll(self, ready_line: bool = True) -> None:
        """The same relay driven by a bare `select.epoll` loop instead of trio (for comparison:
        `--loop epoll`). Runs until SIGTERM or SIGINT."""
        stop = []
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wfd)
        handlers = {sig: signal.signal(sig, lambda *_: stop.append(1))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        ep = select.epoll()
        try:
            by_fd = {}
            for d in self.directions:
                ep.register(d.src_fd, select.EPOLLIN)
                by_fd[d.src_fd] = d
            timer = self._timer
            assert timer is not None
            tfd = timer.fileno()
            ep.register(tfd, select.EPOLLIN)
            ep.register(rfd, select.EPOLLIN)
            cfd = -1
            if self._control is not None:
                cfd = self._control.fileno()
                ep.register(cfd, select.EPOLLIN)
            if ready_line:
                sys.stdout.write(f"READY {os.getpid()}\n")
                sys.stdout.flush()
            drain = self._drain
            next_stats = 0.0
            while not stop:
                now = time.monotonic()
                if now >= next_stats:
                    self.write_stats()
                    next_stats = now + STATS_INTERVAL_S
                for fd, _ in ep.poll(next_stats - now):
                    if fd == tfd:
                        timer.clear()
                        self._armed = self._wake = _INF
                        self._flush()
                    elif fd == rfd:
                        with contextlib.suppress(BlockingIOError):
                            os.read(rfd, 64)
                    elif fd == cfd:
                        self._serve_control_blocking()
                    else:
                        d = by_fd[fd]
                        drain(d)
                        if d.dead is not None:
                            ep.unregister(fd)
        finally:
            ep.close()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            os.close(rfd)
            os.close(wfd)

    # hot path

    async def _read_loop(self, d: _Direction) -> None:
        fd = d.src_fd
        drain = self._drain
        wait = trio.lowlevel.wait_readable
        while d.dead is None:
            await wait(fd)
            drain(d)

    def _drain(self, d: _Direction) -> None:
        """Read up to BATCH packets from `d`, offer them, forward or hold them."""
        if d.classed:
            self._drain_classed(d)
            return
        fd = d.src_fd
        dst = d.dst_fd
        offer = d.model.offer
        may_mark = d.may_mark
        faults = d.faults
        heap = self._heap
        read = os.read
        write = os.write
        now_fn = time.monotonic_ns
        index = d.index
        hold = Action.HOLD
        forward = Action.FORWARD
        now = 0
        for _ in range(BATCH):
            try:
                pkt: Any = read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                self._kill(d, f"reading {d.name}: {exc.strerror}")
                return
            now = now_fn()
            if faults:
                self._offer_faulty(d, pkt, now)
                continue
            if may_mark:
                pkt = bytearray(pkt)
                b0 = pkt[0] >> 4
                ect = (b0 == 4 and pkt[1] & 3) or (b0 == 6 and pkt[1] & 0x30)
                v = offer(len(pkt), bool(ect), now, pkt)
                if v[2]:
                    set_ce(pkt)
            else:
                v = offer(len(pkt), False, now, pkt)
            action = v[0]
            if action == hold:
                if v[1] < d.scheduled:
                    d.scheduled = v[1]
                    heapq.heappush(heap, (v[1], index))
            elif action == forward:
                try:
                    write(dst, pkt)
                except OSError:
                    d.drops_write += 1
                if d.pfc_to is not None and len(pkt) == PFC_IP_SIZE:
                    self._on_pfc(d.pfc_to, pkt, now)
        self._after_batch(now)

    def _after_batch(self, now: int) -> None:
        """After a batch read at `now`: send what is due already, else arm the timer for the
        earliest held packet if it is sooner than the one armed. `now` 0: the batch read
        nothing (a spurious wake-up), so nothing changed."""
        heap = self._heap
        if heap and now:
            top = heap[0][0]
            if top <= now:
                self._flush()
            elif top < self._armed:
                self._arm(top, now)

    def _drain_classed(self, d: _Direction) -> None:
        """`_drain` for a direction that queues by class: each packet's class is its DSCP
        (the IPv4 TOS or IPv6 traffic class byte, the byte ECN marking reads)."""
        fd = d.src_fd
        offer = d.model.offer
        heap = self._heap
        read = os.read
        now_fn = time.monotonic_ns
        index = d.index
        hold = Action.HOLD
        now = 0
        for _ in range(BATCH):
            try:
                data = read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                self._kill(d, f"reading {d.name}: {exc.strerror}")
                return
            now = now_fn()
            if d.faults:
                self._offer_faulty(d, data, now)
                continue
            pkt = bytearray(data)
            ect, dscp = _ect_dscp(pkt)
            v = offer(len(pkt), ect, now, pkt, dscp=dscp)
            if v[2]:
                set_ce(pkt)
            if v[0] == hold:
                if v[1] < d.scheduled:
                    d.scheduled = v[1]
                    heapq.heappush(heap, (v[1], index))
            elif v[0] == Action.FORWARD:
                self._deliver(d, pkt, now)
        self._after_batch(now)

    def _offer_faulty(self, d: _Direction, data: bytes, now: int) -> None:
        """The per-packet path of a direction that corrupts or duplicates (netem's `corrupt`
        and `duplicate`): a copy the verdict asks for is made before this packet's CE mark or
        bit flip and offered in turn; each is then held or written like any packet.

        Flips stay past the IP header, so the receiver's TCP or UDP checksum is what rejects
        a corrupted packet (an IPv6 header has no checksum of its own)."""
        header = header_length(data)
        pkt = bytearray(data)
        ect = False
        dscp = 0
        if d.classed:
            ect, dscp = _ect_dscp(pkt)
        elif d.may_mark:
            b0 = pkt[0] >> 4
            ect = bool((b0 == 4 and pkt[1] & 3) or (b0 == 6 and pkt[1] & 0x30))
        v = d.model.offer(len(pkt), ect, now, pkt, header=header, dscp=dscp)
        copy = bytearray(data) if v.duplicate else None
        self._place(d, v, pkt, now)
        if copy is not None:
            self._place(d, d.model.offer(len(copy), ect, now, copy, header=header, copy=True,
                                         dscp=dscp), copy, now)

    def _place(self, d: _Direction, v: Verdict, pkt: bytearray, now: int) -> None:
        """Apply a verdict's CE mark and bit flip to `pkt`, then hold it or write it now."""
        if v.ce:
            set_ce(pkt)
        if v.corrupt_bit >= 0:
            flip_bit(pkt, v.corrupt_bit)
        if v.action == Action.HOLD:
            if v.release_ns < d.scheduled:
                d.scheduled = v.release_ns
                heapq.heappush(self._heap, (v.release_ns, d.index))
        elif v.action == Action.FORWARD:
            self._deliver(d, pkt, now)

    def _deliver(self, d: _Direction, pkt: bytearray, now: int) -> None:
        """Write `pkt` to `d`'s far end now; a PFC frame among what it delivers pauses the
        opposite direction (`_on_pfc`). The per-packet paths of `_drain` and `_flush` do the
        same inline (a call per packet costs there); this serves the rarer writes."""
        try:
            os.write(d.dst_fd, pkt)
        except OSError:
            d.drops_write += 1
        if d.pfc_to is not None and len(pkt) == PFC_IP_SIZE:
            self._on_pfc(d.pfc_to, pkt, now)

    def _arm(self, deadline: int, now: int, *, coalesce: bool = False) -> None:
        """Arm the timer for the release due at `deadline` (after `now`): spin_ns sooner when
        the engine spins and its budget allows (the spin waits the rest), else at the
        deadline, and with `coalesce` no sooner than COALESCE_NS from now."""
        spin = self._spin_ns
        denied = False
        if spin and self._budget.allows(now, min(deadline - now, spin)):
            wake = deadline - spin  # now or past: at once (a spin cut short by a packet)
        else:
            denied = bool(spin)
            if coalesce and deadline < now + COALESCE_NS:
                deadline = now + COALESCE_NS
            wake = deadline
        if deadline != self._armed or wake != self._wake:
            self._armed, self._wake = deadline, wake
            self._timer.set_abs(wake)  # type: ignore[union-attr]
            self.spin_denied += denied

    def _spin(self, deadline: int) -> bool:
        """Busy-wait until `deadline`; True when it came, False as soon as a TUN fd has a
        packet to read (the caller arms the timer and returns to the loop, which reads it;
        the timer, already past its early wake-up, brings the engine straight back)."""
        assert self._inputs is not None
        poll = self._inputs.poll
        now_fn = time.monotonic_ns
        start = now = now_fn()
        came = True
        while now < deadline:
            if poll(0):
                came = False
                break
            now = now_fn()
        self.spin_s += (now - start) / 1e9
        self._budget.spend(now - start)
        return came

    def _flush(self) -> None:
        """Write every due packet of every direction; re-arm the timer for the next one."""
        heap = self._heap
        dirs = self.directions
        write = os.write
        now_fn = time.monotonic_ns
        now = now_fn()
        while heap:
            deadline, index = heap[0]
            d = dirs[index]
            if deadline != d.scheduled:
                heapq.heappop(heap)
                continue  # superseded by an earlier entry for the same direction: no wake-up
            if deadline > now:
                now = now_fn()
                if deadline > now:
                    wait = deadline - now
                    if wait > self._spin_ns:  # always, when the engine does not spin
                        self._arm(deadline, now, coalesce=True)
                        return
                    if not self._budget.allows(now, wait):
                        self._arm(deadline, now, coalesce=True)  # counts it in spin_denied
                        return
                    self.spins += 1
                    if not self._spin(deadline):
                        self._arm(deadline, now)
                        return
                    now = now_fn()
            heapq.heappop(heap)
            late = now - deadline
            self._late[self._late_n & LATE_MASK] = late
            self._late_n += 1
            self._late_hist[(late // 1000).bit_length()] += 1
            if late > self._late_max:
                self._late_max = late
            dst = d.dst_fd
            pfc_to = d.pfc_to
            for pkt in d.model.release(now):
                try:
                    write(dst, pkt)
                except OSError:
                    d.drops_write += 1
                if pfc_to is not None and len(pkt) == PFC_IP_SIZE:
                    self._on_pfc(pfc_to, pkt, now)
            nxt = d.model.next_deadline()
            if nxt is None:
                d.scheduled = _INF
            else:
                d.scheduled = nxt
                heapq.heappush(heap, (nxt, index))

    def _on_pfc(self, d: _Direction, pkt: bytes | bytearray, now: int) -> None:
        """A PFC frame reached the far end of `d`'s link: pause or resume the priorities it
        names at `d`'s transmitter (`LinkDirection.pause`), as the receiving NIC's MAC does.
        The frame itself was delivered too: a RoCE sender's queue pairs stop as well."""
        frames = pfc_in_packet(pkt)
        if not frames:
            return
        model = d.model
        for priority, pause in frames:
            model.pause(priority, pause, now)
        nxt = model.next_deadline()
        if nxt is not None and nxt < d.scheduled:
            d.scheduled = nxt
            heapq.heappush(self._heap, (nxt, d.index))

    async def _timer_loop(self) -> None:
        timer = self._timer
        assert timer is not None
        tfd = timer.fileno()
        wait = trio.lowlevel.wait_readable
        while True:
            await wait(tfd)
            timer.clear()
            self._armed = self._wake = _INF
            self._flush()

    def _kill(self, d: _Direction, what: str) -> None:
        if d.dead is None:
            d.dead = what
            if self._inputs is not None:
                with contextlib.suppress(OSError):
                    self._inputs.unregister(d.src_fd)
            sys.stderr.write(f"engine: {d.link_id}: {what}\n")
            sys.stderr.flush()

    # control: live changes (`fabric.net.live`)

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one control request (see `control_request`), between packets.

        `{"op": "show"}`: every link's shapes in force, up or down, and counters.
        `{"op": "set", "changes": [{"link", "direction", "shape"?, "up"?}, ...]}`: every
        change is checked first and then all are applied, so a bad one changes nothing.
        """
        op = request.get("op")
        if op == "show":
            return {"ok": True, "links": self._show(None)}
        if op != "set":
            return {"ok": False, "error": f"unknown control op {op!r} (show or set)"}
        if not self._by_link:
            for d in self.directions:
                self._by_link.setdefault(d.link_id, {})[d.name] = d
        plan: list[tuple[_Direction, Shape | None, bool | None]] = []
        for change in request.get("changes") or []:
            link = self._by_link.get(str(change.get("link")))
            if link is None:
                return {"ok": False, "error": f"no link {change.get('link')!r} in this engine "
                                             f"(links: {', '.join(self._by_link)})"}
            found = link.get(str(change.get("direction")))
            if found is None:
                return {"ok": False, "error": f"direction {change.get('direction')!r}: "
                                             "forward or reverse"}
            d = found
            try:
                shape = (shape_from_dict(change["shape"]) if change.get("shape") is not None
                         else None)
            except (TypeError, ValueError) as exc:
                return {"ok": False, "error": f"{d.link_id} {d.name}: {exc}"}
            up = change.get("up")
            plan.append((d, shape, None if up is None else bool(up)))
        now = time.monotonic_ns()
        for d, shape, up in plan:
            if shape is not None:
                d.model.set_shape(shape, now)
                d.may_mark = d.model.rate_in_engine and d.model.shape.ecn_bytes is not None
                d.faults = d.model.faults
                d.classed = d.model.classed
            if up is not None:
                d.model.set_up(up, now)
            nxt = d.model.next_deadline()
            if nxt is not None and nxt < d.scheduled:
                d.scheduled = nxt
                heapq.heappush(self._heap, (nxt, d.index))
                if nxt < self._armed:
                    self._arm(nxt, now)
        return {"ok": True, "links": self._show({d.link_id for d, _, _ in plan})}

    def _show(self, ids: set[str] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for d in self.directions:
            if ids is not None and d.link_id not in ids:
                continue
            s = d.model.statistics().to_dict()
            del s["samples"]
            s.pop("class_samples", None)
            s["drops_write"] = d.drops_write
            s["held_packets"] = d.model.held_packets
            entry = out.setdefault(d.link_id, {"rate_in_engine": d.model._engine_may_rate})
            entry[d.name] = {"shape": shape_to_dict(d.model.shape), "up": d.model.up,
                             "stats": s}
        return out

    def _reply(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            reply = self.control(request)
        except ValueError as exc:
            reply = {"ok": False, "error": f"bad control request: {exc}"}
        except Exception as exc:  # noqa: BLE001 - a malformed request never ends the relay
            reply = {"ok": False, "error": f"bad control request: {type(exc).__name__}: {exc}"}
        return json.dumps(reply).encode() + b"\n"

    async def _control_loop(self) -> None:
        assert self._control is not None
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self._control))
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._control_conn, stream)

    async def _control_conn(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                buf = b""
                with trio.move_on_after(CONTROL_TIMEOUT_S):
                    while b"\n" not in buf:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            return
                        buf += chunk
                    # applied here, with no await between reading the request and changing
                    # the models: between two packets of the relay
                    await stream.send_all(self._reply(buf.split(b"\n", 1)[0]))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return  # the client left (Ctrl-C on `fabric link show`): the relay goes on

    def _serve_control_blocking(self) -> None:
        """The epoll loop's control: one connection, read and answered at once (a local
        client that has already written its line; the relay waits at most
        CONTROL_TIMEOUT_S for a stuck one)."""
        assert self._control is not None
        try:
            conn, _ = self._control.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(CONTROL_TIMEOUT_S)
            buf = b""
            try:
                while b"\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                conn.sendall(self._reply(buf.split(b"\n", 1)[0]))
            except OSError:
                return

    # statistics

    def statistics(self, *, final: bool = False) -> dict[str, Any]:
        """Per link and direction the `LinkStats` fields plus `drops_write` (JSON-able)."""
        links: dict[str, dict[str, Any]] = {}
        for d in self.directions:
            links.setdefault(d.link_id, {})[d.name] = self._direction_stats(d)
        return self._stats_doc(links, final)

    @staticmethod
    def _direction_stats(d: _Direction) -> dict[str, Any]:
        s = d.model.statistics().to_dict()
        s["drops_write"] = d.drops_write
        # the queue is the engine's to see only where it serialises; elsewhere the
        # kernel's tbf holds it and the engine's figure would be a misleading 0
        s["queue_observed"] = d.model.rate_in_engine
        s["held_packets"] = d.model.held_packets
        s["error"] = d.dead
        return s

    def release_lateness(self) -> dict[str, Any]:
        """How late the engine wrote what it held, after each release's due time: `releases`
        so far and `max_us` of them all; p50/p99/max over the last `window` (at most
        LATE_WINDOW). One entry per release (a direction's due packets at one time), not per
        packet. A release the timer coalesced with one just before (`COALESCE_NS`) counts
        the wait; with `--engine-spin` a release is on time unless the spin was cut short.
        `hist_log2_us` counts every release by how late it was: entry 0 under 1 us, entry k
        from 2^(k-1) to 2^k us (`fabric.metrics.stats.lateness_between` reads two of them)."""
        n = min(self._late_n, LATE_WINDOW)
        hist = self._late_hist
        used = max((i + 1 for i, c in enumerate(hist) if c), default=0)
        out: dict[str, Any] = {"releases": self._late_n, "window": n,
                               "max_us": self._late_max / 1e3, "hist_log2_us": hist[:used]}
        if n:
            w = sorted(self._late[:n])
            out.update(window_p50_us=w[n // 2] / 1e3,
                       window_p99_us=w[min(n - 1, n * 99 // 100)] / 1e3,
                       window_max_us=w[-1] / 1e3)
        return out

    def _stats_doc(self, links: dict[str, dict[str, Any]], final: bool) -> dict[str, Any]:
        return {
            "fabric": self.config.fabric,
            "run_id": self.config.run_id,
            "pid": os.getpid(),
            "final": final,
            "monotonic_ns": time.monotonic_ns(),
            "uptime_s": (time.monotonic_ns() - self._started_ns) / 1e9,
            "spin_ns": self._spin_ns,
            "spin_share": self.config.spin_share,
            "spin_s": self.spin_s,
            "spins": self.spins,
            "spin_denied": self.spin_denied,
            "release_lateness": self.release_lateness(),
            "links": links,
        }

    def write_stats(self, *, final: bool = False) -> None:
        """Write `statistics()` to the stats path atomically (tmp file + rename)."""
        if self.config.stats_path:
            write_json_atomic(self.config.stats_path, self.statistics(final=final))

    async def _stats_loop(self) -> None:
        """`write_stats` every `STATS_INTERVAL_S`, giving the packet loops their `Turns`
        while it gathers and encodes (`write_json_sliced`): a write with full
        sample buffers takes ms, and held in one piece it delayed every packet meanwhile
        (pings through a link saw a 10-15 ms stall once a second). Each direction's figures
        are its own at the moment they are taken, a few ms apart at most; the final write
        at exit takes them all at once."""
        path = self.config.stats_path
        if not path:
            return
        while True:
            links: dict[str, dict[str, Any]] = {}
            turns = Turns()
            for d in self.directions:
                links.setdefault(d.link_id, {})[d.name] = self._direction_stats(d)
                await turns()
            await write_json_sliced(path, self._stats_doc(links, False))
            await trio.sleep(STATS_INTERVAL_S)


# -- the control socket ------------------------------------------------------------------------


@contextlib.contextmanager
def _unix_address(path: str) -> Any:  # noqa: ANN401 - a context manager of str
    """`path` as bind(2) and connect(2) take it: a Unix socket path holds at most 107 bytes,
    so a longer one goes through `/proc/self/fd/N/` of its directory, held open meanwhile."""
    if len(os.fsencode(path)) < 100:
        yield path
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


def listen_control(path: str) -> socket.socket:
    """The engine's control socket at `path` (a stale one is replaced), mode 0600: whoever
    may connect may change every link."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with _unix_address(path) as addr:
            sock.bind(addr)
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def control_request(path: str, request: dict[str, Any], *,
                    timeout: float = CONTROL_TIMEOUT_S) -> dict[str, Any]:
    """Send one JSON request to the engine listening at `path` and return its JSON reply
    (`{"ok": true, ...}` or `{"ok": false, "error": ...}`). One request per connection.
    Raises OSError when no engine answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        with _unix_address(path) as addr:
            sock.connect(addr)
        sock.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    try:
        reply = json.loads(buf)
    except ValueError:
        raise OSError(f"the link engine at {path} gave no answer") from None
    return reply if isinstance(reply, dict) else {"ok": False, "error": "bad reply"}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m fabric.net.engine CONFIG.json`; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    loop = "trio"
    for opt in ("--loop=epoll", "--loop=trio"):
        if opt in args:
            args.remove(opt)
            loop = opt.split("=")[1]
    if len(args) != 1:
        sys.stderr.write("usage: python -m fabric.net.engine CONFIG.json [--loop=trio|epoll]\n")
        return 2
    try:
        config = EngineConfig.load(args[0])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"engine: config: {args[0]}: {exc}\n")
        return 2
    engine = Engine(config)
    try:
        engine.attach()
    except EngineError as exc:
        sys.stderr.write(f"engine: {exc.link_id}: {exc.what}\n")
        engine.close()
        return 2
    set_timer_slack(1)
    keep_freed_memory()
    set_thread_name(f"fabeng-{config.run_id}")
    try:
        if loop == "epoll":
            engine.run_epoll()
        else:
            trio.run(serve_until_signal, engine.serve)
    finally:
        try:
            engine.write_stats(final=True)
        except OSError as exc:
            sys.stderr.write(f"engine: stats: {exc}\n")
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
