"""The topology's `memory:` section: every accepted form, every error with its exact
`FILE:LINE: key: message`, and the address map it builds."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from fabric.errors import TopologyError
from fabric.kv import get_model, transfer_bytes
from fabric.memsw import AccessError
from fabric.memsw.addrmap import address_map
from fabric.topology import load_topology, parse_topology
from fabric.topology.memory import McastWindow, MemorySpec, MemRun, MemWindow, ReduceSpec

KIB, MIB = 1 << 10, 1 << 20

Write = Callable[[str], Path]


# Lines 1-16; the memory section's first line is 17. `cpu` hangs off a plain switch.
HEAD = """\
name: t
nodes:
  msw: {kind: switch}
  gpu-0: {}
  gpu-1: {}
  gpu-2: {}
  gpu-3: {}
  cpu: {}
  sw: {kind: switch}
links:
  - endpoints: [gpu-0, msw]
  - endpoints: [gpu-1, msw]
  - endpoints: [gpu-2, msw]
  - endpoints: [gpu-3, msw]
  - endpoints: [cpu, sw]
memory:
"""

SW = "switches: [msw]"  # line 17 when first
WIN = ("windows:",  # 18
       "  - {name: a, node: gpu-0, base: 0x0, size: 4KiB}",  # 19
       "  - {name: b, node: gpu-1, base: 0x1000, size: 4KiB}")  # 20
RUN = ("runs:", "  - {name: ls, kind: loadstore, from: gpu-0, window: b, sizes: [64]}")


def doc(*lines: str) -> str:
    """HEAD plus memory lines (the first is line 17)."""
    return HEAD + "".join(f"  {line}\n" for line in lines)


def mid(*lines: str) -> str:
    """switches, windows a and b, then `lines` (the first is line 21), then one loadstore run."""
    return doc(SW, *WIN, *lines, *RUN)


def runs(*lines: str) -> str:
    """switches, windows a (line 19) and b (line 20), a multicast window `m` (line 22), a
    reduce group `tp` of float16 (line 24), then `runs:` and `lines` (the first is line 26)."""
    return doc(SW, *WIN,
               "multicast:",
               "  - {name: m, base: 0x10000, size: 4KiB, members: [gpu-1, gpu-2]}",
               "reduce:",
               "  - {name: tp, members: [gpu-0, gpu-1], dtype: float16}",
               "runs:", *(f"  - {line}" for line in lines))


def parse(text: str) -> MemorySpec:
    spec = parse_topology(text, source="t.yaml").memory
    assert spec is not None
    return spec


# ---- accepted forms -----------------------------------------------------------------------

ISSUE = doc(
    "switches: [msw]",
    "latency: 250ns",
    "credits: 8",
    "txn: 128",
    "windows:",
    "  - {name: gpu0-hbm, node: gpu-0, base: 0x0, size: 16MiB}",
    "  - {name: gpu1-hbm, node: gpu-1, base: 0x1000000, size: 16MiB}",
    "multicast:",
    "  - {name: bcast, base: 0x80000000, size: 4MiB, members: [gpu-1, gpu-2]}",
    "reduce:",
    "  - {name: tp, members: [gpu-0, gpu-1, gpu-2, gpu-3], dtype: bfloat16}",
    "runs:",
    "  - {name: ls, kind: loadstore, from: gpu-0, window: gpu1-hbm, sizes: [64, 256, 4KiB], "
    "count: 200}",
    "  - {name: hc, kind: hypercast, from: gpu-0, window: bcast, size: 1MiB}",
    "  - {name: ar, kind: allreduce, group: tp, sizes: [64KiB, 1MiB]}",
    "  - {name: kv, kind: kv-pull, from: gpu-0, to: [gpu-1, gpu-2], window: gpu0-hbm, "
    "model: llama-3.1-8b, tokens: 16}",
)


def test_the_issue_example() -> None:
    spec = parse(ISSUE)
    kv = transfer_bytes(get_model("llama-3.1-8b"), 16)
    assert spec == MemorySpec(
        switches=("msw",), latency_ns=250, credits=8, txn=128,
        windows=(MemWindow("gpu0-hbm", "gpu-0", 0, 16 * MIB, line=22),
                 MemWindow("gpu1-hbm", "gpu-1", 0x1000000, 16 * MIB, line=23)),
        multicast=(McastWindow("bcast", 0x80000000, 4 * MIB, ("gpu-1", "gpu-2"), line=25),),
        reduce=(ReduceSpec("tp", ("gpu-0", "gpu-1", "gpu-2", "gpu-3"), "bfloat16", line=27),),
        runs=(
            MemRun("ls", "loadstore", "gpu-0", ("gpu-1",), "gpu1-hbm", None, (64, 256, 4 * KIB),
                   200, None, None, line=29),
            MemRun("hc", "hypercast", "gpu-0", ("gpu-1", "gpu-2"), "bcast", None, (MIB,), 1,
                   None, None, line=30),
            MemRun("ar", "allreduce", None, ("gpu-0", "gpu-1", "gpu-2", "gpu-3"), None, "tp",
                   (64 * KIB, MIB), 1, None, None, line=31),
            MemRun("kv", "kv-pull", "gpu-0", ("gpu-1", "gpu-2"), "gpu0-hbm", None, (kv,), 1,
                   "llama-3.1-8b", 16, line=32),
        ),
        line=17)


def test_defaults() -> None:
    spec = parse(doc(SW, *WIN, "runs:", "  - {kind: loadstore, from: gpu-0, window: b, "
                     "sizes: 64}"))
    assert (spec.latency_ns, spec.credits, spec.txn, spec.timeout_ns) == (100, 16, 256,
                                                                          100_000)
    assert spec.multicast == spec.reduce == ()
    (run,) = spec.runs
    assert (run.name, run.count, run.sizes) == ("loadstore-0", 100, (64,))


def test_completion_timeout() -> None:
    assert parse(mid("timeout: 2ms")).timeout_ns == 2_000_000


def test_no_memory_section() -> None:
    assert parse_topology(HEAD.replace("memory:\n", "")).memory is None


def test_hex_base_and_size_forms() -> None:
    spec = parse(doc(SW, "windows:",
                     "  - {name: a, node: gpu-0, base: 0x40, size: 128}",  # bare int = bytes
                     "  - {name: b, node: gpu-1, base: 4096, size: 0x1000}",
                     "  - {name: c, node: gpu-2, base: 0x2000, size: 8KB}",  # 8000 = 125 x 64
                     "  - {name: d, node: gpu-2, base: 0x1_0000_0000, size: 1.5KiB}",
                     *RUN))
    assert [(w.base, w.size) for w in spec.windows] == [
        (0x40, 128), (4096, 4096), (0x2000, 8000), (1 << 32, 1536)]


def test_scalar_lists_and_txn_with_unit() -> None:
    spec = parse(doc("switches: msw", "txn: 192B", *WIN,
                     "runs:", "  - {kind: loadstore, from: gpu-0, window: b, sizes: 4KiB}"))
    assert spec.switches == ("msw",)
    assert spec.txn == 192
    assert spec.runs[0].sizes == (4 * KIB,)


def test_reduce_dtype_defaults_to_float32() -> None:
    spec = parse(mid("reduce:", "  - {name: g, members: [gpu-2, gpu-3]}"))
    assert spec.reduce == (ReduceSpec("g", ("gpu-2", "gpu-3"), "float32", line=22),)


def test_multicast_before_windows_and_a_member_sender() -> None:
    spec = parse(doc(SW, "multicast:",
                     "  - {name: m, base: 0x0, size: 64, members: [gpu-0]}",
                     "windows:",
                     "  - {name: a, node: gpu-1, base: 0x40, size: 64}",
                     "runs:",
                     "  - {kind: hypercast, from: gpu-0, window: m, size: 64}"))
    assert spec.multicast[0].members == ("gpu-0",)
    assert spec.runs[0].src == "gpu-0"


def test_window_size_runs_fit_exactly() -> None:
    spec = parse(runs("{kind: loadstore, from: gpu-0, window: b, sizes: [1, 4KiB]}",
                      "{kind: hypercast, from: gpu-3, window: m, size: 4KiB}",
                      "{kind: allreduce, group: tp, sizes: [2, 4096]}"))
    assert [r.name for r in spec.runs] == ["loadstore-0", "hypercast-1", "allreduce-2"]
    assert spec.runs[1].dst == ("gpu-1", "gpu-2")


def test_kv_pull_exactly_fills_its_window() -> None:
    need = transfer_bytes(get_model("qwen3-8b"), 32)
    spec = parse(doc(SW, "windows:",
                     f"  - {{name: kv, node: gpu-0, base: 0x0, size: {need}}}",
                     "runs:",
                     "  - {kind: kv-pull, from: gpu-0, to: gpu-3, window: kv, model: Qwen3-8B, "
                     "tokens: 32}"))
    run = spec.runs[0]
    assert (run.model, run.sizes, run.dst) == ("qwen3-8b", (need,), ("gpu-3",))


TWO_TIER = """\
name: t
nodes:
  spine: {kind: switch}
  leaf-0: {kind: switch}
  leaf-1: {kind: switch}
  h0: {}
  h1: {}
