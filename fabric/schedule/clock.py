"""Plesiosynchronous clocks: every LPU counts its own time, drifting, and is pulled back by resyncs.

A `DriftingClock` maps true time to what one node's clock reads. It starts at `offset_ns` ahead
of true time and runs `drift_ppm` fast (negative: slow). Every `resync_period_ns` of true time
it is set back to true time plus a resync error drawn, deterministically from `seed`, uniformly
from [-resync_error_ns, +resync_error_ns]; between resyncs it drifts linearly again.

Two such clocks, one `+d` ppm and one `-d` ppm, drift apart by up to 2 * d * 1e-6 * period
before the next resync pulls them together: that is the guard band a compiled plan needs
(`required_guard_ns`), plus whatever fixed skew (offset, resync error) the caller adds.

Pure: the clock is a function of the true time passed in; it has no time of its own.
"""

from __future__ import annotations

import math

from fabric.errors import FabricError

__all__ = ["DriftingClock", "required_guard_ns"]

_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread, platform-independent hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def required_guard_ns(drift_ppm: float, resync_period_ns: int | None, offset_ns: int = 0) -> int:
    """Smallest guard band that absorbs clock drift between resyncs, plus a fixed `offset_ns`.

    = ceil(2 * |drift_ppm| * 1e-6 * resync_period_ns) + offset_ns: a sender drifting one way and
    a receiver the other diverge at twice the drift rate for a whole period. Without resyncs any
    non-zero drift grows without bound, so that is an error rather than a guess.
    """
    if offset_ns < 0:
        raise FabricError(f"guard offset must be >= 0 ns, got {offset_ns}")
    if drift_ppm == 0:
        return int(offset_ns)
    if resync_period_ns is None:
        raise FabricError(f"clock drift of {drift_ppm} ppm without resyncs grows without bound; "
                          f"pass resync_period_ns so a finite guard band can cover it")
    if resync_period_ns <= 0:
        raise FabricError(f"resync_period_ns must be > 0, got {resync_period_ns}")
    # Integer maths on 2*|ppm|*period/1e6 so exact multiples do not round up by a float ulp.
    num = 2 * abs(drift_ppm) * resync_period_ns
    return math.ceil(round(num, 6) / 1_000_000) + int(offset_ns)


