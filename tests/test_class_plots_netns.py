"""Per-class plots from a real RoCE run (root): a small incast of a lossless KV class beside
a kernel-TCP bulk class through one switch with a small buffer, so the switch queues both
classes and pauses the senders; `fabric run` writes the plots, `fabric report` redraws them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fabric.cli import cli
from fabric.metrics.plots import CLASS_PLOTS
from tests.test_roce_netns import _ours, _topo

pytestmark = pytest.mark.netns

BULK = ("    - {name: ckpt, pattern: bulk, from: s1, to: r, class: bulk, transport: tcp,"
        " size: 1MiB}")


def test_run_and_report_draw_the_per_class_plots(tmp_path: Path, fabric_name: str,
                                                  state_dir: Path) -> None:
    path, _ = _topo(tmp_path, fabric_name, buffer="256KiB", extra=BULK)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(path), "--pfc", "on", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (variant,) = [d for d in out.iterdir() if (d / "summary.json").exists()]  # dcqcn-pfc
    plots = [variant / name for name in CLASS_PLOTS]
    for p in plots:
        assert p.stat().st_size > 5000, p
    # the printout names them
    line = next(x for x in result.output.splitlines() if x.startswith("per-class plots"))
    for name in CLASS_PLOTS:
        assert f"{variant.name}/{name}" in line
    assert "measured in the switches" in line
    # what the plots drew: both classes queued at the switch, and it paused its senders
    import json

    from fabric.metrics.classes import class_queue_series, pause_rows

    switches = json.loads((variant / "switches.json").read_text())
    ports, _ = class_queue_series(switches, 0, 1000.0)
    assert {"kv", "bulk"} <= {c for p in ports for c in p.classes}
    rows, _, sent = pause_rows(switches, 0, 1000.0)
    assert sent > 0
    assert rows
    assert rows[0].classes == ("kv",)
    assert all(b >= a for r in rows for a, b in r.intervals)

    for p in plots:
        p.unlink()
    report = CliRunner().invoke(cli, ["report", str(out)])
    assert report.exit_code == 0, report.output
    for p in plots:
        assert f"redrew {p}" in report.output
        assert p.stat().st_size > 5000
    assert _ours(fabric_name) == []
