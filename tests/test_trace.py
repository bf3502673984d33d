"""The Mooncake trace reader (fabric.workload.trace): windows, speed-up, sampling, cuts, the
located errors of a malformed line, and the reuse the trace implies, checked against a naive
count written here from the file's own hash_ids."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fabric.errors import FabricError, TopologyError
from fabric.workload.trace import blocks_of, read_trace, reusable_share

ROOT = Path(__file__).resolve().parent.parent
EXCERPT = ROOT / "topologies" / "data" / "mooncake-excerpt.jsonl"
FULL = ROOT.parent / "shared" / "data" / "mooncake" / "conversation_trace.jsonl"
needs_full = pytest.mark.skipif(not FULL.exists(), reason=f"the full trace is not at {FULL}")


def naive_reuse(path: Path) -> tuple[int, int, int, int]:
    """(blocks, reusable blocks, input tokens, reusable tokens) of the file, from its JSON,
    without the module: a request reuses its leading ids that some earlier line had."""
    seen: set[int] = set()
    blocks = reused = tokens = reused_tokens = 0
    for text in path.read_text().splitlines():
        row = json.loads(text)
        ids, n_in = row["hash_ids"], row["input_length"]
        k = 0
        for h in ids:
            if h not in seen:
                break
            k += 1
        blocks += len(ids)
        reused += k
        tokens += n_in
        reused_tokens += min(n_in, 512 * k)  # only the last block is partial
        seen |= set(ids)
    return blocks, reused, tokens, reused_tokens


def write(tmp_path: Path, rows: list[object], name: str = "t.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def row(ts: float, n_in: int = 600, n_out: int = 10, ids: list[int] | None = None
        ) -> dict[str, object]:
    return {"timestamp": ts, "input_length": n_in, "output_length": n_out,
            "hash_ids": ids if ids is not None else list(range(math.ceil(n_in / 512)))}


# -- the shipped excerpt and the real trace --

def test_excerpt_reads_whole() -> None:
    r = read_trace(EXCERPT)
    assert len(r.requests) == r.window_requests == r.sampled == r.lines_read == 249
    assert r.cut == ""
    assert r.warning() is None
    assert r.requests[0].t_s == 0.0
    assert r.requests[-1].t_s == pytest.approx(72.001)
    assert [q.index for q in r.requests] == list(range(249))
    assert [q.line for q in r.requests] == list(range(1, 250))
    assert all(a.t_s <= b.t_s for a, b in zip(r.requests, r.requests[1:], strict=False))
    assert r.token_share == 1.0


def test_excerpt_reusable_share_matches_naive_count() -> None:
    got = reusable_share(read_trace(EXCERPT).requests)
    blocks, reused, tokens, reused_tokens = naive_reuse(EXCERPT)
    assert (got["blocks"], got["reusable_blocks"]) == (blocks, reused)
    assert (got["input_tokens"], got["reusable_tokens"]) == (tokens, reused_tokens)
    assert got["block_share"] == pytest.approx(reused / blocks)
    assert got["token_share"] == pytest.approx(reused_tokens / tokens)
    assert got["requests"] == 249
    # the figures topologies/data/README.md states
    assert (blocks, reused, tokens, reused_tokens) == (6561, 1039, 3297083, 531261)
    # real reuse, beyond the block 0 every request shares
    assert reused > got["requests"] - 1


@needs_full
def test_full_trace_reusable_share_matches_naive_count() -> None:
    r = read_trace(FULL)
    assert len(r.requests) == 12031
    got = reusable_share(r.requests)
    blocks, reused, tokens, reused_tokens = naive_reuse(FULL)
    assert (got["blocks"], got["reusable_blocks"]) == (blocks, reused)
    assert (got["input_tokens"], got["reusable_tokens"]) == (tokens, reused_tokens)
    assert got["token_share"] == pytest.approx(0.3736, abs=1e-4)


@needs_full
def test_excerpt_is_the_named_lines_of_the_full_trace() -> None:
    src = FULL.read_text().splitlines()[366:615]
    ex = EXCERPT.read_text().splitlines()
    assert len(ex) == len(src) == 249
    for e, s in zip(ex, src, strict=True):
        a, b = json.loads(e), json.loads(s)
        assert a["timestamp"] + 131999 == b["timestamp"]
        assert {**a, "timestamp": b["timestamp"]} == b


@needs_full
def test_full_trace_window_stops_reading_at_its_end() -> None:
    r = read_trace(FULL, start_s=600, duration_s=30, speedup=2)
    assert r.requests
    assert r.cut == ""
    rows = [json.loads(t) for t in FULL.read_text().splitlines()]
    inside = [i + 1 for i, x in enumerate(rows) if 600_000 <= x["timestamp"] < 630_000]
    assert [q.line for q in r.requests] == inside
    assert r.lines_read == inside[-1] + 1  # the first line past the window, and no more
    for q in r.requests:
        assert q.t_s == pytest.approx((rows[q.line - 1]["timestamp"] / 1000 - 600) / 2)
        assert q.hash_ids == tuple(rows[q.line - 1]["hash_ids"])


# -- window, speed-up, sampling, limit, cut --

def test_window_and_speedup(tmp_path: Path) -> None:
    p = write(tmp_path, [row(t) for t in (0, 500, 1000, 1500, 2000, 2500)])
    r = read_trace(p, start_s=1.0, duration_s=1.0, speedup=4)
    assert [q.line for q in r.requests] == [3, 4]  # [1 s, 2 s): 2000 ms is out
    assert [q.t_s for q in r.requests] == [0.0, 0.125]
    assert r.window_requests == 2
    assert r.lines_read == 5


def test_reading_stops_past_the_window(tmp_path: Path) -> None:
    p = write(tmp_path, [row(0), row(100), row(5000), "garbage {"])
    r = read_trace(p, duration_s=1.0)
    assert len(r.requests) == 2
    assert r.lines_read == 3
    with pytest.raises(TopologyError, match=r":4: not valid JSON"):
        read_trace(p)


def test_blank_lines_are_passed_over(tmp_path: Path) -> None:
    p = write(tmp_path, [row(0), "", "  ", row(10)])
    assert [q.line for q in read_trace(p).requests] == [1, 4]


def test_sample_is_seeded_and_independent_of_the_window() -> None:
    a = read_trace(EXCERPT, sample=0.5, seed=7)
    b = read_trace(EXCERPT, sample=0.5, seed=7)
    c = read_trace(EXCERPT, sample=0.5, seed=8)
    assert a.requests == b.requests
    assert [q.line for q in a.requests] != [q.line for q in c.requests]
    assert 0.35 * 249 < len(a.requests) < 0.65 * 249
    assert a.sampled == len(a.requests)
    assert a.window_requests == 249
    assert a.cut == ""
    assert [q.index for q in a.requests] == list(range(len(a.requests)))
    # a later window keeps the same requests of its part of the trace
    late = read_trace(EXCERPT, start_s=30, sample=0.5, seed=7)
    t30 = [q.line for q in read_trace(EXCERPT, start_s=30).requests]
    assert [q.line for q in late.requests] == [q.line for q in a.requests if q.line >= t30[0]]


def test_limit_keeps_the_first_after_sampling() -> None:
    full = read_trace(EXCERPT, sample=0.5, seed=3)
    r = read_trace(EXCERPT, sample=0.5, seed=3, limit=20)
    assert r.requests == full.requests[:20]
    assert r.cut == "limit"
    assert r.sampled == full.sampled
    assert r.warning() is None
    assert read_trace(EXCERPT, limit=249).cut == ""


def test_cut_after_run_duration_warns_how_much_was_replayed() -> None:
    r = read_trace(EXCERPT, speedup=2, cut_after_s=10)
    assert r.cut == "duration"
    assert r.requests
    assert all(q.t_s < 10 for q in r.requests)
    whole = read_trace(EXCERPT, speedup=2)
    assert r.requests == tuple(q for q in whole.requests if q.t_s < 10)
    assert r.window_requests == 249
    share = r.input_tokens / whole.input_tokens
    assert r.token_share == pytest.approx(share)
    w = r.warning()
    assert w is not None
    assert f"replayed {len(r.requests)} of the window's 249 requests" in w
    assert f"{r.input_tokens} of {whole.input_tokens} input tokens ({share:.1%})" in w
    assert "cut at 10 s" in w
    # a cut past the last arrival cuts nothing
    assert read_trace(EXCERPT, cut_after_s=72.5).cut == ""


def test_cut_and_limit_the_shorter_wins() -> None:
    assert read_trace(EXCERPT, limit=5, cut_after_s=60).cut == "limit"
    r = read_trace(EXCERPT, limit=200, cut_after_s=1)
    assert r.cut == "duration"
    assert len(r.requests) < 200


@pytest.mark.parametrize(("kw", "what"), [
    ({"start_s": -1}, "start"), ({"duration_s": 0}, "duration"), ({"speedup": 0}, "speedup"),
    ({"sample": 0}, "sample"), ({"sample": 1.5}, "sample"), ({"limit": 0}, "limit"),
    ({"block_tokens": 0}, "block_tokens"), ({"cut_after_s": 0}, "cut"),
])
def test_bad_options(kw: dict[str, float], what: str) -> None:
    with pytest.raises(FabricError, match=what):
        read_trace(EXCERPT, **kw)  # type: ignore[arg-type]


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"nope\.jsonl: cannot read the trace"):
        read_trace(tmp_path / "nope.jsonl")


# -- malformed lines: PATH:LINE: and the field --

GOOD = row(0)


@pytest.mark.parametrize(("bad", "field", "says"), [
    ('{"timestamp": 5,', None, "not valid JSON"),
    ("[1, 2]", None, "expected a JSON object"),
    ({"input_length": 600, "output_length": 1, "hash_ids": [0, 1]}, "timestamp", "missing"),
    ({**GOOD, "timestamp": "5"}, "timestamp", "expected a number of ms"),
    ({**GOOD, "timestamp": -1}, "timestamp", "negative"),
    ({**GOOD, "timestamp": float("nan")}, "timestamp", "expected a number"),
    ({"timestamp": 1, "output_length": 1, "hash_ids": [0, 1]}, "input_length", "missing"),
    ({**GOOD, "input_length": 600.0}, "input_length", "whole number"),
    ({**GOOD, "input_length": -600}, "input_length", "negative"),
    ({**GOOD, "output_length": True}, "output_length", "whole number"),
    ({**GOOD, "output_length": -1}, "output_length", "negative"),
    ({**GOOD, "hash_ids": None}, "hash_ids", "expected a list"),
    ({**GOOD, "hash_ids": [0, "1"]}, "hash_ids", "item 1"),
    ({**GOOD, "hash_ids": [0, 1.0]}, "hash_ids", "item 1"),
    ({**GOOD, "hash_ids": [0, -1]}, "hash_ids", "item 1"),
    ({**GOOD, "hash_ids": [0, 1, 2]}, "hash_ids", "3 block ids for input_length 600"),
    ({**GOOD, "hash_ids": [0]}, "hash_ids", "1 block ids for input_length 600"),
    ({**GOOD, "hash_ids": [4, 4]}, "hash_ids", "block id 4 appears twice"),
    ({k: v for k, v in GOOD.items() if k != "hash_ids"}, "hash_ids", "missing"),
])
def test_malformed_line_names_file_line_and_field(tmp_path: Path, bad: object,
                                                   field: str | None, says: str) -> None:
    p = write(tmp_path, [row(0), row(1), bad, row(2)])
    with pytest.raises(TopologyError) as e:
        read_trace(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:3: ")
    if field:
        assert msg.startswith(f"{p}:3: {field}: ")
    assert says in msg
    assert e.value.line == 3
    assert e.value.key == field


def test_timestamps_going_back_are_malformed(tmp_path: Path) -> None:
    p = write(tmp_path, [row(0), row(2000), row(1999)])
    with pytest.raises(TopologyError, match=r"t\.jsonl:3: timestamp: 1999 ms goes back "
                                            r"from the line before's 2000 ms"):
        read_trace(p)


def test_lines_before_the_window_are_checked_too(tmp_path: Path) -> None:
    p = write(tmp_path, [row(0, ids=[0, 1, 2]), row(5000)])
    with pytest.raises(TopologyError, match=":1: hash_ids"):
        read_trace(p, start_s=4)


def test_block_tokens_sets_the_block_count(tmp_path: Path) -> None:
    p = write(tmp_path, [row(0, n_in=600, ids=[0, 1, 2, 3, 4])])
    assert read_trace(p, block_tokens=128).requests[0].hash_ids == (0, 1, 2, 3, 4)
    with pytest.raises(TopologyError, match="5 block ids for input_length 600"):
        read_trace(p)


# -- blocks and reuse --

def test_blocks_of_cuts_the_last_block_short() -> None:
    r = read_trace(EXCERPT)
    for q in r.requests:
        bl = blocks_of(q)
        assert [k for k, _ in bl] == list(q.hash_ids)
        assert sum(t for _, t in bl) == q.input_tokens
        assert all(t == 512 for _, t in bl[:-1])
        assert 0 < bl[-1][1] <= 512
    first = r.requests[0]  # 1318 tokens: 512 + 512 + 294
    assert blocks_of(first) == [(0, 512), (9143, 512), (9144, 294)]


def test_blocks_of_a_whole_multiple(tmp_path: Path) -> None:
    p = write(tmp_path, [row(0, n_in=1024, ids=[7, 8]), row(1, n_in=0, n_out=3, ids=[])])
    a, b = read_trace(p).requests
    assert blocks_of(a) == [(7, 512), (8, 512)]
    assert blocks_of(b) == []


def test_reusable_share_is_prefix_only(tmp_path: Path) -> None:
    p = write(tmp_path, [
        row(0, n_in=1500, ids=[1, 2, 3]),
        row(1, n_in=2000, ids=[1, 2, 3, 4]),     # 3 of 4 reused: 1536 tokens
        row(2, n_in=1100, ids=[1, 9, 3]),        # 1 then a miss: 3 later is not a hit
        row(3, n_in=100, ids=[5]),                # nothing
    ])
    got = reusable_share(read_trace(p).requests)
    assert got["blocks"] == 11
    assert got["reusable_blocks"] == 4
    assert got["reusable_tokens"] == 1536 + 512
    assert got["input_tokens"] == 4700
    assert got["output_tokens"] == 40
    assert got["token_share"] == pytest.approx(2048 / 4700)
    assert got["block_share"] == pytest.approx(4 / 11)
    assert reusable_share([])["token_share"] == 0.0
