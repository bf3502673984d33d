"""Running a lesson: each variant's file built and run through the RoCE comparison's runner,
then one side-by-side table, the verdict, the comparison's plots and files.

Variants that share a file share one fabric (their `--cc`/`--pfc` differ, as in
`fabric run FILE --pfc on,off`); a variant with a file of its own gets a fabric of its own,
built and taken down around it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import FabricError
from ..metrics.report import format_table
from ..run.roce import Variant
from . import lesson_dir
from .model import Lesson, LessonStep

__all__ = ["LessonResult", "load_step", "render", "run_lesson"]


@dataclass(frozen=True)
class _StepVariant(Variant):
    """A RoCE comparison variant labelled with the lesson's name for it."""

    name: str = ""

    @property
    def label(self) -> str:
        return self.name


@dataclass
class LessonResult:
    lesson: Lesson
    results: list[Any]  # fabric.run.roce.VariantResult, in step order
    small: bool
    commands: list[str]

    @property
    def holds(self) -> tuple[bool, str]:
        return self.lesson.holds(self.results)


def load_step(lesson: Lesson, step: LessonStep, *, small: bool) -> Any:  # noqa: ANN401
    """The step's topology, checked as `fabric check` checks it, with only the step's flows;
    with `small`, the lesson's smaller traffic (fewer requests, smaller transfers)."""
    from ..kinds import load

    path = lesson_dir() / step.file
    if not path.exists():
        raise FabricError(f"lesson {lesson.number}: {path} is missing (the lessons' files "
                          "ship in the checkout's topologies/lessons/)")
    topo = load(path)
    if topo.traffic is None:
        raise FabricError(f"lesson {lesson.number}: {path} has no traffic section")
    flows = topo.traffic.flows
    if step.flows is not None:
        flows = tuple(f for f in flows if f.name in step.flows)
        missing = set(step.flows) - {f.name for f in flows}
        if missing:
            raise FabricError(f"lesson {lesson.number}: {path} has no flow "
                              f"{', '.join(sorted(missing))}")
    if small:
        flows = tuple(replace(f, **lesson.small.get(f.name, {})) for f in flows)
    return replace(topo, traffic=replace(topo.traffic, flows=flows))


def _command(step: LessonStep) -> str:
    cmd = f"fabric run topologies/lessons/{step.file}"
    if step.flows is not None:
        stems = {f.split("-")[0] for f in step.flows}
        names = f"{stems.pop()}-*" if len(step.flows) > 3 and len(stems) == 1 else \
            ", ".join(step.flows)
        cmd += f" (flows {names} only)"
    if step.cc:
        cmd += f" --cc {step.cc}"
    if step.pfc is not None:
        cmd += f" --pfc {'on' if step.pfc else 'off'}"
    return cmd


def run_lesson(lesson: Lesson, out_dir: Path, *, small: bool = False, links: str = "auto",
               timeout: float = 300.0, say: Callable[[str], None] = print,
               progress: Callable[[str, bool], None] | None = None) -> LessonResult:
    """Run every variant of `lesson` (in order, a fabric per file), write the results to
    `out_dir` (a directory per variant, comparison.json, plots, lesson.txt)."""
    from ..kinds.handle import open_fabric
    from ..run.roce import run_variants, write_comparison, write_plots

    topos = {s.label: load_step(lesson, s, small=small) for s in lesson.steps}  # checked first
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[Any] = []
    for file in dict.fromkeys(s.file for s in lesson.steps):
        steps = [s for s in lesson.steps if s.file == file]
        say(f"lesson {lesson.number}: {', '.join(s.label for s in steps)} ({file})")
        # one fabric per file: its steps differ only in traffic, congestion control and PFC,
        # which each run sets afresh (run_variants restarts the switches per variant)
        with open_fabric(topos[steps[0].label], links) as fabric:
            for s in steps:
                variant = _StepVariant(s.cc, s.pfc, name=s.label)
                results += run_variants(fabric.state, topos[s.label], [variant], out_dir,
                                        timeout=timeout, progress=progress, say=say,
                                        plan=fabric.plan)
    order = {s.label: i for i, s in enumerate(lesson.steps)}
    results.sort(key=lambda r: order[r.variant.label])
    first = topos[lesson.steps[0].label]
    write_comparison(results, first, out_dir)
    write_plots(results, replace(first, name=f"lesson {lesson.number}"), out_dir)
    done = LessonResult(lesson, results, small, [_command(s) for s in lesson.steps])
    (out_dir / "lesson.txt").write_text(render(done) + "\n")
    ok, why = done.holds
    (out_dir / "lesson.json").write_text(json.dumps(
        {"lesson": lesson.number, "slug": lesson.slug, "small": small, "holds": ok,
         "why": why, "variants": [r.variant.label for r in results],
         "errors": {r.variant.label: r.errors for r in results if r.errors}}, indent=1))
    return done


def render(done: LessonResult) -> str:
    """The lesson's one table (fabric time), its verdict and the commands behind it."""
    lesson, results = done.lesson, done.results
    rows = [[r.variant.label, *[c.cell(r) for c in lesson.columns]] for r in results]
    header = ["variant", *[c.header for c in lesson.columns]]
    scale = {f"{r.summary.get('time_scale', 0):g}" for r in results if r.summary}
    out = [f"Lesson {lesson.number}: {lesson.title}"
           + (" (--small)" if done.small else ""),
           f"fabric time (host ran {', '.join(sorted(scale)) or '?'}x slower); same traffic "
           "in every variant",
           format_table(rows, header, numeric=range(1, len(header))), ""]
    out += lesson.verdict(results)
    for r in results:
        for err in r.errors:
            out.append(f"error: {r.variant.label}: {err}")
    out.append("")
    out.append("each variant on its own: " + "; ".join(done.commands))
    out.append(f"read: {lesson.page}")
    return "\n".join(out)


def errors(results: Sequence[Any]) -> list[str]:
    return [f"{r.variant.label}: {e}" for r in results for e in r.errors]
