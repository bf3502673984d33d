"""The `workload:` section: every key parses, every mistake is an error at its line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fabric.errors import TopologyError
from fabric.kv import get_model
from fabric.kv.prefill import PROFILES
from fabric.topology import parse_topology
from fabric.topology.gate import compose
from fabric.topology.model import TrafficClass
from fabric.topology.walker import Walker
from fabric.topology.workload import (
    CacheSpec,
    ComputeSpec,
    Dist,
    SessionsSpec,
    TraceSpec,
    WorkloadSpec,
    block_bytes,
    parse_workload,
)

HEAD = """\
name: w
nodes: {p0: {}, p1: {}, d0: {}, d1: {}, s0: {}, iso: {}, sw: {kind: switch}}
links:
  - {endpoints: [sw, p0]}
  - {endpoints: [sw, p1]}
  - {endpoints: [sw, d0]}
  - {endpoints: [sw, d1]}
  - {endpoints: [sw, s0]}
workload:
"""

SESSIONS = """\
prefill: [p0, p1]
decode: [d0, d1]
compute: {profile: prfaas-hybrid-1t}
sessions:
  count: 4
  rate: 0.5/s
  turns: 3
  first: 15000
  append: 2000
  output: 300
  pause: 5s
"""

LLAMA_BLOCK = 131_072 * 512  # llama-3.1-8b: 131,072 B/token x 512 tokens = 64 MiB


def text(body: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(body), "  ")


def load(body: str, source: str = "w.yaml") -> WorkloadSpec:
    spec = parse_topology(text(body), source=source).workload
    assert spec is not None
    return spec


def line_of(body: str, marker: str) -> int:
    """The file line (1-based) of the only line of `text(body)` that holds `marker`."""
    lines = [i for i, ln in enumerate(text(body).splitlines(), 1) if marker in ln]
    assert len(lines) == 1, (marker, lines)
    return lines[0]


def error(body: str, source: str = "w.yaml") -> TopologyError:
    with pytest.raises(TopologyError) as info:
        parse_topology(text(body), source=source)
    return info.value


def edit(body: str, old: str, new: str) -> str:
    assert body.count(old) == 1, old
    return body.replace(old, new)


# ---- what parses ----------------------------------------------------------------------------

def test_a_full_sessions_file_parses_every_key():
    body = """\
    model: qwen3-8b
    seed: 7
    kv_scale: 64
    class: default
    chunk: 2MiB
    prefill: [p0, p1]
    decode: [d0, d1]
    store: s0
    duration: 120s
    block_tokens: 256
    cache: {size: 8GiB, policy: fifo}
    compute:
      points: [[1024, 0.44], [32768, 1.84s], [131072, 7400ms]]
      decode_speed: 0.5
      tpot: 20ms
    policies: [ppd, pd]
    retention: [ttl, pin]
    ttl: 30s
    ttl_factor: 5
    sessions:
      count: 8
      rate: 30/min
      arrival: fixed
      turns: {min: 3, max: 8}
      first: {mean: 15000, sigma: 0.5, min: 2000, max: 60000}
      append: {mean: 2000, sigma: 1, min: 0, max: 9000}
      output: 300
      pause: {mean: 5s, sigma: 0.8, min: 500ms, max: 60s}
    """
    spec = load(body)
    assert spec == WorkloadSpec(
        model="qwen3-8b", seed=7, kv_scale=64, cls="default", chunk_bytes=2 << 20,
        prefill=("p0", "p1"), decode=("d0", "d1"), store="s0", block_tokens=256,
        cache=CacheSpec(size_bytes=8 << 30, policy="fifo"),
        compute=ComputeSpec(points=((1024, 0.44), (32768, 1.84), (131072, 7.4)), profile="",
                            decode_speed=0.5, tpot_s=0.02),
        policies=("ppd", "pd"), retention=("ttl", "pin"), ttl_s=30.0, ttl_factor=5.0,
        duration_s=120.0,
        sessions=SessionsSpec(count=8, rate_per_s=0.5, arrival="fixed", turns_min=3,
                              turns_max=8, first=Dist(15000, 0.5, 2000, 60000),
                              append=Dist(2000, 1.0, 0, 9000), output=Dist(300, 0, 300, 300),
                              pause=Dist(5.0, 0.8, 0.5, 60.0),
                              line=line_of(body, "count: 8")),
        trace=None, line=line_of(body, "model: qwen3-8b"))
    assert spec.variants() == ["ppd/ttl", "ppd/pin", "pd"]
    assert spec.variants(("pd",)) == ["pd"]


def test_defaults():
    spec = load(SESSIONS)
    assert (spec.model, spec.seed, spec.kv_scale, spec.cls, spec.chunk_bytes) == (
        "llama-3.1-8b", 1, 1, "default", 1 << 20)
    assert (spec.store, spec.block_tokens, spec.duration_s) == (None, 512, None)
    assert spec.cache == CacheSpec(size_bytes=64 * LLAMA_BLOCK, policy="lru")
    assert spec.compute == ComputeSpec(points=PROFILES["prfaas-hybrid-1t"].points,
                                       profile="prfaas-hybrid-1t", decode_speed=1.0,
                                       tpot_s=0.025)
    assert (spec.policies, spec.retention) == (("pd", "ppd"), ("pin", "ttl", "evict"))
    assert (spec.ttl_s, spec.ttl_factor) == (None, 20.0)
    assert spec.variants() == ["pd", "ppd/pin", "ppd/ttl", "ppd/evict"]
    s = spec.sessions
    assert s is not None
    assert spec.trace is None
    assert (s.count, s.rate_per_s, s.arrival, s.turns_min, s.turns_max) == (
        4, 0.5, "poisson", 3, 3)
    assert (s.first, s.append, s.output, s.pause) == (
        Dist(15000, 0, 15000, 15000), Dist(2000, 0, 2000, 2000), Dist(300, 0, 300, 300),
        Dist(5.0, 0, 5.0, 5.0))


def test_block_bytes_and_the_default_cache_follow_the_model():
    assert block_bytes("llama-3.1-8b", 512) == LLAMA_BLOCK
    spec = load("model: deepseek-v3\nblock_tokens: 16\n" + SESSIONS)
    assert spec.cache.size_bytes == 64 * get_model("deepseek-v3").bytes_per_token() * 16


def test_distribution_defaults_and_single_names():
    body = edit(SESSIONS, "first: 15000", "first: {mean: 1000}")
    body = edit(body, "pause: 5s", "pause: {mean: 2s, sigma: 0}")
    body = edit(body, "prefill: [p0, p1]", "prefill: p0")
    body = edit(body, "decode: [d0, d1]", "decode: d1\npolicies: ppd\nretention: evict\nttl: auto")
    spec = load(body)
    assert spec.sessions is not None
    assert spec.sessions.first == Dist(1000, 0.5, 1, 8000)
    assert spec.sessions.pause == Dist(2.0, 0.0, 0.0, 16.0)
    assert (spec.prefill, spec.decode, spec.policies, spec.retention, spec.ttl_s) == (
        ("p0",), ("d1",), ("ppd",), ("evict",), None)


def test_one_turn_sessions_need_no_append_and_pause_defaults_to_none():
    body = edit(edit(SESSIONS, "  append: 2000\n", ""), "  pause: 5s\n", "")
    body = edit(body, "turns: 3", "turns: 1")
    s = load(body).sessions
    assert s is not None
    assert (s.append, s.pause) == (Dist(0, 0, 0, 0), Dist(0, 0, 0, 0))


def test_a_trace_file_resolves_against_the_topology_file(tmp_path: Path):
    (tmp_path / "data").mkdir()
    trace = tmp_path / "data" / "t.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 10, "output_length": 1, '
                     '"hash_ids": [0]}\n')
    body = """\
    prefill: p0
    decode: d0
    compute: {profile: minimax-m2.5}
    trace:
      file: data/t.jsonl
      start: 10s
      duration: 60s
      speedup: 2.5
      sample: 0.5
      limit: 200
      sessions: true
    """
    spec = load(body, source=str(tmp_path / "w.yaml"))
    assert spec.sessions is None
    assert spec.trace == TraceSpec(path=str(trace.resolve()), start_s=10.0, duration_s=60.0,
                                   speedup=2.5, sample=0.5, limit=200, sessions=True,
                                   line=line_of(body, "file: data/t.jsonl"))
    short = load(edit(body, body[body.index("trace:"):], f"trace: {trace}\n"))
    assert short.trace == TraceSpec(path=str(trace.resolve()), line=short.trace.line)


def test_the_shipped_trace_excerpt_parses():
    excerpt = Path(__file__).resolve().parent.parent / "topologies/data/mooncake-excerpt.jsonl"
    if not excerpt.is_file():
        pytest.skip("topologies/data/mooncake-excerpt.jsonl is not there yet")
    body = (f"prefill: p0\ndecode: d0\ncompute: {{profile: minimax-m2.5}}\n"
            f"trace: {{file: {excerpt}}}\n")
    assert load(body).trace.path == str(excerpt)


def test_the_class_must_be_one_the_file_defines():
    classes = (TrafficClass(name="bulk", dscp=0), TrafficClass(name="kv", dscp=26))
    spec_text = text(SESSIONS)
    root = compose(spec_text, "w.yaml")
    wnode = next(v for k, v in root.value if k.value == "workload")
    t = parse_topology(spec_text, source="w.yaml")
    nodes, links = t.nodes, list(t.links)
    assert parse_workload(Walker("w.yaml"), wnode, nodes, links, classes).cls == "bulk"
    body = "class: kv\n" + SESSIONS
    root = compose(text(body), "w.yaml")
    wnode = next(v for k, v in root.value if k.value == "workload")
    assert parse_workload(Walker("w.yaml"), wnode, nodes, links, classes).cls == "kv"
    body = "class: ctl\n" + SESSIONS
    root = compose(text(body), "w.yaml")
    wnode = next(v for k, v in root.value if k.value == "workload")
    with pytest.raises(TopologyError) as info:
        parse_workload(Walker("w.yaml"), wnode, nodes, links, classes)
    e = info.value
    assert (e.line, e.key) == (line_of(body, "class: ctl"), "workload.class")
    assert "unknown traffic class 'ctl' (classes: bulk, kv)" in e.message


# ---- every mistake at its line ----------------------------------------------------------------

TRACE = """\
prefill: p0
decode: d0
compute: {profile: minimax-m2.5}
trace: {file: missing.jsonl}
"""

# (body, marker of the line the error is at, key, message)
ERRORS = [
    ("sesions:\n  count: 1\n" + SESSIONS, "sesions:", "workload.sesions",
     "unknown key 'sesions'; did you mean 'sessions'?"),
    ("rate: 1/s\n" + SESSIONS, "rate: 1/s", "workload.rate", "session starts are `sessions.rate`"),
    (SESSIONS + "trace: {file: x}\n", "trace: {file: x}", "workload.trace",
     "either `sessions:` or `trace:`, not both"),
    (SESSIONS.split("sessions:")[0], "prefill:", "workload", "exactly one of `sessions:`"),
    (edit(SESSIONS, "compute: {profile: prfaas-hybrid-1t}\n", ""), "prefill:", "workload",
     "missing required key 'compute'"),
    ("model: gpt-9\n" + SESSIONS, "model: gpt-9", "workload.model", "unknown model 'gpt-9'"),
    ("seed: -1\n" + SESSIONS, "seed: -1", "workload.seed", "seed -1 is outside 0..4294967296"),
    ("kv_scale: 0\n" + SESSIONS, "kv_scale: 0", "workload.kv_scale", "outside 1..1000000000"),
    ("chunk: 1KiB\n" + SESSIONS, "chunk: 1KiB", "workload.chunk", "outside 4 KiB..256 MiB"),
    ("block_tokens: 0\n" + SESSIONS, "block_tokens: 0", "workload.block_tokens", "outside"),
    ("duration: 0s\n" + SESSIONS, "duration: 0s", "workload.duration", "above 0"),
    ("duration: 5\n" + SESSIONS, "duration: 5", "workload.duration", "a time needs a unit"),
    # roles
    (edit(SESSIONS, "[p0, p1]", "[p0, px]"), "[p0, px]", "workload.prefill[1]",
     "unknown node 'px'"),
    (edit(SESSIONS, "[p0, p1]", "[p0, sw]"), "[p0, sw]", "workload.prefill[1]",
     "node 'sw' is a switch"),
    (edit(SESSIONS, "[d0, d1]", "[d0, p1]"), "[d0, p1]", "workload.decode[1]",
     "node 'p1' is already a prefill node"),
    (edit(SESSIONS, "[d0, d1]", "[d0, d0]"), "[d0, d0]", "workload.decode[1]",
     "node 'd0' is listed twice"),
    (edit(SESSIONS, "decode: [d0, d1]", "decode: []"), "decode: []", "workload.decode",
     "no nodes listed"),
    ("store: d1\n" + SESSIONS, "store: d1", "workload.store", "already a decode node"),
    ("store: p0\n" + SESSIONS, "store: p0", "workload.store", "already a prefill node"),
    ("store: [s0]\n" + SESSIONS, "store: [s0]", "workload.store", "expected one node name"),
    ("store: s9\n" + SESSIONS, "store: s9", "workload.store", "unknown node 's9'"),
    (edit(SESSIONS, "[d0, d1]", "[d0, iso]"), "[d0, iso]", "workload.decode[1]",
     "prefill node 'p0' cannot reach decode node 'iso'"),
    ("store: iso\n" + SESSIONS, "store: iso", "workload.store",
     "decode node 'd0' cannot reach the store 'iso'"),
    ("class: Bad\n" + SESSIONS, "class: Bad", "workload.class",
     "unknown traffic class 'Bad' (classes: default)"),
    # cache
    ("cache: {size: 1MiB}\n" + SESSIONS, "cache:", "workload.cache.size",
     "a cache of 1 MiB holds no block: one block of llama-3.1-8b is 512 tokens x 131,072 "
     "B/token = 64 MiB"),
    ("cache: {policy: random}\n" + SESSIONS, "cache:", "workload.cache.policy",
     "unknown cache policy 'random' (one of: lru, fifo)"),
    ("cache: {sise: 1GiB}\n" + SESSIONS, "cache:", "workload.cache.sise", "did you mean 'size'"),
    # compute
    (edit(SESSIONS, "{profile: prfaas-hybrid-1t}", "{profile: x, points: [[1, 1], [2, 2]]}"),
     "compute:", "workload.compute", "exactly one of `profile:`"),
    (edit(SESSIONS, "{profile: prfaas-hybrid-1t}", "{tpot: 1ms}"), "compute:",
     "workload.compute", "exactly one of `profile:`"),
    (edit(SESSIONS, "{profile: prfaas-hybrid-1t}", "{profile: gpu}"), "compute:",
     "workload.compute.profile", "unknown prefill profile 'gpu' (one of: "),
    (edit(SESSIONS, "{profile: prfaas-hybrid-1t}", "\n  points: [[1024, 2], [4096, 1]]"),
     "points: [[", "workload.compute.points", "must increase in both tokens and seconds"),
    (edit(SESSIONS, "{profile: prfaas-hybrid-1t}", "\n  points: [[1024, 2]]"),
     "points: [[", "workload.compute.points", "at least 2 (tokens, seconds) points"),
    (edit(SESSIONS, "{profile: prfaas-hybrid-1t}", "\n  points: [[1024, 2, 3], [4096, 4]]"),
     "points: [[", "workload.compute.points[0]", "a point is [tokens, seconds]"),
    (edit(SESSIONS, "{profile: prfaas-hybrid-1t}", "\n  points: [[1024, 0], [4096, 4]]"),
     "points: [[", "workload.compute.points[0]", "a prefill time must be above 0"),
    (edit(SESSIONS, "{profile: prfaas-hybrid-1t}", "{profile: minimax-m2.5, decode_speed: 0}"),
     "compute:", "workload.compute.decode_speed", "decode_speed must be above 0"),
    (edit(SESSIONS, "{profile: prfaas-hybrid-1t}", "{profile: minimax-m2.5, tpot: 25}"),
     "compute:", "workload.compute.tpot", "a time needs a unit"),
    # policies
    ("policies: [pd, ppdx]\n" + SESSIONS, "policies:", "workload.policies[1]",
     "unknown policy 'ppdx' (one of: pd, ppd)"),
    ("policies: [pd, pd]\n" + SESSIONS, "policies:", "workload.policies[1]",
     "policy 'pd' is listed twice"),
    ("policies: []\n" + SESSIONS, "policies:", "workload.policies", "no policy listed"),
    ("retention: [keep]\n" + SESSIONS, "retention:", "workload.retention[0]",
     "unknown retention policy 'keep' (one of: pin, ttl, evict)"),
    ("ttl: 0s\n" + SESSIONS, "ttl: 0s", "workload.ttl", "a time-to-live must be above 0"),
    ("ttl: soon\n" + SESSIONS, "ttl: soon", "workload.ttl", "bad time 'soon'"),
    ("ttl_factor: 0\n" + SESSIONS, "ttl_factor: 0", "workload.ttl_factor",
     "ttl_factor must be above 0"),
    # sessions
    (edit(SESSIONS, "count: 4", "count: 0"), "count: 0", "workload.sessions.count",
     "outside 1..65536"),
    (edit(SESSIONS, "count: 4", "requests: 4"), "requests: 4", "workload.sessions.requests",
     "unknown key 'requests'"),
    (edit(SESSIONS, "rate: 0.5/s", "rate: fast"), "rate: fast", "workload.sessions.rate",
     "bad rate 'fast'"),
    (edit(SESSIONS, "rate: 0.5/s", "rate: 0.5/s\n  arrival: burst"), "arrival: burst",
     "workload.sessions.arrival", "unknown arrival process 'burst' (one of: poisson, fixed)"),
    (edit(SESSIONS, "turns: 3", "turns: {min: 5, max: 3}"), "turns:", "workload.sessions.turns",
     "turns.min 5 is above turns.max 3"),
    (edit(SESSIONS, "turns: 3", "turns: {min: 5}"), "turns:", "workload.sessions.turns",
     "missing required key 'max'"),
    (edit(SESSIONS, "turns: 3", "turns: 0"), "turns: 0", "workload.sessions.turns",
     "outside 1..10000"),
    (edit(SESSIONS, "first: 15000", "first: -5"), "first: -5", "workload.sessions.first",
     "first must be at least 1 token, got -5"),
    (edit(SESSIONS, "first: 15000", "first: 0"), "first: 0", "workload.sessions.first",
     "first must be at least 1 token, got 0"),
    (edit(SESSIONS, "output: 300", "output: -1"), "output: -1", "workload.sessions.output",
     "output must be at least 0 tokens, got -1"),
    (edit(SESSIONS, "first: 15000", "first: 1.5"), "first: 1.5", "workload.sessions.first",
     "expected a token count"),
    (edit(SESSIONS, "append: 2000", "append: {mean: -20}"), "append:",
     "workload.sessions.append.mean", "the mean must be at least 0 tokens, got -20"),
    (edit(SESSIONS, "append: 2000", "append: {mean: 2000, min: -1}"), "append:",
     "workload.sessions.append.min", "append.min must be at least 0 tokens, got -1"),
    (edit(SESSIONS, "append: 2000", "append: {mean: 2000, min: 3000}"), "append:",
     "workload.sessions.append", "mean 2000 is outside min..max (3000..16000)"),
    (edit(SESSIONS, "append: 2000", "append: {mean: 2000, sigma: 9}"), "append:",
     "workload.sessions.append.sigma", "outside 0..4"),
    (edit(SESSIONS, "  append: 2000\n", ""), "count: 4", "workload.sessions",
     "sessions of more than one turn need `append:`"),
    (edit(SESSIONS, "pause: 5s", "pause: -1s"), "pause: -1s", "workload.sessions.pause",
     "a time cannot be negative"),
    ("duration: 10s\n" + edit(SESSIONS, "pause: 5s", "pause: 30s"), "pause: 30s",
     "workload.sessions.pause", "30 s is a pause longer than the run (workload.duration 10 s)"),
    ("duration: 10s\n" + edit(SESSIONS, "pause: 5s", "pause: {mean: 30s, min: 20s, max: 1h}"),
     "pause:", "workload.sessions.pause.max", "bad time '1h'"),
    ("duration: 10s\n" + edit(SESSIONS, "pause: 5s", "pause: {mean: 30s, min: 20s}"),
     "pause:", "workload.sessions.pause.min",
     "min 20 s is a pause longer than the run (workload.duration 10 s)"),
    ("duration: 10s\n" + edit(SESSIONS, "pause: 5s", "pause: {mean: 30s, sigma: 0}"),
     "pause:", "workload.sessions.pause.mean", "a pause longer than the run"),
    (edit(SESSIONS, "pause: 5s", "pause: {mean: 5s, min: 6s}"), "pause:",
     "workload.sessions.pause", "mean 5 s is outside min..max (6 s..40 s)"),
    # trace
    (TRACE, "trace:", "workload.trace.file", "no trace file 'missing.jsonl' (looked for "),
    (edit(TRACE, "missing.jsonl", "/"), "trace:", "workload.trace.file", "'/' is not a file"),
    # a name the kernel refuses to look up (the fuzzer found it: an internal error before)
    (edit(TRACE, "missing.jsonl", "9" * 5000), "trace:", "workload.trace.file",
     f"cannot look for trace file '{'9' * 60}... (5000 chars)': File name too long"),
    (edit(TRACE, "missing.jsonl", "~no-such-user-here/t.jsonl"), "trace:", "workload.trace.file",
     "cannot look for trace file '~no-such-user-here/t.jsonl': "),
    (edit(TRACE, "missing.jsonl}", "x, speed: 2}"), "trace:", "workload.trace.speed",
     "did you mean 'speedup'"),
    (edit(TRACE, "{file: missing.jsonl}", "{start: 0s}"), "trace:", "workload.trace",
     "missing required key 'file'"),
]


@pytest.mark.parametrize(("body", "marker", "key", "message"), ERRORS)
def test_errors_name_file_line_and_key(body: str, marker: str, key: str, message: str):
    e = error(body)
    assert (e.file, e.line, e.key) == ("w.yaml", line_of(body, marker), key), e
    assert message in e.message, e
    assert str(e).startswith(f"w.yaml:{line_of(body, marker)}: {key}: ")


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    (tmp_path / "t.jsonl").write_text("")
    return tmp_path


TRACE_ERRORS = [
    ("start: -1s", "workload.trace.start", "a time cannot be negative"),
    ("duration: 0s", "workload.trace.duration", "the window must be above 0"),
    ("speedup: 0", "workload.trace.speedup", "speedup must be above 0"),
    ("speedup: fast", "workload.trace.speedup", "expected a number above 0"),
    ("sample: 1.5", "workload.trace.sample", "sample 1.5 is outside 0..1"),
    ("sample: 0", "workload.trace.sample", "sample must be above 0"),
    ("limit: 0", "workload.trace.limit", "limit 0 is outside 1..1000000000"),
    ("sessions: maybe", "workload.trace.sessions", "expected true or false"),
]


@pytest.mark.parametrize(("entry", "key", "message"), TRACE_ERRORS)
def test_trace_errors(trace_dir: Path, entry: str, key: str, message: str):
    body = edit(TRACE, "trace: {file: missing.jsonl}", f"trace:\n  file: t.jsonl\n  {entry}")
    source = str(trace_dir / "w.yaml")
    e = error(body, source=source)
    assert (e.file, e.line, e.key) == (source, line_of(body, entry), key), e
    assert message in e.message, e
