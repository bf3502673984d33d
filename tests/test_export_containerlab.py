"""`fabric export --to containerlab`: the lab files validate against containerlab's published
schema (tests/data/containerlab), links, addresses and routes follow the plan, netem.sh follows
the link shapes, a multi-host export keeps leaves with their hosts and joins hosts by VXLAN,
the placement file's errors name FILE:LINE, and what containerlab cannot express is warned."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from fabric.cli import cli
from fabric.errors import FabricError, TopologyError
from fabric.export import ExportOptions, export_topology
from fabric.export.containerlab import (
    LINK_KEYS,
    NETEM_FLAGS,
    NETEM_MAX_KBIT,
    NOT_EXPORTED,
    VXLAN_OVERHEAD,
)
from fabric.export.placement import groups
from fabric.kinds import load
from fabric.plan import NODE_SYSCTLS, plan_fabric
from fabric.topology.document import Topology
from fabric.topology.linkprops import LINK_PROPERTIES

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "tests" / "data" / "containerlab" / "clab.schema.json"
SHIPPED = sorted(ROOT.glob("topologies/*.yaml")) + [ROOT / "fabric" / "data" / "default.yaml"]


def _schema() -> dict[str, Any]:
    """The vendored schema, with its `[\\p{N}\\p{L}]` (Unicode letters and digits, which
    Python's `re` cannot parse) read as the same set `[^\\W_]` (see SOURCE.md)."""
    text = SCHEMA_PATH.read_text().replace(r"[\\p{N}\\p{L}]", r"[^\\W_]")
    assert r"\\p{" not in text, "a new Unicode property class: translate it here"
    return json.loads(text)


SCHEMA = _schema()
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)
VXLAN_VALIDATOR = jsonschema.Draft7Validator(
    {"definitions": SCHEMA["definitions"], "$ref": "#/definitions/link-type-vxlan"})
# draft-07 ignores `prefixItems`: the brief link form's endpoint patterns, checked by hand
ENDPOINT_RES = [re.compile(i["pattern"]) for i in
                SCHEMA["definitions"]["link-config-short"]["properties"]["endpoints"]
                ["prefixItems"]]


def _valid(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in VALIDATOR.iter_errors(doc)]
    assert errors == []
    for link in doc["topology"].get("links", []):
        if "endpoints" in link and "type" not in link:
            assert len(link["endpoints"]) == 2
            for pattern, ep in zip(ENDPOINT_RES, link["endpoints"], strict=True):
                assert pattern.search(ep), ep
        else:
            assert list(VXLAN_VALIDATOR.iter_errors(link)) == []
    return doc


def _export(topo: Topology, **kw: Any) -> Any:  # noqa: ANN401 - an Export
    return export_topology(topo, "containerlab", ExportOptions(**kw))


def _netem(script: str) -> dict[tuple[str, str], dict[str, str]]:
    """(container, interface) -> {flag: value} from netem.sh."""
    out = {}
    for line in script.splitlines():
        if not line.strip().startswith("containerlab "):
            continue
        words = shlex.split(line)
        assert words[:4] == ["containerlab", "tools", "netem", "set"]
        args = words[4:]
        pairs = dict(zip(args[::2], args[1::2], strict=True))
        out[(pairs.pop("-n"), pairs.pop("-i"))] = pairs
    return out


def test_the_schema_is_self_contained() -> None:
    refs = re.findall(r'"\$ref":\s*"([^"]*)"', SCHEMA_PATH.read_text())
    assert refs
    assert all(r.startswith("#/definitions/") for r in refs)


