"""The input gate: hostile files fail in one line naming the file (and line), quickly and in
bounded memory; the cases a hostile user found (issue 16) are each here."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from fabric.errors import MESSAGE_KEEP, MESSAGE_MAX, TopologyError, one_line
from fabric.topology import load_topology, parse_topology
from fabric.topology.gate import MAX_DEPTH, MAX_FILE_BYTES, read_input

PAIR = """\
name: pair
nodes:
  a: {}
  b: {}
links:
  - endpoints: [a, b]
    rate: 40Mbps
    delay: 15ms
traffic:
  flows:
    - {pattern: one-to-one, from: a, to: b, tokens: 32, requests: 4}
"""


def error_of(text: str, source: str = "t.yaml") -> str:
    with pytest.raises(TopologyError) as info:
        parse_topology(text, source=source)
    msg = str(info.value)
    assert "\n" not in msg, msg
    # under 300 with "fabric: " in front; behind a long path the message keeps MESSAGE_KEEP
    assert len(msg) <= max(MESSAGE_MAX, len(source) + len(":1: ") + MESSAGE_KEEP), msg
    return msg


def sub(old: str, new: str) -> str:
    assert old in PAIR
    return PAIR.replace(old, new, 1)


@pytest.mark.parametrize(("text", "expected"), [
    ("time_scale: !!int x\n" + PAIR, r"^t.yaml:1: time_scale: 'x' is not a valid int"),
    ("time_scale: !!bool maybe\n" + PAIR, r"^t.yaml:1: time_scale: 'maybe' is not a valid bool"),
    ("time_scale: !!timestamp 2001-13-45\n" + PAIR,
     r"^t.yaml:1: time_scale: '2001-13-45' is not a valid timestamp \(ValueError: month"),
    ("time_scale: " + "9" * 4301 + "\n" + PAIR,
     r"^t.yaml:1: time_scale: '9{20,}\.\.\.\(4303 chars\) is not a valid int"),
    (sub("delay: 15ms", "delay: 1e999999s"), r"^t.yaml:8: links\[0\].delay: bad number "
     r"'1e999999': it is too large"),
    (sub("rate: 40Mbps", "rate: 1e9999999Mbps"), r"^t.yaml:7: links\[0\].rate: bad number "),
    (sub("delay: 15ms", "delay: 15ms\n    mtu: 1e9999999"), r"^t.yaml:9: links\[0\].mtu: "),
    (sub("delay: 15ms", "delay: 15ms\n    queue: 1e35p"), r"^t.yaml:9: links\[0\].queue: bad "
     r"number '1e35': it is too large"),
    (sub("delay: 15ms", "delay: 15ms\n    queue: 2e9p"), r"^t.yaml:9: links\[0\].queue: bad "
     r"queue '2e9p': at most 1e9 packets"),
    (sub("rate: 40Mbps", "rate: 1000Tbps"), r"links\[0\].rate: bad rate '1000Tbps': at most "
     r"100Tbps"),
    (sub("delay: 15ms", "delay: 2d"), r"links\[0\].delay: bad time '2d'"),
    (sub("delay: 15ms", "delay: 90000s"), r"links\[0\].delay: bad time '90000s': at most one "
     r"day"),
    ("time_scale: 1e308\n" + PAIR, r"^t.yaml:1: time_scale: time_scale 1e\+308 is outside "
     r"0.001..10000$"),
    ("time_scale: 5e-324\n" + PAIR, r"time_scale 4.94066e-324 is outside"),
    ("time_scale: " + "9" * 400 + "\n" + PAIR, r"^t.yaml:1: time_scale: the value '9+\.\.\."
     r"\(402 chars\) is too large$"),
    (sub("requests: 4}", "requests: !!timestamp x}"), r"^t.yaml:11: traffic.flows\[0\]."
     r"requests: 'x' is not a valid timestamp \(AttributeError"),
    ("time_scale: .nan\n" + PAIR, r"time_scale: expected a number > 0 .* \(not finite\)"),
    (sub("requests: 4}", "requests: 4, rate: nan/s}"), r"^t.yaml:11: traffic.flows\[0\].rate: "
     r"bad rate 'nan/s': the rate must be a number above 0$"),
    (sub("requests: 4}", "requests: 4, rate: 1e-300/s}"), r"rate 1e-300/s is outside"),
    (sub("requests: 4}", "requests: 4, rate: inf/s}"), r"bad rate 'inf/s'"),
    (sub("tokens: 32", "prompt: {mean: .inf}"), r"prompt.mean: expected a mean prompt length "
     r"in tokens, got '.inf' \(not finite\)"),
    (sub("tokens: 32", "prompt: {mean: 100, sigma: .nan}"), r"prompt.sigma: expected a number"),
    (sub("tokens: 32", "prompt: {mean: 100, max: 99999999999}"), r"prompt.max: max "
     r"99999999999 is outside 1..10000000"),
    ("name: t\nnodes: " + "[" * 500 + "]" * 500 + "\n",
     rf"^t.yaml:2: the document nests deeper than {MAX_DEPTH} levels$"),
    ("name: t\nnodes: " + "{a: " * 500 + "1" + "}" * 500 + "\n", r"nests deeper than"),
    ("name: t\nnodes:\n  a: &x {<<: *x}\n",
     r"^t.yaml:3: alias \*x refers to a node that contains it \(a recursive structure\)$"),
    ("name: t\nnodes:\n  a: &x [1, *x]\n", r"recursive structure"),
    (sub("name: pair", 'name: "a\\nb"'), r"^t.yaml:1: name: bad topology name 'a\\nb': 1-31 "),
    (sub("name: pair", 'name: "\\e[31mred"'), r"bad topology name '\\x1b\[31mred'"),
    (sub("name: pair", "name: " + "a" * 1_000_000),
     r"^t.yaml:1: name: bad topology name 'a{20,}\.\.\.\(1000002 chars\): 1-31"),
    (sub("delay: 15ms", "delay: 15ms\n    queue: '" + "1" * 80_000 + "x'"),
     r"links\[0\].queue: bad queue '1+\.\.\.\(80003 chars\): too long"),
])
def test_hostile_values_fail_in_one_line(text: str, expected: str) -> None:
    assert re.search(expected, error_of(text)), error_of(text)


def test_merge_key_bomb_is_refused_at_its_line() -> None:
    lines = ["name: t", "nodes:", "  a:",
             "    l0: &l0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}"]
    for i in range(1, 9):
        merges = ", ".join(f"{{<<: *l{i - 1}, k{j}: {j}}}" for j in range(10))
        lines.append(f"    l{i}: &l{i} [{merges}]")
    msg = error_of("\n".join(lines) + "\n")
    assert re.match(r"^t.yaml:(8|9|10|11|12): the document expands to more than 250,000 "
                    r"YAML nodes", msg), msg


def test_a_file_of_too_many_nodes_is_refused_while_streaming() -> None:
    text = "name: t\nnodes:\n" + "".join(f"  n{i}: {{kind: switch}}\n" for i in range(70_000))
    assert re.match(r"^t.yaml:\d+: the document expands to more than 250,000 YAML nodes .*"
                    r"`generate:`$", error_of(text))


def test_alias_chain_deeper_than_the_limit_is_refused() -> None:
    """Each merge reaches through the one before: walked, it is as deep as the chain."""
    chain = ["a0: &a0 {k: 1}"] + [f"a{i}: &a{i} {{<<: *a{i - 1}, k{i}: 1}}"
                                  for i in range(1, 200)]
    msg = error_of("name: t\nnodes:\n  n:\n    " + "\n    ".join(chain) + "\n")
    assert "nests deeper than 64 levels through its aliases" in msg


def test_aliases_within_bounds_still_work() -> None:
    text = """\
