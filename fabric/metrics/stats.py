"""Statistics over run records: percentiles, jitter, goodput, FCT slowdown.

Pure functions of numbers; they return plain Python floats/ints (never numpy scalars) so the
results go straight into JSON. They know nothing of time scales: callers pass wall-clock values
and convert (see `summary`).

Percentile definition: numpy's default 'linear' method (Hyndman & Fan type 7): for sorted
values x[0..n-1], the q-th percentile is at rank h = (n - 1) * q / 100, interpolated linearly
between x[floor(h)] and x[ceil(h)]. So p50 of [1, 2, 3, 4] is 2.5 and p99 of 1..100 is 99.01.
It is continuous and matches what numpy, pandas and most plotting tools report; with few samples
the high percentiles lie between the two largest values rather than on the maximum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .records import ChunkRecord

__all__ = [
    "PERCENTILES",
    "goodput_bps",
    "goodput_series",
    "lateness_between",
    "p99_minus_p50",
    "percentiles",
    "rfc3550_jitter",
    "slowdown",
    "stddev",
]

NS_PER_S = 1_000_000_000
# (key, q) in the order reports show them.
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def _array(values: Iterable[float]) -> np.ndarray:
    return np.asarray(list(values), dtype=np.float64)


def percentiles(values: Iterable[float]) -> dict[str, float | int | None]:
    """p50, p90, p99, p99.9, max, min, mean and count of `values` (numpy 'linear' method).

    An empty input gives count 0 and None for every other key.
    """
    a = _array(values)
    if a.size == 0:
        d: dict[str, float | int | None] = {k: None for k, _ in PERCENTILES}
        d.update(max=None, min=None, mean=None, count=0)
        return d
    qs = np.percentile(a, [q for _, q in PERCENTILES], method="linear")
    d = {k: float(v) for (k, _), v in zip(PERCENTILES, qs, strict=True)}
    d.update(max=float(a.max()), min=float(a.min()), mean=float(a.mean()), count=int(a.size))
    return d


def rfc3550_jitter(transit_times_ns: Sequence[float]) -> float:
    """RFC 3550 (6.4.1) interarrival jitter of transit times given in arrival order.

    J starts at 0; for each consecutive pair D = transit[i] - transit[i-1] and
    J += (|D| - J) / 16. The final J is returned; fewer than two values leave it at 0.
    Transit time = receive time - send time (here: chunk one-way latency).
    """
    j = 0.0
    prev: float | None = None
    for t in transit_times_ns:
        if prev is not None:
            j += (abs(float(t) - prev) - j) / 16.0
        prev = float(t)
    return j


def stddev(values: Iterable[float]) -> float | None:
    """Population standard deviation (ddof=0); None for no values."""
    a = _array(values)
    return float(a.std()) if a.size else None


def p99_minus_p50(values: Iterable[float]) -> float | None:
    """Spread of the tail: p99 - p50 (linear method); None for no values."""
    a = _array(values)
    if a.size == 0:
        return None
    p50, p99 = np.percentile(a, [50.0, 99.0], method="linear")
    return float(p99 - p50)


def goodput_bps(nbytes: int, duration_ns: float) -> float | None:
    """Bits per second of `nbytes` delivered over `duration_ns`; None when the duration is not
    positive (a rate over no time is undefined, not infinite)."""
    if duration_ns <= 0:
        return None
    return nbytes * 8 * NS_PER_S / float(duration_ns)


def goodput_series(records: Iterable[ChunkRecord], bin_ns: int, *,
                   t0_ns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Goodput over time: bytes of intact chunks (`ok`) binned by their `t_last_ns`.

    Returns `(t, bps)`: t[i] is the start of bin i in ns relative to `t0_ns` (default: the
    earliest `t_send_ns`), bps[i] the bits per second delivered in [t[i], t[i] + bin_ns).
    Duplicated chunks (same flow, request, chunk) count once. No records give two empty arrays.
    """
    if bin_ns <= 0:
        raise ValueError(f"bin_ns must be positive, got {bin_ns}")
    recs = list(records)
    if not recs:
        return np.zeros(0), np.zeros(0)
    origin = min(r.t_send_ns for r in recs) if t0_ns is None else t0_ns
    seen: set[tuple[str, int, int]] = set()
    ends, sizes = [], []
    for r in sorted(recs, key=lambda r: r.t_last_ns):
        if not r.ok or r.key in seen:
            continue
        seen.add(r.key)
        ends.append(r.t_last_ns - origin)
        sizes.append(r.nbytes)
    last = max(r.t_last_ns for r in recs) - origin
    nbins = max(1, int(last // bin_ns) + 1)
    idx = np.clip(np.asarray(ends, dtype=np.int64) // bin_ns, 0, nbins - 1)
    per_bin = np.bincount(idx, weights=np.asarray(sizes, dtype=np.float64), minlength=nbins)
    t = np.arange(nbins, dtype=np.float64) * bin_ns
    return t, per_bin * 8 * NS_PER_S / bin_ns


def slowdown(fct_ns: float, base_rtt_ns: float, nbytes: int, rate_bps: float) -> float:
    """FCT slowdown: fct / (base_rtt + serialisation of nbytes at rate_bps), >= 1 when ideal.

    All times in the same base (wall or fabric) as the rate; raises ValueError on a
    non-positive rate or ideal time.
    """
    if rate_bps <= 0:
        raise ValueError(f"rate_bps must be positive, got {rate_bps}")
    ideal = base_rtt_ns + nbytes * 8 * NS_PER_S / rate_bps
    if ideal <= 0:
        raise ValueError("ideal completion time is zero: give a base RTT or some bytes")
    return float(fct_ns) / ideal


def lateness_between(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                     ) -> dict[str, Any] | None:
    """The link engine's release lateness between two of its snapshots (`release_lateness`
    of its statistics file, `before` None for all since it started): how many releases it
    wrote and, as upper bounds, how late the median, the 99th percentile and the latest of
    them were, in microseconds (the engine counts by powers of two: entry 0 of
    `hist_log2_us` is under 1 us, entry k from 2^(k-1) to 2^k us). None when `after` has no
    histogram (an engine from before it kept one) or nothing was released between."""
    hist = (after or {}).get("hist_log2_us")
    if not isinstance(hist, list):
        return None
    old = (before or {}).get("hist_log2_us") or []
    delta = [int(n) - int(old[i]) if i < len(old) else int(n) for i, n in enumerate(hist)]
    if any(n < 0 for n in delta):  # not the same engine (restarted between): all of `after`
        delta = [int(n) for n in hist]
    total = sum(delta)
    if total == 0:
        return None

    def bound(rank: int) -> float:
        """The top of the bucket that holds the `rank`-th release (0-based, in lateness)."""
        seen = 0
        for i, n in enumerate(delta):
            seen += n
            if seen > rank:
                return float(1 << i)
        raise AssertionError("rank beyond the releases counted")

    # nearest rank: the p-th percentile is the ceil(p/100 * n)-th release
    return {"releases": total, "p50_under_us": bound(-(-total // 2) - 1),
            "p99_under_us": bound(-(-total * 99 // 100) - 1),
            "max_under_us": bound(total - 1)}
