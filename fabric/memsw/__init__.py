"""The sans-IO core of a memory-semantic switch (load/store fabric, as Astera Scorpio X).

Routes loads, stores and atomics by address (`AddressMap`), splits them into 64-256 byte
transactions (`split`, `reassemble`), applies per-port credit flow control and timing, and
does Hypercast replication and in-network reduction inside the switch (`MemorySwitch`).
`Fabric` cascades switches; `ring_allreduce` is the message-passing reference for reductions.
Pure: no sockets, no clocks; time is integer nanoseconds passed in.
"""

from __future__ import annotations

from fabric.memsw.addrmap import FLIT, AccessError, AddressMap, AddressMapError, Port, Window
from fabric.memsw.ops import (
    ATOMIC_DTYPES,
    REDUCE_DTYPES,
    TXN_SIZES,
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
    decode,
    encode,
    flits,
    itemsize,
    reassemble,
    split,
    wire_bytes,
)
from fabric.memsw.switch import (
    Action,
    Deliver,
    Fabric,
    MemorySwitch,
    PortConfig,
    PortStatistics,
    ReduceGroup,
    Respond,
    RingResult,
    SwitchStatistics,
    ring_allreduce,
    serialisation_ns,
)

__all__ = [
    "ATOMIC_DTYPES",
    "FLIT",
    "REDUCE_DTYPES",
    "TXN_SIZES",
    "AccessError",
    "Action",
    "AddressMap",
    "AddressMapError",
    "AtomicAdd",
    "Contribute",
    "Deliver",
    "Error",
    "Fabric",
    "MemoryEndpoint",
    "MemorySwitch",
    "Op",
    "Port",
    "PortConfig",
    "PortStatistics",
    "Read",
    "ReadResp",
    "ReduceGroup",
    "ReduceResult",
    "Respond",
    "Response",
    "RingResult",
    "SwitchStatistics",
    "Window",
    "Write",
    "WriteAck",
    "decode",
    "encode",
    "flits",
    "itemsize",
    "reassemble",
    "ring_allreduce",
    "serialisation_ns",
    "split",
    "wire_bytes",
]