name: t
defaults:
  link: &fast {rate: 1Gbps, delay: 1ms}
nodes: {a: {}, b: {}, c: {}}
links:
  - {endpoints: [a, b], <<: *fast}
  - {endpoints: [b, c], <<: *fast, delay: 2ms}
"""
    topo = parse_topology(text)
    assert [link.forward.delay_ns for link in topo.links] == [1_000_000, 2_000_000]


def test_leaf_spine_too_big_to_build_is_refused() -> None:
    text = "name: t\ngenerate:\n  - leaf_spine: {spines: 4, leaves: 1000, hosts_per_leaf: 1000}\n"
    msg = error_of(text)
    assert re.match(r"^t.yaml:3: generate\[0\]\.leaf_spine: this leaf-spine makes 1,001,004 "
                    r"nodes and 1,004,000 links; a topology has at most 10,000 nodes", msg), msg


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "t.yaml"
    os.mkfifo(fifo)
    with pytest.raises(TopologyError, match=r"t.yaml: cannot read topology file: it is a FIFO, "
                                            r"not a regular file$"):
        load_topology(fifo)


def test_a_device_is_refused_without_reading_it() -> None:
    with pytest.raises(TopologyError, match=r"^/dev/zero: cannot read topology file: it is a "
                                            r"device, not a regular file$"):
        load_topology("/dev/zero")


def test_a_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(PAIR + "#" * MAX_FILE_BYTES)
    with pytest.raises(TopologyError, match=r"big.yaml: the topology file is larger than 4 MiB"):
        load_topology(big)
    ok = tmp_path / "ok.yaml"
    ok.write_text(PAIR)
    assert read_input(ok) == PAIR


def test_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"nope.yaml: cannot read topology file: No such "):
        load_topology(tmp_path / "nope.yaml")


def test_yaml_syntax_errors_keep_the_detailed_wording_and_line() -> None:
    msg = error_of("name: t\nnodes:\n  a: {}\n  b: [\n")
    assert msg == ("t.yaml:5: YAML syntax error: while parsing a flow node, expected the node "
                   "content, but found '<stream end>'")
    msg = error_of("name: t\nnodes:\n\ta: {}\n")
    assert msg.startswith("t.yaml:3: YAML syntax error: while scanning for the next token, "
                          "found character '\\t'")


def test_a_long_path_keeps_its_tail_and_the_message_fits() -> None:
    source = "/" + "d/" * 200 + "topo.yaml"
    msg = error_of("name: \"a\\nb\"\nnodes: {a: {}}\n", source=source)
    assert msg.startswith("...")
    assert "topo.yaml:1: name: bad topology name" in msg


@pytest.mark.parametrize(("raw", "expected"), [
    ("plain", "plain"),
    ("a\nb\r\tc", "a\\nb\\r\\tc"),
    ("x " + "v" * 500 + " tail", "x " + "v" * 60 + "...(500 chars) tail"),
    ("\u2028\x1b", "\\u2028\\x1b"),
])
def test_one_line(raw: str, expected: str) -> None:
    assert one_line(raw) == expected


def test_one_line_caps_any_message() -> None:
    assert len(one_line("word " * 1000)) == MESSAGE_MAX
