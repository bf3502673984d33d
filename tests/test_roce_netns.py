"""RoCE switches and the RoCEv2-style transport for real: switch processes, queue pairs,
PFC and ECN through built fabrics (root), and a capture that tshark dissects as RoCEv2."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fabric.cli import cli
from fabric.metrics import integrity_counts
from fabric.net import lifecycle
from fabric.net.kernel import Kernel
from fabric.plan import plan_fabric
from fabric.run.roce import Variant, run_variants
from fabric.run.traffic import run_traffic
from fabric.topology import parse_topology

pytestmark = pytest.mark.netns

# Two senders behind one switch push KV to one receiver: the switch's port to r is the
# bottleneck (2:1), where queues, marks and pauses happen.
INCAST = """
name: {name}
time_scale: 1000
switches: {{buffer: {buffer}, pfc: true, int: true}}
defaults:
  link: {{mtu: 9000, rate: 100Gbps, delay: 1us}}
classes:
  - {{name: kv, dscp: 26, priority: 3, lossless: true, weight: 4,
     ecn: {{kmin: 20KB, kmax: 200KB, pmax: 0.5}}, cc: dcqcn}}
  - {{name: bulk, dscp: 10, priority: 1, tcp_cc: reno}}
nodes: {{s0: {{}}, s1: {{}}, r: {{}}, sw: {{kind: switch}}}}
links:
  - {{endpoints: [s0, sw]}}
  - {{endpoints: [s1, sw]}}
  - {{endpoints: [sw, r]}}
