"""What a run records: one `ChunkRecord` per delivered chunk, one `TransferRecord` per transfer,
and the link engine's counters.

All times are CLOCK_MONOTONIC nanoseconds on the host (wall-clock). Node processes share that
clock, so `t_last_ns - t_send_ns` is an exact one-way delay. Conversion to fabric time (divide by
the run's `time_scale`) happens in `summary`, never here: records stay raw.

Link statistics arrive as the link engine's JSON (plain dicts). `parse_links` reads them
leniently: a missing field is `None` (absent, not zero), an unknown numeric field is kept in
`extra`, and malformed parts are skipped rather than raising, because a report of a finished run
must not die on a counter the engine did not write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COUNTER_FIELDS",
    "TRANSFER_STATUSES",
    "ChunkRecord",
    "IntegrityCounts",
    "LinkCounters",
    "LinkRecord",
    "LinkSample",
    "TransferRecord",
    "integrity_counts",
    "parse_links",
]

TRANSFER_STATUSES = ("ok", "corrupt", "incomplete", "duplicate", "failed")


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk as the receiver saw it.

    t_send_ns: the sender started sending it; t_first_ns / t_last_ns: the receiver got its
    first / last byte; ok: its digest matched.
    """

    flow: str
    cls: str
    kind: str
    request: int
    chunk: int
    nbytes: int
    t_send_ns: int
    t_first_ns: int
    t_last_ns: int
    ok: bool

    @property
    def latency_ns(self) -> int:
        """One-way delay of the whole chunk: last byte received minus send start."""
        return self.t_last_ns - self.t_send_ns

    @property
    def key(self) -> tuple[str, int, int]:
        """(flow, request, chunk): identifies a chunk; a second record with it is a duplicate."""
        return (self.flow, self.request, self.chunk)


@dataclass(frozen=True)
class TransferRecord:
    """One transfer (a request's KV cache from src to dst), split into `chunks` chunks.

    status: "ok" | "corrupt" | "incomplete" | "duplicate" | "failed". kind: the flow type
    ("one-to-one", "incast", "pd", "bulk", ...).
    """

    flow: str
    cls: str
    kind: str
    src: str
    dst: str
    request: int
    nbytes: int
    chunks: int
    t_start_ns: int
    t_first_byte_ns: int
    t_done_ns: int
    status: str

    @property
    def fct_ns(self) -> int:
        """Transfer (flow) completion time: done minus start."""
        return self.t_done_ns - self.t_start_ns

    @property
    def ttfb_ns(self) -> int:
        """Time to first byte: first byte at the receiver minus start."""
        return self.t_first_byte_ns - self.t_start_ns

    @property
    def key(self) -> tuple[str, int]:
        return (self.flow, self.request)


@dataclass(frozen=True)
class IntegrityCounts:
    """Did every byte arrive once and intact? `ok` is False on any corrupt, missing or duplicate
    chunk or any transfer whose status is not "ok" (a duplicate delivery means the transport
    handed the application the same chunk twice, which is a bug, not a retransmission)."""

    chunks_ok: int = 0
    chunks_corrupt: int = 0
    chunks_missing: int = 0
    chunks_duplicate: int = 0
    transfers_ok: int = 0
    transfers_failed: int = 0

    @property
    def ok(self) -> bool:
        return (self.chunks_corrupt == 0 and self.chunks_missing == 0
                and self.chunks_duplicate == 0 and self.transfers_failed == 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunks_ok": self.chunks_ok,
            "chunks_corrupt": self.chunks_corrupt,
            "chunks_missing": self.chunks_missing,
            "chunks_duplicate": self.chunks_duplicate,
            "transfers_ok": self.transfers_ok,
            "transfers_failed": self.transfers_failed,
            "ok": self.ok,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IntegrityCounts:
        return cls(**{k: int(d.get(k) or 0) for k in (
            "chunks_ok", "chunks_corrupt", "chunks_missing", "chunks_duplicate",
            "transfers_ok", "transfers_failed")})


def integrity_counts(chunks: Iterable[ChunkRecord],
                     transfers: Iterable[TransferRecord]) -> IntegrityCounts:
    """Count chunk and transfer outcomes.

    A chunk record is a duplicate when an earlier-arriving record has the same
    (flow, request, chunk); otherwise it is ok or corrupt by its digest. Missing chunks are
    those a transfer announced (`TransferRecord.chunks`) for which no record with an index in
    range(chunks) exists.
    """
    seen: set[tuple[str, int, int]] = set()
    ok = corrupt = dup = 0
    got: dict[tuple[str, int], set[int]] = {}
    for c in sorted(chunks, key=lambda c: c.t_last_ns):  # the earliest delivery is the real one
        if c.key in seen:
            dup += 1
            continue
        seen.add(c.key)
        got.setdefault((c.flow, c.request), set()).add(c.chunk)
        if c.ok:
            ok += 1
        else:
            corrupt += 1
    missing = t_ok = t_failed = 0
    for t in transfers:
        have = got.get(t.key, set())
        missing += sum(1 for i in range(max(t.chunks, 0)) if i not in have)
        if t.status == "ok":
            t_ok += 1
        else:
            t_failed += 1
    return IntegrityCounts(ok, corrupt, missing, dup, t_ok, t_failed)


# ---- link engine counters ---------------------------------------------------------------

COUNTER_FIELDS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "drops_loss",
                  "drops_queue", "ecn_marks", "queue_high_water")


