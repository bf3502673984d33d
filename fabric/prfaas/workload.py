"""Seeded request streams for the PrfaaS case study. Pure: numpy's generator, no clock.

**Prompts** are truncated log-normal on `[min_tokens, max_tokens]` with the log-mean chosen so
that the *truncated* mean is `mean_tokens` (unlike `fabric.traffic.sample_prompt`, whose mean is
the untruncated one's): the seed quotes the mean of the served prompts. The case-study defaults
(mean 27K, sigma 0.95, 1K..128K, 1,024 output tokens) are fitted to the seed: with them 49.6 %
of prompts exceed 19.4K tokens and those average ~44K, the seed's "49.6 % offloaded, offloaded
mean length ~44K" at a 19.4K threshold (sigma 0.9 gives 50.5 % / 42.8K, 1.0 gives 48.7 % / 44.7K).

**Prefix cache.** A `prefix_hit_rate` share of requests (each independently) hit the prefix
cache; a hit covers a uniform 50-90 % prefix of the prompt, rounded down to whole 16-token KV
blocks (prefix caches match whole blocks). `uncached_tokens = prompt_tokens - cached_tokens` is
what prefill has to compute and what the router looks at.

**Arrivals** are Poisson (`fabric.traffic.arrivals`): the first request at t = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fabric.errors import FabricError
from fabric.kv.layout import BLOCK_SIZE
from fabric.traffic import arrivals

__all__ = ["HIT_FRACTION", "Request", "generate", "lognormal_mu"]

HIT_FRACTION = (0.5, 0.9)
"""Share of the prompt a prefix-cache hit covers: uniform on this range."""


@dataclass(frozen=True)
class Request:
    """One inference request: arrives, prefills its uncached tokens, decodes `output_tokens`."""

    id: int
    arrival_s: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int

    def __post_init__(self) -> None:
        if not 0 <= self.cached_tokens <= self.prompt_tokens:
            raise FabricError(f"request {self.id}: cached_tokens must be within 0..prompt_tokens "
                              f"({self.prompt_tokens}), not {self.cached_tokens}")
        if self.prompt_tokens <= 0 or self.output_tokens <= 0:
            raise FabricError(f"request {self.id}: prompt_tokens and output_tokens must be > 0")

    @property
    def uncached_tokens(self) -> int:
        """Tokens prefill must compute (the prompt minus its prefix-cache hit)."""
        return self.prompt_tokens - self.cached_tokens


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _truncated_mean(mu: float, sigma: float, lo: float, hi: float) -> float:
    a, b = math.log(lo), math.log(hi)
    mass = _phi((b - mu) / sigma) - _phi((a - mu) / sigma)
    if mass <= 0:
        return math.exp(mu)
    part = _phi((b - mu - sigma**2) / sigma) - _phi((a - mu - sigma**2) / sigma)
    return math.exp(mu + sigma**2 / 2) * part / mass


def lognormal_mu(mean_tokens: float, sigma: float, min_tokens: int, max_tokens: int) -> float:
    """The log-mean whose log-normal, truncated to [min, max], has mean `mean_tokens`."""
    lo, hi = math.log(min_tokens) - 10 * sigma, math.log(max_tokens) + 10 * sigma
    for _ in range(200):  # the truncated mean is increasing in mu: bisect
        mid = (lo + hi) / 2
        if _truncated_mean(mid, sigma, min_tokens, max_tokens) < mean_tokens:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def generate(
    seed: int,
    n: int,
    rate_per_s: float,
    mean_tokens: float = 27_000,
    sigma: float = 0.95,
    min_tokens: int = 1_024,
    max_tokens: int = 131_072,
    output_tokens: int = 1_024,
    prefix_hit_rate: float = 0.0,
) -> list[Request]:
    """`n` requests, ids 0..n-1 in arrival order; the same seed gives the same list."""
    if n < 0:
        raise FabricError(f"n must be >= 0, not {n}")
    if not rate_per_s > 0:
        raise FabricError(f"rate_per_s must be > 0, not {rate_per_s}")
    if not 0 < min_tokens <= mean_tokens <= max_tokens:
        raise FabricError(f"need 0 < min_tokens ({min_tokens}) <= mean_tokens ({mean_tokens}) "
                          f"<= max_tokens ({max_tokens})")
    if not sigma > 0:
        raise FabricError(f"sigma must be > 0, not {sigma}")
    if not 0.0 <= prefix_hit_rate <= 1.0:
        raise FabricError(f"prefix_hit_rate must be within 0..1, not {prefix_hit_rate}")
    if output_tokens <= 0:
        raise FabricError(f"output_tokens must be > 0, not {output_tokens}")
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    times = arrivals(rng, n, rate_per_s, "poisson")
    mu = lognormal_mu(mean_tokens, sigma, min_tokens, max_tokens)
    prompts: list[float] = []
    while len(prompts) < n:  # rejection sampling: exact truncation, seeded
        x = rng.lognormal(mu, sigma, size=max(64, 2 * (n - len(prompts))))
        prompts.extend(float(v) for v in x[(x >= min_tokens) & (x <= max_tokens)])
    hits = rng.random(n) < prefix_hit_rate
    fractions = rng.uniform(*HIT_FRACTION, size=n)
    out = []
    for i in range(n):
        prompt = min(max(int(round(prompts[i])), min_tokens), max_tokens)
        cached = 0
        if hits[i]:
            cached = int(prompt * fractions[i]) // BLOCK_SIZE * BLOCK_SIZE
        out.append(Request(id=i, arrival_s=float(times[i]), prompt_tokens=prompt,
                           cached_tokens=cached, output_tokens=output_tokens))
    return out
