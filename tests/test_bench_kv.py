"""scripts/bench_kv.py's summary: every figure as min/median/max over the repeats, in the JSON
rows and the table (the benchmark itself needs root and minutes; this needs neither)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_kv.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_kv", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_spread_is_min_median_max_and_the_values(bench: ModuleType) -> None:
    assert bench.spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0, "n": 3,
                                             "values": [3.0, 1.0, 2.0]}
    assert bench.spread([5.0])["median"] == 5.0


def test_percentiles_stay_inside_the_list(bench: ModuleType) -> None:
    v = list(range(200))
    assert (bench.pct(v, 0.5), bench.pct(v, 0.99)) == (100, 198)
    assert bench.pct([7], 0.99) == 7


def test_the_table_gives_each_ratio_as_min_median_max(bench: ModuleType) -> None:
    s = bench.spread
    rows = [{"what": "unshaped veth, 1 MiB chunks", "raw_bps": s([20e9, 22e9, 21e9]),
             "iperf3_bps": s([20e9]), "kv_bps": s([18e9, 19e9, 20e9]),
             "kv_vs_raw": s([0.9, 0.95, 0.91]), "kv_vs_iperf3": s([0.9, 0.95, 1.0]),
             "integrity_ok": True},
            {"what": "64 KiB chunk one-way latency vs raw ping-pong RTT/2",
             "kv_p50_us": s([16.0, 20.0, 18.0]), "kv_p99_us": s([30.0, 40.0, 35.0]),
             "raw_half_rtt_p50_us": s([8.0, 9.0, 10.0]),
             "raw_half_rtt_p99_us": s([20.0, 25.0, 30.0]), "overhead_p50_us": s([8.0]),
             "ratio_p50": s([1.6, 2.0, 2.25]), "ratio_p99": s([1.0, 1.6, 2.0]),
             "integrity_ok": True}]
    lines = bench.table(rows)
    assert lines[0] == ("unshaped veth, 1 MiB chunks", "KV 18.00/19.00/20.00 Gbit/s",
                        "raw 20.00/21.00/22.00 Gbit/s", "0.90/0.91/0.95")
    assert lines[1][3] == "0.90/0.95/1.00"
    assert lines[2] == ("64 KiB chunk one-way latency vs raw ping-pong RTT/2, p50",
                        "16/18/20 us", "8/9/10 us", "1.60/2.00/2.25")
    assert lines[3] == ("  p99", "30/35/40 us", "20/25/30 us", "1.00/1.60/2.00")
