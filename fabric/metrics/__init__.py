"""Run records -> statistics, the summary JSON, tables, CSV and PNG plots.

    summary = summarise(chunks, transfers, time_scale=ts, meta=meta, links=link_stats)
    print(render_table(summary))
    write_run(out_dir, summary, chunks, transfers, link_stats)
    summary, transfers = load_run(out_dir)        # for `fabric report DIR [DIR2 ...]`

Wall-clock figures are host CLOCK_MONOTONIC; fabric figures are wall / time_scale (durations)
and wall * time_scale (rates). The summary keeps both; tables show fabric time and say so.
`fabric.metrics.plots` (matplotlib, Agg) is imported only when plotting: `write_run` loads it on
first use, so `import fabric.metrics` stays fast and leaves the matplotlib backend alone.
"""

from __future__ import annotations

from .output import load_chunks, load_run, write_run
from .records import (
    ChunkRecord,
    IntegrityCounts,
    LinkCounters,
    LinkRecord,
    LinkSample,
    TransferRecord,
    integrity_counts,
    parse_links,
)
from .report import compare, render_integrity, render_links, render_table
from .stats import (
    goodput_bps,
    goodput_series,
    p99_minus_p50,
    percentiles,
    rfc3550_jitter,
    slowdown,
    stddev,
)
from .summary import summarise, to_fabric_bps, to_fabric_ns

__all__ = [
    "ChunkRecord",
    "IntegrityCounts",
    "LinkCounters",
    "LinkRecord",
    "LinkSample",
    "TransferRecord",
    "compare",
    "goodput_bps",
    "goodput_series",
    "integrity_counts",
    "load_chunks",
    "load_run",
    "p99_minus_p50",
    "parse_links",
    "percentiles",
    "render_integrity",
    "render_links",
    "render_table",
    "rfc3550_jitter",
    "slowdown",
    "stddev",
    "summarise",
    "to_fabric_bps",
    "to_fabric_ns",
    "write_run",
]
