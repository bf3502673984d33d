"""Fuzz `fabric check` with mutations of every shipped topology (issue 16).

Each case mutates one shipped file (a value, the structure, the text, YAML tags, anchors and
aliases) and runs `fabric check` on it. Whatever the input, the command must exit 0 or 1; on
1 it prints exactly one line on stderr, under 300 characters, naming the file (and the line,
for every error about the file's content), in bounded time; the process's peak memory stays
bounded over the whole run. No internal error (exit 70), no traceback.

The seed is fresh each run and printed on failure; `FABRIC_FUZZ_SEED=N` replays one and
`FABRIC_FUZZ_CASES=N` changes the budget (default 1,000 cases, about a minute here).
"""

from __future__ import annotations

import os
import random
import re
import resource
import secrets
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fabric.cli import cli

SHIPPED = sorted((Path(__file__).resolve().parent.parent / "topologies").glob("*.yaml"))
CASES = int(os.environ.get("FABRIC_FUZZ_CASES", "1000"))
CASE_SECONDS = 2.0  # each case's bound (a typical case takes ~20 ms)
MEMORY_MB = 200  # the most the whole fuzz run may add to the process's peak

NASTY = [
    "!!int x", "!!bool maybe", "!!timestamp 2001-13-45", "!!binary AAAA", "!!float nope",
    "!!python/object/apply:os.system [true]", "!!set {a, b}", "!!omap [a: 1]",
    "1e999999s", "1e9999999Mbps", "1e9999999", "1e35p", "1e-300/s", "nan/s", "inf/s",
    ".nan", ".inf", "-.inf", "1e308", "5e-324", "-1", "0", "-0.0", "0x7fffffffffffffffffff",
    "9" * 4400, "'a\\nb'", '"a\\nb"', '"\\e[31m"', "~", "null", "[]", "{}", "[[[[[[]]]]]]",
    "yes", "no", "on", "''", "' '", "1.5", "100%", "101%", "-5ms", "5", "1e3", "1e30Tbps",
    "100 packets", "1KiB and 3 packets", "0p", "0.5p", "65536", "575", "*nope", "&a x",
    "'" + "1" * 3000 + "x'", "a" * 300, "\u00b5s", "\u202e", "'\u2028'", "1_000", "0o17",
    "2001-01-01", "=", "<<", "- a", "{<<: [1]}", "{a: 1, a: 2}", "!!str", "!custom x",
]

_STRUCTURAL = ("delete-line", "duplicate-line", "swap-lines", "indent", "dedent",
               "deep-nest", "anchor-alias", "merge-self", "merge-bomb", "truncate")
_TEXTUAL = ("insert-byte", "tab", "control-char", "unicode", "flip-char")


