"""`fabric explain` and `fabric graph`: pure, no root, nothing built. Every shipped file
explains and draws; each warning fires on a small fabric made to trip it and stays quiet on
one that does not; class properties are said enforced only where a mechanism enforces them."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fabric.cli import cli, default_topology_path
from fabric.errors import FabricError
from fabric.explain import (
    LINK_CLASSES,
    LINK_ECN,
    LINK_NOT_LOSSLESS,
    NOT_ENFORCED,
    enforcement,
    fifo_egress,
)
from fabric.explain.draw import draw_png, to_dot, to_mermaid
from fabric.explain.render import SCHEMA, render_json, render_text
from fabric.kinds import explain, load, validate
from fabric.topology import parse_topology
from fabric.topology.document import roce_classes

REPO = Path(__file__).resolve().parent.parent
FILES = [*sorted((REPO / "topologies").glob("*.yaml")), Path(default_topology_path())]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="fabric")


def topo_of(text: str):  # noqa: ANN201 - a Topology
    return validate(parse_topology(textwrap.dedent(text), source="t.yaml"))


def codes(ex) -> list[str]:  # noqa: ANN001 - an Explanation
    return [w.code for w in ex.warnings]


# A small RoCE leaf-spine: 2 spines, 2 leaves, 2 hosts each, at time_scale 1000.
ROCE = """\
name: t
time_scale: 1000
switches: {{buffer: {buffer}, pfc: {pfc}}}
defaults:
  link: {{mtu: 9000}}
classes:
{classes}
generate:
  - leaf_spine:
      spines: {spines}
      leaves: 2
      hosts_per_leaf: 2
      uplink: {{{rate}delay: 1us}}
      downlink: {{{rate}delay: 1us}}
