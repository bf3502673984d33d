"""The one small interface every congestion-control policy implements, sans-IO.

A policy is fed events (`on_ack`, `on_nak`, `on_cnp`, `on_rtt`, `on_timer`) together with the
time they happened, in integer nanoseconds, and exposes what the sender should do as two
outputs: `rate_bps` (the pacing rate) and `window_bytes` (the bytes allowed in flight, or `None`
for a purely rate-based policy). A policy that needs its own timers (DCQCN) says when through
`next_timer_ns()`; the caller calls `on_timer(now_ns)` once that time has passed. Nothing in
here reads a clock, sleeps or touches a socket, so every policy is tested with hand-made times.

Each policy's parameters are a frozen dataclass whose defaults are the published ones (each
policy's module names the paper or simulator they come from); a default of `None` means "scaled
from the link rate the way the HPCC simulator does" and is resolved by the policy's constructor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from fabric.errors import FabricError

__all__ = [
    "CC_NAMES",
    "DEFAULT_MTU",
    "NEEDS",
    "CongestionControl",
    "CongestionControlError",
    "IntRecord",
    "UnknownCongestionControl",
]

NS_PER_S = 1_000_000_000
# The HPCC simulator's payload per packet; also what the policies count "one packet" as.
DEFAULT_MTU = 1000
CC_NAMES = ("none", "dcqcn", "timely", "swift", "hpcc", "dctcp")
# What a policy can declare it needs from the fabric (`CongestionControl.needs`); `fabric
# check` warns where a file does not provide it, and the transport turns INT on for "int".
NEEDS = {
    "int": "in-band telemetry from the switches (switches.int)",
    "ecn": "ECN marks on its class (switch `ecn:` thresholds, or link ECN)",
    "fine_rtt": "RTT samples finer than the host's timing noise (a high time_scale)",
}


class CongestionControlError(FabricError):
    """A congestion-control policy was asked for by an unknown name or with bad parameters."""


class UnknownCongestionControl(CongestionControlError):
    """No built-in, and no installed plug-in, has this name (a typo, most likely)."""


@dataclass(frozen=True, slots=True)
class IntRecord:
    """One hop's in-band telemetry as HPCC reads it from an ACK.

    `tx_bytes` is the egress port's cumulative transmitted byte counter and `ts_ns` the time it
    was read, so two records of the same hop give the port's transmit rate; `qlen_bytes` is the
    egress queue at that moment and `line_rate_bps` the port's capacity.
    """

    hop: int
    line_rate_bps: int
    ts_ns: int
    tx_bytes: int
    qlen_bytes: int


def check(condition: bool, message: str) -> None:
    """Raise `CongestionControlError(message)` unless `condition` holds (parameter validation)."""
    if not condition:
        raise CongestionControlError(message)


class CongestionControl(ABC):
    """Base of every policy: one instance per flow (queue pair), fed events with their time.

    Subclasses set `name` and `Params` (their frozen parameter dataclass) and override the
    events they react to; the others are no-ops, so a caller can feed every policy the same
    events without knowing which one it holds.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Any]]
    # What the policy reacts to, from NEEDS: checks read this, never the policy's name.
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, line_rate_bps: int, base_rtt_ns: int, mtu: int = DEFAULT_MTU,
                 params: Any = None) -> None:
        check(isinstance(line_rate_bps, int) and line_rate_bps > 0,
              f"{self.name}: line_rate_bps must be a positive integer, got {line_rate_bps!r}")
        check(isinstance(base_rtt_ns, int) and base_rtt_ns > 0,
              f"{self.name}: base_rtt_ns must be a positive integer, got {base_rtt_ns!r}")
        check(isinstance(mtu, int) and mtu > 0,
              f"{self.name}: mtu must be a positive integer (bytes), got {mtu!r}")
        if params is None:
            params = self.Params()
        check(isinstance(params, self.Params),
              f"{self.name}: params must be a {self.Params.__name__}, got {type(params).__name__}")
        self.line_rate_bps = line_rate_bps
        self.base_rtt_ns = base_rtt_ns
        self.mtu = mtu
        self.params = params

    # -- outputs -----------------------------------------------------------------------------

    @property
    @abstractmethod
    def rate_bps(self) -> int:
        """The pacing rate the sender should use now, in bits/s (never above the line rate)."""

    @property
    def window_bytes(self) -> int | None:
        """Bytes the sender may have in flight, or `None` when the policy is rate-based only."""
        return None

    # -- events ------------------------------------------------------------------------------

    def on_ack(self, now_ns: int, acked_bytes: int, rtt_ns: int | None = None,
               ecn_echo: bool = False, int_records: Sequence[IntRecord] | None = None) -> None:
        """`acked_bytes` of new data were acknowledged; optional RTT sample, ECN echo and INT."""
        return None  # a policy that ignores this event inherits the no-op

    def on_nak(self, now_ns: int) -> None:
        """The receiver reported a gap (loss)."""
        return None  # a policy that ignores this event inherits the no-op

    def on_cnp(self, now_ns: int) -> None:
        """A congestion notification packet (RoCEv2 CNP) arrived for this flow."""
        return None  # a policy that ignores this event inherits the no-op

    def on_rtt(self, now_ns: int, rtt_ns: int) -> None:
        """An RTT sample not attached to an ACK (e.g. a probe or a completion timestamp)."""
        return None  # a policy that ignores this event inherits the no-op

    def on_timer(self, now_ns: int) -> None:
        """Run every internal timer whose deadline is at or before `now_ns`, in order."""
        return None  # a policy that ignores this event inherits the no-op

    def next_timer_ns(self) -> int | None:
        """The earliest internal deadline, or `None` when the policy has no timer armed."""
        return None

    def __repr__(self) -> str:
        window = self.window_bytes
        win = "" if window is None else f" window={window}B"
        return f"<{type(self).__name__} rate={self.rate_bps}bps{win}>"
