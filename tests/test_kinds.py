"""Fabric kinds as plug-ins (fabric.kinds): selection, option checks, --out guard, report.

Nothing here builds a fabric: every refusal happens before anything is built, and reports
are re-printed from saved results.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fabric import kinds
from fabric.cli import cli
from fabric.errors import FabricError
from fabric.metrics.report import SavedRun
from fabric.run.memory import VariantOutcome, read_outcomes, render, write_outcomes
from fabric.topology import load_topology

TOPOLOGIES = Path(__file__).resolve().parents[1] / "topologies"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="fabric")


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("file", "kind"),
    [
        ("pair.yaml", "traffic"),
        ("roce-incast.yaml", "roce"),
        ("memsem-single.yaml", "memory"),
        ("lpu-ring.yaml", "lpu"),
        ("prfaas.yaml", "prfaas"),
        ("two-cluster.yaml", "traffic"),
        ("agentic.yaml", "workload"),
        ("agentic-busy-decode.yaml", "workload"),
        ("trace-replay.yaml", "workload"),
    ],
)
def test_each_shipped_file_runs_as_its_kind(file: str, kind: str) -> None:
    topo = load_topology(str(TOPOLOGIES / file))
    chosen, _ = kinds.select(topo, {})
    assert chosen.name == kind


def test_a_file_without_traffic_is_probed(tmp_path: Path) -> None:
    text = (TOPOLOGIES / "pair.yaml").read_text()
    path = tmp_path / "bare.yaml"
    path.write_text(text[: text.index("traffic:")])
    assert kinds.select(load_topology(str(path)), {})[0].name == "probe"


def test_every_kind_has_a_result_file_and_a_title() -> None:
    names = [k.name for k in kinds.kinds()]
    assert names == ["memory", "workload", "prfaas", "lpu", "probe", "roce", "traffic"]
    for k in kinds.kinds():
        assert k.result_file.endswith(".json")
        assert k.title.startswith(("a ", "an "))


@pytest.mark.parametrize(
    ("files", "title"),
    [
        ({"memory.json": {}}, "a memory run"),
        ({"prfaas.json": {}}, "a PrfaaS run"),
        ({"lpu.json": {}}, "an LPU run"),
        ({"comparison.json": {}}, "a RoCE comparison"),
        ({"summary.json": {"pairs": []}}, "a path check (no traffic)"),
        ({"summary.json": {"classes": {}}}, "a traffic run"),
    ],
)
def test_out_never_overwrites_any_kind_of_run(
    tmp_path: Path, files: dict[str, dict], title: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name, data in files.items():
        (out / name).write_text(json.dumps(data))
    # refused before anything is built: no root, no namespace needed
    result = invoke("run", "--out", str(out), str(TOPOLOGIES / "pair.yaml"))
    assert one_line_error(result) == (
        f"fabric: {out} already holds {title}: choose another --out or remove it"
    )


def test_a_kind_option_on_a_file_of_another_kind_is_refused() -> None:
    lpu = str(TOPOLOGIES / "lpu-ring.yaml")
    assert one_line_error(invoke("run", "--policy", "local", lpu)) == (
        f"fabric: --policy is for files with a prfaas: or a workload: section ({lpu})"
    )
    assert one_line_error(invoke("run", "--cc", "dcqcn", lpu)) == (
        f"fabric: --cc/--pfc need a traffic section in {lpu}"
    )
    two = str(TOPOLOGIES / "two-cluster.yaml")
    assert one_line_error(invoke("run", "--pfc", "on", two)) == (
        f"fabric: --pfc needs RoCE switches: add a `switches:` section to {two}"
    )


def test_an_option_the_selected_kind_does_not_own_is_refused(tmp_path: Path) -> None:
    """A memory file with RoCE traffic beside it: --cc would be dropped, so it is refused."""
    text = (TOPOLOGIES / "memsem-single.yaml").read_text()
    topo = load_topology(str(TOPOLOGIES / "memsem-single.yaml"))
    hosts = sorted(n.name for n in topo.nodes.values() if n.kind == "host")
    path = tmp_path / "mem.yaml"
    path.write_text(text + f"\ntraffic:\n  flows:\n    - {{pattern: one-to-one, from: {hosts[0]}, "
                    f"to: {hosts[1]}, tokens: 32, requests: 1, transport: roce}}\n")
    with pytest.raises(FabricError, match=r"^--cc does not apply to .*mem\.yaml: it runs "
                       r"as a memory run$"):
        kinds.select(load_topology(str(path)), {"ccs": "dcqcn"})


def test_run_help_describes_every_kind_and_its_options() -> None:
    out = invoke("run", "--help").output
    for k in kinds.kinds():
        if k.describes:
            assert " ".join(k.describes.split()[:6]) in " ".join(out.split())
        for opt in k.options:
            assert opt.flag in out


def test_report_reprints_a_memory_run(tmp_path: Path) -> None:
    outcomes = [
        VariantOutcome("hc", "hypercast", "switch", 1 << 20, True, 2.5e6,
                       link_bytes={"sw--a": {"forward": 1 << 20, "reverse": 0}}),
        VariantOutcome("hc", "hypercast", "unicast", 1 << 20, True, 7.5e6,
                       link_bytes={"sw--a": {"forward": 3 << 20, "reverse": 0}}),
        VariantOutcome("ls", "loadstore", "switch", 4096, False, None,
                       latency={"read": {"p50": 1e4, "p99": 2e4, "mean": 1.2e4}}),
    ]
    label = SavedRun("mem", 1000.0)
    write_outcomes(outcomes, label, tmp_path)
    assert read_outcomes(tmp_path / "memory.json") == (outcomes, label, {})
    result = invoke("report", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(render(outcomes, label) + "\n")
    assert "every figure measured on the fabric" in result.stdout.splitlines()[0]
    assert f"redrew {tmp_path / 'links.png'}" in result.stdout
    assert (tmp_path / "links.png").read_bytes()[:4] == b"\x89PNG"


def test_report_compares_only_traffic_runs(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "lpu.json").write_text(json.dumps({"time_scale": 1, "runs": []}))
    assert one_line_error(invoke("report", str(a), str(b))) == (
        f"fabric: {a}: an LPU run: fabric report compares traffic runs"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert one_line_error(invoke("report", str(empty))) == (
        f"fabric: {empty}: not a run directory: no memory.json, workload.json, prfaas.json, "
        "lpu.json, summary.json, comparison.json in it (give the directory `fabric run` wrote its "
        "results to)"
    )


def test_cli_names_no_fabric_kind() -> None:
    """The CLI imports no kind's package: kinds plug in through fabric.kinds."""
    source = (Path(__file__).resolve().parents[1] / "fabric" / "cli.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"lpu", "memsw", "prfaas", "roce", "switch", "probe", "schedule",
                           "traffic"}, imported


