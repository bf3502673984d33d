"""The switch core, sans-IO: packets and fabric time in, verdicts, packets and PFC frames out.

The switch's I/O process reads raw IPv4 packets from each port and calls
`receive(now_ns, in_port, pkt)`; a port task sends what `dequeue(now_ns, port)` returns once
`next_departure(port)` has passed, sends the PFC frames `take_pfc()` lists (at once, ahead of
data), reports the PFC frames it receives with `on_pfc`, and wakes the port tasks
`kick_ports()` names. Times are integer ns of fabric time, rates bits/s, sizes bytes.

**Forwarding.** Routes map a destination address to a sorted ECMP set of egress ports; a flow
(the 5-tuple, where the UDP source port is RoCE's entropy) always takes the same member. The
DSCP picks a class; classes are served strict-priority first (highest priority first), then by
deficit weighted round robin (quantum = weight x port MTU). ECT packets are CE-marked by RED
on the egress queue of their port and class, before they join it. A class may cap what it
queues per port (`ClassSpec.queue_bytes`), as the RoCE control class's small queue does.

**Buffer.** Every queued byte counts against the buffer: one pool of `buffer_bytes` ("shared"),
or `buffer_bytes // n_ports` per egress port ("per_port"). With PFC on, every (ingress port,
lossless priority) reserves `headroom_bytes(port) = 2 x rate x delay + 2 x MTU` of that ingress
link: what still arrives after we decide to pause (see `headroom_bytes`). We use 2 x BDP +
2 x MTU, the usual 802.1Qbb sizing, which is exact for our links when PFC frames leave at once;
the HPCC simulator reserves 3 x rate x delay. The reservations, summed, are cut from the buffer
(from each port's slice, by an equal share, in per_port mode), and so is every queue of its own
that a class has (`ClassSpec.queue_bytes` at every port); what is left is the pool.

**Admission.** A lossy packet is admitted while the pool holds it (`pool_used + len <= pool`),
or, in a class with a queue of its own, while that queue holds it (the pool does not count).
A lossless one is admitted while the whole buffer holds it (`used + len <= buffer`); when the
pool cannot, it is counted in its (ingress, priority)'s headroom and the ingress is paused.
Bytes leave headroom first when that ingress's packets depart. A lossless packet refused by
the full buffer is DROP_LOSSLESS: headroom was too small or the upstream ignored the pause.

**PFC.** An ingress (port, priority) pauses its upstream when its queued bytes reach
`xoff` (auto: `max(2 x MTU, (buffer - reserved) // (n_ports x n_lossless_priorities))`, so
every ingress can reach xoff at once within the shared pool) or when it had to use headroom; it
resumes when its bytes fall to `xon` (default `xoff - 2 x MTU`) and its headroom is empty.
Headroom can only fill while paused, and by at most what the link delivers after the pause,
so with an upstream that honours it no lossless byte is lost. With PFC off, lossless classes
are drop-tail like lossy ones (DROP_BUFFER). In per_port mode an incast into one egress
port draws every ingress's headroom from that port's slice alone, so there it is not a
guarantee: that is the cost of static partitioning this mode exists to show.

**Counters** are per (port, class) and per port (see `stats`); drops by the buffer count at the
egress port whose buffer was full, all other verdicts at the ingress port. Per (port, class)
the core also sums each sent packet's queueing delay (from `receive` to the `dequeue` that
starts its transmission) and keeps the longest, which is how long the RoCE control class's
CNPs and ACKs waited. Queue samples
`(now_ns, [queue bytes per port])` are taken at most once per sample interval; when 4000 are
held every other one goes and the interval doubles, so they always span the whole run. Each
sample also keeps the queue bytes per (port, class) (`class_samples`, the same times): one list
copy per sample interval, nothing on the per-packet path. The first `MAX_PAUSE_LOG` pauses
sent are logged with their time (`pause_log`), and the resume that ends each logged pause
(`resume_log`), so a run's pauses can be drawn as intervals.
"""

from __future__ import annotations

import ipaddress
import random
import struct
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final

from fabric.errors import FabricError
from fabric.switch.packet import IPPROTO_TCP, IPPROTO_UDP, append_int, decrement_ttl, parse
from fabric.wire.ip import set_ce

__all__ = [
    "BUFFER_MODES",
    "DROP_BUFFER",
    "DROP_LOSSLESS",
    "DROP_MALFORMED",
    "DROP_NO_ROUTE",
    "DROP_TTL",
    "DROPS",
    "LOCAL",
    "MAX_SAMPLES",
    "QUEUED",
    "ClassSpec",
    "PortSpec",
    "RedParams",
    "SwitchCore",
    "SwitchError",
    "SwitchSpec",
    "headroom_bytes",
]

# Verdicts of `SwitchCore.receive`.
QUEUED: Final = "queued"
LOCAL: Final = "local"  # addressed to the switch itself: the kernel's business
DROP_MALFORMED: Final = "drop_malformed"
DROP_TTL: Final = "drop_ttl"
DROP_NO_ROUTE: Final = "drop_no_route"
DROP_BUFFER: Final = "drop_buffer"
DROP_LOSSLESS: Final = "drop_lossless"
DROPS: Final = (DROP_MALFORMED, DROP_TTL, DROP_NO_ROUTE, DROP_BUFFER, DROP_LOSSLESS)

