"""The `events:` timeline without a fabric: parsing and its errors at FILE:LINE, flaps and
ramps expanded, contradictions refused, routes recomputed without failed links (kernel and
RoCE switch tables), and the recovery figures read from records."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from fabric.errors import TopologyError
from fabric.metrics.records import ChunkRecord, TransferRecord
from fabric.plan import plan_fabric, switch_table
from fabric.topology import parse_topology
from fabric.topology.events import links_down

BASE = """
name: ev
generate:
  - leaf_spine:
      spines: 2
      leaves: 2
      hosts_per_leaf: 1
      uplink: {rate: 1Gbps, delay: 10us}
      downlink: {rate: 1Gbps, delay: 10us}
"""


def topo(events: str, base: str = BASE):
    return parse_topology(textwrap.dedent(base) + textwrap.dedent(events))


def test_a_timeline_parses_into_steps_in_time_order():
    t = topo("""
    events:
      detect: 50us
      timeline:
        - {at: 3ms, up: [leaf-0, spine-0]}
        - {at: 1ms, down: [leaf-0, spine-0]}
        - {at: 2ms, set: [leaf-1, spine-1], rate: 100Mbps, loss: 1%, direction: a-b}
        - {at: 4ms, node_down: spine-1}
        - {at: 5ms, node_up: spine-1}
    """)
    ev = t.events
    assert ev.detect_ns == 50_000
    assert [(s.at_ns, s.action) for s in ev.steps] == [
        (1_000_000, "down"), (2_000_000, "set"), (3_000_000, "up"), (4_000_000, "node_down"),
        (5_000_000, "node_up")]
    s = ev.steps[1]
    assert s.link == ("leaf-1", "spine-1")
    assert s.direction == "a-b"
    assert dict(s.props) == {"rate_bps": 100_000_000, "loss_ppm": 10_000}
    assert ev.steps[0].line == 15  # the file's line of the entry


def test_a_flap_is_down_for_the_first_half_of_each_period():
    ev = topo("""
    events:
      timeline:
        - {at: 1ms, flap: [leaf-0, spine-1], period: 2ms, count: 3}
    """).events
    assert [(s.at_ns // 1000, s.action) for s in ev.steps] == [
        (1000, "down"), (2000, "up"), (3000, "down"), (4000, "up"), (5000, "down"),
        (6000, "up")]


def test_a_ramp_steps_from_the_files_value_to_the_target():
    ev = topo("""
    events:
      timeline:
        - {at: 1ms, ramp: [leaf-0, spine-0], rate: 200Mbps, over: 4ms, steps: 4}
    """).events
    assert [(s.at_ns // 1000, dict(s.props)["rate_bps"]) for s in ev.steps] == [
        (2000, 800_000_000), (3000, 600_000_000), (4000, 400_000_000), (5000, 200_000_000)]


def test_a_ramp_starts_from_the_value_in_force_then():
    """After a step down (and after a trace row), a ramp climbs from where the link is, not
    from the file's value; a set on the other direction does not count."""
    ev = topo("""
    events:
      timeline:
        - {at: 6ms, ramp: [leaf-0, spine-0], rate: 600Mbps, over: 2ms, steps: 2}
        - {at: 1ms, set: [leaf-0, spine-0], rate: 200Mbps}
        - {at: 2ms, set: [leaf-0, spine-0], rate: 50Mbps, direction: b-a}
        - {at: 10ms, ramp: [leaf-0, spine-0], delay: 30us, over: 2ms, steps: 2}
    """).events
    rates = [(s.at_ns // 1000, dict(s.props).get("rate_bps")) for s in ev.steps
             if s.label.startswith("ramp") and "rate_bps" in dict(s.props)]
    assert rates == [(7000, 400_000_000), (8000, 600_000_000)]
    # a ramp of a property nothing changed starts from the file's (10 us)
    delays = [dict(s.props)["delay_ns"] for s in ev.steps if "delay_ns" in dict(s.props)]
    assert delays == [20_000, 30_000]


@pytest.mark.parametrize(("events", "line", "message"), [
    ("- {at: 1ms, down: [leaf-0, spine-9]}", 13, r"unknown node 'spine-9'"),
    ("- {at: 1ms, down: [leaf-0, leaf-1]}", 13,
     r"no link joins leaf-0 and leaf-1 \(links of leaf-0: leaf-0--host-0, leaf-0--spine-0"),
    ("- {at: 1ms, node_down: spine-7}", 13, r"unknown node 'spine-7'"),
    ("- {at: 1ms, down: [leaf-0, spine-0], up: [leaf-0, spine-0]}", 13,
     r"give exactly one action of .* \(got down and up\)"),
    ("- {down: [leaf-0, spine-0]}", 13, r"missing required key 'at'"),
    ("- {at: 1ms, down: [leaf-0, spine-0], rate: 1Gbps}", 13, r"'rate' does not apply to down"),
    ("- {at: 1ms, flap: [leaf-0, spine-0]}", 13, r"flap needs a period"),
    ("- {at: 1ms, set: [leaf-0, spine-0]}", 13, r"set changes nothing"),
    ("- {at: 1ms, ramp: [leaf-0, spine-0], rate: 1Mbps}", 13, r"ramp needs `over`"),
    ("- {at: 1ms, set: [leaf-0, spine-0], rate: fast}", 13, r"rate: bad rate 'fast'"),
    ("- {at: 1ms, down: [leaf-0, spine-0]}\n        - {at: 2ms, down: [spine-0, leaf-0]}", 14,
     r"down leaf-0--spine-0 at 2ms: the link spine-0--leaf-0 is already down then|"
     r"already down then"),
    ("- {at: 1ms, up: [leaf-0, spine-0]}", 13, r"is not down then"),
    ("- {at: 1ms, node_up: spine-0}", 13, r"node spine-0 is not down then"),
    ("- {at: 1ms, node_down: spine-0}\n        - {at: 2ms, down: [leaf-0, spine-0]}", 14,
     r"spine-0 is down then \(node_down\): bring the node up first"),
    ("- {at: 1ms, flap: [leaf-0, spine-0], period: 2ms, count: 2}\n"
     "        - {at: 2500us, down: [leaf-0, spine-0]}", 13,
     r"flap leaf-0--spine-0 at 3 ms: the link leaf-0--spine-0 is already down then"),
])
def test_bad_events_name_the_file_line_and_key(events, line, message):
    text = f"""
    events:
      timeline:
        {events}
    """
    with pytest.raises(TopologyError, match=message) as info:
        topo(text)
    assert info.value.line == line, str(info.value)
    assert "events" in (info.value.key or "")


def test_an_event_after_the_timeout_is_refused_before_the_run(tmp_path: Path):
    from fabric.errors import FabricError
    from fabric.run.events import timeline_for

    t = topo("""
    time_scale: 1000
    events:
      timeline:
        - {at: 400ms, down: [leaf-0, spine-0]}
    """)
    with pytest.raises(FabricError, match=r":14: events.timeline: down leaf-0--spine-0 at "
                                          r"400 ms \(fabric time; 400 s on this host\) comes "
                                          r"after the run's timeout \(300 s\)"):
        timeline_for(None, t, plan_fabric(t, backend="userspace"), 300.0)  # type: ignore[arg-type]


def test_links_down_counts_a_downed_nodes_links():
    t = topo("""
    events:
      timeline:
        - {at: 1ms, down: [leaf-0, spine-0]}
        - {at: 2ms, node_down: spine-1}
        - {at: 3ms, up: [leaf-0, spine-0]}
    """)
    steps = t.events.steps
    assert links_down(steps[:1], t.links) == {frozenset(("leaf-0", "spine-0"))}
    assert links_down(steps[:2], t.links) == {frozenset(("leaf-0", "spine-0")),
                                              frozenset(("leaf-0", "spine-1")),
                                              frozenset(("leaf-1", "spine-1"))}
    assert links_down(steps, t.links) == {frozenset(("leaf-0", "spine-1")),
                                          frozenset(("leaf-1", "spine-1"))}


def test_routes_without_a_failed_uplink_avoid_it_and_a_switch_table_drops_its_port():
    from fabric.net.routing import routes_without

    t = topo("""
    switches: {buffer: 1MiB}
    """)
    plan = plan_fabric(t, backend="userspace")
    leaf0 = plan.nodes["leaf-0"].netns
    host1 = plan.nodes["host-1"].loopback
    full = {r.dst: r for r in plan.routes if r.netns == leaf0}
    assert len(full[f"{host1}/32"].nexthops) == 2  # ECMP over both spines
    new = routes_without(plan, [frozenset(("leaf-0", "spine-0"))])
    cut = {r.dst: r for r in new if r.netns == leaf0}
    assert len(cut[f"{host1}/32"].nexthops) == 1
    spine1_side = [lp for lp in plan.links if {lp.a.node, lp.b.node} == {"leaf-0", "spine-1"}][0]
    gw = spine1_side.b.address if spine1_side.a.node == "leaf-0" else spine1_side.a.address
    assert cut[f"{host1}/32"].nexthops[0][0] == gw
    # the RoCE switch leaf-0 hashes host-1 over both uplink ports, then over one
    before = dict(switch_table("leaf-0", plan, plan.routes))[host1]
    after = dict(switch_table("leaf-0", plan, new))[host1]
    assert len(before) == 2
    assert len(after) == 1
    assert set(after) < set(before)  # ports keep their numbers
    # a spine cut off entirely: nothing routes through it
    iso = routes_without(plan, [frozenset(("leaf-0", "spine-0")),
                                frozenset(("leaf-1", "spine-0"))])
    assert not [r for r in iso if r.netns == plan.nodes["spine-0"].netns]


def test_recovery_is_the_wait_for_the_first_chunk_after_the_failure():
    from fabric.run.events import recovery

    t = topo("""
    events:
      timeline:
        - {at: 1ms, down: [leaf-0, spine-0]}
    """)
    t0, fail = 1_000_000_000, 1_001_000_000
    # host-0 -> host-1 crosses a spine: one of its shortest paths takes leaf-0--spine-0
    tr = [TransferRecord("kv", "default", "one-to-one", "host-0", "host-1", 0, 30, 3,
                         t0, t0 + 100, fail + 4_000_000, "ok")]
    chunks = [ChunkRecord("kv", "default", "one-to-one", 0, i, 10, t0, t0 + 100, t, True)
              for i, t in enumerate((fail - 500_000, fail + 3_000_000, fail + 4_000_000))]
    log = [{"action": "down", "label": "down leaf-0--spine-0", "line": 12, "at_ns": 1_000_000,
            "applied_ns": fail, "link": ["leaf-0", "spine-0"], "node": None}]
    rec = recovery(log, t, tr, chunks, ["host-1"] * 3)
    (ev,) = rec["events"]
    assert ev["transfers_in_flight"] == 1
    assert ev["transfers_touched"] == 1
    assert ev["recovery_ns"] == 3_000_000
    assert rec["max_ns"] == 3_000_000
    assert ev["fct_touched_p50_ns"] == pytest.approx(5_000_000)


def test_exports_name_the_events_and_expectations_they_cannot_carry():
    from fabric.export import ExportOptions, export_topology
    from fabric.kinds import load

    t = load(Path(__file__).resolve().parent.parent / "topologies" / "failover.yaml")
    for target in ("containerlab", "hpcc-ns3"):
        warnings = export_topology(t, target, ExportOptions()).warnings
        assert any(w.startswith("events: (2 steps) not exported") for w in warnings), target
        assert any(w.startswith(f"expect: ({len(t.expect)} lines)") for w in warnings), target


def test_kinds_without_a_timeline_refuse_the_section(tmp_path: Path):
    from fabric.kinds import load, select

    path = tmp_path / "lpu.yaml"
    path.write_text(textwrap.dedent("""
    name: lpu
    time_scale: 1000
    lpu:
      shape: ring
      count: 4
      link: {rate: 112Gbps, delay: 200ns}
      graph: {kind: tp-allreduce, bytes: 64KiB}
    events:
      timeline:
        - {at: 1ms, down: [lpu-0, lpu-1]}
    """))
    with pytest.raises(TopologyError, match=r"lpu.yaml:10: events: this file runs as an LPU "
                                            r".*applies no event timeline \(traffic runs, "
                                            r"RoCE comparisons and memory runs do\)"):
        select(load(path), {})


def _with_trace(tmp_path: Path, csv_text: str, extra: str = "") -> Path:
    (tmp_path / "dci.csv").write_text(csv_text)
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(BASE) + textwrap.dedent(f"""
    events:
      timeline:
        - {{at: 1ms, trace: [leaf-0, spine-0], file: dci.csv, direction: a-b{extra}}}
    """))
    return path


