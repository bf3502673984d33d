"""`fabric run` for real: node processes move KV chunks through a built fabric (root)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from fabric.kv import get_model
from fabric.kv.layout import transfer_bytes
from fabric.metrics import integrity_counts, summarise
from fabric.net import lifecycle
from fabric.net.kernel import Kernel
from fabric.plan import plan_fabric
from fabric.run.traffic import run_traffic
from fabric.topology import parse_topology

pytestmark = pytest.mark.netns

LOSSY = """
name: {name}
nodes: {{a: {{}}, b: {{}}, c: {{}}}}
links:
  - {{endpoints: [a, b], rate: 100Mbps, delay: 2ms, loss: 1%}}
  - {{endpoints: [c, b], rate: 100Mbps, delay: 2ms, loss: 1%}}
traffic:
  seed: 3
  flows:
    - {{name: kv-udp, pattern: one-to-one, from: a, to: b, transport: udp, tokens: 40,
       requests: 2}}
    - {{name: kv-tcp, pattern: one-to-one, from: c, to: b, transport: tcp, tokens: 40,
       requests: 2}}
"""

STAR = """
name: {name}
time_scale: 10
classes:
  - {{name: kv, dscp: 26, priority: 3}}
  - {{name: bulk, dscp: 10, priority: 1, tcp_cc: reno}}
generate:
  - leaf_spine:
      spines: 2
      leaves: 2
      hosts_per_leaf: 2
      uplink: {{rate: 4Gbps, delay: 50us}}
      downlink: {{rate: 2Gbps, delay: 50us}}
traffic:
  model: qwen3-8b
  flows:
    - {{name: in, pattern: incast, from: [host-0, host-1, host-2], to: host-3, class: kv,
       tokens: 32, requests: 2}}
    - {{name: a2a, pattern: all-to-all, from: [host-0, host-1, host-2], class: kv,
       tokens: 16}}
    - {{name: pd, pattern: pd, from: [host-0, host-1], to: [host-2, host-3], class: kv,
       requests: 4, rate: 200/s, prompt: {{mean: 64, sigma: 0.3, min: 16, max: 256}}}}
    - {{name: bg, pattern: bulk, from: host-3, to: host-0, class: bulk, size: 3MiB}}
