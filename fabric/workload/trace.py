"""Mooncake-format request traces (JSONL), read into a replay: which requests arrive when, how
long their prompts and outputs are, and which prefix blocks they share.

One JSON object a line: `timestamp` (ms from the trace's start), `input_length`,
`output_length` (tokens) and `hash_ids`, the prompt's prefix blocks of `block_tokens` (512)
tokens each, the last one holding the rest. A block's id stands for its whole prefix (the
Mooncake trace hashes a block together with everything before it), so two requests that share
their first k ids can reuse k blocks of KV cache, and a request's later ids never hit where an
earlier one missed.

Pure: `read_trace` reads the file as a stream and stops at the first line past the window (the
timestamps are sorted), so a short window of a long trace costs only the lines up to its end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fabric.errors import FabricError, TopologyError, shown

BLOCK_TOKENS = 512  # the Mooncake trace's hash block
KEY_LIMIT = 2**62  # block keys are non-negative ints below this (the planner's key space)
_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")


@dataclass(frozen=True)
class TraceRequest:
    """One replayed request. `t_s` is its arrival in fabric seconds from the replay's start
    (`(timestamp_s - start_s) / speedup`); `line` is its line in the trace file (1-based)."""

    index: int  # 0-based order in the replay
    line: int
    t_s: float
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...]


@dataclass(frozen=True)
class Replay:
    """What `read_trace` took from a trace: the requests, and how they relate to the window.

    The window is `[start_s, start_s + duration_s)` of trace time; `window_requests` lines fell
    in it, `sampled` of them survived `sample`, and `requests` are those kept after `limit` and
    `cut_after_s`. `cut` says why fewer than `sampled` were kept: "" (none were dropped),
    "limit", or "duration" (arrivals at or after `cut_after_s` fabric seconds were dropped:
    the run is shorter than the trace; `warning()` words it for the user)."""

    path: str
    requests: tuple[TraceRequest, ...]
    start_s: float
    duration_s: float | None
    speedup: float
    sample: float
    limit: int | None
    cut_after_s: float | None
    block_tokens: int
    lines_read: int  # lines of the file read (the window's end is the last one read)
    window_requests: int  # requests whose arrival fell in the window
    window_input_tokens: int
    window_output_tokens: int
    sampled: int  # the window's requests kept by `sample`
    sampled_input_tokens: int
    cut: str  # "" | "limit" | "duration"

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.requests)

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.requests)

    @property
    def token_share(self) -> float:
        """The share of the window's input tokens the replay holds (sampling and cuts both
        lower it); 1.0 for an empty window."""
        return self.input_tokens / self.window_input_tokens if self.window_input_tokens else 1.0

    @property
    def span_s(self) -> float:
        """Fabric seconds from the replay's start to its last arrival (0 when empty)."""
        return self.requests[-1].t_s if self.requests else 0.0

    def warning(self) -> str | None:
        """The warning a run prints when the trace did not fit its time (`cut == "duration"`):
        how many requests and what share of the window's input tokens were replayed."""
        if self.cut != "duration":
            return None
        kept = self.input_tokens
        window = self.window_input_tokens
        share = kept / window if window else 1.0
        sampled = (f" ({self.sampled} after sampling {self.sample:g})"
                   if self.sampled != self.window_requests else "")
        return (f"{self.path}: trace cut at {self.cut_after_s:g} s of fabric time (the run's "
                f"duration): replayed {len(self.requests)} of the window's "
                f"{self.window_requests} requests{sampled}, {kept} of {window} input tokens "
                f"({share:.1%})")


def _fail(path: str, line: int, field: str | None, message: str) -> TopologyError:
    return TopologyError(message, file=path, line=line, key=field)


def _count(path: str, line: int, obj: dict[str, object], field: str) -> int:
    v = obj.get(field)
    if field not in obj:
        raise _fail(path, line, field, "missing (a Mooncake trace line has timestamp, "
                    "input_length, output_length and hash_ids)")
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(path, line, field, f"expected a whole number of tokens, got {shown(v)}")
    if v < 0:
        raise _fail(path, line, field, f"negative ({v})")
    return v


