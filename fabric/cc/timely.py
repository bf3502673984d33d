"""TIMELY (Mittal et al., SIGCOMM 2015): rate control from the RTT gradient.

Each update compares the new RTT sample with the previous update's:

* `rtt_diff = (1 - a) * rtt_diff + a * (rtt - prev_rtt)` (EWMA, `a = ewma_alpha`) and the
  normalised gradient `rtt_diff / min_rtt`;
* `rtt < Tlow`: additive increase `R += delta`;
* `rtt > Thigh`: multiplicative decrease `R *= 1 - beta * (1 - Thigh / rtt)`;
* otherwise, gradient <= 0: additive increase; gradient > 0: `R *= max(0, 1 - beta * gradient)`;
* after 5 consecutive increases each further increase adds `N * delta` (hyper-active increase),
  and any decrease resets the count; the rate stays within [min rate, line rate].

As in the HPCC simulator, the rate is updated at most once per RTT (the first sample only
primes `prev_rtt`): with an ACK per packet this stands in for the paper's update per
16-64 KB completion event. RTT samples come from `on_rtt` or `on_ack(..., rtt_ns=...)`.
Defaults are the simulator's: Tlow 50 us, Thigh 500 us, beta 0.8, EWMA 0.875, minRTT 20 us,
delta = bw Mb/s (bw = link Gb/s), HAI 5 * delta.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from fabric.cc.base import DEFAULT_MTU, CongestionControl, IntRecord, check

__all__ = ["Timely", "TimelyParams"]


@dataclass(frozen=True, slots=True)
class TimelyParams:
    """TIMELY parameters; `None` rates scale with the link rate."""

    t_low_ns: int = 50_000
    t_high_ns: int = 500_000
    beta: float = 0.8
    ewma_alpha: float = 0.875
    min_rtt_ns: int = 20_000
    rate_ai_bps: int | None = None  # bw Mb/s
    hai_factor: float = 5.0
    hai_after: int = 5  # consecutive increases before HAI
    min_rate_bps: int | None = None  # 1 Gb/s at 100 Gb/s

    def __post_init__(self) -> None:
        check(0 < self.t_low_ns < self.t_high_ns,
              f"timely: need 0 < t_low_ns < t_high_ns, got {self.t_low_ns}, {self.t_high_ns}")
        check(0 < self.beta <= 1, f"timely: beta must be in (0, 1], got {self.beta}")
        check(0 < self.ewma_alpha <= 1,
              f"timely: ewma_alpha must be in (0, 1], got {self.ewma_alpha}")
        check(self.min_rtt_ns > 0, f"timely: min_rtt_ns must be positive, got {self.min_rtt_ns}")
        check(self.rate_ai_bps is None or self.rate_ai_bps > 0,
              f"timely: rate_ai_bps must be positive or None, got {self.rate_ai_bps!r}")
        check(self.hai_factor >= 1, f"timely: hai_factor must be >= 1, got {self.hai_factor}")
        check(self.hai_after >= 0, f"timely: hai_after must be >= 0, got {self.hai_after}")
        check(self.min_rate_bps is None or self.min_rate_bps > 0,
              f"timely: min_rate_bps must be positive or None, got {self.min_rate_bps!r}")


class Timely(CongestionControl):
    """TIMELY for one flow: rate-based, no window."""

    name: ClassVar[str] = "timely"
    needs = frozenset({"fine_rtt"})
    Params: ClassVar[type[TimelyParams]] = TimelyParams

    def __init__(self, line_rate_bps: int, base_rtt_ns: int, mtu: int = DEFAULT_MTU,
                 params: TimelyParams | None = None) -> None:
        super().__init__(line_rate_bps, base_rtt_ns, mtu, params)
        p: TimelyParams = self.params
        gbps = line_rate_bps / 1e9
        self.rate_ai_bps = float(p.rate_ai_bps if p.rate_ai_bps is not None else gbps * 1e6)
        self.rate_hai_bps = self.rate_ai_bps * p.hai_factor
        self.min_rate_bps = float(min(line_rate_bps, p.min_rate_bps if p.min_rate_bps is not None
                                      else line_rate_bps / 100))
        self._rate = float(line_rate_bps)
        self._prev_rtt: int | None = None
        self._rtt_diff = 0.0
        self._increases = 0
        self._next_update_ns = 0

    @property
    def rate_bps(self) -> int:
        return round(self._rate)

    @property
    def rtt_diff_ns(self) -> float:
        """The EWMA of RTT differences between updates."""
        return self._rtt_diff

    @property
    def gradient(self) -> float:
        """The normalised RTT gradient `rtt_diff / min_rtt` of the last update."""
        return self._rtt_diff / self.params.min_rtt_ns

    @property
    def consecutive_increases(self) -> int:
        return self._increases

    def on_ack(self, now_ns: int, acked_bytes: int, rtt_ns: int | None = None,
               ecn_echo: bool = False, int_records: Sequence[IntRecord] | None = None) -> None:
        if rtt_ns is not None:
            self.on_rtt(now_ns, rtt_ns)

    def on_rtt(self, now_ns: int, rtt_ns: int) -> None:
        check(rtt_ns > 0, f"timely: RTT samples must be positive, got {rtt_ns}")
        if self._prev_rtt is None:
            self._prev_rtt = rtt_ns
            self._next_update_ns = now_ns + rtt_ns
            return
        if now_ns < self._next_update_ns:
            return
        p: TimelyParams = self.params
        a = p.ewma_alpha
        self._rtt_diff = (1 - a) * self._rtt_diff + a * (rtt_ns - self._prev_rtt)
        gradient = self._rtt_diff / p.min_rtt_ns
        if rtt_ns < p.t_low_ns:
            self._increase()
        elif rtt_ns > p.t_high_ns:
            self._decrease(1 - p.beta * (1 - p.t_high_ns / rtt_ns))
        elif gradient <= 0:
            self._increase()
        else:
            self._decrease(max(0.0, 1 - p.beta * gradient))
        self._prev_rtt = rtt_ns
        self._next_update_ns = now_ns + rtt_ns

    def _increase(self) -> None:
        step = self.rate_hai_bps if self._increases >= self.params.hai_after else self.rate_ai_bps
        self._rate = min(float(self.line_rate_bps), self._rate + step)
        self._increases += 1

    def _decrease(self, factor: float) -> None:
        self._rate = max(self.min_rate_bps, self._rate * factor)
        self._increases = 0
