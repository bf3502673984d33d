"""`fabric run` judges the file's `expect:` section on a real run (root): one expectation
holds, one cannot (a chunk latency below the link's own delay), and the run exits 3."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fabric.cli import cli

pytestmark = pytest.mark.netns

PAIR = """
name: {name}
nodes: {{a: {{}}, b: {{}}}}
links:
  - {{endpoints: [a, b], rate: 100Mbps, delay: 1ms}}
traffic:
  flows:
    - {{pattern: one-to-one, from: a, to: b, tokens: 8, requests: 1}}
expect:
  - integrity == ok
  - chunk_p99 < 100us
"""


def test_a_failing_expectation_exits_3(tmp_path, fabric_name, state_dir) -> None:
    path = tmp_path / "pair.yaml"
    path.write_text(PAIR.format(name=fabric_name))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(out), "--timeout", "120",
                                      "--links", "userspace"])
    assert result.exit_code == 3, result.output
    lines = result.stdout.splitlines()
    head = lines.index("expectations: 1 of 2 failed")
    assert lines[head + 2].split()[:5] == ["integrity", "==", "ok", "ok", "pass"]
    assert lines[head + 3].split()[:3] == ["chunk_p99", "<", "100us"]
    assert lines[head + 3].split()[5:7] == ["FAIL", "measured"]
    assert f"fabric: expectation failed: chunk_p99 < 100us ({path}:11): measured " in \
        result.stderr
    saved = json.loads((out / "expectations.json").read_text())
    assert saved["ok"] is False
    assert [o["passed"] for o in saved["runs"][0]["outcomes"]] == [True, False]
    assert saved["runs"][0]["outcomes"][1]["measured"] > 1_000_000  # over the 1 ms link
