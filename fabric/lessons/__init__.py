"""Lessons for network engineers: `fabric lesson list`, `fabric lesson run N`.

A lesson is two or more variants of one fabric run on the same traffic: a shipped topology
file per variant (`topologies/lessons/NN-*.yaml`, to read and diff), optionally with a RoCE
comparison's `--cc` / `--pfc` setting. Each variant runs through the RoCE comparison's
runner (`fabric.run.roce.run_variants`: switch statistics, queue samples, pauses, marks,
retransmissions), and the lesson prints ONE side-by-side table of the figures that carry its
point, then a line saying what the figures show, computed from the run, and writes the
comparison's plots and `comparison.json` (`fabric report DIR` re-prints it as a comparison).

The catalogue (`LESSONS`) is data; `fabric.lessons.run` builds and runs. The page of lesson
N is `docs/lessons/NN-slug.md`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FabricError
from .catalog import LESSONS
from .model import Column, Lesson, LessonStep

__all__ = ["LESSONS", "Column", "Lesson", "LessonStep", "find", "lesson_dir", "list_lines"]


def lesson_dir() -> Path:
    """Where the lessons' topology files are: `topologies/lessons/` of the checkout."""
    return Path(__file__).resolve().parent.parent.parent / "topologies" / "lessons"


def find(key: str | int) -> Lesson:
    """The lesson numbered (or named) `key`, or a FabricError listing those that exist."""
    text = str(key).strip()
    for lesson in LESSONS:
        if text in (str(lesson.number), f"{lesson.number:02d}", lesson.slug):
            return lesson
    names = ", ".join(f"{lesson.number} {lesson.slug}" for lesson in LESSONS)
    raise FabricError(f"unknown lesson '{text}' (lessons: {names}; `fabric lesson list`)")


def list_lines() -> list[str]:
    """`fabric lesson list`: a line per lesson (number, name, what it teaches, its page)."""
    out = []
    for lesson in LESSONS:
        out.append(f"{lesson.number}  {lesson.slug:<18} {lesson.title}")
        out.append(f"   {lesson.teaches}")
        out.append(f"   variants: {', '.join(s.label for s in lesson.steps)}; {lesson.page}")
    return out


