"""A file without traffic: measure its paths with ping and iperf3."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .base import Kind, RunContext


def _probe_summary(d: Path) -> dict | None:
    try:
        data = json.loads((d / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "pairs" in data else None


class ProbeKind(Kind):
    name = "probe"
    title = "a path check (no traffic)"
    result_file = "summary.json"
    describes = "A file without a traffic section gets a ping/iperf3 check of its paths."

    def applies(self, topo: Any, options: Mapping[str, Any]) -> bool:  # noqa: ANN401
        return topo.traffic is None

    def run(self, ctx: RunContext) -> None:
        from ..run.probe import probe_fabric

        ctx.say(f"{ctx.topo.name} has no traffic section: measuring its paths with ping and "
                "iperf3")
        report = probe_fabric(ctx.state, ctx.topo, progress=ctx.say)
        ctx.out(report.table())
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        (ctx.out_dir / "summary.json").write_text(json.dumps(report.to_json(), indent=1))
        ctx.out(f"wrote {ctx.out_dir / 'summary.json'}")

    def owns(self, d: Path) -> bool:
        return _probe_summary(d) is not None

    def report(self, d: Path, out: Callable[[str], None]) -> None:
        from ..run.probe import ProbeReport

        data = _probe_summary(d)
        assert data is not None
        out(ProbeReport.from_json(data).table())