def test_the_schema_catches_a_bad_lab() -> None:
    """The validator is live: a wrong kind and a bad address are refused."""
    for node in ({"kind": "no-such-kind"}, {"kind": "linux", "mgmt-ipv4": "300.1.1.1"},
                 {"kind": "linux", "exec": "not a list"}, {"kind": "linux", "bogus": 1}):
        bad = {"name": "x", "topology": {"nodes": {"a": node}}}
        assert list(VALIDATOR.iter_errors(bad)), node
    good = {"name": "x", "topology": {"nodes": {"a": {"kind": "linux",
                                                      "mgmt-ipv4": "172.20.20.2"}}}}
    assert list(VALIDATOR.iter_errors(good)) == []
    vxlan = {"type": "vxlan", "endpoint": {"node": "a", "interface": "eth1"},
             "remote": "10.0.0.1", "vni": 0, "dst-port": 4789}
    assert list(VXLAN_VALIDATOR.iter_errors(vxlan))  # VNI 0 is out of range


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_topology_exports_a_valid_lab(path: Path) -> None:
    topo = load(path)
    result = _export(topo)
    assert sorted(result.files) == sorted([f"{topo.name}.clab.yml", "netem.sh", "agents.json",
                                           "secret", "fabric-hosts", "Dockerfile",
                                           "README.md"])
    doc = _valid(result.files[f"{topo.name}.clab.yml"])
    assert doc["name"] == topo.name
    assert list(doc["topology"]["nodes"]) == list(topo.nodes)
    assert len(doc["topology"]["links"]) == len(topo.links)
    for w in result.warnings:
        assert w in result.files["README.md"]


def test_nodes_run_the_agent_with_the_plan_addresses_routes_and_sysctls() -> None:
    topo = load(ROOT / "topologies" / "leaf-spine.yaml")
    plan = plan_fabric(topo, backend="netem", run_id="x")
    result = _export(topo)
    doc = _valid(result.files["leaf-spine.clab.yml"])
    nodes = doc["topology"]["nodes"]
    mgmt = ipaddress.ip_network(doc["mgmt"]["ipv4-subnet"])
    assert doc["mgmt"]["network"] == "fabric-leaf-spine"
    addrs = [n["mgmt-ipv4"] for n in nodes.values()]
    assert len(set(addrs)) == len(addrs)
    assert all(ipaddress.ip_address(a) in mgmt for a in addrs)

    # links: fabric's ethK is the container's eth(K+1), in fabric's order, with the MTU
    for link, lp in zip(doc["topology"]["links"], plan.links, strict=True):
        k_a, k_b = int(lp.a.dev[3:]), int(lp.b.dev[3:])
        assert link == {"endpoints": [f"{lp.a.node}:eth{k_a + 1}", f"{lp.b.node}:eth{k_b + 1}"],
                        "mtu": 9000}

    for name, node in nodes.items():
        assert node["kind"] == "linux"
        assert node["image"] == "fabric-node:0.1.0"
        # --host: the machine reports name (a container's hostname is its own)
        assert node["cmd"] == ("fabric agent --listen 0.0.0.0:7400 --secret-file "
                               f"/etc/fabric/secret --node {name} --host localhost")
        assert "secret:/etc/fabric/secret:ro" in node["binds"]
        ex = node["exec"]
        assert f"ip addr replace {plan.nodes[name].loopback}/32 dev lo" in ex
        for lp in plan.links:
            for end in (lp.a, lp.b):
                if end.node == name:
                    dev = f"eth{int(end.dev[3:]) + 1}"
                    assert f"ip addr replace {end.address}/30 dev {dev}" in ex
        # every sysctl of the plan, as containerlab sysctls or (the one its linux kind
        # overrides) as an exec command
        for key, value in NODE_SYSCTLS:
            dotted = key.replace("/", ".")
            assert (node["sysctls"].get(dotted) == value
                    or f"sysctl -w {dotted}={value}" in ex), dotted
        routes = [c for c in ex if c.startswith("ip route replace")]
        assert len(routes) == sum(1 for r in plan.kernel_routes
                                  if r.netns == plan.nodes[name].netns)

    # ECMP: spine-0 reaches spine-1 over all four leaves, one nexthop each
    r = next(r for r in plan.kernel_routes
             if r.netns == plan.nodes["spine-0"].netns and r.dst == "198.19.0.2/32")
    assert len(r.nexthops) == 4
    hops = " ".join(f"nexthop via {gw} dev eth{int(dev[3:]) + 1}" for gw, dev in r.nexthops)
    assert f"ip route replace 198.19.0.2/32 src 198.19.0.1 {hops}" in nodes["spine-0"]["exec"]
    # a single-homed host's default route covers the loopbacks, keeping eth0's default
    assert any(c.startswith("ip route replace 198.19.0.0/16 via ")
               for c in nodes["host-0"]["exec"])
    assert not any(" default " in c for n in nodes.values() for c in n["exec"])

    agents = json.loads(result.files["agents.json"])
    assert agents == {"fabric": "leaf-spine", "version": "0.1.0", "secret_file": "secret",
                      "agents": {n: {"address": f"{nodes[n]['mgmt-ipv4']}:7400",
                                     "host": "localhost"} for n in topo.nodes}}
    assert re.fullmatch(r"[0-9a-f]{64}\n", result.files["secret"])
    assert _export(topo).files["secret"] != result.files["secret"]  # fresh each time
    assert result.files["fabric-hosts"].splitlines()[0] == "198.19.0.1\tspine-0"
    assert "FROM python:3.11" in result.files["Dockerfile"]
    assert "iproute2" in result.files["Dockerfile"]
    assert '"fabric", "agent"' in result.files["Dockerfile"]