traffic:
  flows:
{flows}
"""

CLASSES = """\
  - {name: kv, dscp: 26, priority: 3, lossless: true, weight: 4,
     ecn: {kmin: 100KB, kmax: 400KB, pmax: 0.2}}
  - {name: bulk, dscp: 10, priority: 1}
  - {name: control, dscp: 48, priority: 6, strict: true}"""


def roce(flows: str, *, classes: str = CLASSES, buffer: str = "4MiB", pfc: str = "true",
         spines: int = 2, switches: bool = True,
         shaped: bool = True):  # noqa: ANN201 - a Topology
    text = ROCE.format(buffer=buffer, pfc=pfc, classes=classes, spines=spines,
                       rate="rate: 100Gbps, " if shaped else "",
                       flows=textwrap.indent(textwrap.dedent(flows), "    "))
    if not switches:
        text = "\n".join(line for line in text.splitlines() if not line.startswith("switches"))
    return topo_of(text)


# ---- every shipped file ---------------------------------------------------------------------


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_shipped_file_explains_and_draws(path: Path) -> None:
    topo = load(path)
    ex = explain(topo)
    text = render_text(ex)
    assert text.startswith(f"{topo.name} (")
    assert re.search(r"^\d+ warnings?$", text, re.MULTILINE)
    data = json.loads(json.dumps(render_json(ex)))
    assert data["schema"] == SCHEMA
    # the file's classes, and the default RoCE control class where it runs RoCE
    assert [c["name"] for c in data["classes"]] == [c.name for c in roce_classes(topo)]
    flows = topo.traffic.flows if topo.traffic is not None else ()
    assert [f["name"] for f in data["flows"]] == [f.name for f in flows]
    for f in data["flows"]:
        assert f["streams"]
        assert all(s["path"] for s in f["streams"])
    assert len(data["links"]) == 2 * len(topo.links)
    mermaid = to_mermaid(topo, ex)
    assert "graph TD" in mermaid
    assert mermaid.count(" ---|") == len(topo.links)
    dot = to_dot(topo, ex)
    assert dot.count(" -- ") == len(topo.links)
    assert dot.count("{") == dot.count("}")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_cli_explains_every_shipped_file(fmt: str) -> None:
    for path in FILES:
        result = invoke("explain", str(path), "--format", fmt)
        assert result.exit_code == 0, (path, result.output)
        if fmt == "json":
            assert json.loads(result.stdout)["schema"] == SCHEMA


# ---- the shipped files say what the issue saw ------------------------------------------------


def test_leaf_spine_lossless_class_without_switches_is_warned() -> None:
    ex = explain(load(REPO / "topologies/leaf-spine.yaml"))
    kv = next(w for w in ex.warnings if w.code == "lossless-unenforced")
    assert kv.cls == "kv"
    assert "no RoCE switches" in kv.text
    assert "line 18" in kv.text
    view = next(v for v in ex.classes if v.cls.name == "kv")
    # its links queue by class, but drop at the tail: lossless holds nowhere
    assert set(view.enforced["lossless"]) == {LINK_NOT_LOSSLESS}
    assert set(view.enforced["queue"]) == {f"{LINK_CLASSES}: own queue, weight 1"}
    assert "fifo-shared" not in codes(ex)  # kv and bulk have a queue each towards host-1


def test_default_demo_explains_its_ecmp_collision() -> None:
    ex = explain(load(default_topology_path()))
    w = next(w for w in ex.warnings if w.code == "ecmp-collisions")
    assert w.cls == "kv"
    assert "2 streams" in w.text
    assert "2 equal-cost paths" in w.text
    assert "probability 50%" in w.text
    flow = next(f for f in ex.flows if f.name == "prefill-to-decode")
    hop = flow.pairs[0].path[1]
    assert (hop.egress.sender, hop.egress.receiver, hop.alternatives) == (
        "leaf-0", "spine-0", ("spine-1",))


def test_roce_files_enforce_lossless_with_pfc() -> None:
    for name in ("roce-incast.yaml", "roce-mixed.yaml", "roce-alltoall.yaml"):
        ex = explain(load(REPO / "topologies" / name))
        assert "lossless-unenforced" not in codes(ex), name
        kv = next(v for v in ex.classes if v.cls.name == "kv")
        assert kv.pfc
        assert all(p.xoff_bytes > p.xon_bytes for p in kv.pfc)
        assert NOT_ENFORCED not in kv.enforced["lossless"]


def test_incast_bottleneck_is_the_receivers_downlink() -> None:
    ex = explain(load(REPO / "topologies/roce-incast.yaml"))
    b = ex.flows[0].bottleneck
    assert b is not None
    assert (b.egress.sender, b.egress.receiver) == ("leaf-3", "host-7")
    assert b.streams == 6
    assert b.bdp_bytes > 0
    assert b.egress.per_class
    assert b.egress.queue.startswith("RoCE switch leaf-3 port")


def test_the_roce_control_class_is_shown_with_its_queue() -> None:
    declared = explain(load(REPO / "topologies/roce-incast.yaml"))
    control = next(v for v in declared.classes if v.control)
    assert (control.cls.name, control.declared, control.cls.queue_bytes) == (
        "control", True, 4 * 1024)
    text = render_text(declared)
    assert "control *" in text
    assert "  * the RoCE control class: every CNP, ACK and NAK leaves in it\n" in text
    assert "queue limit at each RoCE switch port: 4 KiB" in text
    default = explain(load(REPO / "topologies/roce-alltoall.yaml"))  # declares none
    control = next(v for v in default.classes if v.control)
    assert not control.declared
    assert "(the default: the file declares none)" in render_text(default)
    demo = explain(load(default_topology_path()))  # no RoCE and no class named control
    assert not any(v.control for v in demo.classes)


def test_a_class_queue_cap_is_the_queue_it_gets() -> None:
    capped = CLASSES.replace("{name: bulk, dscp: 10, priority: 1}",
                             "{name: bulk, dscp: 10, priority: 1, queue: 64KiB}")
    flow = "- {name: b, pattern: bulk, from: host-0, to: host-2, class: bulk, size: 1MiB}"
    ex = explain(roce(flow, classes=capped))
    hops = ex.flows[0].pairs[0].path
    assert [h.queue_bytes for h in hops[1:]] == [64 * 1024] * 3  # the switch egresses
    # the host's NIC queues by class too, and caps the class there alike
    assert hops[0].egress.mechanism == LINK_CLASSES
    assert hops[0].queue_bytes == 64 * 1024 < hops[0].egress.queue_bytes
    assert ex.flows[0].bottleneck is not None
    assert ex.flows[0].bottleneck.queue_bytes == 64 * 1024


# ---- enforcement: one function says what a plain link does -------------------------------


def test_plain_links_queue_by_class_but_are_not_lossless() -> None:
    topo = load(REPO / "topologies/roce-mixed.yaml")
    kv = topo.classes[0]
    e = fifo_egress(topo, "host-0", "leaf-0")
    assert e.per_class
    assert e.queue == "link class queue"
    assert enforcement(e, kv) == {"queue": f"{LINK_CLASSES}: own queue, weight 4",
                                  "lossless": LINK_NOT_LOSSLESS, "ecn": LINK_ECN}
    ex = explain(topo)
    switch = ex.egress[("leaf-3", "host-7")]
    assert enforcement(switch, kv)["queue"] == "RoCE switch egress: own queue, weight 4"
    assert enforcement(switch, topo.classes[2])["queue"] == (
        "RoCE switch egress: own queue, strict priority, at most 4 KiB")
    host = ex.egress[("host-0", "leaf-0")]  # the host's NIC: class queues, paused by the leaf
    assert host.per_class
    assert host.pfc is not None
    assert host.pfc.by == "leaf-0"
    assert "kernel TCP ignores pauses" in enforcement(host, kv)["lossless"]


def test_shared_queue_classes_are_named_per_hop() -> None:
    ex = explain(load(REPO / "topologies/leaf-spine.yaml"))
    checkpoint = next(f for f in ex.flows if f.name == "checkpoint")
    last = checkpoint.pairs[0].path[-1]
    # a shaped link queues by class: the checkpoint's queue is beside kv's, not shared
    assert (last.egress.receiver, last.shares_with, last.beside) == ("host-1", (), ("kv",))
    mixed = explain(load(REPO / "topologies/roce-mixed.yaml"))
    last = next(f for f in mixed.flows if f.name == "checkpoint").pairs[0].path[-1]
    assert (last.shares_with, last.beside) == ((), ("kv",))


# ---- warnings on crafted fabrics --------------------------------------------------------------


KV_FLOW = "- {name: kv, pattern: one-to-one, from: host-0, to: host-2, class: kv, tokens: 16}"


def test_lossless_warned_where_pfc_is_off_and_not_where_on() -> None:
    assert "lossless-unenforced" not in codes(explain(roce(KV_FLOW)))
    off = explain(roce(KV_FLOW, pfc="false"))
    w = next(w for w in off.warnings if w.code == "lossless-unenforced")
    assert "switches.pfc is off" in w.text
    none = explain(roce(KV_FLOW, switches=False))
    assert "no RoCE switches" in next(w.text for w in none.warnings
                                      if w.code == "lossless-unenforced")


def test_ecn_thresholds_above_the_queue_are_warned() -> None:
    big = CLASSES.replace("kmax: 400KB", "kmax: 3MiB")
    ex = explain(roce(KV_FLOW, classes=big.replace("lossless: true, ", ""), buffer="2MiB"))
    w = next(w for w in ex.warnings if w.code == "ecn-above-queue")
    assert w.cls == "kv"
    assert "kmax 3 MiB" in w.text
    assert "never reaches its kmax" in w.text
    never = CLASSES.replace("kmin: 100KB, kmax: 400KB", "kmin: 3MiB, kmax: 3MiB")
    ex = explain(roce(KV_FLOW, classes=never.replace("lossless: true, ", ""), buffer="2MiB"))
    assert "never marks there" in next(w.text for w in ex.warnings
                                       if w.code == "ecn-above-queue")
    assert "ecn-above-queue" not in codes(explain(roce(KV_FLOW)))  # 400 KB in 4 MiB


def test_ecn_thresholds_without_anything_to_mark_are_warned() -> None:
    # without switches, shaped links mark by class (the link engine)
    ex = explain(roce(KV_FLOW, switches=False))
    assert "ecn-unenforced" not in codes(ex)
    kv = next(v for v in ex.classes if v.cls.name == "kv")
    assert set(kv.enforced["ecn"]) == {LINK_ECN}
    # unshaped links queue nothing of their own: nothing marks
    assert "ecn-unenforced" in codes(explain(roce(KV_FLOW, switches=False, shaped=False)))
    assert "ecn-unenforced" not in codes(explain(roce(KV_FLOW)))


CONTROL_BULK = ("- {name: ctl, pattern: bulk, from: host-1, to: host-2, class: control, "
                "size: 8MiB}")
CONTROL_PD = ("- {name: ctl, pattern: pd, from: host-1, to: host-2, class: control, "
              "tokens: 1, requests: 4, rate: 10/s}")


def test_strict_class_at_full_load_starves_the_others() -> None:
    ex = explain(roce(f"{KV_FLOW}\n{CONTROL_BULK}"))
    w = next(w for w in ex.warnings if w.code == "strict-starves")
    assert w.cls == "control"
    assert "back to back" in w.text
    assert "kv" in w.text
    assert "leaf-1 -> host-2" in w.text
    # a trickle of strict requests leaves the port to the others
    assert "strict-starves" not in codes(explain(roce(f"{KV_FLOW}\n{CONTROL_PD}")))
    # alone on its path it starves nobody
    assert "strict-starves" not in codes(explain(roce(CONTROL_BULK)))
    # without switches, the shaped links serve it first just the same
    plain = explain(roce(f"{KV_FLOW}\n{CONTROL_BULK}", switches=False))
    w = next(w for w in plain.warnings if w.code == "strict-starves")
    assert "link class queue" in w.text
    # and on unshaped links (one FIFO) strict is not enforced at all: nothing to starve with
    assert "strict-starves" not in codes(explain(roce(f"{KV_FLOW}\n{CONTROL_BULK}",
                                                      switches=False, shaped=False)))


def test_few_streams_over_many_paths_are_ecmp_collisions() -> None:
    two = ("- {name: kv, pattern: incast, from: [host-0, host-1], to: host-2, class: kv, "
           "tokens: 16}")
    ex = explain(roce(two, spines=4))
    w = next(w for w in ex.warnings if w.code == "ecmp-collisions")
    assert "2 streams" in w.text
    assert "4 equal-cost paths" in w.text
    assert "at most 2 of the 4 paths carry anything, and two streams share one with " \
        "probability 25%" in w.text
    # one spine: a single path, nothing to collide on
    assert "ecmp-collisions" not in codes(explain(roce(two, spines=1)))
    # one stream cannot collide with itself
    assert "ecmp-collisions" not in codes(explain(roce(KV_FLOW, spines=4)))


def test_open_loop_arrivals_above_the_bottleneck_are_overload() -> None:
    ex = explain(load(default_topology_path()))  # ~33 MiB requests at 600/s into 100G
    w = next(w for w in ex.warnings if w.code == "overloaded")
    assert (w.flow, w.cls) == ("prefill-to-decode", "kv")
    assert "at its bottleneck leaf-1 -> host-2 (100 Gbit/s), 1.7x what it carries" in w.text
    slow = ("- {name: kv, pattern: pd, from: host-0, to: host-2, class: kv, tokens: 16, "
            "requests: 4, rate: 10/s}")
    assert "overloaded" not in codes(explain(roce(slow)))
    assert "overloaded" not in codes(explain(roce(KV_FLOW)))  # back to back: closed loop


def test_fifo_shared_only_where_classes_share_a_plain_queue() -> None:
    both = f"{KV_FLOW}\n{CONTROL_BULK}"
    assert "fifo-shared" not in codes(explain(roce(both, switches=False)))  # class queues
    ex = explain(roce(both, switches=False, shaped=False))  # no rate: one FIFO
    w = next(w for w in ex.warnings if w.code == "fifo-shared")
    assert "leaf-1 -> host-2" in w.text
    assert "kv" in w.text
    assert "control" in w.text
    assert "fifo-shared" not in codes(explain(roce(both)))


# ---- selection and bad input ------------------------------------------------------------------


def test_class_and_flow_select() -> None:
    topo = load(REPO / "topologies/leaf-spine.yaml")
    ex = explain(topo, cls="bulk")
    assert [v.cls.name for v in ex.classes] == ["bulk"]
    assert [f.name for f in ex.flows] == ["checkpoint"]
    assert all(w.cls in (None, "bulk") for w in ex.warnings)
    ex = explain(topo, flow="kv-a2a")
    assert [f.name for f in ex.flows] == ["kv-a2a"]
    assert [v.cls.name for v in ex.classes] == ["kv"]
    assert len(ex.flows[0].pairs) == 12
    text = render_text(ex, all_pairs=True)
    assert "more streams" not in text
    assert text.count("host-3 -> host-2:") == 1


def test_unknown_class_or_flow_lists_what_exists() -> None:
    topo = load(REPO / "topologies/leaf-spine.yaml")
    with pytest.raises(FabricError, match=r"no class 'gold' \(classes: kv, bulk, control\)$"):
        explain(topo, cls="gold")
    with pytest.raises(FabricError,
                       match=r"no flow 'x' \(flows: kv-incast, kv-a2a, checkpoint\)$"):
        explain(topo, flow="x")
    with pytest.raises(FabricError, match=r"no flow 'x' \(flows: none: the file has no"):
        explain(load(REPO / "topologies/lpu-ring.yaml"), flow="x")


def test_cli_unknown_class_is_one_line() -> None:
    path = str(REPO / "topologies/roce-incast.yaml")
    result = invoke("explain", path, "--class", "gold")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"fabric: {path}: no class 'gold' (classes: kv, control)"]
    result = invoke("explain", path, "--flow", "nope")
    assert result.stderr.splitlines() == [f"fabric: {path}: no flow 'nope' (flows: kv-incast)"]


def test_cli_explain_json_and_text() -> None:
    path = str(REPO / "topologies/leaf-spine.yaml")
    data = json.loads(invoke("explain", path, "--format", "json", "--class", "kv").stdout)
    assert [c["name"] for c in data["classes"]] == ["kv"]
    assert data["classes"][0]["lossless"] is True
    assert data["classes"][0]["pfc"] == []
    assert "lossless-unenforced" in [w["code"] for w in data["warnings"]]
    hop = data["flows"][0]["streams"][0]["path"][1]
    assert hop["alternatives"] == ["spine-1"]
    assert hop["served_by"] == "link class queue"
    assert hop["per_class"] is True
    text = invoke("explain", path).stdout
    assert "warning: class kv (line 18) is lossless, but nothing on its paths enforces PFC" \
        in text
    assert "bottleneck: leaf-3 -> host-7 at 200 Gbit/s" in text
    assert invoke("explain").exit_code == 0  # the embedded demo


# ---- graph ----------------------------------------------------------------------------------


def test_graph_text_formats() -> None:
    path = str(REPO / "topologies/roce-mixed.yaml")
    mermaid = invoke("graph", path).stdout
    assert mermaid.splitlines()[0].startswith("%% fabric graph of roce-mixed")
    assert "graph TD" in mermaid
    assert 'n5{{"leaf-3"}}' in mermaid
    assert '---|"100 Gbit/s, 1 us [kv, bulk]"|' in mermaid
    assert re.search(r"^  linkStyle \d+ stroke:#d62728,stroke-width:3px$", mermaid, re.M)
    dot = invoke("graph", path, "--format", "dot").stdout
    assert dot.count("{") == dot.count("}")
    assert re.search(r'^graph "roce-mixed" \{$', dot, re.M)
    assert '"leaf-3" -- "host-7" [label="100 Gbit/s, 1 us", color="#d62728:#1f77b4"' in dot
    assert '"class control" [shape=plaintext' in dot


def test_graph_writes_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(REPO / "topologies/leaf-spine.yaml")
    out = tmp_path / "g.dot"
    result = invoke("graph", path, "--format", "dot", "--out", str(out))
    assert result.exit_code == 0
    assert result.stdout == f"wrote {out}\n"
    assert out.read_text().startswith("// fabric graph of leaf-spine")
    png = tmp_path / "g.png"
    assert invoke("graph", path, "--format", "png", "--out", str(png)).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.chdir(tmp_path)
    result = invoke("graph", path, "--format", "png")
    assert result.stdout == "wrote leaf-spine.png\n"
    assert (tmp_path / "leaf-spine.png").exists()


def test_png_of_a_fabric_without_switches_or_classes(tmp_path: Path) -> None:
    topo = load(REPO / "topologies/lpu-ring.yaml")
    made = draw_png(topo, explain(topo), tmp_path / "ring.png")
    assert made.stat().st_size > 1000