@dataclass(frozen=True)
class LinkSample:
    """A queue sample of one link direction (wall-clock ns). bytes_out: cumulative bytes sent,
    when the engine records it (a third element of the sample), else None."""

    t_ns: int
    queue_bytes: int
    bytes_out: int | None = None


def _int_or_none(v: Any) -> int | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if v != v or v in (float("inf"), float("-inf")):
        return None
    return int(v)


@dataclass(frozen=True)
class LinkCounters:
    """Counters of one link direction; None means the engine did not report that field.

    `queue_high_water` also reads the engine's `queue_bytes_max` (the name `LinkStats` in
    `fabric.linkmodel` uses) when `queue_high_water` itself is absent.
    """

    packets_in: int | None = None
    bytes_in: int | None = None
    packets_out: int | None = None
    bytes_out: int | None = None
    drops_loss: int | None = None
    drops_queue: int | None = None
    ecn_marks: int | None = None
    queue_high_water: int | None = None
    samples: tuple[LinkSample, ...] = ()
    extra: Mapping[str, int] = field(default_factory=dict)
    # per traffic class where the direction queues by class (`fabric.linkmodel.ClassStats`:
    # name, dscp and its counters)
    classes: tuple[Mapping[str, Any], ...] = ()
    # where the engine queued by class: each class's queue bytes at each queue sample
    # (`fabric.linkmodel.LinkStats.class_samples`), columns named by class; rows by time
    class_columns: tuple[str, ...] = ()
    class_samples: tuple[tuple[int, tuple[int, ...]], ...] = ()

    @property
    def drops(self) -> int | None:
        """drops_loss + drops_queue over the fields present; None when neither is."""
        parts = [v for v in (self.drops_loss, self.drops_queue) if v is not None]
        return sum(parts) if parts else None

    @classmethod
    def from_dict(cls, d: Any) -> LinkCounters:
        if not isinstance(d, Mapping):
            return cls()
        values = {k: _int_or_none(d.get(k)) for k in COUNTER_FIELDS}
        if values["queue_high_water"] is None:
            values["queue_high_water"] = _int_or_none(d.get("queue_bytes_max"))
        samples = []
        raw = d.get("samples")
        for s in raw if isinstance(raw, list | tuple) else ():
            if not isinstance(s, list | tuple) or len(s) < 2:
                continue
            t, q = _int_or_none(s[0]), _int_or_none(s[1])
            if t is None or q is None:
                continue
            samples.append(LinkSample(t, q, _int_or_none(s[2]) if len(s) > 2 else None))
        samples.sort(key=lambda s: s.t_ns)
        extra = {k: iv for k, v in d.items()
                 if k not in COUNTER_FIELDS and k not in ("samples", "class_samples")
                 and isinstance(k, str)
                 and (iv := _int_or_none(v)) is not None}
        if isinstance(d.get("queue_observed"), bool):  # kept as 0/1: does queue max mean it?
            extra["queue_observed"] = int(d["queue_observed"])
        raw_classes = d.get("classes")
        classes = tuple(
            {"name": str(c["name"]),
             **{k: iv for k, v in c.items() if k != "name" and (iv := _int_or_none(v)) is not None}}
            for c in (raw_classes if isinstance(raw_classes, list | tuple) else ())
            if isinstance(c, Mapping) and "name" in c)
        columns, rows = _class_samples(d.get("class_samples"))
        return cls(**values, samples=tuple(samples), extra=extra, classes=classes,
                   class_columns=columns, class_samples=rows)

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        """The present counters (absent ones are left out), `drops`, and `samples_count`;
        the samples themselves (and the per-class ones) only with `samples=True`."""
        d: dict[str, Any] = {k: getattr(self, k) for k in COUNTER_FIELDS
                             if getattr(self, k) is not None}
        if self.drops is not None:
            d["drops"] = self.drops
        d.update({k: v for k, v in self.extra.items() if k not in d})
        if self.classes:
            d["classes"] = [dict(c) for c in self.classes]
        d["samples_count"] = len(self.samples)
        if samples:
            d["samples"] = [[s.t_ns, s.queue_bytes] + ([] if s.bytes_out is None
                                                        else [s.bytes_out])
                            for s in self.samples]
            if self.class_samples:
                d["class_samples"] = {"columns": list(self.class_columns),
                                      "rows": [[t, list(b)] for t, b in self.class_samples]}
        return d


