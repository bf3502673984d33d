"""The elements of a parsed, validated topology file (nodes, links and their shapes, traffic
classes, switch settings): frozen dataclasses in our own integer units. The whole file is a
`fabric.topology.document.Topology`, which holds these and each section's spec.

Everything here is in fabric time (the figures the file states). `time_scale` is applied only
when a plan turns a topology into kernel or engine settings (see `Shape.scaled`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

NODE_KINDS = ("host", "switch")


@dataclass(frozen=True)
class Shape:
    """One direction of a link, in integer units.

    rate_bps: bits per second, None = unshaped (as fast as the host moves packets).
    delay_ns / jitter_ns: one-way propagation delay and its spread (netem semantics: each packet
        gets delay + uniform(-jitter, +jitter), clipped at 0).
    loss_ppm: random loss, parts per million (10_000 = 1%).
    corrupt_ppm / duplicate_ppm / reorder_ppm: netem's `corrupt`, `duplicate` and `reorder`
        probabilities in ppm: flip one random bit of a packet, deliver a packet twice, send a
        packet at once instead of after the delay (so it overtakes the delayed ones; needs a
        delay).
    queue_bytes / queue_packets: the queue limit; at most one is set; both None = the plan's
        default (at least one bandwidth-delay product).
    ecn_bytes: CE-mark ECT packets when the queue holds more than this many bytes; None = never.
    mtu: bytes, the same in both directions of a link.
    """

    rate_bps: int | None = None
    delay_ns: int = 0
    jitter_ns: int = 0
    loss_ppm: int = 0
    corrupt_ppm: int = 0
    duplicate_ppm: int = 0
    reorder_ppm: int = 0
    queue_bytes: int | None = None
    queue_packets: int | None = None
    ecn_bytes: int | None = None
    mtu: int = 1500

    def scaled(self, time_scale: float) -> Shape:
        """The shape a host must realise for `time_scale`: rate / N, delays x N, same bytes."""
        if time_scale == 1:
            return self
        return replace(
            self,
            rate_bps=None if self.rate_bps is None else max(1, round(self.rate_bps / time_scale)),
            delay_ns=round(self.delay_ns * time_scale),
            jitter_ns=round(self.jitter_ns * time_scale),
        )


DEFAULT_QUEUE_PACKETS = 64


def bdp_bytes(shape: Shape) -> int:
    """Bytes one flow keeps in flight across this link alone: rate x round trip.

    The round trip is taken as twice this direction's delay plus jitter (the reverse
    direction is usually the same); 0 for an unshaped link.
    """
    if not shape.rate_bps:
        return 0
    return shape.rate_bps * 2 * (shape.delay_ns + shape.jitter_ns) // 8 // 1_000_000_000


def queue_bytes(shape: Shape) -> int:
    """The queue limit in bytes: as the file says (packets x mtu), else the default.

    The default holds at least one bandwidth-delay product (and 64 packets): a default queue
    smaller than the BDP is the classic reason emulated delay 'kills throughput', since one
    TCP flow can then never fill the pipe.
    """
    if shape.queue_bytes is not None:
        return shape.queue_bytes
    if shape.queue_packets is not None:
        return shape.queue_packets * shape.mtu
    return max(bdp_bytes(shape), DEFAULT_QUEUE_PACKETS * shape.mtu)


@dataclass(frozen=True)
class Node:
    """A node: `host` (an endpoint that runs traffic) or `switch` (forwards, L3)."""

    name: str
    kind: str = "host"
    role: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Link:
    """A point-to-point link between nodes `a` and `b`; `forward` is a->b, `reverse` is b->a."""

    a: str
    b: str
    forward: Shape
    reverse: Shape
    line: int | None = None

    @property
    def name(self) -> str:
        return f"{self.a}--{self.b}"

    @property
    def symmetric(self) -> bool:
        return self.forward == self.reverse


@dataclass(frozen=True)
class TrafficClass:
    """A traffic class: its DSCP code point, switch priority (0-7) and whether it is lossless."""

    name: str
    dscp: int = 0
    priority: int = 0
    lossless: bool = False
    tcp_cc: str | None = None  # TCP congestion control for this class's TCP flows (None: kernel's)
    # At the emulator's RoCE switches (`switches:`): round-robin weight, strict priority, and
    # RED/ECN marking as (kmin bytes, kmax bytes, pmax); None = this class is never marked.
    weight: int = 1
    strict: bool = False
    red: tuple[int, int, float] | None = None
    # The RoCE-style transport's congestion control for this class's `transport: roce` flows,
    # and overrides of the policy's published defaults (sorted (name, value) pairs).
    # `cc` is as written until `fabric.kinds.load` checks it (the policy registry, plug-ins
    # included, is above this layer) and makes a file plug-in's path absolute.
    cc: str = "none"
    cc_params: tuple[tuple[str, float | int], ...] = ()
    # The RoCE control class: the transport's CNPs, ACKs and NAKs leave with its DSCP (see
    # `fabric.topology.document.control_class`). `queue_bytes`: a lossy class's own queue at
    # every RoCE switch egress port, reserved in the buffer and its limit (None: the pool).
    control: bool = False
    queue_bytes: int | None = None
    line: int | None = None
    cc_line: int | None = field(default=None, compare=False)  # where `cc:` and `cc_params:`
    cc_params_line: int | None = field(default=None, compare=False)  # are, for errors


DEFAULT_CLASSES = (TrafficClass(name="default", dscp=0, priority=0, lossless=False),)

#: The RoCE control class a file that declares none gets, as published RoCE deployments
#: configure their NICs and switches: CNPs on DSCP 48 at priority 6, served in a strict
#: priority queue of its own ahead of the data classes, lossy (a PFC pause must never hold
#: back the signal that relieves congestion), with a small queue of its own at every switch
#: port (reserved in the buffer, so data filling the shared pool never drops them; control
#: packets are 60-150 bytes, so 4 KiB holds 27-70, where the shipped runs never queued more
#: than 768 bytes: a strict queue that no pause stops drains at once). ACKs and NAKs go
#: with the CNPs.
DEFAULT_CONTROL_CLASS = TrafficClass(name="control", dscp=48, priority=6, lossless=False,
                                     strict=True, control=True, queue_bytes=4 * 1024)


@dataclass(frozen=True)
class SwitchSettings:
    """The `switches:` section: switch nodes run the emulator's RoCE-style switch process.

    buffer_bytes: each switch's packet buffer; `buffer_mode` "shared" (one pool) or "per_port"
    (an equal slice per egress port). pfc: pause upstream for lossless classes. xoff/xon: per
    (ingress port, priority) thresholds, None = worked out from the buffer and headroom.
    int_enabled: hops append in-band telemetry to RoCE data packets (HPCC needs it).
    """

    buffer_bytes: int = 4 << 20
    buffer_mode: str = "shared"
    pfc: bool = True
    xoff_bytes: int | None = None
    xon_bytes: int | None = None
    int_enabled: bool = True
    line: int | None = None


@dataclass(frozen=True)
class LeafSpineInfo:
    """What a leaf-spine generator made, so `fabric check` can report oversubscription."""

    prefix: str
    spines: tuple[str, ...]
    leaves: tuple[str, ...]
    hosts: tuple[str, ...]
    hosts_per_leaf: int
    uplink_bps: int | None
    downlink_bps: int | None

    @property
    def oversubscription(self) -> float | None:
        """Per leaf: host-facing capacity / spine-facing capacity (1.0 = non-blocking)."""
        if not self.uplink_bps or not self.downlink_bps or not self.spines:
            return None
        return (self.hosts_per_leaf * self.downlink_bps) / (len(self.spines) * self.uplink_bps)
