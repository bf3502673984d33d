"""Apply a plan's kernel steps, over several cores when there are many of them.

Bring-up's time is Python building netlink requests, not the kernel: pyroute2 takes about
0.25 ms to encode and send one (a 1,000-namespace leaf-spine has about 25,000 steps), where
`ip -batch` makes the same objects in a fifth of the time. So a plan of `PARALLEL_STEPS` steps
or more is applied in two phases:

1. here, in plan order: every namespace, and every step that touches two namespaces (a veth
   pair is made in one and its peer lands in the other);
2. the rest, each of which acts in one namespace, split by namespace over `workers`
   processes (`python -m fabric.net.apply`, the steps pickled on its stdin), each applying
   its namespaces' steps in plan order with its own netlink handles.

A step acts only on its own namespace or on objects phase 1 made, so each namespace sees its
steps in the plan's order, as a serial bring-up would. Each worker reports progress and its
first error on stdout; the first error stops every worker, and the caller's cleanup (which
removes what a fabric made by the names that carry its run id) undoes what any of them made.
"""

from __future__ import annotations

import os
import pickle
import selectors
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ..plan import AddNamespace, AddVeth, Step
from .kernel import Kernel, KernelError

__all__ = ["PARALLEL_STEPS", "apply_steps", "split_steps"]

PARALLEL_STEPS = 4000  # below this (~160 namespaces), one process: starting workers costs more
PROGRESS_EVERY = 50


def _netns(step: Step) -> str:
    return step.netns_a if isinstance(step, AddVeth) else step.netns


def split_steps(steps: Sequence[Step], workers: int) -> tuple[list[Step], list[list[Step]]]:
    """(the first phase's steps, one list of steps per worker): namespaces and steps across
    two namespaces first; the rest by namespace, each namespace's steps kept together and in
    order, namespaces dealt to the worker with the fewest steps so far. Pure."""
    first: list[Step] = []
    by_ns: dict[str, list[Step]] = {}
    for s in steps:
        if isinstance(s, AddNamespace | AddVeth):
            first.append(s)
        else:
            by_ns.setdefault(_netns(s), []).append(s)
    shares: list[list[Step]] = [[] for _ in range(max(1, workers))]
    for ns_steps in sorted(by_ns.values(), key=len, reverse=True):
        min(shares, key=len).extend(ns_steps)
    return first, [s for s in shares if s]


def apply_steps(steps: Sequence[Step], *, workers: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> None:
    """Apply `steps` to the kernel: in this process below `PARALLEL_STEPS` (or with one
    worker), else in two phases (module docstring). KernelError names the failed step."""
    total = len(steps)
    n = workers if workers is not None else min(os.cpu_count() or 1, 4)
    if n < 2 or total < PARALLEL_STEPS:
        _apply_here(steps, 0, total, progress)
        return
    first, shares = split_steps(steps, n)
    _apply_here(first, 0, total, progress)
    _apply_in_workers(shares, len(first), total, progress)


def _apply_here(steps: Sequence[Step], done: int, total: int,
                progress: Callable[[int, int], None] | None) -> None:
    with Kernel() as k:
        for i, step in enumerate(steps):
            k.apply(step)
            if progress is not None and (i % PROGRESS_EVERY == 0 or i == len(steps) - 1):
                progress(done + i + 1, total)


def _apply_in_workers(shares: list[list[Step]], done: int, total: int,
                      progress: Callable[[int, int], None] | None) -> None:
    # the workers import this very package, wherever it was imported from here
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    logs = [tempfile.TemporaryFile() for _ in shares]  # a traceback, were a worker to crash
    procs = [subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=log, env=env)
             for log in logs]
    error: str | None = None
    try:
        for p, share in zip(procs, shares, strict=True):
            assert p.stdin is not None
            p.stdin.write(pickle.dumps(share))
            p.stdin.close()
        counts = [0] * len(procs)
        sel = selectors.DefaultSelector()
        for i, p in enumerate(procs):
            assert p.stdout is not None
            sel.register(p.stdout, selectors.EVENT_READ, i)
        open_ = len(procs)
        while open_ and error is None:
            for key, _ in sel.select():
                i = key.data
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if not line:
                    sel.unregister(key.fileobj)
                    open_ -= 1
                    continue
                kind, _, rest = line.decode().rstrip("\n").partition(" ")
                if kind == "done":
                    counts[i] = int(rest)
                    if progress is not None:
                        progress(done + sum(counts), total)
                elif kind == "error":
                    error = rest
                    break
        sel.close()
        if error is None:
            for p, share, count, log in zip(procs, shares, counts, logs, strict=True):
                if p.wait() != 0 or count != len(share):
                    log.seek(0)
                    why = log.read().decode(errors="replace").strip().splitlines()
                    error = (f"a bring-up worker exited {p.returncode} after {count} of "
                             f"{len(share)} steps: {why[-1] if why else 'no output'}")
                    break
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()
        for log in logs:
            log.close()
    if error is not None:
        raise KernelError(error)


def main() -> int:
    """A worker: apply the pickled steps on stdin; print `done N` as it goes (every
    `PROGRESS_EVERY` steps and at the end) and `error MESSAGE` on the first failure."""
    steps: list[Step] = pickle.loads(sys.stdin.buffer.read())
    out = sys.stdout
    try:
        with Kernel() as k:
            for i, step in enumerate(steps):
                k.apply(step)
                if i % PROGRESS_EVERY == PROGRESS_EVERY - 1 or i == len(steps) - 1:
                    out.write(f"done {i + 1}\n")
                    out.flush()
    except KernelError as e:
        out.write(f"error {' '.join(str(e).split())}\n")
        out.flush()
        return 1
    except KeyboardInterrupt:  # Ctrl-C reaches the process group: the parent cleans up
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