def _class_samples(raw: Any) -> tuple[tuple[str, ...], tuple[tuple[int, tuple[int, ...]], ...]]:
    """{"columns": [names], "rows": [[t, [bytes per column]], ...]} as (columns, rows sorted
    by time); a malformed row is skipped, anything else malformed gives nothing."""
    if not isinstance(raw, Mapping):
        return (), ()
    cols, rows = raw.get("columns"), raw.get("rows")
    if not isinstance(cols, list | tuple) or not isinstance(rows, list | tuple) or not cols:
        return (), ()
    columns = tuple(str(c) for c in cols)
    out = []
    for r in rows:
        if not isinstance(r, list | tuple) or len(r) < 2 or not isinstance(r[1], list | tuple):
            continue
        t = _int_or_none(r[0])
        vals = tuple(_int_or_none(v) for v in r[1])
        if t is None or len(vals) != len(columns) or any(v is None for v in vals):
            continue
        out.append((t, tuple(int(v) for v in vals if v is not None)))
    out.sort(key=lambda r: r[0])
    return columns, tuple(out)


@dataclass(frozen=True)
class LinkRecord:
    """One link, `id` like "a--b"; forward / reverse are None when the engine reported none."""

    id: str
    forward: LinkCounters | None = None
    reverse: LinkCounters | None = None

    def directions(self) -> list[tuple[str, LinkCounters]]:
        return [(name, c) for name, c in (("forward", self.forward), ("reverse", self.reverse))
                if c is not None]


def parse_links(data: Any) -> list[LinkRecord]:
    """The link engine's stats as records.

    The engine writes `{"links": {"a--b": {"forward": {...}, "reverse": {...}}}}`; a list of
    `{"id", "forward", "reverse"}` under "links" (or alone), or parsed `LinkRecord`s, are
    accepted too. None, {} or anything unrecognisable gives []. A link without an id is named
    "link-<index>".
    """
    if data is None:
        return []
    if isinstance(data, Mapping):
        data = data.get("links", [])
    if isinstance(data, Mapping):  # keyed by link id
        data = [{"id": lid, **v} for lid, v in data.items() if isinstance(v, Mapping)]
    if not isinstance(data, list | tuple):
        return []
    out: list[LinkRecord] = []
    for i, link in enumerate(data):
        if isinstance(link, LinkRecord):
            out.append(link)
            continue
        if not isinstance(link, Mapping):
            continue
        lid = link.get("id")
        fwd, rev = link.get("forward"), link.get("reverse")
        out.append(LinkRecord(
            id=str(lid) if lid is not None else f"link-{i}",
            forward=LinkCounters.from_dict(fwd) if isinstance(fwd, Mapping) else None,
            reverse=LinkCounters.from_dict(rev) if isinstance(rev, Mapping) else None,
        ))
    return out
