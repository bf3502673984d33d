"""The `fabric` command line. Thin: every command calls the library and formats for people.

User errors (`FabricError`) print one line and exit 1; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from importlib import resources
from pathlib import Path

import click

from .errors import FabricError
from .units import format_loss, format_rate, format_size, format_time

LINK_CHOICES = click.Choice(["auto", "netem", "userspace"])


class FabricGroup(click.Group):
    """Catches the project's errors once: one line on stderr, exit status 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FabricError as e:
            if ctx.params.get("debug") or os.environ.get("FABRIC_DEBUG"):
                raise
            click.echo(f"fabric: {e}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("fabric: interrupted", err=True)
            # an event loop pyroute2 was building when the interrupt came is collected at
            # exit and would print a meaningless "Exception ignored" block after this line
            sys.unraisablehook = lambda _unraisable: None
            ctx.exit(130)


@click.group(cls=FabricGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="fabric")
def cli(debug: bool) -> None:
    """Emulate AI inference network fabrics on one Linux host with real sockets."""


def main() -> None:
    cli(prog_name="fabric")


def default_topology_path() -> str:
    return str(resources.files("fabric") / "data" / "default.yaml")


def _load(file: str | None):  # noqa: ANN202
    from .topology import load_topology

    return load_topology(file or default_topology_path())


def _table(rows: list[list[str]], header: list[str]) -> str:
    from .metrics.report import format_table

    return format_table(rows, header, numeric=False)


def _shape_cells(shape, queue_bytes: int | None = None) -> list[str]:  # noqa: ANN001
    from .topology.model import queue_bytes as resolved_queue

    q = resolved_queue(shape) if queue_bytes is None else queue_bytes
    queue = format_size(q) if shape.rate_bps else "-"  # no rate: nothing ever queues
    return [
        format_rate(shape.rate_bps) if shape.rate_bps else "unshaped",
        format_time(shape.delay_ns),
        format_time(shape.jitter_ns) if shape.jitter_ns else "-",
        format_loss(shape.loss_ppm) if shape.loss_ppm else "-",
        queue,
        format_size(shape.ecn_bytes) if shape.ecn_bytes else "-",
        str(shape.mtu),
    ]


# ---- doctor ----------------------------------------------------------------------------


@cli.command()
@click.option("--guest", "probe_guest", is_flag=True,
              help="Boot the netem guest backends now (user-mode Linux, QEMU with KVM, QEMU "
                   "emulated), in order, until one comes up with netem; record the verdict.")
def doctor(probe_guest: bool) -> None:
    """Show what this kernel offers, which link backend `fabric up` will use, and where
    netem tests run (natively, or in which guest kernel)."""
    from .net.doctor import guest_checks, run_checks

    checks, verdict = run_checks()
    guests, guest_verdict = guest_checks(probe=probe_guest,
                                         say=lambda line: click.echo(line, err=True))
    rows = [[c.name, "ok" if c.ok else "NO", c.detail, c.needed_for] for c in checks + guests]
    click.echo(_table(rows, ["check", "", "detail", "needed for"]))
    click.echo(verdict)
    click.echo(guest_verdict)


# ---- check -----------------------------------------------------------------------------


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--links", "links", type=LINK_CHOICES, default="auto", show_default=True,
              help="Backend to check the file's demands against.")
