"""Where the memory fabric's pieces go (pure): switch process configs and node plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.errors import TopologyError
from fabric.memsw.deploy import switch_configs
from fabric.plan import plan_fabric
from fabric.run.memory import node_plans
from fabric.topology import load_topology, parse_topology

ROOT = Path(__file__).resolve().parent.parent


def test_single_switch_config() -> None:
    topo = load_topology(ROOT / "topologies" / "memsem-single.yaml")
    plan = plan_fabric(topo, backend="userspace", run_id="r1")
    cfg = switch_configs(plan)["msw"]
    assert [p["name"] for p in cfg["ports"]] == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    assert all(p["rate_bps"] == 200_000_000_000 and p["latency_ns"] == 100
               and p["credits"] == 64 for p in cfg["ports"])
    assert {w["name"]: w["port"] for w in cfg["windows"]} == {
        "hbm0": "gpu-0", "hbm1": "gpu-1", "hbm2": "gpu-2", "hbm3": "gpu-3"}
    assert cfg["multicast"] == [{"name": "bcast", "base": 0x80000000, "size": 1 << 20,
                                 "members": ["gpu-1", "gpu-2", "gpu-3"]}]
    assert cfg["reduce"] == [{"name": "tp", "members": ["gpu-0", "gpu-1", "gpu-2", "gpu-3"],
                              "dtype": "float32"},
                             {"name": "tp3", "members": ["gpu-1", "gpu-2", "gpu-3"],
                              "dtype": "bfloat16"}]
    assert cfg["switch_ports"] == []
    # bring-up starts one memory-switch daemon per switch, named for its files
    from fabric.memsw.deploy import daemons

    (spec,) = daemons(plan)
    assert (spec.node, spec.role, spec.module, spec.name) == (
        "msw", "memory", "fabric.memsw.node", "memswitch-msw")
    assert spec.config == cfg
    # each port's address is the neighbour's end of the link: where its datagrams go
    for lp in plan.links:
        port = next(p for p in cfg["ports"] if p["name"] == lp.b.node)
        assert port["address"] == lp.b.address


def test_two_tier_windows_lead_to_the_next_tier() -> None:
    topo = load_topology(ROOT / "topologies" / "memsem-two-tier.yaml")
    cfgs = switch_configs(plan_fabric(topo, backend="userspace", run_id="r1"))
    ports = {sw: {w["name"]: w["port"] for w in c["windows"]} for sw, c in cfgs.items()}
    assert ports["leaf-0"] == {"hbm0": "gpu-0", "hbm1": "gpu-1", "hbm2": "spine",
                               "hbm3": "spine"}
    assert ports["spine"] == {"hbm0": "leaf-0", "hbm1": "leaf-0", "hbm2": "leaf-1",
                              "hbm3": "leaf-1"}
    assert cfgs["leaf-0"]["switch_ports"] == ["spine"]
    assert sorted(cfgs["spine"]["switch_ports"]) == ["leaf-0", "leaf-1"]
    # the reduce group's members share leaf-1: only it sums for them
    assert [g["name"] for g in cfgs["leaf-1"]["reduce"]] == ["pair"]
    assert cfgs["leaf-0"]["reduce"] == []
    assert cfgs["spine"]["reduce"] == []


def test_reduce_members_on_different_switches_is_an_error() -> None:
    text = (ROOT / "topologies" / "memsem-two-tier.yaml").read_text().replace(
        "members: [gpu-2, gpu-3]", "members: [gpu-1, gpu-3]")
    topo = parse_topology(text, source="t.yaml")
    with pytest.raises(TopologyError, match="reduce group pair: members gpu-1, gpu-3 do not "
                       "all hang off one memory switch"):
        switch_configs(plan_fabric(topo, backend="userspace", run_id="r1"))


def test_node_plans_window_from_the_link_queue() -> None:
    topo = load_topology(ROOT / "topologies" / "memsem-single.yaml")
    plan = plan_fabric(topo, backend="userspace", run_id="r1")
    plans = node_plans(plan, topo)
    assert sorted(plans) == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    p = plans["gpu-1"]
    assert p["windows"] == [{"name": "hbm1", "base": 0x01000000, "size": 4 << 20}]
    assert p["mcast"] == [{"name": "bcast", "base": 0x80000000, "size": 1 << 20}]
    assert plans["gpu-0"]["mcast"] == []
    gw = next(lp.a.address for lp in plan.links if lp.b.node == "gpu-1")
    assert p["gateway"] == gw
    # a third of the link's queue in outstanding transactions (256 B + 102 B each)
    queue = next(lp.b_queue_bytes for lp in plan.links if lp.b.node == "gpu-1")
    assert p["window"] == max(16, min(512, queue // 3 // (256 + 102)))


def test_fabric_check_refuses_what_bring_up_would(tmp_path: Path) -> None:
    """The spread reduce group fails `fabric check` too (it used to pass check and fail only
    after the kernel objects were built), at the group's line; nothing is built."""
    from click.testing import CliRunner

    from fabric.cli import cli

    path = tmp_path / "two.yaml"
    path.write_text((ROOT / "topologies" / "memsem-two-tier.yaml").read_text().replace(
        "members: [gpu-2, gpu-3]", "members: [gpu-1, gpu-3]"))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1)
                if "members: [gpu-1, gpu-3]" in text)
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith(
        f"fabric: {path}:{line}: reduce group pair: members gpu-1, gpu-3 do not all hang off")


def test_memory_runs_count_the_links_they_cross() -> None:
    """Links at memory switches, and a direct link between two memory hosts (their message
    passing takes it); not the RoCE side."""
    from fabric.run.memory import memory_links

    topo = load_topology(ROOT / "topologies" / "memsem-roce.yaml")
    assert memory_links(topo) == {"msw--gpu-0", "msw--gpu-1"}
    text = (ROOT / "topologies" / "memsem-roce.yaml").read_text().replace(
        "  - {endpoints: [leaf, store]}", "  - {endpoints: [leaf, store]}\n"
        "  - {endpoints: [gpu-0, gpu-1]}")
    topo = parse_topology(text, source="t.yaml")
    assert memory_links(topo) == {"msw--gpu-0", "msw--gpu-1", "gpu-0--gpu-1"}
