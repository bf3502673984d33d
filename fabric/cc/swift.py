"""Swift (Kumar et al., SIGCOMM 2020): a delay-target window, AIMD on the measured RTT.

On every ACK with delay `d` (the RTT sample) against the target
`target = base_target + hops * hop_scale`:

* `d < target`: additive increase, `cwnd += ai * acked / cwnd` packets when cwnd >= 1 (so about
  `ai` packets per RTT) and `cwnd += ai * acked` below one packet;
* `d >= target`: multiplicative decrease
  `cwnd *= max(1 - beta * (d - target) / d, 1 - max_mdf)`, at most once per RTT
  (`now - last_decrease >= rtt`);
* a loss (`on_nak`) cuts by `max_mdf`, under the same once-per-RTT rule.

`cwnd` is in packets of `mtu` bytes and kept in [min_cwnd, max_cwnd]. Below one packet Swift
paces: the rate is `cwnd * mtu / rtt`; otherwise the window alone limits the sender and the
pacing rate is the line rate. Swift is not in the HPCC simulator; the defaults are the paper's
(ai 1, beta 0.8, max_mdf 0.5), and the base target defaults to the base RTT plus 10 us of
queueing because the paper's absolute targets assume Google's fabric. Flow-count scaling of the
target (`fs_range`) is left out: one instance sees one flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from fabric.cc.base import DEFAULT_MTU, NS_PER_S, CongestionControl, IntRecord, check

__all__ = ["Swift", "SwiftParams"]


@dataclass(frozen=True, slots=True)
class SwiftParams:
    """Swift parameters; `None` values are derived from the base RTT and the line-rate BDP."""

    base_target_ns: int | None = None  # base RTT + 10 us
    hops: int = 1
    hop_scale_ns: int = 1_000
    ai: float = 1.0  # packets per RTT
    beta: float = 0.8
    max_mdf: float = 0.5
    min_cwnd: float = 0.001  # packets
    max_cwnd: float | None = None  # packets; None = 4 line-rate BDPs
    init_cwnd: float | None = None  # packets; None = one line-rate BDP

    def __post_init__(self) -> None:
        check(self.base_target_ns is None or self.base_target_ns > 0,
              f"swift: base_target_ns must be positive or None, got {self.base_target_ns!r}")
        check(self.hops >= 0 and self.hop_scale_ns >= 0,
              f"swift: hops and hop_scale_ns must be >= 0, got {self.hops}, {self.hop_scale_ns}")
        check(self.ai > 0, f"swift: ai must be positive, got {self.ai}")
        check(0 < self.beta <= 1, f"swift: beta must be in (0, 1], got {self.beta}")
        check(0 < self.max_mdf < 1, f"swift: max_mdf must be in (0, 1), got {self.max_mdf}")
        check(self.min_cwnd > 0, f"swift: min_cwnd must be positive, got {self.min_cwnd}")
        check(self.max_cwnd is None or self.max_cwnd >= self.min_cwnd,
              f"swift: max_cwnd must be >= min_cwnd, got {self.max_cwnd}")
        check(self.init_cwnd is None or self.init_cwnd > 0,
              f"swift: init_cwnd must be positive or None, got {self.init_cwnd!r}")


class Swift(CongestionControl):
    """Swift for one flow: a window in packets, paced only below one packet."""

    name: ClassVar[str] = "swift"
    Params: ClassVar[type[SwiftParams]] = SwiftParams

    def __init__(self, line_rate_bps: int, base_rtt_ns: int, mtu: int = DEFAULT_MTU,
                 params: SwiftParams | None = None) -> None:
        super().__init__(line_rate_bps, base_rtt_ns, mtu, params)
        p: SwiftParams = self.params
        bdp_packets = line_rate_bps * base_rtt_ns / NS_PER_S / 8 / mtu
        base_target = p.base_target_ns if p.base_target_ns is not None else base_rtt_ns + 10_000
        self.target_delay_ns = base_target + p.hops * p.hop_scale_ns
        self.max_cwnd = p.max_cwnd if p.max_cwnd is not None else max(4 * bdp_packets, 1.0)
        self.min_cwnd = p.min_cwnd
        init = p.init_cwnd if p.init_cwnd is not None else max(bdp_packets, 1.0)
        self._cwnd = min(self.max_cwnd, max(self.min_cwnd, init))
        self._rtt_ns = base_rtt_ns
        self._last_decrease_ns: int | None = None

    @property
    def cwnd(self) -> float:
        """The congestion window in packets (may be below 1)."""
        return self._cwnd

    @property
    def window_bytes(self) -> int:
        return max(self.mtu, round(self._cwnd * self.mtu))

    @property
    def rate_bps(self) -> int:
        if self._cwnd >= 1:
            return self.line_rate_bps
        return min(self.line_rate_bps, round(self._cwnd * self.mtu * 8 * NS_PER_S / self._rtt_ns))

    def on_ack(self, now_ns: int, acked_bytes: int, rtt_ns: int | None = None,
               ecn_echo: bool = False, int_records: Sequence[IntRecord] | None = None) -> None:
        if rtt_ns is not None:
            check(rtt_ns > 0, f"swift: RTT samples must be positive, got {rtt_ns}")
            self._rtt_ns = rtt_ns
        delay = self._rtt_ns
        target = self.target_delay_ns
        if delay < target:
            acked = acked_bytes / self.mtu
            if self._cwnd >= 1:
                self._cwnd += self.params.ai * acked / self._cwnd
            else:
                self._cwnd += self.params.ai * acked
        elif self._can_decrease(now_ns):
            p: SwiftParams = self.params
            self._cwnd *= max(1 - p.beta * (delay - target) / delay, 1 - p.max_mdf)
            self._last_decrease_ns = now_ns
        self._cwnd = min(self.max_cwnd, max(self.min_cwnd, self._cwnd))

    def on_rtt(self, now_ns: int, rtt_ns: int) -> None:
        check(rtt_ns > 0, f"swift: RTT samples must be positive, got {rtt_ns}")
        self._rtt_ns = rtt_ns

    def on_nak(self, now_ns: int) -> None:
        if self._can_decrease(now_ns):
            self._cwnd = max(self.min_cwnd, self._cwnd * (1 - self.params.max_mdf))
            self._last_decrease_ns = now_ns

    def _can_decrease(self, now_ns: int) -> bool:
        last = self._last_decrease_ns
        return last is None or now_ns - last >= self._rtt_ns
