"""The LPU plan compiler, its independent verifier, topologies, graph generators and clocks."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.errors import FabricError
from fabric.schedule import (
    DriftingClock,
    LpuLink,
    LpuTopology,
    Plan,
    PlanConflict,
    Send,
    Transfer,
    TransferGraph,
    attention_ffn,
    compile_plan,
    gantt_png,
    lower_bound_ns,
    mesh,
    pipeline,
    plan_table,
    required_guard_ns,
    ring,
    slot_ns_for,
    torus,
    tp_allreduce,
    verify,
)

RATE = 112_000_000_000  # one Groq C2C link, seed 004
DELAY = 100
SLOT = 23  # ceil(320 B * 8 / 112 Gbit/s) = ceil(22.857) ns


def names(n: int) -> list[str]:
    return [f"lpu-{i}" for i in range(n)]


# ---- graphs ----------------------------------------------------------------------------


def test_tp_allreduce_shape():
    g = tp_allreduce(names(4), 4000)
    assert len(g.transfers) == 2 * 3 * 4
    assert {t.nbytes for t in g.transfers} == {1000}
    by_id = {t.id: t for t in g.transfers}
    for t in g.transfers:
        step, i = divmod(t.id, 4)
        assert (t.src, t.dst) == (f"lpu-{i}", f"lpu-{(i + 1) % 4}")
        if step == 0:
            assert t.deps == ()
        else:
            (d,) = t.deps
            assert d // 4 == step - 1
            assert by_id[d].dst == t.src  # the chunk that just arrived at the sender
    assert tp_allreduce(names(3), 10).transfers[0].nbytes == 4  # ceil(10 / 3)


def test_pipeline_shape():
    g = pipeline(names(4), 640, microbatches=5)
    assert len(g.transfers) == 3 * 5
    by_id = {t.id: t for t in g.transfers}
    for t in g.transfers:
        m, i = divmod(t.id, 3)
        assert (t.src, t.dst, t.nbytes) == (f"lpu-{i}", f"lpu-{i + 1}", 640)
        if i == 0:
            assert t.deps == ()
        else:
            assert t.deps == (t.id - 1,)
            assert by_id[t.id - 1].dst == t.src
            assert by_id[t.id - 1].id // 3 == m


def test_attention_ffn_shape():
    attn, ffn = ["lpu-0", "lpu-1"], ["lpu-2", "lpu-3", "lpu-4"]
    g = attention_ffn(attn, ffn, tokens=3, nbytes_per_token=960)
    assert len(g.transfers) == 3 * 2 * 2 * 3
    by_id = {t.id: t for t in g.transfers}
    dispatch = [t for t in g.transfers if t.src in attn]
    ret = [t for t in g.transfers if t.src in ffn]
    assert len(dispatch) == len(ret) == 18
    for t in ret:  # an FFN node answers once it has the whole token from every attention node
        assert sorted(by_id[d].src for d in t.deps) == attn
        assert {by_id[d].dst for d in t.deps} == {t.src}
    first = [t for t in dispatch if t.id < 12]
    assert all(t.deps == () for t in first)
    for t in dispatch:
        if t.id >= 12:  # token t+1 waits for every FFN node's return of token t
            assert sorted(by_id[d].src for d in t.deps) == ffn
            assert {by_id[d].dst for d in t.deps} == {t.src}
            assert all(by_id[d].id // 12 == t.id // 12 - 1 for d in t.deps)


@pytest.mark.parametrize(("transfers", "match"), [
    ([Transfer(0, "a", "x", 10)], r"transfer 0 \(a -> x\): unknown node 'x'"),
    ([Transfer(0, "a", "a", 10)], "transfer 0 sends from a to itself"),
    ([Transfer(0, "a", "b", 10, (7,))], "transfer 0 depends on unknown transfer 7"),
    ([Transfer(0, "a", "b", 10, (1,)), Transfer(1, "b", "a", 10, (0,))],
     r"transfer 0 is in a dependency cycle \(0 -> 1 -> 0\)"),
    ([Transfer(0, "a", "b", 10), Transfer(0, "b", "a", 10)], "transfer id 0 is used twice"),
])
def test_graph_validation(transfers, match):
    with pytest.raises(FabricError, match=match):
        TransferGraph("g", ("a", "b"), tuple(transfers))


def test_transfer_needs_bytes():
    with pytest.raises(FabricError, match="transfer 3: nbytes must be a positive integer"):
        Transfer(3, "a", "b", 0)


def test_topological_order():
    g = TransferGraph("g", ("a", "b"), (Transfer(2, "a", "b", 1), Transfer(1, "b", "a", 1, (2,)),
                                         Transfer(0, "a", "b", 1, (1,))))
    assert g.topological_order() == (2, 1, 0)


# ---- topologies ------------------------------------------------------------------------


def test_topology_shapes():
    assert len(mesh(5, RATE, DELAY).links) == 10
    assert len(ring(5, RATE, DELAY).links) == 5
    assert len(ring(2, RATE, DELAY).links) == 1
    assert len(torus(3, 4, RATE, DELAY).links) == 24
    assert len(torus(2, 2, RATE, DELAY).links) == 4  # size-2 dimensions get one link, not two
    assert len(torus(1, 5, RATE, DELAY).links) == 5
    t = mesh(3, RATE, DELAY)
    assert t.nodes == ("lpu-0", "lpu-1", "lpu-2")
    assert [link.id for link in t.links] == ["lpu-0--lpu-1", "lpu-0--lpu-2", "lpu-1--lpu-2"]


def test_paths_are_shortest_and_deterministic():
    r = ring(6, RATE, DELAY)
    assert r.path("lpu-0", "lpu-3") == [("lpu-0--lpu-1", 0), ("lpu-1--lpu-2", 0),
                                        ("lpu-2--lpu-3", 0)]  # tie: lpu-1 < lpu-5
    assert r.path("lpu-0", "lpu-5") == [("lpu-0--lpu-5", 0)]
    assert r.path("lpu-5", "lpu-0") == [("lpu-0--lpu-5", 1)]
    m = mesh(4, RATE, DELAY)
    assert m.path("lpu-3", "lpu-1") == [("lpu-1--lpu-3", 1)]
    tor = torus(4, 4, RATE, DELAY)
    # lpu-0 -> lpu-5 is two hops via lpu-1 or lpu-4: the lower name wins.
    assert tor.path("lpu-0", "lpu-5") == [("lpu-0--lpu-1", 0), ("lpu-1--lpu-5", 0)]
    # natural order: lpu-9 comes before lpu-10 (plain string order would pick lpu-10)
    diamond = LpuTopology(("a", "lpu-9", "lpu-10", "z"), (
        LpuLink("l1", "a", "lpu-10", RATE, 0), LpuLink("l2", "a", "lpu-9", RATE, 0),
        LpuLink("l3", "lpu-10", "z", RATE, 0), LpuLink("l4", "lpu-9", "z", RATE, 0)))
    assert diamond.path("a", "z") == [("l2", 0), ("l4", 0)]


def test_topology_errors():
    with pytest.raises(FabricError, match="link x: unknown node 'c'"):
        LpuTopology(("a", "b"), (LpuLink("x", "a", "c", RATE, 0),))
    with pytest.raises(FabricError, match="link x: joins a to itself"):
        LpuLink("x", "a", "a", RATE, 0)
    split = LpuTopology(("a", "b", "c"), (LpuLink("x", "a", "b", RATE, 0),))
    with pytest.raises(FabricError, match="c is unreachable from a"):
        split.path("a", "c")


# ---- compiling -------------------------------------------------------------------------

TOPOLOGIES = {
    "mesh": lambda: mesh(6, RATE, DELAY),
    "ring": lambda: ring(6, RATE, DELAY),
    "torus": lambda: torus(2, 3, RATE, DELAY),
}
GRAPHS = {
    "allreduce": lambda nodes: tp_allreduce(nodes, 20_000),
    "pipeline": lambda nodes: pipeline(nodes, 3_000, microbatches=4),
    "attention-ffn": lambda nodes: attention_ffn(nodes[:2], nodes[2:5], tokens=3,
                                                 nbytes_per_token=1_000),
}


@pytest.mark.parametrize("topo_name", sorted(TOPOLOGIES))
@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_generators_compile_and_verify(topo_name, graph_name):
    topo = TOPOLOGIES[topo_name]()
    graph = GRAPHS[graph_name](list(topo.nodes))
    plan = compile_plan(graph, topo, guard_ns=None, drift_ppm=20, resync_period_ns=250_000)
    assert plan.guard_ns == 10
    verify(plan, topo, graph)
    assert plan.makespan_ns >= lower_bound_ns(graph, topo, guard_ns=plan.guard_ns) > 0
    assert plan == compile_plan(graph, topo, guard_ns=None, drift_ppm=20,
                                resync_period_ns=250_000)  # deterministic


def test_slot_and_send_times():
    assert slot_ns_for(RATE) == SLOT
    assert slot_ns_for(RATE, batch_vectors=4) == 92  # ceil(91.43)
    assert slot_ns_for(8_000_000_000, 1000, 1) == 1000  # exact: no rounding up
    topo = ring(3, RATE, DELAY)
    g = TransferGraph("one", topo.nodes, (Transfer(0, "lpu-0", "lpu-1", 700),))
    plan = compile_plan(g, topo)
    assert [(s.batch, s.depart_ns, s.arrive_ns) for s in plan.sends] == [
        (0, 0, SLOT + DELAY), (1, SLOT, 2 * SLOT + DELAY), (2, 2 * SLOT, 3 * SLOT + DELAY)]
    assert plan.makespan_ns == 3 * SLOT + DELAY
    assert plan.slot_ns["lpu-0--lpu-1"] == SLOT
    big = compile_plan(g, topo, batch_vectors=4)
    assert [s.arrive_ns for s in big.sends] == [92 + DELAY]


def test_multi_hop_store_and_forward():
    topo = ring(4, RATE, DELAY)
    g = TransferGraph("two-hop", topo.nodes, (Transfer(0, "lpu-0", "lpu-2", 640),))
    plan = compile_plan(g, topo, guard_ns=5)
    hops = sorted(plan.sends, key=lambda s: (s.batch, s.hop))
    assert [(s.batch, s.hop, s.link, s.src, s.dst) for s in hops] == [
        (0, 0, "lpu-0--lpu-1", "lpu-0", "lpu-1"), (0, 1, "lpu-1--lpu-2", "lpu-1", "lpu-2"),
        (1, 0, "lpu-0--lpu-1", "lpu-0", "lpu-1"), (1, 1, "lpu-1--lpu-2", "lpu-1", "lpu-2")]
    assert hops[1].depart_ns == hops[0].arrive_ns + 5
    assert hops[2].depart_ns == SLOT + 5  # guard pads the slot on the same link direction
    verify(plan, topo, g)


def test_directions_are_separate_channels():
    topo = ring(2, RATE, DELAY)
    g = TransferGraph("both", topo.nodes, (Transfer(0, "lpu-0", "lpu-1", 320),
                                           Transfer(1, "lpu-1", "lpu-0", 320)))
    plan = compile_plan(g, topo)
    assert [(s.direction, s.depart_ns) for s in plan.sends] == [(0, 0), (1, 0)]


def test_gaps_are_filled():
    topo = ring(3, RATE, DELAY)
    # 1 waits for 0, leaving lpu-1 -> lpu-2 idle at first; 2 (independent) takes that gap.
    g = TransferGraph("gap", topo.nodes, (
        Transfer(0, "lpu-0", "lpu-1", 320),
        Transfer(1, "lpu-1", "lpu-2", 3200, (0,)),
        Transfer(2, "lpu-1", "lpu-2", 320)))
    plan = compile_plan(g, topo)
    verify(plan, topo, g)
    first = {s.transfer: s.depart_ns for s in plan.sends if s.batch == 0}
    assert (first[2], first[1]) == (0, SLOT + DELAY)


def test_graph_node_must_be_in_topology():
    g = TransferGraph("g", ("lpu-0", "lpu-9"), (Transfer(0, "lpu-0", "lpu-9", 1),))
    with pytest.raises(FabricError, match="node 'lpu-9' is not an LPU of the topology"):
        compile_plan(g, ring(3, RATE, DELAY))


# ---- guard band ------------------------------------------------------------------------


def test_required_guard():
    assert required_guard_ns(0, None) == 0
    assert required_guard_ns(10, 1_000_000) == 20  # 2 x 10e-6 x 1 ms
    assert required_guard_ns(-10, 1_000_000, offset_ns=7) == 27
    assert required_guard_ns(0.5, 1_000_001) == 2  # ceil(1.000001)
    with pytest.raises(FabricError, match="without resyncs grows without bound"):
        required_guard_ns(1, None)


def test_guard_too_small_names_minimum():
    topo = ring(3, RATE, DELAY)
    g = pipeline(topo.nodes, 640, 2)
    with pytest.raises(FabricError, match=r"guard_ns=5 is too small .* the minimum is 20 ns"):
        compile_plan(g, topo, guard_ns=5, drift_ppm=10, resync_period_ns=1_000_000)
    plan = compile_plan(g, topo, guard_ns=None, drift_ppm=10, resync_period_ns=1_000_000)
    assert plan.guard_ns == 20
    verify(plan, topo, g)
    bigger = compile_plan(g, topo, guard_ns=50, drift_ppm=10, resync_period_ns=1_000_000)
    assert bigger.makespan_ns > plan.makespan_ns
    with pytest.raises(PlanConflict, match="guard band 5 ns is below the 20 ns"):
        verify(dataclasses.replace(plan, guard_ns=5), topo, g)


# ---- verifier: hand-made bad plans -----------------------------------------------------


def _moved(s: Send, depart: int) -> Send:
    return dataclasses.replace(s, depart_ns=depart, arrive_ns=depart + s.arrive_ns - s.depart_ns)


def _with(plan: Plan, sends: list[Send]) -> Plan:
    return dataclasses.replace(plan, sends=tuple(sends),
                               makespan_ns=max((s.arrive_ns for s in sends), default=0))


@pytest.fixture
def two_hop():
    topo = ring(4, RATE, DELAY)
    g = TransferGraph("t", topo.nodes, (
        Transfer(0, "lpu-0", "lpu-2", 960),
        Transfer(1, "lpu-1", "lpu-2", 320),
        Transfer(2, "lpu-2", "lpu-3", 320, (0,))))
    plan = compile_plan(g, topo, guard_ns=3)
    verify(plan, topo, g)
    return topo, g, plan


def _find(plan: Plan, transfer: int, batch: int, hop: int) -> int:
    return next(i for i, s in enumerate(plan.sends)
                if (s.transfer, s.batch, s.hop) == (transfer, batch, hop))


def test_verify_overlap(two_hop):
    topo, g, plan = two_hop
    sends = list(plan.sends)
    i = _find(plan, 1, 0, 0)  # on lpu-1--lpu-2 a->b, where transfer 0 also passes
    other = next(s for s in sends if s.link == sends[i].link and s.transfer == 0)
    sends[i] = _moved(sends[i], other.depart_ns + 10)
    with pytest.raises(PlanConflict, match=(
            rf"link lpu-1--lpu-2 \(a->b\): transfer 0 batch {other.batch} at "
            rf"{other.depart_ns}-{other.depart_ns + SLOT + 3} ns overlaps transfer 1 batch 0 "
            rf"at {other.depart_ns + 10}-")):
        verify(_with(plan, sends), topo, g)


def test_verify_guard_is_part_of_the_slot(two_hop):
    topo, g, plan = two_hop
    sends = list(plan.sends)
    i, j = _find(plan, 0, 0, 0), _find(plan, 0, 1, 0)
    sends[j] = _moved(sends[j], sends[i].depart_ns + SLOT + 2)  # past the slot, inside the guard
    with pytest.raises(PlanConflict, match=r"overlaps .* \(slot 23 ns \+ guard 3 ns\)"):
        verify(_with(plan, sends), topo, g)


def test_verify_hop_before_arrival(two_hop):
    topo, g, plan = two_hop
    sends = list(plan.sends)
    h0, h1 = sends[_find(plan, 0, 2, 0)], _find(plan, 0, 2, 1)
    sends[h1] = _moved(sends[h1], h0.arrive_ns + 1)
    with pytest.raises(PlanConflict, match=(
            rf"transfer 0 batch 2 hop 1 departs at {h0.arrive_ns + 1} ns before hop 0 arrives "
            rf"at {h0.arrive_ns} ns \+ guard 3 ns")):
        verify(_with(plan, sends), topo, g)


def test_verify_dependency(two_hop):
    topo, g, plan = two_hop
    sends = list(plan.sends)
    last = max(s.arrive_ns for s in sends if s.transfer == 0)
    i = _find(plan, 2, 0, 0)
    sends[i] = _moved(sends[i], last)
    with pytest.raises(PlanConflict, match=(
            rf"transfer 2 departs at {last} ns before its dependency 0 arrives at {last} ns")):
        verify(_with(plan, sends), topo, g)


def test_verify_missing_batch(two_hop):
    topo, g, plan = two_hop
    sends = [s for s in plan.sends if not (s.transfer == 0 and s.batch == 2)]
    with pytest.raises(PlanConflict, match="transfer 0 batch 2 is missing"):
        verify(_with(plan, sends), topo, g)
    sends = [s for s in plan.sends if (s.transfer, s.batch, s.hop) != (0, 1, 1)]
    with pytest.raises(PlanConflict, match="transfer 0 batch 1 ends at lpu-1, not at its "
                                           "destination lpu-2"):
        verify(_with(plan, sends), topo, g)


def test_verify_wrong_link(two_hop):
    topo, g, plan = two_hop
    sends = list(plan.sends)
    i = _find(plan, 1, 0, 0)
    sends[i] = dataclasses.replace(sends[i], link="lpu-2--lpu-3")
    with pytest.raises(PlanConflict, match="send uses link lpu-2--lpu-3 .* that does not join "
                                           "lpu-1 and lpu-2"):
        verify(_with(plan, sends), topo, g)
    sends[i] = dataclasses.replace(sends[i], link="nope")
    with pytest.raises(PlanConflict, match="send uses link nope that is not in the topology"):
        verify(_with(plan, sends), topo, g)
    sends[i] = dataclasses.replace(plan.sends[i], direction=1)
    with pytest.raises(PlanConflict, match=r"lpu-1--lpu-2 \(b->a: lpu-2 -> lpu-1\)"):
        verify(_with(plan, sends), topo, g)


def test_verify_timing_and_bookkeeping(two_hop):
    topo, g, plan = two_hop
    sends = list(plan.sends)
    sends[0] = dataclasses.replace(sends[0], arrive_ns=sends[0].arrive_ns - 1)
    with pytest.raises(PlanConflict, match="arrives at .* but depart .* \\+ slot 23 \\+ delay 100"):
        verify(_with(plan, sends), topo, g)
    with pytest.raises(PlanConflict, match="makespan is 1 ns but the last send arrives"):
        verify(dataclasses.replace(plan, makespan_ns=1), topo, g)
    dup = [*plan.sends, plan.sends[0]]
    with pytest.raises(PlanConflict, match="is scheduled twice"):
        verify(_with(plan, dup), topo, g)


# ---- property tests --------------------------------------------------------------------


@st.composite
def random_case(draw):
    kind = draw(st.sampled_from(["mesh", "ring", "torus"]))
    if kind == "torus":
        rows, cols = draw(st.integers(1, 3)), draw(st.integers(2, 3))
        rate = draw(st.sampled_from([RATE, 25_000_000_000, 7_000_000_000]))
        topo = torus(rows, cols, rate, draw(st.integers(0, 500)))
    else:
        n = draw(st.integers(2, 6))
        rate = draw(st.sampled_from([RATE, 25_000_000_000, 7_000_000_000]))
        topo = (mesh if kind == "mesh" else ring)(n, rate, draw(st.integers(0, 500)))
    nodes = list(topo.nodes)
    count = draw(st.integers(0, 14))
    transfers = []
    for tid in range(count):
        src = draw(st.sampled_from(nodes))
        dst = draw(st.sampled_from([n for n in nodes if n != src]))
        deps = draw(st.lists(st.integers(0, tid - 1), max_size=3, unique=True)) if tid else []
        transfers.append(Transfer(tid, src, dst, draw(st.integers(1, 4_000)), tuple(deps)))
    # Shuffle ids so topological order is not just id order.
    perm = draw(st.permutations(range(count)))
    transfers = [Transfer(perm[t.id], t.src, t.dst, t.nbytes, tuple(perm[d] for d in t.deps))
                 for t in transfers]
    graph = TransferGraph("random", tuple(nodes), tuple(transfers))
    guard = draw(st.integers(0, 40))
    batch_vectors = draw(st.integers(1, 3))
    return topo, graph, guard, batch_vectors


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_case())
def test_random_dags_compile_to_verified_plans(case):
    topo, graph, guard, batch_vectors = case
    plan = compile_plan(graph, topo, guard_ns=guard, batch_vectors=batch_vectors)
    verify(plan, topo, graph)
    expected = sum(-(-t.nbytes // (320 * batch_vectors)) * len(topo.path(t.src, t.dst))
                   for t in graph.transfers)
    assert len(plan.sends) == expected
    busiest = max(plan.busy_ns().values(), default=0)
    assert plan.makespan_ns >= busiest
    assert plan.makespan_ns >= lower_bound_ns(graph, topo, batch_vectors=batch_vectors,
                                              guard_ns=guard)


# ---- clocks ----------------------------------------------------------------------------


def test_clock_drifts_then_resyncs():
    clk = DriftingClock(drift_ppm=100, offset_ns=0, resync_period_ns=1_000_000)
    assert clk.local(0) == 0
    assert clk.local(500_000) == 500_050
    assert clk.local(999_999) == 999_999 + 100
    assert clk.local(1_000_000) == 1_000_000  # set back to true time
    assert clk.local(1_500_000) == 1_500_050
    slow = DriftingClock(drift_ppm=-50, offset_ns=30, resync_period_ns=None)
    assert slow.local(2_000_000) == 2_000_000 + 30 - 100  # no resync: error keeps growing
    assert slow.max_error_ns(2_000_000) == 130


def test_clock_resync_errors_are_seeded():
    a = DriftingClock(0, 0, 1000, resync_error_ns=20, seed=1)
    b = DriftingClock(0, 0, 1000, resync_error_ns=20, seed=1)
    c = DriftingClock(0, 0, 1000, resync_error_ns=20, seed=2)
    errs = [a.local(k * 1000) - k * 1000 for k in range(1, 200)]
    assert errs == [b.local(k * 1000) - k * 1000 for k in range(1, 200)]
    assert errs != [c.local(k * 1000) - k * 1000 for k in range(1, 200)]
    assert all(-20 <= e <= 20 for e in errs)
    assert len(set(errs)) > 10


@settings(max_examples=200, deadline=None)
@given(drift=st.floats(-500, 500), offset=st.integers(-2_000, 2_000),
       period=st.one_of(st.none(), st.integers(1_000, 100_000)), err=st.integers(0, 300),
       seed=st.integers(0, 2**32), x=st.integers(0, 10_000_000))
def test_clock_true_at_inverts_local(drift, offset, period, err, seed, x):
    clk = DriftingClock(drift, offset, period, resync_error_ns=err, seed=seed)
    t = clk.true_at(x)
    assert clk.local(t) >= x  # by then the clock has reached x ...
    if t > 0:
        assert clk.local(t - 1) < x or (period and t % period == 0)  # ... and not before,
        assert all(clk.local(u) < x for u in range(max(0, t - 3), t))  # checked nearby
    if t > 0 and (period is None or t % period):
        assert clk.local(t) == x  # no resync stepped over x: an exact inverse
    assert abs(clk.local(x) - x) <= clk.max_error_ns(x) + 1


# ---- rendering -------------------------------------------------------------------------


def test_plan_table_and_gantt(tmp_path):
    topo = torus(2, 3, RATE, DELAY)
    g = tp_allreduce(topo.nodes, 64_000)
    plan = compile_plan(g, topo, guard_ns=4)
    text = plan_table(plan, limit=5)
    lines = text.splitlines()
    assert lines[0].split() == ["transfer", "batch", "hop", "link/dir", "depart", "ns",
                                "arrive", "ns"]
    assert len(lines[2].split()) == 7  # transfer batch hop link dir depart arrive
    assert f"... {len(plan.sends) - 5:,} more sends" in text
    assert f"{len(plan.sends):,} sends, makespan" in text
    assert "utilisation over" in text
    out = gantt_png(plan, tmp_path / "plan.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = compile_plan(TransferGraph("none", topo.nodes, ()), topo)
    assert empty.makespan_ns == 0
    assert "0 sends" in plan_table(empty)
    gantt_png(empty, tmp_path / "empty.png")
