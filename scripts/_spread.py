"""min/median/max of one figure over a benchmark's repeats: the one helper every
`scripts/bench_*.py` writes its JSON with (and `perf_table.py` reads)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def spread(xs: Iterable[float | None]) -> dict[str, float | int | None]:
    """{"min", "median", "max", "n"} of the values that are not None (a repeat that measured
    nothing, e.g. a ratio against a zero baseline, is left out and not counted in n)."""
    vals = [float(x) for x in xs if x is not None]
    if not vals:
        return {"min": None, "median": None, "max": None, "n": 0}
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals),
            "n": len(vals)}


def fmt_spread(s: dict | None, fmt: str = ".2f", scale: float = 1.0) -> str:
    """A spread as one table cell: `median (min-max)`, each divided by `scale`; `-` when
    nothing was measured; only the median when there was one repeat."""
    if not s or s.get("median") is None:
        return "-"
    med = format(s["median"] / scale, fmt)
    n = s.get("n", 2)  # a spread without n (bench_kv's keeps its values instead) has several
    if n is None or n < 2:  # one repeat, or a bare figure of unknown repeats
        return med
    return f"{med} ({format(s['min'] / scale, fmt)}-{format(s['max'] / scale, fmt)})"
