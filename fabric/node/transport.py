"""The narrow interface between a node process and its datagram transports, and their registry.

A node process (`fabric.node.runtime`) moves KV chunks over TCP itself; every other transport
is a module registered here by the name a flow's `transport:` gives it (`udp`, `roce`). Each
such module defines `TRANSPORT`, a `Transport` of two coroutines:

- `serve(node, task_status=...)`: bind the transport's sockets in the node's namespace, put its
  endpoint (anything with `statistics() -> dict[str, int]`) in `node.endpoints[name]`, call
  `task_status.started()`, and receive until cancelled, calling `node.on_chunk` for every chunk
  that arrives;
- `send(node, dst, cls, queue)`: send the transfers queued for one (peer, class) in order,
  calling `node.transfer_sent(tr)` when the receiver has confirmed each.

A transport sees the node only through `NodeSide`, so it never imports the runtime, and the
runtime imports a transport only when a node moves its traffic.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import trio

from ..traffic import Transfer

__all__ = ["TRANSPORTS", "NodeConfig", "NodeSide", "Transport", "transport"]


@dataclass
class NodeConfig:
    """What one node process is told by its runner: who it is, its peers and what to move."""

    name: str
    address: str
    peers: dict[str, str]  # node name -> loopback address
    classes: dict[str, dict[str, Any]]  # class name -> {"dscp": int, "tcp_cc": str | None}
    seed: int
    t0_ns: int  # CLOCK_MONOTONIC time of the run's start
    sends: list[Transfer]
    expects: list[Transfer]
    udp_mss: int = 1440  # UDP payload per segment: the fabric's smallest MTU - 28 - 32
    udp_window: dict[str, int] = field(default_factory=dict)  # peer -> segments in flight
    roce: dict[str, Any] = field(default_factory=dict)  # see fabric.run.traffic.roce_plan
    udp: dict[str, Any] = field(default_factory=dict)  # see fabric.run.traffic.udp_plan


class NodeSide(Protocol):
    """What a transport may use of its node process."""

    cfg: NodeConfig
    tx_bytes: int  # payload bytes the node has sent / received, for progress
    rx_bytes: int
    endpoints: dict[str, Any]  # transport name -> its endpoint, set by its `serve`

    def on_chunk(self, tid: int, index: int, nbytes: int, t_start: int, t_send: int,
                 t_first: int, t_last: int, ok: bool) -> bool:
        """Record one arrived chunk; True when it completes its transfer (send the ack)."""
        ...

    def transfer_sent(self, tr: Transfer) -> None:
        """The receiver confirmed `tr`."""
        ...


# a sender's queue: (transfer, time it became ready)
SendQueue: TypeAlias = "trio.MemoryReceiveChannel[tuple[Transfer, int]]"


@dataclass(frozen=True)
class Transport:
    name: str
    serve: Callable[..., Awaitable[None]]  # (node, task_status=...)
    send: Callable[[NodeSide, str, str, SendQueue], Awaitable[None]]  # (node, dst, cls, queue)


TRANSPORTS = {"udp": "fabric.node.udp", "roce": "fabric.node.roce"}
"""Transport name -> the module whose `TRANSPORT` it is (imported on first use)."""


def transport(name: str) -> Transport:
    """The registered transport `name` (KeyError if there is none)."""
    found: Transport = importlib.import_module(TRANSPORTS[name]).TRANSPORT
    return found
