"""Where each request prefills: the local PD cluster or the remote PrfaaS cluster.

Every policy answers `route(req, now_s, state) -> "local" | "remote"`, given the request, the time
and a frozen `ClusterState` snapshot the simulator (later: the live system) keeps. Policies are
pure apart from `Adaptive`, whose threshold is the state of its control loop.

- `LocalOnly`: homogeneous PD, everything prefills locally.
- `RemoteAll`: naive heterogeneous PD, every prefill goes to the fast remote cluster.
- `Threshold`: the seed's PrfaaS rule, offload a request iff its *uncached* tokens exceed the
  threshold (19,400 in the case study; a request of exactly 19,400 stays local).
- `Adaptive`: the seed's short-timescale loop around `Threshold` (see its docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

from fabric.errors import FabricError
from fabric.prfaas.workload import Request

__all__ = [
    "LOCAL",
    "REMOTE",
    "ROUTERS",
    "Adaptive",
    "ClusterState",
    "LocalOnly",
    "RemoteAll",
    "Router",
    "Threshold",
    "make_router",
]

Where = Literal["local", "remote"]
LOCAL: Where = "local"
REMOTE: Where = "remote"


@dataclass(frozen=True)
class ClusterState:
    """What the router may look at when it decides.

    `egress_util`: share (0..1) of the recent window the cross-cluster egress link was busy.
    `remote_queue_s` / `local_queue_s`: how long a prefill sent to that pool now would wait before
    starting (`math.inf` when the pool has no instances). `egress_queue_bytes`: KV bytes ready to
    send but not yet sent.
    """

    egress_util: float = 0.0
    remote_queue_s: float = 0.0
    local_queue_s: float = 0.0
    egress_queue_bytes: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.egress_util <= 1.0:
            raise FabricError(f"egress_util must be within 0..1, not {self.egress_util}")
        if self.remote_queue_s < 0 or self.local_queue_s < 0 or self.egress_queue_bytes < 0:
            raise FabricError("queue delays and egress_queue_bytes must be >= 0")


class Router(Protocol):
    """A routing policy."""

    name: str

    def route(self, req: Request, now_s: float, state: ClusterState) -> Where:
        """'local' or 'remote' for `req` at `now_s`."""
        ...


class LocalOnly:
    """Homogeneous PD: every request prefills in the local cluster."""

    name = "local-only"

    def route(self, req: Request, now_s: float, state: ClusterState) -> Where:
        return LOCAL


class RemoteAll:
    """Naive heterogeneous PD: every request prefills in the remote PrfaaS cluster."""

    name = "remote-all"

    def route(self, req: Request, now_s: float, state: ClusterState) -> Where:
        return REMOTE


class Threshold:
    """Offload exactly the requests with more than `tokens` uncached tokens."""

    name = "threshold"

    def __init__(self, tokens: int = 19_400) -> None:
        if tokens < 0:
            raise FabricError(f"threshold tokens must be >= 0, not {tokens}")
        self.tokens = tokens

    def route(self, req: Request, now_s: float, state: ClusterState) -> Where:
        return REMOTE if req.uncached_tokens > self.tokens else LOCAL


class Adaptive:
    """`Threshold` whose threshold a short-timescale loop moves (seed: "it watches egress
    utilization and queue depth, then adjusts routing as congestion approaches").

    At most once per `period_s` of `now_s`, the loop looks at the snapshot and

    - **raises** the threshold (x `1 + gain`) when egress is hot (`egress_util >= hot_util`, or
      `egress_queue_bytes >= hot_queue_bytes`) or the remote prefill queue is longer than the
      local one by more than `deadband_s`: offload less;
    - **lowers** it (/ `1 + gain`) when egress is idle (`egress_util <= idle_util`) and the local
      queue is longer than the remote one by more than `deadband_s`: offload more;
    - otherwise holds it.

    It stays within `[base * min_factor, base * max_factor]`. Defaults: gain 5 % per 1 s period
    (a factor of 2 takes ~14 s, so it follows bursts of a few seconds of arrivals rather than
    single requests); hot at 80 % utilisation or 12.5 GB queued (1 s of the seed's 100 Gbit/s
    link; a dense 44K-token request alone is 11 GB); idle below 50 %; a 0.5 s deadband (about
    one short prefill); bounds 1/4x..4x of the base (4.85K..77.6K tokens at the seed's 19.4K).
    Multiplicative steps because prompt lengths are log-normal.
    """

    name = "adaptive"

    def __init__(self, base: int = 19_400, *, gain: float = 0.05, period_s: float = 1.0,
                 hot_util: float = 0.8, idle_util: float = 0.5,
                 hot_queue_bytes: int = 12_500_000_000, deadband_s: float = 0.5,
                 min_factor: float = 0.25, max_factor: float = 4.0) -> None:
        if base <= 0:
            raise FabricError(f"adaptive base must be > 0, not {base}")
        if not gain > 0 or not period_s >= 0:
            raise FabricError("adaptive gain must be > 0 and period_s >= 0")
        if not 0 <= idle_util <= hot_util <= 1:
            raise FabricError(f"need 0 <= idle_util ({idle_util}) <= hot_util ({hot_util}) <= 1")
        if not 0 < min_factor <= 1 <= max_factor:
            raise FabricError(f"need 0 < min_factor ({min_factor}) <= 1 <= max_factor "
                              f"({max_factor})")
        self.base = base
        self.gain = gain
        self.period_s = period_s
        self.hot_util = hot_util
        self.idle_util = idle_util
        self.hot_queue_bytes = hot_queue_bytes
        self.deadband_s = deadband_s
        self.low = base * min_factor
        self.high = base * max_factor
        self.threshold = float(base)
        self._last_update_s = -math.inf

    def update(self, now_s: float, state: ClusterState) -> float:
        """Run the control loop once if a period has passed; the (new) threshold in tokens."""
        if now_s - self._last_update_s < self.period_s:
            return self.threshold
        self._last_update_s = now_s
        hot = state.egress_util >= self.hot_util or state.egress_queue_bytes >= self.hot_queue_bytes
        remote_longer = state.remote_queue_s > state.local_queue_s + self.deadband_s
        local_longer = state.local_queue_s > state.remote_queue_s + self.deadband_s
        if hot or remote_longer:
            self.threshold = min(self.threshold * (1 + self.gain), self.high)
        elif state.egress_util <= self.idle_util and local_longer:
            self.threshold = max(self.threshold / (1 + self.gain), self.low)
        return self.threshold

    def route(self, req: Request, now_s: float, state: ClusterState) -> Where:
        return REMOTE if req.uncached_tokens > self.update(now_s, state) else LOCAL


ROUTERS: dict[str, type[Router]] = {
    "local-only": LocalOnly,
    "remote-all": RemoteAll,
    "threshold": Threshold,
    "adaptive": Adaptive,
}


def make_router(name: str, **params: object) -> Router:
    """A fresh router by policy name (`ROUTERS`), with its keyword parameters."""
    try:
        cls = ROUTERS[name.lower()]
    except KeyError:
        known = ", ".join(ROUTERS)
        raise FabricError(f"unknown routing policy {name!r}: known policies are {known}"
                          ) from None
    try:
        return cls(**params)
    except TypeError as e:
        raise FabricError(f"routing policy {name!r}: bad parameters {sorted(params)}: {e}"
                          ) from None