BUFFER_MODES: Final = ("shared", "per_port")
MAX_SAMPLES: Final = 4000
MAX_PAUSE_LOG: Final = 100_000  # pauses whose times are kept (about 30 B each)
NS_PER_S: Final = 1_000_000_000
BITS_NS: Final = 8 * NS_PER_S  # bytes -> bit-nanoseconds, the numerator of serialisation time
_M32: Final = 0xFFFFFFFF
_FLOW = struct.Struct("!IIHHB")
_FAST = struct.Struct("!BBHHHBBHIIHH")  # an option-less IPv4 header and the L4 ports
FLOW_CACHE_SIZE: Final = 1 << 16


class SwitchError(FabricError):
    """A switch spec is inconsistent (the message names the field and how to fix it)."""


def _ip(addr: int) -> str:
    try:
        return str(ipaddress.IPv4Address(addr))
    except (ValueError, TypeError):
        return repr(addr)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RedParams:
    """RED/ECN marking on one class's egress queue (q = its bytes before the packet).

    No mark while q <= kmin, probability pmax * (q - kmin) / (kmax - kmin) between, always once
    q >= kmax. Only ECT packets are marked; nothing is dropped by RED.
    """

    kmin_bytes: int
    kmax_bytes: int
    pmax: float

    def __post_init__(self) -> None:
        if not (_int(self.kmin_bytes) and _int(self.kmax_bytes)) or self.kmin_bytes < 0:
            raise SwitchError(f"RED: kmin_bytes and kmax_bytes must be integers >= 0, got "
                              f"{self.kmin_bytes!r} and {self.kmax_bytes!r}")
        if self.kmin_bytes > self.kmax_bytes:
            raise SwitchError(f"RED: kmin_bytes {self.kmin_bytes} > kmax_bytes "
                              f"{self.kmax_bytes}; kmin must not exceed kmax")
        if not isinstance(self.pmax, int | float) or not 0.0 <= self.pmax <= 1.0:
            raise SwitchError(f"RED: pmax {self.pmax!r} is outside [0, 1]")


@dataclass(frozen=True)
class ClassSpec:
    """A traffic class: the packets with DSCP `dscp`, served at 802.1p `priority` (0..7).

    `lossless` classes are protected by PFC; `strict` classes are served before all others
    (highest priority first); the rest share by deficit round robin in proportion to `weight`.
    `queue_bytes` gives a lossy class a queue of its own at every egress port: that many bytes
    of the buffer are reserved for it (carved out like PFC headroom, so the shared pool that
    data fills can never starve it), and it is dropped at the tail beyond them (None: it
    shares the pool). The RoCE control class's small queue: CNPs and ACKs are never lost to a
    buffer full of data, and a strict class cannot hold back more than that from the others.
    """

    name: str
    dscp: int
    priority: int
    lossless: bool = False
    weight: int = 1
    strict: bool = False
    red: RedParams | None = None
    queue_bytes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SwitchError(f"class name must be a non-empty string, got {self.name!r}")
        if not _int(self.dscp) or not 0 <= self.dscp <= 63:
            raise SwitchError(f"class {self.name!r}: dscp {self.dscp!r} is outside 0..63")
        if not _int(self.priority) or not 0 <= self.priority <= 7:
            raise SwitchError(f"class {self.name!r}: priority {self.priority!r} is outside "
                              f"0..7 (the 802.1p priorities PFC can pause)")
        if not _int(self.weight) or self.weight < 1:
            raise SwitchError(f"class {self.name!r}: weight {self.weight!r} must be an "
                              f"integer >= 1")
        if self.red is not None and not isinstance(self.red, RedParams):
            raise SwitchError(f"class {self.name!r}: red must be a RedParams or None")
        if self.queue_bytes is not None and (not _int(self.queue_bytes)
                                             or self.queue_bytes <= 0):
            raise SwitchError(f"class {self.name!r}: queue_bytes {self.queue_bytes!r} must be "
                              f"a positive integer or None")
        if self.queue_bytes is not None and self.lossless:
            raise SwitchError(f"class {self.name!r}: a lossless class cannot have a queue "
                              f"limit (PFC, not a tail drop, bounds it); drop queue_bytes")


@dataclass(frozen=True)
class PortSpec:
    """A point-to-point L3 port: its link's rate, one-way delay and MTU, and the peer's name."""

    name: str
    rate_bps: int
    delay_ns: int
    mtu: int
    peer: str = ""

    def __post_init__(self) -> None:
        if not _int(self.rate_bps) or self.rate_bps <= 0:
            raise SwitchError(f"port {self.name!r}: rate_bps must be a positive integer, got "
                              f"{self.rate_bps!r}")
        if not _int(self.delay_ns) or self.delay_ns < 0:
            raise SwitchError(f"port {self.name!r}: delay_ns must be an integer >= 0, got "
                              f"{self.delay_ns!r}")
        if not _int(self.mtu) or self.mtu <= 0:
            raise SwitchError(f"port {self.name!r}: mtu must be a positive integer, got "
                              f"{self.mtu!r}")


