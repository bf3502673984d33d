"""Traffic classes on plain links, for real (root): a strict KV class beside a bulk backlog on
a shaped link, with one FIFO class and with per-class queues, on both link backends."""

from __future__ import annotations

import pytest

from fabric.metrics import summarise
from fabric.net import lifecycle
from fabric.plan import plan_fabric
from fabric.run.traffic import run_traffic
from fabric.topology import parse_topology

pytestmark = pytest.mark.netns

# KV from a and a bulk backlog from b meet at r's egress towards c (the shaped link). No
# `switches:`: r is a plain router, so only the link's egress can tell the classes apart.
FILE = """
name: {name}
defaults:
  link: {{mtu: 9000}}   # few packets: the engine keeps up on a busy host
classes:
{classes}
nodes: {{a: {{}}, b: {{}}, r: {{kind: switch}}, c: {{}}}}
links:
  - {{endpoints: [a, r], rate: {rate}, delay: {edge}, queue: 1MiB}}
  - {{endpoints: [b, r], rate: {rate}, delay: {edge}, queue: 1MiB}}
  - {{endpoints: [r, c], rate: {rate}, delay: {delay}, queue: 150KiB}}
traffic:
  seed: 1
  chunk: 64KiB
  flows:
    - {{name: kv, pattern: pd, from: a, to: c, class: {kv}, requests: {requests}, rate: 2/s,
       tokens: {tokens}, model: deepseek-v3}}
    - {{name: bulk, pattern: bulk, from: b, to: c, class: {bulk}, size: {size},
       requests: 1}}
"""

FIFO = "  - {name: shared, dscp: 0, priority: 0}"
CLASSES = ("  - {name: kv, dscp: 26, priority: 3, strict: true}\n"
           "  - {name: bulk, dscp: 10, priority: 0}")

SCALE = {
    "userspace": {"rate": "100Mbps", "requests": 6, "tokens": 16, "size": "40MiB",
                  "edge": "100us", "delay": "2ms"},
    # the netem backend without delays: only htb (or tbf) on the links, no netem qdisc, so it
    # runs on a host kernel without sch_netem
    "htb": {"rate": "100Mbps", "requests": 6, "tokens": 16, "size": "40MiB",
            "edge": "0ms", "delay": "0ms"},
    # netem under htb, in the guest (~10x slower: a slower link keeps the hosts out of the way)
    "netem": {"rate": "20Mbps", "requests": 4, "tokens": 16, "size": "8MiB",
              "edge": "100us", "delay": "2ms"},
}


def kv_run(name: str, variant: str, classed: bool) -> tuple[dict, dict]:
    """Run one variant; (the KV class's summary, the links' counters)."""
    backend = "userspace" if variant == "userspace" else "netem"
    text = FILE.format(name=name, classes=CLASSES if classed else FIFO,
                       kv="kv" if classed else "shared", bulk="bulk" if classed else "shared",
                       **SCALE[variant])
    topo = parse_topology(text)
    state = lifecycle.bring_up(plan_fabric(topo, backend=backend))
    try:
        res = run_traffic(state, topo, timeout=240)
    finally:
        lifecycle.remove_fabric(state)
    assert res.errors == []
    summary = summarise(res.chunk_records, res.transfer_records, time_scale=topo.time_scale,
                        meta={}, links=res.links)
    assert summary["integrity"]["ok"]
    return summary["kinds"]["pd"], res.links


@pytest.mark.parametrize("backend", ["userspace", "htb",
                                     pytest.param("netem", marks=pytest.mark.netem)])
def test_strict_kv_class_beats_fifo_under_a_bulk_backlog(backend, fabric_name, state_dir):
    # measured 270-461 ms FIFO vs 89-188 ms strict (userspace and htb, a busy 2-core host):
    # ask for a clear margin, not the exact figure. The pair runs again once if it misses:
    # on a host other jobs load, one stalled second can cost a KV packet and its TCP RTO.
    for attempt in range(2):
        fifo, _ = kv_run(f"{fabric_name}{attempt}", backend, classed=False)
        kv, links = kv_run(f"{fabric_name}{attempt}k", backend, classed=True)
        p99_fifo = fifo["chunk_latency"]["wall_ns"]["p99"]
        p99_kv = kv["chunk_latency"]["wall_ns"]["p99"]
        print(f"{backend}: KV chunk p99 FIFO {p99_fifo / 1e6:.1f} ms, strict class "
              f"{p99_kv / 1e6:.1f} ms")
        if p99_kv < 0.8 * p99_fifo:
            break
    assert p99_kv < 0.8 * p99_fifo
    if backend == "userspace":
        # the engine counts per class on the shaped direction r -> c
        (lid,) = [lid for lid in links["links"] if set(lid.split("--")) == {"r", "c"}]
        d = links["links"][lid]
        fwd = d["forward"] if lid.startswith("r") else d["reverse"]
        by = {c["name"]: c for c in fwd["classes"]}
        assert by["kv"]["packets_out"] > 0
        assert by["bulk"]["packets_out"] > 0
        assert by["bulk"]["queue_bytes_max"] > by["kv"]["queue_bytes_max"]


def test_htb_class_tree_changes_live_in_place(fabric_name):
    """The netem backend's per-class tree (htb, no netem: runs on any kernel with htb): a
    live rate and queue change keeps the classes and a class's own cap; taking the rate
    away is refused with what to do instead."""
    from fabric.errors import KernelError
    from fabric.net.kernel import LiveKernel
    from fabric.plan import AddNamespace, AddVeth, SetTbf, SetUp
    from fabric.topology.model import Shape, TrafficClass

    kv = TrafficClass(name="kv", dscp=26, priority=3, strict=True, queue_bytes=20_000)
    bulk = TrafficClass(name="bulk", dscp=10, priority=0)
    a, b = f"fab.{fabric_name}.x.a", f"fab.{fabric_name}.x.b"
    k = LiveKernel()
    try:
        for step in (AddNamespace(a), AddNamespace(b), AddVeth(a, "e0", b, "e0", 1500),
                     SetUp(a, "e0"), SetUp(b, "e0"),
                     SetTbf(a, "e0", 20_000_000, 100_000, 1500, (kv, bulk))):
            k.apply(step)
        eg = k.read_egress(a, "e0")
        assert eg["root"] == "htb"
        assert eg["tbf"] == {"rate_bps": 20_000_000, "queue_bytes": 100_000}
        k.set_egress(a, "e0", Shape(rate_bps=50_000_000), 200_000, netem=True)
        eg = k.read_egress(a, "e0")
        assert eg["tbf"] == {"rate_bps": 50_000_000, "queue_bytes": 200_000}
        assert sorted(eg["htb"]["limits"]) == [20_000, 200_000]  # kv keeps its cap
        with pytest.raises(KernelError, match="queues by traffic class"):
            k.set_egress(a, "e0", Shape(), 200_000, netem=True)
    finally:
        for ns in (a, b):
            k.remove_netns(ns)
        k.close()
