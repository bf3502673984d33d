"""The `expect:` section: parsing at FILE:LINE, the figures registry read from a real
`summarise()` output and RoCE variant metrics, evaluation (missing figures fail), the table,
and docs/expect.md against the registry. Pure: no sockets, no root."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.errors import TopologyError
from fabric.metrics import ChunkRecord, TransferRecord, summarise
from fabric.metrics.expect import (
    FIGURES,
    RunFigures,
    evaluate,
    expectations_json,
    figures_table,
    render_expectations,
    validate_expectations,
)
from fabric.topology import parse_topology
from fabric.topology.expect import parse_expectation, parse_value

US, MS = 1_000, 1_000_000
DOCS = Path(__file__).resolve().parent.parent / "docs" / "expect.md"

HEAD = """\
name: ex
classes:
  - {name: kv, dscp: 10}
  - {name: bg, dscp: 0}
nodes: {a: {}, b: {}}
links: [{endpoints: [a, b]}]
traffic:
  flows:
    - {name: chat, pattern: pd, from: a, to: b, class: kv, requests: 2, tokens: 64,
       rate: 10/s}
    - {pattern: bulk, from: a, to: b, class: bg, size: 1MiB}
"""


def topo_with(*lines: str):  # noqa: ANN201
    text = HEAD + "expect:\n" + "".join(f"  - {line}\n" for line in lines)
    return parse_topology(text, source="ex.yaml")


# ---- parsing --------------------------------------------------------------------------------

def test_parse_the_brief_example() -> None:
    topo = topo_with("kv.chunk_p99 < 500us", "integrity == ok", "drops.lossless == 0",
                     "goodput >= 1Gbps", "bulk.fct_p99 <= 2s", "delivered >= 99.5%",
                     "queue_max <= 4MiB")
    got = [(e.figure, e.op, e.kind, e.value, e.word, e.line, e.key) for e in topo.expect]
    assert got == [
        ("kv.chunk_p99", "<", "time", 500_000.0, None, 13, "expect[0]"),
        ("integrity", "==", "word", None, "ok", 14, "expect[1]"),
        ("drops.lossless", "==", "number", 0.0, None, 15, "expect[2]"),
        ("goodput", ">=", "rate", 1e9, None, 16, "expect[3]"),
        ("bulk.fct_p99", "<=", "time", 2e9, None, 17, "expect[4]"),
        ("delivered", ">=", "percent", 0.995, None, 18, "expect[5]"),
        ("queue_max", "<=", "size", float(4 << 20), None, 19, "expect[6]"),
    ]
    validate_expectations(topo)


def test_no_section_and_an_empty_one() -> None:
    assert parse_topology(HEAD).expect == ()
    assert parse_topology(HEAD + "expect:\n").expect == ()


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("1.5", "number", 1.5), ("-2", "number", -2.0), ("1e3", "number", 1000.0),
    ("500us", "time", 500_000.0), ("2 ms", "time", 2e6), ("1Gbps", "rate", 1e9),
    ("100MBps", "rate", 8e8), ("4MiB", "size", float(4 << 20)), ("64KB", "size", 64_000.0),
    ("1%", "percent", 0.01), ("failed", "word", None),
])
def test_values(text: str, kind: str, value: float | None) -> None:
    assert parse_value(text)[:2] == (kind, value)


@pytest.mark.parametrize(("entry", "message"), [
    ("goodput", "expect[0]: 'goodput': expected FIGURE OP VALUE"),
    ("goodput = 1Gbps", "expect[0]: 'goodput = 1Gbps': compare with '==', not '='"),
    ("goodput => 1Gbps", "expect[0]: 'goodput => 1Gbps': unknown operator '=>' (one of: < "
     "<= > >= == !=)"),
    ("goodput >=", "expect[0]: 'goodput >=': expected FIGURE OP VALUE"),
    ("goodput <> 1Gbps", "expect[0]: 'goodput <> 1Gbps': unknown operator"),
    ("goodput >= fast", "expect[0]: goodput: bad value 'fast': expected a number"),
    ("delivered > 200%", "expect[0]: delivered: bad loss '200%': loss cannot exceed 100%"),
    ("goodput >= 1e99", "expect[0]: goodput: bad number '1e99': it is too large"),
    ("{goodput: 1}", "expect[0]: expected an expectation: FIGURE OP VALUE"),
])
def test_parse_errors_at_their_line(entry: str, message: str) -> None:
    with pytest.raises(TopologyError, match=r"^ex\.yaml:13: ") as e:
        topo_with(entry)
    assert message in str(e.value)


def test_section_not_a_list() -> None:
    with pytest.raises(TopologyError, match=r"^ex\.yaml:12: expect: expected a list, got "
                       r"'goodput > 1Gbps'"):
        parse_topology(HEAD + "expect: goodput > 1Gbps\n", source="ex.yaml")


def test_unknown_top_level_key_still_an_error() -> None:
    with pytest.raises(TopologyError, match=r"unknown key 'expects'; did you mean 'expect'"):
        parse_topology(HEAD + "expects: []\n", source="ex.yaml")


# ---- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "message"), [
    ("chunk_p98 < 1ms", "expect[0]: chunk_p98: unknown figure; did you mean 'chunk_p99'? "
     "(figures: integrity, goodput, chunk_p50"),
    ("kv.chunk_p98 < 1ms", "unknown figure; did you mean 'kv.chunk_p99'?"),
    ("drops.lost == 0", "expect[0]: drops.lost: unknown figure"),
    ("chunk_p99 < 1Gbps", "expect[0]: chunk_p99: '1Gbps' is a rate, but chunk_p99 is a time "
     "(chunk latency, 99th percentile): compare it with a time such as 500us"),
    ("goodput > 5", "'5' is a plain number, but goodput is a rate"),
    ("chunk_p99 < 5", "'5' is a plain number, but chunk_p99 is a time"),
    ("drops == 1MiB", "'1MiB' is a size, but drops is a count"),
    ("integrity == 0", "'0' is a plain number, but integrity is a word"),
    ("goodput == ok", "'ok' is a word, but goodput is a rate"),
    ("integrity < ok", "compare integrity with == or != (ok or failed), not <"),
    ("video.chunk_p99 < 1ms", "unknown class or pattern 'video' (classes: kv, bg; "
     "patterns: pd, bulk)"),
    ("chat.chunk_p99 < 1ms", "'chat' is a flow: figures are per class or per pattern"),
    ("kv.integrity == ok", "'integrity' is a figure of the whole run, not per class"),
    ("kv.drops == 0", "'drops' is a figure of the whole run"),
])
def test_validation_errors_at_their_line(entry: str, message: str) -> None:
    topo = topo_with(entry)
    with pytest.raises(TopologyError, match=r"^ex\.yaml:13: ") as e:
        validate_expectations(topo)
    assert message in str(e.value)


def test_a_name_both_class_and_pattern_is_ambiguous() -> None:
    topo = parse_topology(HEAD.replace("bg", "bulk") + "expect:\n  - bulk.fct_p99 < 1s\n",
                          source="ex.yaml")
    with pytest.raises(TopologyError, match=r"ex\.yaml:13: expect\[0\]: bulk\.fct_p99: 'bulk' "
                       "is both a class and a flow pattern here"):
        validate_expectations(topo)


def test_valid_grouped_and_zero_time() -> None:
    validate_expectations(topo_with("kv.chunk_p99.9 < 1ms", "pd.ttfb_p99 < 1s",
                                    "chunk_max >= 0", "queue_max < 1000"))


def test_kinds_load_validates(tmp_path: Path) -> None:
    from fabric.kinds import load

    f = tmp_path / "ex.yaml"
    f.write_text(HEAD + "expect:\n  - kv.chunk_p99 < 1Gbps\n")
    with pytest.raises(TopologyError, match=r"ex\.yaml:13: expect\[0\]: kv\.chunk_p99: '1Gbps' "
                       "is a rate"):
        load(f)


# ---- figures from a real summary -------------------------------------------------------------

def chunk(flow: str, cls: str, kind: str, idx: int, send: int, lat: int,
          nbytes: int = 1000, ok: bool = True) -> ChunkRecord:
    return ChunkRecord(flow, cls, kind, 0, idx, nbytes, send, send + lat // 2, send + lat, ok)


def transfer(flow: str, cls: str, kind: str, nbytes: int, chunks: int, start: int, done: int,
             status: str = "ok") -> TransferRecord:
    return TransferRecord(flow, cls, kind, "a", "b", 0, nbytes, chunks, start, start + 100,
                          start + done, status)


LINKS = {"links": [
    {"id": "a--b", "forward": {"drops_loss": 1, "drops_queue": 2, "ecn_marks": 3,
                               "queue_high_water": 3000},
     "reverse": {"drops_loss": 0, "drops_queue": 0, "ecn_marks": 1,
                 "queue_high_water": 9000, "queue_observed": False}},
]}


def run_summary(time_scale: float = 1.0, links: object = LINKS) -> dict:
    # kv: 10 chunks of 1000 B at 100..1000 us latency; bulk: one 4000 B transfer in 4 chunks
    chunks = [chunk("chat", "kv", "pd", i, i * MS, (i + 1) * 100 * US) for i in range(10)]
    chunks += [chunk("bulk-1", "bg", "bulk", i, 0, 2 * MS) for i in range(4)]
    transfers = [transfer("chat", "kv", "pd", 10_000, 10, 0, 10 * MS),
                 transfer("bulk-1", "bg", "bulk", 4000, 4, 0, 3 * MS)]
    return summarise(chunks, transfers, time_scale=time_scale, meta={}, links=links)


def measure(*lines: str, summary: dict | None = None, roce: dict | None = None) -> list:
    topo = topo_with(*lines)
    validate_expectations(topo)
    return evaluate(topo.expect, RunFigures(summary or run_summary(), roce))


def test_figures_from_a_summary() -> None:
    outcomes = measure("integrity == ok", "kv.chunk_max == 1ms", "kv.chunk_p50 <= 600us",
                       "bulk.fct_p99 == 3ms", "pd.fct_p50 == 10ms", "ttfb_p99 == 100ns",
                       "transfers_failed == 0", "drops == 3", "drops.links == 3",
                       "ecn_marks == 4", "queue_max == 3000", "kv.bytes == 10000",
                       "delivered == 100%", "goodput > 1Mbps", "bulk.jitter == 0")
    assert [(o.expectation.text, o.passed, o.why) for o in outcomes if not o.passed] == []
    got = {o.expectation.figure: o.measured_text for o in outcomes}
    assert got["kv.chunk_max"] == "1 ms"
    assert got["queue_max"] == "2.93 KiB"  # the unobserved 9000 B direction does not count
    assert got["delivered"] == "100%"
    assert got["drops"] == "3"


def test_fabric_time() -> None:
    # at time_scale 10, 1 ms on the host is 100 us of fabric time
    [o] = measure("kv.chunk_max == 100us", summary=run_summary(time_scale=10))
    assert o.passed, o.why


def test_failures_name_measured_and_expected() -> None:
    [o] = measure("kv.chunk_p99 < 500us")
    assert not o.passed
    assert o.measured == pytest.approx(991_000)
    assert o.why == "measured 991 us, expected < 500us"


def test_missing_figures_fail_with_the_reason() -> None:
    s = run_summary(links=None)
    outcomes = measure("drops.lossless == 0", "pauses == 0", "drops == 0", "queue_max < 1MiB",
                       "recovery.max < 200ms", "slowdown_p99 < 2", summary=s)
    assert all(not o.passed and o.measured is None for o in outcomes)
    assert [o.why for o in outcomes] == [
        "only a RoCE comparison's switches count lossless drops",
        "only a RoCE comparison counts it (its switches and transports)",
        "this run has no link counters (the link engine reports them)",
        "no queue was observed in this run (the link engine or RoCE switches observe them)",
        "no link events in this run",
        "only a RoCE comparison counts it (its switches and transports)",
    ]


def test_a_class_that_moved_nothing_fails() -> None:
    # a third class in the file, with no traffic of its own
    topo = parse_topology(HEAD.replace("classes:\n", "classes:\n  - {name: idle, dscp: 20}\n")
                          + "expect:\n  - idle.transfers_failed == 0\n  - idle.goodput > 0bps\n"
                          .replace("0bps", "1bps"), source="ex.yaml")
    validate_expectations(topo)
    outcomes = evaluate(topo.expect, RunFigures(run_summary()))
    assert [(o.passed, o.why) for o in outcomes] == [
        (False, "'idle' moved nothing in this run (no class or pattern by that name in its "
                "results)")] * 2


def test_nothing_delivered() -> None:
    s = summarise([], [transfer("chat", "kv", "pd", 1000, 1, 0, 0, status="failed")], meta={})
    outcomes = measure("integrity == ok", "integrity == failed", "chunk_p99 < 1ms",
                       "fct_p99 < 1ms", "goodput > 1bps", "jitter < 1ms",
                       "transfers_failed == 0", "delivered == 100%", summary=s)
    assert [(o.measured_text, o.passed) for o in outcomes] == [
        ("failed", False), ("failed", True), ("-", False), ("-", False), ("-", False),
        ("-", False), ("1", False), ("0%", False)]
    assert outcomes[2].why == "no chunk latency in this run"
    assert outcomes[4].why == "nothing was delivered, so no goodput"


def _event(name: str, recovery_ns: float | None, touched: int = 1,
           stuck: tuple[str, ...] = ()) -> dict:
    return {"event": name, "recovery_ns": recovery_ns, "transfers_touched": touched,
            "never_recovered": list(stuck)}


def test_recovery_from_the_events_section() -> None:
    s = run_summary()
    s["recovery"] = {"events": [_event("down a--b", 50 * MS), _event("down c--d", 150 * MS)]}
    outcomes = measure("recovery.max < 200ms", "recovery.mean == 100ms", summary=s)
    assert [o.passed for o in outcomes] == [True, True]
    # a failure no transfer in flight could cross has nothing to recover: not a failure
    s["recovery"]["events"].append(_event("down e--f", None, touched=0))
    [o] = measure("recovery.max < 200ms", summary=s)
    assert o.passed
    # a transfer that never recovered fails it, however fast the others came back
    s["recovery"]["events"].append(_event("down g--h", 10 * MS, touched=2, stuck=("kv#2",)))
    [o] = measure("recovery.max < 200ms", summary=s)
    assert (o.passed, o.why) == (False, "the traffic did not recover after 1 of 3 link "
                                        "events (down g--h)")


def test_roce_variant_metrics() -> None:
    roce = {"drops": 2, "link_queue_drops": 0, "link_loss": 0, "host_drops": 1,
            "drops_lossless": 0, "pauses": 7, "ecn_marks": 10, "slowdown_p50": 1.2,
            "slowdown_p99": 3.5, "retransmitted": 4, "cnps": 5, "max_queue_bytes": 65536}
    outcomes = measure("drops.lossless == 0", "pauses == 7", "ecn_marks == 14", "drops == 3",
                       "slowdown_p99 < 3", "retransmitted == 4", "cnps >= 5",
                       "queue_max == 64KiB", "integrity == ok", roce=roce)
    assert [(o.expectation.figure, o.measured_text) for o in outcomes if not o.passed] == [
        ("slowdown_p99", "3.5")]


def test_render_and_json() -> None:
    outcomes = measure("integrity == ok", "kv.chunk_p99 < 500us", "pauses == 0")
    text = render_expectations(outcomes, "dcqcn")
    lines = text.splitlines()
    assert lines[0] == "expectations (dcqcn): 2 of 3 failed"
    assert lines[1].split() == ["expectation", "measured", "result", "why"]
    assert lines[2].split() == ["integrity", "==", "ok", "ok", "pass"]
    assert lines[3].split("  ")[-1] == "measured 991 us, expected < 500us"
    assert lines[3].split()[3:5] == ["991", "us"]
    assert lines[4].split()[3:6] == ["-", "FAIL", "only"]
    rows = expectations_json(outcomes)
    assert rows[1] == {"expectation": "kv.chunk_p99 < 500us", "line": 14,
                       "figure": "kv.chunk_p99", "op": "<", "value": 500_000.0,
                       "measured": pytest.approx(991_000), "measured_text": "991 us",
                       "passed": False, "why": "measured 991 us, expected < 500us"}
    assert render_expectations(outcomes[:1]).startswith("expectations: all 1 hold\n")


def test_every_figure_reads_or_says_why() -> None:
    run = RunFigures(run_summary())
    for fig in FIGURES:
        [o] = evaluate([parse_expectation(f"{fig.name} != ok" if fig.unit == "word" else
                                          f"{fig.name} >= 0")], run)
        assert o.passed or o.why, fig.name


def test_a_memory_run_is_judged_by_its_own_figures() -> None:
    from fabric.run.memory import VariantOutcome, figures

    figs = figures([VariantOutcome("ls", "loadstore", "load/store", 64, False, None, lost=3),
                    VariantOutcome("hc", "hypercast", "hypercast", 64, True, 1.0)])
    run = RunFigures({"integrity": figs["integrity"]}, memory=figs)
    got = evaluate([parse_expectation(x) for x in ("memory.lost == 0", "memory.failed == 0",
                                                   "integrity == ok", "chunk_p99 < 1ms")], run)
    assert [o.passed for o in got[:3]] == [False, True, True]
    assert got[0].measured == 3
    assert not got[3].passed
    assert got[3].why  # a traffic figure a memory run does not produce says so
    # and a traffic run has no memory figures
    [o] = evaluate([parse_expectation("memory.lost == 0")], RunFigures(run_summary()))
    assert (o.passed, o.why) == (False, "only a memory run counts it")


def test_docs_list_the_registry() -> None:
    assert figures_table() in DOCS.read_text(), (
        "docs/expect.md's figures table differs from fabric.metrics.expect.FIGURES: paste "
        "figures_table()'s output into it")


# ---- the kinds: who judges expectations, and `fabric check` ----------------------------------

def test_a_kind_without_figures_refuses_the_section() -> None:
    from fabric.kinds import select, validate

    topo = validate(parse_topology("name: p\nnodes: {a: {}, b: {}}\nlinks: [{endpoints: [a, b]}]"
                                   "\nexpect:\n  - integrity == ok\n", source="p.yaml"))
    with pytest.raises(TopologyError, match=r"^p\.yaml:5: expect: this file runs as a path "
                       r"check \(no traffic\), which has no figures to judge expectations "
                       r"by \(traffic runs, RoCE comparisons and memory runs have\): remove the "
                       r"section$"):
        select(topo, {})
    kind, _ = select(validate(topo_with("integrity == ok")), {})
    assert kind.expects


def test_fabric_check_prints_each_expectation(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fabric.cli import cli

    f = tmp_path / "ex.yaml"
    f.write_text(HEAD + "expect:\n  - kv.chunk_p99 < 500us\n  - integrity == ok\n")
    result = CliRunner().invoke(cli, ["check", str(f), "--links", "userspace"])
    assert result.exit_code == 0, result.output
    assert "expect: kv.chunk_p99 < 500us (chunk latency, 99th percentile; kv only)\n" in \
        result.output
    assert "expect: integrity == ok (ok when every chunk arrived once and intact and every " \
           "transfer completed)\n" in result.output
    f.write_text(HEAD + "expect:\n  - kv.chunk_p99 < 1Gbps\n")
    result = CliRunner().invoke(cli, ["check", str(f)])
    assert result.exit_code == 1
    assert "ex.yaml:13: expect[0]: kv.chunk_p99: '1Gbps' is a rate" in result.output


# ---- after a run: the table, expectations.json, exit status 3 ---------------------------------

def test_judge_writes_and_names_the_failure(tmp_path: Path) -> None:
    import json

    from fabric.errors import ExpectationFailed
    from fabric.kinds.base import judge_expectations

    topo = topo_with("integrity == ok", "kv.chunk_p99 < 500us", "pauses == 0")
    printed: list[str] = []
    runs = [("dcqcn", RunFigures(run_summary())), ("none", RunFigures(run_summary()))]
    failed = judge_expectations(topo, runs, tmp_path, printed.append)
    assert isinstance(failed, ExpectationFailed)
    assert failed.exit_code == 3
    assert str(failed) == ("expectation failed: kv.chunk_p99 < 500us (ex.yaml:14) in dcqcn: "
                           "measured 991 us, expected < 500us (and 3 more)")
    assert [p.splitlines()[0] for p in printed] == ["expectations (dcqcn): 2 of 3 failed",
                                                   "expectations (none): 2 of 3 failed"]
    saved = json.loads((tmp_path / "expectations.json").read_text())
    assert saved["ok"] is False
    assert [r["variant"] for r in saved["runs"]] == ["dcqcn", "none"]
    assert [o["passed"] for o in saved["runs"][0]["outcomes"]] == [True, False, False]
    ok = topo_with("integrity == ok")
    assert judge_expectations(ok, [(None, RunFigures(run_summary()))], tmp_path,
                              printed.append) is None
    assert json.loads((tmp_path / "expectations.json").read_text())["ok"] is True
    assert judge_expectations(parse_topology(HEAD), [], tmp_path, printed.append) is None


def test_the_cli_exits_3_for_a_failed_expectation() -> None:
    import click
    from click.testing import CliRunner

    from fabric.cli import FabricGroup
    from fabric.errors import ExpectationFailed, FabricError

    @click.group(cls=FabricGroup)
    def group() -> None:
        pass

    @group.command()
    def failing() -> None:
        raise ExpectationFailed("expectation failed: goodput >= 1Gbps (ex.yaml:3): measured "
                                "10 Mbit/s, expected >= 1Gbps")

    @group.command()
    def broken() -> None:
        raise FabricError("the run had errors (see above)")

    result = CliRunner().invoke(group, ["failing"])
    assert result.exit_code == 3
    assert result.output == ("fabric: expectation failed: goodput >= 1Gbps (ex.yaml:3): "
                             "measured 10 Mbit/s, expected >= 1Gbps\n")
    assert CliRunner().invoke(group, ["broken"]).exit_code == 1