def test_netem_lines_follow_the_link_shapes() -> None:
    topo = load(ROOT / "topologies" / "two-cluster.yaml")
    plan = plan_fabric(topo, backend="netem", run_id="x")
    result = _export(topo)
    lines = _netem(result.files["netem.sh"])
    assert result.files["netem.sh"].startswith("#!/bin/sh\n")
    for lp in plan.links:
        for end, shape in ((lp.a, lp.link.forward), (lp.b, lp.link.reverse)):
            key = (f"clab-two-cluster-{end.node}", f"eth{int(end.dev[3:]) + 1}")
            flags = lines.get(key, {})
            assert flags.get("--rate") == (str(shape.rate_bps // 1000) if shape.rate_bps
                                           else None)
            assert ("--delay" in flags) == bool(shape.delay_ns)
    egress = lines[("clab-two-cluster-gw-local", "eth3")]
    assert egress == {"--delay": "5ms", "--jitter": "100us", "--loss": "0.01",
                      "--rate": "200000"}
    assert lines[("clab-two-cluster-gw-local", "eth1")] == {"--delay": "5us", "--rate": "800000"}


LINK_FILE = """\
name: shapes
nodes: {{a: {{}}, b: {{}}}}
links:
  - endpoints: [a, b]
{props}
"""


def _topo(tmp_path: Path, props: str, name: str = "t.yaml") -> Topology:
    path = tmp_path / name
    path.write_text(LINK_FILE.format(props=props))
    return load(path)


def test_every_property_and_flag(tmp_path: Path) -> None:
    topo = _topo(tmp_path, """\
    rate: 40Mbps
    delay: 5ms
    jitter: 1ms
    loss: 1.5%
    corrupt: 0.1%
    duplicate: 1%
    reorder: 25%
    queue: 100 packets
    ecn: 30KB
    mtu: 1400
    reverse: {rate: 10Mbps, loss: 0%, corrupt: 0%, duplicate: 0%, reorder: 0%}""")
    result = _export(topo)
    lines = _netem(result.files["netem.sh"])
    assert lines == {
        ("clab-shapes-a", "eth1"): {"--delay": "5ms", "--jitter": "1ms", "--loss": "1.5",
                                    "--rate": "40000", "--corruption": "0.1"},
        ("clab-shapes-b", "eth1"): {"--delay": "5ms", "--jitter": "1ms", "--rate": "10000"},
    }
    assert _valid(result.files["shapes.clab.yml"])["topology"]["links"] == [
        {"endpoints": ["a:eth1", "b:eth1"], "mtu": 1400}]
    text = "\n".join(result.warnings)
    assert "link duplicate not exported" in text
    assert "a--b ->" in text
    assert "link reorder not exported" in text
    assert "link queue not exported" in text
    assert re.search(r"link ecn threshold not exported: .*\(2: a--b ->, a--b <-\)", text)


def test_every_link_property_is_mapped_or_warned() -> None:
    """The table drives it: each property is a netem flag, a link key or a named gap."""
    keys = [p.key for p in LINK_PROPERTIES]
    handled = [*NETEM_FLAGS, *LINK_KEYS, *NOT_EXPORTED]
    assert sorted(keys) == sorted(handled)
    assert len(handled) == len(set(handled))


def test_values_containerlab_cannot_take_are_warned(tmp_path: Path) -> None:
    topo = _topo(tmp_path, "    rate: 100Gbps\n    delay: 1500ns\n    jitter: 0ms\n"
                 "    reverse: {rate: 500bps, delay: 400ns, jitter: 300ns}")
    result = _export(topo)
    lines = _netem(result.files["netem.sh"])
    assert lines == {("clab-shapes-a", "eth1"): {"--delay": "2us",
                                                 "--rate": str(NETEM_MAX_KBIT)}}
    text = "\n".join(result.warnings)
    assert "capped at 34359738 kbit/s" in text
    assert "a--b -> 100 Gbit/s" in text
    assert "rates below 1 kbit/s are not exported" in text
    assert "a--b <- 500" in text
    assert re.search(r"delays rounded to whole microseconds .*\(2: a--b ->, a--b <-\)", text)


def test_warnings_name_what_containerlab_cannot_express() -> None:
    leaf_spine = _export(load(ROOT / "topologies" / "leaf-spine.yaml")).warnings
    assert any(w.startswith("time_scale 2000 is not applied") for w in leaf_spine)
    assert any(w.startswith("link ecn threshold not exported") for w in leaf_spine)
    assert not any(w.startswith("RoCE switch") for w in leaf_spine)

    roce = _export(load(ROOT / "topologies" / "roce-incast.yaml")).warnings
    switches = [w for w in roce if w.startswith("RoCE switch nodes")]
    assert switches
    assert "spine-0" in switches[0]
    assert "leaf-0" in switches[0]
    assert any("python -m fabric.switch.node" in w for w in roce)
    assert any(w.startswith("traffic classes' switch settings") for w in roce)

    memory = _export(load(ROOT / "topologies" / "memsem-single.yaml")).warnings
    assert any(w.startswith("memory switches (`memory:`) are not exported") for w in memory)
    lpu = _export(load(ROOT / "topologies" / "lpu-ring.yaml")).warnings
    assert any("`lpu:` section" in w for w in lpu)
    pair = _export(load(ROOT / "topologies" / "pair.yaml")).warnings
    assert pair == []


def test_two_hosts_keep_leaves_with_their_hosts_and_cross_by_vxlan() -> None:
    topo = load(ROOT / "topologies" / "leaf-spine.yaml")
    plan = plan_fabric(topo, backend="netem", run_id="x")
    result = _export(topo, hosts=2)
    docs = {h: _valid(result.files[f"leaf-spine-{h}.clab.yml"]) for h in ("host-1", "host-2")}
    agents = json.loads(result.files["agents.json"])["agents"]
    where = {n: a["host"] for n, a in agents.items()}
    assert sorted(where) == sorted(topo.nodes)
    for h, doc in docs.items():
        assert sorted(doc["topology"]["nodes"]) == sorted(n for n in where if where[n] == h)
    # each leaf is on the host of its hosts; spines are spread
    for lp in plan.links:
        if lp.a.node.startswith("leaf") and lp.b.node.startswith("host"):
            assert where[lp.a.node] == where[lp.b.node]
    assert where["spine-0"] != where["spine-1"]

    addresses = {"host-1": "192.0.2.1", "host-2": "192.0.2.2"}
    vnis: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for h, doc in docs.items():
        for link in doc["topology"]["links"]:
            if link.get("type") == "vxlan":
                vnis.setdefault(link["vni"], []).append((h, link))
            else:
                a, b = (ep.split(":")[0] for ep in link["endpoints"])
                assert where[a] == where[b] == h
    cross = [lp for lp in plan.links if where[lp.a.node] != where[lp.b.node]]
    assert cross
    assert all(lp.a.node.startswith(("leaf", "spine")) for lp in cross)
    assert len(vnis) == len(cross)  # one VNI per crossing link, both sides share it
    for pair_ in vnis.values():
        assert sorted(h for h, _ in pair_) == ["host-1", "host-2"]
        for h, link in pair_:
            other = "host-2" if h == "host-1" else "host-1"
            assert link["remote"] == addresses[other]
            assert link["dst-port"] == 4789
            assert link["mtu"] == 1500 - VXLAN_OVERHEAD
    # agents on other hosts are reached through the host's published ports
    for h, doc in docs.items():
        for name, node in doc["topology"]["nodes"].items():
            (port,) = node["ports"]
            host_port = port.split(":")[0]
            assert agents[name]["address"] == f"{addresses[h]}:{host_port}"
    assert any("placeholders" in w and "agents.json" in w for w in result.warnings)
    assert any("MTU lowered to 1450" in w for w in result.warnings)
    script = result.files["netem.sh"]
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)  # it parses
    assert 'case "${1:-}" in' in script
    assert "  host-2)" in script


