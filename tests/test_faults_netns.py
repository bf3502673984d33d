"""Faults for real (root): links that corrupt, duplicate and reorder leave a run clean, and a
sender that gets a bad chunk past the transports (`FABRIC_TEST_FAULT`) fails the run's
integrity check, which names what went wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fabric.metrics import integrity_counts
from fabric.metrics.output import load_run
from fabric.net import lifecycle
from fabric.net.kernel import Kernel
from fabric.node.faults import FAULT_ENV
from fabric.plan import plan_fabric
from fabric.run.traffic import run_traffic
from fabric.topology import parse_topology
from fabric.traffic import schedule

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[1]

FAULTY_LINKS = """
name: {name}
nodes: {{a: {{}}, b: {{}}, c: {{}}}}
defaults:
  link: {{rate: 100Mbps, delay: 2ms, corrupt: 1%, duplicate: 1%, reorder: 5%}}
links:
  - {{endpoints: [a, b]}}
  - {{endpoints: [c, b], reverse: {{corrupt: 0.5%, reorder: 10%}}}}
traffic:
  seed: 5
  flows:
    - {{name: kv-udp, pattern: one-to-one, from: a, to: b, transport: udp, tokens: 40,
       requests: 2}}
    - {{name: kv-tcp, pattern: one-to-one, from: c, to: b, transport: tcp, tokens: 40,
       requests: 2}}
"""


def ours(name: str) -> list[str]:
    return [ns for ns in Kernel.list_netns() if ns.startswith(f"fab.{name}.")]


def netem_options(state: lifecycle.FabricState) -> dict[tuple[str, str], dict]:
    """Per (link, direction) the netem qdisc the kernel holds, read back over netlink: its
    duplicate and gap fields and its corrupt and reorder probabilities (kernel u32 units)."""
    out = {}
    with Kernel() as k:
        for lid, ends in state.links.items():
            for direction, (ns, dev) in (("forward", ends["a"]), ("reverse", ends["b"])):
                for q in k.handle(ns).get_qdiscs(index=k.ifindex(ns, dev)):
                    if q.get_attr("TCA_KIND") != "netem":
                        continue
                    opts = q.get_attr("TCA_OPTIONS")
                    corrupt = opts.get_attr("TCA_NETEM_CORRUPT")
                    reorder = opts.get_attr("TCA_NETEM_REORDER")
                    out[(lid, direction)] = {
                        "duplicate": opts["duplicate"], "gap": opts["gap"],
                        "corrupt": corrupt["prob_corrupt"] if corrupt else 0,
                        "reorder": reorder["prob_reorder"] if reorder else 0,
                    }
    return out


@pytest.mark.parametrize("backend", ["userspace", pytest.param("netem", marks=pytest.mark.netem)])
def test_links_that_corrupt_duplicate_and_reorder_leave_a_run_clean(backend, fabric_name,
                                                                    state_dir):
    from pyroute2.netlink.rtnl.tcmsg.common import percent2u32

    topo = parse_topology(FAULTY_LINKS.format(name=fabric_name))
    state = lifecycle.bring_up(plan_fabric(topo, backend=backend))
    try:
        qdiscs = netem_options(state) if backend == "netem" else {}
        res = run_traffic(state, topo, timeout=240)
    finally:
        lifecycle.remove_fabric(state)
    assert res.errors == []
    counts = integrity_counts(res.chunk_records, res.transfer_records)
    assert counts.ok, counts
    assert counts.transfers_ok == len(schedule(topo)) == 4
    if backend == "netem":
        # the kernel's netem carries each direction's probabilities, as `tc` would set them
        expected = {}
        for link in topo.links:
            for direction, shape in (("forward", link.forward), ("reverse", link.reverse)):
                expected[(link.name, direction)] = {
                    "duplicate": percent2u32(shape.duplicate_ppm / 10_000), "gap": 1,
                    "corrupt": percent2u32(shape.corrupt_ppm / 10_000),
                    "reorder": percent2u32(shape.reorder_ppm / 10_000)}
        assert qdiscs == expected
    else:
        # the engine really corrupted, duplicated and reordered packets of this run
        dirs = [d for link in res.links["links"].values() for d in link.values()]
        for key in ("packets_corrupted", "packets_duplicated", "packets_reordered"):
            assert sum(d.get(key, 0) for d in dirs) > 0, key
    assert ours(fabric_name) == []


# -- the integrity check catches what a transport got wrong -----------------------------------

PAIRS = """
name: {name}
nodes: {{a: {{}}, b: {{}}, c: {{}}}}
links:
  - {{endpoints: [a, b], rate: 1Gbps, delay: 1ms}}
  - {{endpoints: [c, b], rate: 1Gbps, delay: 1ms}}
