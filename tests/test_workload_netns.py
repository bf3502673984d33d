"""Workload runs on a real fabric: agentic sessions under PD and PPD with each retention, and
the shipped trace excerpt replayed with prefix reuse. Real namespaces, real KV blocks held by
the decode and store nodes and proved at every reuse (needs root)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from fabric.cli import cli
from fabric.kv import get_model
from fabric.net import lifecycle
from fabric.net.kernel import Kernel
from fabric.plan import plan_fabric
from fabric.run.workload import render, run_workload
from fabric.topology import load_topology

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[1]
EXCERPT = REPO / "topologies" / "data" / "mooncake-excerpt.jsonl"

FABRIC = """\
name: {name}
time_scale: {ts}
defaults:
  link: {{mtu: 9000}}
nodes:
  sw: {{kind: switch}}
  p0: {{}}
  p1: {{}}
  d0: {{}}
  d1: {{}}
  st: {{}}
links:
  - {{endpoints: [p0, sw], rate: 200Mbps}}
  - {{endpoints: [p1, sw], rate: 200Mbps}}
  - {{endpoints: [d0, sw], rate: 200Mbps}}
  - {{endpoints: [d1, sw], rate: 200Mbps}}
  - {{endpoints: [st, sw], rate: 200Mbps}}
workload:
  model: llama-3.1-8b
  kv_scale: 4096
  chunk: 64KiB
  compute: {{points: [[1024, 0.045], [8192, 0.36], [32768, 1.7]], tpot: 10ms}}
"""

SESSIONS = """\
  prefill: [p0, p1]
  decode: [d0, d1]
  store: st
  ttl: 200ms
  sessions:
    count: 3
    rate: 4/s
    turns: 3
    first: {mean: 6000, sigma: 0.2, min: 3000, max: 9000}
    append: {mean: 800, sigma: 0.3, min: 200, max: 2000}
    output: 40
    pause: {mean: 600ms, sigma: 0.2, min: 400ms, max: 900ms}
"""

TRACE = """\
  prefill: [p0, p1]
  decode: [d0]
  append: remote
  cache: {size: 1TiB}
  policies: [ppd]
  retention: [pin]
  trace: {file: excerpt.jsonl, sample: 0.2, speedup: 4}