def test_more_hosts_than_groups_is_refused() -> None:
    with pytest.raises(FabricError, match=r"--hosts 3: .*pair.yaml has 2 group"):
        _export(load(ROOT / "topologies" / "pair.yaml"), hosts=3)


PLACEMENT = """\
hosts:
  host-a: {address: 10.0.0.1}
  host-b: {address: 10.0.0.2}
nodes:
  a: host-a
  b: host-b
"""


def test_a_placement_file_places_the_nodes(tmp_path: Path) -> None:
    topo = _topo(tmp_path, "    rate: 40Mbps\n    delay: 1ms")
    placement = tmp_path / "place.yaml"
    placement.write_text(PLACEMENT)
    result = _export(topo, placement=placement)
    a = _valid(result.files["shapes-host-a.clab.yml"])
    b = _valid(result.files["shapes-host-b.clab.yml"])
    assert a["topology"]["links"] == [{
        "type": "vxlan", "endpoint": {"node": "a", "interface": "eth1"}, "remote": "10.0.0.2",
        "vni": 1000, "dst-port": 4789, "mtu": 1450,
        "labels": {"fabric-link": "a--b", "fabric-peer": "b:eth1"}}]
    assert b["topology"]["links"][0]["remote"] == "10.0.0.1"
    agents = json.loads(result.files["agents.json"])["agents"]
    assert agents == {"a": {"address": "10.0.0.1:7401", "host": "host-a"},
                      "b": {"address": "10.0.0.2:7401", "host": "host-b"}}
    assert not any("placeholders" in w for w in result.warnings)