def _parse(path: str, line: int, text: str, block_tokens: int
           ) -> tuple[float, int, int, tuple[int, ...]]:
    """One line as (timestamp ms, input tokens, output tokens, hash ids), or an error that
    names PATH:LINE and the field."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise _fail(path, line, None, f"not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise _fail(path, line, None, f"expected a JSON object with {', '.join(_FIELDS)}, "
                    f"got {type(obj).__name__}")
    if "timestamp" not in obj:
        raise _fail(path, line, "timestamp", "missing (ms from the trace's start)")
    ts = obj["timestamp"]
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise _fail(path, line, "timestamp", f"expected a number of ms, got {shown(ts)}")
    if ts < 0:
        raise _fail(path, line, "timestamp", f"negative ({ts:g} ms)")
    inp = _count(path, line, obj, "input_length")
    out = _count(path, line, obj, "output_length")
    if "hash_ids" not in obj:
        raise _fail(path, line, "hash_ids", "missing (the prompt's prefix-block ids)")
    ids = obj["hash_ids"]
    if not isinstance(ids, list):
        raise _fail(path, line, "hash_ids", f"expected a list of block ids, got {shown(ids)}")
    for i, h in enumerate(ids):
        if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < KEY_LIMIT:
            raise _fail(path, line, "hash_ids", f"item {i}: expected a block id (an integer "
                        f"in [0, 2**62)), got {shown(h)}")
    need = -(-inp // block_tokens)
    if len(ids) != need:
        raise _fail(path, line, "hash_ids", f"{len(ids)} block ids for input_length {inp} "
                    f"(blocks of {block_tokens} tokens need {need})")
    if len(set(ids)) != len(ids):
        dup = next(h for i, h in enumerate(ids) if h in ids[:i])
        raise _fail(path, line, "hash_ids", f"block id {dup} appears twice (an id stands for "
                    f"its whole prefix, so it has one place)")
    return ts, inp, out, tuple(ids)


def _keep(seed: int, line: int, share: float) -> bool:
    """Whether `sample` keeps the request on `line`: a hash of (seed, line) against the share,
    so a request's fate does not depend on the window around it (splitmix64)."""
    if share >= 1.0:
        return True
    z = (seed * 0x9E3779B97F4A7C15 + line * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return (z >> 11) / float(1 << 53) < share


def read_trace(path: str | Path, *, start_s: float = 0.0, duration_s: float | None = None,
               speedup: float = 1.0, sample: float = 1.0, limit: int | None = None,
               seed: int = 1, block_tokens: int = BLOCK_TOKENS,
               cut_after_s: float | None = None) -> Replay:
    """Read the requests of a Mooncake-format trace whose arrival falls in
    `[start_s, start_s + duration_s)` of trace time, replayed `speedup` times faster from the
    window's start; keep a seeded `sample` share of them, then the first `limit`, then those
    arriving before `cut_after_s` fabric seconds (a run's duration). Every line read is
    checked; a malformed one raises a TopologyError naming `PATH:LINE:` and the field."""
    where = str(path)
    if not math.isfinite(start_s) or start_s < 0:
        raise FabricError(f"{where}: trace start must be a time >= 0, got {start_s!r}")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise FabricError(f"{where}: trace duration must be a positive time, got {duration_s!r}")
    if not (math.isfinite(speedup) and speedup > 0):
        raise FabricError(f"{where}: trace speedup must be a positive number, got {speedup!r}")
    if not 0 < sample <= 1:
        raise FabricError(f"{where}: trace sample must be a share in (0, 1], got {sample!r}")
    if limit is not None and limit < 1:
        raise FabricError(f"{where}: trace limit must be at least 1, got {limit!r}")
    if block_tokens < 1:
        raise FabricError(f"{where}: block_tokens must be at least 1, got {block_tokens!r}")
    if cut_after_s is not None and not cut_after_s > 0:
        raise FabricError(f"{where}: a trace cut must be a positive time, got {cut_after_s!r}")
    start_ms = start_s * 1000.0
    end_ms = math.inf if duration_s is None else (start_s + duration_s) * 1000.0

    kept: list[TraceRequest] = []
    lines = window = sampled = 0
    window_in = window_out = sampled_in = 0
    cut = ""
    last_ts = -math.inf
    try:
        f = open(path, encoding="utf-8")  # opened apart from `with`: its error is located
    except OSError as e:
        raise TopologyError(f"cannot read the trace: {e.strerror or e}", file=where) from None
    with f:
        try:
            for lines, text in enumerate(f, start=1):
                if not text.strip():
                    continue  # a blank line (a trailing one, say) holds no request
                ts, inp, out, ids = _parse(where, lines, text, block_tokens)
                if ts < last_ts:
                    raise _fail(where, lines, "timestamp", f"{ts:g} ms goes back from the "
                                f"line before's {last_ts:g} ms (a trace is sorted by time)")
                last_ts = ts
                if ts < start_ms:
                    continue
                if ts >= end_ms:
                    break
                window += 1
                window_in += inp
                window_out += out
                if not _keep(seed, lines, sample):
                    continue
                sampled += 1
                sampled_in += inp
                if limit is not None and len(kept) >= limit:
                    cut = cut or "limit"
                    continue
                t_s = (ts - start_ms) / 1000.0 / speedup
                if cut_after_s is not None and t_s >= cut_after_s:
                    cut = "duration"
                    continue
                kept.append(TraceRequest(len(kept), lines, t_s, inp, out, ids))
        except UnicodeDecodeError as e:
            raise _fail(where, lines + 1, None, f"not UTF-8 text ({e.reason})") from None
    return Replay(path=where, requests=tuple(kept), start_s=start_s, duration_s=duration_s,
                  speedup=speedup, sample=sample, limit=limit, cut_after_s=cut_after_s,
                  block_tokens=block_tokens, lines_read=lines, window_requests=window,
                  window_input_tokens=window_in, window_output_tokens=window_out,
                  sampled=sampled, sampled_input_tokens=sampled_in, cut=cut)


def blocks_of(req: TraceRequest, block_tokens: int = BLOCK_TOKENS) -> list[tuple[int, int]]:
    """The request's prompt as (block key, tokens in that block): `block_tokens` each, the
    last block the rest of `input_tokens`."""
    n = len(req.hash_ids)
    if req.input_tokens > n * block_tokens or req.input_tokens <= (n - 1) * block_tokens:
        raise ValueError(f"request {req.index} (line {req.line}): {n} blocks of "
                         f"{block_tokens} tokens do not hold {req.input_tokens} tokens")
    last = req.input_tokens - (n - 1) * block_tokens
    return [(h, block_tokens if i < n - 1 else last) for i, h in enumerate(req.hash_ids)]


def reusable_share(requests: Iterable[TraceRequest],
                   block_tokens: int = BLOCK_TOKENS) -> dict[str, float | int]:
    """What an infinite single cache would reuse over these requests, in order: per request
    its leading blocks that an earlier request held (a block id seen before implies its whole
    prefix was seen, so the first unseen id ends the reusable run). The hit rate the trace
    implies, by blocks and by tokens, with the totals it is a share of."""
    seen: set[int] = set()
    n_req = tokens_in = tokens_out = blocks = reused_blocks = reused_tokens = 0
    for r in requests:
        bl = blocks_of(r, block_tokens)
        k = 0
        while k < len(bl) and bl[k][0] in seen:
            k += 1
        n_req += 1
        tokens_in += r.input_tokens
        tokens_out += r.output_tokens
        blocks += len(bl)
        reused_blocks += k
        reused_tokens += sum(t for _, t in bl[:k])
        seen.update(r.hash_ids)
    return {
        "requests": n_req,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "blocks": blocks,
        "reusable_blocks": reused_blocks,
        "reusable_tokens": reused_tokens,
        "block_share": reused_blocks / blocks if blocks else 0.0,
        "token_share": reused_tokens / tokens_in if tokens_in else 0.0,
    }
