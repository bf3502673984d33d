"""DCQCN (Zhu et al., SIGCOMM 2015) as the HPCC simulator's Mellanox model runs it.

The reaction point is rate-based and driven by CNPs and three timers:

* **alpha timer** (every `alpha_interval_ns` once the first CNP arrived):
  `alpha = (1 - g) * alpha + g` if a CNP arrived since the last tick, else `(1 - g) * alpha`;
* **rate decrease**: on a CNP the target rate takes the current rate (unless the flow has not
  increased since the last cut and `clamp_target_rate` is off, as in the simulator) and
  `Rc *= (1 - alpha / 2)`, never below the minimum rate. Cuts are at most one per
  `rate_decrease_interval_ns`: a CNP inside the interval is remembered and applied when it ends
  (the simulator checks a "CNP arrived" bit every interval; cutting at once when allowed gives
  the same rate of cuts without the up-to-one-interval lag);
* **rate increase timer** (every `rate_increase_interval_ns` after a cut, reset by each cut):
  the first `fast_recovery_stages` ticks are fast recovery `Rc = (Rc + Rt) / 2`; the next tick
  is additive increase (`Rt += AI`, then the same halving step) and every later tick hyper
  increase (`Rt += HAI`). The simulator has no byte counter, so stages count timer ticks only.

The first CNP initialises alpha to 1 (so the first cut halves the rate) and starts the alpha
timer, as in the simulator. Defaults are the HPCC simulator's (run.py), with the rates scaled by
the link's Gb/s over 25: AI 5*bw/25 Mb/s, HAI 50*bw/25 Mb/s, min rate 1 Gb/s at 100 Gb/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fabric.cc.base import DEFAULT_MTU, CongestionControl, check

__all__ = ["Dcqcn", "DcqcnParams"]


@dataclass(frozen=True, slots=True)
class DcqcnParams:
    """DCQCN reaction-point parameters; `None` rates scale with the link rate."""

    g: float = 1 / 256
    alpha_interval_ns: int = 1_000
    rate_decrease_interval_ns: int = 4_000
    rate_increase_interval_ns: int = 300_000
    fast_recovery_stages: int = 5
    rate_ai_bps: int | None = None  # 5 * bw / 25 Mb/s
    rate_hai_bps: int | None = None  # 50 * bw / 25 Mb/s
    min_rate_bps: int | None = None  # 1 Gb/s at 100 Gb/s
    rate_on_first_cnp: float = 1.0
    clamp_target_rate: bool = False
    initial_alpha: float = 1.0

    def __post_init__(self) -> None:
        check(0 < self.g <= 1, f"dcqcn: g must be in (0, 1], got {self.g}")
        for field in ("alpha_interval_ns", "rate_decrease_interval_ns",
                      "rate_increase_interval_ns"):
            value = getattr(self, field)
            check(isinstance(value, int) and value > 0,
                  f"dcqcn: {field} must be a positive integer (ns), got {value!r}")
        check(isinstance(self.fast_recovery_stages, int) and self.fast_recovery_stages >= 0,
              f"dcqcn: fast_recovery_stages must be an integer >= 0, "
              f"got {self.fast_recovery_stages!r}")
        for field in ("rate_ai_bps", "rate_hai_bps", "min_rate_bps"):
            value = getattr(self, field)
            check(value is None or value > 0,
                  f"dcqcn: {field} must be positive (bits/s) or None, got {value!r}")
        check(0 < self.rate_on_first_cnp <= 1,
              f"dcqcn: rate_on_first_cnp must be in (0, 1], got {self.rate_on_first_cnp}")
        check(0 <= self.initial_alpha <= 1,
              f"dcqcn: initial_alpha must be in [0, 1], got {self.initial_alpha}")


class Dcqcn(CongestionControl):
    """DCQCN reaction point for one flow: rate-based, no window."""

    name: ClassVar[str] = "dcqcn"
    needs = frozenset({"ecn"})
    Params: ClassVar[type[DcqcnParams]] = DcqcnParams

    def __init__(self, line_rate_bps: int, base_rtt_ns: int, mtu: int = DEFAULT_MTU,
                 params: DcqcnParams | None = None) -> None:
        super().__init__(line_rate_bps, base_rtt_ns, mtu, params)
        p: DcqcnParams = self.params
        gbps = line_rate_bps / 1e9
        self.rate_ai_bps = float(p.rate_ai_bps if p.rate_ai_bps is not None
                                 else 5 * gbps / 25 * 1e6)
        self.rate_hai_bps = float(p.rate_hai_bps if p.rate_hai_bps is not None
                                  else 50 * gbps / 25 * 1e6)
        self.min_rate_bps = float(min(line_rate_bps, p.min_rate_bps if p.min_rate_bps is not None
                                      else line_rate_bps / 100))
        self._rate = float(line_rate_bps)
        self._target = float(line_rate_bps)
        self._alpha = p.initial_alpha
        self._alpha_cnp = False  # a CNP arrived since the last alpha tick
        self._started = False  # the first CNP arrived
        self._next_alpha_ns: int | None = None
        self._cut_allowed_ns = 0  # earliest time of the next cut
        self._cut_pending = False  # a CNP arrived while cuts were held off
        self._next_increase_ns: int | None = None
        self._stage = 0  # rate-increase timer ticks since the last cut

    # -- outputs -----------------------------------------------------------------------------

    @property
    def rate_bps(self) -> int:
        return round(self._rate)

    @property
    def target_rate_bps(self) -> int:
        """The target rate Rt that fast recovery converges to."""
        return round(self._target)

    @property
    def alpha(self) -> float:
        """The congestion estimate alpha in [0, 1]."""
        return self._alpha

    @property
    def stage(self) -> int:
        """Rate-increase timer ticks since the last cut (< F: fast recovery, F: AI, > F: HAI)."""
        return self._stage

    # -- events ------------------------------------------------------------------------------

    def on_cnp(self, now_ns: int) -> None:
        self.on_timer(now_ns)  # a late caller must not let old timers see this CNP
        if not self._started:
            self._started = True
            self._alpha = self.params.initial_alpha
            self._next_alpha_ns = now_ns + self.params.alpha_interval_ns
            self._rate = max(self.min_rate_bps, self._rate * self.params.rate_on_first_cnp)
            self._target = self._rate
        else:
            self._alpha_cnp = True
        if now_ns >= self._cut_allowed_ns:
            self._cut(now_ns)
        else:
            self._cut_pending = True

    def next_timer_ns(self) -> int | None:
        deadlines = [t for t in (self._next_alpha_ns, self._next_increase_ns) if t is not None]
        if self._cut_pending:
            deadlines.append(self._cut_allowed_ns)
        return min(deadlines) if deadlines else None

    def on_timer(self, now_ns: int) -> None:
        while True:
            # Ties run alpha first, then the cut, then the increase (the simulator's order).
            due: list[tuple[int, int]] = []
            if self._next_alpha_ns is not None and self._next_alpha_ns <= now_ns:
                due.append((self._next_alpha_ns, 0))
            if self._cut_pending and self._cut_allowed_ns <= now_ns:
                due.append((self._cut_allowed_ns, 1))
            if self._next_increase_ns is not None and self._next_increase_ns <= now_ns:
                due.append((self._next_increase_ns, 2))
            if not due:
                return
            when, which = min(due)
            if which == 0:
                self._alpha_tick(when)
            elif which == 1:
                self._cut_pending = False
                self._cut(when)
            else:
                self._increase(when)

    # -- internals ---------------------------------------------------------------------------

    def _alpha_tick(self, when: int) -> None:
        g = self.params.g
        self._alpha = (1 - g) * self._alpha + (g if self._alpha_cnp else 0.0)
        self._alpha_cnp = False
        self._next_alpha_ns = when + self.params.alpha_interval_ns

    def _cut(self, when: int) -> None:
        if self.params.clamp_target_rate or self._stage != 0:
            self._target = self._rate
        self._rate = max(self.min_rate_bps, self._rate * (1 - self._alpha / 2))
        self._stage = 0
        self._cut_allowed_ns = when + self.params.rate_decrease_interval_ns
        self._next_increase_ns = when + self.params.rate_increase_interval_ns

    def _increase(self, when: int) -> None:
        stages = self.params.fast_recovery_stages
        if self._stage == stages:
            self._target = min(float(self.line_rate_bps), self._target + self.rate_ai_bps)
        elif self._stage > stages:
            self._target = min(float(self.line_rate_bps), self._target + self.rate_hai_bps)
        self._rate = min(float(self.line_rate_bps), (self._rate + self._target) / 2)
        self._stage += 1
        self._next_increase_ns = when + self.params.rate_increase_interval_ns
