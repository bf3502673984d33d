"""The fabric-kind interface: `Kind`, the `fabric run` options a kind owns, and what its run
gets. The registry and what the CLI calls are in `fabric.kinds`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Kind", "RunContext", "RunOption", "judge_expectations"]


@dataclass(frozen=True)
class RunOption:
    """A `fabric run` option a kind owns: its flag, the keyword it arrives as, its help."""

    flag: str
    dest: str
    help: str


@dataclass
class RunContext:
    """Everything a kind's run gets: the built fabric, where results go, how to print."""

    fabric: Any  # kinds.handle.Fabric: the plan and the state of the built fabric
    out_dir: Path
    timeout: float
    options: Mapping[str, Any]
    prepared: Any  # what the kind's prepare() returned
    out: Callable[[str], None]  # results: stdout
    say: Callable[[str], None]  # progress and notes: stderr

    @property
    def state(self) -> Any:  # noqa: ANN401 - net.lifecycle.FabricState
        return self.fabric.state

    @property
    def topo(self) -> Any:  # noqa: ANN401 - topology.document.Topology
        return self.fabric.topology

    @property
    def plan(self) -> Any:  # noqa: ANN401 - plan.FabricPlan
        return self.fabric.plan


class Kind:
    """One fabric kind. Subclasses set the class attributes and override what they use."""

    name: str = ""
    title: str = ""  # "a traffic run": for messages
    result_file: str = ""  # the file in a results directory that marks it as this kind's
    describes: str = ""  # a sentence for `fabric run --help`: which files run as this kind
    options: tuple[RunOption, ...] = ()
    compares: bool = False  # `fabric report` can compare several runs of this kind
    runs_traffic: bool = False  # runs the file's `traffic:` section itself
    background_traffic: bool = False  # else: runs it as background load beside (else refused)
    through_agents: bool = False  # its nodes can run through node agents (`run --agents`)
    expects: bool = False  # its run judges the file's `expect:` lines (metrics.expect figures)
    # its own report says how late the link engine was during the run (a traffic summary's
    # `link_engine`); for the others `fabric run` prints it and keeps it in link_engine.json
    reports_engine_lateness: bool = False
    runs_events: bool = False  # its run applies the file's `events:` timeline (run.events)

    def validate(self, topo: Any) -> Any:  # noqa: ANN401
        """Check what the file's sections ask of this kind's cores (which the data-only
        topology layer does not import), naming the file, line and key; return the topology,
        with names resolved where the check resolves them."""
        return topo

    def refuse(self, topo: Any, options: Mapping[str, Any]) -> None:  # noqa: ANN401
        """Raise FabricError for options of this kind that `topo` cannot use."""

    def applies(self, topo: Any, options: Mapping[str, Any]) -> bool:  # noqa: ANN401
        """Whether `fabric run` runs `topo` as this kind (the first kind that applies wins)."""
        return False

    def prepare(self, topo: Any, options: Mapping[str, Any]) -> Any:  # noqa: ANN401
        """Check and derive what the run needs, before anything is built."""
        return None

    def run(self, ctx: RunContext) -> None:
        """Run on the built fabric; raise FabricError if the results do not check out."""
        raise NotImplementedError

    def owns(self, d: Path) -> bool:
        """Whether results directory `d` holds a run of this kind."""
        return (d / self.result_file).exists()

    def report(self, d: Path, out: Callable[[str], None]) -> None:
        """Re-print the run saved in `d` (and redraw what its saved data allows)."""
        raise NotImplementedError

    def compare(self, dirs: list[Path], out: Callable[[str], None]) -> None:
        raise NotImplementedError

    def check_lines(self, topo: Any, plan: Any) -> list[str]:  # noqa: ANN401
        """Lines `fabric check` prints for this kind's sections."""
        return []

    def status_rows(self, state: Any) -> list[list[str]]:  # noqa: ANN401
        """Rows for `fabric status`'s table of switch processes."""
        return []

    def daemons(self, plan: Any) -> list[Any]:  # noqa: ANN401
        """The processes this kind's sections need beside the links (`net.daemon.DaemonSpec`),
        started at bring-up; worked out before anything is built, so a file they would
        refuse fails first."""
        return []

    def commands(self) -> list[Any]:
        """Commands of this kind's own for the `fabric` CLI (click commands)."""
        return []

    def egress(self, topo: Any, plan: Any) -> dict[tuple[str, str], Any]:  # noqa: ANN401
        """The link directions whose egress this kind's processes serve themselves, as
        `fabric.explain.Egress` by (sender, receiver): what `fabric explain` says enforces
        each class property there (every other direction is a FIFO link)."""
        return {}


def judge_expectations(topo: Any, runs: list[tuple[str | None, Any]], out_dir: Path,  # noqa: ANN401
                       out: Callable[[str], None]) -> Exception | None:
    """Judge `topo.expect` over each run's figures (`(variant label or None,
    metrics.expect.RunFigures)`): print a table per run, write `expectations.json` into
    `out_dir`; the `ExpectationFailed` to raise when any failed (the kind raises it after
    its own run errors), else None."""
    if not topo.expect:
        return None
    import json

    from ..errors import ExpectationFailed
    from ..metrics.expect import evaluate, expectations_json, render_expectations
    from ..metrics.summary import jsonable

    rows, failed = [], []
    for label, figures in runs:
        outcomes = evaluate(topo.expect, figures)
        out(render_expectations(outcomes, label))
        rows.append({"variant": label, "outcomes": expectations_json(outcomes)})
        failed += [(label, o) for o in outcomes if not o.passed]
    (out_dir / "expectations.json").write_text(json.dumps(jsonable(
        {"schema": "fabric.expect/1", "topology": topo.source, "ok": not failed,
         "runs": rows}), indent=1))
    if not failed:
        return None
    label, first = failed[0]
    e = first.expectation
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return ExpectationFailed(f"expectation failed: {e.text} ({topo.source}:{e.line})"
                             f"{f' in {label}' if label else ''}: {first.why}{more}")