def check(file: str | None, links: str) -> None:
    """Validate a topology file; print nodes, links, paths, oversubscription, warnings."""
    from .checks import backend_warnings, cc_warnings, path_summary, plural

    topo = _load(file)
    hosts = [n for n in topo.nodes.values() if n.kind == "host"]
    switches = [n for n in topo.nodes.values() if n.kind == "switch"]
    click.echo(f"{topo.name}: {plural(len(topo.nodes), 'node')} ({plural(len(hosts), 'host')}, "
               f"{plural(len(switches), 'switch')}), {plural(len(topo.links), 'link')}"
               + (f", time_scale {topo.time_scale:g}" if topo.time_scale != 1 else ""))
    rows = []
    for link in topo.links:
        rows.append([link.name, "->", *_shape_cells(link.forward)])
        if not link.symmetric:
            rows.append(["", "<-", *_shape_cells(link.reverse)])
    click.echo(_table(rows, ["link", "", "rate", "delay", "jitter", "loss", "queue", "ecn",
                             "mtu"]))
    for info in topo.leaf_spines:
        o = info.oversubscription
        click.echo(f"leaf-spine {info.prefix or '(no prefix)'}: {len(info.spines)} spines, "
                   f"{len(info.leaves)} leaves, {len(info.hosts)} hosts; oversubscription "
                   + (f"{o:.2f}:1" if o is not None else "n/a (unshaped)"))
    for line in path_summary(topo):
        click.echo(line)
    if topo.classes:
        click.echo("classes: " + ", ".join(
            f"{c.name} (dscp {c.dscp}, prio {c.priority}{', lossless' if c.lossless else ''})"
            for c in topo.classes))
    if topo.traffic is not None:
        from .traffic import schedule

        transfers = schedule(topo)
        click.echo(f"traffic: {plural(len(topo.traffic.flows), 'flow')}, "
                   f"{plural(len(transfers), 'transfer')}, "
                   f"{format_size(sum(t.nbytes for t in transfers))} (seed {topo.traffic.seed})")
    from .net.doctor import guess_backend
    from .plan import plan_fabric

    backend = guess_backend(links)
    plan = plan_fabric(topo, backend=backend, run_id="check")  # addressing must fit, as `up`
    if plan.switches:
        click.echo(_switches_line(topo, plan))
    if topo.memory is not None:
        m = topo.memory
        click.echo(f"memory: {plural(len(m.switches), 'memory switch')}, "
                   f"{plural(len(m.windows), 'window')} "
                   f"({format_size(sum(w.size for w in m.windows))}), "
                   f"{plural(len(m.multicast), 'multicast window')}, "
                   f"{plural(len(m.reduce), 'reduce group')}, {plural(len(m.runs), 'run')} "
                   f"({', '.join(r.kind for r in m.runs)})")
    warnings = backend_warnings(topo, backend) + cc_warnings(topo)
    for w in warnings:
        click.echo(f"warning: {w}")
    n = len(warnings)
    click.echo(f"ok ({backend} backend" + (f", {n} warning{'s' if n > 1 else ''})" if n else ")"))


def _switches_line(topo, plan) -> str:  # noqa: ANN001
    """One line on the RoCE switches: settings, and the PFC thresholds of the first switch."""
    from .plan import switch_spec
    from .switch.core import headroom_bytes

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
    return line


# ---- up / down / status / exec ------------------------------------------------------------


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--links", "links", type=LINK_CHOICES, default="auto", show_default=True,
              help="Link backend (auto: netem if the kernel has it, else userspace).")
@click.option("--dry-run", is_flag=True, help="Print the plan's steps; create nothing.")
def up(file: str | None, links: str, dry_run: bool) -> None:
    """Build a fabric from FILE (default: the embedded demo) and leave it running."""
    from .plan import plan_fabric

    topo = _load(file)
    if dry_run:
        from .net.doctor import guess_backend

        backend = guess_backend(links)
        plan = plan_fabric(topo, backend=backend, run_id="dryrun")
        for step in plan.steps:
            click.echo(repr(step))
        click.echo(f"{len(plan.steps)} steps ({backend} backend)")
        return
    state = _bring_up(topo, links)
    from .checks import equal_cost_paths
    from .net.lifecycle import list_states

    hosts = [n.name for n in topo.nodes.values() if n.kind == "host"] or list(topo.nodes)
    reach = equal_cost_paths(topo, hosts[0])
    peers = [h for h in hosts[1:] if h in reach] or [n for n in topo.nodes if n in reach]
    which = f" --fabric {state.name}" if len(list_states()) > 1 else ""
    hint = f" Try: fabric exec{which} {hosts[0]} -- ping -c 3 {peers[-1]}" if peers else ""
    click.echo(f"{state.name} is up: {len(state.namespaces)} nodes, run {state.run_id}, "
               f"{state.backend} links.{hint}")


def _bring_up(topo, links: str):  # noqa: ANN001, ANN202
    from .net.doctor import choose_backend
    from .net.lifecycle import bring_up
    from .plan import plan_fabric

    backend, why = choose_backend(links)
    plan = plan_fabric(topo, backend=backend)
    t0 = time.monotonic()
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:
            click.echo(f"\rbuilding {topo.name}: {done}/{total} steps", err=True, nl=False)

    state = bring_up(plan, progress=progress)
    if tty:
        click.echo("\r" + " " * 60 + "\r", err=True, nl=False)
    click.echo(f"built {topo.name} in {time.monotonic() - t0:.2f} s "
               f"({len(plan.steps)} steps; {backend} backend: {why})", err=True)
    return state


