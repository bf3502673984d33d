"""Per-class queue samples on plain links: the link model samples each class queue with its
queue samples, the stats carry them through links.json and a run's delta, and the series and
class_queues.png are drawn from them (no root, no sockets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fabric.linkmodel import LinkDirection
from fabric.metrics.classes import link_class_queue_series, no_link_class_queues
from fabric.metrics.plots import CLASS_PLOTS, write_class_plots
from fabric.metrics.records import parse_links
from fabric.run.traffic import link_delta
from fabric.topology.model import Shape, TrafficClass

KV = TrafficClass(name="kv", dscp=26, priority=3, strict=True)
BULK = TrafficClass(name="bulk", dscp=10)
RATE = 8_000_000  # 1 byte per microsecond: a 1000-byte packet takes 1 ms on the wire


def classed(**kw: int) -> LinkDirection:
    return LinkDirection(Shape(rate_bps=RATE, queue_bytes=100_000), rate_in_engine=True,
                         classes=(KV, BULK), **kw)


def test_class_samples_follow_each_class_queue_in_step_with_the_samples() -> None:
    d = classed(sample_interval_ns=1)
    for i in range(4):  # t=0: the first goes on the wire; three bulk queue behind it
        d.offer(1000, False, i, dscp=10)
    d.offer(1000, False, 10, dscp=26)  # sampled before it joins: bulk 3000, kv 0
    d.offer(1000, False, 20, dscp=26)  # sampled with the first kv packet queued
    # at 1 ms the wire frees and takes a strict kv packet first, before the sample
    d.offer(500, False, 1_000_000, dscp=10)
    s = d.statistics()
    assert [t for t, _ in s.class_samples] == [t for t, *_ in s.samples]
    rows = dict(s.class_samples)
    assert rows[3] == (0, 2000)
    assert rows[10] == (0, 3000)
    assert rows[20] == (1000, 3000)
    assert rows[1_000_000] == (1000, 3000)  # two kv packets queued; the wire took one
    assert d.class_queue_bytes() == (1000, 3500)  # and the last bulk packet joined
    # each sample's class bytes plus the packet on the wire make the queue sample
    for (_t, q, _), (_, per) in zip(s.samples, s.class_samples, strict=True):
        assert sum(per) <= q
    out = s.to_dict()
    json.dumps(out)
    assert out["class_samples"]["columns"] == ["kv", "bulk"]
    assert out["class_samples"]["rows"][4] == [10, [0, 3000]]


def test_class_samples_are_thinned_with_the_samples() -> None:
    d = classed(sample_interval_ns=1, max_samples=8)
    for i in range(40):
        d.offer(100, False, i * 10, dscp=26 if i % 3 else 10)
    s = d.statistics()
    assert 2 <= len(s.samples) <= 8
    assert [t for t, _ in s.class_samples] == [t for t, *_ in s.samples]


def test_no_classes_no_class_samples() -> None:
    d = LinkDirection(Shape(rate_bps=RATE), rate_in_engine=True, sample_interval_ns=1)
    for i in range(5):
        d.offer(1000, False, i)
    s = d.statistics()
    assert s.samples
    assert s.class_samples == ()
    assert "class_samples" not in s.to_dict()
    # classes, but the kernel shapes the rate: nothing queues by class, nothing to sample
    k = LinkDirection(Shape(rate_bps=RATE), classes=(KV, BULK), sample_interval_ns=1)
    k.offer(1000, False, 0, dscp=26)
    assert k.statistics().class_samples == ()


def engine_links(t0: int) -> dict:
    """links.json as the engine writes it: a--b's forward queues by class, b--c's forward
    holds less, and c--d's forward has no classes."""
    deep, shallow = classed(sample_interval_ns=1), classed(sample_interval_ns=1)
    for i in range(6):
        deep.offer(1000, False, t0 + i, dscp=10 if i % 2 else 26)
        shallow.offer(200, False, t0 + i, dscp=10)
    plain = LinkDirection(Shape(rate_bps=RATE), rate_in_engine=True, sample_interval_ns=1)
    plain.offer(1000, False, t0)
    return json.loads(json.dumps({"links": {
        "a--b": {"forward": deep.statistics().to_dict()},
        "b--c": {"forward": shallow.statistics().to_dict()},
        "c--d": {"forward": plain.statistics().to_dict()},
    }}))


