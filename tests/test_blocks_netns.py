"""Prefix-cache blocks moved for real (root): kept, reused and proved, made by an
append-prefill, written back to a store, dropped, reloaded; and the failures reported."""

from __future__ import annotations

import pytest

from fabric.metrics import integrity_counts
from fabric.net import lifecycle
from fabric.plan import plan_fabric
from fabric.run.traffic import RunResult, run_traffic
from fabric.topology import parse_topology
from fabric.traffic import Transfer

pytestmark = pytest.mark.netns

TRIANGLE = """
name: {name}
nodes: {{p: {{}}, d: {{}}, s: {{}}}}
links:
  - {{endpoints: [p, d], rate: 100Mbps, delay: 1ms}}
  - {{endpoints: [d, s], rate: 100Mbps, delay: 1ms}}
  - {{endpoints: [p, s], rate: 100Mbps, delay: 1ms}}
"""

MS = 1_000_000
CB = 64 << 10  # chunk bytes: a 200 kB block is four parts
B = 200_000


def tr(tid: int, src: str, dst: str, start_ms: int, blocks: list[tuple[int, int]],
       **kw: object) -> Transfer:
    return Transfer(id=tid, flow="blocks", kind="kv", cls="default", src=src, dst=dst,
                    transport="tcp", request=tid, model=None, tokens=16 * len(blocks),
                    nbytes=sum(b for _, b in blocks), chunk_bytes=CB,
                    start_ns=start_ms * MS, blocks=tuple(blocks), **kw)  # type: ignore[arg-type]


def by_id(res: RunResult) -> dict[tuple[str, str, int], dict]:
    return {(b["node"], b["what"], b["id"]): b for b in res.blocks}


@pytest.fixture
def fabric(fabric_name, state_dir):
    topo = parse_topology(TRIANGLE.format(name=fabric_name))
    state = lifecycle.bring_up(plan_fabric(topo, backend="userspace"))
    try:
        yield topo, state
    finally:
        lifecycle.remove_fabric(state)


def test_blocks_kept_reused_written_back_dropped_and_reloaded(fabric):
    topo, state = fabric
    transfers = [
        tr(0, "p", "d", 0, [(1, B), (2, B), (3, B)], keep=True),
        # new blocks, and a reuse of the first ones
        tr(1, "p", "d", 50, [(4, B), (5, B)], keep=True, reuse=(1, 2, 3)),
        # write-back to the store, and a reload asked for before it has landed (s waits)
        tr(2, "d", "s", 150, [(1, B), (2, B), (6, 150_000)], keep=True, from_store=True,
           release=True),
        tr(3, "s", "d", 160, [(1, B), (2, B), (6, 150_000)], keep=True, from_store=True),
        # reuses 3 until after the drop planned at 600 ms: the drop waits for its proof (a
        # 400 kB block takes 32 ms or more at 100 Mbit/s). The drop comes 500 ms after the
        # append of 100 ms proved block 4 (about 2 ms after it was due, on a quiet machine),
        # so that a loaded host's stall does not also defer block 4.
        tr(4, "p", "d", 590, [(8, 400_000)], keep=True, reuse=(3,)),
    ]
    ops = {"d": [
        {"id": 0, "t_ns": 100 * MS, "op": "append", "reuse": [1, 2, 3, 4, 5],
         "make": [[6, 150_000], [7, 150_000]]},
        {"id": 1, "t_ns": 600 * MS, "op": "drop", "drop": [3, 4]},
        {"id": 2, "t_ns": 750 * MS, "op": "append", "reuse": [1, 2, 6, 5, 8],
         "make": [[9, 100_000]]},
    ]}
    res = run_traffic(state, topo, transfers=transfers, block_ops=ops, timeout=60)
    assert res.errors == []
    counts = integrity_counts(res.chunk_records, res.transfer_records)
    assert counts.ok, counts
    assert counts.transfers_ok == 5
    got = by_id(res)
    rows = {k: (v["reused"], v.get("ok", v.get("served")), v["missing"], v["corrupt"],
                v["done"]) for k, v in got.items()}
    assert rows == {
        ("d", "transfer", 0): (0, 0, 0, 0, True),
        ("d", "transfer", 1): (3, 3, 0, 0, True),
        ("d", "append", 0): (5, 5, 0, 0, True),
        ("s", "transfer", 2): (0, 0, 0, 0, True),
        ("d", "send", 2): (0, 3, 0, 0, True),
        ("s", "send", 3): (0, 3, 0, 0, True),
        ("d", "transfer", 3): (0, 0, 0, 0, True),
        ("d", "transfer", 4): (1, 1, 0, 0, True),
        ("d", "drop", 1): (0, 0, 0, 0, True),
        ("d", "append", 2): (5, 5, 0, 0, True),
    }
    # the write-back's copies leave d once acknowledged; a block whose reload copy came in
    # first (s serves each block as soon as it has it) stays
    released = got[("d", "send", 2)]["released"]
    assert released in (2, 3)
    assert got[("d", "transfer", 3)]["kept"] == 3
    ready = {k: (v.get("t_ready_ns", v.get("t_acked_ns")) - res.started_ns) / MS
             for k, v in got.items()}
    drop = got[("d", "drop", 1)]
    assert (drop["dropped"], drop["deferred"]) == (1, 1), ready
    # every ready time is on the runner's clock, within the run
    for b in res.blocks:
        assert res.started_ns <= b.get("t_ready_ns", b.get("t_acked_ns")) <= res.ended_ns, b
    # an append is ready no earlier than planned; a transfer's at its last chunk or later
    assert got[("d", "append", 2)]["t_ready_ns"] >= res.started_ns + 750 * MS
    done = {r.request: r.t_done_ns for r in res.transfer_records}
    assert got[("d", "transfer", 1)]["t_ready_ns"] >= done[1]
    # the reload left s only once the write-back's first block (chunks 0-3) was in there
    first_reload = min(c.t_send_ns for c in res.chunk_records if c.request == 3)
    assert first_reload >= max(c.t_last_ns for c in res.chunk_records
                               if c.request == 2 and c.chunk < 4)
    stores = {s["node"]: s for s in res.block_stores}
    assert set(stores) == {"d", "s"}
    d = stores["d"]
    assert (d["dropped"], d["released"], d["freed_late"]) == (2, released, 1)
    assert d["made"] == 3
    assert d["held_blocks"] == 7  # 1 2 5 6 7 8 9
    assert d["held_blocks_peak"] >= 7
    assert (stores["s"]["held_blocks"], stores["s"]["held_bytes"]) == (3, 2 * B + 150_000)