@cli.command()
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Remove every fabric and every leftover.")
def down(name: str | None, all_: bool) -> None:
    """Remove a running fabric (the only one, NAME, or --all)."""
    from .net.lifecycle import tear_down, tear_down_all

    t0 = time.monotonic()
    if all_:
        removed = tear_down_all()
        click.echo(f"removed {len(removed)} namespaces in {time.monotonic() - t0:.2f} s")
        return
    st, removed = tear_down(name)
    click.echo(f"{st.name} is down: removed {len(removed)} namespaces "
               f"in {time.monotonic() - t0:.2f} s")


@cli.command()
def status() -> None:
    """List running fabrics and, for userspace links, their counters."""
    from .net.lifecycle import _alive, list_states

    states = list_states()
    if not states:
        click.echo("no fabric is running")
        return
    for st in states:
        alive = st.status == "up" or _alive(st.orchestrator_pid)
        click.echo(f"{st.name}: {st.status if alive else 'leftover'}, run {st.run_id}, "
                   f"{len(st.namespaces)} nodes, {st.backend} links, from {st.source}")
        if alive and st.status == "up":
            from .runner import read_link_stats

            _print_link_stats(read_link_stats(st))
            _print_switch_stats(st)


def _print_switch_stats(st) -> None:  # noqa: ANN001 - a lifecycle.FabricState
    """One row per RoCE switch process, from the statistics it writes every 2 s."""
    from .net.lifecycle import _alive

    rows = []
    for node, pid in st.switch_pids.items():
        mem = st.dir / f"memswitch-{node}.json"
        if mem.exists():  # a memory switch: transactions, not packets it queues
            try:
                m = json.loads(mem.read_text())
            except (OSError, ValueError):
                m = {}
            rows.append([f"  {node} (memory)", "running" if _alive(pid) else "DEAD",
                         str(m.get("datagrams_in", 0)), str(m.get("rejected", 0)), "-", "-",
                         "-"])
            continue
        try:
            data = json.loads((st.dir / f"switch-{node}.json").read_text())
        except (OSError, ValueError):
            data = {}
        ports = data.get("ports", [])
        classes = [c for p in ports for c in (p.get("classes") or {}).values()]
        rows.append([f"  {node}", "running" if _alive(pid) else "DEAD",
                     str(sum(c.get("tx_packets", 0) for c in classes)),
                     str(sum(int(v) for v in (data.get("drops") or {}).values())),
                     str(sum(c.get("ecn_marks", 0) for c in classes)),
                     str(sum(p.get("pauses_sent", 0) for p in ports)),
                     format_size(max((p.get("max_queue_bytes", 0) for p in ports), default=0))])
    if rows:
        click.echo(_table(rows, ["  switch", "process", "packets", "drops", "ecn", "pauses",
                                 "queue max"]))


def _print_link_stats(data: dict) -> None:
    rows = []
    for link_id, dirs in data.get("links", {}).items():
        for direction, arrow in (("forward", "->"), ("reverse", "<-")):
            s = dirs.get(direction)
            if not s:
                continue
            observed = s.get("queue_observed", True)
            rows.append([f"  {link_id}", arrow, str(s.get("packets_out", 0)),
                         format_size(s.get("bytes_out", 0)), str(s.get("drops_loss", 0)),
                         str(s.get("drops_queue", 0)), str(s.get("ecn_marks", 0)),
                         format_size(s.get("queue_bytes_max", 0)) if observed else "-"])
    if rows:
        click.echo(_table(rows, ["  link", "", "packets", "bytes", "lost", "q-drops", "ecn",
                                 "queue max"]))


@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.option("--fabric", "fabric_name", help="Which running fabric (default: the only one).")
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def exec_(fabric_name: str | None, node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside NODE's namespace, where node names resolve (default: a shell)."""
    from .net.lifecycle import resolve

    st = resolve(fabric_name)
    ns = st.netns_of(node)
    ip = shutil.which("ip")
    if ip is None:
        raise FabricError("`ip` (iproute2) not found: apt-get install iproute2")
    argv = list(command) or [os.environ.get("SHELL", "/bin/sh")]
    # `ip netns exec` also bind-mounts /etc/netns/<ns>/hosts over /etc/hosts
    os.execv(ip, [ip, "netns", "exec", ns, *argv])


# ---- run -------------------------------------------------------------------------------


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--links", "links", type=LINK_CHOICES, default="auto", show_default=True,
              help="Link backend when the fabric is not running yet.")
