"""fabric.metrics: statistics, summary, tables, run directories and plots. Pure and fast."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from fabric.errors import FabricError
from fabric.metrics import (
    ChunkRecord,
    IntegrityCounts,
    TransferRecord,
    compare,
    goodput_bps,
    goodput_series,
    integrity_counts,
    load_chunks,
    load_run,
    p99_minus_p50,
    parse_links,
    percentiles,
    plots,
    render_links,
    render_table,
    rfc3550_jitter,
    slowdown,
    stddev,
    summarise,
    write_run,
)
from fabric.metrics.stats import lateness_between
from fabric.run.traffic import link_delta

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MS = 1_000_000


def chunk(flow="f0", cls="bulk", kind="one-to-one", request=0, idx=0, nbytes=1000,
          send=0, lat=1000, ok=True) -> ChunkRecord:
    return ChunkRecord(flow, cls, kind, request, idx, nbytes, send, send + lat // 2, send + lat,
                       ok)


def transfer(flow="f0", cls="bulk", kind="one-to-one", request=0, nbytes=1000, chunks=1,
             start=0, ttfb=500, done=1000, status="ok") -> TransferRecord:
    return TransferRecord(flow, cls, kind, "h0", "h1", request, nbytes, chunks, start,
                          start + ttfb, start + done, status)


LINKS = {"links": [
    {"id": "h0--leaf0",
     "forward": {"packets_in": 10, "bytes_in": 15000, "packets_out": 9, "bytes_out": 13500,
                 "drops_loss": 1, "drops_queue": 0, "ecn_marks": 2, "queue_high_water": 3000,
                 "samples": [[1000, 0], [2000, 1500], [3000, 3000], [4000, 0]]},
     "reverse": {"packets_out": 5, "bytes_out": 300}},
    {"id": "leaf0--h1", "forward": {"bytes_out": 12000, "queue_bytes_max": 4500}},
]}


def sample_run(n_flows=3, n_chunks=20, scale=1.0):
    """Two classes, two kinds; latencies vary so percentiles and jitter are non-trivial."""
    rng = np.random.default_rng(7)
    chunks, transfers = [], []
    for f in range(n_flows):
        cls = "kv" if f % 2 == 0 else "bulk"
        kind = "incast" if f < 2 else "pd"
        flow = f"flow{f}"
        start = f * 100_000
        t = start
        for i in range(n_chunks):
            lat = int(20_000 + rng.integers(0, 30_000))
            chunks.append(chunk(flow, cls, kind, 0, i, 65536, t, lat))
            t += 10_000
        done = max(c.t_last_ns for c in chunks if c.flow == flow)
        transfers.append(transfer(flow, cls, kind, 0, 65536 * n_chunks, n_chunks, start,
                                  ttfb=10_000, done=done - start))
    return chunks, transfers


# ---- stats ------------------------------------------------------------------------------


def test_percentiles_linear_hand_computed():
    p = percentiles([4, 1, 3, 2])
    assert p["p50"] == pytest.approx(2.5)
    assert p["p90"] == pytest.approx(3.7)  # rank 3 * 0.9 = 2.7 -> 3 + 0.7 * (4 - 3)
    assert p["p99"] == pytest.approx(3.97)
    assert p["p99.9"] == pytest.approx(3.997)
    assert (p["min"], p["max"], p["mean"], p["count"]) == (1.0, 4.0, 2.5, 4)
    p = percentiles(range(1, 101))
    assert p["p50"] == pytest.approx(50.5)
    assert p["p99"] == pytest.approx(99.01)
    assert all(type(v) in (float, int) for v in p.values())


def test_percentiles_single_and_empty():
    p = percentiles([7])
    assert p["p50"] == p["p99.9"] == p["max"] == p["min"] == 7.0
    assert p["count"] == 1
    e = percentiles([])
    assert e["count"] == 0
    assert e["p50"] is None
    assert e["max"] is None


def test_rfc3550_jitter_hand_worked():
    # D = 10, 5, 0: J = 10/16 = 0.625; 0.625 + (5 - 0.625)/16 = 0.8984375; x 15/16 = 0.84228515625
    assert rfc3550_jitter([10, 20, 15, 15]) == pytest.approx(0.84228515625)
    assert rfc3550_jitter([5, 5, 5]) == 0.0
    assert rfc3550_jitter([5]) == 0.0
    assert rfc3550_jitter([]) == 0.0


def test_spread_goodput_slowdown():
    assert stddev([2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(2.0)  # population stddev
    assert stddev([]) is None
    assert p99_minus_p50([1, 2, 3, 4]) == pytest.approx(3.97 - 2.5)
    assert p99_minus_p50([]) is None
    assert goodput_bps(125_000_000, 1_000_000_000) == pytest.approx(1e9)
    assert goodput_bps(100, 0) is None
    # ideal = 10 us RTT + 1 MB at 8 Gbit/s (1 ms) = 1.01 ms
    assert slowdown(2.02 * MS, 10_000, 1_000_000, 8e9) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="rate_bps must be positive"):
        slowdown(1, 1, 1, 0)


def test_goodput_series_bins_by_last_byte():
    recs = [chunk(idx=0, nbytes=1000, send=0, lat=500),       # arrives at 500 -> bin 0
            chunk(idx=1, nbytes=2000, send=0, lat=1500),      # 1500 -> bin 1
            chunk(idx=1, nbytes=2000, send=0, lat=1700),      # duplicate: counted once
            chunk(idx=2, nbytes=4000, send=0, lat=1800, ok=False)]  # corrupt: not goodput
    t, bps = goodput_series(recs, 1000)
    assert list(t) == [0.0, 1000.0]
    assert list(bps) == pytest.approx([1000 * 8e9 / 1000, 2000 * 8e9 / 1000])
    t, bps = goodput_series([], 1000)
    assert t.size == 0
    assert bps.size == 0


# ---- summary ----------------------------------------------------------------------------


def test_fabric_vs_wall_time_scale_1000():
    # One 1 MB chunk: 5 ms one-way on the host, the transfer takes 8 ms end to end.
    c = ChunkRecord("f", "kv", "pd", 0, 0, 1_000_000, 0, 1 * MS, 8 * MS, True)
    tr = TransferRecord("f", "kv", "pd", "a", "b", 0, 1_000_000, 1, 0, 1 * MS, 8 * MS, "ok")
    s = summarise([c], [tr], time_scale=1000, meta={"backend": "userspace"})
    g = s["classes"]["kv"]
    assert g["chunk_latency"]["wall_ns"]["p50"] == 8 * MS
    assert g["chunk_latency"]["fabric_ns"]["p50"] == pytest.approx(8_000)  # 8 us
    assert g["ttfb"]["fabric_ns"]["p50"] == pytest.approx(1_000)
    assert g["goodput"]["wall_bps"] == pytest.approx(1e9)  # 8 Mbit in 8 ms
    assert g["goodput"]["fabric_bps"] == pytest.approx(1e12)  # 1 Tbit/s in fabric terms
    assert s["meta"] == {"backend": "userspace", "time_scale": 1000.0}
    table = render_table(s)
    assert table.splitlines()[0] == ("fabric time (time_scale 1000); wall-clock in summary.json; "
                                     "every figure measured on the fabric (the nodes' clocks, "
                                     "the links' counters)")
    assert "8 us" in table
    assert "1 Tbit/s" in table
    assert "wall-clock time" in render_table(summarise([c], [tr], meta={}))


def test_summary_groups_and_json_round_trip():
    chunks, transfers = sample_run()
    s = summarise(chunks, transfers, time_scale=10, meta={"topology_hash": "abc"},
                  links=LINKS)
    assert json.loads(json.dumps(s)) == s
    assert set(s["classes"]) == {"kv", "bulk"}
    assert set(s["kinds"]) == {"incast", "pd"}
    assert s["total"]["counts"]["chunks"] == 60
    assert s["total"]["counts"]["transfers"] == 3
    kv = s["classes"]["kv"]
    assert kv["counts"]["flows"] == 2
    assert kv["chunk_latency"]["count"] == 40
    assert kv["jitter"]["rfc3550"]["fabric_ns"] == pytest.approx(
        kv["jitter"]["rfc3550"]["wall_ns"] / 10)
    assert s["integrity"] == {"chunks_ok": 60, "chunks_corrupt": 0, "chunks_missing": 0,
                              "chunks_duplicate": 0, "transfers_ok": 3, "transfers_failed": 0,
                              "ok": True}
    link = s["links"][0]
    assert link["id"] == "h0--leaf0"
    assert link["forward"]["drops"] == 1
    assert "samples" not in link["forward"]
    assert link["forward"]["samples_count"] == 4
    assert "drops_loss" not in link["reverse"]  # absent, not zero
    assert s["links"][1]["forward"]["queue_high_water"] == 4500  # engine's queue_bytes_max


def test_integrity_counts_and_failed_rendering():
    chunks = [chunk(idx=0), chunk(idx=1, ok=False), chunk(idx=1, lat=2000),   # corrupt + dup
              chunk(flow="g", idx=0)]
    transfers = [transfer(chunks=3, status="corrupt"),    # chunk 2 never arrived
                 transfer(flow="g", chunks=1)]
    ic = integrity_counts(chunks, transfers)
    assert ic == IntegrityCounts(chunks_ok=2, chunks_corrupt=1, chunks_missing=1,
                                 chunks_duplicate=1, transfers_ok=1, transfers_failed=1)
    assert not ic.ok
    s = summarise(chunks, transfers, meta={})
    assert s["integrity"]["ok"] is False
    assert render_table(s).splitlines()[-1] == (
        "integrity: FAILED: 1 corrupt, 1 missing, 1 duplicate, 1 transfer failed")
    two = summarise([chunk(idx=0, ok=False), chunk(idx=1, ok=False)],
                    [transfer(chunks=3, status="corrupt")], meta={})
    assert render_table(two).splitlines()[-1] == (
        "integrity: FAILED: 2 corrupt, 1 missing, 1 transfer failed")
    good = summarise([chunk()], [transfer()], meta={})
    assert render_table(good).splitlines()[-1] == "integrity: OK (1 chunks, 1 transfers)"


def test_table_rows_per_class_then_kind():
    chunks, transfers = sample_run()
    lines = render_table(summarise(chunks, transfers, meta={})).splitlines()
    labels = [ln.split("  ")[0].strip() for ln in lines[2:-1]]
    assert labels == ["class kv", "class bulk", "kind incast", "kind pd"]
    assert "chunk p50" in lines[1]
    assert "goodput" in lines[1]
    widths = {len(ln) for ln in lines[1:-1]}
    assert len(widths) == 1  # aligned (right-aligned last column)


def test_empty_inputs_are_clear():
    s = summarise([], [], meta={}, links=None)
    assert json.loads(json.dumps(s)) == s
    assert s["classes"] == {}
    assert s["links"] == []
    assert s["integrity"]["ok"] is True
    assert s["total"]["chunk_latency"]["wall_ns"]["p50"] is None
    assert s["total"]["goodput"]["wall_bps"] is None
    table = render_table(s)
    assert "no transfers recorded" in table
    assert table.endswith("integrity: OK (0 chunks, 0 transfers)")
    assert render_links(s) == "no link statistics"
    assert parse_links({}) == []
    assert parse_links({"links": "junk"}) == []
    assert parse_links({"links": [None, {"forward": {"samples": [[1], "x", [2, 3]]}}]})[0] \
        .forward.samples[0].queue_bytes == 3
    with pytest.raises(ValueError, match="time_scale must be a positive"):
        summarise([], [], time_scale=0, meta={})


def test_render_links():
    s = summarise([], [], meta={}, links=LINKS)
    out = render_links(s)
    lines = out.splitlines()
    assert lines[0].split() == ["link", "packets", "bytes", "lost", "q-drops", "ecn",
                                "queue", "max"]
    assert lines[1].split() == ["h0--leaf0", "->", "9", "13.184", "KiB", "1", "0", "2",
                                "2.93", "KiB"]
    assert lines[2].split()[:3] == ["h0--leaf0", "<-", "5"]
    assert "-" in lines[2].split()


def _engine(hist: list[int], pid: int = 7) -> dict:
    """A link engine's statistics document with `hist` as its lateness histogram."""
    return {"pid": pid, "links": {}, "release_lateness": {"releases": sum(hist),
                                                           "hist_log2_us": hist}}


