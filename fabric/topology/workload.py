"""The `workload:` section: agentic sessions or a replayed request trace, moving only the KV
each request lacks, under per-session policies compared side by side.

```yaml
workload:
  model: llama-3.1-8b          # built-in, or one the file's `models:` section defines
  seed: 1
  kv_scale: 64                 # KV bytes on the wire = real / kv_scale (write link rates / N)
  class: kv                    # traffic class of the KV transfers (default: the first class)
  chunk: 1MiB
  prefill: [p0, p1]            # prefill nodes
  decode: [d0, d1]             # decode nodes (they hold the KV cache that is reused)
  store: s0                    # optional: a KV store node (CPU/SSD tier) evicted blocks go to
  duration: 120s               # optional: arrivals after this much fabric time are cut
  block_tokens: 512            # a cache block, in tokens (the Mooncake trace's hash block)
  cache: {size: 8GiB, policy: lru}          # per decode node, real (fabric) bytes; lru | fifo
  compute:                     # modelled, and labelled so: prefill and decode times
    profile: prfaas-hybrid-1t  # a built-in prefill profile, or `points: [[tokens, s], ...]`
    decode_speed: 1.0          # a decode node's prefill speed against a prefill node's
    tpot: 25ms                 # decode time per output token
  policies: [pd, ppd]          # compared side by side (`fabric run --policy`)
  retention: [pin, ttl, evict] # what ppd does with a session's KV across a pause
  ttl: auto                    # or a time; auto: `ttl_factor` x the KV's reload time
  ttl_factor: 20
  sessions:                    # agentic sessions ...
    count: 8
    rate: 0.5/s                # session starts (Poisson; `arrival: fixed` for a clock)
    turns: {min: 3, max: 8}    # or a number
    first: {mean: 15000, sigma: 0.5, min: 2000, max: 60000}   # tokens of turn 1
    append: 2000               # new input tokens of each later turn (a number or a dist)
    output: 300                # output tokens per turn
    pause: {mean: 5s, sigma: 0.8, min: 500ms, max: 60s}       # tool-call pause
  trace:                       # ... or a Mooncake-format JSONL trace
    file: data/mooncake-excerpt.jsonl   # relative to this file
    start: 0s                  # window start, trace time
    duration: 60s              # window length, trace time
    speedup: 1                 # replay N times faster
    sample: 1.0                # keep this share of the window's requests (seeded)
    limit: 200                 # at most this many requests
    sessions: false            # true: requests that extend an earlier one's prefix are its
                               # session's next turn
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import yaml

    from fabric.topology.model import Link, Node
    from fabric.topology.walker import Walker

POLICIES = ("pd", "ppd")
RETENTIONS = ("pin", "ttl", "evict")
CACHE_POLICIES = ("lru", "fifo")


@dataclass(frozen=True)
class Dist:
    """A quantity drawn per session or turn: log-normal with this mean and sigma (of the
    untruncated distribution), truncated to [min, max]; fixed at `mean` when sigma is 0."""

    mean: float
    sigma: float = 0.0
    min: float = 0.0
    max: float = float("inf")


@dataclass(frozen=True)
class TraceSpec:
    path: str  # absolute, resolved against the topology file's directory
    start_s: float = 0.0  # window start, trace seconds
    duration_s: float | None = None  # window length, trace seconds (None: to the end)
    speedup: float = 1.0
    sample: float = 1.0
    limit: int | None = None
    sessions: bool = False
    line: int | None = None


@dataclass(frozen=True)
class SessionsSpec:
    count: int
    rate_per_s: float  # session starts per fabric second
    arrival: str  # poisson | fixed
    turns_min: int
    turns_max: int
    first: Dist  # tokens
    append: Dist  # tokens
    output: Dist  # tokens
    pause: Dist  # seconds
    line: int | None = None


@dataclass(frozen=True)
class ComputeSpec:
    points: tuple[tuple[int, float], ...]  # (tokens, seconds) prefill on a prefill node
    profile: str = ""  # the built-in profile these points came from, if any
    decode_speed: float = 1.0
    tpot_s: float = 0.025


@dataclass(frozen=True)
class CacheSpec:
    size_bytes: int  # per decode node, real (fabric) KV bytes
    policy: str = "lru"


@dataclass(frozen=True)
class WorkloadSpec:
    model: str
    seed: int
    kv_scale: int
    cls: str
    chunk_bytes: int
    prefill: tuple[str, ...]
    decode: tuple[str, ...]
    store: str | None
    block_tokens: int
    cache: CacheSpec
    compute: ComputeSpec
    policies: tuple[str, ...]
    retention: tuple[str, ...]
    ttl_s: float | None  # None: auto
    ttl_factor: float
    duration_s: float | None
    sessions: SessionsSpec | None = None
    trace: TraceSpec | None = None
    line: int | None = None

    def variants(self, policies: tuple[str, ...] | None = None) -> list[str]:
        """The variants a run compares, by name: `pd`, and `ppd/<retention>` per retention."""
        out = []
        for p in policies or self.policies:
            if p == "pd":
                out.append("pd")
            else:
                out.extend(f"ppd/{r}" for r in self.retention)
        return out


def parse_workload(w: Walker, node: yaml.Node, nodes: dict[str, Node],
                   links: list[Link]) -> WorkloadSpec:
    raise w.error(node, "workload", "the workload section is not implemented yet")