links:
  - endpoints: [h0, leaf-0]
  - endpoints: [leaf-0, spine]
  - endpoints: [spine, leaf-1]
  - endpoints: [leaf-1, h1]
memory:
  switches: [leaf-0, spine, leaf-1]
  windows:
    - {name: w0, node: h0, base: 0x0, size: 4MiB}
    - {name: w1, node: h1, base: 0x400000, size: 4MiB}
  runs:
    - {kind: loadstore, from: h0, window: w1, sizes: [64]}
    - {kind: kv-pull, from: h1, to: h0, window: w1, model: llama-3.1-8b, tokens: 4}
"""


def test_two_tier_memory_fabric() -> None:
    spec = parse(TWO_TIER)
    assert spec.switches == ("leaf-0", "spine", "leaf-1")
    assert spec.endpoints() == ["h0", "h1"]


def test_endpoints_order() -> None:
    spec = parse(ISSUE)
    assert spec.endpoints() == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    spec = parse(doc(SW, "multicast:",
                     "  - {name: m, base: 0x0, size: 64, members: [gpu-3, gpu-2]}",
                     "windows:",
                     "  - {name: a, node: gpu-2, base: 0x40, size: 64}",
                     "runs:",
                     "  - {kind: loadstore, from: gpu-1, window: a, sizes: [64]}"))
    assert spec.endpoints() == ["gpu-3", "gpu-2", "gpu-1"]


def test_lookups() -> None:
    spec = parse(ISSUE)
    assert spec.window("bcast").size == 4 * MIB
    assert spec.window("gpu0-hbm").node == "gpu-0"  # type: ignore[union-attr]
    assert spec.group("tp").dtype == "bfloat16"
    with pytest.raises(KeyError):
        spec.window("nope")
    with pytest.raises(KeyError):
        spec.group("nope")


# ---- the address map ----------------------------------------------------------------------


def test_address_map_round_trip() -> None:
    spec = parse(ISSUE)
    ports = {"gpu-0": 1, "gpu-1": 2, "gpu-2": 3, "gpu-3": 4}
    amap = address_map(spec, ports.__getitem__)
    assert [w.name for w in amap.windows] == ["gpu0-hbm", "gpu1-hbm", "bcast"]
    for addr, length, name, port in [
        (0x0, 64, "gpu0-hbm", 1),
        (16 * MIB - 64, 64, "gpu0-hbm", 1),
        (0x1000000, 256, "gpu1-hbm", 2),
        (0x1000000 + 16 * MIB - 1, 1, "gpu1-hbm", 2),
        (0x80000000, 4 * MIB, "bcast", "bcast"),
    ]:
        w = amap.lookup(addr, length)
        assert (w.name, w.port) == (name, port)
    assert amap.window("bcast").multicast
    assert not amap.window("gpu0-hbm").multicast
    assert amap.members("bcast") == (2, 3)
    assert amap.groups == {"bcast": (2, 3)}
    with pytest.raises(AccessError):
        amap.lookup(0x2000000, 64)  # between the windows


def test_address_map_members_behind_one_port_join_once() -> None:
    """At a switch whose port 9 leads to the next switch, gpu-1 and gpu-2 are one port."""
    spec = parse(ISSUE)
    ports = {"gpu-0": 1, "gpu-1": 9, "gpu-2": 9, "gpu-3": 9}
    amap = address_map(spec, ports.__getitem__)
    assert amap.members("bcast") == (9,)
    assert amap.lookup(0x1000040, 64).port == 9


# ---- errors -------------------------------------------------------------------------------

MEM_KEYS = "switches, latency, credits, txn, timeout, windows, multicast, reduce, runs"
RUN_KEYS = "name, kind, from, to, window, group, sizes, size, count, model, tokens"
RUN_KINDS = "loadstore, hypercast, allreduce, kv-pull"
MODELS = ("deepseek-v3, kimi-linear-48b-a3b, llama-3.1-70b, llama-3.1-8b, mimo-v2-flash, "
          "minimax-m2.5, prfaas-hybrid-1t, qwen3-235b-a22b, qwen3-8b, ring-2.5-1t")
LINK_HINT = "add a link such as {endpoints: [cpu, msw]}"
KV16 = transfer_bytes(get_model("llama-3.1-8b"), 16)  # 2 MiB

ERRORS = [
    # the section and its keys
    (HEAD.replace("memory:\n", "memory: {}\n"), "16: memory: missing required key 'switches'"),
    (HEAD.replace("memory:\n", "memory: [msw]\n"), "16: memory: expected a mapping, got a list"),
    (doc(SW, *WIN), "17: memory: missing required key 'runs'"),
    (doc(SW, *RUN), "17: memory: missing required key 'windows'"),
    (mid("timeout: 100ns"),
     "21: memory.timeout: a completion timeout of 100 ns is not longer than a switch hop "
     "(100 ns): every transaction would be lost"),
    (mid("timeout: soon"),
     "21: memory.timeout: bad time 'soon': expected a number and a unit such as 500ns, 2us, "
     "1.5ms, 1s, or 0"),
    (mid("latncy: 1us"),
     f"21: memory.latncy: unknown key 'latncy'; did you mean 'latency'? (allowed: {MEM_KEYS})"),
    # switches
    (doc("switches: []", *WIN, *RUN),
     "17: memory.switches: no memory switches: list the `kind: switch` nodes that switch "
     "memory, e.g. [msw]"),
    (doc("switches: [msx]", *WIN, *RUN),
     "17: memory.switches[0]: unknown node 'msx'; did you mean 'msw'?"),
    (doc("switches: [msw, gpu-0]", *WIN, *RUN),
     "17: memory.switches[1]: node 'gpu-0' is a host; a memory switch is a `kind: switch` node"),
    (doc("switches: [msw, msw]", *WIN, *RUN),
     "17: memory.switches[1]: node 'msw' is listed twice"),
    # latency, credits, txn
    (mid("latency: 5"), "21: memory.latency: bad time 5: a time needs a unit, such as 5ms or 5us"),
    (mid("credits: 0"), "21: memory.credits: credits must be at least 1, got 0"),
    (mid("credits: many"), "21: memory.credits: expected a count >= 1, got 'many'"),
    (mid("txn: 100"),
     "21: memory.txn: txn 100 B is not a UALink request size; use one of: 64, 128, 192, 256"),
    # windows
    (doc(SW, "windows: []", *RUN),
     "18: memory.windows: no windows: add at least one endpoint memory region, e.g. "
     "{name: gpu0-hbm, node: gpu-0, base: 0x0, size: 16MiB}"),
    (doc(SW, "windows:", "  - {name: a, base: 0x0, size: 64}", *RUN),
     "19: memory.windows[0]: missing required key 'node'"),
    (doc(SW, "windows:", "  - {name: a, node: gpu-0, base: 0, size: 64, port: 1}", *RUN),
     "19: memory.windows[0].port: unknown key 'port' (allowed: name, node, base, size)"),
    (doc(SW, "windows:", "  - {name: A, node: gpu-0, base: 0, size: 64}", *RUN),
     "19: memory.windows[0].name: bad window name 'A': 1-31 characters: lower-case letters, "
     "digits, '-' and '_', starting with a letter or digit"),
    (doc(SW, "windows:", "  - {name: a, node: gpu-9, base: 0, size: 64}", *RUN),
     "19: memory.windows[0].node: unknown node 'gpu-9'; did you mean 'gpu-3'?"),
    (doc(SW, "windows:", "  - {name: a, node: sw, base: 0, size: 64}", *RUN),
     "19: memory.windows[0].node: node 'sw' is a switch; memory endpoints are hosts"),
    (doc(SW, "windows:", "  - {name: a, node: cpu, base: 0, size: 64}", *RUN),
     f"19: memory.windows[0].node: host 'cpu' has no link to a memory switch (msw); "
     f"{LINK_HINT}"),
    (doc(SW, "windows:", "  - {name: a, node: gpu-0, base: 0x1010, size: 64}", *RUN),
     "19: memory.windows[0].base: base 0x1010 is not 64-byte aligned; use 0x1000 or 0x1040"),
    (doc(SW, "windows:", "  - {name: a, node: gpu-0, base: -64, size: 64}", *RUN),
     "19: memory.windows[0].base: base must be at least 0, got -64"),
    (doc(SW, "windows:", "  - {name: a, node: gpu-0, base: 16MiB, size: 64}", *RUN),
     "19: memory.windows[0].base: expected an address such as 0x1000000, got '16MiB'"),
    (doc(SW, "windows:", "  - {name: a, node: gpu-0, base: 0, size: 100}", *RUN),
     "19: memory.windows[0].size: size 100 B is not a multiple of 64 bytes; use 64 or 128"),
    (doc(SW, "windows:", "  - {name: a, node: gpu-0, base: 0, size: 32}", *RUN),
     "19: memory.windows[0].size: size 32 B is not a multiple of 64 bytes; use 64"),
    (doc(SW, "windows:", "  - {name: a, node: gpu-0, base: 0, size: 0}", *RUN),
     "19: memory.windows[0].size: size must be above 0 (a window holds at least one 64-byte "
     "flit)"),
    (doc(SW, "windows:", "  - {name: a, node: gpu-0, base: 0, size: 16M}", *RUN),
     "19: memory.windows[0].size: bad size '16M': say 16MB or 16MiB"),
    # overlaps and names, at the later window's line, naming the earlier one and its line
    (doc(SW, "windows:", "  - {name: a, node: gpu-0, base: 0x0, size: 0x1000}",
         "  - {name: b, node: gpu-1, base: 0x0, size: 256}", *RUN),
     "20: memory.windows[1]: window 'b' [0x0, 0x100) overlaps window 'a' [0x0, 0x1000) "
     "(line 19) by 256 bytes; move 'b' to 0x1000"),
    (mid("multicast:", "  - {name: m, base: 0x800, size: 4KiB, members: [gpu-2]}"),
     "22: memory.multicast[0]: multicast window 'm' [0x800, 0x1800) overlaps window 'a' "
     "[0x0, 0x1000) (line 19) by 2048 bytes; move 'm' to 0x2000"),
    (doc(SW, "multicast:", "  - {name: m, base: 0x1000, size: 64, members: [gpu-2]}", *WIN,
         *RUN),
     "22: memory.windows[1]: window 'b' [0x1000, 0x2000) overlaps multicast window 'm' "
     "[0x1000, 0x1040) (line 19) by 64 bytes; move 'b' to 0x1040"),
    (doc(SW, "windows:", "  - {name: a, node: gpu-0, base: 0x0, size: 64}",
         "  - {name: a, node: gpu-1, base: 0x40, size: 64}", *RUN),
     "20: memory.windows[1].name: duplicate window name 'a' (first at line 19); windows and "
     "multicast windows share one set of names"),
    (mid("multicast:", "  - {name: b, base: 0x10000, size: 64, members: [gpu-2]}"),
     "22: memory.multicast[0].name: duplicate window name 'b' (first at line 20); windows and "
     "multicast windows share one set of names"),
    # multicast members
    (mid("multicast:", "  - {name: m, base: 0x10000, size: 64, members: []}"),
     "22: memory.multicast[0].members: no members: a multicast window needs at least one host "
     "to replicate to"),
    (mid("multicast:", "  - {name: m, base: 0x10000, size: 64, members: [gpu-2, gpu-2]}"),
     "22: memory.multicast[0].members[1]: node 'gpu-2' is listed twice"),
    (mid("multicast:", "  - {name: m, base: 0x10000, size: 64, members: [gpu-2, cpu]}"),
     f"22: memory.multicast[0].members[1]: host 'cpu' has no link to a memory switch (msw); "
     f"{LINK_HINT}"),
    (mid("multicast:", "  - {name: m, base: 0x10000, size: 64}"),
     "22: memory.multicast[0]: missing required key 'members'"),
    # reduce groups
    (mid("reduce:", "  - {name: g, members: [gpu-0]}"),
     "22: memory.reduce[0].members: a reduce group needs at least 2 members: list the hosts "
     "whose vectors the switch sums"),
    (mid("reduce:", "  - {name: g, members: [gpu-0, gpu-1, gpu-0]}"),
     "22: memory.reduce[0].members[2]: node 'gpu-0' is listed twice"),
    (mid("reduce:", "  - {name: g, members: [gpu-0, sw]}"),
     "22: memory.reduce[0].members[1]: node 'sw' is a switch; memory endpoints are hosts"),
    (mid("reduce:", "  - {name: g, members: [gpu-0, gpu-1], dtype: int8}"),
     "22: memory.reduce[0].dtype: unknown dtype 'int8' (one of: float16, float32, bfloat16)"),
    (mid("reduce:", "  - {name: g, members: [gpu-0, gpu-1]}",
         "  - {name: g, members: [gpu-2, gpu-3]}"),
     "23: memory.reduce[1].name: duplicate reduce group name 'g' (first at line 22)"),
    # runs: shape
    (doc(SW, *WIN, "runs: []"),
     "21: memory.runs: no runs: add at least one, e.g. {kind: loadstore, from: gpu-0, window: "
     "gpu1-hbm, sizes: [64, 4KiB]}"),
    (runs("{from: gpu-0, window: b, sizes: [64]}"),
     "26: memory.runs[0]: missing required key 'kind'"),
    (runs("{kind: copy, from: gpu-0}"),
     f"26: memory.runs[0].kind: unknown run kind 'copy' (one of: {RUN_KINDS})"),
    (runs("{kind: loadstore, from: gpu-0, window: b, sizes: [64], rate: 1Gbps}"),
     f"26: memory.runs[0].rate: unknown key 'rate' (allowed: {RUN_KEYS})"),
    (runs("{kind: loadstore, from: gpu-0, window: b, sizes: [64], group: tp}"),
     "26: memory.runs[0].group: a loadstore run takes from, window, sizes, count, not 'group'"),
    (runs("{kind: hypercast, from: gpu-0, window: m, sizes: [64]}"),
     "26: memory.runs[0].sizes: a hypercast run takes from, window, size, not 'sizes'"),
    (runs("{kind: loadstore, from: gpu-0, window: b}"),
     "26: memory.runs[0]: a loadstore run needs `sizes:` (bytes per access, e.g. "
     "[64, 256, 4KiB])"),
    (runs("{kind: allreduce, sizes: [64]}"),
     "26: memory.runs[0]: an allreduce run needs `group:` (a reduce group name)"),
    (runs("{name: x, kind: allreduce, group: tp, sizes: [64]}",
          "{name: x, kind: allreduce, group: tp, sizes: [128]}"),
     "27: memory.runs[1].name: duplicate run name 'x' (first at line 26); name runs with "
     "`name:`"),
    # runs: loadstore
    (runs("{kind: loadstore, from: cpu, window: b, sizes: [64]}"),
     f"26: memory.runs[0].from: host 'cpu' has no link to a memory switch (msw); {LINK_HINT}"),
    (runs("{kind: loadstore, from: gpu-0, window: c, sizes: [64]}"),
     "26: memory.runs[0].window: unknown window 'c' (windows: a, b, m)"),
    (runs("{kind: loadstore, from: gpu-0, window: m, sizes: [64]}"),
     "26: memory.runs[0].window: 'm' is a multicast window; a loadstore run targets a unicast "
     "window (one of: a, b)"),
    (runs("{kind: loadstore, from: gpu-0, window: b, sizes: [64, 8KiB]}"),
     "26: memory.runs[0].sizes[1]: size 8 KiB (8192 B) is larger than window 'b' "
     "(4 KiB (4096 B), line 20): a write larger than the window would run past its end; use "
     "at most 4 KiB or grow the window"),
    (runs("{kind: loadstore, from: gpu-0, window: b, sizes: [0]}"),
     "26: memory.runs[0].sizes[0]: size must be above 0"),
    (runs("{kind: loadstore, from: gpu-0, window: b, sizes: []}"),
     "26: memory.runs[0].sizes: no sizes: list at least one, e.g. [64, 4KiB]"),
    (runs("{kind: loadstore, from: gpu-0, window: b, sizes: [64], count: 0}"),
     "26: memory.runs[0].count: count must be at least 1, got 0"),
    # runs: hypercast
    (runs("{kind: hypercast, from: gpu-0, window: a, size: 64}"),
     "26: memory.runs[0].window: 'a' is not a multicast window; a hypercast run writes to a "
     "multicast window (one of: m)"),
    (doc(SW, *WIN, "runs:", "  - {kind: hypercast, from: gpu-0, window: a, size: 64}"),
     "22: memory.runs[0].window: 'a' is not a multicast window; a hypercast run writes to a "
     "multicast window (there are none: add one under memory.multicast)"),
    (runs("{kind: hypercast, from: gpu-0, window: m, size: 1MiB}"),
     "26: memory.runs[0].size: size 1 MiB (1048576 B) is larger than window 'm' "
     "(4 KiB (4096 B), line 22): a write larger than the window would run past its end; use "
     "at most 4 KiB or grow the window"),
    # runs: allreduce
    (runs("{kind: allreduce, group: dp, sizes: [64]}"),
     "26: memory.runs[0].group: unknown reduce group 'dp' (groups: tp)"),
    (runs("{kind: allreduce, group: tp, sizes: [1001]}"),
     "26: memory.runs[0].sizes[0]: size 1001 B is not a multiple of 2 bytes (one float16 "
     "element of group 'tp'); use 1000 or 1002"),
    (runs("{kind: allreduce, group: tp, sizes: [1]}"),
     "26: memory.runs[0].sizes[0]: size 1 B is not a multiple of 2 bytes (one float16 "
     "element of group 'tp'); use 2"),
    # runs: kv-pull
    (runs("{kind: kv-pull, from: gpu-0, to: [], window: a, model: llama-3.1-8b, tokens: 1}"),
     "26: memory.runs[0].to: no hosts: list the hosts that pull the KV, e.g. [gpu-1]"),
    (runs("{kind: kv-pull, from: gpu-0, to: [gpu-1, gpu-0], window: a, model: llama-3.1-8b, "
          "tokens: 1}"),
     "26: memory.runs[0].to: 'gpu-0' is both `from:` and `to:`; a host does not pull its own "
     "KV"),
    (runs("{kind: kv-pull, from: gpu-0, to: gpu-1, window: b, model: llama-3.1-8b, "
          "tokens: 1}"),
     "26: memory.runs[0].window: window 'b' belongs to 'gpu-1', not 'gpu-0': a kv-pull reads "
     "KV from the memory of `from:`; use one of its windows (a)"),
    (runs("{kind: kv-pull, from: gpu-2, to: gpu-1, window: b, model: llama-3.1-8b, "
          "tokens: 1}"),
     "26: memory.runs[0].window: window 'b' belongs to 'gpu-1', not 'gpu-2': a kv-pull reads "
     "KV from the memory of `from:`; add a window on 'gpu-2'"),
    (runs("{kind: kv-pull, from: gpu-0, to: gpu-1, window: m, model: llama-3.1-8b, "
          "tokens: 1}"),
     "26: memory.runs[0].window: 'm' is a multicast window; a kv-pull reads KV from a window "
     "that 'gpu-0' owns"),
    (runs("{kind: kv-pull, from: gpu-0, to: gpu-1, window: a, model: llama-4, tokens: 1}"),
     f"26: memory.runs[0].model: unknown model 'llama-4' (known: {MODELS})"),
    (runs("{kind: kv-pull, from: gpu-0, to: gpu-1, window: a, model: llama-3.1-8b, "
          "tokens: 0}"),
     "26: memory.runs[0].tokens: tokens 0 is outside 1..10000000"),
    (runs("{kind: kv-pull, from: gpu-0, to: gpu-1, window: a, model: llama-3.1-8b, "
          "tokens: 16}"),
     "26: memory.runs[0].tokens: the KV of 16 tokens of llama-3.1-8b needs 2 MiB (whole "
     f"16-token blocks); window 'a' holds 4 KiB: grow it to {KV16} B or use a smaller model"),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS,
                         ids=[f"{i}:{e[:50]}" for i, (_, e) in enumerate(ERRORS)])
def test_errors(write: Write, text: str, expected: str) -> None:
    path = write(text)
    with pytest.raises(TopologyError, match=f"^{re.escape(f'{path}:{expected}')}$"):
        load_topology(path)


def test_kv_too_big_suggests_fewer_tokens(write: Write) -> None:
    need = transfer_bytes(get_model("llama-3.1-8b"), 100)  # 7 blocks = 112 tokens = 14 MiB
    path = write(doc(SW, "windows:", "  - {name: a, node: gpu-0, base: 0x0, size: 8MiB}",
                     "runs:", "  - {kind: kv-pull, from: gpu-0, to: gpu-1, window: a, "
                     "model: llama-3.1-8b, tokens: 100}"))
    expected = (f"{path}:21: memory.runs[0].tokens: the KV of 100 tokens of llama-3.1-8b needs "
                f"14 MiB (whole 16-token blocks); window 'a' holds 8 MiB: grow it to {need} B "
                "or pull at most 64 tokens")
    with pytest.raises(TopologyError, match=f"^{re.escape(expected)}$"):
        load_topology(path)


SPLIT = """\
name: t
nodes:
  msw-a: {kind: switch}
  msw-b: {kind: switch}
  h0: {}
  h1: {}
