"""A whole topology file as one value: its elements (`model`) and its sections' specs.

Everything here is in fabric time (the figures the file states). `time_scale` is applied only
when a plan turns a topology into kernel or engine settings (see `Shape.scaled`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .graph import adjacency
from .model import (
    DEFAULT_CLASSES,
    DEFAULT_CONTROL_CLASS,
    LeafSpineInfo,
    Link,
    Node,
    Shape,
    SwitchSettings,
    TrafficClass,
)

if TYPE_CHECKING:
    from .events import Events
    from .expect import Expectation
    from .lpu import LpuSpec
    from .memory import MemorySpec
    from .prfaas import PrfaasSpec
    from .traffic import Traffic
    from .workload import WorkloadSpec

__all__ = ["Topology", "control_class", "link_classes", "roce_classes", "uses_roce"]


@dataclass(frozen=True)
class Topology:
    """A whole validated topology. Node order is the file's order (generators expand in place)."""

    name: str
    nodes: dict[str, Node]
    links: tuple[Link, ...]
    classes: tuple[TrafficClass, ...] = DEFAULT_CLASSES
    time_scale: float = 1.0
    source: str = "<memory>"
    link_subnet: str = "198.18.0.0/16"
    loopback_subnet: str = "198.19.0.0/16"
    leaf_spines: tuple[LeafSpineInfo, ...] = field(default=())
    traffic: Traffic | None = None
    lpu: LpuSpec | None = None
    prfaas: PrfaasSpec | None = None
    switches: SwitchSettings | None = None
    memory: MemorySpec | None = None  # memory-semantic switches (`memory:`)
    expect: tuple[Expectation, ...] = ()  # what must hold after a run (`expect:`)
    events: Events | None = None  # link and node changes during a run (`events:`)
    workload: WorkloadSpec | None = None  # sessions or a replayed trace (`workload:`)
    models: dict[str, Any] = field(default_factory=dict)  # the file's own (`models:`)
    sha256: str = ""  # of the file's text: what a running fabric was built from

    def neighbours(self, node: str) -> list[str]:
        return adjacency(self.links).get(node, [])

    def shape(self, a: str, b: str) -> Shape:
        """The shape of the link direction from `a` to `b` (KeyError if they are not linked)."""
        for link in self.links:
            if (link.a, link.b) == (a, b):
                return link.forward
            if (link.a, link.b) == (b, a):
                return link.reverse
        raise KeyError((a, b))


def uses_roce(topo: Topology) -> bool:
    """Whether the file runs RoCE: RoCE-style switches (`switches:`) or `transport: roce`
    flows."""
    return topo.switches is not None or (
        topo.traffic is not None and any(f.transport == "roce" for f in topo.traffic.flows))


def control_class(topo: Topology) -> TrafficClass | None:
    """The RoCE control class, whose DSCP every CNP, ACK and NAK leaves with and which the
    RoCE switches serve in a strict-priority queue of its own (unless the file says
    otherwise): the class the file marks `control: true` (or names `control`), else, in a
    file that runs RoCE, `DEFAULT_CONTROL_CLASS` (its `line` is None: the file does not
    declare it); None in a file without RoCE that declares none.

    What renderings (`fabric check`, `fabric explain`) show as the control class."""
    declared = next((c for c in topo.classes if c.control), None)
    if declared is not None:
        return declared
    return DEFAULT_CONTROL_CLASS if uses_roce(topo) else None


def roce_classes(topo: Topology) -> tuple[TrafficClass, ...]:
    """The classes RoCE switches and RoCE nodes know: the file's, and the default control
    class after them when the file declares none (the loader checked that it fits)."""
    control = control_class(topo)
    if control is None or control in topo.classes:
        return topo.classes
    return (*topo.classes, control)


def link_classes(topo: Topology) -> tuple[TrafficClass, ...]:
    """The classes every shaped link direction queues by (the link engine on the userspace
    backend, htb on the netem backend): the file's, with the RoCE control class where RoCE
    runs; () where there is one class, which keeps one FIFO queue (nothing to tell apart)."""
    classes = roce_classes(topo)
    return tuple(classes) if len(classes) > 1 else ()
