"""Prefill-as-a-service (PrfaaS, seed 002): the sans-IO core that decides and accounts.

Requests (`generate`) are routed by a policy (`make_router`) to a local or a remote prefill pool;
`PdSimulator.plan` places them and says how many KV bytes each must move to which decode
instance; `PdSimulator.account` takes the measured KV arrival times and reports throughput,
TTFT, SLO attainment, offload share and egress. No sockets, sleeps or clock: time is passed in.
"""

from __future__ import annotations

from fabric.kv.prefill import (
    DENSE_MINIMAX_FACTOR,
    H20,
    H20_PEAK_FLOPS,
    H200,
    HYBRID_1T_H200,
    INSTANCE_TYPES,
    MINIMAX_M25_H200,
    PROFILES,
    InstanceType,
    PrefillProfile,
    get_profile,
)
from fabric.prfaas.router import (
    LOCAL,
    REMOTE,
    ROUTERS,
    Adaptive,
    ClusterState,
    LocalOnly,
    RemoteAll,
    Router,
    Threshold,
    make_router,
)
from fabric.prfaas.sim import (
    DecodeModel,
    Outcome,
    PdSimulator,
    PrefillJob,
    Report,
    fifo_link_arrivals,
    table,
)
from fabric.prfaas.workload import HIT_FRACTION, Request, generate, lognormal_mu

__all__ = [
    "DENSE_MINIMAX_FACTOR",
    "H20",
    "H20_PEAK_FLOPS",
    "H200",
    "HIT_FRACTION",
    "HYBRID_1T_H200",
    "INSTANCE_TYPES",
    "LOCAL",
    "MINIMAX_M25_H200",
    "PROFILES",
    "REMOTE",
    "ROUTERS",
    "Adaptive",
    "ClusterState",
    "DecodeModel",
    "InstanceType",
    "LocalOnly",
    "Outcome",
    "PdSimulator",
    "PrefillJob",
    "PrefillProfile",
    "RemoteAll",
    "Report",
    "Request",
    "Router",
    "Threshold",
    "fifo_link_arrivals",
    "generate",
    "get_profile",
    "lognormal_mu",
    "make_router",
    "table",
]
