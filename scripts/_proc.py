"""Child processes of the benchmarks: waiting for a role's READY line, stopping it, and the
CPU seconds a process has used (the helpers `scripts/bench_*.py` share)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path


def wait_ready(proc: subprocess.Popen[str], what: str, timeout: float) -> list[str]:
    """Wait for `proc`'s `READY ...` line; the words after READY (a role may print its pid).
    A process that does not say it within `timeout` is stopped and RuntimeError names it."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
    if not line.startswith("READY"):
        stop(proc)
        raise RuntimeError(f"{Path(sys.argv[0]).stem}: {what} did not start: {line!r}")
    return line.split()[1:]


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM (then SIGKILL) `proc`; return what is left of its stdout."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def cpu_seconds(pid: int | None, *, missing_ok: bool = False) -> float:
    """User + system CPU seconds process `pid` has used (0 for no pid). A process that is
    gone raises OSError, or counts 0 with `missing_ok`."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        if missing_ok:
            return 0.0
        raise
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str | None:
    """This machine's CPU model (`/proc/cpuinfo`), for a benchmark's JSON: machines of one
    kind differ, and a figure is only comparable with its own baseline."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
