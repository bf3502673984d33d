"""Daemons' periodic statistics (`fabric.net.daemon.write_json_sliced`): the same JSON as a
one-piece `json.dumps`, encoded in slices that give the daemon's event loop turns, so a
file with full sample buffers does not hold its packets for milliseconds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import trio
from hypothesis import given
from hypothesis import strategies as st

from fabric.linkmodel import LinkDirection
from fabric.net.daemon import SLICE_NS, json_slices, write_json_sliced
from fabric.topology.model import Shape, TrafficClass

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.floats(
    allow_nan=False)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=40)


@given(values, st.integers(min_value=1, max_value=4))
def test_the_slices_join_to_json_dumps(value: Any, rows: int) -> None:  # noqa: ANN401
    assert "".join(json_slices(value, rows)) == json.dumps(value)


def test_long_lists_are_cut_and_dicts_with_other_keys_kept_whole() -> None:
    assert list(json_slices([1, 2, 3, 4, 5], 2)) == ["[", "1, 2", ", 3, 4", ", 5", "]"]
    assert list(json_slices({1: "a"})) == ['{"1": "a"}']  # json.dumps turns the key to text


def test_a_link_directions_statistics_encode_the_same_in_slices() -> None:
    kv = TrafficClass(name="kv", dscp=26, priority=3, lossless=True)
    bulk = TrafficClass(name="bulk", dscp=10, priority=0)
    m = LinkDirection(Shape(rate_bps=8_000_000_000), rate_in_engine=True, classes=(bulk, kv))
    t = 0
    for i in range(20_000):
        t += 20_000
        m.offer(1000, False, t, i, dscp=(26, 10)[i % 2])
        m.release(t)
    d = m.statistics().to_dict()
    assert len(d["samples"]) > 100
    assert d["class_samples"]["rows"]
    assert json.loads("".join(json_slices(d, 16))) == json.loads(json.dumps(d))


def test_writing_gives_the_event_loop_turns_and_the_file_is_whole(tmp_path: Path) -> None:
    """A document that takes tens of ms to encode in one piece: while it is written in slices,
    a task that only counts turns gets them, none of its waits near the one-piece time."""
    doc = {"links": {f"l{i}": {"samples": [[j, j * 3, j * 7] for j in range(100_000)]}
                     for i in range(4)}}
    one_piece = min(_took(json.dumps, doc) for _ in range(2))
    path = tmp_path / "stats.json"
    gaps: list[int] = []

    async def main() -> None:
        done = trio.Event()

        async def ticker() -> None:
            last = time.perf_counter_ns()
            while not done.is_set():
                await trio.lowlevel.checkpoint()
                now = time.perf_counter_ns()
                gaps.append(now - last)
                last = now

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            while len(gaps) < 3:  # the ticker is counting before the write starts
                await trio.lowlevel.checkpoint()
            await write_json_sliced(str(path), doc)
            done.set()

    trio.run(main)
    assert json.loads(path.read_text()) == doc
    assert not list(tmp_path.glob("*.tmp*"))
    assert one_piece > 20 * SLICE_NS  # else this document proves nothing
    assert len(gaps) >= 13
    assert max(gaps) < one_piece / 2, (max(gaps), one_piece)


def _took(fn: Any, *args: Any) -> int:  # noqa: ANN401
    start = time.perf_counter_ns()
    fn(*args)
    return time.perf_counter_ns() - start
