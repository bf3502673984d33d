"""interrupts_held: a signal is held for the whole block, also when another thread exists
(the kernel may hand a process signal to any thread), and lands when the block ends."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from fabric.net.daemon import interrupts_held


@pytest.fixture
def recorder():
    seen: list[tuple[int, float]] = []
    old = signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append((signum,
                                                                            time.monotonic())))
    yield seen
    signal.signal(signal.SIGTERM, old)


def test_a_signal_is_held_until_the_block_ends_even_with_another_thread(recorder):
    """The kernel hands a process signal to any thread that does not block it (trio keeps an
    idle worker thread after a run): sent to such a thread, it is still held."""
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, daemon=True)
    worker.start()
    try:
        with interrupts_held():
            signal.pthread_kill(worker.ident, signal.SIGTERM)  # delivered in the worker
            for _ in range(50):  # handlers run between bytecodes: give them every chance
                time.sleep(0.001)
            assert recorder == []
            ended = time.monotonic()
        assert [s for s, _ in recorder] == [signal.SIGTERM]
        assert recorder[0][1] >= ended
    finally:
        stop.set()
        worker.join()


def test_the_handlers_are_restored_and_an_ignored_signal_stays_ignored(recorder):
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        before = signal.getsignal(signal.SIGTERM)
        with interrupts_held():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing lands afterwards
        assert signal.getsignal(signal.SIGTERM) is before
        assert recorder == []
    finally:
        signal.signal(signal.SIGHUP, old_hup)


def test_sigint_lands_as_keyboard_interrupt_after_the_block():
    done = []

    def hold_and_signal() -> None:
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            done.append("finished")

    # Python's own SIGINT handler, even if this test run started with SIGINT ignored (a
    # shell's background job): it is what turns the held signal into the interrupt
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            hold_and_signal()
    finally:
        signal.signal(signal.SIGINT, before)
    assert done == ["finished"]


def test_a_swallowed_terminate_still_exits_as_terminated(monkeypatch, tmp_path):
    """SIGTERM whose KeyboardInterrupt Python swallowed in a callback (the soak saw one in an
    import's weakref callback): the command ends normally, then exits 143 saying so."""
    from click.testing import CliRunner

    from fabric import cli as cli_module

    def load_then_swallowed(file):  # noqa: ANN001, ANN202
        cli_module._TERMINATED.append(signal.SIGTERM)  # noted; its interrupt never arrived
        return real_load(file)

    real_load = cli_module._load
    monkeypatch.setattr(cli_module, "_TERMINATED", [])
    monkeypatch.setattr(cli_module, "_load", load_then_swallowed)
    result = CliRunner().invoke(cli_module.cli, ["check"])
    assert result.exit_code == 143
    assert result.stderr.rstrip().splitlines()[-1] == "fabric: terminated (SIGTERM)"


def test_down_waits_for_the_fabrics_lock(tmp_path, monkeypatch):
    """`fabric down` checks and removes under the fabric's lock, so no run claims or leases
    the fabric in between."""
    from fabric.errors import FabricStateError
    from fabric.net import lifecycle

    monkeypatch.setattr(lifecycle, "STATE_ROOT", tmp_path)
    outcome: list[str] = []

    def down() -> None:
        try:
            lifecycle.tear_down("nosuch")
        except FabricStateError as e:
            outcome.append(str(e))

    with lifecycle._locked("nosuch"):
        t = threading.Thread(target=down)
        t.start()
        t.join(0.3)
        assert t.is_alive()  # waiting for the lock
        assert outcome == []
    t.join(10)
    assert outcome == ["fabric 'nosuch' is not running (see `fabric status`)"]