"""


def ours(name: str) -> list[str]:
    return [ns for ns in Kernel.list_netns() if ns.startswith(f"fab.{name}.")]


def run(text: str, backend: str = "userspace", **kw):
    topo = parse_topology(text)
    state = lifecycle.bring_up(plan_fabric(topo, backend=backend))
    try:
        return topo, run_traffic(state, topo, **kw)
    finally:
        lifecycle.remove_fabric(state)


@pytest.mark.parametrize("backend", ["userspace", pytest.param("netem", marks=pytest.mark.netem)])
def test_kv_over_one_percent_loss_arrives_intact_on_udp_and_tcp(backend, fabric_name,
                                                                 state_dir):
    topo, res = run(LOSSY.format(name=fabric_name), backend, timeout=240)
    assert res.errors == []
    counts = integrity_counts(res.chunk_records, res.transfer_records)
    assert counts.ok, counts
    assert counts.transfers_ok == 4
    per_request = transfer_bytes(get_model("llama-3.1-8b"), 40)
    assert {r.nbytes for r in res.transfer_records} == {per_request}
    assert sum(c.nbytes for c in res.chunk_records if c.ok) >= 4 * per_request
    # the links really dropped packets: the transports recovered them (netem's qdisc counts
    # its random losses as drops)
    lost = sum(d.get("drops_loss", 0) + d.get("drops_queue", 0)
               for dirs in res.links["links"].values() for d in dirs.values())
    assert lost > 0
    # how late the userspace engine wrote what it held for the 2 ms delays, during this run
    # alone (each release writes at least one packet); the kernel's netem keeps no such count
    late = res.links.get("release_lateness")
    if backend == "userspace":
        delivered = sum(d.get("packets_out", 0) for dirs in res.links["links"].values()
                        for d in dirs.values())
        assert 0 < late["releases"] <= delivered
        assert late["p50_under_us"] <= late["p99_under_us"] <= late["max_under_us"]
    else:
        assert late is None
    assert ours(fabric_name) == []


def test_patterns_classes_and_time_scale(fabric_name, state_dir):
    topo, res = run(STAR.format(name=fabric_name), timeout=120)
    assert res.errors == []
    planned = {(t.flow, t.dst, t.request) for t in res.transfers}
    got = {(r.flow, r.dst, r.request) for r in res.transfer_records if r.status == "ok"}
    assert got == planned
    assert len([t for t in res.transfers if t.flow == "a2a"]) == 6  # 3 x 2 ordered pairs
    summary = summarise(res.chunk_records, res.transfer_records, time_scale=topo.time_scale,
                        meta={}, links=res.links)
    assert summary["integrity"]["ok"]
    assert set(summary["classes"]) == {"kv", "bulk"}
    assert set(summary["kinds"]) == {"incast", "all-to-all", "pd", "bulk"}
    kv = summary["classes"]["kv"]["chunk_latency"]
    # fabric time is wall-clock / time_scale
    assert kv["fabric_ns"]["p50"] == pytest.approx(kv["wall_ns"]["p50"] / 10, rel=1e-6)
    # pd arrivals are open loop: their transfers start (become ready) at their planned
    # offsets, and any wait behind other transfers to the same peer counts in their latency
    pd = sorted((t for t in res.transfers if t.flow == "pd"), key=lambda t: t.start_ns)
    starts = {r.request: r.t_start_ns for r in res.transfer_records if r.flow == "pd"}
    for tr in pd:
        late_ms = (starts[tr.request] - res.started_ns - tr.start_ns) / 1e6
        assert -1 < late_ms < 50


def test_killed_node_is_named_and_nothing_is_left(fabric_name, state_dir):
    text = LOSSY.format(name=fabric_name).replace("tokens: 40", "tokens: 400").replace(
        "requests: 2", "requests: 5")
    topo = parse_topology(text)
    state = lifecycle.bring_up(plan_fabric(topo, backend="userspace"))
    victim_ns = state.netns_of("b")

    def kill_b() -> None:
        # the receiver: find the node process living in b's namespace, SIGKILL it
        time.sleep(2.0)
        ino = os.stat(f"/run/netns/{victim_ns}").st_ino
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.stat(f"/proc/{pid}/ns/net").st_ino == ino:
                        os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass

    killer = threading.Thread(target=kill_b)
    killer.start()
    try:
        res = run_traffic(state, topo, timeout=60)
    finally:
        killer.join()
        lifecycle.remove_fabric(state)
    assert any(e.startswith("node b died mid-run (killed by SIGKILL)") for e in res.errors), \
        res.errors
    assert not integrity_counts(res.chunk_records, res.transfer_records).ok
    # every planned transfer is accounted for, the lost ones as failed
    assert len(res.transfer_records) == len(res.transfers)
    assert {r.status for r in res.transfer_records} <= {"failed"}
    assert ours(fabric_name) == []


def test_run_timeout_reports_what_arrived(fabric_name, state_dir):
    text = LOSSY.format(name=fabric_name).replace("tokens: 40", "tokens: 2000")
    topo, res = run(text, timeout=2)
    assert res.timed_out
    assert any("did not finish within 2 s" in e for e in res.errors)
    assert any(r.status == "incomplete" for r in res.transfer_records)
    assert ours(fabric_name) == []


def test_ctrl_c_during_run_removes_everything_quietly(fabric_name, state_dir, tmp_path):
    """SIGINT (a terminal's Ctrl-C) mid-run: one line, exit 130, no namespace, no traceback."""
    import subprocess
    import sys

    path = tmp_path / "t.yaml"
    path.write_text(LOSSY.format(name=fabric_name).replace("tokens: 40", "tokens: 2000"))
    env = {**os.environ, "FABRIC_STATE_DIR": str(state_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fabric.cli", "run", str(path), "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    while not ours(fabric_name) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)  # the traffic is running
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.rstrip().endswith("fabric: interrupted")
    assert "Traceback" not in err
    assert ours(fabric_name) == []


def test_a_node_that_has_everything_still_answers_late_resends(fabric_name, state_dir,
                                                               monkeypatch):
    """With no completion ACK at all, every UDP sender must resend its last segment and be
    answered by a receiver that already has everything: it lingers until the run ends
    instead of leaving its senders to the timeout."""
    import fabric.node.udp as udp

    monkeypatch.setattr(udp, "COMPLETION_ACKS", 0)  # the forked nodes inherit it
    text = LOSSY.format(name=fabric_name).replace("loss: 1%", "loss: 0%")
    topo, res = run(text, timeout=60)
    assert not res.timed_out, res.errors
    assert res.errors == []
    counts = integrity_counts(res.chunk_records, res.transfer_records)
    assert counts.ok
    assert counts.transfers_ok == len(res.transfers)
    assert ours(fabric_name) == []
