"""scripts/perf_table.py: the README's performance table from synthetic benchmark JSON (no
root, no benchmark run)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str) -> ModuleType:
    """A module of scripts/ (which import each other by plain name, as when run)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(name)


perf_table = _load("perf_table")
_spread = _load("_spread")


def S(lo: float, med: float, hi: float, n: int = 3) -> dict:  # noqa: N802
    return {"min": lo, "median": med, "max": hi, "n": n}


ENGINE = {
    "throughput": [
        {"mtu": 1500, "relay": "bare", "pps": 300e3, "spread": {"pps": S(290e3, 300e3, 310e3)}},
        {"mtu": 1500, "relay": "engine", "pps": 240e3,
         "spread": {"pps": S(230e3, 240e3, 250e3), "pps_ratio": S(0.7, 0.8, 0.85)}},
    ],
    "lateness": [
        {"relay": "bare", "delay_ms": 0, "nice": -10, "p99_us": 100.0,
         "spread": {"p99_us": S(90, 100, 110)}},
        {"relay": "engine", "delay_ms": 1, "nice": -10, "p99_us": 350.0,
         "spread": {"p99_us": S(300, 350, 390), "p99_ratio": S(3.0, 3.5, 4.0),
                    "app_p99_us": S(380, 420, 900)}},
        # never spinning (--engine-spin 0): shown beside the default, no goal of its own
        {"relay": "engine-sleep", "delay_ms": 1, "nice": -10, "p99_us": 600.0,
         "spread": {"p99_us": S(500, 600, 700)}},
        # under load: the bare relay, the engine at nice 0 (not the fabric's) and at -10
        {"relay": "bare", "delay_ms": 0, "load": 2, "nice": -10, "p99_us": 150.0,
         "spread": {"p99_us": S(140, 150, 160)}},
        {"relay": "engine", "delay_ms": 1, "load": 2, "nice": 0, "p99_us": 3000.0,
         "spread": {"p99_us": S(2000, 3000, 4000), "p99_ratio": S(15, 20, 25)}},
        {"relay": "engine", "delay_ms": 1, "load": 2, "nice": -10, "p99_us": 450.0,
         "spread": {"p99_us": S(400, 450, 500), "p99_ratio": S(2.5, 3.0, 3.5)}},
    ],
    "meta": {"time": "2026-12-07T01:00:00+0000", "repeats": 3, "quick": False},
}

KV = {  # bench_kv's spread carries its values, not n
    "repeats": 5,
    "rows": [{"what": "unshaped veth, 1 MiB chunks",
              "raw_bps": {"min": 20e9, "median": 21e9, "max": 22e9, "values": [0] * 5},
              "kv_bps": {"min": 18.5e9, "median": 19e9, "max": 20e9, "values": [0] * 5},
              "kv_vs_raw": {"min": 0.91, "median": 0.93, "max": 0.95, "values": [0] * 5}}],
}

UDP_CC = {"rate_bps": 1_000_000_000, "repeats": 2,
          "summary": {"none": {"goodput_ratio": S(0.5, 0.6, 0.7, 2), "drops": S(10, 20, 30, 2)},
                      "dctcp": {"goodput_ratio": S(0.9, 0.92, 0.94, 2),
                                "drops": S(0, 0, 0, 2)}}}


FABRIC = {
    "meta": {"time": "2026-12-07T02:00:00+0000", "rounds": 3, "quick": True},
    "forwarding": [
        {"relay": "switch", "payload_bytes": 1400, "b_pps": 90e3, "pps_per_relay_core": 180e3,
         "spread": {"b_pps": S(80e3, 88e3, 90e3), "pps_per_relay_core": S(170e3, 175e3, 180e3),
                    "x_bare_per_core": S(0.5, 0.55, 0.6), "x_bare_pps": S(0.5, 0.52, 0.55)}},
        {"relay": "bare", "payload_bytes": 1400, "b_pps": 170e3, "pps_per_relay_core": 320e3,
         "spread": {"b_pps": S(160e3, 170e3, 175e3),
                    "pps_per_relay_core": S(300e3, 320e3, 330e3)}},
    ],
    "latency": {"paths": {"kernel": {"p99_us": 150.0}},
                "derived": {"switch_hop_p99_us": 500.0,
                            "spread": {"switch_hop_p99_us": S(300, 420, 600),
                                       "relay_hop_p99_us": S(100, 150, 200)}}},
}