"""


def _run(path: Path, variants: list[str], out: Path) -> dict:
    topo = load_topology(str(path))
    state = lifecycle.bring_up(plan_fabric(topo, backend="userspace"))
    try:
        return run_workload(state, topo, variants, out, timeout=240.0)
    finally:
        lifecycle.remove_fabric(state)


def _left(name: str) -> list[str]:
    return [ns for ns in Kernel.list_netns() if ns.startswith(f"fab.{name}.")]


def _clean(run: dict) -> None:
    assert run["errors"] == []
    assert run["chunks_bad"] == 0
    assert run["chunks_ok"] > 0
    assert run["proofs"]["missing"] == 0
    assert run["proofs"]["corrupt"] == 0
    assert all(t["ttft_s"] is not None for t in run["turns"])


def test_sessions_pd_against_ppd_and_every_retention(tmp_path, fabric_name, state_dir):
    path = tmp_path / "s.yaml"
    path.write_text(FABRIC.format(name=fabric_name, ts=1) + SESSIONS)
    out = tmp_path / "out"
    data = _run(path, ["pd", "ppd/pin", "ppd/ttl", "ppd/evict"], out)
    assert _left(fabric_name) == []
    runs = {r["variant"]: r for r in data["runs"]}
    for r in runs.values():
        _clean(r)
        assert r["summary"]["turns"] == 9
    pd, pin, ttl, evict = (runs[v] for v in ("pd", "ppd/pin", "ppd/ttl", "ppd/evict"))
    bpt = get_model("llama-3.1-8b").bytes_per_token()
    # pd moves every turn's whole context; its decode nodes keep and prove nothing
    for t in pd["turns"]:
        assert t["hit"] == 0
        assert t["moved_bytes"] >= t["context_tokens"] * bpt
    assert pd["proofs"]["ok"] == 0
    # ppd/pin: turns 2+ append on the decode node, reusing what it holds, and move nothing
    later = [t for t in pin["turns"] if t["turn"] > 0]
    assert all(t["hit"] > 0 and t["moved_bytes"] == 0 for t in later)
    assert pin["proofs"]["ok"] == sum(t["hit"] for t in pin["turns"])
    assert pin["summary"]["later_ttft_p50_s"] < pd["summary"]["later_ttft_p50_s"]
    # a 200 ms time-to-live is shorter than every pause: the KV went to the store, came back
    assert ttl["writebacks"] > 0
    assert all(t["reload"] > 0 and t["hit"] == 0 for t in ttl["turns"] if t["turn"] > 0)
    # evict: written back at once, reloaded from the store as real transfers and proved
    assert evict["writebacks"] > 0
    reloads = [t for t in evict["turns"] if t["turn"] > 0]
    assert all(t["reload"] > 0 and t["moved_bytes"] > 0 for t in reloads)
    assert evict["proofs"]["ok"] == sum(t["reload"] for t in evict["turns"])
    stored = [s for s in evict["stores"] if s["node"] == "st"]
    assert stored
    assert stored[0]["held_blocks_peak"] > 0
    # the KV that moved crossed the decode nodes' links (kv_scale applied back)
    into_d = sum(x["bytes"] for x in pd["links"] if x["direction"] in ("sw->d0", "sw->d1"))
    moved = sum(t["moved_bytes"] for t in pd["turns"])
    assert moved <= into_d <= 1.2 * moved
    text = render(data)
    assert "ppd/pin against pd, turn 2+ TTFT p50: -" in text
    assert "computed by the model" in text
    # the saved run re-prints and redraws
    saved = json.loads((out / "workload.json").read_text())
    assert saved["runs"][0]["variant"] == "pd"
    result = CliRunner().invoke(cli, ["report", str(out)], prog_name="fabric")
    assert result.exit_code == 0, result.output
    assert "ppd/evict" in result.output
    assert (out / "workload.png").stat().st_size > 0


def _implied(lines: list[str]) -> tuple[int, int]:
    """(blocks, reusable blocks) of these trace lines, counted naively here: a request reuses
    its leading hash ids that any earlier request had."""
    seen: set[int] = set()
    blocks = reusable = 0
    for line in lines:
        ids = json.loads(line)["hash_ids"]
        k = 0
        while k < len(ids) and ids[k] in seen:
            k += 1
        blocks += len(ids)
        reusable += k
        seen.update(ids)
    return blocks, reusable


def test_the_trace_excerpt_moves_only_the_kv_a_decode_node_lacks(tmp_path, fabric_name,
                                                                  state_dir):
    shutil.copy(EXCERPT, tmp_path / "excerpt.jsonl")
    path = tmp_path / "t.yaml"
    path.write_text(FABRIC.format(name=fabric_name, ts=0.5) + TRACE)
    data = _run(path, ["ppd/pin"], tmp_path / "out")
    assert _left(fabric_name) == []
    (run,) = data["runs"]
    _clean(run)
    # the requests the replay kept (its seeded sample), read from the file itself
    from fabric.workload.trace import read_trace

    kept = [r.line for r in read_trace(tmp_path / "excerpt.jsonl", sample=0.2, seed=1,
                                       speedup=4).requests]
    raw = EXCERPT.read_text().splitlines()
    lines = [raw[n - 1] for n in kept]
    blocks, reusable = _implied(lines)
    implied = data["source"]["implied"]
    assert (implied["blocks"], implied["reusable_blocks"]) == (blocks, reusable)
    # more than the first block, which every request in the trace shares
    assert reusable > 1.5 * len(lines)
    turns = run["turns"]
    assert sum(t["blocks"] for t in turns) == blocks
    hits = sum(t["hit"] for t in turns)
    # one decode node with a cache that holds everything reuses what the trace implies, but
    # for prefixes still on their way when the next request came
    assert 0.8 * reusable <= hits <= reusable
    # every reused block was proved held, by its bytes, at the decode node
    assert run["proofs"]["ok"] == hits
    # only the blocks the decode node lacked moved: their real bytes, block by block
    bpt = get_model("llama-3.1-8b").bytes_per_token()
    lacked = 0
    for t, line in zip(turns, lines, strict=True):
        req = json.loads(line)
        n = req["input_length"]
        # each trace block in whole KV blocks of the model's 16 tokens
        sizes = [-(-min(512, n - i * 512) // 16) * 16 for i in range(len(req["hash_ids"]))]
        lacked += sum(-(-s * bpt // 4096 // 8) * 8 * 4096 for s in sizes[t["hit"]:])
    assert sum(t["moved_bytes"] for t in turns) == lacked
    into_d0 = sum(x["bytes"] for x in run["links"] if x["direction"] == "sw->d0")
    assert lacked <= into_d0 <= 1.2 * lacked