def test_a_capacity_trace_becomes_rate_steps_from_the_event_time(tmp_path):
    from fabric.topology import load_topology

    t = load_topology(_with_trace(tmp_path, "time,rate\n0ms,1Gbps\n# dip\n2ms,100Mbps\n"
                                            "2.5ms,800Mbps\n"))
    steps = t.events.steps
    assert [(s.at_ns, dict(s.props)["rate_bps"], s.direction) for s in steps] == [
        (1_000_000, 1_000_000_000, "a-b"), (3_000_000, 100_000_000, "a-b"),
        (3_500_000, 800_000_000, "a-b")]
    assert steps[0].label == "trace leaf-0--spine-0 (dci.csv)"


@pytest.mark.parametrize(("csv_text", "message"), [
    ("0ms,1Gbps\n1ms,fast\n", r"dci.csv:2: rate: bad rate 'fast'"),
    ("0ms,1Gbps\n1ms\n", r"dci.csv:2: expected two fields, time,rate"),
    ("0ms,1Gbps\n2ms,1Gbps\n1ms,2Gbps\n", r"dci.csv:3: time 1 ms does not come after"),
    ("0ms,1Gbps\nlater,1Gbps\n", r"dci.csv:2: time: "),
    ("time,rate\n", r"has no time,rate rows"),
])
def test_a_bad_trace_names_its_own_file_and_line(tmp_path, csv_text, message):
    from fabric.topology import load_topology

    with pytest.raises(TopologyError, match=message) as info:
        load_topology(_with_trace(tmp_path, csv_text))
    assert "events.timeline[0].file" in str(info.value)


