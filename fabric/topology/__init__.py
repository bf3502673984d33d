"""Topology files: the schema's data model, the strict loader and the generators.

`load_topology(path)` reads and validates a file; `parse_topology(text)` does the same for a
string. Both raise `fabric.errors.TopologyError` with `FILE:LINE: key: message`. What needs a
runtime core (a class's congestion control and its `cc_params`) is checked by the fabric
kinds: `fabric.kinds.load(path)` loads a file and runs every kind's `validate`.
"""

from fabric.topology.document import Topology
from fabric.topology.loader import NAME_RE, load_topology, parse_topology
from fabric.topology.model import (
    DEFAULT_CLASSES,
    NODE_KINDS,
    LeafSpineInfo,
    Link,
    Node,
    Shape,
    SwitchSettings,
    TrafficClass,
)

__all__ = [
    "DEFAULT_CLASSES",
    "NAME_RE",
    "NODE_KINDS",
    "LeafSpineInfo",
    "Link",
    "Node",
    "Shape",
    "SwitchSettings",
    "Topology",
    "TrafficClass",
    "load_topology",
    "parse_topology",
]
