"""The link engine's own release lateness (`Engine.release_lateness`): how long after its due
time the engine wrote each release, kept for the last LATE_WINDOW releases. Real sockets stand
in for the TUN devices; no root needed."""

from __future__ import annotations

import random
import socket
import time

import pytest

from fabric.linkmodel import LinkDirection
from fabric.net import engine as engine_mod
from fabric.net.engine import LATE_WINDOW, Engine, EngineConfig, _Direction
from fabric.net.tun import TimerFd
from fabric.topology.model import Shape

MS = 1_000_000


def _engine_with_one_direction() -> tuple[Engine, _Direction, socket.socket, list]:
    eng = Engine(EngineConfig(fabric="f", run_id="r", stats_path=""))
    eng._timer = TimerFd()
    host_end, engine_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    host_end.setblocking(False)
    model = LinkDirection(Shape(delay_ns=MS), rate_in_engine=False, rng=random.Random(1))
    d = _Direction("l", "forward", -1, engine_out.fileno(), model, 0)
    eng.directions.append(d)
    return eng, d, host_end, [engine_out]


def _hold(eng: Engine, d: _Direction, arrived: int, payload: bytes) -> None:
    """Offer a packet that arrived at `arrived` and schedule its release as `_drain` does."""
    v = d.model.offer(len(payload), False, arrived, bytearray(payload))
    if v.release_ns < d.scheduled:
        d.scheduled = v.release_ns
        eng._heap.append((v.release_ns, d.index))


def test_an_overdue_release_is_counted_as_late_as_it_was_written() -> None:
    eng, d, host_end, keep = _engine_with_one_direction()
    try:
        assert eng.release_lateness() == {"releases": 0, "window": 0, "max_us": 0.0,
                                          "hist_log2_us": []}
        now = time.monotonic_ns()
        _hold(eng, d, now - 4 * MS, b"a")  # due 3 ms ago (1 ms of delay)
        eng._flush()
        after = time.monotonic_ns()
        assert host_end.recv(16) == b"a"
        late = eng.release_lateness()
        assert (late["releases"], late["window"]) == (1, 1)
        assert 3000 <= late["window_p50_us"] == late["window_max_us"] == late["max_us"]
        assert late["max_us"] <= (after - (now - 3 * MS)) / 1e3
        # counted since the start by power-of-two microseconds: 3 ms is in [2048, 4096) us
        assert late["hist_log2_us"] == [0] * 12 + [1]
        _hold(eng, d, time.monotonic_ns(), b"b")  # due in 1 ms: not released, timer armed
        eng._flush()
        assert eng.release_lateness()["releases"] == 1
        assert eng._armed < 1 << 62
    finally:
        eng._timer.close()
        host_end.close()
        for s in keep:
            s.close()


def test_the_window_keeps_the_last_releases_and_the_max_all_of_them(monkeypatch) -> None:
    monkeypatch.setattr(engine_mod, "LATE_WINDOW", 4)
    monkeypatch.setattr(engine_mod, "LATE_MASK", 3)
    eng, d, host_end, keep = _engine_with_one_direction()
    eng._late = [0] * 4
    try:
        now = time.monotonic_ns()
        overdue = [9, 1, 2, 3, 4, 5]  # ms past due, in release order
        for i, ms in enumerate(overdue):
            _hold(eng, d, now - (1 + ms) * MS, bytes([i]))
            eng._flush()
        late = eng.release_lateness()
        assert (late["releases"], late["window"]) == (6, 4)
        assert 9000 <= late["max_us"] < 10_000  # the first release, gone from the window
        assert 5000 <= late["window_max_us"] < late["max_us"]
        assert 3000 <= late["window_p50_us"] < 5000  # of 2, 3, 4, 5 ms
        # the histogram keeps them all: 1 to 5 ms late in buckets 10 to 13 ([512, 1024) us
        # to [4096, 8192) us), 9 ms in bucket 14, the last one used
        hist = late["hist_log2_us"]
        assert (len(hist), sum(hist[10:14]), hist[14]) == (15, 5, 1)
    finally:
        eng._timer.close()
        host_end.close()
        for s in keep:
            s.close()


