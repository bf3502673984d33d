"""A run directory on disk: write it after a run, read it back for `fabric report`.

Layout of DIR:
  summary.json    the `summarise` dict (written last: its presence marks a complete run)
  transfers.csv   one row per transfer: raw CLOCK_MONOTONIC ns timestamps, then TTFB and FCT in
                  wall ns, wall ms and fabric ms
  chunks.csv      one row per chunk record, with latency in wall ns, wall ms and fabric ms
  links.json      the link engine's stats with samples (only when there were links)
  latency_cdf.png, goodput.png, links.png   plots (each only when it has data)
  class_goodput.png, class_queues.png (and, beside RoCE switches, pfc_pauses.png)
                  per-class plots, when the file declares more than one class
                  (`plots.write_class_plots`, called by the kinds)
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import FabricError
from .records import ChunkRecord, TransferRecord, parse_links
from .summary import jsonable

__all__ = [
    "CHUNK_FIELDS",
    "TRANSFER_FIELDS",
    "load_chunks",
    "load_run",
    "write_chunks",
    "write_run",
]

SUMMARY = "summary.json"
TRANSFERS = "transfers.csv"
CHUNKS = "chunks.csv"
LINKS = "links.json"

TRANSFER_FIELDS = ("flow", "cls", "kind", "src", "dst", "request", "nbytes", "chunks",
                   "t_start_ns", "t_first_byte_ns", "t_done_ns", "status")
CHUNK_FIELDS = ("flow", "cls", "kind", "request", "chunk", "nbytes", "t_send_ns",
                "t_first_ns", "t_last_ns", "ok")
_TRANSFER_DERIVED = ("ttfb_wall_ns", "fct_wall_ns", "ttfb_wall_ms", "fct_wall_ms",
                     "ttfb_fabric_ms", "fct_fabric_ms")
_CHUNK_DERIVED = ("latency_wall_ns", "latency_wall_ms", "latency_fabric_ms")
_INT_TRANSFER = {"request", "nbytes", "chunks", "t_start_ns", "t_first_byte_ns", "t_done_ns"}
_INT_CHUNK = {"request", "chunk", "nbytes", "t_send_ns", "t_first_ns", "t_last_ns"}


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.6f}"


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(header))
        w.writerows(rows)
    os.replace(tmp, path)


def write_run(out_dir: str | Path, summary: Mapping[str, Any], chunks: Iterable[ChunkRecord],
              transfers: Iterable[TransferRecord], links: Any = None) -> dict[str, Path]:
    """Write a run directory (see the module docstring); returns {name: path} of what it wrote.

    The plots use the summary's time_scale. A plot with nothing to show is not written.
    """
    from . import plots  # here, not at import: matplotlib is slow to load and sets Agg globally

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ts = float(summary.get("time_scale", 1.0))
    cs, trs = list(chunks), list(transfers)
    written: dict[str, Path] = {}

    _write_csv(out / TRANSFERS, TRANSFER_FIELDS + _TRANSFER_DERIVED, (
        [getattr(t, f) for f in TRANSFER_FIELDS]
        + [t.ttfb_ns, t.fct_ns, _ms(t.ttfb_ns), _ms(t.fct_ns), _ms(t.ttfb_ns / ts),
           _ms(t.fct_ns / ts)]
        for t in trs))
    written["transfers"] = out / TRANSFERS
    written["chunks"] = write_chunks(out, cs, ts)

    link_records = parse_links(links)
    if link_records:
        data = {"links": [{"id": lk.id, **{name: c.to_dict(samples=True)
                                           for name, c in lk.directions()}}
                          for lk in link_records]}
        _write_text(out / LINKS, json.dumps(data, indent=1) + "\n")
        written["links"] = out / LINKS

    marks = plots.event_marks(summary)
    for name, p in (("latency_cdf", plots.latency_cdf(out / "latency_cdf.png", cs, ts)),
                    ("goodput", plots.goodput_over_time(out / "goodput.png", cs, ts,
                                                        marks=marks))):
        if p is not None:
            written[name] = p
    p = plots.links_over_time(out / "links.png", link_records, ts, marks=marks)
    if p is not None:
        written["links_plot"] = p

    _write_text(out / SUMMARY, json.dumps(jsonable(summary), indent=2, sort_keys=False) + "\n")
    written["summary"] = out / SUMMARY
    return written


def write_chunks(out_dir: str | Path, chunks: Iterable[ChunkRecord],
                 time_scale: float = 1.0) -> Path:
    """chunks.csv alone (what `load_chunks` reads back), for a directory that keeps a run's
    chunk records beside results of its own (a RoCE comparison's variant)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / CHUNKS, CHUNK_FIELDS + _CHUNK_DERIVED, (
        [getattr(c, f) if f != "ok" else int(c.ok) for f in CHUNK_FIELDS]
        + [c.latency_ns, _ms(c.latency_ns), _ms(c.latency_ns / time_scale)]
        for c in chunks))
    return out / CHUNKS


def _run_dir(run_dir: str | Path) -> Path:
    d = Path(run_dir)
    if not d.is_dir():
        raise FabricError(f"{d}: no such run directory (give the directory `fabric run` wrote)")
    if not (d / SUMMARY).is_file():
        raise FabricError(f"{d}: not a run directory: no {SUMMARY} in it "
                          "(give the directory `fabric run` wrote its results to)")
    return d


def _read_rows(path: Path, fields: tuple[str, ...], ints: set[str]) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [k for k in fields if k not in (reader.fieldnames or [])]
        if missing:
            raise FabricError(f"{path}: not a fabric CSV: missing column(s) {', '.join(missing)}")
        for row in reader:
            try:
                rows.append({k: int(row[k]) if k in ints else row[k] for k in fields})
            except (TypeError, ValueError) as e:
                raise FabricError(f"{path}:{reader.line_num}: bad value ({e})") from None
    return rows


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], list[TransferRecord]]:
    """(summary, transfers) of a run directory; FabricError if it is not one.

    A missing transfers.csv reads as no transfers (the summary still has every figure).
    """
    d = _run_dir(run_dir)
    try:
        summary = json.loads((d / SUMMARY).read_text())
    except (OSError, ValueError) as e:
        raise FabricError(f"{d / SUMMARY}: cannot read the run summary: {e}") from None
    if not isinstance(summary, dict):
        raise FabricError(f"{d / SUMMARY}: not a run summary (expected a JSON object)")
    transfers = [TransferRecord(**row)
                 for row in _read_rows(d / TRANSFERS, TRANSFER_FIELDS, _INT_TRANSFER)]
    return summary, transfers


def load_chunks(run_dir: str | Path) -> list[ChunkRecord]:
    """The chunk records of a run directory (to re-plot or re-summarise); FabricError if DIR
    is not a run directory."""
    d = _run_dir(run_dir)
    rows = _read_rows(d / CHUNKS, CHUNK_FIELDS, _INT_CHUNK)
    return [ChunkRecord(**{**row, "ok": row["ok"].strip().lower() in ("1", "true")})
            for row in rows]