@pytest.mark.parametrize(("text", "line", "message"), [
    (PLACEMENT.replace("  b: host-b\n", "  b: host-b\n  c: host-a\n"), 7,
     "nodes.c: unknown node 'c'"),
    (PLACEMENT.replace("b: host-b", "b: host-z"), 6, "nodes.b: unknown host 'host-z'"),
    (PLACEMENT.replace("  b: host-b\n", ""), 5, "nodes: every node must be placed; missing: b"),
    (PLACEMENT.replace("10.0.0.2", "10.0.0.300"), 3,
     "hosts.host-b.address: bad address '10.0.0.300'"),
    (PLACEMENT.replace("10.0.0.2", "10.0.0.1"), 3, "address 10.0.0.1 is host host-a's too"),
    (PLACEMENT.replace("host-b: {address: 10.0.0.2}", "host-b: {addr: 10.0.0.2}"), 3,
     "hosts.host-b.addr: unknown key 'addr'"),
    (PLACEMENT + "  a: host-b\n", 7, "duplicate node 'a'"),
    (PLACEMENT.replace("nodes:", "nodez:"), 4, "unknown key 'nodez'"),
])
def test_placement_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int,
                                                 message: str) -> None:
    topo = _topo(tmp_path, "    rate: 40Mbps")
    placement = tmp_path / "place.yaml"
    placement.write_text(text)
    with pytest.raises(TopologyError) as e:
        _export(topo, placement=placement)
    assert str(e.value).startswith(f"{placement}:{line}: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_writes_the_export(tmp_path: Path) -> None:
    out = tmp_path / "lab"
    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(ROOT / "topologies" / "leaf-spine.yaml"),
                              "--to", "containerlab", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"wrote {out / 'leaf-spine.clab.yml'}" in res.output
    assert "warning: time_scale 2000 is not applied" in res.output
    assert os.access(out / "netem.sh", os.X_OK)
    assert (out / "secret").stat().st_mode & 0o777 == 0o600  # the key: its owner's only
    assert (out / "agents.json").stat().st_mode & 0o777 == 0o644
    _valid((out / "leaf-spine.clab.yml").read_text())
    readme = (out / "README.md").read_text()
    assert "docker build -t fabric-node:0.1.0 -f DIR/Dockerfile" in readme
    assert "containerlab deploy -t leaf-spine.clab.yml" in readme
    assert "keep it private" in readme
    assert f"fabric run --agents DIR/agents.json {ROOT / 'topologies' / 'leaf-spine.yaml'}" \
        in readme
    assert json.loads((out / "agents.json").read_text())["fabric"] == "leaf-spine"

    again = runner.invoke(cli, ["export", str(ROOT / "topologies" / "pair.yaml"),
                                "--to", "containerlab", "--out", str(out)])
    assert again.exit_code == 1
    assert "is not empty" in again.output

    unknown = runner.invoke(cli, ["export", str(ROOT / "topologies" / "pair.yaml"),
                                  "--to", "gns3", "--out", str(tmp_path / "other")])
    assert unknown.exit_code == 1
    assert "unknown export target 'gns3' (choose: containerlab" in unknown.output
    assert not (tmp_path / "other").exists()


def test_cli_multi_host_with_placement(tmp_path: Path) -> None:
    topo_path = tmp_path / "t.yaml"
    topo_path.write_text(LINK_FILE.format(props="    rate: 40Mbps"))
    placement = tmp_path / "place.yaml"
    placement.write_text(PLACEMENT)
    out = tmp_path / "lab"
    res = CliRunner().invoke(cli, ["export", str(topo_path), "--to", "containerlab",
                                   "--placement", str(placement), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("*.clab.yml")) == ["shapes-host-a.clab.yml",
                                                              "shapes-host-b.clab.yml"]
    bad = CliRunner().invoke(cli, ["export", str(topo_path), "--to", "containerlab",
                                   "--placement", str(tmp_path / "missing.yaml"),
                                   "--out", str(tmp_path / "lab2")])
    assert bad.exit_code == 1
    assert "cannot read placement file" in bad.output


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_topology_splits_over_two_hosts(path: Path) -> None:
    """Valid labs on both hosts, every link once per side, or a refusal that says why."""
    topo = load(path)
    if len(groups(topo)) < 2:  # one switch with everything on it
        with pytest.raises(FabricError, match=r"group\(s\) of nodes that stay on one machine"):
            _export(topo, hosts=2)
        return
    result = _export(topo, hosts=2)
    docs = [_valid(result.files[f"{topo.name}-host-{i}.clab.yml"]) for i in (1, 2)]
    nodes = [n for d in docs for n in d["topology"]["nodes"]]
    assert sorted(nodes) == sorted(topo.nodes)
    veth = sum(1 for d in docs for link in d["topology"].get("links", [])
               if "type" not in link)
    vxlan = sum(1 for d in docs for link in d["topology"].get("links", [])
                if link.get("type") == "vxlan")
    assert veth + vxlan // 2 == len(topo.links)
    assert vxlan % 2 == 0


def test_the_runner_reads_the_exported_agents(tmp_path: Path) -> None:
    """agents.json and the secret as `fabric run --agents` reads them (fabric.node.agent)."""
    from fabric.export import write_export
    from fabric.node.agent import load_agents

    topo = load(ROOT / "topologies" / "leaf-spine.yaml")
    for hosts, out in ((1, tmp_path / "one"), (2, tmp_path / "two")):
        result = _export(topo, hosts=hosts)
        write_export(result, out)
        book = load_agents(out / "agents.json", topo.name, topo.nodes)
        assert sorted(book.agents) == sorted(topo.nodes)
        assert book.key == result.files["secret"].strip().encode()
        entry = book.agents["host-0"]
        address, port = entry.address
        if hosts == 1:
            assert (address, port, entry.host) == ("172.100.100.8", 7400, "localhost")
        else:
            assert address in ("192.0.2.1", "192.0.2.2")
            assert port > 7400
            assert entry.host in ("host-1", "host-2")
