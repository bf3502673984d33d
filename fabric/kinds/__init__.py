"""Fabric kinds as plug-ins: what `fabric run`, `report`, `check` and `status` do per kind.

A kind is one way a topology file is run: plain traffic, a path probe (no traffic), a RoCE
comparison, memory runs, an LPU schedule, PrfaaS policies. Each is a `Kind` in `kinds()`,
in the order `fabric run` tries them; the CLI only parses arguments and calls these functions,
so it names no kind. To add one: a module in this package with a `Kind` subclass, and one
line in `_all()` (see docs/architecture.md).

Each kind declares the `run` options it owns (`RunOption`); refuses, before anything is
built, options of its own that the file cannot use; runs on a built fabric, printing
through the context's `out` (stdout) and `say` (stderr); marks its results directory with
its `result_file`, so `--out` never overwrites any kind's run and `fabric report` finds
the kind again; and may add lines to `fabric check` and rows to `fabric status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import FabricError, TopologyError
from .base import Kind, RunContext, RunOption

__all__ = ["Kind", "RunContext", "RunOption", "check_agents", "check_lines", "commands", "daemons",
           "explain", "for_dir",
           "holds_run", "kinds", "load", "run_help", "run_options", "select", "status_rows",
           "validate"]


def _all() -> tuple[Kind, ...]:
    # Kind modules import only what their class attributes need; each imports its runner,
    # core and plots inside the methods, so the CLI (which reads every kind's options and
    # commands at start-up) loads no fabric machinery until a command runs.
    from .lpu import LpuKind
    from .memory import MemoryKind
    from .prfaas import PrfaasKind
    from .probe import ProbeKind
    from .roce import RoceKind
    from .traffic import TrafficKind
    from .workload import WorkloadKind

    # `fabric run` order: a section that defines the run first; a file without traffic is
    # probed; RoCE switches or flows make a comparison; plain traffic last.
    return (MemoryKind(), WorkloadKind(), PrfaasKind(), LpuKind(), ProbeKind(), RoceKind(),
            TrafficKind())


_KINDS: tuple[Kind, ...] | None = None


def kinds() -> tuple[Kind, ...]:
    global _KINDS
    if _KINDS is None:
        _KINDS = _all()
    return _KINDS


def load(path: str | Path) -> Any:  # noqa: ANN401
    """A topology file, loaded (`fabric.topology.load_topology`) and checked by every kind's
    `validate`: what every command that runs or checks a file loads it with."""
    from ..topology import load_topology

    return validate(load_topology(path))


def validate(topo: Any) -> Any:  # noqa: ANN401
    """`topo` checked by every kind's `validate` (for a topology parsed from text), and its
    expectations' figures (`metrics.expect`)."""
    for kind in kinds():
        topo = kind.validate(topo)
    if topo.expect:
        from ..metrics.expect import validate_expectations

        validate_expectations(topo)
    return topo


def run_options() -> list[RunOption]:
    """Every kind's `fabric run` options, in registry order; an option two kinds share
    (`--policy`: PrfaaS and workload files) once."""
    return list(dict.fromkeys(o for k in kinds() for o in k.options))


def select(topo: Any, options: Mapping[str, Any]) -> tuple[Kind, Any]:  # noqa: ANN401
    """The kind `fabric run` runs `topo` as, and what its prepare() returned.

    Every kind first refuses its own options that this file cannot use, so a misplaced
    option is an error before anything is built, never silently dropped; so is a section
    the chosen kind would not run. `fabric check` calls this too.
    """
    for kind in kinds():
        kind.refuse(topo, options)
    kind = next(k for k in kinds() if k.applies(topo, options))
    for other in kinds():
        for opt in other.options:
            if options.get(opt.dest) and opt not in kind.options:
                raise FabricError(f"{opt.flag} does not apply to {topo.source}: it runs as "
                                  f"{kind.title}")
    if topo.traffic is not None and not (kind.runs_traffic or kind.background_traffic):
        raise TopologyError(
            f"this file runs as {kind.title}, which moves its own traffic and runs no traffic "
            "section beside it: remove the section, or put the traffic in a file of its own",
            file=topo.source, line=topo.traffic.line, key="traffic")
    if topo.expect and not kind.expects:
        raise TopologyError(
            f"this file runs as {kind.title}, which has no figures to judge expectations by "
            "(traffic runs, RoCE comparisons and memory runs have): remove the section",
            file=topo.source, line=topo.expect[0].line, key="expect")
    if topo.events is not None and not kind.runs_events:
        raise TopologyError(
            f"this file runs as {kind.title}, which applies no event timeline (traffic runs, "
            "RoCE comparisons and memory runs do): remove the section",
            file=topo.source, line=topo.events.line, key="events")
    if topo.events is not None:
        _check_switch_egress(topo)
    return kind, kind.prepare(topo, options)


