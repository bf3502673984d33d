"""How late the userspace link engine was during a run of any kind, beside the kind's report.

The engine counts every release by how late it wrote it (`release_lateness` of its
statistics). `fabric run` takes the engine's counts before the kind's run (`watch`) and
after it (`Watch.finish`): it prints the run's share as one line and keeps it in
`RESULTS/link_engine.json`, which `fabric report` prints again (`reprint`). A kind whose own
report carries the figures (`Kind.reports_engine_lateness`: a traffic run's summary and link
table) is left to print them itself; a fabric without the engine here has nothing to say.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ENGINE_FILE", "Watch", "reprint", "watch"]

ENGINE_FILE = "link_engine.json"


@dataclass
class Watch:
    state: Any  # net.lifecycle.FabricState
    before: dict  # the engine's statistics as the run started

    def finish(self, out_dir: Path, out: Callable[[str], None]) -> None:
        """Print the run's share of the engine's lateness and keep it in `out_dir`."""
        from ..metrics.report import engine_line
        from ..run.traffic import engine_lateness_since

        late = engine_lateness_since(self.state, self.before)
        if late is None:
            return
        out(engine_line({"link_engine": late}))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / ENGINE_FILE).write_text(json.dumps(late) + "\n")


def watch(fabric: Any, kind: Any) -> Watch | None:  # noqa: ANN401
    """A `Watch` on the link engine of `fabric` for a run of `kind`; None where the kind
    reports the engine itself or no userspace engine runs here."""
    from ..plan import link_backend
    from ..run.traffic import engine_stats

    if kind.reports_engine_lateness or fabric.remote or \
            not link_backend(fabric.state.backend).engine:
        return None
    return Watch(fabric.state, engine_stats(fabric.state))


def reprint(d: Path, out: Callable[[str], None]) -> None:
    """The line a run kept in `d`, if it kept one (a damaged file says nothing)."""
    path = d / ENGINE_FILE
    if not path.is_file():
        return
    from ..metrics.report import engine_line

    with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
        out(engine_line({"link_engine": json.loads(path.read_text())}))
