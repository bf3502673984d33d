"""Start node processes by forking the runner, which has already imported trio, numpy and
msgpack: a fork costs ~1 ms and shares those pages, where a fresh interpreter costs ~0.3 s and
~38 MB (37.7 MB RSS and 0.28 s, measured on the 2-core development machine), so a 64-node run
starts its nodes in well under a second.

The fork happens before the runner enters trio (forking a running event loop is unsafe). The
child enters its node's network namespace with setns(2), ignores SIGINT (the runner decides
when nodes stop, and collects what they measured), and runs `serve_node`.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

import trio

from ..errors import FabricError
from ..net.daemon import INTERRUPTS, interrupts_held
from ..net.tun import netns_path, setns
from .runtime import serve_node
from .session import ClockEstimate


@dataclass
class NodeProcess:
    """A node the runner drives: forked here (`pid`), or run by its agent elsewhere (`pid`
    None; `agent` is where, `host` the machine, `clock` its clock's offset from ours)."""

    name: str
    pid: int | None
    ctl: socket.socket  # the runner's end of the control channel
    exit_status: int | None = None
    agent: str = ""
    host: str = ""
    clock: ClockEstimate | None = None

    @property
    def offset_ns(self) -> int:
        """The node's clock minus the runner's (0 for a node forked here)."""
        return self.clock.offset_ns if self.clock else 0

    def describe_exit(self) -> str:
        if self.pid is None:
            return f"its agent's session at {self.agent} closed"
        st = self.exit_status
        if st is None:
            return "still running"
        if os.WIFSIGNALED(st):
            return f"killed by {signal.Signals(os.WTERMSIG(st)).name}"
        return f"exit status {os.WEXITSTATUS(st)}"


def spawn_node(name: str, netns: str, others: list[NodeProcess],
               target: Callable[[int, str], Awaitable[None]] = serve_node) -> NodeProcess:
    """Fork a node process running `target(control_fd, name)` in namespace `netns`."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with interrupts_held():  # an interrupt lands after the fork, in the runner
        pid = os.fork()
        if pid == 0:
            try:
                parent.close()
                for other in others:
                    other.ctl.close()
            finally:  # never returns: the child never runs the runner's code
                node_main(name, netns, child.detach(), target)
    child.close()
    return NodeProcess(name=name, pid=pid, ctl=parent)


def node_main(name: str, netns: str | None, ctl_fd: int,
              target: Callable[[int, str], Awaitable[None]]) -> NoReturn:
    """A node process, forked by the runner (into namespace `netns`) or by its agent (where
    it already is): run `target` on control channel `ctl_fd`; never returns."""
    code = 1
    try:
        for sig in INTERRUPTS:
            signal.signal(sig, signal.SIG_IGN)  # the runner ends us (it reaps, reports)
        if netns is not None:
            fd = os.open(netns_path(netns), os.O_RDONLY)
            try:
                setns(fd)
            finally:
                os.close(fd)
        trio.run(target, ctl_fd, name)
        code = 0
    except BaseException as e:  # noqa: BLE001 - reported on stderr, exit status says it
        if _runner_gone(e):
            code = 3  # the runner was interrupted or died: nothing to report to
        elif (known := _fabric_error(e)) is not None:
            # ours (a plug-in that raised, a socket that could not open): one line
            _say(f"node {name}: {known}\n")
        else:
            _say(f"node {name}: {traceback.format_exc()}")
    finally:
        os._exit(code)


def _say(text: str) -> None:
    """To the process's own stderr (fd 2): the runner's sys.stderr may be a Python object
    (a test runner's buffer) whose forked copy nobody reads."""
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.write(2, text.encode(errors="replace"))


def _fabric_error(exc: BaseException) -> FabricError | None:
    """The project error behind `exc` (trio wraps a task's error in exception groups)."""
    if isinstance(exc, BaseExceptionGroup):
        found = [f for e in exc.exceptions if (f := _fabric_error(e)) is not None]
        return found[0] if found else None
    return exc if isinstance(exc, FabricError) else None


def _runner_gone(exc: BaseException) -> bool:
    """True when every error in `exc` is the control channel (or a peer) going away."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_runner_gone(e) for e in exc.exceptions)
    return isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError |
                      BrokenPipeError | ConnectionResetError)


def reap(nodes: list[NodeProcess], *, grace: float = 0.0) -> list[str]:
    """Collect exit statuses, waiting up to `grace` seconds for nodes to exit on their own;
    SIGKILL the rest. Returns the names of the nodes that had to be killed."""
    deadline = time.monotonic() + grace
    killed = []
    for n in nodes:
        if n.pid is None:  # its agent's: it ends when its session closes
            n.exit_status = 0 if n.exit_status is None else n.exit_status
            continue
        while n.exit_status is None:
            try:
                pid, status = os.waitpid(n.pid, os.WNOHANG)
            except ChildProcessError:
                n.exit_status = 0
                break
            if pid:
                n.exit_status = status
                break
            if time.monotonic() >= deadline:
                try:
                    os.kill(n.pid, signal.SIGKILL)
                    killed.append(n.name)
                except ProcessLookupError:
                    pass
                _, n.exit_status = os.waitpid(n.pid, 0)
                break
            time.sleep(0.01)
    return killed