def _check_switch_egress(topo: Any) -> None:  # noqa: ANN401
    """A RoCE switch's egress realises a link's rate, queue and ECN itself (its port), fixed
    while it runs: a step that changes them there is refused at its line."""
    from ..plan import roce_switches
    from ..topology.linkprops import LINK_PROPERTIES

    switches = set(roce_switches(topo))
    if not switches:
        return
    fixed = {f: p.key for p in LINK_PROPERTIES if p.switch_realises for f in p.fields}
    for step in topo.events.steps:
        if step.action != "set" or step.link is None:
            continue
        a, b = step.link
        senders = {"a-b": [a], "b-a": [b]}.get(step.direction, [a, b])
        keys = sorted({fixed[f] for f, _ in step.props if f in fixed})
        for sender in senders:
            if sender in switches and keys:
                raise TopologyError(
                    f"{step.label}: the {' and '.join(keys)} of RoCE switch {sender}'s egress "
                    "is its port's, fixed while it runs: change the delay or loss, or the "
                    "other direction", file=topo.source, line=step.line, key="events.timeline")


def holds_run(d: Path) -> Kind | None:
    """The kind whose run directory `d` already is, if any (`--out` never overwrites one)."""
    return next((k for k in kinds() if k.owns(d)), None)


def for_dir(d: Path) -> Kind:
    """The kind of the run saved in `d`, or a FabricError saying what `d` lacks."""
    if not d.is_dir():
        raise FabricError(f"{d}: no such run directory (give the directory `fabric run` wrote)")
    kind = holds_run(d)
    if kind is None:
        files = ", ".join(dict.fromkeys(k.result_file for k in kinds()))
        raise FabricError(f"{d}: not a run directory: no {files} in it (give the directory "
                          "`fabric run` wrote its results to)")
    return kind


def run_help() -> str:
    """What `fabric run --help` says about each kind, in registry order."""
    return "\n\n".join(k.describes for k in kinds() if k.describes)


def commands() -> list[Any]:
    """The kinds' own CLI commands."""
    return [c for k in kinds() for c in k.commands()]


def check_lines(topo: Any, plan: Any) -> list[str]:  # noqa: ANN401
    """`fabric check`'s lines for the file's sections, in registry order, then one per
    expectation."""
    lines = [line for k in kinds() for line in k.check_lines(topo, plan)]
    if topo.events is not None:
        from ..units import format_time

        ev = topo.events
        moves = any(s.action != "set" for s in ev.steps)
        lines.append(f"events: {len(ev.steps)} steps up to {format_time(ev.last_ns)}" +
                     (f", routing reacts {format_time(ev.detect_ns)} after a link goes down "
                      "or up" if moves else " (link changes only: routes stay)"))
    if topo.expect:
        from ..metrics.expect import figure_of

        for e in topo.expect:
            fig, group = figure_of(e.figure)
            lines.append(f"expect: {e.text} ({fig.means}{f'; {group} only' if group else ''})")
    return lines


def explain(topo: Any, *, cls: str | None = None, flow: str | None = None) -> Any:  # noqa: ANN401
    """`fabric explain`'s explanation of `topo` (`fabric.explain.Explanation`): planned as
    `fabric check` plans it (pure), with the egresses each kind serves itself (`Kind.egress`:
    a RoCE switch's per-class queues and PFC); every other link direction is a FIFO link."""
    from ..explain import explain as explain_topology
    from ..plan import plan_fabric

    plan = plan_fabric(topo, backend="userspace", run_id="explain")
    served = {d: e for k in kinds() for d, e in k.egress(topo, plan).items()}
    return explain_topology(topo, served=served, cls=cls, flow=flow)


def status_rows(state: Any) -> list[list[str]]:  # noqa: ANN401
    return [row for k in kinds() for row in k.status_rows(state)]


def daemons(plan: Any) -> list[Any]:  # noqa: ANN401
    """Every kind's daemons for `plan` (pass them to `net.lifecycle.bring_up`)."""
    return [d for k in kinds() for d in k.daemons(plan)]


def check_agents(kind: Kind, topo: Any, remote: bool) -> None:  # noqa: ANN401
    """Refuse `fabric run --agents` where `kind` cannot run through agents, or where the
    fabric is built elsewhere (`remote`) but the file needs switch processes that only a
    fabric built on this host runs."""
    if not kind.through_agents:
        raise FabricError(f"--agents does not apply to {topo.source}: it runs as {kind.title}, "
                          "whose nodes run only here")
    if remote and topo.events is not None:
        raise FabricError(f"{topo.source}: its events change links of a fabric this host "
                          "built; a fabric built elsewhere is changed by its own tools "
                          "(containerlab tools netem)")
    if remote and topo.traffic is not None and kind.background_traffic:
        raise FabricError(f"{topo.source}: its traffic section would run as background load, "
                          "which runs only on a fabric built here; through agents alone, run "
                          "it from a file of its own")
    if remote:
        from ..plan import address_plan, roce_switches

        # the plan a run through agents uses (this host's link limits do not apply to a
        # fabric built elsewhere: a 400G file would be refused by tbf's top rate)
        roles = sorted({f"{d.role} switch" for d in daemons(address_plan(topo))}
                       | ({"RoCE switch"} if roce_switches(topo) else set()))
        if roles:
            raise FabricError(f"{topo.source} needs {' and '.join(roles)} processes, which run "
                              "only on a fabric this host builds (`fabric up` here, agents in "
                              "its namespaces); a fabric built elsewhere forwards in the "
                              "kernel: run a file without switches through its agents")
