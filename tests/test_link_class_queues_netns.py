"""class_queues.png from a real traffic run on plain links (root): KV and a bulk backlog in two
classes meet at a shaped link the userspace engine serialises, so both class queues fill;
`fabric run` draws their depth from the engine's samples, `fabric report` redraws it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fabric.cli import cli
from fabric.metrics.classes import link_class_queue_series
from fabric.metrics.plots import CLASS_PLOTS

pytestmark = pytest.mark.netns

# a and b send through the plain router r to c; r -> c is the bottleneck (a small bulk so the
# run takes a few seconds)
FILE = """
name: {name}
defaults:
  link: {{mtu: 9000}}
classes:
  - {{name: kv, dscp: 26, priority: 3, strict: true}}
  - {{name: bulk, dscp: 10, priority: 0}}
nodes: {{a: {{}}, b: {{}}, r: {{kind: switch}}, c: {{}}}}
links:
  - {{endpoints: [a, r], rate: 100Mbps, delay: 100us, queue: 1MiB}}
  - {{endpoints: [b, r], rate: 100Mbps, delay: 100us, queue: 1MiB}}
  - {{endpoints: [r, c], rate: 50Mbps, delay: 1ms, queue: 300KiB}}
traffic:
  seed: 1
  chunk: 64KiB
  flows:
    - {{name: kv, pattern: pd, from: a, to: c, class: kv, requests: 3, rate: 4/s,
       tokens: 16, model: deepseek-v3}}
    - {{name: bulk, pattern: bulk, from: b, to: c, class: bulk, size: 4MiB, requests: 1}}
"""


def test_traffic_run_draws_link_class_queues(tmp_path: Path, fabric_name: str,
                                             state_dir: Path) -> None:
    path = tmp_path / "two-classes.yaml"
    path.write_text(FILE.format(name=fabric_name))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(path), "--links", "userspace",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    png = out / CLASS_PLOTS[1]
    assert png.stat().st_size > 5000
    line = next(x for x in result.output.splitlines() if x.startswith("per-class plots"))
    assert CLASS_PLOTS[1] in line
    assert "measured in the link engine" in line
    # what it drew: the deepest direction is r -> c, where both classes queued
    summary = json.loads((out / "summary.json").read_text())
    links = json.loads((out / "links.json").read_text())
    dirs, _, _ = link_class_queue_series(links, summary["meta"]["started_ns"],
                                         summary["time_scale"])
    assert dirs[0].label == "r -> c", [d.label for d in dirs]
    assert dirs[0].classes["bulk"].max() > 0
    assert dirs[0].classes["kv"].max() > 0
    assert (dirs[0].t_ns >= 0).any()  # on the run's clock: samples during the run

    png.unlink()
    report = CliRunner().invoke(cli, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert f"redrew {png}" in report.output
    assert png.stat().st_size > 5000