def _with_traffic(tmp_path: Path, section: str) -> tuple[Path, int]:
    text = (TOPOLOGIES / section).read_text().rstrip() + "\n"
    topo = load_topology(str(TOPOLOGIES / section))
    hosts = sorted(n.name for n in topo.nodes.values() if n.kind == "host")
    path = tmp_path / section
    path.write_text(text + f"traffic:\n  flows:\n    - {{pattern: one-to-one, from: {hosts[0]}, "
                    f"to: {hosts[1]}, tokens: 32, requests: 1}}\n")
    return path, len(text.splitlines()) + 1


def test_traffic_beside_a_prfaas_section_is_refused_at_its_line(tmp_path: Path) -> None:
    """A PrfaaS run moves its own KV over the fabric: a traffic section beside it would not
    run, so it is refused, by `check` and `run` alike, before anything is built."""
    path, line = _with_traffic(tmp_path, "prfaas.yaml")
    expected = (f"fabric: {path}:{line}: traffic: this file runs as a PrfaaS run, which moves "
                "its own traffic and runs no traffic section beside it: remove the section, or "
                "put the traffic in a file of its own")
    for command in ("check", "run"):
        assert one_line_error(invoke(command, str(path))) == expected


@pytest.mark.parametrize("section", ["memsem-single.yaml", "lpu-ring.yaml"])
def test_traffic_beside_a_memory_or_lpu_section_runs_as_background_load(
    tmp_path: Path, section: str
) -> None:
    path, _ = _with_traffic(tmp_path, section)
    topo = kinds.load(path)
    kind, _ = kinds.select(topo, {})
    assert kind.name in ("memory", "lpu")
    assert kind.background_traffic
    assert not kind.runs_traffic
    result = invoke("check", str(path))
    assert result.exit_code == 0, result.output
    assert "traffic: 1 flow, 1 transfer" in result.stdout
    assert "runs as background load" in invoke("run", "--help").output


