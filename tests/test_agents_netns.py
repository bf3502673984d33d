"""Runs driven through node agents, for real (root): the fabric is built here, and each host
node's agent runs inside that node's namespace with mount and PID namespaces of its own (as
in a container), reached over a management bridge. `fabric run --agents` runs from the
management namespace, as a runner on another machine would. The shipped pair, leaf-spine and
RoCE incast files must give the same integrity and, within noise, the same figures as the
forked path; a fabric built elsewhere (no local state of its name) runs through its agents
alone; a dead agent is named, and a refused or unreachable one leaves nothing running."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric.net import lifecycle

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parent.parent
PORT = 7400


def _sh(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr.strip()}"


class Lab:
    """A built fabric, a management network and the agents of some of its nodes."""

    def __init__(self, tmp: Path, state_dir: Path) -> None:
        self.tmp, self.state_dir = tmp, state_dir
        self.mgmt = f"fmg-{secrets.token_hex(3)}"
        self.agents: dict[str, tuple[subprocess.Popen, Path]] = {}
        self.key = tmp / "secret"
        self.key.write_text(secrets.token_hex(32))
        self.env = {**os.environ, "FABRIC_STATE_DIR": str(state_dir)}
        self.addresses: dict[str, str] = {}
        self.index = 0
        _sh("ip", "netns", "add", self.mgmt)
        _sh("ip", "-n", self.mgmt, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", self.mgmt, "addr", "add", "172.31.0.1/16", "dev", "br0")
        _sh("ip", "-n", self.mgmt, "link", "set", "br0", "up")
        _sh("ip", "-n", self.mgmt, "link", "set", "lo", "up")

    def copy(self, shipped: str, name: str) -> Path:
        """A shipped topology under another fabric name (nothing else changes)."""
        text = (ROOT / shipped).read_text()
        text, n = re.subn(r"(?m)^name: .*$", f"name: {name}", text, count=1)
        assert n == 1
        path = self.tmp / f"{name}.yaml"
        path.write_text(text)
        return path

    def fabric(self, *argv: str, check: bool = True, mgmt: bool = True
               ) -> subprocess.CompletedProcess:
        """`fabric ARGV` in the management namespace (where the runner reaches the agents),
        or (`mgmt=False`) here: `ip netns exec` gives its command a mount namespace of its
        own, so the namespaces a fabric built there mounts would not be seen outside."""
        where = ["ip", "netns", "exec", self.mgmt] if mgmt else []
        proc = subprocess.run([*where, sys.executable, "-m", "fabric.entry", *argv],
                              env=self.env, cwd=self.tmp, capture_output=True, text=True,
                              timeout=600)
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def up(self, path: Path) -> lifecycle.FabricState:
        self.fabric("up", str(path), "--links", "userspace", mgmt=False)
        name = path.stem
        st = lifecycle.FabricState.load(name, root=self.state_dir)
        assert st is not None
        return st

    def start_agents(self, st: lifecycle.FabricState, nodes: list[str]) -> None:
        for node in nodes:
            self.index += 1
            addr = f"172.31.{self.index // 250}.{self.index % 250 + 2}"
            ns = st.netns_of(node)
            outer = f"{self.mgmt[4:]}m{self.index}"
            _sh("ip", "link", "add", outer, "netns", self.mgmt, "type", "veth", "peer",
                "name", "mgmt0", "netns", ns)
            _sh("ip", "-n", self.mgmt, "link", "set", outer, "master", "br0", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{addr}/16", "dev", "mgmt0")
            _sh("ip", "-n", ns, "link", "set", "mgmt0", "up")
            log = self.tmp / f"agent-{node}.log"
            with open(log, "w") as err:
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", ns, "unshare", "--mount", "--pid", "--fork",
                     "--mount-proc", "--kill-child=SIGTERM", sys.executable, "-m",
                     "fabric.entry", "agent", "--listen", f"{addr}:{PORT}", "--secret-file",
                     str(self.key), "--node", node, "--host", f"machine-{node}"],
                    stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=self.env)
            self.agents[node] = (proc, log)
            self.addresses[node] = addr
        deadline = time.monotonic() + 60
        for node, (proc, log) in self.agents.items():
            while "serving node" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"agent {node} did not start"
                time.sleep(0.05)

    def agents_file(self, name: str, *, key: str = "secret",
                    addresses: dict[str, str] | None = None) -> Path:
        path = self.tmp / f"agents-{name}.json"
        path.write_text(json.dumps({
            "fabric": name, "secret_file": key,
            "agents": {n: {"address": f"{a}:{PORT}", "host": f"machine-{n}"}
                       for n, a in (addresses or self.addresses).items()}}))
        return path

    def log(self, node: str) -> str:
        return self.agents[node][1].read_text()

    def agent_pid(self, node: str) -> int:
        """The agent itself: the child of `unshare --fork` (PID 1 of its PID namespace)."""
        kids = _children(self.agents[node][0].pid)
        assert len(kids) == 1, kids
        return kids[0]

    def close(self) -> None:
        # `unshare --fork` ignores SIGTERM; its death hands the agent SIGTERM (--kill-child)
        for proc, _ in self.agents.values():
            proc.kill()
        for proc, _ in self.agents.values():
            proc.wait()
        subprocess.run(["ip", "netns", "del", self.mgmt], capture_output=True)


@pytest.fixture
def lab(tmp_path: Path, state_dir: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path, state_dir)
    try:
        yield lab
    finally:
        lab.close()  # the fabrics themselves: state_dir's clean-up


def _hosts(st: lifecycle.FabricState) -> list[str]:
    return sorted(n for n in st.nodes if n.startswith("host-") or n in ("a", "b"))


def _summary(d: Path) -> dict:
    return json.loads((d / "summary.json").read_text())


def _goodput(summary: dict) -> float:
    return float(summary["total"]["goodput"]["fabric_bps"])


def _chunk_p50(summary: dict) -> float:
    return float(summary["total"]["chunk_latency"]["fabric_ns"]["p50"])


def _ok(summary: dict) -> tuple[int, int]:
    integ = summary["integrity"]
    assert integ["ok"], integ
    return integ["transfers_ok"], integ["chunks_ok"]


@pytest.mark.parametrize("shipped", ["topologies/pair.yaml", "topologies/leaf-spine.yaml"])
def test_a_run_through_agents_matches_the_forked_run(lab, fabric_name, shipped):
    path = lab.copy(shipped, fabric_name)
    st = lab.up(path)
    nodes = _hosts(st)
    lab.start_agents(st, nodes)
    agents = lab.agents_file(fabric_name)
    lab.fabric("run", str(path), "--out", "forked")
    through = lab.fabric("run", str(path), "--agents", str(agents), "--out", "agents")
    forked_s, agent_s = _summary(lab.tmp / "forked"), _summary(lab.tmp / "agents")
    assert _ok(agent_s) == _ok(forked_s)
    ratio = _goodput(agent_s) / _goodput(forked_s)
    assert 0.7 < ratio < 1.43, (ratio, through.stdout)
    ratio = _chunk_p50(agent_s) / _chunk_p50(forked_s)
    assert 0.6 < ratio < 1.67, (ratio, through.stdout)
    machines = agent_s["meta"]["machines"]
    # which node ran where, and every clock estimate holds the true offset (0: one host)
    senders = {n for n in nodes if f"node {n} for" in lab.log(n)}
    assert set(machines["nodes"]) == senders
    assert senders  # the nodes of the traffic ran in the agents' namespaces
    for clock in machines["nodes"].values():
        assert abs(clock["offset_ns"]) <= clock["error_ns"] < 50_000_000
    assert machines["flows"], "every node is its own machine: every flow crosses machines"
    assert "agents: " in through.stdout
    assert "one-way latencies cross machines for" in through.stdout
    # the node processes ran in the agents' PID namespaces, not forked by the runner
    for n in senders:
        assert f"running traffic node {n}" in lab.log(n)


def test_a_roce_run_through_agents_matches_the_forked_run(lab, fabric_name):
    """roce-incast run forked and through agents: the same transfers, goodput within the
    bounds, and PFC holding (no lossless drop) both ways, at the file's time_scale (2000).
    PFC can only hold while the host keeps up (a switch process stalled longer than its
    headroom lasts in host time reads the late packets all at once): this run lost 52
    lossless packets in one CI run of the whole suite, and beside two busy processes failed 2
    of 3 times, while the switch wrote its statistics in one piece (ms of stall every 2 s);
    written in slices, 6 of 6 passed beside two busy processes."""
    path = lab.copy("topologies/roce-incast.yaml", fabric_name)
    st = lab.up(path)
    lab.start_agents(st, _hosts(st))
    agents = lab.agents_file(fabric_name)
    lab.fabric("run", str(path), "--out", "forked")
    lab.fabric("run", str(path), "--agents", str(agents), "--out", "agents")
    forked = json.loads((lab.tmp / "forked" / "comparison.json").read_text())
    through = json.loads((lab.tmp / "agents" / "comparison.json").read_text())
    assert len(forked["variants"]) == len(through["variants"]) >= 1
    for f, a in zip(forked["variants"], through["variants"], strict=True):
        assert f["variant"] == a["variant"]
        assert a["integrity"]["ok"]
        assert f["integrity"]["ok"]
        assert a["transfers_ok"] == f["transfers_ok"] == f["transfers"]
        ratio = a["goodput_bps"] / f["goodput_bps"]
        assert 0.6 < ratio < 1.67, ratio
        assert a["drops_lossless"] == f["drops_lossless"] == 0  # PFC held through agents


def test_lpu_nodes_run_through_agents_on_their_own_clocks(lab, fabric_name):
    """The LPU runner syncs each node's clock by Go/Sync times, which reach an agent's node
    on its own clock, and reads its arrival times back onto the runner's."""
    path = lab.copy("topologies/lpu-ring.yaml", fabric_name)
    st = lab.up(path)
    lab.start_agents(st, sorted(st.nodes))
    lab.fabric("run", str(path), "--agents", str(lab.agents_file(fabric_name)), "--out", "lpu")
    runs = json.loads((lab.tmp / "lpu" / "lpu.json").read_text())["runs"]
    assert runs
    for r in runs:
        assert r["missing"] == 0, r
        # arrivals against the plan, across the agents' nodes: microseconds, not the
        # offset a clock moved the wrong way would add
        assert abs(r["lateness_ns"]["p50"]) < r["makespan_ns"], r
    for n in st.nodes:
        assert f"running lpu node {n}" in lab.log(n)