def test_the_window_is_as_long_as_the_engine_says() -> None:
    assert LATE_WINDOW & (LATE_WINDOW - 1) == 0  # a power of two: the ring's index is masked


# ---- the spin budget (sans-IO) ------------------------------------------------------------


def test_the_spin_budget_starts_full_and_spends_down_to_nothing() -> None:
    b = engine_mod.SpinBudget(0.1, burst_ns=1 * MS, now=0)
    spun = 0
    while b.allows(0, 150_000):  # no time passes: only the burst
        b.spend(150_000)
        spun += 150_000
    assert spun == 900_000  # six spins of 150 us fit in 1 ms; the seventh does not
    assert b.allows(0, 100_000)  # what is left still allows a shorter one


def test_the_spin_budget_refills_at_its_share_of_one_cpu_up_to_its_burst() -> None:
    b = engine_mod.SpinBudget(0.1, burst_ns=1 * MS, now=0)
    b.spend(1 * MS)
    assert not b.allows(0, 1)
    assert not b.allows(1 * MS - 1, 100_000)  # 1 ms of host time refills 0.1 ms
    assert b.allows(1 * MS, 100_000)
    assert b.allows(10**9, 1 * MS)  # a long quiet time refills the burst...
    assert not b.allows(10**9, 1 * MS + 1)  # ...no more


def test_steady_spinning_settles_at_the_budget_share() -> None:
    """A spin of 150 us wanted every 300 us (half of one CPU) for 1 s: the budget lets the
    burst through, then a tenth of the time."""
    b = engine_mod.SpinBudget(0.1, burst_ns=20 * MS, now=0)
    spun = 0
    for t in range(0, 10**9, 300_000):
        if b.allows(t, 150_000):
            b.spend(150_000)
            spun += 150_000
    assert 0.1 * 10**9 <= spun <= 0.1 * 10**9 + 20 * MS + 150_000


def test_a_whole_cpu_share_never_stops_a_spin() -> None:
    b = engine_mod.SpinBudget(1.0, burst_ns=1 * MS, now=0)
    for _ in range(100):
        assert b.allows(0, 150_000)
        b.spend(150_000)


def test_the_engine_spins_by_default_within_a_tenth_of_one_cpu() -> None:
    config = EngineConfig(fabric="f", run_id="r", stats_path="")
    assert (config.spin_ns, config.spin_share) == (150_000, 0.1)
    assert EngineConfig.from_json(config.to_json()) == config
    old = EngineConfig.from_dict({"fabric": "f", "run_id": "r", "stats_path": ""})
    assert (old.spin_ns, old.spin_share) == (150_000, 0.1)


@pytest.mark.parametrize("share", [0, -0.5, 1.5, True, "0.1"])
def test_the_config_refuses_a_spin_share_outside_0_to_1(share: object) -> None:
    with pytest.raises(ValueError, match=r"^spin_share .*: a share of one CPU, more than 0 and "
                                         r"at most 1$"):
        EngineConfig(fabric="f", run_id="r", stats_path="", spin_share=share)  # type: ignore


def test_a_read_of_nothing_leaves_the_timer_and_the_budget_alone() -> None:
    """`_drain` that read nothing hands `_after_batch` a time of 0: that must arm nothing and
    take nothing from the spin budget (a time of 0 once drained it by the engine's uptime)."""
    eng, d, host_end, keep = _engine_with_one_direction()
    try:
        now = time.monotonic_ns()
        _hold(eng, d, now, b"p" * 100)
        eng._budget = engine_mod.SpinBudget(0.1, now=now)
        eng._after_batch(0)
        assert eng._armed == engine_mod._INF
        assert eng._budget.allows(now, engine_mod.SPIN_BURST_NS)  # still full
        eng._after_batch(now)  # a batch that read the packet: armed for its release
        assert eng._armed == now + MS
    finally:
        eng._timer.close()
        host_end.close()
        for s in keep:
            s.close()
