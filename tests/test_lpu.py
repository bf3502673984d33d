"""The lpu section, per-node plans (pure), and a scheduled vs dynamic run for real (root)."""

from __future__ import annotations

import pytest

from fabric.errors import TopologyError
from fabric.net import lifecycle
from fabric.net.kernel import Kernel
from fabric.plan import plan_fabric
from fabric.run.lpu import build_graph, execute, lpu_topology, node_plans
from fabric.schedule import compile_plan, verify
from fabric.topology import parse_topology
from fabric.topology.lpu import LPU_MTU, lpu_links

RING = """\
name: {name}
time_scale: 1000
lpu:
  shape: ring
  count: 3
  link: {{rate: 112Gbps, delay: 200ns}}
  graph: {{kind: tp-allreduce, bytes: 120KiB}}
  batch_vectors: 64
"""


def test_lpu_section_makes_nodes_links_and_spec():
    topo = parse_topology(RING.format(name="r"))
    assert list(topo.nodes) == ["lpu-0", "lpu-1", "lpu-2"]
    assert {n.role for n in topo.nodes.values()} == {"lpu"}
    assert [(link.a, link.b) for link in topo.links] == [("lpu-0", "lpu-1"), ("lpu-1", "lpu-2"),
                                                         ("lpu-2", "lpu-0")]
    assert topo.links[0].forward.mtu == LPU_MTU
    spec = topo.lpu
    assert (spec.graph, spec.graph_args, spec.batch_vectors) == ("tp-allreduce",
                                                                 {"bytes": 120 * 1024}, 64)
    assert spec.drift_ppm == (0.0,)


def test_shapes():
    names = [f"n{i}" for i in range(6)]
    assert len(lpu_links("mesh", names[:4], 1, 4)) == 6
    assert len(lpu_links("ring", names, 1, 6)) == 6
    assert len(lpu_links("ring", names[:2], 1, 2)) == 1
    torus = lpu_links("torus", names, 2, 3)
    # 2 x 3 torus: each row a ring of 3 (3 links x 2 rows), columns of 2 (one link each, x 3)
    assert len(torus) == 9


@pytest.mark.parametrize(("edit", "message"), [
    (("shape: ring", "shape: star"),
     "t.yaml:4: lpu.shape: unknown shape 'star' (one of: mesh, ring, torus)"),
    (("count: 3", "count: 1"), "t.yaml:5: lpu.count: count 1 is outside 2..256"),
    (("kind: tp-allreduce", "kind: allgather"), "t.yaml:7: lpu.graph.kind: unknown graph "
     "'allgather' (one of: tp-allreduce, pipeline, attention-ffn)"),
    (("kind: tp-allreduce, bytes: 120KiB", "kind: pipeline, bytes: 1KiB"),
     "t.yaml:7: lpu.graph: a pipeline graph needs `microbatches:`"),
    (("batch_vectors: 64", "batch_vectors: 1000"),
     "t.yaml:4: lpu: a batch of 1000 x 320 B does not fit one datagram"),
])
def test_lpu_errors(edit, message):
    text = RING.format(name="t").replace(*edit)
    with pytest.raises(TopologyError) as err:
        parse_topology(text, source="t.yaml")
    assert str(err.value).startswith(message)


def test_node_plans_route_and_order():
    topo = parse_topology(RING.format(name="r"))
    graph = build_graph(topo.lpu)
    ltopo = lpu_topology(topo)
    plan = compile_plan(graph, ltopo, vector_bytes=320, batch_vectors=64, guard_ns=None)
    verify(plan, ltopo, graph)

    class State:
        nodes = {n: {"loopback": f"198.19.0.{i + 1}"} for i, n in enumerate(topo.nodes)}

    plans = node_plans("scheduled", plan, graph, ltopo, topo.lpu, State(), 1000.0, 0.0)
    p0 = plans["lpu-0"]
    assert p0["next_hop"] == {"lpu-1": "lpu-1", "lpu-2": "lpu-2"}  # a 3-ring: all neighbours
    departs = [s[5] for s in p0["sends"]]
    assert departs == sorted(departs)
    # a 64-vector batch at 112 Gbit/s holds a link for 1463 ns, 1000x on the host
    assert set(p0["slot_ns"].values()) == {1463 * 1000}
    total = sum(sum(p["expects"].values()) for p in plans.values())
    assert total == len({(s.transfer, s.batch) for s in plan.sends})


@pytest.mark.netns
def test_scheduled_and_dynamic_runs_deliver_every_batch(fabric_name, state_dir):
    topo = parse_topology(RING.format(name=fabric_name))
    state = lifecycle.bring_up(plan_fabric(topo, backend="userspace"))
    try:
        graph = build_graph(topo.lpu)
        ltopo = lpu_topology(topo)
        plan = compile_plan(graph, ltopo, vector_bytes=320, batch_vectors=64, guard_ns=None)
        sched = execute(state, topo, plan, graph, ltopo, "scheduled", 0.0, 10_000)
        dyn = execute(state, topo, plan, graph, ltopo, "dynamic", 0.0, 10_000)
    finally:
        lifecycle.remove_fabric(state)
    for run in (sched, dyn):
        assert run.missing == 0
        assert run.batches == len({(s.transfer, s.batch) for s in plan.sends})
        # fabric time: the plan's makespan, give or take the host's noise (ms on the host)
        assert 0.8 * plan.makespan_ns <= run.completion_ns <= 3 * plan.makespan_ns
    # a scheduled batch arrives close to plan: within a few host timer ticks (fabric us)
    assert abs(sched.lateness_ns["p50"]) < 5_000
    # docs/lpu.md: the scheduled run's jitter is below the dynamic run's (here, three runs on
    # 2026-12-06: sd 388-478 ns scheduled against 1217-1261 ns dynamic)
    assert sched.jitter_std_ns < dyn.jitter_std_ns
    assert [ns for ns in Kernel.list_netns() if ns.startswith(f"fab.{fabric_name}.")] == []


@pytest.mark.netns
def test_fabric_run_of_another_kind_says_how_late_the_link_engine_was(fabric_name, state_dir,
                                                                      tmp_path):
    """A kind whose report does not carry the link engine's lateness (an LPU run here) gets
    `fabric run`'s line after it, kept beside its results for `fabric report`; printed once."""
    import json

    from click.testing import CliRunner

    from fabric.cli import cli

    path = tmp_path / "ring.yaml"
    path.write_text(RING.format(name=fabric_name))
    out = tmp_path / "out"
    run = CliRunner().invoke(cli, ["run", str(path), "--links", "userspace", "--out", str(out)])
    assert run.exit_code == 0, run.output
    lines = [x for x in run.stdout.splitlines() if x.startswith("link engine: ")]
    assert len(lines) == 1, run.stdout
    kept = json.loads((out / "link_engine.json").read_text())
    assert kept["releases"] > 0
    assert kept["p50_under_us"] <= kept["p99_under_us"] <= kept["max_under_us"]
    assert lines[0].startswith(f"link engine: {kept['releases']:,} releases during the run")
    report = CliRunner().invoke(cli, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert report.stdout.splitlines()[-1] == lines[0]
    assert [ns for ns in Kernel.list_netns() if ns.startswith(f"fab.{fabric_name}.")] == []
