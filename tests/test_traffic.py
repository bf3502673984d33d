"""The traffic section and the schedule it expands to (pure: no sockets, no clock)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from fabric.errors import TopologyError
from fabric.kv import get_model
from fabric.kv.layout import chunks_of, transfer_bytes
from fabric.topology import parse_topology
from fabric.topology.traffic import PromptDist
from fabric.traffic import arrivals, sample_prompt, schedule

HEAD = """\
name: t
classes:
  - {name: kv, dscp: 26}
  - {name: bulk, dscp: 10}
nodes: {h0: {}, h1: {}, h2: {}, h3: {}, sw: {kind: switch}}
links:
  - {endpoints: [sw, h0]}
  - {endpoints: [sw, h1]}
  - {endpoints: [sw, h2]}
  - {endpoints: [sw, h3]}
"""


def topo(flows: str, extra: str = "", time_scale: float = 1):
    text = HEAD + f"time_scale: {time_scale}\n" + "traffic:\n" + textwrap.indent(extra, "  ") \
        + "  flows:\n" + textwrap.indent(textwrap.dedent(flows), "    ")
    return parse_topology(text, source="t.yaml")


def test_one_to_one_is_a_closed_loop_chain():
    t = topo("- {pattern: one-to-one, from: h0, to: h1, tokens: 100, requests: 3}\n")
    (flow,) = t.traffic.flows
    assert (flow.name, flow.cls, flow.transport, flow.model) == ("one-to-one-0", "kv", "tcp",
                                                                 "llama-3.1-8b")
    s = schedule(t)
    assert [(x.id, x.request, x.start_ns, x.after) for x in s] == [
        (0, 0, 0, None), (1, 1, None, 0), (2, 2, None, 1)]
    assert {x.nbytes for x in s} == {transfer_bytes(get_model("llama-3.1-8b"), 100)}


def test_incast_and_all_to_all_pairs():
    t = topo("""\
        - {name: in, pattern: incast, from: [h0, h1, h2], to: h3, tokens: 16, requests: 2}
        - {name: a2a, pattern: all-to-all, from: [h0, h1, h2], tokens: 16}
        """)
    s = schedule(t)
    incast = [x for x in s if x.flow == "in"]
    assert len(incast) == 6
    assert {x.dst for x in incast} == {"h3"}
    assert sorted(x.request for x in incast) == list(range(6))  # numbered per flow
    heads = [x for x in incast if x.after is None]
    assert sorted(x.src for x in heads) == ["h0", "h1", "h2"]  # every chain starts at once
    assert all(x.start_ns == 0 for x in heads)
    a2a = [(x.src, x.dst) for x in s if x.flow == "a2a"]
    assert sorted(a2a) == sorted((a, b) for a in ("h0", "h1", "h2") for b in ("h0", "h1", "h2")
                                 if a != b)


def test_pd_arrivals_round_robin_and_time_scale():
    t = topo("""\
        - {pattern: pd, from: [h0, h1], to: [h2, h3], requests: 4, rate: 10/s,
           arrival: fixed, prompt: {mean: 1000, sigma: 0.5, min: 100, max: 4000}}
        """, time_scale=100)
    s = schedule(t)
    assert [(x.src, x.dst) for x in s] == [("h0", "h2"), ("h1", "h3"), ("h0", "h2"),
                                           ("h1", "h3")]
    # 10/s fabric time, 100x slower on the host: one every 10 s
    assert [x.start_ns for x in s] == [0, 10_000_000_000, 20_000_000_000, 30_000_000_000]
    assert all(100 <= x.tokens <= 4000 for x in s)
    assert schedule(t) == s  # seeded: the same schedule every time


def test_bulk_sizes_and_chunks():
    t = topo("- {pattern: bulk, from: h0, to: h1, class: bulk, size: 3MiB, chunk: 1MiB}\n")
    (x,) = schedule(t)
    assert (x.model, x.tokens, x.nbytes, x.cls) == (None, None, 3 << 20, "bulk")
    assert [c.nbytes for c in chunks_of(x)] == [1 << 20] * 3


def test_kv_chunks_cover_the_transfer():
    t = topo("- {pattern: one-to-one, from: h0, to: h1, tokens: 1000}\n",
             extra="model: deepseek-v3\nchunk: 256KiB\n")
    (x,) = schedule(t)
    chunks = chunks_of(x)
    assert sum(c.nbytes for c in chunks) == x.nbytes
    assert max(c.nbytes for c in chunks) <= 256 * 1024


def test_prompt_sampling_is_truncated_lognormal_with_the_mean():
    rng = np.random.default_rng(0)
    dist = PromptDist(mean=27000, sigma=0.6, min=1000, max=128000)
    xs = [sample_prompt(rng, dist) for _ in range(4000)]
    assert min(xs) >= 1000
    assert max(xs) <= 128000
    assert abs(np.mean(xs) - 27000) / 27000 < 0.05


def test_poisson_arrivals_have_the_rate():
    rng = np.random.default_rng(1)
    ts = arrivals(rng, 5000, 50.0, "poisson")
    assert ts[0] == 0
    assert 5000 / ts[-1] == pytest.approx(50, rel=0.05)


@pytest.mark.parametrize(("flow", "message"), [
    ("- {pattern: swirl, from: h0, to: h1, tokens: 1}",
     "t.yaml:14: traffic.flows[0].pattern: unknown pattern 'swirl' (one of: one-to-one, "
     "incast, all-to-all, pd, bulk)"),
    ("- {pattern: one-to-one, from: h0, to: h9, tokens: 1}",
     "t.yaml:14: traffic.flows[0].to: unknown node 'h9'"),
    ("- {pattern: one-to-one, from: sw, to: h1, tokens: 1}",
     "t.yaml:14: traffic.flows[0].from: node 'sw' is a switch: traffic runs between hosts"),
    ("- {pattern: one-to-one, from: h0, to: h1}",
     "t.yaml:14: traffic.flows[0]: a KV flow needs exactly one of `tokens:` (fixed) or "
     "`prompt:` (a distribution)"),
    ("- {pattern: incast, from: h0, to: h1, tokens: 1}",
     "t.yaml:14: traffic.flows[0]: an incast flow has two or more `from:` nodes and one `to:`"),
    ("- {pattern: one-to-one, from: h0, to: h0, tokens: 1}",
     "t.yaml:14: traffic.flows[0]: node 'h0' is both sender and receiver"),
    ("- {pattern: one-to-one, from: h0, to: h1, tokens: 1, class: gold}",
     "t.yaml:14: traffic.flows[0].class: unknown traffic class 'gold' (classes: kv, bulk)"),
    ("- {pattern: one-to-one, from: h0, to: h1, tokens: 1, model: gpt-9}",
     "t.yaml:14: traffic.flows[0].model: unknown model 'gpt-9'"),
    ("- {pattern: one-to-one, from: h0, to: h1, tokens: 1, rate: fast}",
     "t.yaml:14: traffic.flows[0].rate: bad rate 'fast': write requests per time, e.g. 10/s"),
    ("- {pattern: bulk, from: h0, to: h1, tokens: 5, size: 1MiB}",
     "t.yaml:14: traffic.flows[0].tokens: a bulk flow moves `size:` bytes, not KV"),
    ("- {pattern: one-to-one, from: h0, to: h1, tokens: 1, transport: rdma}",
     "t.yaml:14: traffic.flows[0].transport: unknown transport 'rdma' (one of: tcp, udp, roce)"),
    ("- {pattern: one-to-one, from: h0, to: h1, tokens: 1, chunk: 1KiB}",
     "t.yaml:14: traffic.flows[0].chunk: chunk size 1024 B is outside 4 KiB..256 MiB"),
    ("- {pattern: one-to-one, from: h0, to: h1, tokens: 1, colour: red}",
     "t.yaml:14: traffic.flows[0].colour: unknown key 'colour'"),
])
def test_traffic_errors(flow, message):
    with pytest.raises(TopologyError) as err:
        topo(flow + "\n")
    assert str(err.value).startswith(message)


def test_duplicate_flow_names():
    with pytest.raises(TopologyError, match=r"t.yaml:15: traffic.flows\[1\].name: duplicate "
                                            r"flow name 'x' \(first at line 14\)"):
        topo("""\
            - {name: x, pattern: one-to-one, from: h0, to: h1, tokens: 1}
            - {name: x, pattern: one-to-one, from: h1, to: h0, tokens: 1}
            """)


def test_flow_between_unconnected_nodes_is_an_error():
    text = ("name: t\nnodes: {a: {}, b: {}, c: {}, d: {}}\nlinks:\n  - {endpoints: [a, b]}\n"
            "  - {endpoints: [c, d]}\ntraffic:\n  flows:\n"
            "    - {pattern: one-to-one, from: a, to: d, tokens: 4}\n")
    with pytest.raises(TopologyError, match=r"^t.yaml:8: traffic.flows\[0\]: flow "
                                            r"'one-to-one-0': a cannot reach d: no path"):
        parse_topology(text, source="t.yaml")
