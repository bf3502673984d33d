"""Live changes without root: LinkDirection's change of shape and down/up with hand-made times,
the engine's control requests against its models, and the CLI's error cases."""

from __future__ import annotations

import random

import pytest
from click.testing import CliRunner

from fabric.linkmodel import Action, LinkDirection
from fabric.net.engine import Endpoint, Engine, EngineConfig, EngineLink
from fabric.topology.model import Shape

MS = 1_000_000
MBIT = 1_000_000


def model(shape: Shape) -> LinkDirection:
    return LinkDirection(shape, rate_in_engine=True, rng=random.Random(1))


def test_rate_change_retimes_only_what_is_not_serialised():
    # 10 Mbit/s: a 1250-byte packet takes 1 ms on the wire; delay 5 ms
    m = model(Shape(rate_bps=10 * MBIT, delay_ns=5 * MS, queue_bytes=100_000))
    releases = [m.offer(1250, False, 0, i).release_ns for i in range(4)]
    assert releases == [6 * MS, 7 * MS, 8 * MS, 9 * MS]
    assert m.queue_bytes(0) == 5000
    # at 0.5 ms packet 0 is on the wire; 1..3 are queued: at 5 Mbit/s each takes 2 ms
    m.set_shape(Shape(rate_bps=5 * MBIT, delay_ns=5 * MS, queue_bytes=100_000), MS // 2)
    assert m.queue_bytes(MS // 2) == 5000  # nothing lost from the queue's accounting
    got = []
    t = 0
    while (d := m.next_deadline()) is not None:
        t = d
        got += [(t, item) for item in m.release(t)]
    assert got == [(6 * MS, 0), (8 * MS, 1), (10 * MS, 2), (12 * MS, 3)]
    # the next packet queues behind the re-timed ones at the new rate
    assert m.offer(1250, False, 2 * MS, "x").release_ns == 7 * MS + 2 * MS + 5 * MS


def test_rate_change_with_jitter_retimes_the_heap():
    m = model(Shape(rate_bps=10 * MBIT, delay_ns=5 * MS, jitter_ns=1, queue_bytes=100_000))
    for i in range(3):
        m.offer(1250, False, 0, i)
    m.set_shape(Shape(rate_bps=20 * MBIT, delay_ns=5 * MS, jitter_ns=1, queue_bytes=100_000),
                0)
    out = []
    while (d := m.next_deadline()) is not None:
        out += [(round(d / 100_000) * 100_000, i) for i in m.release(d)]
    assert out == [(6 * MS, 0), (6 * MS + MS // 2, 1), (7 * MS, 2)]


def test_rate_change_retimes_queued_packets_in_both_the_line_and_the_heap():
    """Jitter turned on while packets queue: the older queued ones are in the delay line,
    the newer in the heap; a rate change re-times both."""
    m = model(Shape(rate_bps=10 * MBIT, delay_ns=5 * MS, queue_bytes=100_000))
    for i in range(3):  # line: serialised at 1, 2, 3 ms
        m.offer(1250, False, 0, f"line{i}")
    m.set_shape(Shape(rate_bps=10 * MBIT, delay_ns=5 * MS, jitter_ns=1, queue_bytes=100_000),
                0)
    for i in range(2):  # heap: serialised at 4, 5 ms
        m.offer(1250, False, 0, f"heap{i}")
    # at 0.5 ms line0 is on the wire; the other four are queued: at 20 Mbit/s each takes
    # 0.5 ms: departures 1.5, 2, 2.5, 3 ms instead of 2, 3, 4, 5
    m.set_shape(Shape(rate_bps=20 * MBIT, delay_ns=5 * MS, jitter_ns=1, queue_bytes=100_000),
                MS // 2)
    out = []
    while (d := m.next_deadline()) is not None:
        out += [(round(d / 100_000) * 100_000, i) for i in m.release(d)]
    assert out == [(6 * MS, "line0"), (6 * MS + MS // 2, "line1"), (7 * MS, "line2"),
                   (7 * MS + MS // 2, "heap0"), (8 * MS, "heap1")]


def test_delay_change_applies_to_new_packets_and_keeps_order():
    m = model(Shape(delay_ns=20 * MS))
    assert m.offer(100, False, 0, "old").release_ns == 20 * MS
    m.set_shape(Shape(delay_ns=5 * MS), MS)
    assert m.offer(100, False, MS, "new").release_ns == 6 * MS
    # one FIFO delay line: the new packet waits behind the old one, never overtakes it
    assert m.next_deadline() == 20 * MS
    assert m.release(20 * MS) == ["old", "new"]


def test_turning_jitter_on_mixes_line_and_heap():
    m = model(Shape(delay_ns=20 * MS))
    m.offer(100, False, 0, "line")
    m.set_shape(Shape(delay_ns=2 * MS, jitter_ns=1), 0)
    m.offer(100, False, 0, "heap")
    assert m.next_deadline() <= 2 * MS + 1  # the heap's earlier packet is seen
    assert m.release(3 * MS) == ["heap"]
    assert m.release(20 * MS) == ["line"]


def test_down_drops_held_and_arriving_packets_and_counts_them():
    m = model(Shape(rate_bps=10 * MBIT, delay_ns=5 * MS, queue_bytes=100_000))
    for i in range(3):
        m.offer(1250, False, 0, i)
    assert m.set_up(False, MS) == 3
    assert m.set_up(False, MS) == 0  # idempotent
    assert m.next_deadline() is None
    assert m.offer(1250, False, 2 * MS, "lost").action == Action.DROP_DOWN
    s = m.statistics()
    assert (s.drops_down, s.up, s.packets_in, m.held_bytes) == (4, False, 4, 0)
    # the three it held were in flight; the fourth arrived while it was down
    assert (s.bytes_lost_in_flight, s.bytes_dropped_down) == (3 * 1250, 4 * 1250)
    m.set_up(True, 3 * MS)
    v = m.offer(1250, False, 3 * MS, "back")
    # starts empty: no queue left from before, serialised at once
    assert (v.action, v.release_ns) == (Action.HOLD, 3 * MS + MS + 5 * MS)
    assert m.statistics().up


def test_engine_control_applies_all_or_nothing():
    link = EngineLink("a--b", Endpoint(None, "x"), Endpoint(None, "y"),
                      Shape(delay_ns=MS), Shape(delay_ns=MS))
    eng = Engine(EngineConfig("f", "r", "", (link,)))
    # models without TUN fds: the control path only touches models and the timer heap
    from fabric.net.engine import _Direction

    for n, name in enumerate(("forward", "reverse")):
        eng.directions.append(_Direction("a--b", name, -1, -1,
                                         LinkDirection(Shape(delay_ns=MS)), n))
    bad = eng.control({"op": "set", "changes": [
        {"link": "a--b", "direction": "forward", "shape": {"delay_ns": 7}},
        {"link": "a--b", "direction": "sideways", "shape": {"delay_ns": 7}}]})
    assert bad == {"ok": False, "error": "direction 'sideways': forward or reverse"}
    assert eng.control({"op": "show"})["links"]["a--b"]["forward"]["shape"]["delay_ns"] == MS
    bad = eng.control({"op": "set", "changes": [{"link": "nope", "direction": "forward"}]})
    assert bad["error"] == "no link 'nope' in this engine (links: a--b)"
    ok = eng.control({"op": "set", "changes": [
        {"link": "a--b", "direction": "reverse", "shape": {"delay_ns": 7}, "up": False}]})
    rev = ok["links"]["a--b"]["reverse"]
    assert (rev["shape"]["delay_ns"], rev["up"]) == (7, False)
    assert ok["links"]["a--b"]["forward"]["up"]


@pytest.mark.parametrize(("argv", "message"), [
    (["link", "set", "a", "b"], "give at least one of --rate"),
    (["link", "set", "a", "b", "--rate", "fast"], "--rate 'fast'"),
    (["link", "show", "a"], "name both ends of a link"),
])
def test_cli_refuses_bad_input(argv, message, state_dir):
    out = CliRunner().invoke(__import__("fabric.cli", fromlist=["cli"]).cli, argv)
    assert out.exit_code == 1, out.output
    assert message in out.output


@pytest.mark.parametrize("argv", [["link", "down", "a", "b"], ["node", "up", "n"],
                                  ["link", "show"], ["link", "set", "a", "b", "--delay", "1ms"]])
def test_cli_without_a_running_fabric(argv, state_dir):
    from fabric.cli import cli

    out = CliRunner().invoke(cli, [*argv, "--fabric", "tnosuchfabric"])
    assert out.exit_code == 1, out.output
    assert "fabric 'tnosuchfabric' is not running (see `fabric status`)" in out.output