@click.option("--keep", is_flag=True, help="Leave the fabric running afterwards.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Results directory (default results/<name>-<time>/).")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Give up after this many seconds (host time); report what arrived.")
@click.option("--policy", "policies", help="prfaas files: comma list of routing policies "
              "(local, remote-all, threshold, adaptive); default: the file's.")
@click.option("--cc", "ccs", help="RoCE flows: comma list of congestion controls (none, dcqcn, "
              "timely, swift, hpcc, dctcp); runs the traffic once per policy and compares.")
@click.option("--pfc", "pfcs", help="RoCE switches: on, off or on,off (one run each); "
              "default: the file's switches.pfc.")
def run(file: str | None, links: str, keep: bool, out: str | None, timeout: float,
        policies: str | None, ccs: str | None, pfcs: str | None) -> None:
    """Run FILE's traffic (default: the embedded demo) and report latency, jitter, goodput.

    A file with an `lpu:` section compiles its transfer graph into a schedule and runs it,
    scheduled and dynamic, reporting lateness against the plan. A file with RoCE switches
    or RoCE flows runs once per --cc policy and --pfc setting and prints one comparison.
    A file with a `memory:` section runs its memory runs (load/store, Hypercast, in-network
    reduce, KV pull) against message passing on the same links.

    Brings the fabric up (or uses it if it is already running), starts one node process
    per endpoint, moves real KV chunks, writes summary.json, transfers.csv and plots, and
    tears the fabric down unless --keep or it was already running. A file without a
    traffic section gets a ping/iperf3 check of its paths instead.
    """
    from .net.lifecycle import remove_fabric, running

    topo = _load(file)
    if policies:  # before anything is built
        from .topology.prfaas import POLICY_NAMES

        if topo.prfaas is None:
            raise FabricError(f"--policy is for files with a prfaas: section ({topo.source})")
        for p in policies.split(","):
            if p not in POLICY_NAMES:
                raise FabricError(f"--policy: unknown policy '{p}' (one of: "
                                  f"{', '.join(POLICY_NAMES)})")
    variants = None
    if ccs or pfcs or topo.switches is not None or (
            topo.traffic is not None and any(f.transport == "roce" for f in topo.traffic.flows)):
        from .roce.run import parse_variants

        if topo.traffic is None:
            raise FabricError(f"--cc/--pfc need a traffic section in {topo.source}")
        variants = parse_variants(topo, ccs, pfcs)
    state = running(topo.name)
    ours = state is None
    if state is None:
        state = _bring_up(topo, links)
    else:
        if state.topology_sha256 and state.topology_sha256 != topo.sha256:
            raise FabricError(f"fabric {state.name} is running, built from a different version "
                              f"of this topology ({state.source}); `fabric down {state.name}` "
                              "first, so the run measures what the file describes")
        click.echo(f"using running fabric {state.name} (run {state.run_id})", err=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out) if out else Path("results") / f"{topo.name}-{stamp}"
    if any((out_dir / f).exists() for f in ("summary.json", "lpu.json", "comparison.json")):
        raise FabricError(f"{out_dir} already holds a run: choose another --out or remove it")
    try:
        if getattr(topo, "memory", None) is not None:
            _run_memory(state, topo, out_dir, timeout)
        elif topo.prfaas is not None:
            _run_prfaas(state, topo, out_dir, policies)
        elif topo.lpu is not None:
            _run_lpu(state, topo, out_dir)
        elif topo.traffic is None:
            _run_probe(state, topo, out_dir)
        elif variants is not None:
            _run_roce(state, topo, out_dir, timeout, variants)
        else:
            _run_traffic(state, topo, out_dir, timeout)
    finally:
        if ours and not keep:
            remove_fabric(state)
            click.echo(f"{topo.name} is down", err=True)


def _run_probe(state, topo, out_dir: Path) -> None:  # noqa: ANN001
    from .probe import probe_fabric

    click.echo(f"{topo.name} has no traffic section: measuring its paths with ping and iperf3",
               err=True)
    report = probe_fabric(state, topo, progress=lambda msg: click.echo(msg, err=True))
    click.echo(report.table())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(report.to_json(), indent=1))
    click.echo(f"wrote {out_dir / 'summary.json'}")


