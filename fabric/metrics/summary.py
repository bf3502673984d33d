"""From records to the machine-readable run summary (what `summary.json` holds).

Every duration appears twice: `wall_ns` (host CLOCK_MONOTONIC) and `fabric_ns` = wall_ns /
time_scale; every rate as `wall_bps` and `fabric_bps` = wall_bps * time_scale. Both are kept so a
report can never pass a scaled figure off as a measured one (or the reverse).

Which records count where:

* chunk latency (one-way, t_last - t_send), jitter and goodput use intact chunks (`ok`), each
  (flow, request, chunk) once (the first delivery); corrupt and duplicate chunks are counted in
  `counts` and `integrity`, never in the figures;
* transfer latency (t_done - t_start) and TTFB (t_first_byte - t_start) use transfers with
  status "ok" only: a failed transfer's times say nothing about the fabric;
* jitter: RFC 3550 per flow (chunks in arrival order), reported as the chunk-weighted mean over
  the group's flows (`rfc3550`) and the worst flow (`rfc3550_max`); `stddev` and `p99_minus_p50`
  are over the group's chunk latencies;
* goodput: intact bytes / active span, the span running from the group's first chunk send to
  its last chunk arrival (from transfers' start/done when there are no chunk records).

Layout (schema "fabric.summary/1"):
  {"schema", "time_scale", "time_note", "meta", "total": GROUP,
   "classes": {cls: GROUP}, "kinds": {kind: GROUP},
   "links": [{"id", "forward": COUNTERS, "reverse": COUNTERS}], "integrity": {..., "ok"},
   "link_engine": {"releases", "p50_under_us", "p99_under_us", "max_under_us"}}
  (`link_engine`: how late the userspace link engine wrote what it held during the run, host
  time, upper bounds; only where an engine ran and released something)
  GROUP = {"counts": {...}, "chunk_latency": TIMES, "transfer_latency": TIMES, "ttfb": TIMES,
           "jitter": {"rfc3550"|"rfc3550_max"|"stddev"|"p99_minus_p50": {"wall_ns","fabric_ns"}},
           "goodput": {"bytes", "span": {"wall_ns","fabric_ns"}, "wall_bps", "fabric_bps"}}
  TIMES = {"count", "wall_ns": {p50, p90, p99, p99.9, max, min, mean}, "fabric_ns": {...}}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import is_dataclass
from pathlib import PurePath
from typing import Any

import numpy as np

from .records import (
    ChunkRecord,
    TransferRecord,
    integrity_counts,
    parse_links,
)
from .stats import goodput_bps, p99_minus_p50, percentiles, rfc3550_jitter, stddev

__all__ = ["SCHEMA", "jsonable", "summarise", "to_fabric_bps", "to_fabric_ns"]

SCHEMA = "fabric.summary/1"


def _check_scale(time_scale: float) -> float:
    ts = float(time_scale)
    if not math.isfinite(ts) or ts <= 0:
        raise ValueError(f"time_scale must be a positive number, got {time_scale!r}")
    return ts


def to_fabric_ns(wall_ns: float | None, time_scale: float) -> float | None:
    """Wall-clock duration -> fabric duration (wall / time_scale); None stays None."""
    return None if wall_ns is None else wall_ns / _check_scale(time_scale)


def to_fabric_bps(wall_bps: float | None, time_scale: float) -> float | None:
    """Wall-clock rate -> fabric rate (wall * time_scale); None stays None."""
    return None if wall_bps is None else wall_bps * _check_scale(time_scale)


def _both_ns(wall: float | None, ts: float) -> dict[str, float | None]:
    return {"wall_ns": wall, "fabric_ns": to_fabric_ns(wall, ts)}


def _times(values: Sequence[float], ts: float) -> dict[str, Any]:
    p = percentiles(values)
    count = p.pop("count")
    return {"count": count, "wall_ns": p,
            "fabric_ns": {k: to_fabric_ns(v, ts) for k, v in p.items()}}


def _unique(chunks: Iterable[ChunkRecord]) -> list[ChunkRecord]:
    seen: set[tuple[str, int, int]] = set()
    out = []
    for c in sorted(chunks, key=lambda c: c.t_last_ns):
        if c.key not in seen:
            seen.add(c.key)
            out.append(c)
    return out


def _first_deliveries(chunks: Iterable[ChunkRecord]) -> list[ChunkRecord]:
    """Intact chunks, each (flow, request, chunk) judged by its earliest arrival only."""
    return [c for c in _unique(chunks) if c.ok]


def _jitter(good: list[ChunkRecord]) -> tuple[float | None, float | None]:
    by_flow: dict[str, list[ChunkRecord]] = {}
    for c in good:  # already in arrival (t_last) order
        by_flow.setdefault(c.flow, []).append(c)
    if not by_flow:
        return None, None
    js = [(rfc3550_jitter([c.latency_ns for c in cs]), len(cs)) for cs in by_flow.values()]
    mean = sum(j * n for j, n in js) / sum(n for _, n in js)
    return mean, max(j for j, _ in js)


def _group(chunks: list[ChunkRecord], transfers: list[TransferRecord], ts: float) -> dict:
    good = _first_deliveries(chunks)
    lat = [float(c.latency_ns) for c in good]
    ok_t = [t for t in transfers if t.status == "ok"]
    j_mean, j_max = _jitter(good)

    if chunks:
        nbytes = sum(c.nbytes for c in good)
        span = float(max(c.t_last_ns for c in chunks) - min(c.t_send_ns for c in chunks))
    elif ok_t:
        nbytes = sum(t.nbytes for t in ok_t)
        span = float(max(t.t_done_ns for t in ok_t) - min(t.t_start_ns for t in ok_t))
    else:
        nbytes, span = 0, 0.0
    rate = goodput_bps(nbytes, span) if span > 0 else None

    statuses = {s: 0 for s in ("ok", "corrupt", "incomplete", "duplicate", "failed")}
    for t in transfers:
        statuses[t.status] = statuses.get(t.status, 0) + 1
    n_unique = len({c.key for c in chunks})
    return {
        "counts": {
            "transfers": len(transfers),
            "transfers_ok": len(ok_t),
            "transfers_failed": len(transfers) - len(ok_t),
            "transfer_status": statuses,
            "transfer_bytes": sum(t.nbytes for t in transfers),
            "chunks": len(chunks),
            "chunks_ok": len(good),
            "chunks_corrupt": sum(1 for c in _unique(chunks) if not c.ok),
            "chunks_duplicate": len(chunks) - n_unique,
            "bytes_delivered": nbytes,
            "flows": len({c.flow for c in chunks} | {t.flow for t in transfers}),
        },
        "chunk_latency": _times(lat, ts),
        "transfer_latency": _times([float(t.fct_ns) for t in ok_t], ts),
        "ttfb": _times([float(t.ttfb_ns) for t in ok_t], ts),
        "jitter": {
            "rfc3550": _both_ns(j_mean, ts),
            "rfc3550_max": _both_ns(j_max, ts),
            "stddev": _both_ns(stddev(lat), ts),
            "p99_minus_p50": _both_ns(p99_minus_p50(lat), ts),
        },
        "goodput": {
            "bytes": nbytes,
            "span": _both_ns(span if span > 0 else None, ts),
            "wall_bps": rate,
            "fabric_bps": to_fabric_bps(rate, ts),
        },
    }


def _groups(chunks: list[ChunkRecord], transfers: list[TransferRecord], attr: str,
            ts: float) -> dict[str, dict]:
    names: list[str] = []
    for r in (*transfers, *chunks):  # transfer order first: the order the scenario started them
        name = getattr(r, attr)
        if name not in names:
            names.append(name)
    return {n: _group([c for c in chunks if getattr(c, attr) == n],
                      [t for t in transfers if getattr(t, attr) == n], ts) for n in names}


def jsonable(obj: Any) -> Any:
    """`obj` with numpy scalars/arrays, tuples, sets, paths and dataclasses turned into JSON
    types; NaN and infinities become None (JSON has no such numbers)."""
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return jsonable({k: getattr(obj, k) for k in obj.__dataclass_fields__})
    return str(obj)


def summarise(chunks: Iterable[ChunkRecord], transfers: Iterable[TransferRecord], *,
              time_scale: float = 1.0, meta: Mapping[str, Any] | None = None,
              links: Any = None) -> dict[str, Any]:
    """The run summary (see the module docstring for the layout). JSON-serialisable as is.

    `meta` is passed through (with `time_scale` set to the value used); `links` is the link
    engine's stats JSON (or None). Empty inputs give zero counts and None figures.
    """
    ts = _check_scale(time_scale)
    cs, trs = list(chunks), list(transfers)
    meta_out = dict(meta or {})
    meta_out["time_scale"] = ts
    link_rows = []
    for link in parse_links(links):
        row: dict[str, Any] = {"id": link.id}
        for name, counters in link.directions():
            row[name] = counters.to_dict()
        link_rows.append(row)
    summary = {
        "schema": SCHEMA,
        "time_scale": ts,
        "time_note": ("wall_* figures are host wall-clock; fabric_* are fabric time: "
                      "durations = wall / time_scale, rates = wall * time_scale"),
        "meta": meta_out,
        "total": _group(cs, trs, ts),
        "classes": _groups(cs, trs, "cls", ts),
        "kinds": _groups(cs, trs, "kind", ts),
        "links": link_rows,
        "integrity": integrity_counts(cs, trs).to_dict(),
    }
    if isinstance(links, Mapping) and isinstance(links.get("release_lateness"), Mapping):
        summary["link_engine"] = dict(links["release_lateness"])
    return jsonable(summary)
