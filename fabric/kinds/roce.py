"""RoCE: switches with traffic classes, ECN and PFC; one run per --cc policy and --pfc setting."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import FabricError
from ..units import format_size
from .base import Kind, RunContext, RunOption, judge_expectations


def _roce_flows(topo: Any) -> bool:  # noqa: ANN401
    return topo.traffic is not None and any(f.transport == "roce" for f in topo.traffic.flows)


def control_line(c: Any) -> str:  # noqa: ANN401
    """`fabric check`'s line on the RoCE control class (a `TrafficClass`)."""
    queue = "no queue limit" if c.queue_bytes is None else f"queue {format_size(c.queue_bytes)}"
    sched = "strict" if c.strict else f"weight {c.weight}"
    where = "default" if c.line is None else f"line {c.line}"
    return (f"RoCE control class: {c.name} ({where}): DSCP {c.dscp}, priority {c.priority}, "
            f"{sched}, {'lossless' if c.lossless else 'lossy'}, {queue}; carries CNPs, ACKs "
            "and NAKs")


class RoceKind(Kind):
    name = "roce"
    title = "a RoCE comparison"
    result_file = "comparison.json"
    through_agents = True
    runs_events = True
    expects = True
    runs_traffic = True
    describes = ("A file with RoCE switches or RoCE flows runs once per --cc policy and --pfc "
                 "setting and prints one comparison.")
    options = (
        RunOption("--cc", "ccs", "RoCE flows: comma list of congestion controls (none, dcqcn, "
                  "timely, swift, hpcc, dctcp); runs the traffic once per policy and compares."),
        RunOption("--pfc", "pfcs", "RoCE switches: on, off or on,off (one run each); "
                  "default: the file's switches.pfc."),
    )

    def validate(self, topo: Any) -> Any:  # noqa: ANN401
        """Each class's congestion control: a built-in, or a plug-in that loads and implements
        the interface (a file plug-in's path made absolute, relative to the topology file),
        and its `cc_params` accepted by the policy."""
        from dataclasses import replace
        from typing import cast

        from ..cc import (
            CC_NAMES,
            CongestionControlError,
            UnknownCongestionControl,
            canonical_cc,
            make_cc,
        )
        from ..errors import TopologyError

        base = Path(topo.source).parent if topo.source != "<string>" else None
        classes = []
        for i, c in enumerate(topo.classes):
            cc = c.cc
            if cc not in CC_NAMES:
                try:
                    cc = canonical_cc(c.cc, base)
                except UnknownCongestionControl:  # most likely a typo: list the built-ins
                    raise TopologyError(
                        f"unknown congestion control '{c.cc}' (one of: {', '.join(CC_NAMES)})",
                        file=topo.source, line=c.cc_line, key=f"classes[{i}].cc") from None
                except CongestionControlError as e:
                    raise TopologyError(str(e), file=topo.source, line=c.cc_line,
                                        key=f"classes[{i}].cc") from None
            if c.cc_params:
                try:
                    make_cc(cc, line_rate_bps=100_000_000_000, base_rtt_ns=10_000,
                            **cast(dict[str, Any], dict(c.cc_params)))
                except CongestionControlError as e:
                    raise TopologyError(str(e), file=topo.source, line=c.cc_params_line,
                                        key=f"classes[{i}].cc_params") from None
            classes.append(c if cc == c.cc else replace(c, cc=cc))
        return replace(topo, classes=tuple(classes))

    def applies(self, topo: Any, options: Mapping[str, Any]) -> bool:  # noqa: ANN401
        return bool(options.get("ccs") or options.get("pfcs") or topo.switches is not None
                    or _roce_flows(topo))

    def refuse(self, topo: Any, options: Mapping[str, Any]) -> None:  # noqa: ANN401
        # A `switches:` section alone is no reason: a file without traffic is probed (or
        # runs its memory section, its memory switches beside the RoCE switches).
        if (options.get("ccs") or options.get("pfcs")) and topo.traffic is None:
            raise FabricError(f"--cc/--pfc need a traffic section in {topo.source}")

    def prepare(self, topo: Any, options: Mapping[str, Any]) -> Any:  # noqa: ANN401
        from ..run.roce import parse_variants

        return parse_variants(topo, options.get("ccs"), options.get("pfcs"))

    def run(self, ctx: RunContext) -> None:
        from ..run.roce import render, run_variants, write_comparison, write_plots
        from ..run.traffic import progress_printer

        topo, out_dir = ctx.topo, ctx.out_dir
        results = run_variants(ctx.state, topo, ctx.prepared, out_dir, timeout=ctx.timeout,
                               progress=progress_printer(), say=ctx.say, plan=ctx.plan,
                               agents=ctx.fabric.agents)
        ctx.out(render(results, topo))
        if results:
            from .traffic import event_lines, machine_lines

            machine_lines(results[0].summary.get("meta", {}).get("machines", {}), ctx.out)
            for r in results:
                if r.summary.get("meta", {}).get("events"):
                    ctx.out(f"{r.variant.label}:")
                    event_lines(r.summary, ctx.out)
        files = [write_comparison(results, topo, out_dir), *write_plots(results, topo, out_dir)]
        for r in results:
            for err in r.errors:
                ctx.out(f"error: {r.variant.label}: {err}")
        ctx.out(f"wrote {out_dir}/ ({', '.join(p.name for p in files)}, one directory per "
                "variant)")
        for r in results:
            if r.class_plots:
                ctx.out(f"per-class plots, {r.variant.label}: "
                        f"{', '.join(str(p.relative_to(out_dir)) for p in r.class_plots)} "
                        "(goodput from the receivers' chunk records; queues and PFC pauses "
                        "measured in the switches)")
        from ..metrics.expect import RunFigures

        failed = judge_expectations(
            topo, [(r.variant.label if len(results) > 1 else None,
                    RunFigures(r.summary, r.metrics)) for r in results], out_dir, ctx.out)
        if any(r.errors for r in results):
            raise FabricError("the run had errors (see above)")
        if failed is not None:
            raise failed

    def report(self, d: Path, out: Callable[[str], None]) -> None:
        """The comparison table from comparison.json (each variant's own directory holds
        its traffic run, which `fabric report` re-prints and redraws)."""
        from ..run.roce import read_comparison, render

        results, label = read_comparison(d / self.result_file)
        out(render(results, label))
        for r in results:
            for err in r.errors:
                out(f"error: {r.variant.label}: {err}")
        dirs = sorted(p.name for p in d.iterdir() if (p / "summary.json").exists())
        if dirs:
            out(f"per variant (fabric report {d}/VARIANT): {', '.join(dirs)}")
        from ..run.roce import redraw_class_plots

        for made in redraw_class_plots(d):
            out(f"redrew {made}")

    def check_lines(self, topo: Any, plan: Any) -> list[str]:  # noqa: ANN401
        """One line on the RoCE control class (where the file runs RoCE), one on the RoCE
        switches: settings, and the PFC thresholds of the first."""
        from ..topology.document import control_class

        control = control_class(topo)
        lines = [] if control is None else [control_line(control)]
        if not plan.switches:
            return lines
        from ..plan import switch_spec
        from ..switch.core import headroom_bytes

        sw = topo.switches
        first = next(iter(plan.switches.values()))
        spec = switch_spec(first.node, first.ports, topo)
        line = (f"RoCE switches: {len(plan.switches)} (buffer {format_size(sw.buffer_bytes)} "
                f"{sw.buffer_mode.replace('_', '-')}, PFC {'on' if sw.pfc else 'off'}, "
                f"INT {'on' if sw.int_enabled else 'off'})")
        if sw.pfc and spec.lossless_priorities():
            headroom = max(headroom_bytes(p) for p in spec.ports)
            line += (f"; {first.node}: headroom {format_size(headroom)}"
                     f" per port and lossless priority, XOFF {format_size(spec.xoff_for(0))}, "
                     f"XON {format_size(spec.xon_for(0))}")
        return [line, *lines]

    def egress(self, topo: Any, plan: Any) -> dict[tuple[str, str], Any]:  # noqa: ANN401
        """A RoCE switch's ports: out of the switch a queue per class (strict, then weighted
        round robin), RED marking per class, and with PFC lossless classes admitted to the
        whole buffer; into the switch, the PFC pause it sends its upstream (XOFF, XON and
        headroom of that ingress port)."""
        if not plan.switches:
            return {}
        from dataclasses import replace

        from ..explain import Egress, Pfc, fifo_egress
        from ..plan import switch_spec
        from ..switch.core import headroom_bytes

        sw = topo.switches
        out: dict[tuple[str, str], Any] = {}
        specs = {n: switch_spec(n, s.ports, topo) for n, s in plan.switches.items()}
        for name, s in plan.switches.items():
            spec = specs[name]
            pfc = bool(sw.pfc and spec.lossless_priorities())
            for port in s.ports:
                where = f"RoCE switch {name} port {port.dev}"
                out[(name, port.peer)] = Egress(
                    sender=name, receiver=port.peer, rate_bps=port.rate_bps,
                    delay_ns=port.delay_ns, queue=where, mechanism="RoCE switch egress",
                    per_class=True, queue_bytes=spec.pool_bytes(),
                    lossless_bytes=spec.partition_bytes(),
                    lossless=("RoCE switch egress: admitted to the whole buffer, the "
                              "switch's upstream paused at XOFF" if pfc else None),
                    ecn="RoCE switch egress: RED per class")
        for name, s in plan.switches.items():
            spec = specs[name]
            if not (sw.pfc and spec.lossless_priorities()):
                continue
            for i, port in enumerate(s.ports):
                d = (port.peer, name)
                base = out.get(d) or fifo_egress(topo, *d)
                p = Pfc(by=name, xoff_bytes=spec.xoff_for(i), xon_bytes=spec.xon_for(i),
                        headroom_bytes=headroom_bytes(spec.ports[i]))
                if base.lossless:
                    lossless = f"{base.lossless}; paused by the next switch's PFC"
                else:  # a host's NIC: its RoCE queue pairs stop; the userspace backend's
                    # link engine pauses the class queue too (`LinkDirection.pause`)
                    lossless = ("paused by the next switch's PFC (RoCE senders stop, and the "
                                "userspace link's class queue; on netem links kernel TCP "
                                "ignores pauses)")
                out[d] = replace(base, pfc=p, lossless=lossless)
        return out

    def status_rows(self, state: Any) -> list[list[str]]:  # noqa: ANN401
        """One row per RoCE switch process, from the statistics it writes every 2 s."""
        from ..net.daemon import alive
        from ..net.lifecycle import read_switch_stats

        rows = []
        ours = {n: pid for n, pid in state.switch_pids.items()
                if state.switch_roles.get(n, "roce") == "roce"}  # memory switches: their kind's
        for node, data in read_switch_stats(state, ours).items():
            pid = ours[node]
            ports = data.get("ports", [])
            classes = [c for p in ports for c in (p.get("classes") or {}).values()]
            rows.append([f"  {node}", "running" if alive(pid) else "DEAD",
                         str(sum(c.get("tx_packets", 0) for c in classes)),
                         str(sum(int(v) for v in (data.get("drops") or {}).values())),
                         str(sum(c.get("ecn_marks", 0) for c in classes)),
                         str(sum(p.get("pauses_sent", 0) for p in ports)),
                         format_size(max((p.get("max_queue_bytes", 0) for p in ports),
                                         default=0))])
        return rows