traffic:
  flows:
    - {{name: kv-tcp, pattern: one-to-one, from: a, to: b, transport: tcp, tokens: 16,
       requests: 3}}
    - {{name: kv-udp, pattern: one-to-one, from: c, to: b, transport: udp, tokens: 16,
       requests: 3}}
"""
TIMEOUT = 10  # seconds: a transfer the fault leaves unfinished ends the run here

# (integrity line, the faulted transfers' status): one faulted transfer per sender (a, c),
# the last of each flow (its highest transfer id)
FAULTS = {
    "corrupt": ("integrity: FAILED: 2 corrupt, 2 transfers failed", "corrupt"),
    "truncate": ("integrity: FAILED: 2 missing, 2 transfers failed", "incomplete"),
    "duplicate": ("integrity: FAILED: 2 duplicate, 2 transfers failed", "duplicate"),
}


def fabric_run(path: Path, out: Path, state_dir: Path,
               fault: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FABRIC_STATE_DIR": str(state_dir)}
    env.pop(FAULT_ENV, None)
    if fault is not None:
        env[FAULT_ENV] = fault
    return subprocess.run(
        [sys.executable, "-m", "fabric.cli", "run", str(path), "--links", "userspace",
         "--out", str(out), "--timeout", str(TIMEOUT)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=TIMEOUT + 120, check=False)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_integrity_check_catches_a_fault_past_the_transports(fault, fabric_name, state_dir,
                                                                 tmp_path):
    path = tmp_path / "pairs.yaml"
    path.write_text(PAIRS.format(name=fabric_name))
    proc = fabric_run(path, tmp_path / "out", state_dir, fault)
    line, status = FAULTS[fault]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert line in proc.stdout.splitlines(), proc.stdout
    assert proc.stderr.rstrip().endswith("fabric: the run had errors (see above)")
    assert "Traceback" not in proc.stderr
    summary, transfers = load_run(tmp_path / "out")
    # on TCP and on UDP alike: the last transfer of each flow, and only it, went wrong
    last = {f: max(t.request for t in transfers if t.flow == f) for f in ("kv-tcp", "kv-udp")}
    assert {(t.flow, t.request, t.status) for t in transfers} == {
        (f, r, status if r == last[f] else "ok") for f in last for r in range(last[f] + 1)}
    stuck = fault in ("corrupt", "truncate")  # their transfers never complete
    assert summary["meta"]["timed_out"] is stuck
    assert (f"error: the run did not finish within {TIMEOUT} s; what arrived by then is "
            "reported" in proc.stdout.splitlines()) is stuck
    assert ours(fabric_name) == []


def test_a_clean_run_exits_0_with_integrity_ok(fabric_name, state_dir, tmp_path):
    path = tmp_path / "pairs.yaml"
    path.write_text(PAIRS.format(name=fabric_name))
    proc = fabric_run(path, tmp_path / "out", state_dir, None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    transfers = schedule(parse_topology(path.read_text()))
    chunks = 2 * len(transfers)  # 16 tokens of Llama 3.1 8B: two 1 MiB chunks each
    assert f"integrity: OK ({chunks} chunks, {len(transfers)} transfers)" in \
        proc.stdout.splitlines(), proc.stdout
    assert ours(fabric_name) == []