def test_missing_blocks_are_reported(fabric):
    topo, state = fabric
    transfers = [
        tr(0, "p", "d", 0, [(1, B)], keep=True),
        tr(1, "p", "d", 50, [(2, B)], keep=True, reuse=(1, 99)),  # d never held 99
        tr(2, "s", "d", 0, [(50, B)], keep=True, from_store=True),  # s never got 50
    ]
    ops = {"d": [{"id": 0, "t_ns": 200 * MS, "op": "append", "reuse": [50, 2], "make": []}]}
    res = run_traffic(state, topo, transfers=transfers, block_ops=ops, timeout=60)
    assert res.errors == []
    got = by_id(res)
    assert (got[("d", "transfer", 1)]["ok"], got[("d", "transfer", 1)]["missing"]) == (1, 1)
    assert got[("d", "transfer", 1)]["bad_keys"] == [99]
    # the store that never got block 50 says so, and its receiver sees wrong bytes
    assert (got[("s", "send", 2)]["served"], got[("s", "send", 2)]["missing"]) == (0, 1)
    assert got[("d", "transfer", 2)]["carried_bad"] == 4
    assert (got[("d", "transfer", 2)]["corrupt"], got[("d", "transfer", 2)]["bad_keys"]) == (
        1, [50])
    assert got[("d", "transfer", 2)]["kept"] == 0
    status = {r.request: r.status for r in res.transfer_records}
    assert status == {0: "ok", 1: "ok", 2: "corrupt"}
    counts = integrity_counts(res.chunk_records, res.transfer_records)
    assert (counts.chunks_corrupt, counts.transfers_failed) == (4, 1)
    assert (got[("d", "append", 0)]["ok"], got[("d", "append", 0)]["missing"]) == (1, 1)
    assert got[("d", "append", 0)]["done"]


def test_a_node_with_only_block_operations_runs(fabric):
    topo, state = fabric
    transfers = [tr(0, "p", "d", 0, [(1, B)], keep=True)]
    ops = {"s": [  # s moves nothing: an append-prefill there, then a reuse of it
        {"id": 0, "t_ns": 0, "op": "append", "reuse": [], "make": [[70, B]]},
        {"id": 1, "t_ns": 50 * MS, "op": "append", "reuse": [70, 71], "make": []},
    ]}
    res = run_traffic(state, topo, transfers=transfers, block_ops=ops, timeout=60)
    assert res.errors == []
    got = by_id(res)
    assert (got[("s", "append", 1)]["ok"], got[("s", "append", 1)]["missing"]) == (1, 1)
    assert {s["node"]: s["held_blocks"] for s in res.block_stores} == {"d": 1, "s": 1}