def scalar_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of every plain scalar value in `text`."""
    spans = []
    try:
        for ev in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(ev, yaml.ScalarEvent) and ev.start_mark.index < ev.end_mark.index:
                spans.append((ev.start_mark.index, ev.end_mark.index))
    except yaml.YAMLError:
        pass
    return spans


def mutate(rng: random.Random, text: str) -> tuple[str, str]:
    """One mutation of `text`: (what was done, the new text)."""
    kind = rng.choice(("value", "value", "value", *_STRUCTURAL, *_TEXTUAL))
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    if kind == "value":
        spans = scalar_spans(text)
        if spans:
            a, b = rng.choice(spans)
            new = rng.choice(NASTY)
            return f"value {text[a:b]!r} -> {new[:30]!r}", text[:a] + new + text[b:]
        kind = "flip-char"
    if kind == "delete-line":
        del lines[i]
    elif kind == "duplicate-line":
        lines.insert(i, lines[i])
    elif kind == "swap-lines":
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "indent":
        lines[i] = "  " + lines[i]
    elif kind == "dedent":
        lines[i] = lines[i][2:] if lines[i].startswith("  ") else lines[i]
    elif kind == "deep-nest":
        depth = rng.choice((10, 63, 64, 65, 300, 2000))
        lines.insert(i, "x: " + "[" * depth + "]" * depth)
    elif kind == "anchor-alias":
        spans = scalar_spans(text)
        if spans:
            a, b = rng.choice(spans)
            c, d = rng.choice(spans)
            if a > c:
                (a, b), (c, d) = (c, d), (a, b)
            if b <= c:
                return "anchor-alias", text[:a] + "&fz " + text[a:b] + text[b:c] + "*fz" + \
                    text[d:]
        lines.insert(i, "x: *nowhere")
    elif kind == "merge-self":
        lines.insert(i, "nodes: &self {<<: *self}")
    elif kind == "merge-bomb":
        bomb = ["b0: &b0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}"]
        for lvl in range(1, rng.choice((3, 5, 9))):
            bomb.append(f"b{lvl}: &b{lvl} [" + ", ".join(
                f"{{<<: *b{lvl - 1}, k{j}: {j}}}" for j in range(10)) + "]")
        where = rng.choice(("top", "nodes"))
        if where == "top":
            lines[0:0] = bomb
        else:
            lines[0:0] = ["defaults:", "  link:", "    " + "\n    ".join(bomb)]
    elif kind == "truncate":
        cut = rng.randrange(len(text) + 1)
        return f"truncate at {cut}", text[:cut]
    elif kind == "insert-byte":
        pos = rng.randrange(len(text) + 1)
        ch = chr(rng.randrange(32, 127))
        return f"insert {ch!r} at {pos}", text[:pos] + ch + text[pos:]
    elif kind == "tab":
        lines[i] = "\t" + lines[i]
    elif kind == "control-char":
        pos = rng.randrange(len(text) + 1)
        return f"control char at {pos}", text[:pos] + chr(rng.choice((0, 7, 27, 0x85))) + \
            text[pos:]
    elif kind == "unicode":
        pos = rng.randrange(len(text) + 1)
        return f"unicode at {pos}", text[:pos] + rng.choice("\u00e9\u202e\U0001f600\ufeff") + \
            text[pos:]
    elif kind == "flip-char":
        pos = rng.randrange(len(text)) if text else 0
        return f"flip char at {pos}", text[:pos] + rng.choice("{}[]:-&*!|>'\"#%@`,") + \
            text[pos + 1:]
    return f"{kind} at line {i + 1}", "\n".join(lines)


# errors that are about the file as a whole, so they have no line to name
_NO_LINE = re.compile(r"the file is empty|larger than \d+ MiB|YAML syntax error")


def test_fuzzed_topologies_fail_in_one_line(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)  # file names as a user types them: case12.yaml
    seed = int(os.environ.get("FABRIC_FUZZ_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    runner = CliRunner()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = {"ok": 0, "error": 0}
    slowest = (0.0, "")
    for n in range(CASES):
        base = rng.choice(SHIPPED)
        text = base.read_text()
        done = []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            what, text = mutate(rng, text)
            done.append(what)
        path = Path(f"case{n}.yaml")
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        case = f"seed {seed} case {n}: {base.name}: {'; '.join(done)} (FABRIC_FUZZ_SEED={seed})"
        t0 = time.monotonic()
        result = runner.invoke(cli, ["check", str(path)])
        took = time.monotonic() - t0
        slowest = max(slowest, (took, case))
        assert took < CASE_SECONDS, f"{case}: took {took:.1f} s"
        assert result.exit_code in (0, 1), \
            f"{case}: exit {result.exit_code}\n{result.stderr}\n{result.exception!r}"
        if result.exit_code == 0:
            counts["ok"] += 1
            continue
        counts["error"] += 1
        err = result.stderr
        assert err.count("\n") == 1, f"{case}: not one line: {err!r}"
        assert err.endswith("\n"), f"{case}: not one line: {err!r}"
        line = err.rstrip("\n")
        assert len(line) < 300, f"{case}: {len(line)} characters"
        assert line.startswith(f"fabric: {path}"), f"{case}: names no file: {line}"
        if not _NO_LINE.search(line):
            assert re.match(rf"fabric: {re.escape(str(path))}:\d+: ", line), \
                f"{case}: names no line: {line}"
        path.unlink()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grown_mb < MEMORY_MB, f"seed {seed}: peak memory grew {grown_mb:.0f} MB"
    # both outcomes happen, or the mutations are not reaching the checks
    assert counts["ok"] > CASES // 50, counts
    assert counts["error"] > CASES // 2, counts
    print(f"fuzz: seed {seed}, {counts}, slowest {slowest[0]:.2f} s ({slowest[1]})")


@pytest.mark.parametrize("base", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_file_passes_unmutated(base: Path) -> None:
    result = CliRunner().invoke(cli, ["check", str(base)])
    assert result.exit_code == 0, result.stderr