def test_link_series_on_the_run_clock_deepest_first_through_the_run_delta() -> None:
    t0 = 5_000_000
    after = engine_links(t0)
    before = {"links": {"a--b": {"forward": {"packets_in": 2}}}}
    delta = link_delta(before, after)
    assert delta["links"]["a--b"]["forward"]["class_samples"] == \
        after["links"]["a--b"]["forward"]["class_samples"]
    (rec,) = [r for r in parse_links(delta) if r.id == "a--b"]
    assert rec.forward is not None
    assert rec.forward.class_columns == ("kv", "bulk")
    dirs, hidden, classed_dirs = link_class_queue_series(delta, t0 - 1000, 10.0, top=1)
    assert (hidden, classed_dirs) == (1, 2)
    (d,) = dirs
    assert (d.link, d.direction, d.label) == ("a--b", "forward", "a -> b")
    assert d.peak_bytes == max(c["queue_bytes_max"]
                               for c in after["links"]["a--b"]["forward"]["classes"])
    np.testing.assert_allclose(d.t_ns, (np.arange(6) + 1000) / 10.0)  # fabric ns, run's clock
    assert d.classes["kv"].max() > 0
    assert d.classes["bulk"].max() > 0
    both, _, _ = link_class_queue_series(delta, t0, 1.0)
    assert [x.link for x in both] == ["a--b", "b--c"]


def test_write_class_plots_draws_the_link_class_queues(tmp_path: Path) -> None:
    summary = {"time_scale": 1.0, "meta": {"classes": ["kv", "bulk"], "started_ns": 1,
                                           "backend": "userspace",
                                           "events": [{"applied_ns": 3, "label": "cut"}]}}
    made = write_class_plots(tmp_path, summary, [], links=engine_links(0))
    assert [p.name for p in made] == [CLASS_PLOTS[1]]  # no chunks: no goodput plot
    assert made[0].stat().st_size > 5000


def test_class_queues_says_why_it_has_no_link(tmp_path: Path) -> None:
    netem = {"links": {"a--b": {"forward": {"packets_out": 10, "drops_queue": 1}}}}
    summary = {"time_scale": 1.0, "meta": {"classes": ["kv", "bulk"], "backend": "netem"}}
    (made,) = write_class_plots(tmp_path, summary, [], links=netem)
    assert made.name == CLASS_PLOTS[1]
    assert made.stat().st_size > 5000
    assert "netem backend takes no queue samples" in no_link_class_queues("netem", 0)
    assert "shapes the rate itself" in no_link_class_queues("userspace", 0)
    assert "held a byte" in no_link_class_queues("userspace", 2)
    # one class only: no per-class plots at all
    one = {"time_scale": 1.0, "meta": {"classes": ["kv"]}}
    assert write_class_plots(tmp_path / "one", one, [], links=netem) == []


def test_the_run_directory_keeps_the_class_samples(tmp_path: Path) -> None:
    from fabric.metrics.output import write_run

    links = engine_links(0)
    write_run(tmp_path, {"time_scale": 1.0, "meta": {}}, [], [], links)
    saved = json.loads((tmp_path / "links.json").read_text())
    again, _, _ = link_class_queue_series(saved, 0, 1.0)
    first, _, _ = link_class_queue_series(links, 0, 1.0)
    assert [d.label for d in again] == [d.label for d in first]
    for a, b in zip(again, first, strict=True):
        assert a.peak_bytes == b.peak_bytes
        np.testing.assert_array_equal(a.classes["bulk"], b.classes["bulk"])