traffic:
  seed: 5
  flows:
    - {{name: kv, pattern: incast, from: [s0, s1], to: r, class: kv, transport: roce,
       tokens: 16, requests: 2}}
{extra}
"""


def _topo(tmp_path: Path, name: str, *, buffer: str = "4MiB", extra: str = ""):  # noqa: ANN202
    path = tmp_path / "roce.yaml"
    path.write_text(INCAST.format(name=name, buffer=buffer, extra=extra))
    return path, parse_topology(path.read_text(), source=str(path))


def _ours(name: str) -> list[str]:
    return [ns for ns in Kernel.list_netns() if ns.startswith(f"fab.{name}.")]


def test_cli_compares_policies_and_moves_every_chunk(tmp_path, fabric_name, state_dir) -> None:
    from click.testing import CliRunner

    from fabric.kv.layout import chunks_of
    from fabric.traffic import schedule

    path, topo = _topo(tmp_path, fabric_name)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(path), "--cc", "none,dcqcn,hpcc",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = result.stdout
    for label in ("none", "dcqcn", "hpcc"):
        assert f"\n{label} " in table
    # every policy's integrity line, counted from the chunks its receivers checked: all of
    # the planned chunks, each once and intact
    planned = sum(len(chunks_of(t)) for t in schedule(topo))
    for label in ("none", "dcqcn", "hpcc"):
        assert f"\n{label}: integrity: OK ({planned} chunks, 4 transfers)\n" in table
    comp = json.loads((out / "comparison.json").read_text())
    rows = {r["variant"]: r for r in comp["variants"]}
    assert set(rows) == {"none", "dcqcn", "hpcc"}
    for row in rows.values():
        assert row["transfers_ok"] == row["transfers"] == 4
        assert row["integrity"]["ok"]
        assert row["integrity"]["chunks_ok"] == planned
        assert row["errors"] == []
        assert row["drops_lossless"] == 0
        assert row["slowdown_p50"] >= 0.9  # nothing beats the ideal by more than noise
    # the 2:1 bottleneck builds a queue past kmin: marks, and CNPs back to the senders
    assert rows["dcqcn"]["ecn_marks"] > 0
    assert rows["dcqcn"]["cnps"] > 0
    # ACKs and CNPs crossed the switch in the (default) RoCE control class, DSCP 48
    for row in rows.values():
        control = row["by_class"]["control"]
        assert control["switch_packets"] > 0
        assert control["transfers"] == control["drops"] == 0
    assert any(line.split()[:2] == ["dcqcn", "control"] for line in table.splitlines())
    # HPCC reads INT, not ECN: it keeps the queue below the marking threshold mostly
    assert rows["hpcc"]["max_queue_bytes"] < rows["none"]["max_queue_bytes"]
    assert (out / "fct_slowdown.png").stat().st_size > 0
    assert (out / "queues.png").stat().st_size > 0
    for label in ("none", "dcqcn", "hpcc"):
        assert (out / label / "summary.json").exists()
    assert _ours(fabric_name) == []


def test_pfc_keeps_lossless_class_lossless_and_off_it_drops(tmp_path, fabric_name,
                                                            state_dir) -> None:
    # a buffer of a few packets: without PFC the incast overflows it
    _, topo = _topo(tmp_path, fabric_name, buffer="256KiB")
    state = lifecycle.bring_up(plan_fabric(topo, backend="userspace"))
    try:
        results = run_variants(state, topo, [Variant("none", True), Variant("none", False)],
                               tmp_path / "out", timeout=120, say=lambda _m: None)
    finally:
        lifecycle.remove_fabric(state)
    on, off = (r.metrics for r in results)
    assert results[0].errors == []
    assert results[1].errors == []
    assert on["transfers_ok"] == off["transfers_ok"] == 4  # go-back-N recovers the drops
    assert on["drops"] == 0
    assert on["drops_lossless"] == 0
    assert on["pauses"] > 0
    assert on["paused_ns"] > 0
    assert off["pauses"] == 0
    assert off["drops"] > 0
    assert off["retransmitted"] > 0
    assert _ours(fabric_name) == []


def test_kernel_tcp_crosses_the_switch_in_its_class(tmp_path, fabric_name, state_dir) -> None:
    extra = ("    - {name: ckpt, pattern: bulk, from: s1, to: r, class: bulk, transport: tcp,"
             " size: 2MiB}")
    _, topo = _topo(tmp_path, fabric_name, extra=extra)
    state = lifecycle.bring_up(plan_fabric(topo, backend="userspace"))
    try:
        result = run_traffic(state, topo, timeout=120)
        lifecycle.stop_switches(state)  # each writes its final statistics as it exits
        stats = json.loads((state.dir / "switch-sw.json").read_text())
        lifecycle.start_switches(plan_fabric(topo, backend="userspace", run_id=state.run_id),
                                 state)
        from click.testing import CliRunner

        status = CliRunner().invoke(cli, ["status"])
    finally:
        lifecycle.remove_fabric(state)
    assert result.errors == []
    assert integrity_counts(result.chunk_records, result.transfer_records).ok
    assert {t.flow for t in result.transfer_records} == {"kv", "ckpt"}
    assert status.exit_code == 0, status.output
    assert re.search(r"^  sw\s+running\s+\d+", status.stdout, re.MULTILINE), status.stdout
    # both classes left through the switch's port to r
    port = next(p for p in stats["ports"] if p["peer"] == "r")
    assert port["classes"]["kv"]["tx_packets"] > 0
    assert port["classes"]["bulk"]["tx_packets"] > 0


@pytest.mark.skipif(shutil.which("tshark") is None or shutil.which("tcpdump") is None,
                    reason="needs tcpdump and tshark (scripts/install.sh installs them)")
def test_capture_decodes_as_rocev2(tmp_path, fabric_name, state_dir) -> None:
    _, topo = _topo(tmp_path, fabric_name)
    state = lifecycle.bring_up(plan_fabric(topo, backend="userspace"))
    pcap = tmp_path / "roce.pcap"
    try:
        dev = next(lp.b.dev for lp in plan_fabric(topo, backend="userspace",
                                                  run_id=state.run_id).links
                   if lp.link.b == "r")
        cap = subprocess.Popen(["ip", "netns", "exec", state.netns_of("r"), "tcpdump", "-i",
                                dev, "-U", "-c", "200", "-w", str(pcap), "udp port 4791"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            result = run_traffic(state, topo, timeout=120)
        finally:
            cap.send_signal(signal.SIGINT)
            cap.wait(timeout=10)
    finally:
        lifecycle.remove_fabric(state)
    assert result.errors == []
    out = subprocess.run(["tshark", "-r", str(pcap), "-V"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "[Protocols in frame: raw:ip:udp:infiniband" in out
    # data packets as RoCEv2 lays them out (BTH, then RETH on the first of a message), and
    # the responder's ACKs with their AETH
    assert "Opcode: Reliable Connection (RC) - RDMA WRITE First (6)" in out
    assert "Opcode: Reliable Connection (RC) - RDMA WRITE Middle (7)" in out
    assert "RETH - RDMA Extended Transport Header" in out
    assert "Opcode: Reliable Connection (RC) - Acknowledge (17)" in out
    assert "AETH - ACK Extended Transport Header" in out


@pytest.mark.netem
def test_switch_forwards_on_veth_links_with_netem(tmp_path, fabric_name, state_dir) -> None:
    # veth links carry Ethernet: the switch addresses each frame to its neighbour's MAC
    extra = ("    - {name: ckpt, pattern: bulk, from: s1, to: r, class: bulk, transport: tcp,"
             " size: 1MiB}")
    _, topo = _topo(tmp_path, fabric_name, extra=extra)
    state = lifecycle.bring_up(plan_fabric(topo, backend="netem"))
    try:
        result = run_traffic(state, topo, timeout=120)
        time.sleep(0.4)
        stats = json.loads((state.dir / "switch-sw.json").read_text())
    finally:
        lifecycle.remove_fabric(state)
    assert result.errors == []
    assert integrity_counts(result.chunk_records, result.transfer_records).ok
    port = next(p for p in stats["ports"] if p["peer"] == "r")
    assert port["classes"]["kv"]["tx_packets"] > 0
    assert port["classes"]["bulk"]["tx_packets"] > 0
    assert _ours(fabric_name) == []