def test_lateness_between_two_engine_snapshots():
    # before: 5 releases under 1 us; after: 100 more, 90 in [1, 2) us, 9 in [8, 16), 1 in
    # [512, 1024)
    before = _engine([5])
    after = _engine([5, 90, 0, 0, 9, 0, 0, 0, 0, 0, 1])
    late = link_delta(before, after)["release_lateness"]
    assert late == {"releases": 100, "p50_under_us": 2.0, "p99_under_us": 16.0,
                    "max_under_us": 1024.0}
    assert lateness_between(None, after["release_lateness"])["releases"] == 105
    assert lateness_between(None, after["release_lateness"])["p50_under_us"] == 2.0
    assert lateness_between(before["release_lateness"], before["release_lateness"]) is None
    assert lateness_between(None, {"releases": 3}) is None  # an engine without the histogram
    # another engine (restarted between): its own counts, not a difference with the old one
    assert link_delta(_engine([50, 50]), _engine([1, 2], pid=8))["release_lateness"][
        "releases"] == 3
    assert "release_lateness" not in link_delta({}, {"links": {}})


def test_the_run_report_says_how_late_the_engine_was():
    after = _engine([0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 1])  # 3 in [128, 256) us, 1 by 2 ms
    late = link_delta({}, after)["release_lateness"]
    s = summarise([], [], meta={}, links={**LINKS, "release_lateness": late})
    assert s["link_engine"] == {"releases": 4, "p50_under_us": 256.0, "p99_under_us": 2048.0,
                                "max_under_us": 2048.0}
    assert json.loads(json.dumps(s))["link_engine"] == s["link_engine"]
    last = render_links(s).splitlines()[-1]
    assert last.startswith("link engine: 4 releases during the run, written late by p50 <256 "
                           "us, p99 <2.048 ms, max <2.048 ms (host time")
    assert "link engine" not in render_links(summarise([], [], meta={}, links=LINKS))
    assert render_links(s | {"links": []}) == "no link statistics\n" + last