MEMORY = """
name: {name}
nodes: {{msw: {{kind: switch}}, gpu-0: {{}}, gpu-1: {{}}, gpu-2: {{}}}}
links:
  - {{endpoints: [msw, gpu-0]}}
  - {{endpoints: [msw, gpu-1]}}
  - {{endpoints: [msw, gpu-2]}}
memory:
  switches: [msw]
  windows:
    - {{name: hbm1, node: gpu-1, base: 0x01000000, size: 1MiB}}
  reduce:
    - {{name: tp, members: [gpu-0, gpu-1, gpu-2], dtype: float32}}
  runs:
    - {{name: loads, kind: loadstore, from: gpu-0, window: hbm1, sizes: [256], count: 20}}
    - {{name: allreduce, kind: allreduce, group: tp, sizes: [16KiB]}}
"""


def test_memory_nodes_run_through_agents_beside_the_local_memory_switch(lab, fabric_name):
    path = lab.tmp / f"{fabric_name}.yaml"
    path.write_text(MEMORY.format(name=fabric_name))
    st = lab.up(path)
    lab.start_agents(st, ["gpu-0", "gpu-1", "gpu-2"])
    lab.fabric("run", str(path), "--agents", str(lab.agents_file(fabric_name)), "--out", "mem")
    outcomes = json.loads((lab.tmp / "mem" / "memory.json").read_text())["outcomes"]
    assert {o["variant"] for o in outcomes if o["run"] == "allreduce"} >= {"switch", "ring"}
    assert all(o["ok"] for o in outcomes), outcomes
    for n in ("gpu-0", "gpu-1", "gpu-2"):
        assert f"running memory node {n}" in lab.log(n)