def test_every_report_says_what_is_measured_and_what_is_modelled() -> None:
    """The RoCE comparison and the probe table head their figures with where they come from
    (the traffic, memory, LPU and PrfaaS reports are checked where they are re-printed)."""
    from fabric.run.probe import ProbeReport
    from fabric.run.roce import render as render_roce

    roce = render_roce([], SavedRun("r", 1000.0))
    assert "measured on the fabric, but slowdown = measured FCT / the ideal FCT computed" in (
        " ".join(roce.split()))
    probe = ProbeReport("p", "userspace", 1.0, []).table()
    assert "RTT want and rate want computed from the topology, the rest measured on the " \
           "fabric" in probe.splitlines()[0]


def test_background_traffic_is_stopped_with_what_it_forked(tmp_path: Path) -> None:
    """An error or Ctrl-C in the run stops the background traffic: its whole process group
    (the node processes it forks) ends, and finish() says where its log is."""
    import subprocess
    import sys
    import time

    from fabric.kinds.background import Background

    log = tmp_path / "run.log"
    log.write_text("")
    script = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    bg = Background(proc, tmp_path, log, timeout=0.1)
    time.sleep(0.5)  # the grandchild has started
    group = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True)
    assert len(group.stdout.split()) == 2
    bg.stop()
    assert proc.poll() is not None
    time.sleep(0.2)
    from fabric.net.daemon import alive

    assert [pid for pid in group.stdout.split() if alive(int(pid))] == []  # zombies are gone
    lines: list[str] = []
    with pytest.raises(FabricError, match=rf"background traffic failed \(exit -?\d+; its log: "
                                          rf"{re.escape(str(log))}\)"):
        bg.finish(lines.append, lines.append)


def test_the_traffic_report_sums_udp_sent_bytes_over_the_nodes() -> None:
    from fabric.kinds.traffic import _transport_lines

    lines: list[str] = []
    _transport_lines({"a": {"udp_sent_bytes": 1500, "udp_unit_bytes": 1000,
                            "udp_retransmitted": 2, "udp_spurious": 1, "udp_timeouts": 0},
                      "b": {"udp_sent_bytes": 600, "udp_unit_bytes": 1000,
                            "udp_retransmitted": 1, "udp_spurious": 0, "udp_timeouts": 1},
                      "c": {"roce_retransmitted": 5}}, lines.append)
    assert lines == ["udp: sent 2.051 KiB for 1.953 KiB of payload (x1.05): 3 retransmitted, "
                     "1 spurious, 1 timeouts"]
    silent: list[str] = []
    _transport_lines({"a": {"roce_retransmitted": 5}}, silent.append)  # no UDP: no line
    assert silent == []


