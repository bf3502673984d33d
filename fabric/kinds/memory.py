"""Memory-semantic switches: load/store, Hypercast, in-network reduce, KV pull vs push."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import FabricError
from ..units import format_size
from .base import Kind, RunContext, judge_expectations


class MemoryKind(Kind):
    name = "memory"
    title = "a memory run"
    result_file = "memory.json"
    through_agents = True
    runs_events = True
    expects = True
    background_traffic = True
    describes = ("A file with a `memory:` section runs its memory runs (load/store, Hypercast, "
                 "in-network reduce, KV pull) against message passing on the same links."
                 " A `traffic:` section beside it runs as background load.")

    def applies(self, topo: Any, options: Mapping[str, Any]) -> bool:  # noqa: ANN401
        return topo.memory is not None

    def run(self, ctx: RunContext) -> None:
        from ..run.memory import (
            read_outcomes,
            render,
            render_events,
            run_memory,
            write_link_plot,
        )

        outcomes = run_memory(ctx.state, ctx.topo, ctx.out_dir, say=ctx.say,
                              timeout=ctx.timeout, plan=ctx.plan, agents=ctx.fabric.agents)
        ctx.out(render(outcomes, ctx.topo))
        _, _, events = read_outcomes(ctx.out_dir / self.result_file)
        for line in render_events(events, ctx.topo.time_scale):
            ctx.out(line)
        plot = write_link_plot(outcomes, ctx.topo, ctx.out_dir)
        ctx.out(f"wrote {ctx.out_dir}/ (memory.json, {plot.name})")
        from ..metrics.expect import RunFigures
        from ..run.memory import figures

        figs = figures(outcomes)
        failed = judge_expectations(ctx.topo, [(None, RunFigures(
            {"integrity": figs["integrity"]}, memory=figs))], ctx.out_dir, ctx.out)
        bad = [f"{o.run} {o.variant}" for o in outcomes if not o.ok and not o.lost]
        if bad:
            raise FabricError(f"results did not check out: {', '.join(bad)}")
        lost = [f"{o.run} {o.variant} ({o.lost})" for o in outcomes if o.lost]
        if lost and ctx.topo.events is None:
            # no event explains it: a queue overflowed or a node stalled past the timeout
            raise FabricError(f"memory transactions were lost, with no event to explain it: "
                              f"{', '.join(lost)}; give the links larger queues, lower "
                              "memory.credits, or raise memory.timeout")
        if lost:
            ctx.out(f"transactions lost to the events (a memory fabric does not resend them): "
                    f"{', '.join(lost)}")
        if failed is not None:
            raise failed

    def report(self, d: Path, out: Callable[[str], None]) -> None:
        from ..run.memory import read_outcomes, render, render_events, write_link_plot

        outcomes, label, events = read_outcomes(d / self.result_file)
        out(render(outcomes, label))
        for line in render_events(events, label.time_scale):
            out(line)
        out(f"redrew {write_link_plot(outcomes, label, d)}")

    def check_lines(self, topo: Any, plan: Any) -> list[str]:  # noqa: ANN401
        from ..checks import plural

        m = topo.memory
        if m is None:
            return []
        return [f"memory: {plural(len(m.switches), 'memory switch')}, "
                f"{plural(len(m.windows), 'window')} "
                f"({format_size(sum(w.size for w in m.windows))}), "
                f"{plural(len(m.multicast), 'multicast window')}, "
                f"{plural(len(m.reduce), 'reduce group')}, {plural(len(m.runs), 'run')} "
                f"({', '.join(r.kind for r in m.runs)})"]

    def daemons(self, plan: Any) -> list[Any]:  # noqa: ANN401
        if plan.topology.memory is None:
            return []
        from ..memsw.deploy import daemons

        return list(daemons(plan))

    def status_rows(self, state: Any) -> list[list[str]]:  # noqa: ANN401
        """A memory switch's row: transactions in and rejected (it queues no packets)."""
        from ..memsw.deploy import daemon_name
        from ..net.daemon import alive

        rows = []
        for node, pid in state.switch_pids.items():
            if state.switch_roles.get(node) != "memory":
                continue
            path = state.dir / f"{daemon_name(node)}.json"
            try:
                m = json.loads(path.read_text())
            except (OSError, ValueError):
                m = {}
            rows.append([f"  {node} (memory)", "running" if alive(pid) else "DEAD",
                         str(m.get("datagrams_in", 0)), str(m.get("rejected", 0)), "-", "-",
                         "-"])
        return rows