def test_compare_two_runs():
    c1, t1 = sample_run()
    base = summarise(c1, t1, meta={})
    # the second run: every latency doubled
    c2 = [ChunkRecord(c.flow, c.cls, c.kind, c.request, c.chunk, c.nbytes, c.t_send_ns,
                      c.t_first_ns, c.t_send_ns + 2 * c.latency_ns, c.ok) for c in c1]
    slow = summarise(c2, t1, meta={})
    out = compare([("base", base), ("slow", slow)])
    lines = out.splitlines()
    assert lines[1] == "ratios (xN) against base"
    slow_kv = next(ln for ln in lines if ln.split()[:1] == ["slow"])
    assert slow_kv.count("(x2.00)") == 2  # chunk p50 and p99 doubled
    assert "base: integrity: OK" in out
    assert "slow: integrity: OK" in out
    with pytest.raises(FabricError, match="at least two runs"):
        compare([("base", base)])
    # a class only one run has shows dashes, not a crash
    other = summarise([chunk(cls="ctrl")], [transfer(cls="ctrl")], meta={})
    assert "ctrl" in compare([("base", base), ("other", other)])


# ---- run directories and plots ------------------------------------------------------------


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


def test_write_run_load_run_round_trip(tmp_path):
    chunks, transfers = sample_run(scale=100)
    s = summarise(chunks, transfers, time_scale=100, meta={"run": "r1"}, links=LINKS)
    written = write_run(tmp_path / "run", s, chunks, transfers, LINKS)
    d = tmp_path / "run"
    for name in ("summary.json", "transfers.csv", "chunks.csv", "links.json",
                 "latency_cdf.png", "goodput.png", "links.png"):
        assert (d / name).is_file(), name
    for name in ("latency_cdf", "goodput", "links_plot"):
        assert _is_png(written[name])
    summary, trs = load_run(d)
    assert summary == s
    assert trs == transfers
    assert load_chunks(d) == chunks
    header = (d / "transfers.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["flow", "cls", "kind"]
    assert "fct_wall_ms" in header
    assert "fct_fabric_ms" in header
    assert not plt.get_fignums()  # every figure closed


def test_write_run_empty(tmp_path):
    s = summarise([], [], meta={})
    written = write_run(tmp_path, s, [], [], None)
    assert set(written) == {"summary", "transfers", "chunks"}
    summary, trs = load_run(tmp_path)
    assert summary == s
    assert trs == []


def test_load_run_errors(tmp_path):
    with pytest.raises(FabricError, match="no such run directory"):
        load_run(tmp_path / "nope")
    with pytest.raises(FabricError, match="not a run directory: no summary.json"):
        load_run(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(FabricError, match="cannot read the run summary"):
        load_run(tmp_path)


def test_plots_single_record_and_no_links(tmp_path):
    one = [chunk(cls="ctrl", lat=3000)]
    assert _is_png(plots.latency_cdf(tmp_path / "cdf.png", one, 1.0))
    assert _is_png(plots.goodput_over_time(tmp_path / "gp.png", one, 1000.0))
    assert plots.latency_cdf(tmp_path / "none.png", [], 1.0) is None
    assert plots.goodput_over_time(tmp_path / "none.png", [], 1.0) is None
    assert plots.links_over_time(tmp_path / "l.png", {}) is None
    assert plots.links_over_time(tmp_path / "l.png", None) is None
    assert not (tmp_path / "none.png").exists()
    assert not (tmp_path / "l.png").exists()
    # counters without samples: a bar chart of bytes per link
    bars = {"links": [{"id": "a--b", "forward": {"bytes_out": 100}}]}
    assert _is_png(plots.links_over_time(tmp_path / "bars.png", bars))
    # samples with cumulative bytes: throughput over time
    rated = {"links": [{"id": "a--b", "forward": {
        "samples": [[0, 0, 0], [1000, 500, 1250], [2000, 0, 2500]]}}]}
    assert _is_png(plots.links_over_time(tmp_path / "rated.png", rated, 10.0))
    assert not plt.get_fignums()
