"""Node agents without namespaces: a real `fabric agent` process on 127.0.0.1, the runner's
handshake against it (both proofs, the clock exchange), refusals and what they log, and
agents.json's errors. The agent path carrying real traffic is in test_agents_netns.py."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fabric import __version__
from fabric.errors import FabricError
from fabric.node import agent as agent_mod
from fabric.node.agent import AgentBook, AgentEntry, load_agents, read_key
from fabric.node.session import ClockEstimate, Hello, Welcome, encode, measure_clock


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Agent:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text(secrets.token_hex(32) + "\n")
    return path


@pytest.fixture
def start_agent(tmp_path: Path, key_file: Path) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def start(node: str = "a", host: str = "machine-1") -> Agent:
        port = _free_port()
        log = tmp_path / f"agent-{port}.log"
        with open(log, "w") as err:  # the child keeps its own copy
            proc = subprocess.Popen(
                [sys.executable, "-m", "fabric.entry", "agent", "--listen",
                 f"127.0.0.1:{port}", "--secret-file", str(key_file), "--node", node,
                 "--host", host], stdout=subprocess.DEVNULL, stderr=err)
        ag = Agent(proc, port, log)
        started.append(ag)
        deadline = time.monotonic() + 20
        while "serving node" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None, f"the agent exited: {log.read_text()}"
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.05)
        return ag

    yield start
    for ag in started:
        ag.proc.terminate()
        try:
            ag.proc.wait(10)
        except subprocess.TimeoutExpired:
            ag.proc.kill()
            ag.proc.wait()


def _book(port: int, key: bytes, node: str = "a") -> AgentBook:
    return AgentBook(source="agents.json", fabric="t", key=key,
                     agents={node: AgentEntry(node=node, host="machine-1",
                                              address=("127.0.0.1", port))})


def test_the_handshake_authenticates_both_ways_and_measures_the_clock(start_agent, key_file):
    ag = start_agent()
    sock, host, clock = agent_mod._open_session(_book(ag.port, read_key(key_file)), "a",
                                                "clock")
    sock.close()
    assert host == "machine-1"
    # the agent shares this host's CLOCK_MONOTONIC: the true offset is 0, which the
    # estimate must contain within its own error bound
    assert abs(clock.offset_ns) <= clock.error_ns
    assert 0 < clock.error_ns < 20_000_000


def test_a_wrong_secret_is_refused_and_logged_and_the_agent_serves_the_right_runner(
        start_agent, key_file):
    ag = start_agent()
    with pytest.raises(FabricError, match=r"agent of node a at 127\.0\.0\.1:\d+ refused the "
                                          r"session \(a wrong secret"):
        agent_mod._open_session(_book(ag.port, b"not-the-secret-at-all"), "a", "clock")
    deadline = time.monotonic() + 5
    while "wrong secret" not in ag.text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "refused 127.0.0.1:" in ag.text()
    assert "wrong secret" in ag.text()
    sock, _, _ = agent_mod._open_session(_book(ag.port, read_key(key_file)), "a", "clock")
    sock.close()
    assert ag.proc.poll() is None


def test_a_silent_peer_does_not_block_the_agent(start_agent, key_file):
    ag = start_agent()
    lurker = socket.create_connection(("127.0.0.1", ag.port))  # connects, never speaks
    try:
        t = time.monotonic()
        sock, _, _ = agent_mod._open_session(_book(ag.port, read_key(key_file)), "a", "clock")
        sock.close()
        assert time.monotonic() - t < 3
    finally:
        lurker.close()


def test_an_agent_refuses_another_node(start_agent, key_file):
    ag = start_agent(node="b")
    with pytest.raises(FabricError, match=r"agent at 127\.0\.0\.1:\d+ serves node b, not a"):
        agent_mod._open_session(_book(ag.port, read_key(key_file)), "a", "clock")


def test_sigterm_stops_the_agent(start_agent):
    ag = start_agent()
    ag.proc.terminate()
    assert ag.proc.wait(10) == 0
    assert "stopped (SIGTERM)" in ag.text()


def test_an_unreachable_agent_is_named_with_the_address():
    port = _free_port()
    with pytest.raises(FabricError, match=rf"cannot reach the agent of node a at "
                                          rf"127\.0\.0\.1:{port}: Connection refused"):
        agent_mod._open_session(_book(port, b"k" * 32), "a", "traffic")


# ---- peers that are not (honest) agents: served from a thread here --------------------


def _fake(script: Callable[[socket.socket], None]) -> tuple[int, threading.Thread]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            script(conn)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    return int(srv.getsockname()[1]), th


def _hello(version: str = __version__) -> bytes:
    return encode(Hello(version=version, node="a", host="x", nonce="00" * 16))


def test_an_agent_of_another_version_is_refused_by_name():
    def script(conn: socket.socket) -> None:
        conn.sendall(_hello("0.0.9"))
        conn.recv(1000)

    port, th = _fake(script)
    with pytest.raises(FabricError, match=rf"runs fabric 0\.0\.9; this is {__version__}"):
        agent_mod._open_session(_book(port, b"k" * 32), "a", "traffic")
    th.join(5)


def test_an_impostor_without_the_secret_is_not_trusted():
    def script(conn: socket.socket) -> None:
        conn.sendall(_hello())
        conn.recv(4096)
        conn.sendall(encode(Welcome(proof="ab" * 32)))
        time.sleep(0.5)

    port, th = _fake(script)
    with pytest.raises(FabricError, match="does not hold the secret"):
        agent_mod._open_session(_book(port, b"k" * 32), "a", "traffic")
    th.join(5)


def test_something_else_on_the_port_is_not_an_agent():
    port, th = _fake(lambda conn: conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n" + b"\0" * 64))
    with pytest.raises(FabricError, match=rf"127\.0\.0\.1:{port} \(the agent of node a in "
                                          r"agents.json\) is not a fabric agent"):
        agent_mod._open_session(_book(port, b"k" * 32), "a", "traffic")
    th.join(5)


def test_a_peer_that_never_speaks_times_out(monkeypatch):
    monkeypatch.setattr(agent_mod, "HANDSHAKE_TIMEOUT", 0.5)
    port, th = _fake(lambda conn: time.sleep(1.5))
    with pytest.raises(FabricError, match=r"did not answer within"):
        agent_mod._open_session(_book(port, b"k" * 32), "a", "traffic")
    th.join(5)


# ---- the clock estimate -----------------------------------------------------------------


def test_the_shortest_round_trip_bounds_the_offset():
    # true offset +1000: the node's clock reads 1000 more than ours
    samples = [(0, 1000 + 400, 1000), (2000, 3000 + 100, 2200), (5000, 6000 + 900, 8000)]
    est = measure_clock(samples)
    assert est == ClockEstimate(offset_ns=1000, error_ns=100)
    assert abs(est.offset_ns - 1000) <= est.error_ns


def test_start_and_end_estimates_combine_with_their_drift_in_the_error():
    a, b = ClockEstimate(1000, 50), ClockEstimate(1400, 80)
    assert ClockEstimate.combine(a, b) == ClockEstimate(1200, 280)
    assert ClockEstimate.combine(a, None) == a


# ---- agents.json --------------------------------------------------------------------------


def _agents_file(tmp_path: Path, data: object, secret: str | None = "s" * 32) -> Path:
    if secret is not None:
        (tmp_path / "secret").write_text(secret)
    path = tmp_path / "agents.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=1))
    return path



@pytest.mark.parametrize(("data", "secret", "message"), [
    ('{\n "agents": {\n  "a": {"address": "1.2.3.4:7400",}\n }\n}', "s" * 32,
     r"agents.json:3: not JSON"),
    ({"agents": {"a": {"address": "1.2.3.4:7400"}}}, "s" * 32,
     r"agents.json: secret_file: missing"),
    ({"secret_file": "secret", "agents": {"zz": {"address": "1.2.3.4:7400"}}}, "s" * 32,
     r"agents.json: agents.zz: no such node in the topology \(it has a, b\)"),
    ({"secret_file": "secret", "agents": {"a": {"address": "1.2.3.4"}}}, "s" * 32,
     r"agents.a.address: '1.2.3.4' is not ADDR:PORT"),
    ({"secret_file": "secret", "agents": {"a": {}}}, "s" * 32, r"agents.a.address: missing"),
    ({"secret_file": "secret", "agents": {"a": {"address": "1.2.3.4:7400"}}}, "short",
     r"secret: the secret is 5 bytes; at least 16"),
    ({"secret_file": "nope", "agents": {}}, None, r"nope: cannot read the secret file"),
    ({"fabric": "other", "secret_file": "secret", "agents": {}}, "s" * 32,
     r"fabric: agents of 'other', but the file is 'pair'"),
])
def test_agents_json_errors_name_the_file_and_key(tmp_path, data, secret, message):
    path = _agents_file(tmp_path, data, secret)
    with pytest.raises(FabricError, match=message):
        load_agents(path, "pair", {"a": None, "b": None})


def test_agents_json_gives_each_node_its_address_host_and_the_key(tmp_path):
    path = _agents_file(tmp_path, {"fabric": "pair", "version": __version__,
                                   "secret_file": "secret",
                                   "agents": {"a": {"address": "172.20.20.2:7400",
                                                    "host": "h1"},
                                              "b": {"address": "[fd00::2]:7401"}}})
    book = load_agents(path, "pair", {"a": None, "b": None})
    assert book.key == b"s" * 32
    assert book.agents["a"] == AgentEntry("a", "h1", ("172.20.20.2", 7400))
    assert book.agents["b"].address == ("fd00::2", 7401)
    assert book.agents["b"].host == ""  # no host given: the agent's own word is taken


# ---- clocks across machines: the sign conventions, end to end -----------------------------


def test_the_runners_times_reach_a_remote_node_on_its_clock():
    import socket as s

    from fabric.node.session import Go, Nodes, Stop, Sync

    a, b = s.socketpair()
    with a, b:
        nodes = Nodes({"far": a, "near": b}, offsets={"far": 5_000, "near": 0})
        assert nodes.on_clock_of("far", Go(t0=100, now=40)) == Go(t0=5_100, now=5_040)
        assert nodes.on_clock_of("far", Go(t0=100)) == Go(t0=5_100, now=0)  # no `now` sent
        assert nodes.on_clock_of("far", Sync(now=7)) == Sync(now=5_007)
        assert nodes.on_clock_of("near", Go(t0=100, now=40)) == Go(t0=100, now=40)
        assert nodes.on_clock_of("far", Stop()) == Stop()


def test_what_remote_nodes_measured_is_moved_onto_the_runners_clock():
    """A chunk sent by `a` (clock +1000 ns) and received by `b` (clock -500 ns) that truly
    took 300 ns reads 300 ns after the move, and the report names the flow as crossing."""
    from fabric.metrics.records import ChunkRecord, TransferRecord
    from fabric.node.session import ClockEstimate
    from fabric.node.spawn import NodeProcess
    from fabric.run.traffic import RunResult, machines, onto_runner_clock
    from fabric.traffic import Transfer

    tr = Transfer(id=0, flow="kv", kind="one-to-one", cls="kv", src="a", dst="b",
                  transport="tcp", request=0, model=None, tokens=None, nbytes=10,
                  chunk_bytes=10, start_ns=0)
    true_send, true_first, true_last = 10_000, 10_200, 10_300
    res = RunResult(transfers=[tr])
    res.chunk_records = [ChunkRecord("kv", "kv", "one-to-one", 0, 0, 10, true_send + 1000,
                                     true_first - 500, true_last - 500, True)]
    res.chunk_receivers = ["b"]
    res.transfer_records = [TransferRecord("kv", "kv", "one-to-one", "a", "b", 0, 10, 1,
                                           true_send + 1000, true_first - 500,
                                           true_last - 500, "ok")]
    procs = [NodeProcess("a", None, None, agent="10.0.0.1:7400", host="m1",  # type: ignore[arg-type]
                         clock=ClockEstimate(1000, 40)),
             NodeProcess("b", None, None, agent="10.0.0.2:7400", host="m2",  # type: ignore[arg-type]
                         clock=ClockEstimate(-500, 60))]
    onto_runner_clock(res, procs)
    c, t = res.chunk_records[0], res.transfer_records[0]
    assert (c.t_send_ns, c.t_first_ns, c.t_last_ns) == (true_send, true_first, true_last)
    assert c.latency_ns == 300
    assert (t.t_start_ns, t.t_first_byte_ns, t.t_done_ns) == (true_send, true_first, true_last)
    info = machines(res)
    assert info["flows"] == {"kv": {"hosts": ["m1", "m2"], "error_ns": 100}}
    assert info["nodes"]["a"] == {"host": "m1", "agent": "10.0.0.1:7400", "offset_ns": 1000,
                                  "error_ns": 40}


# ---- the command line -----------------------------------------------------------------------


def test_fabric_agent_refuses_a_bad_listen_address_a_busy_port_and_a_missing_secret(key_file):
    from click.testing import CliRunner

    from fabric.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["agent", "--listen", "nowhere", "--secret-file", str(key_file)])
    assert res.exit_code == 1
    assert "--listen 'nowhere': give ADDR:PORT, e.g. 0.0.0.0:7400" in res.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = runner.invoke(cli, ["agent", "--listen", f"127.0.0.1:{port}", "--secret-file",
                                  str(key_file)])
    assert res.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in res.output
    res = runner.invoke(cli, ["agent", "--secret-file", str(key_file.parent / "none")])
    assert res.exit_code == 1
    assert "none: cannot read the secret file: No such file or directory" in res.output


def test_fabric_run_refuses_agents_for_a_kind_whose_nodes_run_only_here(tmp_path):
    from click.testing import CliRunner

    from fabric.cli import cli

    (tmp_path / "secret").write_text("s" * 32)
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps({"secret_file": "secret", "agents": {}}))
    probe = tmp_path / "probe.yaml"  # no traffic section: a probe run, which pings here
    probe.write_text("name: tprobe9\nnodes: {a: {}, b: {}}\nlinks:\n  - {endpoints: [a, b]}\n")
    res = CliRunner().invoke(cli, ["run", str(probe), "--agents", str(agents)])
    assert res.exit_code == 1
    assert "--agents does not apply to" in res.output
    assert "whose nodes run only here" in res.output


def test_a_malformed_handshake_is_refused_and_leaves_other_sessions_alone(start_agent):
    """An Auth whose proof is not text (no secret needed to send one) is refused and logged;
    the child that refused it exits, and a session waiting beside it is untouched."""
    from fabric.node.session import Auth

    ag = start_agent()
    waiting = socket.create_connection(("127.0.0.1", ag.port))
    poke = socket.create_connection(("127.0.0.1", ag.port))
    try:
        waiting.recv(4096)  # its Hello: that session's child waits for an Auth
        poke.recv(4096)
        poke.sendall(encode(Auth(proof=1, nonce="00", version=__version__, node="a",  # type: ignore[arg-type]
                                 target="clock")))
        assert poke.recv(4096) == b""  # refused: closed
        deadline = time.monotonic() + 5
        while "refused 127.0.0.1:" not in ag.text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "refused 127.0.0.1:" in ag.text()
        assert "Traceback" not in ag.text()
        waiting.settimeout(0.5)
        with pytest.raises(TimeoutError):  # still waiting for its Auth, not closed
            waiting.recv(4096)
        assert ag.proc.poll() is None
    finally:
        waiting.close()
        poke.close()


def test_a_fast_file_runs_through_agents_on_a_fabric_built_elsewhere(tmp_path):
    """A fabric built elsewhere is not held to this host's link limits (tbf's top rate):
    the check plans only names and addresses, as the run does."""
    from fabric.kinds import check_agents, load, select

    path = tmp_path / "fast.yaml"
    path.write_text("name: fast\nnodes: {a: {}, b: {}}\nlinks:\n"
                    "  - {endpoints: [a, b], rate: 800Gbps}\n"
                    "traffic:\n  flows:\n    - {pattern: bulk, from: a, to: b, size: 1MiB}\n")
    topo = load(path)
    kind, _ = select(topo, {})
    check_agents(kind, topo, remote=True)  # no FabricError


def test_a_second_runner_for_a_running_node_is_refused_by_name(start_agent, key_file):
    """One node, one runner at a time: a second session for a node that is running would
    bind the same addresses; it is refused with the reason, and the node is free again once
    the first session ends."""
    ag = start_agent()
    book = _book(ag.port, read_key(key_file))
    first, _, _ = agent_mod._open_session(book, "a", "traffic")  # the node program waits
    try:
        with pytest.raises(FabricError, match=r"the agent of node a at 127\.0\.0\.1:\d+ "
                                              r"refused the session: node a is already "
                                              r"running a session for another runner"):
            agent_mod._open_session(book, "a", "traffic")
        # a clock-only session takes nothing
        agent_mod._open_session(book, "a", "clock")[0].close()
    finally:
        first.close()  # the runner's end closes: the node program ends, its lock with it
    deadline = time.monotonic() + 10
    while True:
        try:
            agent_mod._open_session(book, "a", "traffic")[0].close()
            break
        except FabricError:
            assert time.monotonic() < deadline, "the node was not freed"
            time.sleep(0.1)
    assert "already running a session for another runner" in ag.log.read_text()
