"""Turn a topology's flows into a schedule of transfers. Pure: seeded, no clock.

A transfer is one request's KV (or one bulk object) from one node to another. It either starts
at a fixed offset from the run's start (open loop: `rate:` arrivals, and the first transfer of
every chain) or right after the previous transfer of its chain completes (closed loop: the
default for one-to-one, incast, all-to-all and bulk, so each sender keeps one request in
flight and latency is not inflated by self-made queueing).

Offsets are host time: fabric-time offsets multiplied by `time_scale`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from itertools import permutations

import numpy as np

from .errors import FabricError
from .kv import get_model
from .kv.layout import transfer_bytes
from .topology.document import Topology
from .topology.traffic import Flow, PromptDist


@dataclass(frozen=True)
class Transfer:
    """One request's KV (or one bulk object, or a run of cache blocks) from `src` to `dst`.

    A *block transfer* (`blocks` set) carries whole prefix-cache blocks, `(key, bytes)` each
    in order, whose content is a function of (seed, key) alone (`kv.layout.block_chunks`), so
    the node holding one can prove it: `reuse` names blocks the receiver must already hold
    (proved when the last chunk is in), `keep` puts the carried blocks in the receiver's
    block store, `from_store` sends them from the sender's store (a write-back or a reload),
    `release` frees them at the sender once acknowledged (`fabric.node.blocks`). Block
    transfers move over TCP only.
    """

    id: int
    flow: str
    kind: str  # the flow's pattern
    cls: str
    src: str
    dst: str
    transport: str
    request: int  # numbered per flow
    model: str | None  # None for bulk (and allowed for block transfers)
    tokens: int | None
    nbytes: int
    chunk_bytes: int
    start_ns: int | None  # host-time offset from the run's start; None: after `after`
    after: int | None = None
    blocks: tuple[tuple[int, int], ...] = ()  # (block key, bytes) carried, in order
    reuse: tuple[int, ...] = ()  # block keys the receiver must already hold
    keep: bool = False  # the receiver keeps the carried blocks in its block store
    from_store: bool = False  # the sender sends the blocks' bytes from its block store
    release: bool = False  # the sender frees the carried blocks once acknowledged

    def __post_init__(self) -> None:
        if not (self.blocks or self.reuse or self.keep or self.from_store or self.release):
            return
        what = f"transfer {self.id} ({self.flow}#{self.request} {self.src} -> {self.dst})"
        if self.transport != "tcp":
            raise FabricError(f"{what}: block transfers (blocks, reuse, keep, from_store, "
                              f"release) move over TCP only, not {self.transport!r}")
        if (self.keep or self.from_store or self.release) and not self.blocks:
            raise FabricError(f"{what}: keep, from_store and release need blocks to carry")
        carried = sum(b for _, b in self.blocks)
        if self.blocks and carried != self.nbytes:
            raise FabricError(f"{what}: nbytes is {self.nbytes} but its blocks hold {carried}")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["blocks"] = [list(b) for b in self.blocks]
        d["reuse"] = list(self.reuse)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Transfer:
        """The transfer `to_dict` described, also after msgpack (which makes tuples lists)."""
        d = dict(d)
        d["blocks"] = tuple((int(k), int(b)) for k, b in d.get("blocks", ()))
        d["reuse"] = tuple(int(k) for k in d.get("reuse", ()))
        return cls(**d)


def sample_prompt(rng: np.random.Generator, dist: PromptDist) -> int:
    """A truncated log-normal draw with the given mean (of the untruncated distribution)."""
    mu = math.log(dist.mean) - dist.sigma ** 2 / 2
    for _ in range(1000):
        x = rng.lognormal(mu, dist.sigma)
        if dist.min <= x <= dist.max:
            return int(round(x))
    return int(min(max(dist.mean, dist.min), dist.max))


def arrivals(rng: np.random.Generator, n: int, rate_per_s: float, process: str) -> list[float]:
    """n arrival times in seconds from 0: Poisson (exponential gaps) or a fixed clock."""
    if process == "fixed":
        return [i / rate_per_s for i in range(n)]
    gaps = rng.exponential(1 / rate_per_s, size=n)
    gaps[0] = 0.0
    return list(np.cumsum(gaps))


def schedule(topo: Topology) -> list[Transfer]:
    """Every transfer of the topology's traffic, ids in schedule order."""
    if topo.traffic is None:
        return []
    rng = np.random.default_rng(topo.traffic.seed)
    ts = topo.time_scale
    out: list[Transfer] = []
    for flow in topo.traffic.flows:
        out.extend(_expand(flow, rng, ts, first_id=len(out)))
    return out


def _size(flow: Flow, rng: np.random.Generator) -> tuple[int | None, int]:
    if flow.pattern == "bulk":
        assert flow.size_bytes is not None
        return None, flow.size_bytes
    if flow.tokens is not None:
        tokens = flow.tokens
    else:
        assert flow.prompt is not None  # the loader requires tokens or a prompt distribution
        tokens = sample_prompt(rng, flow.prompt)
    return tokens, transfer_bytes(get_model(flow.model), tokens)


def _expand(flow: Flow, rng: np.random.Generator, ts: float, first_id: int) -> list[Transfer]:
    start = round(flow.start_ns * ts)
    out: list[Transfer] = []

    def add(src: str, dst: str, start_ns: int | None, after: int | None) -> int:
        tokens, nbytes = _size(flow, rng)
        tid = first_id + len(out)
        request = len(out)  # numbered per flow: (flow, request) names a transfer
        out.append(Transfer(
            id=tid, flow=flow.name, kind=flow.pattern, cls=flow.cls, src=src, dst=dst,
            transport=flow.transport, request=request,
            model=None if flow.pattern == "bulk" else flow.model, tokens=tokens, nbytes=nbytes,
            chunk_bytes=flow.chunk_bytes, start_ns=start_ns, after=after))
        return tid

    if flow.pattern == "pd":
        assert flow.rate_per_s is not None
        times = arrivals(rng, flow.requests, flow.rate_per_s, flow.arrival)
        for i, t in enumerate(times):
            add(flow.src[i % len(flow.src)], flow.dst[i % len(flow.dst)],
                start + round(t * 1e9 * ts), None)
        return out

    if flow.pattern == "all-to-all":
        pairs = list(permutations(flow.src, 2))
    else:
        pairs = [(s, d) for s in flow.src for d in flow.dst]
    if flow.rate_per_s is not None:  # open loop per pair
        for src, dst in pairs:
            for t in arrivals(rng, flow.requests, flow.rate_per_s, flow.arrival):
                add(src, dst, start + round(t * 1e9 * ts), None)
        return out
    for src, dst in pairs:  # closed loop: a chain per pair, all chains start together
        prev = None
        for _ in range(flow.requests):
            prev = add(src, dst, start if prev is None else None, prev)
    return out
