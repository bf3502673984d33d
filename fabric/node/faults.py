"""TEST ONLY: a sender-side fault that gets a bad chunk past the transports to a receiver.

    FABRIC_TEST_FAULT=corrupt|truncate|duplicate fabric run FILE

Never set this in a real run. It exists so that tests can show that the receiver's integrity
check (each chunk's digest on arrival, `Node.on_chunk`, `metrics.integrity_counts`) catches
what a transport or a link could get wrong, which clean runs never produce: TCP and UDP
checksums and the transports' own sequence numbers stop corruption, loss and duplication on
the links (and this kernel has no `act_pedit` to do it from outside).

Each node process reads the variable once, when it starts (`from_env`); without it nothing
here runs. With it, the node's last TCP or UDP transfer (its highest transfer id: the last
its queues send, so no other transfer waits behind a stuck one) is sent wrong, through the
real sockets, after its chunks' digests were computed from the right bytes:

- `corrupt`: chunk 0 leaves with one payload byte inverted; the receiver's digest check
  fails, the chunk counts as corrupt and the transfer never completes;
- `truncate`: the last chunk is never sent; the transfer stays incomplete, one chunk missing;
- `duplicate`: chunk 0 is sent twice (on UDP as two transport units, so the transport
  delivers both); the transfer completes, with one duplicate chunk.

A transfer that never completes ends the run at `fabric run --timeout`. RoCE transfers are
left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FabricError
from ..traffic import Transfer
from ..wire.frames import MAX_HEADER, FrameDecoder, chunk_header

__all__ = ["FAULTS", "FAULT_ENV", "Fault", "from_env", "wrap_endpoints"]

FAULT_ENV = "FABRIC_TEST_FAULT"
FAULTS = ("corrupt", "truncate", "duplicate")
TRANSPORTS = ("tcp", "udp")  # the senders this reaches


@dataclass(frozen=True)
class Fault:
    """What goes wrong, and in which transfer (its id)."""

    kind: str
    xfer: int

    def frames(self, xfer: int, index: int, count: int, frame: Any,  # noqa: ANN401
               payload_at: int = 0) -> list[Any]:
        """What leaves instead of chunk `index` (of `count`) of transfer `xfer`, whose bytes
        are `frame` with the payload from `payload_at` on: the frame itself (normally), none
        (truncated), a damaged copy, or the frame twice."""
        if xfer != self.xfer:
            return [frame]
        if self.kind == "truncate" and index == count - 1:
            return []
        if self.kind == "duplicate" and index == 0:
            return [frame, frame]
        if self.kind == "corrupt" and index == 0:
            bad = np.array(memoryview(frame), dtype=np.uint8, copy=True).reshape(-1)
            bad[payload_at + (bad.nbytes - payload_at) // 2] ^= 0xFF
            return [bad]
        return [frame]


def from_env(sends: Iterable[Transfer]) -> Fault | None:
    """The fault `FABRIC_TEST_FAULT` asks this node for, None without it (every real run)
    or when the node sends nothing over TCP or UDP."""
    kind = os.environ.get(FAULT_ENV)
    if not kind:
        return None
    if kind not in FAULTS:
        raise FabricError(f"{FAULT_ENV}={kind!r}: expected one of {', '.join(FAULTS)} "
                          "(a test-only setting: unset it for a real run)")
    ids = [tr.id for tr in sends if tr.transport in TRANSPORTS]
    return Fault(kind, max(ids)) if ids else None


class _FaultyUdp:
    """The UDP endpoint as the node's UDP sender sees it: each unit it sends is one chunk's
    frame (header, then payload), which the fault may drop, damage or send twice."""

    def __init__(self, endpoint: Any, fault: Fault) -> None:  # noqa: ANN401
        self._endpoint = endpoint
        self._fault = fault

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - the endpoint's own
        return getattr(self._endpoint, name)

    def statistics(self) -> dict[str, int]:
        stats: dict[str, int] = self._endpoint.statistics()
        return stats

    async def send_unit(self, dst: str, unit: np.ndarray, tos: int, *rest: Any) -> None:  # noqa: ANN401
        """The endpoint's `send_unit`; `rest` (the flow's congestion control) passes through."""
        dec = FrameDecoder()
        dec.receive_data(memoryview(unit)[: 4 + MAX_HEADER])  # type: ignore[arg-type]
        chunk = chunk_header(dec.next_event())
        if chunk is None:
            await self._endpoint.send_unit(dst, unit, tos, *rest)
            return
        for frame in self._fault.frames(chunk.xfer, chunk.index, chunk.count, unit,
                                        unit.nbytes - chunk.nbytes):
            await self._endpoint.send_unit(dst, frame, tos, *rest)


def wrap_endpoints(endpoints: MutableMapping[str, Any], fault: Fault) -> None:
    """Put the fault between the node's UDP sender and its endpoint (the receiving side keeps
    the endpoint itself). TCP is the node's own: `Node._tcp_sender` asks `fault.frames`."""
    if "udp" in endpoints:
        endpoints["udp"] = _FaultyUdp(endpoints["udp"], fault)