def test_a_missing_trace_is_named(tmp_path):
    from fabric.topology import load_topology

    path = _with_trace(tmp_path, "0ms,1Gbps\n")
    (tmp_path / "dci.csv").unlink()
    with pytest.raises(TopologyError, match=r"t.yaml:13: events.timeline\[0\].file: cannot "
                                            r"read the trace .*dci.csv: No such file"):
        load_topology(path)


def test_event_marks_come_from_the_applied_log_and_the_plots_take_them(tmp_path):
    from fabric.metrics.plots import event_marks, goodput_over_time

    summary = {"meta": {"events": [
        {"action": "down", "label": "down a--r1", "applied_ns": 5_000_000},
        {"action": "converge", "after": "down a--r1", "applied_ns": 6_000_000}]}}
    marks = event_marks(summary)
    assert marks == [(5_000_000, "down a--r1"), (6_000_000, "converge")]
    assert event_marks({}) == []
    chunks = [ChunkRecord("f", "kv", "bulk", 0, i, 1000, i * 1_000_000, i * 1_000_000 + 10,
                          i * 1_000_000 + 500_000, True) for i in range(20)]
    made = goodput_over_time(tmp_path / "g.png", chunks, 1.0, marks=marks)
    assert made is not None
    assert made.stat().st_size > 0


