"""Plain traffic: KV chunks and bulk flows over the fabric's links; latency, jitter, goodput."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import FabricError
from .base import Kind, RunContext, judge_expectations


def _transport_lines(per_node: Mapping[str, Mapping[str, int]],
                     out: Callable[[str], None]) -> None:
    """What the transports put on the wire for their payload, summed over the nodes (UDP's
    `sent N for M of payload (xR)`, measured by the senders)."""
    from ..node.udp import sent_line

    total: dict[str, int] = {}
    for counters in per_node.values():
        for key, value in counters.items():
            if isinstance(value, int | float):
                total[key] = total.get(key, 0) + int(value)
    line = sent_line(total)
    if line is not None:
        out(line)


class TrafficKind(Kind):
    name = "traffic"
    title = "a traffic run"
    result_file = "summary.json"
    through_agents = True
    runs_events = True
    expects = True
    runs_traffic = True
    compares = True
    reports_engine_lateness = True

    def applies(self, topo: Any, options: Mapping[str, Any]) -> bool:  # noqa: ANN401
        return topo.traffic is not None

    def run(self, ctx: RunContext) -> None:
        from ..metrics import render_links, render_table, summarise, write_run
        from ..run.traffic import machines, progress_printer, run_traffic

        topo, state = ctx.topo, ctx.state
        result = run_traffic(state, topo, timeout=ctx.timeout, progress=progress_printer(),
                             agents=ctx.fabric.agents, plan=ctx.plan)
        meta = {
            "fabric": topo.name, "run_id": state.run_id, "backend": state.backend,
            "time_scale": topo.time_scale, "topology": topo.source,
            "topology_sha256": topo.sha256, "seed": topo.traffic.seed,
            "transfers_planned": len(result.transfers), "errors": result.errors,
            "timed_out": result.timed_out, "host": os.uname().nodename,
            "wall_seconds": (result.ended_ns - result.started_ns) / 1e9,
            "transport": result.transport,  # node -> its transports' counters
            "machines": machines(result),  # nodes run by agents, flows crossing machines
            "events": result.events,  # the timeline as applied (runner's clock)
            "started_ns": result.started_ns,  # the shared start (runner's clock)
            "classes": [c.name for c in topo.classes],  # as the file declares them
        }
        summary = summarise(result.chunk_records, result.transfer_records,
                            time_scale=topo.time_scale, meta=meta, links=result.links)
        if result.recovery:
            summary["recovery"] = result.recovery
        ctx.out(render_table(summary))
        event_lines(summary, ctx.out)
        _transport_lines(meta["transport"], ctx.out)
        machine_lines(meta["machines"], ctx.out)
        links_text = render_links(summary)
        if links_text:
            ctx.out(links_text)
        for err in result.errors:
            ctx.out(f"error: {err}")
        files = write_run(ctx.out_dir, summary, result.chunk_records, result.transfer_records,
                          result.links)
        ctx.out(f"wrote {ctx.out_dir}/ ({', '.join(sorted(p.name for p in files.values()))})")
        from ..metrics.plots import write_class_plots

        made = write_class_plots(ctx.out_dir, summary, result.chunk_records,
                                 links=result.links)
        queues = any(p.name == "class_queues.png" for p in made)
        if made:
            ctx.out(f"per-class plots: {', '.join(p.name for p in made)} (goodput per class "
                    "from the receivers' chunk records"
                    f"{_class_queue_note(summary, result.links) if queues else ''})")
        from ..explain import explain as explain_topology
        from ..lessons.story import class_line
        from ..metrics.expect import RunFigures

        # what serves each queue on the flows' paths: a traffic run's egresses are its links'
        story = class_line(explain_topology(topo, served=self.egress(topo, ctx.plan)), summary)
        if story:
            ctx.out(story)
        failed = judge_expectations(topo, [(None, RunFigures(summary))], ctx.out_dir, ctx.out)
        if result.errors:
            raise FabricError("the run had errors (see above)")
        if failed is not None:
            raise failed
        if not summary["integrity"]["ok"]:
            raise FabricError("the run had errors (see above)")

    def report(self, d: Path, out: Callable[[str], None]) -> None:
        from ..metrics import load_chunks, load_run, render_links, render_table
        from ..metrics.plots import (
            event_marks,
            goodput_over_time,
            latency_cdf,
            links_over_time,
            write_class_plots,
        )

        summary, _ = load_run(str(d))
        out(render_table(summary))
        _transport_lines(summary.get("meta", {}).get("transport", {}), out)
        machine_lines(summary.get("meta", {}).get("machines", {}), out)
        event_lines(summary, out)
        links_text = render_links(summary)
        if links_text:
            out(links_text)
        for err in summary.get("meta", {}).get("errors", []):
            out(f"error: {err}")
        chunks = load_chunks(str(d))
        ts = summary.get("time_scale", 1.0)
        links_file = d / "links.json"
        links = json.loads(links_file.read_text()) if links_file.exists() else None
        marks = event_marks(summary)
        # a RoCE comparison's variant directory keeps its switches' statistics beside
        switches_file = d / "switches.json"
        switches = json.loads(switches_file.read_text()) if switches_file.exists() else None
        for made in (latency_cdf(d / "latency_cdf.png", chunks, ts),
                     goodput_over_time(d / "goodput.png", chunks, ts, marks=marks),
                     links_over_time(d / "links.png", links, ts, marks=marks) if links
                     else None,
                     *write_class_plots(d, summary, chunks, switches, links)):
            if made is not None:
                out(f"redrew {made}")

    def check_lines(self, topo: Any, plan: Any) -> list[str]:  # noqa: ANN401
        if topo.traffic is None:
            return []
        from ..checks import plural
        from ..traffic import schedule
        from ..units import format_size

        transfers = schedule(topo)
        return [f"traffic: {plural(len(topo.traffic.flows), 'flow')}, "
                f"{plural(len(transfers), 'transfer')}, "
                f"{format_size(sum(t.nbytes for t in transfers))} (seed {topo.traffic.seed})"]

    def compare(self, dirs: list[Path], out: Callable[[str], None]) -> None:
        from ..metrics import compare, load_run

        out(compare([(str(d), load_run(str(d))[0]) for d in dirs]))


def _class_queue_note(summary: Mapping[str, Any], links: Any) -> str:  # noqa: ANN401
    """What the printout says of class_queues.png: where its queues were measured, or why it
    shows none."""
    from ..metrics.classes import link_class_queue_series, no_link_class_queues

    meta = summary.get("meta") or {}
    dirs, _, classed = link_class_queue_series(links, int(meta.get("started_ns") or 0),
                                               float(summary.get("time_scale", 1.0)))
    if dirs:
        return (f"; queue per class at the {len(dirs)} deepest link directions, measured in "
                "the link engine")
    why = no_link_class_queues(str(meta.get("backend") or ""), classed)
    return f"; class_queues.png shows no queue: {why}"


def machine_lines(info: Mapping[str, Any], out: Callable[[str], None]) -> None:
    """What ran through agents, and which latencies cross machines (with their error)."""
    if not info:
        return
    nodes = info.get("nodes", {})
    hosts = sorted({c.get("host") or c.get("agent", "?") for c in nodes.values()})
    worst = max((c.get("error_ns", 0) for c in nodes.values()), default=0)
    out(f"agents: {len(nodes)} node{'s' if len(nodes) != 1 else ''} on "
        f"{len(hosts)} machine{'s' if len(hosts) != 1 else ''} ({', '.join(hosts[:4])}"
        f"{', ...' if len(hosts) > 4 else ''}); clock offsets estimated from control-channel "
        f"round trips, within +-{worst / 1000:.0f} us")
    flows = info.get("flows", {})
    if flows:
        shown = ", ".join(f"{f} (+-{v['error_ns'] / 1000:.0f} us)"
                          for f, v in sorted(flows.items())[:6])
        more = f" and {len(flows) - 6} more" if len(flows) > 6 else ""
        out(f"one-way latencies cross machines for {shown}{more}: the clocks' error is in "
            "them")


def event_lines(summary: Mapping[str, Any], out: Callable[[str], None]) -> None:
    """The event timeline as applied, and what each failure did (from summary.json)."""
    log = summary.get("meta", {}).get("events") or []
    if not log:
        return
    from ..run.events import render_events

    out("events (fabric time from the start; measured on the fabric):")
    for line in render_events(log, summary.get("recovery", {}), summary.get("time_scale", 1.0),
                              summary.get("meta", {}).get("started_ns", 0)):
        out(line)