SCALE = {"rows": [{"namespaces": 1000, "up_s": S(9.0, 9.5, 12.0), "down_s": S(1, 1.1, 1.2),
                   "ip_batch_up_s": S(1.8, 1.9, 2.0), "ip_batch_down_s": S(0.4, 0.5, 0.6)}],
         "traffic": {"namespaces": 256, "hosts": 24, "gbit_per_s": 1.234,
                     "cpu_s_per_gbit": 5.67, "integrity": True}}


MEMSEM = {"started": "2026-12-07T03:00:00Z",
          "rate": {"memory": {"rate": S(9e3, 10e3, 11e3)}, "bare": {"rate": S(30e3, 40e3, 50e3)},
                   "ratio": S(0.2, 0.25, 0.3), "ok": True},
          "allreduce": {"switch 16384": S(90e3, 100e3, 110e3), "ring 16384": S(1, 200e3, 3),
                        "ratio 16384": S(0.4, 0.5, 0.6),
                        "switch 262144": S(900e3, 1000e3, 1100e3),
                        "ring 262144": S(1, 800e3, 3), "ratio 262144": S(1.1, 1.25, 1.3)}}


def _results(tmp_path: Path, **files: dict) -> Path:
    d = tmp_path / "results"
    d.mkdir(parents=True)
    for name, data in files.items():
        (d / f"{name}.json").write_text(json.dumps(data))
    return d


def _row(rows: list, start: str):
    return next(r for r in rows if r.measure.startswith(start))


def test_spread_helper() -> None:
    assert _spread.spread([3, 1, None, 2]) == {"min": 1.0, "median": 2.0, "max": 3.0, "n": 3}
    assert _spread.spread([]) == {"min": None, "median": None, "max": None, "n": 0}
    assert _spread.fmt_spread(S(1, 2, 3)) == "2.00 (1.00-3.00)"
    assert _spread.fmt_spread(S(2, 2, 2, n=1)) == "2.00"
    assert _spread.fmt_spread({"min": 1, "median": 2, "max": 3}) == "2.00 (1.00-3.00)"
    assert _spread.fmt_spread(None) == "-"


def test_rows_from_json(tmp_path: Path) -> None:
    rows = perf_table.build_rows(_results(tmp_path, bench_engine=ENGINE,
                                          bench_kv={**KV, "udp_cc": UDP_CC}))
    eng = _row(rows, "userspace link engine")
    assert eng.fabric == "240k (230k-250k)"
    assert eng.baseline == "bare relay 300k"
    assert eng.ratio == "0.80 (0.70-0.85)"
    assert eng.met == "no"  # neither 500k nor 0.9 of the bare relay
    assert eng.when == "2026-12-07, 3 runs"
    late = _row(rows, "delay lateness p99 at 1 ms")
    assert (late.fabric, late.met) == ("350 (300-390) us", "yes")
    assert late.baseline == ("bare relay one-way p99 100 us; at the receiving process "
                             "(its wake-up included) 420 (380-900) us")
    sleep = _row(rows, "delay lateness p99 at 1 ms, engine never spinning (")
    assert (sleep.fabric, sleep.goal, sleep.met) == ("600 (500-700) us", "-", "-")
    loaded = _row(rows, "delay lateness p99 at 1 ms, under load")
    assert (loaded.fabric, loaded.ratio, loaded.met) == ("450 (400-500) us", "3.00 (2.50-3.50)",
                                                          "no")
    assert loaded.baseline == "bare relay one-way p99 150 us beside 2 busy processes"
    kv = _row(rows, "KV goodput")
    assert (kv.fabric, kv.ratio, kv.met) == ("19.00 (18.50-20.00) Gbit/s", "0.93 (0.91-0.95)",
                                             "yes")
    assert kv.when.endswith(", 5 runs")
    # one row per congestion-control policy
    none, dctcp = _row(rows, "4 UDP flows into 1 Gbit/s, cc none"), _row(
        rows, "4 UDP flows into 1 Gbit/s, cc dctcp")
    assert none.fabric == "600 (500-700) Mbit/s, drops 20 (10-30)"
    assert dctcp.ratio == "0.92 (0.90-0.94)"


