"""What a lesson is: its steps (variants), its table's columns, its verdict (data only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Column", "Lesson", "LessonStep"]


@dataclass(frozen=True)
class LessonStep:
    """One variant of a lesson: its label, its file (in `topologies/lessons/`), and the
    RoCE comparison's `--cc` policy and `--pfc` setting it runs with (None: the file's);
    `flows`: run only these of the file's flows (None: all)."""

    label: str
    file: str
    cc: str | None = None
    pfc: bool | None = None
    flows: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Column:
    """A column of the lesson's table: its header and how a variant's cell is read from a
    `fabric.run.roce.VariantResult` (a string; '-' where the figure is missing)."""

    header: str
    cell: Callable[[Any], str]


@dataclass(frozen=True)
class Lesson:
    number: int
    slug: str
    title: str
    teaches: str  # one sentence for `fabric lesson list`
    steps: tuple[LessonStep, ...]
    columns: tuple[Column, ...]
    # what the figures show, computed from the variants' results (in step order)
    verdict: Callable[[list[Any]], list[str]]
    # whether the outcome the lesson teaches held (the tests assert it), with why not
    holds: Callable[[list[Any]], tuple[bool, str]]
    # --small: flow name -> {"requests": n, "size_bytes": b} (fewer, smaller transfers)
    small: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def page(self) -> str:
        return f"docs/lessons/{self.number:02d}-{self.slug}.md"
