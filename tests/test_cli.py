"""The command line through `CliRunner`: no root, no kernel objects.

Every `check` passes `--links` explicitly: with the default `--links auto`, a root user's
`check` probes the kernel (doctor's throwaway namespaces) to pick a backend.
"""

from __future__ import annotations

import json
import re
import secrets
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fabric.cli import cli

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "topologies").glob("*.yaml"))
COMMANDS = ("agent", "check", "doctor", "down", "exec", "explain", "export", "graph", "kv",
            "lesson",
            "link", "node", "report", "run", "schedule", "status", "up")

# `fabric: FILE:LINE: key: message` (the key is absent only for YAML syntax errors)
ERROR_LINE = re.compile(r"^fabric: (?P<file>[^:]+):(?P<line>\d+): (?P<rest>.+)$")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    """FABRIC_DEBUG turns one-line errors into tracebacks; these tests want the former."""
    monkeypatch.delenv("FABRIC_DEBUG", raising=False)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="fabric")


def write(tmp_path: Path, text: str, name: str = "topo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def assert_one_line_error(result: Result, expected: str) -> None:
    """Exit 1, nothing on stdout, exactly `expected` on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr.splitlines() == [expected]
    assert "Traceback" not in result.output


# ---- help ------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    listed = re.findall(r"^  (\w+)\s", result.output.split("Commands:", 1)[1], re.MULTILINE)
    assert tuple(sorted(listed)) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert result.output.startswith(f"Usage: fabric {command} ")


# ---- check: shipped files -----------------------------------------------------------------


def test_shipped_topologies_present() -> None:
    assert {p.name for p in SHIPPED} == {"leaf-spine.yaml", "pair.yaml", "two-cluster.yaml",
                                         "lpu-ring.yaml", "lpu-mesh-pipeline.yaml",
                                         "lpu-torus-afd.yaml", "prfaas.yaml",
                                         "prfaas-dense.yaml", "roce-incast.yaml",
                                         "roce-alltoall.yaml", "roce-mixed.yaml",
                                         "memsem-single.yaml", "memsem-two-tier.yaml",
                                         "memsem-roce.yaml", "failover.yaml",
                                         "two-cluster-degraded.yaml", "agentic.yaml",
                                         "agentic-busy-decode.yaml", "trace-replay.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_check_shipped_file(path: Path) -> None:
    result = invoke("check", "--links", "userspace", str(path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"[a-z0-9-]+: \d+ nodes \(\d+ hosts, \d+ switch(es)?\), \d+ links?"
                        r"(, time_scale [\d.]+)?", lines[0])
    assert lines[1].split() == ["link", "rate", "delay", "jitter", "loss", "corrupt",
                                "duplicate", "reorder", "queue", "mtu", "ecn"]
    assert any(line.startswith("paths: ") for line in lines)
    assert re.fullmatch(r"ok \(userspace backend(, \d+ warnings?)?\)", lines[-1])
    assert result.stderr == ""


def test_check_pair_exact() -> None:
    result = invoke("check", "--links", "userspace", str(REPO / "topologies" / "pair.yaml"))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "pair: 2 nodes (2 hosts, 0 switches), 1 link",
        "link      rate       delay  jitter  loss  corrupt  duplicate  reorder  queue        mtu"
        "   ecn",
        "a--b  ->  40 Mbit/s  15 ms  -       -     -        -          -        146.484 KiB  1500"
        "  -",
        "paths: 1 host pair at 1 hop over 1 equal-cost path (e.g. a -> b)",
        "classes: default (dscp 0, prio 0)",
        "traffic: 1 flow, 4 transfers, 16 MiB (seed 1)",
        "ok (userspace backend)",
    ]


def test_check_leaf_spine_summary() -> None:
    result = invoke("check", "--links", "userspace",
                    str(REPO / "topologies" / "leaf-spine.yaml"))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "leaf-spine: 14 nodes (8 hosts, 6 switches), 16 links, time_scale 2000"
    assert ("leaf-spine (no prefix): 2 spines, 4 leaves, 8 hosts; oversubscription 0.50:1"
            in lines)
    assert "paths: 4 host pairs at 2 hops over 1 equal-cost path (e.g. host-0 -> host-1)" in lines
    assert ("paths: 24 host pairs at 4 hops over 2 equal-cost paths (e.g. host-0 -> host-2)"
            in lines)
    # its links queue by class; its kv class is lossless ("PFC, no drops"), but the file
    # has no RoCE switches
    assert ("classes act at: link class queues (a queue per class) on 32 of 32 link "
            "directions (`fabric explain` says which property holds where)") in lines
    assert lines[-2].startswith("warning: class kv (line 18) is lossless, but nothing on its "
                                "paths enforces PFC: there are no RoCE switches")
    assert lines[-1] == "ok (userspace backend, 1 warning)"


def test_check_without_file_uses_embedded_default() -> None:
    result = invoke("check", "--links", "userspace")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "default: 8 nodes (4 hosts, 4 switches), 8 links, time_scale 1000"
    assert ("leaf-spine (no prefix): 2 spines, 2 leaves, 4 hosts; oversubscription 0.50:1"
            in lines)
    assert "paths: 2 host pairs at 2 hops over 1 equal-cost path (e.g. host-0 -> host-1)" in lines
    assert ("paths: 4 host pairs at 4 hops over 2 equal-cost paths (e.g. host-0 -> host-2)"
            in lines)
    assert re.fullmatch(r"ok \(userspace backend(, \d+ warnings?)?\)", lines[-1])


# ---- check: bad files ---------------------------------------------------------------------

PAIR_HEAD = """\
name: pair
nodes:
  a: {}
  b: {}
links:
  - endpoints: [a, b]
"""

BAD_FILES = {
    "unknown-key": (
        PAIR_HEAD + "    rate: 40Mbps\n    dealy: 15ms\n",
        "8: links[0].dealy: unknown key 'dealy'; did you mean 'delay'? (allowed: endpoints, "
        "rate, delay, jitter, loss, corrupt, duplicate, reorder, queue, mtu, ecn, reverse)",
    ),
    "missing-node": (
        PAIR_HEAD + "  - endpoints: [a, spine-9]\n",
        "7: links[1].endpoints: unknown node 'spine-9'",
    ),
    "bare-time": (
        PAIR_HEAD + "    delay: 15\n",
        "7: links[0].delay: bad time 15: a time needs a unit, such as 15ms or 15us",
    ),
    "bare-rate": (
        PAIR_HEAD + "    rate: 40\n",
        "7: links[0].rate: bad rate 40: a rate needs a unit, such as 40Mbps or 40Gbps",
    ),
    "bare-loss": (
        PAIR_HEAD + "    loss: 5\n",
        "7: links[0].loss: bad loss 5: a bare number is a fraction below 1 (0.001 = 0.1%); "
        "write a percentage such as 5%",
    ),
    "duplicate-node": (
        "name: pair\nnodes:\n  a: {}\n  b: {}\n  a: {kind: switch}\n",
        "5: nodes.a: duplicate node 'a' (first at line 3)",
    ),
    "yaml-syntax": (
        "name: pair\nnodes:\n  a: {}\n  b: {\nlinks: []\n",
        "6: YAML syntax error: while parsing a flow mapping, expected ',' or '}', "
        "but got '<stream end>'",
    ),
    "jitter-above-delay": (
        "name: pair\ndefaults:\n  link: {jitter: 2ms}\nnodes: {a: {}, b: {}}\n"
        "links:\n  - endpoints: [a, b]\n    delay: 1ms\n",
        "6: links[0]: jitter 2 ms exceeds delay 1 ms on a->b: delays would be clipped at 0, "
        "skewing the distribution; lower the jitter or raise the delay",
    ),
    "reverse-mtu": (
        PAIR_HEAD + "    reverse: {mtu: 9000}\n",
        "7: links[0].reverse.mtu: unknown key 'mtu' (the mtu is per link, the same in both "
        "directions) (allowed: rate, delay, jitter, loss, corrupt, duplicate, reorder, queue, "
        "ecn)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_check_bad_file(tmp_path: Path, case: str) -> None:
    text, where = BAD_FILES[case]
    path = write(tmp_path, text)
    result = invoke("check", "--links", "userspace", str(path))
    assert_one_line_error(result, f"fabric: {path}:{where}")
    assert ERROR_LINE.match(result.stderr.rstrip("\n"))


def test_check_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = invoke("check", "--links", "userspace", str(path))
    assert_one_line_error(
        result, f"fabric: {path}: cannot read topology file: No such file or directory")


def test_check_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    result = invoke("check", "--links", "userspace", str(path))
    assert_one_line_error(
        result, f"fabric: {path}: the file is empty: a topology needs at least `name:` and "
                "`nodes:`")


def test_debug_shows_the_error_itself(tmp_path: Path) -> None:
    path = write(tmp_path, PAIR_HEAD + "    rate: 40\n")
    result = CliRunner().invoke(cli, ["--debug", "check", "--links", "userspace", str(path)])
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "TopologyError"
    assert str(result.exception).startswith(f"{path}:7: links[0].rate: bad rate 40")


# ---- check: backend warnings ---------------------------------------------------------------


def test_check_netem_warns_about_ecn(tmp_path: Path) -> None:
    path = write(tmp_path, PAIR_HEAD + "    rate: 100Mbps\n    delay: 1ms\n    ecn: 64KiB\n")
    result = invoke("check", "--links", "netem", str(path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-2:] == [
        "warning: ecn threshold is not realised by the netem backend (needs sch_red); "
        "use --links userspace [1 link: a--b (line 6)]",
        "ok (netem backend, 1 warning)",
    ]


def test_check_userspace_does_not_warn_about_ecn(tmp_path: Path) -> None:
    path = write(tmp_path, PAIR_HEAD + "    rate: 100Mbps\n    delay: 1ms\n    ecn: 64KiB\n")
    result = invoke("check", "--links", "userspace", str(path))
    assert result.exit_code == 0
    assert not any(line.startswith("warning:") for line in result.stdout.splitlines())
    assert result.stdout.splitlines()[-1] == "ok (userspace backend)"


def test_check_userspace_warns_fast_short_link_without_time_scale(tmp_path: Path) -> None:
    path = write(tmp_path, PAIR_HEAD + "    rate: 20Gbps\n    delay: 2us\n")
    result = invoke("check", "--links", "userspace", str(path))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert warnings[:2] == [
        "warning: rates on the host above the userspace backend's accurate range (up to "
        "1.02 Gbit/s at mtu 1500): set time_scale >= 19.6 or a larger mtu "
        "[1 link: a--b (line 6)]",
        "warning: delays on the host below 1 ms: the userspace backend adds ~0.17 ms per "
        "direction of its own, a large share of these; a larger time_scale stretches delays "
        "[1 link: a--b (line 6)]",
    ]
    assert result.stdout.splitlines()[-1] == f"ok (userspace backend, {len(warnings)} warnings)"


def test_rates_beyond_the_kernels_tbf_are_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, PAIR_HEAD + "    rate: 100Gbps\n    delay: 2us\n")
    result = invoke("check", "--links", "userspace", str(path))
    assert result.exit_code == 1
    assert result.stderr == (f"fabric: {path}:6: a--b ->: rate 100 Gbit/s on the host is above "
                             "what the kernel's tbf can shape (34.36 Gbit/s): raise "
                             "time_scale\n")


def test_time_scale_silences_rate_and_delay_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, "name: pair\ntime_scale: 1000\n" + PAIR_HEAD.split("\n", 1)[1]
                 + "    rate: 100Gbps\n    delay: 2us\n")
    result = invoke("check", "--links", "userspace", str(path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "pair: 2 nodes (2 hosts, 0 switches), 1 link, time_scale 1000"
    # the table stays in fabric time
    assert lines[2].split()[:6] == ["a--b", "->", "100", "Gbit/s", "2", "us"]
    assert lines[-1] == "ok (userspace backend)"


# ---- up --dry-run, down ------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "count"), [("userspace", 32), ("netem", 33)])
def test_up_dry_run_prints_plan(backend: str, count: int) -> None:
    result = invoke("up", "--dry-run", "--links", backend,
                    str(REPO / "topologies" / "pair.yaml"))
    assert result.exit_code == 0, result.output
    assert result.exception is None
    lines = result.stdout.splitlines()
    assert lines[0] == "AddNamespace(netns='fab.pair.dryrun.a')"
    assert lines[-1] == f"{count} steps ({backend} backend)"
    assert len(lines) == count + 1
    link_step = "AddTun(" if backend == "userspace" else "AddVeth("
    assert any(line.startswith(link_step) for line in lines)
    assert ("AddRoute(netns='fab.pair.dryrun.a', dst='default', "
            "nexthops=(('198.18.0.2', 'eth0'),), src='198.19.0.1')") in lines
    assert result.stderr == ""


def test_up_dry_run_bad_file_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, PAIR_HEAD + "    rate: 40\n")
    result = invoke("up", "--dry-run", "--links", "userspace", str(path))
    assert_one_line_error(
        result, f"fabric: {path}:7: links[0].rate: bad rate 40: a rate needs a unit, such as "
                "40Mbps or 40Gbps")


@pytest.mark.parametrize("command", ["up", "run"])
@pytest.mark.parametrize(("value", "why"), [
    ("2ms", "2ms is more than 1ms: a timer wake-up is closer than that, so spinning longer "
            "only burns CPU"),
    ("fast", "bad time 'fast': expected a number and a unit such as 500ns, 2us, 1.5ms, 1s, "
             "or 0"),
    ("150", "150 needs a unit, such as 150us"),
])
def test_engine_spin_refuses_what_is_not_a_duration_up_to_1ms(command: str, value: str,
                                                               why: str) -> None:
    """Checked before anything is read or built (no file is needed to see it)."""
    result = invoke(command, "--engine-spin", value, "nosuch.yaml")
    assert result.exit_code == 2
    assert f"Invalid value for '--engine-spin': {why}" in result.output


def test_down_unknown_fabric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fabric.net import lifecycle

    monkeypatch.setattr(lifecycle, "STATE_ROOT", tmp_path / "state")
    name = f"nope{secrets.token_hex(3)}"  # matches no namespace, so no orphan is touched
    result = invoke("down", name)
    assert_one_line_error(
        result, f"fabric: fabric '{name}' is not running (see `fabric status`)")


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output == f"fabric, version {version('fabric')}\n"


def test_kv_lists_models_and_describes_one() -> None:
    result = invoke("kv", "--tokens", "1024")
    assert result.exit_code == 0
    assert re.search(r"^llama-3\.1-8b\s+gqa\s+128 KiB\s+128 MiB$", result.stdout, re.MULTILINE)
    one = invoke("kv", "llama-3.1-70b", "--tokens", "32768")
    assert one.exit_code == 0
    assert "320 KiB" in one.stdout
    bad = invoke("kv", "gpt-9")
    assert bad.exit_code == 1
    assert bad.stderr.startswith("fabric: unknown model 'gpt-9'")


def test_report_of_a_missing_run_is_one_line(tmp_path: Path) -> None:
    result = invoke("report", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "no such run directory" in result.stderr


def test_traffic_errors_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, PAIR_HEAD + "    rate: 1Gbps\ntraffic:\n  flows:\n"
                 "    - {pattern: pd, from: a, to: b, tokens: 10, requests: 2}\n")
    result = invoke("check", "--links", "userspace", str(path))
    assert result.exit_code == 1
    assert result.stderr == (f"fabric: {path}:10: traffic.flows[0]: a pd flow needs `rate:` "
                             "(request arrivals, e.g. 10/s)\n")


def test_report_reads_lpu_and_prfaas_run_directories(tmp_path: Path) -> None:
    lpu = tmp_path / "lpu"
    lpu.mkdir()
    run = {"mode": "scheduled", "drift_ppm": 0.0, "resync_ns": 10_000, "guard_ns": 0,
           "makespan_ns": 62_646, "completion_ns": 64_450, "batches": 96, "missing": 0,
           "lateness_ns": {"p50": 1201.0, "p90": 1500.0, "p99": 1804.0, "max": 1806.0},
           "deviation_max_ns": 1806.0, "jitter_std_ns": 385.0, "jitter_p99_p50_ns": 603.0,
           "send_late_ns": {"p50": 194_000.0, "p90": 1.0, "p99": 1_513_000.0, "max": 1.0}}
    (lpu / "lpu.json").write_text(json.dumps({"time_scale": 1000, "runs": [run]}))
    result = invoke("report", str(lpu))
    assert result.exit_code == 0, result.output
    assert "scheduled  ±0 ppm" in result.stdout
    assert "host timer floor" in result.stdout
    assert ("planned = the compiler's schedule (computed); completed, lateness and jitter "
            "measured on the fabric") in result.stdout
    pf = tmp_path / "pf"
    pf.mkdir()
    row = {"policy": "threshold", "offered_rps": 4.0, "throughput_rps": 2.791,
           "mean_ttft_s": 22.64, "p90_ttft_s": 35.16, "offloaded_fraction": 0.5,
           "egress_mean_gbps": 11.08, "egress_peak_gbps": 19.28}
    (pf / "prfaas.json").write_text(json.dumps({"model": "prfaas-hybrid-1t", "kv_scale": 10000,
                                                "time_scale": 0.02, "runs": [row]}))
    result = invoke("report", str(pf))
    assert result.exit_code == 0, result.output
    assert re.search(r"^threshold\s+4\s+2\.791\s+22\.64\s+35\.16\s+50\.0\s+11\.08",
                     result.stdout, re.MULTILINE)
    text = " ".join(result.stdout.split())
    assert "Measured on the fabric: egress" in text
    assert "computed from them by the model" in text
