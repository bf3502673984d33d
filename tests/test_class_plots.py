"""Per-class series and plots: the switch core's per-class queue samples and pause/resume
log, the pure series over them and over chunk records, and the plots drawn from them (no
root, no sockets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fabric.metrics.classes import (
    class_goodput_series,
    class_queue_series,
    declared_classes,
    delivered_bytes,
    pause_rows,
    switch_shift_ns,
)
from fabric.metrics.records import ChunkRecord
from fabric.switch.core import MAX_SAMPLES, SwitchCore
from tests.test_switch_core import host, make_packet, make_spec

# -- the switch core ---------------------------------------------------------------------------


def test_class_samples_follow_each_class_queue_and_export_only_used_queues() -> None:
    core = SwitchCore(make_spec(sample_interval_ns=10, pfc=False))
    core.receive(0, 0, make_packet(dst=host(1), dscp=26, size=1000))  # roce
    core.receive(20, 0, make_packet(dst=host(1), dscp=10, size=400))  # bulk
    core.dequeue(40, 1)  # strict first? none strict queued: DRR serves roce first
    core.receive(60, 0, make_packet(dst=host(2), dscp=10, size=300))
    stats = core.stats(100)
    json.dumps(stats)
    assert [t for t, _ in core.class_samples] == [t for t, _ in core.samples]
    cs = stats["class_samples"]
    assert cs["columns"] == [["p1", "roce"], ["p1", "bulk"], ["p2", "bulk"]]
    rows = {t: q for t, q in cs["rows"]}
    assert rows[0] == [0, 0, 0]  # sampled before the first packet joined
    assert rows[20] == [1000, 0, 0]
    assert rows[40] == [1000, 400, 0]
    assert rows[60] == [0, 400, 0]
    # per port, the class columns add up to the port's sample
    for (t, ports), (t2, flat) in zip(core.samples, core.class_samples, strict=True):
        assert t == t2
        assert [sum(flat[p * 4:(p + 1) * 4]) for p in range(4)] == ports
    assert stats["class_priorities"] == {"roce": 3, "bulk": 1, "cnp": 6, "best": 0}


def test_class_samples_decimate_with_the_port_samples() -> None:
    core = SwitchCore(make_spec(sample_interval_ns=10, pfc=False))
    for i in range(30_000):
        core.receive(i * 5, 0, make_packet(dst=host(1), size=100, dscp=10, sport=i & 0xFFFF))
        if i % 2:
            core.dequeue(i * 5, 1)
    assert len(core.class_samples) == len(core.samples) <= MAX_SAMPLES
    assert [t for t, _ in core.class_samples] == [t for t, _ in core.samples]


def test_resume_log_pairs_each_logged_pause() -> None:
    core = SwitchCore(make_spec(xoff_bytes=5000, xon_bytes=2000))
    for t in range(6):
        core.receive(t, 0, make_packet(dst=host(1), dscp=26))
    assert core.pausing(0, 3)
    while core.pausing(0, 3):
        core.dequeue(500, 1)
    stats = core.stats(1000)
    assert stats["pause_log"] == [[4, 0, 3]]
    assert stats["resume_log"] == [[500, 0, 3]]


def test_a_resume_of_an_unlogged_pause_is_not_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    import fabric.switch.core as core_mod

    monkeypatch.setattr(core_mod, "MAX_PAUSE_LOG", 0)
    core = SwitchCore(make_spec(xoff_bytes=5000, xon_bytes=2000))
    for t in range(6):
        core.receive(t, 0, make_packet(dst=host(1), dscp=26))
    while core.pausing(0, 3):
        core.dequeue(500, 1)
    assert core.pause_log == []
    assert core.resume_log == []


# -- pure series -------------------------------------------------------------------------------


def chunk(cls: str, t_send: int, t_last: int, nbytes: int = 1000, *, ok: bool = True,
          n: int = 0, flow: str = "f") -> ChunkRecord:
    return ChunkRecord(flow=f"{flow}-{cls}", cls=cls, kind="kv", request=0, chunk=n,
                       nbytes=nbytes, t_send_ns=t_send, t_first_ns=t_last, t_last_ns=t_last,
                       ok=ok)


def test_class_goodput_series_bins_each_class_on_one_grid_in_fabric_terms() -> None:
    cs = [chunk("kv", 1000, 1000 + 100 * i, 125, n=i) for i in range(1, 11)]
    cs += [chunk("bulk", 1000, 2000, 12_500, n=0), chunk("bulk", 1000, 2000, 99, ok=False, n=1)]
    cs.append(cs[0])  # a duplicate counts once
    bin_ns, series = class_goodput_series(cs, time_scale=10, t0_ns=1000, bins=10)
    assert bin_ns == pytest.approx(10.0)  # 100 wall ns / time_scale 10
    assert sorted(series) == ["bulk", "kv"]
    t, r = series["kv"]
    assert np.allclose(t, np.arange(10) * 10.0)
    # 125 B per wall 100 ns = 10 Gbit/s wall, 100 Gbit/s fabric, in every bin
    assert np.allclose(r, 1e11)
    t, r = series["bulk"]
    # the corrupt chunk does not count
    assert r.sum() == pytest.approx(12_500 * 8 / 100e-9 * 10)
    assert class_goodput_series([]) == (0.0, {})


def test_a_chunk_counts_over_its_arrival_not_at_its_last_byte() -> None:
    c = ChunkRecord(flow="f", cls="kv", kind="kv", request=0, chunk=0, nbytes=1000,
                    t_send_ns=0, t_first_ns=0, t_last_ns=1000, ok=True)
    bin_ns, series = class_goodput_series([c], bins=10)
    assert bin_ns == 100
    # 100 B per 100 ns in every bin: 8 Gbit/s, not 80 Gbit/s in the last
    assert np.allclose(series["kv"][1], 8e9)


def test_delivered_bytes_matches_a_brute_force_sum() -> None:
    rng = np.random.default_rng(7)
    cs = []
    for i in range(200):
        f = int(rng.integers(0, 10_000))
        last = f + int(rng.integers(0, 3)) * int(rng.integers(0, 2_000))  # some instant
        cs.append(ChunkRecord(flow="f", cls="kv", kind="kv", request=0, chunk=i,
                              nbytes=int(rng.integers(1, 9000)), t_send_ns=0, t_first_ns=f,
                              t_last_ns=last, ok=bool(i % 7)))
    at = np.sort(rng.integers(-100, 13_000, 300)).astype(float)

    def brute(t: float) -> float:
        total = 0.0
        for c in cs:
            if not c.ok:
                continue
            if c.t_last_ns == c.t_first_ns:
                total += c.nbytes if t >= c.t_last_ns else 0
            else:
                frac = (t - c.t_first_ns) / (c.t_last_ns - c.t_first_ns)
                total += c.nbytes * min(1.0, max(0.0, frac))
        return total

    assert np.allclose(delivered_bytes(cs, at), [brute(t) for t in at])
    assert delivered_bytes(cs, at[::-1])[0] == pytest.approx(brute(at[-1]))


def test_declared_classes_prefers_the_file_then_the_chunks() -> None:
    assert declared_classes({"meta": {"classes": ["a", "b"]}}, [chunk("x", 0, 1)]) == ["a", "b"]
    assert declared_classes({"meta": {}}, [chunk("x", 0, 1), chunk("y", 0, 1)]) == ["x", "y"]
    assert declared_classes(None) == []


def switch_stats(**kw: object) -> dict:
    base = {
        "t0_monotonic_ns": 1_000, "monotonic_ns": 1_000 + 2 * 900_000,
        "ports": [{"name": "sw-eth0", "peer": "h0", "max_queue_bytes": 9000,
                   "pauses_sent": 2},
                  {"name": "sw-eth1", "peer": "h1", "max_queue_bytes": 3000,
                   "pauses_sent": 1}],
        "class_priorities": {"kv": 3, "bulk": 1, "control": 6},
        "class_samples": {"columns": [["sw-eth0", "kv"], ["sw-eth0", "bulk"],
                                      ["sw-eth1", "bulk"]],
                          "rows": [[0, [0, 0, 0]], [100_000, [9000, 100, 3000]],
                                   [200_000, [0, 0, 0]]]},
        "pause_log": [[50_000, 0, 3], [300_000, 0, 3], [400_000, 1, 3]],
        "resume_log": [[80_000, 0, 3], [999_999, 1, 1]],  # the second ends no logged pause
        "buffer": {"pfc": True},
    }
    base.update(kw)
    return base


def test_switch_times_shift_onto_the_runs_clock() -> None:
    # the switch started 2 wall us before the run; time_scale 2: 1 fabric us
    assert switch_shift_ns({"t0_monotonic_ns": 1_000}, 3_000, 2.0) == 1000.0
    assert switch_shift_ns({}, 3_000, 2.0) == 0.0
    assert switch_shift_ns({"t0_monotonic_ns": 1_000}, 0, 2.0) == 0.0


def test_class_queue_series_picks_the_deepest_ports_per_class() -> None:
    sw = {"sw": switch_stats(), "idle": {}, "quiet": switch_stats(
        class_samples={"columns": [["x0", "kv"]], "rows": [[0, [10]]]},
        ports=[{"name": "x0", "max_queue_bytes": 10}]), "brief": switch_stats(
        # a queue that came and went between samples: not drawn, counted as left out
        class_samples={"columns": [["y0", "kv"]], "rows": [[0, [0]], [10, [0]]]},
        ports=[{"name": "y0", "max_queue_bytes": 90_000}])}
    ports, hidden = class_queue_series(sw, started_ns=3_000, time_scale=2.0, top=2)
    assert [(p.switch, p.port, p.peak_bytes) for p in ports] == [
        ("sw", "sw-eth0", 9000), ("sw", "sw-eth1", 3000)]
    assert hidden == 2
    eth0 = ports[0]
    assert eth0.peer == "h0"
    assert np.allclose(eth0.t_ns, [-1000, 99_000, 199_000])
    assert sorted(eth0.classes) == ["bulk", "kv"]
    assert list(eth0.classes["kv"]) == [0, 9000, 0]
    assert class_queue_series({}, 0, 1.0) == ([], 0)


def test_pause_rows_pair_pauses_with_resumes_and_close_open_ones_at_the_end() -> None:
    rows, hidden, sent = pause_rows({"sw": switch_stats()}, started_ns=0, time_scale=2.0)
    assert hidden == 0
    assert sent == 3
    by = {(r.port, r.priority): r for r in rows}
    eth0 = by[("sw-eth0", 3)]
    assert eth0.peer == "h0"
    assert eth0.classes == ("kv",)
    # the second pause of eth0 never resumed: it lasts until the statistics were written
    assert eth0.intervals == ((50_000, 80_000), (300_000, 900_000))
    assert eth0.open_at_end
    eth1 = by[("sw-eth1", 3)]
    assert eth1.intervals == ((400_000, 900_000),)
    assert rows[0] is eth0  # longest paused first
    assert pause_rows({"sw": switch_stats(pause_log=[])}, 0, 1.0) == ([], 0, 3)


# -- plots ---------------------------------------------------------------------------------------


def test_class_plots_are_drawn_for_runs_with_classes(tmp_path: Path) -> None:
    from fabric.metrics.plots import CLASS_PLOTS, write_class_plots

    cs = [chunk("kv", 0, 100 * i, n=i) for i in range(1, 30)]
    cs += [chunk("bulk", 0, 300 * i, 9000, n=i) for i in range(1, 10)]
    summary = {"time_scale": 2.0, "meta": {
        "classes": ["kv", "bulk"], "started_ns": 1,
        "events": [{"action": "down", "label": "cut", "applied_ns": 1500}]}}
    made = write_class_plots(tmp_path, summary, cs, {"sw": switch_stats()})
    assert [p.name for p in made] == list(CLASS_PLOTS)
    assert all(p.stat().st_size > 5000 for p in made)
    # no pauses, PFC off: still a figure that says so
    made = write_class_plots(tmp_path / "off", summary, cs,
                             {"sw": switch_stats(pause_log=[], buffer={"pfc": False})})
    assert (tmp_path / "off" / "pfc_pauses.png").exists()
    # without switches only the goodput; one class declared: nothing
    assert [p.name for p in write_class_plots(tmp_path / "t", summary, cs)] == [
        "class_goodput.png"]
    one = {"meta": {"classes": ["kv"]}}
    assert write_class_plots(tmp_path / "one", one, cs, {"sw": switch_stats()}) == []


def test_fabric_report_redraws_a_traffic_runs_class_plot(tmp_path: Path) -> None:
    from fabric.kinds.traffic import TrafficKind
    from fabric.metrics import summarise, write_run

    cs = [chunk("kv", 0, 100 * i, n=i) for i in range(1, 30)]
    cs += [chunk("bulk", 0, 300 * i, 9000, n=i) for i in range(1, 10)]
    summary = summarise(cs, [], meta={"classes": ["kv", "bulk"], "started_ns": 0})
    write_run(tmp_path, summary, cs, [])
    lines: list[str] = []
    TrafficKind().report(tmp_path, lines.append)
    assert f"redrew {tmp_path / 'class_goodput.png'}" in lines
    assert not (tmp_path / "class_queues.png").exists()  # no switches.json: no switch plots