def test_a_fabric_built_elsewhere_runs_through_its_agents_alone(lab, fabric_name):
    built = lab.copy("topologies/pair.yaml", f"{fabric_name}x")  # "containerlab's" fabric
    st = lab.up(built)
    lab.start_agents(st, ["a", "b"])
    path = lab.copy("topologies/pair.yaml", fabric_name)  # same fabric, no state here
    agents = lab.agents_file(fabric_name)
    proc = lab.fabric("run", str(path), "--agents", str(agents), "--out", "remote")
    assert f"{fabric_name} is not running here" in proc.stderr
    s = _summary(lab.tmp / "remote")
    assert _ok(s) == (4, s["integrity"]["chunks_ok"])
    assert set(s["meta"]["machines"]["nodes"]) == {"a", "b"}
    assert lifecycle.FabricState.load(fabric_name, root=lab.state_dir) is None


def test_a_wrong_secret_is_refused_leaves_nothing_and_the_agent_serves_on(lab, fabric_name):
    path = lab.copy("topologies/pair.yaml", fabric_name)
    st = lab.up(path)
    lab.start_agents(st, ["a", "b"])
    (lab.tmp / "wrong").write_text(secrets.token_hex(32))
    bad = lab.fabric("run", str(path), "--agents", str(lab.agents_file(fabric_name,
                                                                        key="wrong")),
                     "--out", "bad", check=False)
    assert bad.returncode == 1
    assert re.search(r"fabric: the agent of node a at 172\.31\.\d+\.\d+:7400 refused the "
                     r"session \(a wrong secret\?", bad.stderr), bad.stderr
    assert "wrong secret" in lab.log("a")
    assert "Traceback" not in bad.stderr
    good = lab.fabric("run", str(path), "--agents", str(lab.agents_file(fabric_name)),
                      "--out", "good")
    assert "agents: 2 nodes" in good.stdout


