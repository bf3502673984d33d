"""What every daemon the fabric starts shares (the link engine, RoCE and memory switches).

The daemon side runs until SIGTERM/SIGINT and prints a `READY <pid>` line, and writes its
statistics files atomically so a reader never sees half a file. The starter side
(`spawn_daemon`) starts one, waits for that line, and `stop_process` ends it: one path for
every daemon, whichever part of the fabric needs it."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KernelError

INTERRUPTS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends, then let a held one land as if
    it came then (it unwinds as usual): for a removal that must finish once begun, and
    around a fork and a daemon's start, where an interrupt would be swallowed by an at-fork
    handler or would leave a process unrecorded.

    The handlers themselves are swapped for one that only notes the signal: a signal mask
    would hold it for this thread alone, and the kernel hands a process signal to any thread
    that does not block it (trio leaves a worker thread alive for a while after a run). A
    forked child inherits the noting handler and sets its own. Off the main thread, where
    Python runs no handlers, it holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []

    def note(signum: int, _frame: object) -> None:
        if not noted:
            noted.append(signum)

    before = {sig: signal.getsignal(sig) for sig in INTERRUPTS}
    for sig, handler in before.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, note)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if noted:
            handler = before[signal.Signals(noted[0])]
            if callable(handler):
                handler(noted[0], sys._getframe())
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), noted[0])


READY_TIMEOUT = 60.0  # seconds a daemon has to print READY (a slow emulated guest needs >20)
# The daemons emulate the fabric itself (links, switches): they run at this niceness, ahead
# of the node processes and of whatever else the host runs, so that a busy host delays the
# traffic rather than the fabric's clock. Measured (scripts/bench_engine.py, one busy process
# per core beside it, two runs of 3 repeats): the engine's p99 lateness at 1 ms of delay was
# 3.2 and 2.1 ms at nice 0, 0.31 and 1.5 ms at -10 (the probes' own sender and receiver stay
# at nice 0, as a fabric's nodes do). Root only (a user's own daemons stay at the default).
DAEMON_NICE = -10


async def serve_until_signal(serve: Callable[..., Awaitable[None]], *,
                             ready_line: bool = True) -> None:
    """Start `serve` (a trio task that calls `task_status.started()`), print `READY <pid>`,
    and cancel it at the first SIGTERM or SIGINT."""
    import trio  # the daemon side only: starters need not import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            if ready_line:
                sys.stdout.write(f"READY {os.getpid()}\n")
                sys.stdout.flush()
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def write_json_atomic(path: str, data: Any) -> None:  # noqa: ANN401 - any JSON-able value
    """Write `data` as JSON to `path` through a temporary file and a rename."""
    _write_text_atomic(path, json.dumps(data))  # one string: `json.dump` is ~5x slower


def _write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


# a daemon's event loop gets a turn at least this often during a long job (`Turns`)
SLICE_NS = 200_000
SLICE_ROWS = 128  # list items encoded at a time


def json_slices(value: Any, rows: int = SLICE_ROWS) -> Iterator[str]:  # noqa: ANN401
    """`json.dumps(value)` in pieces, `"".join` of them equal to it: a dict with string keys
    piece by piece down to its values, a list of more than `rows` items `rows` at a time,
    anything else in one piece. The cuts let a caller give its event loop turns between."""
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        yield "{"
        sep = ""
        for k, v in value.items():
            yield f"{sep}{json.dumps(k)}: "
            yield from json_slices(v, rows)
            sep = ", "
        yield "}"
    elif isinstance(value, (list, tuple)) and len(value) > rows:
        yield "["
        for i in range(0, len(value), rows):
            text = json.dumps(list(value[i:i + rows]))[1:-1]
            yield f", {text}" if i else text
        yield "]"
    else:
        yield json.dumps(value)


class Turns:
    """`await turns()` between the pieces of a long job inside trio: the event loop gets a
    turn once `SLICE_NS` have passed since the last one (a daemon's packets wait meanwhile)."""

    def __init__(self) -> None:
        self._start = time.perf_counter_ns()

    async def __call__(self) -> None:
        if time.perf_counter_ns() - self._start > SLICE_NS:
            import trio  # the daemon side only: starters need not import trio

            await trio.lowlevel.checkpoint()
            self._start = time.perf_counter_ns()


async def write_json_sliced(path: str, data: Any) -> None:  # noqa: ANN401 - JSON-able
    """`write_json_atomic` for a daemon's periodic statistics inside trio: the encoding gives
    the event loop its `Turns` (a file with full sample buffers costs ms to encode, which
    would hold every packet the daemon relays meanwhile), and the file is written from a
    worker thread (the system calls let go of the interpreter)."""
    import trio  # the daemon side only

    parts = []
    turns = Turns()
    for piece in json_slices(data):
        parts.append(piece)
        await turns()
    await trio.to_thread.run_sync(_write_text_atomic, path, "".join(parts))


# ---- the starter's side -------------------------------------------------------------


def alive(pid: int | None) -> bool:
    """Whether process `pid` runs (a zombie child of ours counts as dead)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

@dataclass(frozen=True)
class DaemonSpec:
    """A process a fabric kind needs beside the links, started at bring-up for one node.

    `python -m MODULE CONFIG.json` runs it; the state directory holds `NAME.config.json`,
    `NAME.log` and the statistics file `NAME.json` (its path is added to the config as
    `stats_path`). `role` names its kind in the state's process table (`fabric status` rows,
    which processes a re-run restarts)."""

    node: str
    role: str
    module: str
    name: str
    config: dict[str, Any] = field(default_factory=dict)


def spawn_daemon(module: str, cfg_path: Path, log_path: Path, what: str,
                 record: Callable[[int], None]) -> int:
    """Start `python -m module CONFIG` as a daemon and wait for its `READY` line.

    posix_spawn, not Popen: the process outlives this command, in its own session (Ctrl-C in
    the shell does not reach it); its stdout is a pipe for `READY`, its stderr the log. It
    runs at `DAEMON_NICE` (set before it starts a thread: its threads inherit it).
    `record(pid)` runs before the wait, so a crash while waiting still leaves the pid behind.
    """
    read_fd, write_fd = os.pipe()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with interrupts_held():  # started and recorded, or neither
            pid = os.posix_spawn(
                sys.executable, [sys.executable, "-m", module, str(cfg_path)],
                os.environ,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, write_fd, 1),
                              (os.POSIX_SPAWN_DUP2, log_fd, 2)],
                setsid=True,
            )
            record(pid)
            with contextlib.suppress(OSError):  # not root, or the pid is already gone
                os.setpriority(os.PRIO_PROCESS, pid, DAEMON_NICE)
    finally:
        os.close(write_fd)
        os.close(log_fd)
    try:
        if _wait_ready(read_fd, pid):
            return pid
    finally:
        os.close(read_fd)
    stop_process(pid)
    err = log_path.read_text(errors="replace").strip().splitlines()
    why = err[-1] if err else "no output"
    raise KernelError(f"{what} did not start: {why}")




def _wait_ready(fd: int, pid: int) -> bool:
    """Wait for a daemon's `READY` line; False if it exits or times out first."""
    deadline = time.monotonic() + READY_TIMEOUT
    seen = b""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], min(left, 0.1))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:  # EOF: the engine closed stdout or died
                return b"READY" in seen
            seen += chunk
            if b"READY" in seen:
                return True
        elif not alive(pid):
            return False
    return False




def stop_process(pid: int | None, timeout: float = 3.0) -> None:
    """SIGTERM `pid`, then SIGKILL it after `timeout` seconds; reap it if it is our child."""
    if not alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
