"""A file's `traffic:` section as background load beside a run of another kind.

A memory or LPU file may carry a `traffic:` section too (`Kind.background_traffic`). Then
`fabric run` starts the traffic as a process of its own on the same built fabric
(`python -m fabric.kinds.background FABRIC FILE DIR TIMEOUT`, which attaches to the fabric
and runs it as a plain traffic run into DIR), runs the kind's own experiment meanwhile, and
then waits for the traffic, prints its table and keeps its results in `DIR`
(`RESULTS/traffic/`, which `fabric report` re-prints). The two share the links, so each
measures the other's load; their node processes use different ports. Ctrl-C or an error
stops the traffic too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FabricError

__all__ = ["Background", "start"]

GRACE = 30.0  # seconds the traffic may take beyond its timeout (its nodes report and exit)


@dataclass
class Background:
    proc: subprocess.Popen[bytes]
    out_dir: Path
    log: Path
    timeout: float

    def finish(self, out: Callable[[str], None], say: Callable[[str], None]) -> None:
        """Wait for the traffic, print what it printed; FabricError if it failed."""
        if self.proc.poll() is None:
            say("waiting for the background traffic")
        try:
            self.proc.wait(timeout=self.timeout + GRACE)
        except subprocess.TimeoutExpired:
            self.stop()
            raise FabricError(f"the background traffic did not finish within "
                              f"{self.timeout + GRACE:.0f} s (its log: {self.log})") from None
        text = self.log.read_text(errors="replace").rstrip()
        out("background traffic (the file's traffic: section, beside the run above):")
        if text:
            out(text)
        if self.proc.returncode != 0:
            raise FabricError(f"the background traffic failed (exit {self.proc.returncode}; "
                              f"its log: {self.log})")

    def stop(self) -> None:
        """End it now, as Ctrl-C ends a run: SIGINT to its process group, which its runner
        takes as an interrupt (it stops and reaps the node processes, which ignore SIGINT);
        whatever is left after 10 s is killed."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of its group still there
        except ProcessLookupError:
            pass
        self.proc.wait()


def start(fabric: Any, source: str, out_dir: Path, timeout: float) -> Background:  # noqa: ANN401
    """Start the traffic of topology file `source` on the running `fabric` into `out_dir`."""
    from ..net import lifecycle

    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "run.log"
    # the child finds the fabric where this process keeps its state, and imports the same
    # fabric package as this process (not whichever one its working directory holds)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "FABRIC_STATE_DIR": str(lifecycle.STATE_ROOT),
           "PYTHONPATH": os.pathsep.join(
               [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fabric.kinds.background", fabric.state.name, source,
             str(out_dir), str(timeout)],
            stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    return Background(proc, out_dir, log, timeout)


def main(argv: list[str]) -> int:
    """Run a file's traffic on the running fabric it names: the child's side of `start`."""
    from . import RunContext, load
    from .handle import attach_fabric
    from .traffic import TrafficKind

    name, source, out_dir, timeout = argv
    t0 = time.monotonic()
    try:
        fabric = attach_fabric(load(source), within=os.getppid())  # the run we help
        if fabric is None or fabric.state.name != name:
            print(f"fabric: fabric {name} is not running", flush=True)
            return 1
        TrafficKind().run(RunContext(fabric, Path(out_dir), float(timeout), {}, None,
                                     out=lambda line: print(line, flush=True),
                                     say=lambda line: print(line, flush=True)))
    except FabricError as e:
        print(f"fabric: {e}", flush=True)
        return 1
    except KeyboardInterrupt:
        print("fabric: stopped", flush=True)
        return 130
    print(f"background traffic took {time.monotonic() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