class DriftingClock:
    """One node's clock: `local(true_ns)` and its inverse `true_at(local_ns)`.

    Resync k (k >= 1) happens at true time k * resync_period_ns and sets the clock to true time
    plus error e_k, where e_k is a deterministic function of (`seed`, k). Before the first
    resync the clock reads `offset_ns` ahead. Readings are rounded to whole nanoseconds.
    """

    __slots__ = ("drift_ppm", "offset_ns", "resync_error_ns", "resync_period_ns", "seed")

    def __init__(self, drift_ppm: float, offset_ns: int, resync_period_ns: int | None,
                 resync_error_ns: int = 0, *, seed: int = 0) -> None:
        if not drift_ppm > -1_000_000:
            raise FabricError(f"drift_ppm must be > -1e6 (a clock cannot run backwards), "
                              f"got {drift_ppm}")
        if resync_period_ns is not None and resync_period_ns <= 0:
            raise FabricError(f"resync_period_ns must be > 0 or None, got {resync_period_ns}")
        if resync_error_ns < 0:
            raise FabricError(f"resync_error_ns must be >= 0, got {resync_error_ns}")
        self.drift_ppm = float(drift_ppm)
        self.offset_ns = int(offset_ns)
        self.resync_period_ns = resync_period_ns
        self.resync_error_ns = int(resync_error_ns)
        self.seed = int(seed)

    def __repr__(self) -> str:
        return (f"DriftingClock(drift_ppm={self.drift_ppm}, offset_ns={self.offset_ns}, "
                f"resync_period_ns={self.resync_period_ns}, "
                f"resync_error_ns={self.resync_error_ns}, seed={self.seed})")

    # ---- segments: the clock is linear between resyncs ----------------------------------

    def resync_error(self, k: int) -> int:
        """Error e_k the clock is set to at resync k (k >= 1), in [-err, +err]."""
        e = self.resync_error_ns
        if e == 0:
            return 0
        h = _mix64(_mix64(self.seed & _MASK64) ^ (k & _MASK64))
        return h % (2 * e + 1) - e

    def _segment(self, true_ns: int) -> int:
        if self.resync_period_ns is None or true_ns < 0:
            return 0
        return true_ns // self.resync_period_ns

    def _start(self, k: int) -> tuple[int, int]:
        """(true time, local reading) at the start of segment k."""
        if k == 0:
            return 0, self.offset_ns
        assert self.resync_period_ns is not None
        t0 = k * self.resync_period_ns
        return t0, t0 + self.resync_error(k)

    def _drift(self, elapsed: int) -> int:
        return round(elapsed * self.drift_ppm / 1_000_000)

    def local(self, true_ns: int) -> int:
        """What this clock reads at true time `true_ns`."""
        t0, l0 = self._start(self._segment(true_ns))
        elapsed = true_ns - t0
        return l0 + elapsed + self._drift(elapsed)

    def error_ns(self, true_ns: int) -> int:
        """local(true_ns) - true_ns: how far ahead (positive) or behind this clock is."""
        return self.local(true_ns) - true_ns

    def true_at(self, local_ns: int) -> int:
        """The earliest true time (>= 0) at which this clock reads `local_ns` or later.

        This is when a node that waits for its clock to reach `local_ns` acts. Where a resync
        steps the clock forward over `local_ns`, that is the resync instant; where a resync
        steps it back, the first crossing counts. Otherwise local(true_at(x)) == x.
        """
        if local_ns <= self.local(0):
            return 0
        period = self.resync_period_ns
        if period is None:
            return self._solve(0, self.offset_ns, local_ns, None)
        # A segment's readings stay within `slack` of true time, so none before k0 reaches x.
        slack = max(abs(self.offset_ns), self.resync_error_ns) \
            + math.ceil(abs(self.drift_ppm) * period / 1_000_000) + 1
        k = max(0, (local_ns - slack) // period - 1)
        while True:
            t0, l0 = self._start(k)
            end = t0 + period  # exclusive
            if self.local(end - 1) >= local_ns:
                if l0 >= local_ns:
                    return t0
                return self._solve(t0, l0, local_ns, end - 1)
            k += 1

    def _solve(self, t0: int, l0: int, x: int, t_max: int | None) -> int:
        """Smallest t in [t0, t_max] with l0 + (t - t0) + drift(t - t0) >= x (exists by caller)."""
        rate = 1.0 + self.drift_ppm / 1_000_000
        t = t0 + max(0, math.ceil((x - l0) / rate))
        if t_max is not None:
            t = min(t, t_max)

        def reads(tt: int) -> int:
            e = tt - t0
            return l0 + e + self._drift(e)

        # The float guess is within a few ns; settle it exactly on the rounded readings.
        while t > t0 and reads(t - 1) >= x:
            t -= 1
        while reads(t) < x:
            t += 1
        return t

    def max_error_ns(self, horizon_ns: int) -> int:
        """Worst-case |local(t) - t| over t in [0, horizon_ns], whatever the resync errors draw.

        A bound from the parameters (offset, drift over at most one period, resync error), not
        from this seed's draws, since a plan's guard band must hold for any run.
        """
        if horizon_ns < 0:
            raise FabricError(f"horizon_ns must be >= 0, got {horizon_ns}")
        d = abs(self.drift_ppm) / 1_000_000
        period = self.resync_period_ns
        first = horizon_ns if period is None else min(horizon_ns, period)
        worst = abs(self.offset_ns) + math.ceil(d * first)
        if period is not None and horizon_ns >= period:
            worst = max(worst, self.resync_error_ns + math.ceil(d * period))
        return worst
