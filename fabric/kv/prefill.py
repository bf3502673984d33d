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

**Fitted models.** The seed gives, for the other models of its table, only the KV throughput
of one request on the reference instance (KV bytes x 8 / prefill seconds), so a throughput and
the registry's KV size (`fabric.kv.models`) pin the prefill time at that length:
`seconds(t) = kv_bytes(t) x 8 / throughput(t)`. `SEED_KV_GBPS` holds the seed's figures and
`fitted_profile` turns them into a profile the way the dense model was first done: the hybrid
profile's curve scaled so that its 32K point is the seed's, with the seed's 128K point
replacing the scaled one where the seed gives it.

| model | seed KV Gbit/s | KV size at 32K | prefill @32K | @128K | x hybrid's 32K |
| --- | --- | --- | --- | --- | --- |
| MiniMax-M2.5 (dense) | 59.93 @32K, 47.82 @128K | 8.32 GB | 1.111 s | 5.569 s | 0.604 |
| Qwen3-235B-A22B | 33.12 @32K (egress ratio) | 6.31 GB | 1.524 s | 6.13 s (scaled) | 0.828 |
| MiMo-V2-Flash | 4.66 @32K | 0.781 GB | 1.340 s | 5.39 s (scaled) | 0.728 |
| Kimi-Linear-48B-A3B | 3.87 @32K | 0.308 GB | 0.636 s | 2.56 s (scaled) | 0.346 |
| Ring-2.5-1T | 2.59 @32K, 1.46 @128K | 0.671 GB | 2.073 s | 9.882 s | 1.127 |

**Dense model at 128K.** MiniMax-M2.5's profile used to be the hybrid curve scaled by its 32K
factor (0.604), which gave 4.47 s and 59.6 Gbit/s at 128K where the seed says 47.82 Gbit/s
(33.29 GB of KV in 5.569 s). Its 32K and 128K points are now both the seed's; its 1K point
is the hybrid's 1K point scaled by the 32K factor (0.44 x 0.604 = 0.266 s), i.e. it assumes
the dense model's 1K:32K prefill ratio is the hybrid's (0.239). The seed has no 1K figure for
any model but the hybrid. Ring-2.5-1T's 1K point makes the same assumption.

**Qwen3** reaches the seed only through the 512-H200 egress figures (2.1 Tbps against
MiniMax-M2.5's 3.8 Tbps, the same fleet and request mix), so its 32K throughput is taken as
2.1 / 3.8 x 59.93 = 33.12 Gbit/s; public summaries of the paper quote 33.35 Gbit/s for
Qwen3-235B, 0.7 % away, inside the rounding of "2.1" and "3.8".
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
    "KIMI_LINEAR_H200",
    "MIMO_V2_FLASH_H200",
    "MINIMAX_M25_H200",
    "PROFILES",
    "QWEN3_235B_H200",
    "RING_25_1T_H200",
    "SEED_KV_GBPS",
    "InstanceType",
    "PrefillProfile",
    "fitted_profile",
    "get_profile",
    "kv_throughput_gbps",
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


SEED_KV_GBPS: dict[str, dict[int, float]] = {
    # seed 002, "32K KV Throughput" table, and its 128K comparison (Ring-2.5-1T 1.46 vs
    # MiniMax-M2.5 47.82 Gbps)
    "minimax-m2.5": {32_768: 59.93, 131_072: 47.82},
    "mimo-v2-flash": {32_768: 4.66},
    "kimi-linear-48b-a3b": {32_768: 3.87},
    "ring-2.5-1t": {32_768: 2.59, 131_072: 1.46},
    # seed 002 gives Qwen3 only as 512-H200 egress: 2.1 Tbps against MiniMax-M2.5's 3.8 Tbps
    "qwen3-235b-a22b": {32_768: 59.93 * 2.1 / 3.8},
}
"""The seed's KV throughput (Gbit/s of KV per request on one 8 x H200 instance) by tokens."""


def kv_throughput_gbps(model: str, tokens: int, profile: PrefillProfile | None = None) -> float:
    """KV bits one `model` request of `tokens` emits per second of its prefill on the
    reference instance (`profile` by default the model's own), in Gbit/s."""
    from fabric.kv.models import BUILTIN_MODELS

    spec = BUILTIN_MODELS.get(model) or get_model(model)
    prof = profile or get_profile(model)
    return spec.kv_bytes(tokens) * 8 / prof.seconds(tokens) / 1e9


def fitted_profile(model: str, gbps: dict[int, float]) -> PrefillProfile:
    """A profile for `model` from the seed's KV throughputs (tokens -> Gbit/s, one of them at
    32K): the hybrid curve scaled to the 32K point; where the seed gives 128K, its point."""
    from fabric.kv.models import BUILTIN_MODELS

    spec = BUILTIN_MODELS[model]
    seconds = {t: spec.kv_bytes(t) * 8 / (g * 1e9) for t, g in gbps.items()}
    factor = seconds[32_768] / HYBRID_1T_H200.seconds(32_768)
    name = f"{model}@{H200.name}"
    if set(seconds) == {32_768}:
        return HYBRID_1T_H200.scaled(factor, name=name)
    points = {t: HYBRID_1T_H200.seconds(t) * factor for t, _ in HYBRID_1T_H200.points}
    points.update(seconds)
    return PrefillProfile.from_points(sorted(points.items()), name=name)


def _dense_factor() -> float:
    # 59.93 Gbit/s of KV for a 32K request (seed 002, "32K KV Throughput" table).
    bits = get_model("minimax-m2.5").kv_bytes(32_768) * 8
    return bits / 59.93e9 / HYBRID_1T_H200.seconds(32_768)


DENSE_MINIMAX_FACTOR = _dense_factor()
"""MiniMax-M2.5 / hybrid-1T prefill time at 32K, from the seed's 32K KV throughput (~0.604)."""

MINIMAX_M25_H200 = fitted_profile("minimax-m2.5", SEED_KV_GBPS["minimax-m2.5"])
"""MiniMax-M2.5: the seed's 32K and 128K points, 1K as the hybrid's scaled (module doc)."""

MIMO_V2_FLASH_H200 = fitted_profile("mimo-v2-flash", SEED_KV_GBPS["mimo-v2-flash"])
KIMI_LINEAR_H200 = fitted_profile("kimi-linear-48b-a3b", SEED_KV_GBPS["kimi-linear-48b-a3b"])
RING_25_1T_H200 = fitted_profile("ring-2.5-1t", SEED_KV_GBPS["ring-2.5-1t"])
QWEN3_235B_H200 = fitted_profile("qwen3-235b-a22b", SEED_KV_GBPS["qwen3-235b-a22b"])

PROFILES: dict[str, PrefillProfile] = {
    "prfaas-hybrid-1t": HYBRID_1T_H200,
    "minimax-m2.5": MINIMAX_M25_H200,
    "mimo-v2-flash": MIMO_V2_FLASH_H200,
    "kimi-linear-48b-a3b": KIMI_LINEAR_H200,
    "ring-2.5-1t": RING_25_1T_H200,
    "qwen3-235b-a22b": QWEN3_235B_H200,
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