def test_recovery_skips_chunks_already_past_the_failure():
    """A queue beyond the failed link still delivers a chunk just after the failure; the
    stall that counts is the one before routing's reaction, not that chunk."""
    from fabric.run.events import recovery

    t = topo("""
    events:
      detect: 8ms
      timeline:
        - {at: 1ms, down: [leaf-0, spine-0]}
    """)
    t0, fail, ms = 1_000_000_000, 1_001_000_000, 1_000_000
    tr = [TransferRecord("kv", "default", "one-to-one", "host-0", "host-1", 0, 40, 4,
                         t0, t0 + 100, fail + 12 * ms, "ok")]
    done = (fail - ms, fail + ms // 2, fail + 9 * ms, fail + 12 * ms)
    chunks = [ChunkRecord("kv", "default", "one-to-one", 0, i, 10, t0, t0 + 100, x, True)
              for i, x in enumerate(done)]
    log = [{"action": "down", "label": "down leaf-0--spine-0", "line": 13, "at_ns": ms,
            "applied_ns": fail, "link": ["leaf-0", "spine-0"], "node": None},
           {"action": "converge", "after": "down leaf-0--spine-0", "line": 13,
            "at_ns": 9 * ms, "applied_ns": fail + 8 * ms}]
    rec = recovery(log, t, tr, chunks, ["host-1"] * 4)
    assert rec["events"][0]["recovery_ns"] == 9 * ms


def test_recovery_reports_chunk_latency_and_the_queue_the_failure_piled_up():
    from fabric.run.events import recovery

    t = topo("""
    events:
      timeline:
        - {at: 1ms, down: [leaf-0, spine-0]}
    """)
    ms = 1_000_000
    fail = 1_001 * ms
    tr = [TransferRecord("kv", "default", "one-to-one", "host-0", "host-1", 0, 20, 2,
                         fail - ms, fail - ms + 100, fail + 5 * ms, "ok")]
    chunks = [ChunkRecord("kv", "default", "one-to-one", 0, 0, 10, fail - ms, fail - ms + 10,
                          fail - ms // 2, True),
              ChunkRecord("kv", "default", "one-to-one", 0, 1, 10, fail - ms // 2,
                          fail + 4 * ms, fail + 5 * ms, True)]
    links = {"links": {"leaf-0--spine-1": {
        "forward": {"samples": [[fail - ms, 1000], [fail + ms, 90_000], [fail + 9 * ms, 5]],
                    "drops_down": 0},
        "reverse": {"samples": []}},
        "leaf-0--spine-0": {"forward": {"drops_down": 7, "bytes_dropped_down": 7000,
                                        "bytes_lost_in_flight": 4000},
                            "reverse": {"drops_down": 3, "bytes_dropped_down": 300,
                                        "bytes_lost_in_flight": 100}}}}
    log = [{"action": "down", "label": "down leaf-0--spine-0", "line": 13, "at_ns": ms,
            "applied_ns": fail, "link": ["leaf-0", "spine-0"], "node": None},
           {"action": "converge", "after": "down leaf-0--spine-0", "line": 13,
            "at_ns": 2 * ms, "applied_ns": fail + 2 * ms}]
    (ev,) = recovery(log, t, tr, chunks, ["host-1", "host-1"], links)["events"]
    assert ev["chunk_touched_p99_ns"] == pytest.approx(
        np.percentile([ms // 2, 5 * ms + ms // 2], 99))
    assert ev["queue_max_bytes"] == 90_000
    assert ev["queue_max_link"] == "leaf-0--spine-1 ->"
    assert ev["queue_before_max_bytes"] == 1000
    assert ev["packets_dropped_down"] == 10
    assert (ev["bytes_dropped_down"], ev["bytes_lost_in_flight"]) == (7300, 4100)
    from fabric.run.events import render_events

    line = render_events(log[:1], {"events": [ev]}, 1.0, fail - ms)[-1]
    assert ("the link dropped 10 packets while down (7.129 KiB, of which 4.004 KiB in flight "
            "as it failed)") in line


def test_a_step_on_a_roce_switch_ports_own_settings_is_refused_at_its_line(tmp_path):
    from fabric.kinds import load, select

    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(BASE) + textwrap.dedent("""
    switches: {buffer: 1MiB}
    traffic:
      flows:
        - {pattern: bulk, from: host-0, to: host-1, size: 1MiB}
    events:
      timeline:
        - {at: 1ms, set: [host-0, leaf-0], rate: 100Mbps, direction: a-b}
        - {at: 2ms, set: [leaf-0, spine-0], rate: 100Mbps}
    """))
    # host-0's own egress is fine; leaf-0's and spine-0's ports are the switches'
    with pytest.raises(TopologyError, match=r"t.yaml:18: events.timeline: set leaf-0--spine-0: "
                                            r"the rate of RoCE switch leaf-0's egress"):
        select(load(path), {})


def test_a_rate_the_file_leaves_unset_cannot_be_changed_as_it_could_not_be_put_back():
    base = BASE.replace("downlink: {rate: 1Gbps, delay: 10us}", "downlink: {delay: 10us}")
    with pytest.raises(TopologyError, match=r":13: events.timeline: set leaf-0--host-0: "
                                            r"leaf-0->host-0 has no rate in the file"):
        topo("""
        events:
          timeline:
            - {at: 1ms, set: [leaf-0, host-0], rate: 10Mbps}
        """, base)
    with pytest.raises(TopologyError, match=r"has no ecn threshold in the file"):
        topo("""
        events:
          timeline:
            - {at: 1ms, set: [leaf-0, spine-0], ecn: 10KB}
        """)


def test_switch_spikes_count_the_pauses_and_queues_in_each_failures_window():
    from fabric.run.events import switch_spikes

    ms = 1_000_000
    started = 5 * ms
    log = [{"action": "down", "label": "down leaf-0--spine-0", "line": 13, "at_ns": 4 * ms,
            "applied_ns": started + 4 * ms},
           {"action": "converge", "after": "down leaf-0--spine-0", "line": 13,
            "at_ns": 5 * ms, "applied_ns": started + 5 * ms}]
    rec = {"events": [{"event": "down leaf-0--spine-0", "recovery_ns": 3 * ms,
                       "never_recovered": [], "transfers_touched": 1,
                       "transfers_in_flight": 1}]}
    # 2 pauses in the 4 ms before, 5 in the failure's window (4 ms .. 7 ms), 1 after
    pauses = {"leaf-1": [(1 * ms, "spine-0"), (3 * ms, "spine-0"), (4.5 * ms, "spine-1"),
                         (5 * ms, "spine-1"), (6 * ms, "spine-1"), (6.5 * ms, "host-0"),
                         (7 * ms, "spine-1"), (9 * ms, "spine-1")]}
    samples = {"leaf-1": [[2 * ms, [100, 2000]], [5 * ms, [90_000, 10]], [8 * ms, [1, 1]]],
               "spine-1": [[6 * ms, [5000]]]}
    switch_spikes(rec, log, started, 1.0, samples, pauses)
    (ev,) = rec["events"]
    assert ev["window_ns"] == 3 * ms
    assert ev["pauses_sent"] == 5
    assert ev["pauses_before_same_span"] == pytest.approx(2 * 3 / 4)
    assert ev["pauses_by_port"] == {"leaf-1:spine-1": 4, "leaf-1:host-0": 1}
    assert (ev["switch_queue_max_bytes"], ev["switch_queue_max_switch"]) == (90_000, "leaf-1")
    assert ev["switch_queue_before_max_bytes"] == 2000
    from fabric.run.events import render_events

    line = render_events([], rec, 1.0, 0)[-1]
    assert ("RoCE switches sent 5 PFC pauses in its 3 ms (as long before it: 1.5) most at "
            "leaf-1:spine-1 (4), leaf-1:host-0 (1)") in line
    assert "deepest switch queue 87.891 KiB in leaf-1 (1.953 KiB before)" in line


def test_switch_spikes_pair_a_flaps_failures_by_order_not_by_their_shared_label():
    from fabric.run.events import switch_spikes

    ms = 1_000_000
    log = [{"action": "down", "label": "flap a--r1", "line": 9, "applied_ns": 1 * ms},
           {"action": "up", "label": "flap a--r1", "line": 9, "applied_ns": 2 * ms},
           {"action": "down", "label": "flap a--r1", "line": 9, "applied_ns": 3 * ms},
           {"action": "up", "label": "flap a--r1", "line": 9, "applied_ns": 4 * ms}]
    rec = {"events": [{"event": "flap a--r1", "recovery_ns": ms // 2},
                      {"event": "flap a--r1", "recovery_ns": ms // 2}]}
    pauses = {"sw": [(1.2 * ms, "p1"), (3.1 * ms, "p1"), (3.2 * ms, "p1")]}
    switch_spikes(rec, log, 0, 1.0, {}, pauses)
    assert [e["pauses_sent"] for e in rec["events"]] == [1, 2]