def test_fabric_and_scale_rows(tmp_path: Path) -> None:
    rows = perf_table.build_rows(_results(tmp_path, bench_fabric=FABRIC, bench_scale=SCALE))
    assert not [r for r in rows if r.fabric.startswith("unreadable")]
    per_core = _row(rows, "RoCE switch forwarding")
    assert (per_core.fabric, per_core.baseline, per_core.ratio, per_core.met) == (
        "175k (170k-180k)", "bare AF_PACKET relay 320k", "0.55 (0.50-0.60)", "no")
    assert per_core.when == "2026-12-07, 3 runs (--quick)"
    hop = _row(rows, "added per switch hop")
    assert (hop.fabric, hop.met) == ("420 (300-600) us", "no")
    assert hop.baseline == ("bare relay's hop p99 150 (100-200) us; kernel-forwarded path RTT "
                            "p99 150 us")
    up, down = _row(rows, "1,000-namespace leaf-spine up"), _row(rows, "1,000-namespace "
                                                                         "leaf-spine down")
    assert (up.fabric, up.ratio, up.met) == ("9.50 (9.00-12.00) s", "5.00 (of medians)", "yes")
    assert down.baseline == "ip -batch 0.50 s"
    traffic = _row(rows, "all-to-all KV through 256 namespaces")
    assert (traffic.fabric, traffic.met) == ("1.23 Gbit/s, 5.7 CPU s per Gbit", "yes")


def test_memsem_rows(tmp_path: Path) -> None:
    rows = perf_table.build_rows(_results(tmp_path, bench_memsem=MEMSEM))
    rate = _row(rows, "memory-semantic transactions")
    assert (rate.fabric, rate.baseline, rate.ratio) == (
        "10.0k (9.0k-11.0k) txn/s", "bare UDP relay + echo 40.0k txn/s", "0.25 (0.20-0.30)")
    assert rate.when == "2026-12-07, 3 runs"
    small, big = _row(rows, "all-reduce 16 KiB"), _row(rows, "all-reduce 256 KiB")
    assert (small.fabric, small.baseline, small.met) == ("100.0 (90.0-110.0) us",
                                                         "ring over TCP 200.0 us", "yes")
    assert big.met == "no"


def test_memsem_rate_against_the_run_before_batching(tmp_path: Path) -> None:
    """With results/bench_memsem.before-batching.json beside it, the rate row says how many
    times the rate before it is (per repeat against the before run's median) and judges the
    goal of 3x on the median; without it, the row has no verdict."""
    before = {"started": "2026-12-06T23:00:00Z",
              "rate": {"memory": {"rate": S(3e3, 3.2e3, 3.5e3)}, "ok": True}}
    d = _results(tmp_path, bench_memsem=MEMSEM, **{"bench_memsem.before-batching": before})
    rate = _row(perf_table.build_rows(d), "memory-semantic transactions")
    assert rate.fabric == ("10.0k (9.0k-11.0k) txn/s; 3.12 (2.81-3.44)x the 3.2k before "
                           "(2026-12-06)")
    assert rate.met == "yes"
    before["rate"]["memory"]["rate"] = S(3e3, 4e3, 5e3)
    (d / "bench_memsem.before-batching.json").write_text(json.dumps(before))
    assert _row(perf_table.build_rows(d), "memory-semantic transactions").met == "no"
    (d / "bench_memsem.before-batching.json").unlink()
    assert _row(perf_table.build_rows(d), "memory-semantic transactions").met == "-"


