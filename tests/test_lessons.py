"""`fabric lesson`: the catalogue and its errors (pure), and every lesson run at a small scale
with its qualitative outcome asserted (root: namespaces, switches, real sockets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fabric.cli import cli
from fabric.lessons import LESSONS, find, lesson_dir

REPO = Path(__file__).resolve().parent.parent


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="fabric")


def test_lessons_are_numbered_in_order_with_pages_and_files() -> None:
    assert [lesson.number for lesson in LESSONS] == list(range(1, len(LESSONS) + 1))
    for lesson in LESSONS:
        assert (REPO / lesson.page).exists(), lesson.page
        assert len(lesson.steps) >= 2
        assert len({s.label for s in lesson.steps}) == len(lesson.steps)
        for step in lesson.steps:
            assert (lesson_dir() / step.file).exists(), step.file


def test_every_lesson_file_checks() -> None:
    files = sorted({s.file for lesson in LESSONS for s in lesson.steps})
    for name in files:
        result = invoke("check", "--links", "userspace", str(lesson_dir() / name))
        assert result.exit_code == 0, (name, result.output)


def test_small_traffic_names_real_flows() -> None:
    from fabric.lessons.run import load_step

    for lesson in LESSONS:
        names: set[str] = set()
        for step in lesson.steps:
            topo = load_step(lesson, step, small=True)
            names |= {f.name for f in topo.traffic.flows}
            if step.flows is not None:
                assert names >= set(step.flows)
        assert set(lesson.small) <= names, lesson.number


def test_list_names_every_lesson() -> None:
    result = invoke("lesson", "list")
    assert result.exit_code == 0
    for lesson in LESSONS:
        assert f"{lesson.number}  {lesson.slug}" in result.output
        assert lesson.page in result.output


@pytest.mark.parametrize("key", ["99", "nope"])
def test_an_unknown_lesson_is_one_line_listing_what_exists(key: str) -> None:
    result = invoke("lesson", "run", key)
    assert result.exit_code == 1
    names = ", ".join(f"{lesson.number} {lesson.slug}" for lesson in LESSONS)
    assert result.stderr.splitlines() == [
        f"fabric: unknown lesson '{key}' (lessons: {names}; `fabric lesson list`)"]


def test_a_lesson_is_found_by_number_or_name() -> None:
    assert find("1") is LESSONS[0]
    assert find("01") is LESSONS[0]
    assert find(LESSONS[1].slug) is LESSONS[1]


# ---- every lesson, small, as root --------------------------------------------------------


@pytest.mark.netns
@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.slug)
def test_lesson_outcome_holds(lesson, tmp_path: Path, state_dir: Path) -> None:  # noqa: ANN001
    # a loaded 2-core host can blur a small lesson's contrast (lesson 6's KV class missed
    # once in CI: p99 1.451 ms in the FIFO, 1.619 ms in its class): a miss runs the lesson
    # once more, and the second run must hold
    for attempt in (1, 2):
        out = tmp_path / f"out{attempt}"
        result = invoke("lesson", "run", str(lesson.number), "--small", "--out", str(out),
                        "--timeout", "120")
        assert result.exit_code == 0, result.output
        assert f"Lesson {lesson.number}: " in result.stdout
        saved = json.loads((out / "lesson.json").read_text())
        assert saved["errors"] == {}
        if saved["holds"]:
            break
    assert saved["holds"], (saved["why"], result.stdout)
    for step in lesson.steps:
        assert (out / step.label / "summary.json").exists()
    assert (out / "queues.png").exists()
    assert (out / "comparison.json").exists()


# ---- the line a traffic run ends with on what its classes did (pure) ------------------------

TWO_CLASSES = """\
name: two
nodes: {a: {}, b: {}}
links:
  - {endpoints: [a, b]%s}
classes:
  - {name: kv, dscp: 26, priority: 3%s}
  - {name: bulk, dscp: 10, priority: 1}
traffic:
  flows:
    - {name: k, pattern: one-to-one, from: a, to: b, class: kv, tokens: 16}
    - {name: c, pattern: bulk, from: a, to: b, class: bulk, size: 1MiB}
"""


def _summary(kv_ns: int, bulk_ns: int) -> dict:
    return {"classes": {name: {"chunk_latency": {"fabric_ns": {"p99": ns}}}
                        for name, ns in (("kv", kv_ns), ("bulk", bulk_ns))}}


def _line(tmp_path: Path, link: str, kv: str, summary: dict) -> str | None:
    from fabric.explain import explain
    from fabric.kinds import load
    from fabric.lessons.story import class_line

    path = tmp_path / "two.yaml"
    path.write_text(TWO_CLASSES % (link, kv))
    return class_line(explain(load(path), served={}), summary)


def test_class_line_on_fifo_links_says_the_class_changed_nothing(tmp_path: Path) -> None:
    line = _line(tmp_path, "", "", _summary(708_000, 373_000))
    assert line is not None
    assert line.startswith("classes: chunk p99 bulk 373 us, kv 708 us. ")
    assert "one FIFO link queue for all classes" in line
    assert "kv came out worst here" in line


def test_class_line_names_the_strict_class_served_first(tmp_path: Path) -> None:
    line = _line(tmp_path, ", rate: 100Mbps", ", strict: true", _summary(200_000, 900_000))
    assert line is not None
    assert line.startswith("classes: chunk p99 kv 200 us, bulk 900 us. ")
    assert "kv is served first (strict priority)" in line


def test_class_line_needs_two_classes() -> None:
    from fabric.lessons.story import class_line

    assert class_line(None, {"classes": {"kv": {}}}) is None
