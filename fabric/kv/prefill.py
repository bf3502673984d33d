"""Prefill time as a function of uncached tokens, per model and per instance type.

A `PrefillProfile` is a handful of measured `(tokens, seconds)` points on one reference instance
type. Between points it interpolates linearly in log-log space (a power law per segment, which is
how prefill cost behaves: near-constant overhead at short prompts, ~linear at long ones); beyond
the end points it extrapolates with the end segments' slopes. Both are monotone when the points
are, and the points are checked to be.

Another instance type runs the same profile `1 / prefill_speed` times slower:
`seconds = profile.seconds(tokens) / instance.prefill_speed`. Another model with the same shape of
cost is `profile.scaled(factor)`.

**Reference instance.** The seed's profile (0.44 s @1K, 1.84 s @32K, 7.40 s @128K) is one 8-GPU
instance of the PrfaaS cluster, i.e. **8 x H200**: the seed gives ~3.25 Gbit/s of egress per
8-GPU PrfaaS instance (13 Gbit/s over 4 instances) and the profile's own KV throughput
(KV bytes / prefill time) is 3.19-3.61 Gbit/s, which is what a fully busy instance running
exactly that profile emits. So `H200.prefill_speed == 1`.

**H20.** The seed gives no H20 prefill figure directly, but two of its numbers pin one down:

- homogeneous PD (all H20) has a mean TTFT of 4.44 s, while this profile's mean prefill time over
  the case-study prompts (truncated log-normal, mean 27K, sigma 0.95, 1K..128K; see
  `workload.py`) is 1.83 s on H200: 1.83 / 4.44 = 0.41 (an upper bound: that TTFT includes some
  queueing and the KV hop);
- balancing both H20 clusters at the seed's throughputs (12 instances at 2.11 req/s doing full
  prefill + decode; 8 instances at 3.24 req/s doing the 50.4 % short prefills (1.13 s on H200)
  + all decode) gives two equations in (H20 speed, decode instance-seconds per request) with the
  solution 0.39 and 1.04 s.

So `H20.prefill_speed = 0.40`. Public peak dense BF16 tensor FLOPS would say much less:
148 TFLOPS (H20, NVIDIA's China-market spec sheet) / 989 TFLOPS (H200 SXM datasheet) = 0.15
(`H20_PEAK_FLOPS`); with that figure the seed's 2.11 req/s homogeneous throughput is out of reach
for 12 H20 instances (at most 12 x 0.15 / 1.83 s = 0.98 req/s even with no decode at all), so the
seed-implied 0.40 is the default and the peak ratio is kept only for what-if runs.

**Dense model.** MiniMax-M2.5's seed figure is 59.93 Gbit/s of KV per 32K request. With the
registry's shape (`fabric.kv.models`, 253,952 B/token) a 32K request holds 66.57 Gbit, so its
32K prefill takes 66.57 / 59.93 = 1.111 s on the same reference instance, 0.604 of the hybrid
model's 1.84 s (fewer active parameters). `MINIMAX_M25_H200` is the hybrid profile scaled by that
factor: the shape is assumed, the 32K point is the seed's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fabric.errors import FabricError
from fabric.kv.models import get_model

__all__ = [
    "DENSE_MINIMAX_FACTOR",
    "H20",
    "H20_PEAK_FLOPS",
    "H200",
    "HYBRID_1T_H200",
    "INSTANCE_TYPES",
    "MINIMAX_M25_H200",
    "PROFILES",
    "InstanceType",
    "PrefillProfile",
    "get_profile",
]


@dataclass(frozen=True)
class InstanceType:
    """One serving instance (8 GPUs in the seed) and its prefill speed relative to the profile's
    reference instance (8 x H200 = 1.0). Higher is faster."""

    name: str
    prefill_speed: float

    def __post_init__(self) -> None:
        if not self.prefill_speed > 0 or not math.isfinite(self.prefill_speed):
            raise FabricError(f"instance type {self.name!r}: prefill_speed must be a positive "
                              f"number, not {self.prefill_speed!r}")


@dataclass(frozen=True)
class PrefillProfile:
    """Measured prefill seconds at a few prompt lengths on the reference instance type."""

    points: tuple[tuple[int, float], ...]
    name: str = ""

    def __post_init__(self) -> None:
        pts = tuple((int(t), float(s)) for t, s in self.points)
        object.__setattr__(self, "points", pts)
        if len(pts) < 2:
            raise FabricError("a prefill profile needs at least 2 (tokens, seconds) points")
        for t, s in pts:
            if t <= 0 or not s > 0 or not math.isfinite(s):
                raise FabricError(f"profile point ({t}, {s}): tokens and seconds must be > 0")
        for (t0, s0), (t1, s1) in zip(pts, pts[1:], strict=False):
            if not (t1 > t0 and s1 > s0):
                raise FabricError(
                    f"profile points must increase in both tokens and seconds: ({t0}, {s0}) "
                    f"then ({t1}, {s1}); sort them and drop non-monotone measurements")

    def seconds(self, tokens: float) -> float:
        """Prefill seconds for `tokens` uncached tokens on the reference instance (0 for 0)."""
        if tokens <= 0:
            return 0.0
        x = math.log(tokens)
        pts = self.points
        # Segment index: the last segment whose left end is <= x, clamped to the end segments
        # so that beyond the points we extrapolate with the end slopes.
        i = 0
        while i < len(pts) - 2 and x >= math.log(pts[i + 1][0]):
            i += 1
        (t0, s0), (t1, s1) = pts[i], pts[i + 1]
        lx0, lx1, ly0, ly1 = math.log(t0), math.log(t1), math.log(s0), math.log(s1)
        if tokens == t0:
            return s0
        if tokens == t1:
            return s1
        return math.exp(ly0 + (x - lx0) * (ly1 - ly0) / (lx1 - lx0))

    def seconds_on(self, tokens: float, instance: InstanceType) -> float:
        """Prefill seconds for `tokens` on `instance` (the reference time over its speed)."""
        return self.seconds(tokens) / instance.prefill_speed

    def scaled(self, factor: float, name: str = "") -> PrefillProfile:
        """The same curve `factor` times slower (factor < 1: faster), e.g. another model."""
        if not factor > 0:
            raise FabricError(f"profile scale factor must be > 0, not {factor!r}")
        return PrefillProfile(tuple((t, s * factor) for t, s in self.points), name=name)

    @classmethod
    def from_points(cls, points: Sequence[tuple[int, float]], name: str = "") -> PrefillProfile:
        """A profile from any sequence of (tokens, seconds) pairs."""
        return cls(tuple((int(t), float(s)) for t, s in points), name=name)


H200 = InstanceType("h200x8", 1.0)
"""8 x H200: the reference instance the seed's hybrid profile was measured on (see module doc)."""