def _run_prfaas(state, topo, out_dir: Path, policies: str | None) -> None:  # noqa: ANN001
    from .prfaas.run import render, run_prfaas

    chosen = policies.split(",") if policies else list(topo.prfaas.policies)
    runs = run_prfaas(state, topo, chosen, out_dir,
                      progress=lambda msg: click.echo(msg, err=True))
    click.echo(render(runs, topo))
    click.echo(f"wrote {out_dir}/ (prfaas.json, prfaas.png)")
    errors = [e for r in runs for e in r.errors]
    if any(r.chunks_bad for r in runs):
        errors.append("corrupt KV chunks (see the integrity line)")
    if errors:
        raise FabricError("; ".join(errors))


def _run_memory(state, topo, out_dir: Path, timeout: float) -> None:  # noqa: ANN001
    from .memsw.run import render, run_memory, write_link_plot

    outcomes = run_memory(state, topo, out_dir, say=lambda m: click.echo(m, err=True),
                          timeout=timeout)
    click.echo(render(outcomes, topo))
    plot = write_link_plot(outcomes, topo, out_dir)
    click.echo(f"wrote {out_dir}/ (memory.json, {plot.name})")
    bad = [f"{o.run} {o.variant}" for o in outcomes if not o.ok]
    if bad:
        raise FabricError(f"results did not check out: {', '.join(bad)}")


def _run_lpu(state, topo, out_dir: Path) -> None:  # noqa: ANN001
    from .lpu.run import render_runs, run_lpu

    runs = run_lpu(state, topo, out_dir, progress=lambda msg: click.echo(msg, err=True))
    click.echo(render_runs(runs, topo.time_scale))
    click.echo(f"wrote {out_dir}/ (gantt.png, lateness.png, lpu.json, plan.txt)")
    if any(r.missing for r in runs):
        raise FabricError("some batches never arrived (see 'missing' above)")


def _run_roce(state, topo, out_dir: Path, timeout: float, variants) -> None:  # noqa: ANN001
    from .roce.run import render, run_variants, write_comparison, write_plots
    from .runner import progress_printer

    results = run_variants(state, topo, variants, out_dir, timeout=timeout,
                           progress=progress_printer(), say=lambda m: click.echo(m, err=True))
    click.echo(render(results, topo))
    files = [write_comparison(results, topo, out_dir), *write_plots(results, topo, out_dir)]
    for r in results:
        for err in r.errors:
            click.echo(f"error: {r.variant.label}: {err}")
    click.echo(f"wrote {out_dir}/ ({', '.join(p.name for p in files)}, one directory per "
               "variant)")
    if any(r.errors for r in results):
        raise FabricError("the run had errors (see above)")


def _run_traffic(state, topo, out_dir: Path, timeout: float) -> None:  # noqa: ANN001
    from .metrics import render_links, render_table, summarise, write_run
    from .runner import progress_printer, run_traffic

    result = run_traffic(state, topo, timeout=timeout, progress=progress_printer())
    meta = {
        "fabric": topo.name, "run_id": state.run_id, "backend": state.backend,
        "time_scale": topo.time_scale, "topology": topo.source,
        "topology_sha256": topo.sha256, "seed": topo.traffic.seed,
        "transfers_planned": len(result.transfers), "errors": result.errors,
        "timed_out": result.timed_out, "host": os.uname().nodename,
        "wall_seconds": (result.ended_ns - result.started_ns) / 1e9,
    }
    summary = summarise(result.chunk_records, result.transfer_records,
                        time_scale=topo.time_scale, meta=meta, links=result.links)
    click.echo(render_table(summary))
    links_text = render_links(summary)
    if links_text:
        click.echo(links_text)
    for err in result.errors:
        click.echo(f"error: {err}")
    files = write_run(out_dir, summary, result.chunk_records, result.transfer_records,
                      result.links)
    click.echo(f"wrote {out_dir}/ ({', '.join(sorted(p.name for p in files.values()))})")
    if result.errors or not summary["integrity"]["ok"]:
        raise FabricError("the run had errors (see above)")