def test_an_unreachable_agent_is_named_and_nothing_is_left_running(lab, fabric_name):
    path = lab.copy("topologies/pair.yaml", fabric_name)
    st = lab.up(path)
    lab.start_agents(st, ["a"])  # b's agent never started: its address answers nobody
    agents = lab.agents_file(fabric_name, addresses={"a": lab.addresses["a"],
                                                     "b": "172.31.9.9"})
    proc = lab.fabric("run", str(path), "--agents", str(agents), "--out", "x", check=False)
    assert proc.returncode == 1
    assert "cannot reach the agent of node b at 172.31.9.9:7400" in proc.stderr
    # a's session (opened first) ended with the runner: its agent has no node left
    agent_pid = lab.agents["a"][0].pid
    deadline = time.monotonic() + 10
    while _descendants(agent_pid) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _descendants(agent_pid) <= 1  # the agent itself (under unshare), no session


def test_a_node_whose_agent_dies_mid_run_is_named(lab, fabric_name):
    path = lab.copy("topologies/pair.yaml", fabric_name)
    st = lab.up(path)
    lab.start_agents(st, ["a", "b"])
    agents = lab.agents_file(fabric_name)
    runner = subprocess.Popen(["ip", "netns", "exec", lab.mgmt, sys.executable, "-m",
                               "fabric.entry", "run", str(path), "--agents", str(agents),
                               "--out", "dies"], env=lab.env, cwd=lab.tmp,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log_b = lab.agents["b"][1]
    deadline = time.monotonic() + 60
    while "running traffic node b" not in log_b.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.8)  # the transfers are under way (4 MiB at 40 Mbit/s takes ~1 s)
    os.kill(lab.agent_pid("b"), signal.SIGKILL)  # PID 1: its PID namespace goes with it
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 1, out + err
    assert re.search(r"node b died mid-run \(its agent's session at 172\.31\.\d+\.\d+:7400 "
                     r"closed\)", out), out


def _tree() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    return children


def _children(pid: int) -> list[int]:
    return _tree().get(pid, [])


def _descendants(pid: int) -> int:
    """How many processes descend from `pid` (read from /proc)."""
    children = _tree()
    todo, n = [pid], 0
    while todo:
        for c in children.get(todo.pop(), []):
            n += 1
            todo.append(c)
    return n