def test_goal_every_run_and_too_few_runs(tmp_path: Path) -> None:
    kv = json.loads(json.dumps(KV))
    kv["rows"][0]["kv_vs_raw"]["min"] = 0.85  # one run under 0.9: the goal is every run
    rows = perf_table.build_rows(_results(tmp_path, bench_kv=kv))
    assert _row(rows, "KV goodput").met == "no"
    kv["rows"][0]["kv_vs_raw"] = S(0.91, 0.93, 0.95, n=3)
    (tmp_path / "results" / "bench_kv.json").write_text(json.dumps(kv))
    rows = perf_table.build_rows(tmp_path / "results")
    assert _row(rows, "KV goodput").met == "yes, 3 of 5 runs"


def test_missing_json_is_not_run(tmp_path: Path) -> None:
    rows = perf_table.build_rows(_results(tmp_path, bench_engine=ENGINE))
    fwd = _row(rows, "RoCE switch forwarding")
    assert (fwd.fabric, fwd.ratio, fwd.met, fwd.when) == ("not run", "-", "-",
                                                           "no bench_fabric.json")
    assert fwd.goal == ">= 400k, and >= 0.9 of the relay"
    # a figure a (quick) run did not measure is not made up either
    assert _row(rows, "userspace link engine").fabric != "not run"
    rows = perf_table.build_rows(_results(tmp_path / "x", bench_links={"results": {
        "userspace": [{"kind": "rate", "mtu": 1500, "rate_bps": 1e9, "tcp_vs_ceiling": 0.99}]}}))
    assert _row(rows, "userspace TCP goodput").fabric == "not in this run"


def test_check_detects_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = _results(tmp_path, bench_engine=ENGINE)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Performance\n\n" + perf_table.BEGIN + "\nold\n"
                      + perf_table.END + "\n\nprose stays\n")
    args = ["--results", str(results), "--readme", str(readme)]
    assert perf_table.main([*args, "--check"]) == 1
    assert "differs" in capsys.readouterr().err
    assert perf_table.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\n## Performance\n\n" + perf_table.BEGIN + "\n")
    assert text.endswith(perf_table.END + "\n\nprose stays\n")
    assert "| userspace link engine, packets/s, MTU 1500 | 240k (230k-250k) |" in text
    assert perf_table.main([*args, "--check"]) == 0
    # a benchmark re-run changes a figure: the README no longer matches
    eng = json.loads(json.dumps(ENGINE))
    eng["throughput"][1]["spread"]["pps"] = S(230e3, 245e3, 250e3)
    (results / "bench_engine.json").write_text(json.dumps(eng))
    assert perf_table.main([*args, "--check"]) == 1


def test_readme_without_markers_says_so(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no table here\n")
    with pytest.raises(SystemExit, match="perf-table:begin"):
        perf_table.main(["--results", str(tmp_path), "--readme", str(readme)])


def test_unreadable_json_says_so(tmp_path: Path) -> None:
    results = _results(tmp_path, bench_engine={"throughput": ["not a row"]})
    (results / "bench_links.json").write_text("{truncated")
    rows = perf_table.build_rows(results)
    assert _row(rows, "userspace link engine").fabric.startswith("unreadable (AttributeError")
    links = _row(rows, "userspace TCP goodput")
    assert (links.fabric, links.when) == ("unreadable (JSONDecodeError)", "bench_links.json")


def test_json_from_before_the_spreads(tmp_path: Path) -> None:
    """A figure without min/median/max is shown as it is, its repeats unknown, not made up."""
    old = {"time": 1796000000.0, "rows": [
        {"transport": "roce", "condition": "loss", "goodput_bps": 24.7e6},
        {"transport": "roce", "condition": "loss+reorder", "goodput_bps": 2.9e6,
         "goodput_vs_base": 0.12}]}
    row = _row(perf_table.build_rows(_results(tmp_path, bench_reorder=old)), "RoCE goodput")
    assert (row.fabric, row.baseline, row.ratio) == ("2.9 Mbit/s", "loss only 24.7 Mbit/s",
                                                     "0.12")
    assert row.when == "2026-11-30, runs not recorded"


def test_the_engine_rows_are_those_at_the_daemons_niceness() -> None:
    from fabric.net.daemon import DAEMON_NICE

    assert perf_table.ENGINE_NICE == DAEMON_NICE