H20 = InstanceType("h20x8", 0.40)
"""8 x H20, speed implied by the seed's homogeneous-PD TTFT and throughput (module doc)."""

H20_PEAK_FLOPS = InstanceType("h20x8-peak-flops", 148 / 989)
"""8 x H20 scaled by public peak dense BF16 FLOPS (148 vs 989 TFLOPS): a what-if, not a default."""

INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t for t in (H200, H20, H20_PEAK_FLOPS)}

# Seed 002: "At 1K tokens ... prefill latency is 0.44 seconds ... at 32K ... 1.84 seconds ... at
# 128K ... 7.40 seconds" for the internal 1T hybrid model (fabric.kv model "prfaas-hybrid-1t").
HYBRID_1T_H200 = PrefillProfile(
    ((1_024, 0.44), (32_768, 1.84), (131_072, 7.40)), name="prfaas-hybrid-1t@h200x8")


def _dense_factor() -> float:
    # 59.93 Gbit/s of KV for a 32K request (seed 002, "32K KV Throughput" table).
    bits = get_model("minimax-m2.5").kv_bytes(32_768) * 8
    return bits / 59.93e9 / HYBRID_1T_H200.seconds(32_768)


DENSE_MINIMAX_FACTOR = _dense_factor()
"""MiniMax-M2.5 / hybrid-1T prefill time, from the seed's 32K KV throughput (~0.604)."""

MINIMAX_M25_H200 = HYBRID_1T_H200.scaled(DENSE_MINIMAX_FACTOR, name="minimax-m2.5@h200x8")

PROFILES: dict[str, PrefillProfile] = {
    "prfaas-hybrid-1t": HYBRID_1T_H200,
    "minimax-m2.5": MINIMAX_M25_H200,
}


def get_profile(model: str) -> PrefillProfile:
    """The reference-instance (8 x H200) prefill profile of `model`."""
    try:
        return PROFILES[model.lower()]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise FabricError(f"no prefill profile for model {model!r}: profiles exist for {known}; "
                          "build one with PrefillProfile(points) or profile.scaled(factor)"
                          ) from None
