"""Lost memory transactions: the completion timeout at the requester, the switch giving up a
request and reclaiming its buffer, and the count of what each event lost. No namespaces: the
switch node runs on local UDP sockets, driven by hand."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from fabric.memsw.deploy import switch_configs
from fabric.memsw.endpoint import LOST, MemoryNode
from fabric.memsw.node import MemorySwitchNode
from fabric.memsw.ops import (
    HOST_TIMEOUT_FLOOR_S,
    Error,
    Read,
    ReadResp,
    completion_timeout_s,
)
from fabric.plan import plan_fabric
from fabric.run.memory import VariantOutcome, lost_by_event
from fabric.topology import load_topology

ROOT = Path(__file__).resolve().parent.parent


def test_completion_timeout_on_the_host_clock() -> None:
    assert completion_timeout_s(100_000, 10_000) == pytest.approx(1.0)
    # never under the floor: a stalled process is not a lost transaction
    assert completion_timeout_s(100_000, 1) == HOST_TIMEOUT_FLOOR_S


def _switch(credits: int = 64) -> tuple[MemorySwitchNode, socket.socket]:
    """The memory-single switch's node on a local socket; every port's address is one local
    sink socket (what the switch sends is not read)."""
    plan = plan_fabric(load_topology(ROOT / "topologies" / "memsem-single.yaml"),
                       backend="userspace", run_id="r1")
    cfg = switch_configs(plan)["msw"]
    for p in cfg["ports"]:
        p["credits"] = credits
    node = MemorySwitchNode(cfg)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    node.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    node.sock.bind(("127.0.0.1", 0))
    node.addr = dict.fromkeys(node.addr, sink.getsockname())
    return node, sink


def _release(node: MemorySwitchNode) -> None:
    """Everything the switch's timing model holds, sent now: its clock moves on by one host
    second (100 us of fabric time, far beyond a hop)."""
    node.t0 -= 10**9
    node._act(node.core.advance(node.now()))


def _credits(node: MemorySwitchNode, port: str) -> int:
    return node.core.statistics().ports[port].credits


def test_the_switch_gives_up_an_unanswered_request_and_reclaims_its_buffer() -> None:
    node, sink = _switch()
    with node.sock, sink:
        hbm1 = 0x01000000
        node._on_message("gpu-0", Read(7, 0, hbm1, 64), 0, 0)
        _release(node)
        assert len(node.delivered) == 1
        assert _credits(node, "gpu-1") == 63
        # not yet: within the timeout nothing is given up
        assert node.expire(time.monotonic_ns()) == 0
        assert node.expire(time.monotonic_ns() + node.timeout_ns + 1) == 1
        assert node.timed_out["gpu-1"] == 1
        assert node.delivered == {}
        assert _credits(node, "gpu-1") == 64
        # the answer after all: late, and its credit is not counted twice
        # the requester was answered with an error: the request holds nothing back
        assert node.core.statistics().ports["gpu-0"].ops_out == 1
        node._on_message("gpu-1", ReadResp(7, bytes(64)), node.index["gpu-0"], 1)
        assert (node.late, node.errors) == (1, 0)
        assert _credits(node, "gpu-1") == 64
        # an answer nobody asked for is still an error
        node._on_message("gpu-1", ReadResp(99, bytes(64)), node.index["gpu-0"], 1)
        assert node.errors == 1
        stats = node.statistics()
        assert (stats["late"], stats["timed_out"]["gpu-1"]) == (1, 1)


def test_a_reclaimed_buffer_lets_the_next_request_through() -> None:
    """One request buffer at the endpoint: the second request waits for it; the first is
    lost, and only giving it up lets the second go."""
    node, sink = _switch(credits=1)
    with node.sock, sink:
        hbm1 = 0x01000000
        node._on_message("gpu-0", Read(1, 0, hbm1, 64), 0, 0)
        node._on_message("gpu-0", Read(2, 0, hbm1 + 64, 64), 0, 0)
        _release(node)
        assert [k[2] for k in node.delivered] == [1]
        node.expire(time.monotonic_ns() + node.timeout_ns + 1)
        _release(node)
        assert [k[2] for k in node.delivered] == [2]


def test_a_request_given_up_holds_no_later_one_to_the_same_bytes() -> None:
    """The switch answers a requester in order for overlapping bytes: a lost read must not
    hold back the next read of the same bytes once it is given up."""
    node, sink = _switch()
    with node.sock, sink:
        hbm1 = 0x01000000
        node._on_message("gpu-0", Read(1, 0, hbm1, 64), 0, 0)
        _release(node)
        node._on_message("gpu-0", Read(2, 0, hbm1, 64), 0, 0)
        _release(node)
        node.expire(time.monotonic_ns() + node.timeout_ns + 1)  # gives up both
        node._on_message("gpu-0", Read(3, 0, hbm1, 64), 0, 0)
        _release(node)
        before = node.core.statistics().ports["gpu-0"].ops_out
        node._on_message("gpu-1", ReadResp(3, bytes(64)), node.index["gpu-0"], 1)
        _release(node)
        assert node.core.statistics().ports["gpu-0"].ops_out == before + 1


def _endpoint(gateway: str) -> MemoryNode:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    plan = {"name": "g0", "time_scale": 1, "txn": 256, "gateway": gateway, "windows": [],
            "mcast": [], "timeout_ns": 1_000, "window": 4}
    node = MemoryNode(plan, sock)
    node.t0 = time.monotonic_ns()
    return node


async def test_an_unanswered_transaction_is_lost_after_the_timeout() -> None:
    node = _endpoint("127.0.0.1")  # nothing answers there
    with node.sock:
        t = time.monotonic()
        resp, _ = await node.request(Read(node.tag(), 0, 0x1000, 512))  # two transactions
        waited = time.monotonic() - t
    assert isinstance(resp, Error)
    assert LOST in resp.reason
    assert len(node.lost) == 2
    assert node.timeout_s == HOST_TIMEOUT_FLOOR_S <= waited < HOST_TIMEOUT_FLOOR_S + 2
    assert node.waiting == {}


async def test_a_send_the_kernel_refuses_is_a_lost_transaction() -> None:
    # a broadcast address without SO_BROADCAST: the kernel refuses the send, as it does
    # (ENETUNREACH) when the link to the switch is down
    node = _endpoint("255.255.255.255")
    with node.sock:
        resp, _ = await node.request(Read(node.tag(), 0, 0x1000, 64))
    assert isinstance(resp, Error)
    assert (node.send_errors, len(node.lost)) == (1, 1)


def test_lost_transactions_belong_to_the_event_before_them() -> None:
    t0, scale = 1_000_000_000, 10.0
    log = [{"action": "down", "label": "down msw--g1", "line": 30, "at_ns": 1_000_000,
            "applied_ns": t0 + 10_000_000},
           {"action": "converge", "after": "down msw--g1", "label": None, "line": 30,
            "at_ns": 1_050_000, "applied_ns": t0 + 10_500_000},
           {"action": "up", "label": "up msw--g1", "line": 31, "at_ns": 3_000_000,
            "applied_ns": t0 + 30_000_000}]
    # the down applied at 1 ms of fabric time, the up at 3 ms; a 100 us completion timeout
    lost = [(800_000, "g0", "ls"),  # given up before the down: lost to something else
            (950_000, "g0", "ls"),  # on its way when the link went down
            (1_200_000, "g0", "ls"), (1_300_000, "g0", "hc"), (2_800_000, "g2", "hc"),
            (2_950_000, "g0", "kv"),  # given up after the link came back: still the down's
            (3_100_000, "g0", "kv")]  # issued after: routing had not got the link back yet
    got = lost_by_event(log, lost, t0, scale, 100_000)
    assert (got["lost_total"], got["lost_before_events"]) == (7, 1)
    assert [(e["event"], e["line"], e["lost"], e["runs"]) for e in got["by_event"]] == [
        ("down msw--g1", 30, 6, ["ls", "hc", "kv"])]
    assert [x["at_ns"] for x in got["lost"]] == sorted(t for t, _, _ in lost)
    # a loss burst is a step that loses transactions too
    burst = [*log, {"action": "set", "label": "set msw--g1", "line": 32, "at_ns": 4_000_000,
                    "applied_ns": t0 + 40_000_000, "props": {"loss_ppm": 100_000}}]
    got = lost_by_event(burst, [(4_000_100, "g0", "kv")], t0, scale, 100_000)
    assert [(e["event"], e["lost"]) for e in got["by_event"]] == [("down msw--g1", 0),
                                                                  ("set msw--g1", 1)]



def test_a_variant_with_lost_transactions_says_so() -> None:
    ok = VariantOutcome("r", "hypercast", "hypercast", 64, True, 1.0)
    lost = VariantOutcome("r", "hypercast", "hypercast", 64, False, None, lost=3)
    bad = VariantOutcome("r", "hypercast", "hypercast", 64, False, 1.0)
    assert (ok.status, lost.status, bad.status) == ("ok", "lost 3", "FAILED")


@pytest.mark.parametrize("with_events", [False, True])
def test_lost_transactions_fail_a_run_only_without_events(tmp_path: Path, monkeypatch,
                                                          with_events: bool) -> None:
    """Transactions lost to the file's own events are reported; lost with no event to explain
    them (a queue overflowed), the run fails, naming the variant."""
    from types import SimpleNamespace

    import fabric.run.memory as memory_run
    from fabric.errors import FabricError
    from fabric.kinds.base import RunContext
    from fabric.kinds.memory import MemoryKind

    outcomes = [VariantOutcome("hc", "hypercast", "hypercast", 64, False, None, lost=2),
                VariantOutcome("hc", "hypercast", "unicast", 64, True, 1000.0)]

    def fake_run(state, topo, out_dir, **kw):  # noqa: ANN001, ANN003, ANN202
        memory_run.write_outcomes(outcomes, topo, out_dir)
        return outcomes

    monkeypatch.setattr(memory_run, "run_memory", fake_run)
    topo = SimpleNamespace(name="m", time_scale=1000.0, events=object() if with_events else None,
                           expect=())
    printed: list[str] = []
    ctx = RunContext(SimpleNamespace(state=None, topology=topo, plan=None, agents=None),
                     tmp_path, 60.0, {}, None, printed.append, lambda _: None)
    if with_events:
        MemoryKind().run(ctx)
        assert printed[-1] == ("transactions lost to the events (a memory fabric does not "
                               "resend them): hc hypercast (2)")
        assert any("lost 2" in line for line in printed)
    else:
        with pytest.raises(FabricError, match=r"lost, with no event to explain it: hc "
                                              r"hypercast \(2\)"):
            MemoryKind().run(ctx)


def test_the_printout_times_events_from_the_runs_start() -> None:
    """Times on the printout count from the runs' start (t0_ns), so a step applied late shows
    when it really was."""
    from fabric.run.memory import render_events

    t0, scale = 1_000_000_000, 1000.0
    log = [{"action": "down", "label": "down msw--g1", "line": 19, "at_ns": 500_000,
            "applied_ns": t0 + 501_000_000, "link": ["msw", "g1"], "props": {}}]
    events = {"log": log, "t0_ns": t0, "by_event": [
        {"event": "down msw--g1", "line": 19, "at_ns": 501_000.0, "lost": 2, "runs": ["ls"]}],
        "note": "how they are counted", "switches": {"msw": {"timed_out": {"g1": 2},
                                                               "late": 0}}}
    lines = render_events(events, scale)
    assert lines[1].split() == ["501", "us", "down", "msw--g1", "(line", "19)"]
    assert "  down msw--g1: 2 transactions lost (completion timeout) in ls" in lines
    assert "  memory switch msw: requests given up per port: g1 2; answers after the " \
           "timeout: 0" in lines
    assert render_events({}, scale) == []


def test_steps_that_share_a_label_each_keep_their_own_count() -> None:
    """A flap's downs share one label: each is its own entry, with what it lost."""
    log = [{"action": "down", "label": "flap msw--g1", "line": 20, "applied_ns": 1_000},
           {"action": "up", "label": "flap msw--g1", "line": 20, "applied_ns": 2_000},
           {"action": "down", "label": "flap msw--g1", "line": 20, "applied_ns": 3_000}]
    got = lost_by_event(log, [(1_100, "g0", "ls"), (3_100, "g0", "hc"), (3_200, "g0", "hc")],
                        0, 1.0, 10)
    assert [(e["event"], e["at_ns"], e["lost"], e["runs"]) for e in got["by_event"]] == [
        ("flap msw--g1", 1_000, 1, ["ls"]), ("flap msw--g1", 3_000, 2, ["hc"])]
