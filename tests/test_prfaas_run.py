"""The prfaas section, and a small prefill-as-a-service run with KV crossing the fabric."""

from __future__ import annotations

import pytest

from fabric.errors import TopologyError
from fabric.net import lifecycle
from fabric.net.kernel import Kernel
from fabric.plan import plan_fabric
from fabric.run.prfaas import render, run_policy
from fabric.topology import load_topology, parse_topology

SMALL = """\
name: {name}
time_scale: 0.02
defaults:
  link: {{mtu: 9000}}
nodes:
  gw-l: {{kind: switch}}
  gw-r: {{kind: switch}}
  l0: {{}}
  l1: {{}}
  d0: {{}}
  r0: {{}}
links:
  - {{endpoints: [l0, gw-l], rate: 80Mbps, delay: 1us}}
  - {{endpoints: [l1, gw-l], rate: 80Mbps, delay: 1us}}
  - {{endpoints: [d0, gw-l], rate: 80Mbps, delay: 1us}}
  - {{endpoints: [r0, gw-r], rate: 80Mbps, delay: 1us}}
  - {{endpoints: [gw-l, gw-r], rate: 10Mbps, delay: 2.5ms}}
prfaas:
  kv_scale: 10000
  egress: [gw-l, gw-r]
  local_prefill: [l0]
  decode: [d0]
  remote_prefill: [r0]
  layouts:
    local: {{local_prefill: [l0, l1], decode: [d0], remote_prefill: []}}
  workload: {{requests: 24, rate: 2/s}}
"""


def test_section_and_layouts():
    topo = parse_topology(SMALL.format(name="p"))
    spec = topo.prfaas
    assert spec.model == "prfaas-hybrid-1t"
    assert spec.kv_scale == 10000
    assert spec.threshold == 19400
    assert spec.policies == ("local", "remote-all", "threshold", "adaptive")
    assert spec.layout("local") == (("l0", "l1"), ("d0",), ())
    assert spec.layout("threshold") == (("l0",), ("d0",), ("r0",))
    assert spec.workload.requests == 24
    assert spec.workload.rate_per_s == 2.0


def test_every_shipped_prfaas_file_loads():
    for name in ("prfaas", "prfaas-dense"):
        topo = load_topology(f"topologies/{name}.yaml")
        assert topo.prfaas.layout("local")[2] == ()
        assert len(topo.prfaas.layout("local")[0]) == 9


@pytest.mark.parametrize(("edit", "message"), [
    (("egress: [gw-l, gw-r]", "egress: [l0, r0]"),
     "t.yaml:20: prfaas.egress: no link joins 'l0' and 'r0'"),
    (("remote_prefill: [r0]\n  layouts", "remote_prefill: [d0]\n  layouts"),
     "t.yaml:23: prfaas.remote_prefill: node 'd0' is already in prfaas.decode"),
    (("kv_scale: 10000", "kv_scale: 10000\n  model: llama-3.1-8b"),
     "t.yaml:20: prfaas.model: no prefill profile for 'llama-3.1-8b'"),
    (("rate: 2/s", "rate: lots"), "prfaas.workload.rate: bad rate 'lots'"),
    (("    local: {", "    everything: {"), "t.yaml:25: prfaas.layouts.everything: unknown key"),
])
def test_section_errors(edit, message):
    with pytest.raises(TopologyError) as err:
        parse_topology(SMALL.format(name="t").replace(*edit), source="t.yaml")
    assert message in str(err.value)


@pytest.mark.netns
def test_threshold_and_local_runs_move_kv_over_the_egress(fabric_name, state_dir):
    topo = parse_topology(SMALL.format(name=fabric_name))
    state = lifecycle.bring_up(plan_fabric(topo, backend="userspace"))
    try:
        runs = [run_policy(state, topo, p, 2.0) for p in ("local", "remote-all")]
    finally:
        lifecycle.remove_fabric(state)
    local, remote = runs
    assert local.errors == [] and remote.errors == []  # noqa: PT018
    assert local.report.requests == remote.report.requests == 24
    assert local.report.offloaded_fraction == 0
    assert local.egress_bytes == 0  # nothing crossed the egress link
    assert remote.report.offloaded_fraction == 1
    # every offloaded request's KV crossed the egress link (kv_scale applied back; headers
    # make the link carry a little more than the KV itself)
    assert remote.egress_bytes >= remote.report.kv_bytes_remote
    assert remote.egress_bytes <= 1.2 * remote.report.kv_bytes_remote
    assert 0 < remote.egress_peak_gbps <= 110  # a 100 Gbit/s link, in fabric terms
    assert remote.chunks_ok >= 24
    assert remote.chunks_bad == 0
    assert "integrity: OK" in render(runs, topo)
    assert [ns for ns in Kernel.list_netns() if ns.startswith(f"fab.{fabric_name}.")] == []