@cli.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
def report(dirs: tuple[str, ...]) -> None:
    """Re-print a run's table and redraw its plots; with several runs, compare them."""
    from .metrics import compare, load_chunks, load_run, render_links, render_table
    from .metrics.plots import goodput_over_time, latency_cdf, links_over_time

    runs = []
    for d in dirs:
        other = _other_run(Path(d))
        if other is not None:
            if len(dirs) > 1:
                raise FabricError(f"{d}: fabric report compares traffic runs; this is "
                                  "an LPU or PrfaaS run")
            click.echo(other)
            return
        probe = _probe_summary(Path(d))
        if probe is not None:
            if len(dirs) > 1:
                raise FabricError(f"{d}: a path check (no traffic), not a traffic run: "
                                  "fabric report compares traffic runs")
            from .probe import ProbeReport

            click.echo(ProbeReport.from_json(probe).table())
            return
        summary, _ = load_run(d)
        runs.append((d, summary))
    if len(runs) == 1:
        d, summary = runs[0]
        click.echo(render_table(summary))
        links_text = render_links(summary)
        if links_text:
            click.echo(links_text)
        for err in summary.get("meta", {}).get("errors", []):
            click.echo(f"error: {err}")
        chunks = load_chunks(d)
        ts = summary.get("time_scale", 1.0)
        links_file = Path(d) / "links.json"
        links = json.loads(links_file.read_text()) if links_file.exists() else None
        for made in (latency_cdf(Path(d) / "latency_cdf.png", chunks, ts),
                     goodput_over_time(Path(d) / "goodput.png", chunks, ts),
                     links_over_time(Path(d) / "links.png", links, ts) if links else None):
            if made is not None:
                click.echo(f"redrew {made}")
        return
    click.echo(compare(runs))


def _other_run(d: Path) -> str | None:
    """The table of an LPU or PrfaaS run directory, or None for other directories."""
    if (d / "lpu.json").exists():
        from .lpu.run import LpuRun, render_runs

        data = json.loads((d / "lpu.json").read_text())
        return render_runs([LpuRun(**r) for r in data["runs"]], data["time_scale"])
    if (d / "prfaas.json").exists():
        data = json.loads((d / "prfaas.json").read_text())
        header = ["policy", "offered/s", "req/s", "TTFT mean s", "TTFT P90 s", "offload %",
                  "egress Gb/s", "peak Gb/s"]
        rows = [[r["policy"], f"{r['offered_rps']:g}", f"{r['throughput_rps']:.3f}",
                 f"{r['mean_ttft_s']:.2f}", f"{r['p90_ttft_s']:.2f}",
                 f"{100 * r['offloaded_fraction']:.1f}", f"{r['egress_mean_gbps']:.2f}",
                 f"{r['egress_peak_gbps']:.2f}"] for r in data["runs"]]
        from .metrics.report import format_table

        return (f"{data['model']}: kv_scale {data['kv_scale']}, time_scale "
                f"{data['time_scale']:g}; fabric time and bytes\n" + format_table(rows, header))
    return None


def _probe_summary(d: Path) -> dict | None:
    try:
        data = json.loads((d / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "pairs" in data else None


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--drift", "drift_ppm", type=float, default=None,
              help="Size the guard band for this clock drift (ppm; default: the file's).")
@click.option("--out", type=click.Path(file_okay=False), help="Write plan.txt and gantt.png.")
@click.option("--rows", type=int, default=40, show_default=True, help="Plan rows to print.")
def schedule(file: str, drift_ppm: float | None, out: str | None, rows: int) -> None:
    """Compile FILE's LPU transfer graph into a plan, verify it, print it (no fabric needed)."""
    from .lpu.run import build_graph, lpu_topology
    from .schedule import compile_plan, gantt_png, plan_table, verify

    topo = _load(file)
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
        click.echo(f"wrote {gantt_png(plan, out_dir / 'gantt.png')} and {out_dir / 'plan.txt'}")


@cli.command()
@click.argument("model", required=False)
@click.option("--tokens", type=click.IntRange(min=1), default=4096, show_default=True)
def kv(model: str | None, tokens: int) -> None:
    """KV-cache size of MODEL for a prompt of --tokens (no MODEL: list the models)."""
    from .kv import MODELS, describe, get_model

    if model is None:
        rows = [[name, m.attention, format_size(m.bytes_per_token()),
                 format_size(m.kv_bytes(tokens))] for name, m in MODELS.items()]
        click.echo(_table(rows, ["model", "attention", "KV per token", f"KV @{tokens} tokens"]))
        return
    click.echo(describe(get_model(model), tokens))


if __name__ == "__main__":
    main()
