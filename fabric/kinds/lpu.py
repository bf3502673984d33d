"""LPU: a compiler-scheduled transfer graph of 320-byte vectors, scheduled vs dynamic."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import FabricError
from .base import Kind, RunContext


class LpuKind(Kind):
    name = "lpu"
    title = "an LPU run"
    result_file = "lpu.json"
    through_agents = True
    background_traffic = True
    describes = ("A file with an `lpu:` section compiles its transfer graph into a schedule and "
                 "runs it, scheduled and dynamic, reporting lateness against the plan."
                 " A `traffic:` section beside it runs as background load.")

    def applies(self, topo: Any, options: Mapping[str, Any]) -> bool:  # noqa: ANN401
        return topo.lpu is not None

    def run(self, ctx: RunContext) -> None:
        from ..run.lpu import render_runs, run_lpu

        runs = run_lpu(ctx.state, ctx.topo, ctx.out_dir, progress=ctx.say,
                       agents=ctx.fabric.agents)
        ctx.out(render_runs(runs, ctx.topo.time_scale))
        ctx.out(f"wrote {ctx.out_dir}/ (gantt.png, lateness.png, lpu.json, plan.txt)")
        if any(r.missing for r in runs):
            raise FabricError("some batches never arrived (see 'missing' above)")

    def report(self, d: Path, out: Callable[[str], None]) -> None:
        from ..run.lpu import LpuRun, render_runs

        data = json.loads((d / self.result_file).read_text())
        out(render_runs([LpuRun(**r) for r in data["runs"]], data["time_scale"]))

    def commands(self) -> list[Any]:
        return [_schedule_command()]


def _schedule_command() -> Any:  # noqa: ANN401 - a click command
    import click

    @click.command()
    @click.argument("file", type=click.Path(dir_okay=False))
    @click.option("--drift", "drift_ppm", type=float, default=None,
                  help="Size the guard band for this clock drift (ppm; default: the file's).")
    @click.option("--out", type=click.Path(file_okay=False),
                  help="Write plan.txt and gantt.png.")
    @click.option("--rows", type=int, default=40, show_default=True, help="Plan rows to print.")
    def schedule(file: str, drift_ppm: float | None, out: str | None, rows: int) -> None:
        """Compile FILE's LPU transfer graph into a plan, verify it, print it (no fabric
        needed)."""
        from ..run.lpu import build_graph, lpu_topology
        from ..schedule import compile_plan, gantt_png, plan_table, verify
        from ..topology import load_topology
        from ..units import format_time

        topo = load_topology(file)  # a schedule reads the nodes, links and lpu: section only
        if topo.lpu is None:
            raise FabricError(f"{topo.source}: no lpu: section to schedule")
        spec = topo.lpu
        graph = build_graph(spec)
        ltopo = lpu_topology(topo)
        drift = drift_ppm if drift_ppm is not None else (
            spec.plan_drift_ppm if spec.plan_drift_ppm is not None else max(spec.drift_ppm))
        plan = compile_plan(graph, ltopo, vector_bytes=spec.vector_bytes,
                            batch_vectors=spec.batch_vectors, guard_ns=None, drift_ppm=drift,
                            resync_period_ns=spec.resync_ns[0])
        verify(plan, ltopo, graph)
        click.echo(f"{graph.name}: {len(graph.transfers)} transfers, {len(plan.sends)} batch "
                   f"sends on {len(ltopo.links)} links; guard {format_time(plan.guard_ns)} for "
                   f"{drift:g} ppm over {format_time(spec.resync_ns[0])}; verified")
        click.echo(plan_table(plan, limit=rows))
        if out:
            out_dir = Path(out)
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "plan.txt").write_text(plan_table(plan, limit=len(plan.sends)) + "\n")
            click.echo(f"wrote {gantt_png(plan, out_dir / 'gantt.png')} and "
                       f"{out_dir / 'plan.txt'}")

    return schedule
