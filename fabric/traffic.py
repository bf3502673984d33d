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
from dataclasses import asdict, dataclass
from itertools import permutations

import numpy as np

from .kv import get_model
from .kv.layout import transfer_bytes
from .topology.document import Topology
from .topology.traffic import Flow, PromptDist


@dataclass(frozen=True)
class Transfer:
    id: int
    flow: str
    kind: str  # the flow's pattern
    cls: str
    src: str
    dst: str
    transport: str
    request: int  # numbered per flow
    model: str | None  # None for bulk
    tokens: int | None
    nbytes: int
    chunk_bytes: int
    start_ns: int | None  # host-time offset from the run's start; None: after `after`
    after: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Transfer:
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