links:
  - endpoints: [h0, msw-a]
  - endpoints: [h1, msw-b]
  - endpoints: [msw-a, msw-b]
memory:
  switches: [msw-a, msw-b]
  windows:
    - {name: w1, node: h1, base: 0x0, size: 4KiB}
  runs:
    - {kind: loadstore, from: h0, window: w1, sizes: [64]}
"""
APART = ("no path through memory switches joins 'h0' and 'h1' ('h0' hangs off msw-a; 'h1' off "
         "msw-b); link those memory switches, directly or through other memory switches")


def test_linked_memory_switches_reach_each_other() -> None:
    assert parse(SPLIT).runs[0].dst == ("h1",)


@pytest.mark.parametrize(("text", "expected"), [
    # the switches' link dropped: the run cannot reach the window
    (SPLIT.replace("  - endpoints: [msw-a, msw-b]\n", ""),
     f"15: memory.runs[0].window: {APART}"),
    # msw-b is not a memory switch: h1 hangs off nothing
    (SPLIT.replace("switches: [msw-a, msw-b]", "switches: [msw-a]"),
     "14: memory.windows[0].node: host 'h1' has no link to a memory switch (msw-a); add a link "
     "such as {endpoints: [h1, msw-a]}"),
    # a kv-pull whose puller sits across the split
    (SPLIT.replace("  - endpoints: [msw-a, msw-b]\n", "").replace(
        "{kind: loadstore, from: h0, window: w1, sizes: [64]}",
        "{kind: kv-pull, from: h1, to: [h0], window: w1, model: llama-3.1-8b, tokens: 1}"),
     "15: memory.runs[0].to: no path through memory switches joins 'h1' and 'h0' ('h1' hangs "
     "off msw-b; 'h0' off msw-a); link those memory switches, directly or through other memory "
     "switches"),
    # a reduce group across the split
    (SPLIT.replace("  - endpoints: [msw-a, msw-b]\n", "").replace(
        "  runs:", "  reduce:\n    - {name: g, members: [h0, h1]}\n  runs:"),
     f"15: memory.reduce[0].members: {APART}"),
])
def test_memory_switches_must_join(write: Write, text: str, expected: str) -> None:
    path = write(text)
    with pytest.raises(TopologyError, match=f"^{re.escape(f'{path}:{expected}')}$"):
        load_topology(path)


def test_error_carries_file_line_key(write: Write) -> None:
    path = write(runs("{kind: loadstore, from: gpu-0, window: b, sizes: [64, 8KiB]}"))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), 26, "memory.runs[0].sizes[1]")


def test_memory_switches_beside_roce_switches() -> None:
    """A `switches:` section beside `memory:` makes the other switch nodes RoCE switches;
    the memory switch is planned as no RoCE switch, and its links keep their full shape."""
    from fabric.plan import plan_fabric, roce_switches

    text = (doc(SW, *WIN, *RUN) + "switches: {pfc: false}\n").replace(
        "  - endpoints: [cpu, sw]\n", "".join(
            f"  - {{endpoints: [{h}, sw], rate: 10Gbps}}\n" for h in ("cpu", "gpu-0", "gpu-1")))
    topo = parse_topology(text, source="t.yaml")
    assert roce_switches(topo) == ["sw"]
    plan = plan_fabric(topo, backend="userspace", run_id="t")
    assert list(plan.switches) == ["sw"]
    by_sender = {(lp.a.node, lp.b.node): lp for lp in plan.links}
    assert by_sender[("gpu-0", "msw")].b_egress == topo.links[0].reverse  # msw: link shapes
    cpu_sw = by_sender[("cpu", "sw")]
    assert cpu_sw.a_egress.rate_bps == 10_000_000_000
    assert not cpu_sw.b_egress.rate_bps  # the RoCE switch's egress port serialises itself