def headroom_bytes(port: PortSpec) -> int:
    """PFC headroom one (ingress port, lossless priority) reserves: 2 x BDP + 2 x MTU.

    We decide to pause when a packet has arrived. The pause takes one link delay to reach the
    upstream, and what the upstream sent meanwhile one more to arrive (2 x rate x delay); add
    the packet it is sending when the pause lands and the packet that triggered the pause,
    which may itself have gone into headroom (2 x MTU). This holds when PFC frames leave at
    once (the I/O layer sends them ahead of data) and `delay_ns` includes any latency the I/O
    layer adds to the link.
    """
    bdp = -(-port.rate_bps * port.delay_ns // BITS_NS)
    return 2 * bdp + 2 * port.mtu


@dataclass(frozen=True)
class SwitchSpec:
    """Everything a `SwitchCore` needs; validated on construction (raises `SwitchError`).

    Packets whose DSCP matches no class go to the first class with priority 0, else to
    `classes[0]`. `routes` maps a destination IPv4 address (int) to its ECMP set of egress
    port indices. `xoff_bytes`/`xon_bytes` of None are derived (see the module docstring).
    """

    name: str
    ports: tuple[PortSpec, ...]
    classes: tuple[ClassSpec, ...]
    routes: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    local: frozenset[int] = frozenset()
    buffer_bytes: int = 4 << 20
    buffer_mode: str = "shared"
    pfc: bool = True
    xoff_bytes: int | None = None
    xon_bytes: int | None = None
    int_enabled: bool = False
    ecmp_seed: int = 0
    red_seed: int = 1
    sample_interval_ns: int = 1000

    def __post_init__(self) -> None:
        who = f"switch {self.name!r}"
        if not self.ports:
            raise SwitchError(f"{who}: has no ports")
        if not self.classes:
            raise SwitchError(f"{who}: has no classes; define at least one")
        names = [p.name for p in self.ports]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SwitchError(f"{who}: port name(s) {', '.join(dup)} used twice")
        seen_name: set[str] = set()
        by_dscp: dict[int, str] = {}
        by_prio: dict[int, ClassSpec] = {}
        for c in self.classes:
            if c.name in seen_name:
                raise SwitchError(f"{who}: class name {c.name!r} used twice")
            seen_name.add(c.name)
            if c.dscp in by_dscp:
                raise SwitchError(f"{who}: classes {by_dscp[c.dscp]!r} and {c.name!r} both "
                                  f"use dscp {c.dscp}; give each class its own DSCP")
            by_dscp[c.dscp] = c.name
            other = by_prio.setdefault(c.priority, c)
            if other.lossless != c.lossless:
                raise SwitchError(f"{who}: classes {other.name!r} and {c.name!r} share priority "
                                  f"{c.priority} but only one is lossless; PFC pauses a whole "
                                  f"priority, so make both lossless or give them different "
                                  f"priorities")
        if self.buffer_mode not in BUFFER_MODES:
            raise SwitchError(f"{who}: unknown buffer_mode {self.buffer_mode!r}; use "
                              f"'shared' or 'per_port'")
        if not _int(self.buffer_bytes) or self.buffer_bytes <= 0:
            raise SwitchError(f"{who}: buffer_bytes must be a positive integer, got "
                              f"{self.buffer_bytes!r}")
        if not _int(self.sample_interval_ns) or self.sample_interval_ns <= 0:
            raise SwitchError(f"{who}: sample_interval_ns must be a positive integer")
        n = len(self.ports)
        for dst, members in self.routes.items():
            if not members:
                raise SwitchError(f"{who}: route to {_ip(dst)} has no egress port")
            for i in members:
                if not _int(i) or not 0 <= i < n:
                    raise SwitchError(f"{who}: route to {_ip(dst)} uses port {i!r}, but the "
                                      f"switch has ports 0..{n - 1}")
        for label, value in (("xoff_bytes", self.xoff_bytes), ("xon_bytes", self.xon_bytes)):
            if value is not None and (not _int(value) or value < 0):
                raise SwitchError(f"{who}: {label} must be an integer >= 0 or None, got "
                                  f"{value!r}")
        reserved, own = self.reserved_headroom_bytes(), self.reserved_class_bytes()
        share, cap = self._reserved_share(reserved + own), self.partition_bytes()
        if share >= cap:
            where = "buffer_bytes" if self.buffer_mode == "shared" else "its per-port slice"
            queues = f"class queues ({own} bytes: queue_bytes x {n} ports)"
            if not own:
                raise SwitchError(
                    f"{who}: PFC headroom of {reserved} bytes ({n} ports x "
                    f"{len(self.lossless_priorities())} lossless priorities, 2 x rate x delay + "
                    f"2 x MTU each) leaves no room in {where} ({cap} bytes); raise "
                    f"buffer_bytes or use fewer lossless priorities")
            if not reserved:
                raise SwitchError(f"{who}: {queues} leave no room in {where} ({cap} bytes); "
                                  "raise buffer_bytes or give classes smaller queues")
            raise SwitchError(f"{who}: PFC headroom ({reserved} bytes) and {queues} leave no "
                              f"room in {where} ({cap} bytes); raise buffer_bytes, use fewer "
                              "lossless priorities or give classes smaller queues")
        for i in range(n):
            xoff, xon = self.xoff_for(i), self.xon_for(i)
            if xon > xoff:
                raise SwitchError(f"{who}: port {self.ports[i].name!r}: xon_bytes {xon} > "
                                  f"xoff_bytes {xoff}; resume must come at or below the pause "
                                  f"threshold")

    # -- derived sizes (also what `SwitchCore.stats` reports) ------------------------------------

    def lossless_priorities(self) -> tuple[int, ...]:
        """The distinct priorities of lossless classes, ascending."""
        return tuple(sorted({c.priority for c in self.classes if c.lossless}))

    def partition_bytes(self) -> int:
        """The hard limit of one buffer partition: the whole buffer, or one port's slice."""
        if self.buffer_mode == "per_port":
            return self.buffer_bytes // len(self.ports)
        return self.buffer_bytes

    def reserved_headroom_bytes(self) -> int:
        """PFC headroom reserved over the whole switch (0 without PFC or lossless classes)."""
        if not self.pfc:
            return 0
        n_lossless = len(self.lossless_priorities())
        return sum(headroom_bytes(p) for p in self.ports) * n_lossless

    def reserved_class_bytes(self) -> int:
        """What the classes with a queue of their own (`queue_bytes`) reserve over the whole
        switch: each class its queue at every port."""
        per_port = sum(c.queue_bytes for c in self.classes if c.queue_bytes is not None)
        return per_port * len(self.ports)

    def _reserved_share(self, reserved: int) -> int:
        if self.buffer_mode == "per_port":
            return -(-reserved // len(self.ports))
        return reserved

    def pool_bytes(self) -> int:
        """What one partition keeps for everything but headroom and the classes' own queues
        (the limit of lossy packets in the pool)."""
        return self.partition_bytes() - self._reserved_share(
            self.reserved_headroom_bytes() + self.reserved_class_bytes())

    def xoff_for(self, port: int) -> int:
        """Bytes queued from ingress `port` in one lossless priority that trigger a pause."""
        if self.xoff_bytes is not None:
            return self.xoff_bytes
        n_lossless = max(1, len(self.lossless_priorities()))
        pool = self.buffer_bytes - self.reserved_headroom_bytes() - self.reserved_class_bytes()
        return max(2 * self.ports[port].mtu, pool // (len(self.ports) * n_lossless))

    def xon_for(self, port: int) -> int:
        """Bytes queued from ingress `port` in one lossless priority at or below which a
        pause is lifted."""
        if self.xon_bytes is not None:
            return self.xon_bytes
        return max(0, self.xoff_for(port) - 2 * self.ports[port].mtu)


class SwitchCore:
    """One switch's forwarding, buffering, scheduling, ECN and PFC state (see module docstring).

    The per-packet methods (`receive`, `dequeue`) allocate nothing but the queue entry and use
    flat lists indexed `port * n_classes + class` or `port * 8 + priority`, because the I/O
    process must sustain tens of thousands of packets per second per core in CPython.

    Read-only attributes: `spec`; per port `headroom`, `xoff`, `xon` (bytes); `reserved_bytes`
    (all headroom); `samples`, a list of `(now_ns, [queue bytes per port])`; `class_samples`,
    at the same times `(now_ns, [queue bytes per port * n_classes + class])`; `pause_log` and
    `resume_log`, `(now_ns, ingress port, priority)` per pause sent and per logged pause lifted.
    """

    def __init__(self, spec: SwitchSpec) -> None:
        self.spec = spec
        ports, classes = spec.ports, spec.classes
        n, k = len(ports), len(classes)
        self._nports = n
        self._nclasses = k

        # classification: DSCP -> class index, and per-class properties as flat lists
        default = next((i for i, c in enumerate(classes) if c.priority == 0), 0)
        table = [default] * 64
        for i, c in enumerate(classes):
            table[c.dscp] = i
        self._dscp_class = table
        self._cls_prio = [c.priority for c in classes]
        self._cls_lossless = [bool(c.lossless and spec.pfc) for c in classes]
        self._cls_cap = [c.queue_bytes for c in classes]  # None: no per-class limit
        self._cls_red: list[tuple[int, int, float] | None] = []
        for c in classes:
            if c.red is None:
                self._cls_red.append(None)
            else:
                r = c.red
                span = r.kmax_bytes - r.kmin_bytes
                self._cls_red.append((r.kmin_bytes, r.kmax_bytes, r.pmax / span if span else 0.0))
        self._strict_order = sorted((i for i, c in enumerate(classes) if c.strict),
                                    key=lambda i: (-classes[i].priority, i))
        self._strict_mask = sum(1 << i for i in self._strict_order)
        self._wrr = [i for i, c in enumerate(classes) if not c.strict]
        self._prio_cls_mask = [sum(1 << i for i, c in enumerate(classes) if c.priority == p)
                               for p in range(8)]

        # forwarding
        self._routes = {dst: tuple(sorted(set(m))) for dst, m in spec.routes.items()}
        self._local = frozenset(spec.local)
        self._seed = spec.ecmp_seed & _M32
        self._flow_cache: dict[bytes, int] = {}

        # buffer partitions: one (shared) or one per egress port; part = egress * _per_port
        self._per_port = 1 if spec.buffer_mode == "per_port" else 0
        parts = n if self._per_port else 1
        self.headroom = tuple(headroom_bytes(p) for p in ports)
        self.xoff = tuple(spec.xoff_for(i) for i in range(n))
        self.xon = tuple(spec.xon_for(i) for i in range(n))
        self.reserved_bytes = spec.reserved_headroom_bytes()
        self._cap = [spec.partition_bytes()] * parts
        self._pool = [spec.pool_bytes()] * parts
        self._used = [0] * parts
        self._hused = [0] * parts  # bytes of `_used` that sit in headroom
        self._rused = [0] * parts  # bytes of `_used` in the classes' own queues
        self._max_used = 0

        # ingress, per (in_port, priority): lossless bytes queued, headroom, pausing upstream
        self._ing = [0] * (n * 8)
        self._hd_ip = [0] * (n * 8)
        self._hd = [0] * (parts * n * 8)  # per (partition, in_port, priority)
        self._pausing = [False] * (n * 8)
        self._pausing_since = [0] * (n * 8)
        self._pausing_ns = [0] * (n * 8)
        self._pauses_sent = [0] * (n * 8)
        self._pfc_out: list[tuple[int, int, bool]] = []

        # egress, per port
        # each entry: (packet, ingress port, when it was queued)
        self._queues: list[list[deque[tuple[bytearray, int, int]]]] = [
            [deque() for _ in range(k)] for _ in range(n)]
        self._nonempty = [0] * n  # bit c set: class c has packets
        self._paused_prio = [0] * n  # bit p set: the neighbour paused priority p
        self._paused_cls = [0] * n  # the same as a class mask
        self._paused_since = [0] * (n * 8)
        self._paused_ns = [0] * (n * 8)
        self._pauses_recv = [0] * (n * 8)
        self._rate = [p.rate_bps for p in ports]
        self._busy = [0] * n
        self._rem = [0] * n  # bit-ns not yet a whole ns, carried so rounding never drifts
        self._quantum = [[c.weight * p.mtu for c in classes] for p in ports]
        self._deficit = [[0] * k for _ in range(n)]
        self._wrr_cur = [0] * n
        self._wrr_granted = [False] * n
        self._kick: set[int] = set()

        # counters
        self._qbytes = [0] * (n * k)
        self._max_qbytes = [0] * (n * k)
        self._rx_packets = [0] * (n * k)
        self._rx_bytes = [0] * (n * k)
        self._tx_packets = [0] * (n * k)
        self._tx_bytes = [0] * (n * k)
        self._marks = [0] * (n * k)
        self._wait_ns = [0] * (n * k)  # summed queueing delay of the packets sent
        self._max_wait_ns = [0] * (n * k)
        self._class_drops: dict[tuple[int, int], dict[str, int]] = {}
        self._drops = dict.fromkeys(DROPS, 0)
        self._malformed = [0] * n
        self._local_packets = [0] * n
        self._port_q = [0] * n
        self._port_max_q = [0] * n
        self._port_tx = [0] * n
        self._q_area = [0] * n  # integral of queue bytes over time
        self._q_last = [0] * n
        self._t0: int | None = None
        self._int = spec.int_enabled
        self._random = random.Random(spec.red_seed).random
        self._sample_interval = spec.sample_interval_ns
        self._next_sample = 0
        self.samples: list[tuple[int, list[int]]] = []
        # at the same times: queue bytes per (port, class), flat as `port * n_classes + class`
        self.class_samples: list[tuple[int, list[int]]] = []
        # when each pause was sent: (now_ns, ingress port, priority), the first MAX_PAUSE_LOG
        self.pause_log: list[tuple[int, int, int]] = []
        # when each logged pause was lifted: (now_ns, ingress port, priority)
        self.resume_log: list[tuple[int, int, int]] = []
        self._pause_logged = [False] * (n * 8)  # per (in_port, priority): its pause is logged

    # -- the per-packet path -------------------------------------------------------------------

    def receive(self, now_ns: int, in_port: int, pkt: bytearray) -> str:
        """Take a packet that arrived on `in_port`; return its verdict (QUEUED, LOCAL or a
        DROP_*). A QUEUED packet is owned by the switch and comes back from `dequeue`.

        PFC datagrams are addressed to the switch (LOCAL): the I/O layer reads them from its
        own UDP socket and reports them with `on_pfc`."""
        if now_ns >= self._next_sample:
            self._sample(now_ns)
        length = len(pkt)
        if length >= 24 and pkt[0] == 0x45:
            # IPv4 without options, the common case: `packet.parse` inlined, ports read blindly
            _, tos, total, _, frag, ttl, proto, _, src, dst, sport, dport = _FAST.unpack_from(pkt)
            if total > length or total < 20:
                return self._malformed_packet(in_port)
            if (proto != IPPROTO_UDP and proto != IPPROTO_TCP) or frag & 0x1FFF or total < 24:
                sport = dport = 0
        else:
            h = parse(pkt)
            if h is None:
                return self._malformed_packet(in_port)
            dscp, ecn, ttl, proto, src, dst, sport, dport, _, _ = h
            tos = dscp << 2 | ecn
        c = self._dscp_class[tos >> 2]
        nc = self._nclasses
        ix = in_port * nc + c
        self._rx_packets[ix] += 1
        self._rx_bytes[ix] += length
        if dst in self._local:
            self._local_packets[in_port] += 1
            return LOCAL
        if ttl <= 1:
            return self._drop(DROP_TTL, in_port, c)
        members = self._routes.get(dst)
        if members is None:
            return self._drop(DROP_NO_ROUTE, in_port, c)
        if len(members) == 1:
            out = members[0]
        else:
            key = _FLOW.pack(src, dst, sport, dport, proto)
            cached = self._flow_cache.get(key)
            out = self._ecmp(key, members) if cached is None else cached
        # admission
        part = out * self._per_port
        used = self._used[part]
        lossless = self._cls_lossless[c]
        into_headroom = False
        qi = out * nc + c
        q = self._qbytes[qi]
        own = self._cls_cap[c]
        if lossless:
            prio = self._cls_prio[c]
            ii = in_port * 8 + prio
            if used + length > self._cap[part]:
                if not self._pausing[ii]:
                    self._start_pause(now_ns, in_port, prio, ii)
                return self._drop(DROP_LOSSLESS, out, c)
            into_headroom = (used - self._hused[part] - self._rused[part] + length
                             > self._pool[part])
        elif own is not None:  # a queue of its own, reserved: never the pool
            if q + length > own or used + length > self._cap[part]:
                return self._drop(DROP_BUFFER, out, c)
            self._rused[part] += length
        elif (used - self._hused[part] - self._rused[part] + length > self._pool[part]
              or used + length > self._cap[part]):
            return self._drop(DROP_BUFFER, out, c)

        red = self._cls_red[c]
        if red is not None and (tos & 3 == 1 or tos & 3 == 2):
            kmin, kmax, slope = red
            if q >= kmax or (q > kmin and self._random() < slope * (q - kmin)):
                set_ce(pkt)
                self._marks[qi] += 1
        decrement_ttl(pkt)

        if lossless:
            b = self._ing[ii] + length
            self._ing[ii] = b
            if into_headroom:
                self._hused[part] += length
                self._hd[(part * self._nports + in_port) * 8 + prio] += length
                self._hd_ip[ii] += length
            if (into_headroom or b >= self.xoff[in_port]) and not self._pausing[ii]:
                self._start_pause(now_ns, in_port, prio, ii)

        used += length
        self._used[part] = used
        if used > self._max_used:
            self._max_used = used  # of one partition (the whole buffer when shared)
        self._queues[out][c].append((pkt, in_port, now_ns))
        q += length
        self._qbytes[qi] = q
        if q > self._max_qbytes[qi]:
            self._max_qbytes[qi] = q
        last = self._q_last[out]
        pq = self._port_q[out]
        if now_ns > last:
            self._q_area[out] += pq * (now_ns - last)
            self._q_last[out] = now_ns
        pq += length
        self._port_q[out] = pq
        if pq > self._port_max_q[out]:
            self._port_max_q[out] = pq
        self._nonempty[out] |= 1 << c
        self._kick.add(out)
        return QUEUED

    def next_departure(self, port: int) -> int | None:
        """When `port` can start its next packet (may be in the past), or None when it has no
        packet it may send (all its queues are empty or paused)."""
        if self._nonempty[port] & ~self._paused_cls[port]:
            return self._busy[port]
        return None

    def dequeue(self, now_ns: int, port: int) -> bytearray | None:
        """The packet `port` sends now, or None when nothing is eligible.

        Strict classes first (highest priority first), then deficit round robin among the
        others; classes the neighbour paused are skipped. The port is then busy for the
        packet's serialisation time after `max(now_ns, busy_until)`.
        """
        elig = self._nonempty[port] & ~self._paused_cls[port]
        if not elig:
            return None
        if now_ns >= self._next_sample:
            self._sample(now_ns)
        queues = self._queues[port]
        if elig & self._strict_mask:
            for c in self._strict_order:
                if elig >> c & 1:
                    break
            q = queues[c]
            pkt, in_port, t_in = q.popleft()
            length = len(pkt)
            if not q:
                self._nonempty[port] &= ~(1 << c)
        else:
            # deficit round robin (Shreedhar & Varghese): a class earns its quantum once per
            # visit and sends while its head packet fits; an emptied class forfeits the rest
            wrr = self._wrr
            cur = self._wrr_cur[port]
            granted = self._wrr_granted[port]
            deficit = self._deficit[port]
            while True:
                c = wrr[cur]
                if elig >> c & 1:
                    if not granted:
                        deficit[c] += self._quantum[port][c]
                        granted = True
                    if len(queues[c][0][0]) <= deficit[c]:
                        break
                elif not queues[c]:
                    deficit[c] = 0
                cur += 1
                if cur == len(wrr):
                    cur = 0
                granted = False
            q = queues[c]
            pkt, in_port, t_in = q.popleft()
            length = len(pkt)
            if q:
                deficit[c] -= length
            else:
                deficit[c] = 0
                self._nonempty[port] &= ~(1 << c)
                cur += 1
                if cur == len(wrr):
                    cur = 0
                granted = False
            self._wrr_cur[port] = cur
            self._wrr_granted[port] = granted

        qi = port * self._nclasses + c
        self._qbytes[qi] -= length
        wait = now_ns - t_in  # queueing delay: queued until its transmission starts
        if wait > 0:
            self._wait_ns[qi] += wait
            if wait > self._max_wait_ns[qi]:
                self._max_wait_ns[qi] = wait
        last = self._q_last[port]
        pq = self._port_q[port]
        if now_ns > last:
            self._q_area[port] += pq * (now_ns - last)
            self._q_last[port] = now_ns
        pq -= length
        self._port_q[port] = pq
        part = port * self._per_port
        self._used[part] -= length
        if self._cls_cap[c] is not None:
            self._rused[part] -= length
        if self._cls_lossless[c]:
            prio = self._cls_prio[c]
            ii = in_port * 8 + prio
            b = self._ing[ii] - length
            self._ing[ii] = b
            if self._hd_ip[ii]:
                hk = (part * self._nports + in_port) * 8 + prio
                h = self._hd[hk]
                if h:
                    take = length if length < h else h
                    self._hd[hk] = h - take
                    self._hd_ip[ii] -= take
                    self._hused[part] -= take
            if self._pausing[ii] and b <= self.xon[in_port] and not self._hd_ip[ii]:
                self._end_pause(now_ns, in_port, prio, ii)

        busy = self._busy[port]
        if now_ns > busy:
            busy = now_ns
            rem = 0
        else:
            rem = self._rem[port]
        rate = self._rate[port]
        if self._int and pkt[9] == IPPROTO_UDP:
            # HPCC's convention: tx bytes before this packet, queue without it
            pkt = append_int(pkt, rate_bps=rate, ts_ns=busy, tx_bytes=self._port_tx[port],
                             qlen_bytes=pq)
            length = len(pkt)
        d, rem = divmod(rem + length * BITS_NS, rate)
        self._busy[port] = busy + d
        self._rem[port] = rem
        self._tx_packets[qi] += 1
        self._tx_bytes[qi] += length
        self._port_tx[port] += length
        return pkt

    # -- PFC -----------------------------------------------------------------------------------

    def take_pfc(self) -> list[tuple[int, int, bool]]:
        """PFC frames to send, as `(port, priority, pause)`, each out of `port` to the upstream
        neighbour (payload: `fabric.switch.pfc.pack_pfc`); cleared when taken. Send them at
        once, ahead of queued data: `headroom_bytes` assumes they do not wait. A pause can
        follow any `receive` (even one that dropped the packet), a resume any `dequeue`."""
        out = self._pfc_out
        self._pfc_out = []
        return out

    def on_pfc(self, now_ns: int, port: int, priority: int, pause: bool) -> None:
        """The neighbour on `port` paused (or resumed) our egress for `priority`."""
        if not 0 <= priority <= 7:
            raise ValueError(f"PFC priority must be 0..7, got {priority!r}")
        pi = port * 8 + priority
        bit = 1 << priority
        paused = self._paused_prio[port]
        if pause:
            self._pauses_recv[pi] += 1
            if paused & bit:
                return
            self._paused_since[pi] = now_ns
            paused |= bit
        else:
            if not paused & bit:
                return
            self._paused_ns[pi] += max(0, now_ns - self._paused_since[pi])
            paused &= ~bit
        self._paused_prio[port] = paused
        mask = 0
        for p in range(8):
            if paused >> p & 1:
                mask |= self._prio_cls_mask[p]
        self._paused_cls[port] = mask
        self._kick.add(port)

    def kick_ports(self) -> set[int]:
        """Ports whose `next_departure` may have changed since the last call (a packet queued,
        a pause or resume received); cleared when taken."""
        out = self._kick
        self._kick = set()
        return out

    def _start_pause(self, now_ns: int, in_port: int, prio: int, ii: int) -> None:
        self._pausing[ii] = True
        self._pausing_since[ii] = now_ns
        self._pauses_sent[ii] += 1
        self._pfc_out.append((in_port, prio, True))
        if len(self.pause_log) < MAX_PAUSE_LOG:
            self.pause_log.append((now_ns, in_port, prio))
            self._pause_logged[ii] = True

    def _end_pause(self, now_ns: int, in_port: int, prio: int, ii: int) -> None:
        self._pausing[ii] = False
        self._pausing_ns[ii] += max(0, now_ns - self._pausing_since[ii])
        self._pfc_out.append((in_port, prio, False))
        if self._pause_logged[ii]:  # only the ends of logged pauses: each pairs with one
            self._pause_logged[ii] = False
            self.resume_log.append((now_ns, in_port, prio))

    # -- bookkeeping ---------------------------------------------------------------------------

    def _ecmp(self, key: bytes, members: tuple[int, ...]) -> int:
        # crc32 is linear over GF(2): with the seed alone, switches with different seeds would
        # split flows identically (or exactly inverted) and polarise a multi-tier fabric;
        # murmur3's finaliser makes each seed's choice independent. The result is cached per
        # flow (bounded), as hashing costs more than a dict lookup.
        x = zlib.crc32(key, self._seed)
        x ^= x >> 16
        x = (x * 0x85EBCA6B) & _M32
        x ^= x >> 13
        x = (x * 0xC2B2AE35) & _M32
        x ^= x >> 16
        out = members[x % len(members)]
        cache = self._flow_cache
        if len(cache) >= FLOW_CACHE_SIZE:
            cache.clear()
        cache[key] = out
        return out

    def set_routes(self, routes: Mapping[int, tuple[int, ...]]) -> None:
        """Replace the forwarding table (routing reconverged after a link changed): flows
        hash again over the new ECMP sets; packets already queued leave where they are."""
        self._routes = {dst: tuple(sorted(set(m))) for dst, m in routes.items()}
        self._flow_cache.clear()

    def ecmp_port(self, src: int, dst: int, proto: int, sport: int, dport: int) -> int | None:
        """The egress port a flow to `dst` takes (None without a route)."""
        members = self._routes.get(dst)
        if members is None:
            return None
        if len(members) == 1:
            return members[0]
        return self._ecmp(_FLOW.pack(src, dst, sport, dport, proto), members)

    def _malformed_packet(self, in_port: int) -> str:
        self._malformed[in_port] += 1
        self._drops[DROP_MALFORMED] += 1
        return DROP_MALFORMED

    def _drop(self, verdict: str, port: int, c: int) -> str:
        self._drops[verdict] += 1
        per = self._class_drops.setdefault((port, c), {})
        per[verdict] = per.get(verdict, 0) + 1
        return verdict

    def _sample(self, now_ns: int) -> None:
        if self._t0 is None:
            self._t0 = now_ns
        if len(self.samples) >= MAX_SAMPLES:
            self.samples = self.samples[::2]
            self.class_samples = self.class_samples[::2]
            self._sample_interval *= 2
        self.samples.append((now_ns, self._port_q[:]))
        self.class_samples.append((now_ns, self._qbytes[:]))
        self._next_sample = now_ns + self._sample_interval

    # -- inspection ----------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes queued in the whole switch."""
        return sum(self._used)

    def queue_bytes(self, port: int, class_name: str | None = None) -> int:
        """Bytes queued for egress `port`, in one class or in all."""
        if class_name is None:
            return self._port_q[port]
        return self._qbytes[port * self._nclasses + self._class_index(class_name)]

    def ingress_bytes(self, port: int, priority: int) -> int:
        """Lossless bytes queued that arrived on `port` at `priority` (what PFC watches)."""
        return self._ing[port * 8 + priority]

    def headroom_used_bytes(self, port: int, priority: int) -> int:
        """Bytes from `port` at `priority` admitted beyond the pool, into that ingress's
        headroom (at most `headroom[port]` while the upstream honours pauses)."""
        return self._hd_ip[port * 8 + priority]

    def pausing(self, port: int, priority: int) -> bool:
        """Whether we hold the upstream on `port` paused for `priority`."""
        return self._pausing[port * 8 + priority]

    def paused(self, port: int, priority: int) -> bool:
        """Whether the neighbour on `port` holds our egress paused for `priority`."""
        return bool(self._paused_prio[port] >> priority & 1)

    def _class_index(self, name: str) -> int:
        for i, c in enumerate(self.spec.classes):
            if c.name == name:
                return i
        raise KeyError(f"switch {self.spec.name!r} has no class {name!r}")

    def stats(self, now_ns: int) -> dict[str, Any]:
        """JSON-able counters up to `now_ns` (pause times include pauses still in force).

        Per class, `paused_ns`/`pausing_ns`/`pauses_*` are those of the class's priority; per
        port they are summed over priorities (so they can exceed the elapsed time).
        """
        spec = self.spec
        nc = self._nclasses
        ports = []
        for p, ps in enumerate(spec.ports):
            classes: dict[str, Any] = {}
            prio_seen: set[int] = set()
            paused_sum = pausing_sum = sent_sum = recv_sum = 0
            for c, cs in enumerate(spec.classes):
                ix = p * nc + c
                pi = p * 8 + cs.priority
                paused_ns = self._paused_ns[pi]
                if self._paused_prio[p] >> cs.priority & 1:
                    paused_ns += max(0, now_ns - self._paused_since[pi])
                pausing_ns = self._pausing_ns[pi]
                if self._pausing[pi]:
                    pausing_ns += max(0, now_ns - self._pausing_since[pi])
                classes[cs.name] = {
                    "rx_packets": self._rx_packets[ix],
                    "rx_bytes": self._rx_bytes[ix],
                    "tx_packets": self._tx_packets[ix],
                    "tx_bytes": self._tx_bytes[ix],
                    "drops": dict(self._class_drops.get((p, c), {})),
                    "ecn_marks": self._marks[ix],
                    "queue_bytes": self._qbytes[ix],
                    "max_queue_bytes": self._max_qbytes[ix],
                    "wait_ns": self._wait_ns[ix],
                    "max_wait_ns": self._max_wait_ns[ix],
                    "pauses_sent": self._pauses_sent[pi],
                    "pauses_received": self._pauses_recv[pi],
                    "paused_ns": paused_ns,
                    "pausing_ns": pausing_ns,
                }
                if cs.priority not in prio_seen:
                    prio_seen.add(cs.priority)
                    paused_sum += paused_ns
                    pausing_sum += pausing_ns
                    sent_sum += self._pauses_sent[pi]
                    recv_sum += self._pauses_recv[pi]
            ports.append({
                "name": ps.name,
                "peer": ps.peer,
                "rate_bps": ps.rate_bps,
                "headroom_bytes": self.headroom[p],
                "xoff_bytes": self.xoff[p],
                "xon_bytes": self.xon[p],
                "classes": classes,
                "queue_bytes": self._port_q[p],
                "max_queue_bytes": self._port_max_q[p],
                "mean_queue_bytes": self._mean_queue(p, now_ns),
                "tx_bytes": self._port_tx[p],
                "malformed": self._malformed[p],
                "local_packets": self._local_packets[p],
                "paused_ns": paused_sum,
                "pausing_ns": pausing_sum,
                "pauses_sent": sent_sum,
                "pauses_received": recv_sum,
            })
        return {
            "name": spec.name,
            "ports": ports,
            "drops": dict(self._drops),
            # the sampled lists themselves, not copies: the core never changes one once
            # taken, and a caller must not either (copying 4,000 samples of 8 ports and their
            # class columns took ~3 ms of a switch whose packets wait meanwhile)
            "samples": [[t, q] for t, q in self.samples],
            "class_priorities": {c.name: c.priority for c in spec.classes},
            "class_samples": self._class_samples_stats(),
            "pause_log": [list(x) for x in self.pause_log],
            "resume_log": [list(x) for x in self.resume_log],
            "sample_interval_ns": self._sample_interval,
            "buffer": {
                "mode": spec.buffer_mode,
                "bytes": spec.buffer_bytes,
                "partition_bytes": spec.partition_bytes(),
                "pool_bytes": spec.pool_bytes(),
                "reserved_headroom_bytes": self.reserved_bytes,
                "reserved_class_bytes": spec.reserved_class_bytes(),
                "used_bytes": sum(self._used),
                "headroom_used_bytes": sum(self._hused),
                "max_partition_used_bytes": self._max_used,
                "pfc": spec.pfc,
                "lossless_priorities": list(spec.lossless_priorities()) if spec.pfc else [],
            },
        }

    def _class_samples_stats(self) -> dict[str, Any]:
        """`class_samples` for `stats`: only the (port, class) queues that ever held a byte,
        named in `columns` as [port name, class name]; `rows` are [now_ns, [bytes per column]].
        A switch with many ports and classes writes what its traffic used, not every zero."""
        nc = self._nclasses
        cols = [ix for ix, peak in enumerate(self._max_qbytes) if peak]
        ports, classes = self.spec.ports, self.spec.classes
        if len(cols) == len(self._max_qbytes):  # every queue used: the sampled lists (`stats`)
            rows = [[t, q] for t, q in self.class_samples]
        elif len(cols) > 1:  # the used columns, picked in C
            pick = itemgetter(*cols)
            rows = [[t, list(pick(q))] for t, q in self.class_samples]
        else:
            rows = [[t, [q[ix] for ix in cols]] for t, q in self.class_samples]
        return {
            "columns": [[ports[ix // nc].name, classes[ix % nc].name] for ix in cols],
            "rows": rows,
        }

    def _mean_queue(self, port: int, now_ns: int) -> float:
        t0 = self._t0
        if t0 is None or now_ns <= t0:
            return float(self._port_q[port])
        area = self._q_area[port] + self._port_q[port] * max(0, now_ns - self._q_last[port])
        return area / (now_ns - t0)