def test_workload_policies_select_variants_and_unknown_ones_are_refused() -> None:
    topo = load_topology(str(TOPOLOGIES / "agentic.yaml"))
    kind, prepared = kinds.select(topo, {})
    assert kind.name == "workload"
    assert prepared.variants == ["pd", "ppd/pin", "ppd/ttl", "ppd/evict"]
    assert len(prepared.turns) == 24
    assert kinds.select(topo, {"policies": "ppd"})[1].variants == ["ppd/pin", "ppd/ttl",
                                                                  "ppd/evict"]
    assert kinds.select(topo, {"policies": "ppd/evict,pd"})[1].variants == ["ppd/evict", "pd"]
    with pytest.raises(FabricError, match="unknown policy 'threshold' for a workload file"):
        kinds.select(topo, {"policies": "threshold"})


def test_a_workload_shares_its_file_with_no_other_run_or_traffic(tmp_path: Path) -> None:
    from fabric.errors import TopologyError

    text = (TOPOLOGIES / "agentic.yaml").read_text()
    path = tmp_path / "both.yaml"
    path.write_text(text + "traffic:\n  flows:\n"
                    "    - {pattern: one-to-one, from: p0, to: d0, tokens: 64}\n")
    with pytest.raises(TopologyError, match="runs no traffic section beside it"):
        kinds.select(load_topology(str(path)), {})
    path.write_text(text.replace("workload:", "prfaas:\n  kv_scale: 10\n  egress: [p0, sw]\n"
                                 "  local_prefill: [p0]\n  decode: [d0]\n"
                                 "  remote_prefill: [p1]\nworkload:"))
    with pytest.raises(TopologyError, match=r"workload: a file runs one kind of run: a "
                       "workload section and a prfaas section cannot share it"):
        kinds.select(load_topology(str(path)), {})


def test_a_bad_trace_line_fails_before_anything_is_built(tmp_path: Path) -> None:
    from fabric.errors import TopologyError

    (tmp_path / "data").mkdir()
    lines = (TOPOLOGIES / "data" / "mooncake-excerpt.jsonl").read_text().splitlines()[:5]
    lines.append('{"timestamp": 99999, "input_length": 700, "output_length": 3, '
                 '"hash_ids": [1, 2, 3]}')
    (tmp_path / "data" / "mooncake-excerpt.jsonl").write_text("\n".join(lines) + "\n")
    path = tmp_path / "t.yaml"
    path.write_text((TOPOLOGIES / "trace-replay.yaml").read_text())
    with pytest.raises(TopologyError, match=r"mooncake-excerpt.jsonl:6: hash_ids: 3 block ids "
                                            r"for input_length 700"):
        kinds.select(load_topology(str(path)), {})


def test_a_saved_workload_run_reprints_without_the_newer_keys(tmp_path: Path) -> None:
    summary = {"turns": 2, "turns_later": 0, "turn1_ttft_p50_s": 0.5, "all_ttft_p50_s": 0.5,
               "all_ttft_p90_s": 0.6, "all_ttft_p99_s": 0.7, "all_kv_wait_mean_s": 0.1,
               "all_kv_bytes_mean": 2 ** 20, "later_ttft_p50_s": None, "hit_rate": 0.5,
               "reload_rate": 0.0}
    run = {"variant": "ppd/pin", "summary": summary, "links": [], "proofs": {"ok": 1},
           "stores": [], "chunks_ok": 3, "chunks_bad": 0, "errors": [], "wall_s": 1.0,
           "cut": 0, "evictions": 0, "forced": 0, "writebacks": 0, "dropped": 0,
           "cache_peak_bytes": {}, "turns": [{"turn": 0, "ttft_s": 0.5}]}
    data = {"model": "llama-3.1-8b", "kv_scale": 64, "time_scale": 1.0,
            "source": {"source": "trace", "file": "x.jsonl", "requests": 2, "replay": "2",
                       "implied": {"block_share": 0.5, "token_share": 0.5}},
            "runs": [run]}
    (tmp_path / "workload.json").write_text(json.dumps(data))
    result = invoke("report", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "ppd/pin" in result.stdout
    assert "reusable KV the trace implies (one unbounded cache): 50.0% of blocks" in result.stdout
