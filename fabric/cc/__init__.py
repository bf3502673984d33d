"""Pluggable congestion-control policies, sans-IO, behind one small interface.

    cc = make_cc("hpcc", line_rate_bps=100_000_000_000, base_rtt_ns=8_000)
    cc.on_ack(now_ns, acked_bytes, rtt_ns=..., ecn_echo=..., int_records=[IntRecord(...)])
    pace_at, may_have_in_flight = cc.rate_bps, cc.window_bytes   # window None = rate-based

Policies: `none`, `dcqcn`, `timely`, `swift`, `hpcc`, `dctcp`; see each module for the
published behaviour it follows and `base.py` for the event contract. Users' own policies load
from a file or package by the same names (`registry.py`, docs/cc-plugins.md).
"""

from __future__ import annotations

from fabric.cc.base import (
    CC_NAMES,
    DEFAULT_MTU,
    NEEDS,
    CongestionControl,
    CongestionControlError,
    IntRecord,
    UnknownCongestionControl,
)
from fabric.cc.dcqcn import Dcqcn, DcqcnParams
from fabric.cc.dctcp import Dctcp, DctcpParams
from fabric.cc.hpcc import Hpcc, HpccParams
from fabric.cc.none import NoCongestionControl, NoneParams
from fabric.cc.registry import canonical_cc, cc_label, is_plugin, make_cc, resolve_cc
from fabric.cc.swift import Swift, SwiftParams
from fabric.cc.timely import Timely, TimelyParams

__all__ = [
    "CC_NAMES",
    "DEFAULT_MTU",
    "CongestionControl",
    "CongestionControlError",
    "Dcqcn",
    "DcqcnParams",
    "Dctcp",
    "DctcpParams",
    "Hpcc",
    "HpccParams",
    "IntRecord",
    "NEEDS",
    "NoCongestionControl",
    "NoneParams",
    "Swift",
    "SwiftParams",
    "Timely",
    "TimelyParams",
    "UnknownCongestionControl",
    "canonical_cc",
    "cc_label",
    "is_plugin",
    "make_cc",
    "resolve_cc",
]
