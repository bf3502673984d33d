"""The `fabric` command line. Thin: every command calls the library and formats for people.

Exit statuses: 0 success; 1 a user error (`FabricError`: one line; `--debug` shows the
traceback instead) or a failed run; 2 bad command-line usage (click); 3 a run whose figures
broke an expectation of the file (`ExpectationFailed`, docs/expect.md); 70 an internal error (a
bug: the traceback, then one line saying how to report it); 130, 143, 129 interrupted by
SIGINT (Ctrl-C), SIGTERM or SIGHUP, after undoing what the command had built.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import FrameType

import click

from .errors import FabricError, one_line
from .units import format_size

LINK_CHOICES = click.Choice(["auto", "netem", "userspace"])


def _spin_ns(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """`--engine-spin`: a duration of at most 1 ms, in nanoseconds (None when not given: the
    engine's default, `fabric.net.engine.DEFAULT_SPIN_NS` within its CPU budget)."""
    from .net.engine import MAX_SPIN_NS
    from .units import parse_time

    if value is None:
        return None
    with contextlib.suppress(ValueError):
        if float(value) != 0:  # a bare number: parse_time's hint (ms) would be too long here
            raise click.BadParameter(f"{value} needs a unit, such as {value.strip()}us")
    try:
        ns = parse_time(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if ns > MAX_SPIN_NS:
        raise click.BadParameter(f"{value} is more than 1ms: a timer wake-up is closer than "
                                 f"that, so spinning longer only burns CPU")
    return ns


ENGINE_SPIN = click.option(
    "--engine-spin", "engine_spin_ns", metavar="DURATION", callback=_spin_ns,
    help="Userspace links: the link engine busy-waits up to this long (e.g. 150us, at most "
         "1ms) before each release instead of sleeping through it, so held packets leave "
         "closer to their time; given, without a CPU budget (up to that much CPU per "
         "release); 0: never. Default: 150us within a tenth of one CPU, then it sleeps.")


class FabricGroup(click.Group):
    """Catches the project's errors once: one line on stderr, exit status 1 (or the error's
    own `exit_code`)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            done = super().invoke(ctx)
            if _TERMINATED:
                # SIGTERM/SIGHUP came, but its KeyboardInterrupt was raised inside a callback
                # Python swallows ("Exception ignored in ..."): the command went on to its
                # end; it still exits as terminated
                ctx.exit(_say_interrupted())
            return done
        except FabricError as e:
            if ctx.params.get("debug") or os.environ.get("FABRIC_DEBUG"):
                raise
            click.echo(f"fabric: {one_line(str(e))}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            status = _say_interrupted()
            # an event loop pyroute2 was building when the interrupt came is collected at
            # exit and would print a meaningless "Exception ignored" block after this line
            sys.unraisablehook = lambda _unraisable: None
            ctx.exit(status)
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort):
            raise
        except Exception as e:
            if ctx.params.get("debug") or os.environ.get("FABRIC_DEBUG"):
                raise
            traceback.print_exc()
            click.echo(f"fabric: internal error: {one_line(f'{type(e).__name__}: {e}', 160)}. "
                       "This is a bug in fabric, not in your input: please report it with the "
                       "traceback above, the command and `fabric --version`.", err=True)
            ctx.exit(EXIT_INTERNAL)


def _say_interrupted() -> int:
    """One line for the interrupt that ended the command; its exit status (128 + signal)."""
    signum = _TERMINATED[0] if _TERMINATED else int(signal.SIGINT)
    click.echo("fabric: interrupted" if signum == signal.SIGINT else
               f"fabric: terminated ({signal.Signals(signum).name})", err=True)
    return 128 + signum


EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): distinct from a user error's 1
_TERMINATED: list[int] = []  # the terminating signal received, if any


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and SIGHUP do what Ctrl-C does: they are handed to whatever handles SIGINT now
    (Python's, which raises KeyboardInterrupt, or trio's inside a run, which delivers it where
    it is safe), so the interrupt unwinds through every undo path. Called directly, not by
    raising SIGINT, which a shell ignores in its background jobs. A second terminating signal
    while undoing is ignored, so cleanup is not itself cut short."""
    if _TERMINATED:
        return
    _TERMINATED.append(signum)
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):  # main() made sure it is; something set it since
        raise KeyboardInterrupt
    handler(signal.SIGINT, frame)


@click.group(cls=FabricGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="fabric")
def cli(debug: bool) -> None:
    """Emulate AI inference network fabrics on one Linux host with real sockets."""


def main() -> None:
    # Python's own SIGINT handler, also where a shell started us with SIGINT ignored (its
    # background jobs) or `fabric.entry` with its early one: trio installs its handler only
    # over Python's, and a terminating signal is delivered through it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # `nohup fabric run` keeps its word
            signal.signal(sig, _terminate)
    # not click's standalone mode: an interrupt while click parses the command line (before
    # FabricGroup.invoke) would be its "Aborted!" and exit 1
    try:
        status = cli.main(prog_name="fabric", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(_say_interrupted())
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    sys.exit(status if isinstance(status, int) else 0)


def default_topology_path() -> str:
    return str(resources.files("fabric") / "data" / "default.yaml")


def _load(file: str | None):  # noqa: ANN202
    from .kinds import load

    return load(file or default_topology_path())


def _table(rows: list[list[str]], header: list[str]) -> str:
    from .metrics.report import format_table

    return format_table(rows, header, numeric=False)


def _shape_cells(shape) -> list[str]:  # noqa: ANN001
    """One `fabric check` cell per link property (`topology.linkprops`)."""
    from .topology.linkprops import LINK_PROPERTIES
    from .topology.model import queue_bytes

    q = queue_bytes(shape)
    return [p.cell(shape, q) for p in LINK_PROPERTIES]


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
    from .topology.linkprops import property_keys

    click.echo(_table(rows, ["link", "", *property_keys()]))
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
    from .net.doctor import guess_backend
    from .plan import plan_fabric

    backend = guess_backend(links)
    plan = plan_fabric(topo, backend=backend, run_id="check")  # addressing must fit, as `up`
    from .kinds import check_lines, daemons, select

    select(topo, {})  # what `run` would refuse, `check` refuses
    daemons(plan)  # and what bring-up would refuse (a reduce group spread over switches)
    for line in check_lines(topo, plan):
        click.echo(line)
    from .explain import check_warnings, where_classes_act
    from .kinds import explain as explain_topology

    explained = explain_topology(topo)  # where class properties hold, and where they do not
    acts = where_classes_act(explained)
    if acts:
        click.echo(acts)
    warnings = backend_warnings(topo, backend) + cc_warnings(topo) + check_warnings(explained)
    for w in warnings:
        click.echo(f"warning: {w}")
    n = len(warnings)
    click.echo(f"ok ({backend} backend" + (f", {n} warning{'s' if n > 1 else ''})" if n else ")"))


# ---- explain / graph: what the classes and flows do, drawn --------------------------------


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--class", "cls", metavar="CLASS", help="Only this class and its flows.")
@click.option("--flow", metavar="FLOW", help="Only this flow (every stream of it) and its class.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def explain(file: str | None, cls: str | None, flow: str | None, fmt: str) -> None:
    """Explain FILE's traffic classes and flows (default: the embedded demo); builds nothing.

    Per class: DSCP and priority, its queue (strict, or weighted and the weight), lossless
    with the PFC XOFF/XON and headroom where switches enforce it, ECN kmin/kmax/pmax, its
    congestion control and TCP congestion control, and which mechanism enforces each
    property on which links (RoCE switch ports; shaped plain links queue by class in a file
    with classes; unshaped links are one FIFO: "not enforced: FIFO link").
    Per flow: its class, each stream's path hop by hop with the ECMP alternatives, which
    other classes share each queue, and the bottleneck with its bandwidth-delay product and
    queue. Then warnings: a lossless class nothing enforces, ECN thresholds above the queue,
    a strict class that can starve the others at its offered load, few streams over many
    equal-cost paths.
    """
    import json as _json

    from .explain.render import render_json, render_text
    from .kinds import explain as explain_topology

    topo = _load(file)
    ex = explain_topology(topo, cls=cls, flow=flow)
    if fmt == "json":
        click.echo(_json.dumps(render_json(ex), indent=1))
    else:
        click.echo(render_text(ex, all_pairs=flow is not None))


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "png"]),
              default="mermaid", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write here (png: default NAME.png in this directory; text: stdout).")
def graph(file: str | None, fmt: str, out: str | None) -> None:
    """Draw FILE's fabric (default: the embedded demo): nodes, links labelled with rate and
    delay, and the links each class's flows may take in the class's colour. mermaid and dot
    print text (render dot with Graphviz: `dot -Tsvg`); png is drawn with matplotlib, no
    Graphviz needed. Builds nothing."""
    from .explain.draw import draw_png, render
    from .kinds import explain as explain_topology

    topo = _load(file)
    ex = explain_topology(topo)
    if fmt == "png":
        path = draw_png(topo, ex, out or f"{topo.name}.png")
        click.echo(f"wrote {path}")
        return
    text = render(topo, ex, fmt)
    if out is None:
        click.echo(text, nl=False)
        return
    Path(out).write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}")


# ---- up / down / status / exec ------------------------------------------------------------


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--links", "links", type=LINK_CHOICES, default="auto", show_default=True,
              help="Link backend (auto: netem if the kernel has it, else userspace).")
@click.option("--dry-run", is_flag=True, help="Print the plan's steps; create nothing.")
@ENGINE_SPIN
def up(file: str | None, links: str, dry_run: bool, engine_spin_ns: int | None) -> None:
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
    state = _bring_up(topo, links, kept=True, engine_spin_ns=engine_spin_ns).state
    from .checks import equal_cost_paths
    from .net.lifecycle import list_states

    hosts = [n.name for n in topo.nodes.values() if n.kind == "host"] or list(topo.nodes)
    reach = equal_cost_paths(topo, hosts[0])
    peers = [h for h in hosts[1:] if h in reach] or [n for n in topo.nodes if n in reach]
    which = f" --fabric {state.name}" if len(list_states()) > 1 else ""
    hint = f" Try: fabric exec{which} {hosts[0]} -- ping -c 3 {peers[-1]}" if peers else ""
    click.echo(f"{state.name} is up: {len(state.namespaces)} nodes, run {state.run_id}, "
               f"{state.backend} links.{hint}")


def _bring_up(topo, links: str, *, kept: bool = False,  # noqa: ANN001, ANN202
              engine_spin_ns: int | None = None):
    """Build `topo` (a `kinds.handle.Fabric`), saying how long it took and on which links
    (and what stale fabric of the name it removed first)."""
    from .kinds.handle import build_fabric

    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:
            click.echo(f"\rbuilding {topo.name}: {done}/{total} steps", err=True, nl=False)

    fabric = build_fabric(topo, links, progress=progress, kept=kept,
                          say=lambda line: click.echo(line, err=True),
                          engine_spin_ns=engine_spin_ns)
    if tty:
        click.echo("\r" + " " * 60 + "\r", err=True, nl=False)
    click.echo(f"built {topo.name} in {fabric.build_seconds:.2f} s ({len(fabric.plan.steps)} "
               f"steps; {fabric.plan.backend} backend: {fabric.why})", err=True)
    return fabric


@cli.command()
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Remove every fabric and every leftover.")
@click.option("--force", is_flag=True,
              help="Also a fabric another live fabric command is running on (ends its run).")
def down(name: str | None, all_: bool, force: bool) -> None:
    """Remove a running fabric (the only one, NAME, or --all)."""
    from .net.lifecycle import tear_down, tear_down_all

    t0 = time.monotonic()
    if all_:
        removed = tear_down_all(force=force)
        click.echo(f"removed {len(removed)} namespaces in {time.monotonic() - t0:.2f} s")
        return
    st, removed = tear_down(name, force=force)
    click.echo(f"{st.name} is down: removed {len(removed)} namespaces "
               f"in {time.monotonic() - t0:.2f} s")


@cli.command()
def status() -> None:
    """List running fabrics and, for userspace links, their counters."""
    from .net.lifecycle import list_states

    states = list_states()
    if not states:
        click.echo("no fabric is running")
        return
    for st in states:
        if st.stale:
            what = (f"stale (its run, pid {st.orchestrator_pid}, is gone; `fabric up` or "
                    f"`fabric run` of its file rebuilds it, `fabric down {st.name}` removes it)")
        else:
            pid = st.in_use_by()
            what = st.status + (f", in use by pid {pid}" if pid is not None else
                                ", kept" if st.kept else "")
        click.echo(f"{st.name}: {what}, run {st.run_id}, "
                   f"{len(st.namespaces)} nodes, {st.backend} links, from {st.source}")
        if not st.stale and st.status == "up":
            from .run.traffic import read_link_stats

            stats = read_link_stats(st)
            _print_link_stats(stats)
            _print_engine_lateness(stats)
            _print_switch_stats(st)


def _print_switch_stats(st) -> None:  # noqa: ANN001 - a lifecycle.FabricState
    """One row per switch process (each fabric kind with switches supplies its rows)."""
    from .kinds import status_rows

    rows = status_rows(st)
    if rows:
        click.echo(_table(rows, ["  switch", "process", "packets", "drops", "ecn", "pauses",
                                 "queue max"]))


def _print_engine_lateness(data: dict) -> None:
    """How late the userspace link engine wrote what it held (`Engine.release_lateness`): a
    p99 far above the links' jitter says the host is not keeping up with the delays."""
    late = data.get("release_lateness") or {}
    if late.get("window"):
        click.echo(f"  link engine: {late['releases']} releases, written late by p50 "
                   f"{late['window_p50_us']:.0f} / p99 {late['window_p99_us']:.0f} / max "
                   f"{late['window_max_us']:.0f} us over the last {late['window']}"
                   f" (max {late['max_us']:.0f} us since it started)")
    spin = data.get("spin_ns")
    if spin == 0:
        click.echo("  link engine spin: off (--engine-spin 0), it sleeps to every release")
    elif spin is not None and "spins" in data:
        share = float(data.get("spin_share", 1.0))
        budget = "without a budget" if share >= 1 else f"within {share:.0%} of one CPU"
        click.echo(f"  link engine spin: {spin / 1000:.0f} us before each release {budget}; "
                   f"{data['spins']} releases spun to, {data['spin_denied']} timers slept "
                   f"(budget spent), {data.get('spin_s', 0):.2f} s spinning")


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


def _kind_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add every fabric kind's own `run` options (fabric.kinds declares them)."""
    from .kinds import run_options

    for opt in reversed(run_options()):
        command = click.option(opt.flag, opt.dest, help=opt.help)(command)
    return command


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--links", "links", type=LINK_CHOICES, default="auto", show_default=True,
              help="Link backend when the fabric is not running yet.")
@click.option("--keep", is_flag=True, help="Leave the fabric running afterwards.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Results directory (default results/<name>-<time>/).")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Give up after this many seconds (host time); report what arrived.")
@click.option("--agents", "agents_file", type=click.Path(dir_okay=False),
              help="agents.json: run the nodes it lists through their node agents (`fabric "
                   "agent`), e.g. in containers from `fabric export`.")
@ENGINE_SPIN
@_kind_options
def run(file: str | None, links: str, keep: bool, out: str | None, timeout: float,
        agents_file: str | None, engine_spin_ns: int | None, **options: str | None) -> None:
    """Run FILE's traffic (default: the embedded demo) and report latency, jitter, goodput.

    Brings the fabric up (or uses it if it is already running), starts one node process
    per endpoint, moves real KV chunks, writes summary.json, transfers.csv and plots, and
    tears the fabric down unless --keep or it was already running.
    """
    from .kinds import RunContext, holds_run, lateness, select
    from .kinds.handle import attach_fabric

    topo = _load(file)
    kind, prepared = select(topo, options)  # before anything is built
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out) if out else Path("results") / f"{topo.name}-{stamp}"
    held = holds_run(out_dir)
    if held is not None:
        raise FabricError(f"{out_dir} already holds {held.title}: choose another --out or "
                          "remove it")
    agents = None
    if agents_file is not None:
        from .kinds import check_agents
        from .node.agent import load_agents

        agents = load_agents(agents_file, topo.name, topo.nodes)
        check_agents(kind, topo, remote=False)
    fabric = attach_fabric(topo)
    if fabric is None and agents is not None:
        from .kinds import check_agents
        from .kinds.handle import remote_fabric

        check_agents(kind, topo, remote=True)  # what only a fabric built here can run
        fabric = remote_fabric(topo, agents)
        click.echo(f"{topo.name} is not running here: its nodes run through the agents in "
                   f"{agents_file} ({fabric.why})", err=True)
    elif fabric is None:
        fabric = _bring_up(topo, links, engine_spin_ns=engine_spin_ns)
    else:
        click.echo(f"using running fabric {fabric.state.name} (run {fabric.state.run_id})",
                   err=True)
    fabric.agents = agents
    background = None
    try:
        if topo.traffic is not None and kind.background_traffic:
            from .kinds import background as bg

            click.echo(f"starting the traffic section as background load "
                       f"({out_dir / 'traffic'})", err=True)
            background = bg.start(fabric, topo.source, out_dir / "traffic", timeout)
        engine = lateness.watch(fabric, kind)
        kind.run(RunContext(fabric, out_dir, timeout, options, prepared, out=click.echo,
                            say=lambda msg: click.echo(msg, err=True)))
        if engine is not None:
            engine.finish(out_dir, click.echo)
        if background is not None:
            background.finish(click.echo, lambda msg: click.echo(msg, err=True))
    finally:
        if background is not None:
            background.stop()
        if fabric.owned and not keep:
            fabric.close()
            click.echo(f"{topo.name} is down", err=True)
        elif fabric.owned:
            from .net.lifecycle import keep as keep_fabric

            keep_fabric(fabric.state)
        else:
            fabric.close()  # ends this run's lease of the kept fabric


def _add_kinds() -> None:
    """What the fabric kinds add to the CLI: their part of `run --help`, their commands."""
    from .kinds import commands, run_help

    assert run.help is not None
    run.help = inspect.cleandoc(run.help) + "\n\n" + run_help()
    for command in commands():
        cli.add_command(command)


_add_kinds()


@cli.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
def report(dirs: tuple[str, ...]) -> None:
    """Re-print a run's table and redraw its plots; with several runs, compare them."""
    from .kinds import for_dir

    found = [(Path(d), for_dir(Path(d))) for d in dirs]
    if len(found) == 1:
        d, kind = found[0]
        kind.report(d, click.echo)
        from .kinds import lateness

        lateness.reprint(d, click.echo)  # what a kind that does not report it kept
        return
    for d, kind in found:
        if not kind.compares:
            raise FabricError(f"{d}: {kind.title}: fabric report compares traffic runs")
    found[0][1].compare([d for d, _ in found], click.echo)


@cli.command()
@click.argument("model", required=False)
@click.option("--tokens", type=click.IntRange(min=1), default=4096, show_default=True)
@click.option("--file", "topology", type=click.Path(exists=True, dir_okay=False),
              help="A topology file whose `models:` are listed beside the built-in ones.")
def kv(model: str | None, tokens: int, topology: str | None) -> None:
    """KV-cache size of MODEL for a prompt of --tokens (no MODEL: list the models).

    With --file, the file's own models (its `models:` section) are known too and marked
    `file` in the list.
    """
    from .kv import BUILTIN_MODELS, MODELS, describe, get_model, use_file_models

    mine: dict = {}
    if topology is not None:
        from .topology.loader import load_topology

        mine = load_topology(topology).models  # also registers them (use_file_models)
    else:
        use_file_models({})
    if model is None:
        rows = []
        for name, m in MODELS.items():
            row = [name, m.attention, format_size(m.bytes_per_token()),
                   format_size(m.kv_bytes(tokens))]
            if topology is not None:  # say where each model comes from
                row.insert(1, ("file (restates the built-in)" if name in BUILTIN_MODELS
                               else "file") if name in mine else "built-in")
            rows.append(row)
        header = ["model", "attention", "KV per token", f"KV @{tokens} tokens"]
        if topology is not None:
            header.insert(1, "from")
        click.echo(_table(rows, header))
        return
    spec = get_model(model)
    text = describe(spec, tokens)
    if spec.name in mine:
        text += f"\ndefined in   {topology} (models: {spec.name})"
    click.echo(text)


@cli.group()
def lesson() -> None:
    """Lessons for network engineers: the same traffic, two or more fabrics, one table.

    `fabric lesson list` names them; `fabric lesson run N` runs lesson N (as root) and
    prints its side-by-side table; docs/lessons/ explains each.
    """


@lesson.command(name="list")
def lesson_list() -> None:
    """The lessons, what each teaches, its variants and its page."""
    from .lessons import list_lines

    for line in list_lines():
        click.echo(line)


@lesson.command(name="run")
@click.argument("number")
@click.option("--out", type=click.Path(file_okay=False),
              help="Results directory (default results/lesson-N-<time>/).")
@click.option("--small", is_flag=True, help="Fewer, smaller transfers (under a minute).")
@click.option("--links", "links", type=LINK_CHOICES, default="auto", show_default=True,
              help="Link backend.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Give up on a variant after this many seconds (host time).")
def lesson_run(number: str, out: str | None, small: bool, links: str, timeout: float) -> None:
    """Run lesson NUMBER: every variant on the same traffic, then one table and plots."""
    from .kinds import holds_run
    from .lessons import find

    chosen = find(number)
    out_dir = Path(out) if out else Path("results") / (
        f"lesson-{chosen.number}-{time.strftime('%Y%m%d-%H%M%S')}")
    held = holds_run(out_dir)
    if held is not None:
        raise FabricError(f"{out_dir} already holds {held.title}: choose another --out or "
                          "remove it")
    from .lessons.run import render, run_lesson
    from .run.traffic import progress_printer

    done = run_lesson(chosen, out_dir, small=small, links=links, timeout=timeout,
                      say=lambda msg: click.echo(msg, err=True), progress=progress_printer())
    click.echo(render(done))
    click.echo(f"wrote {out_dir}/ (lesson.txt, comparison.json, fct_slowdown.png, queues.png, "
               "one directory per variant)")
    if any(r.errors for r in done.results):
        raise FabricError("the lesson's runs had errors (see above)")




@cli.command()
@click.option("--listen", default="0.0.0.0:7400", show_default=True, metavar="ADDR:PORT",
              help="Where runners connect (the management network).")
@click.option("--secret-file", required=True, type=click.Path(dir_okay=False),
              help="The shared key (agents.json's secret_file); never sent on the wire.")
@click.option("--node", default="", help="The node this agent serves (refuse others).")
@click.option("--host", default="", help="This machine's name in reports (default: hostname).")
def agent(listen: str, secret_file: str, node: str, host: str) -> None:
    """Serve the node side of `fabric run` over TCP: in a container or on another machine.

    Runs where the node's network is (inside its container or namespace). Each runner that
    proves it holds the secret gets a node process, the same program `fabric run` forks
    locally; the agent measures nothing itself. Ends on SIGTERM or Ctrl-C.
    """
    from .node.agent import main_agent

    main_agent(listen, secret_file, node, host)

def _export_help() -> str:
    from .export import TARGETS

    return "\n\n".join(f"{name}: {what}." for name, (_, what) in TARGETS.items())


@cli.command(name="export")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--to", "target", required=True, metavar="TARGET",
              help="containerlab or hpcc-ns3 (listed below).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory to write (made if missing; must be empty).")
@click.option("--hosts", type=click.IntRange(min=1), default=1, show_default=True,
              help="containerlab: spread the nodes over this many hosts (VXLAN between).")
@click.option("--placement", type=click.Path(dir_okay=False),
              help="containerlab: a YAML file naming each node's host (instead of --hosts).")
def export_(file: str, target: str, out: str, hosts: int, placement: str | None) -> None:
    """Write FILE's fabric and traffic for another engine; name what it cannot express.

    Nothing is built and no root is needed. Every setting the target has no knob for is
    printed as a warning (and kept in the exported README), never dropped silently.
    """
    from .export import ExportOptions, export_topology, write_export

    if placement is not None and hosts != 1:
        raise click.UsageError("give --hosts or --placement, not both")
    topo = _load(file)
    result = export_topology(topo, target, ExportOptions(
        hosts=hosts, placement=Path(placement) if placement else None, command_file=file))
    for path in write_export(result, Path(out)):
        click.echo(f"wrote {path}")
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)


export_.help = inspect.cleandoc(export_.help or "") + "\n\n" + _export_help()


# ---- link and node: change a running fabric (fabric.net.live) ----------------------------


@cli.group()
def link() -> None:
    """Change, take down and bring back a running fabric's links."""


@link.command(name="set")
@click.argument("a")
@click.argument("b")
@click.option("--rate", help="Link rate, such as 20Mbps.")
@click.option("--delay", help="One-way delay, such as 20ms.")
@click.option("--jitter", help="Delay spread, such as 1ms.")
@click.option("--loss", help="Random loss, such as 0.1%.")
@click.option("--queue", help="Queue limit in bytes, such as 256KiB.")
@click.option("--ecn", help="ECN marking threshold, such as 64KiB.")
@click.option("--direction", type=click.Choice(["a-b", "b-a", "both"]), default="both",
              show_default=True, help="a-b: A's egress towards B.")
@click.option("--fabric", "fabric_name", help="Which running fabric (default: the only one).")
def link_set_(a: str, b: str, rate: str | None, delay: str | None, jitter: str | None,
              loss: str | None, queue: str | None, ecn: str | None, direction: str,
              fabric_name: str | None) -> None:
    """Change link A-B's properties while the fabric runs (fabric units, as in the file)."""
    from .net.lifecycle import resolve
    from .net.live import link_set
    from .units import parse_loss, parse_rate, parse_size, parse_time

    def parsed(flag: str, text: str | None, parse: Callable[[str], int]) -> int | None:
        if text is None:
            return None
        try:
            return parse(text)
        except (ValueError, FabricError) as exc:
            raise FabricError(f"--{flag} {text!r}: {exc}") from None

    values = {"rate_bps": parsed("rate", rate, parse_rate),
              "delay_ns": parsed("delay", delay, parse_time),
              "jitter_ns": parsed("jitter", jitter, parse_time),
              "loss_ppm": parsed("loss", loss, parse_loss),
              "queue_bytes": parsed("queue", queue, parse_size),
              "ecn_bytes": parsed("ecn", ecn, parse_size)}
    if all(v is None for v in values.values()):
        raise FabricError("link set: give at least one of --rate --delay --jitter --loss "
                          "--queue --ecn")
    row = link_set(resolve(fabric_name), a, b, direction=direction, **values)
    click.echo(_link_rows([row]))


def _routing_options(command: Callable[..., None]) -> Callable[..., None]:
    command = click.option("--keep-routes", is_flag=True,
                           help="Leave the routes as they are (traffic hashed onto a down "
                                "link is lost until it comes back).")(command)
    return click.option("--detect", default="0s", show_default=True, metavar="TIME",
                        help="Routing reacts this long after the change (fabric time, as "
                             "events.detect): routes move off down links, and back.")(command)


def _reroute(state, detect: str, keep: bool) -> None:  # noqa: ANN001 - a FabricState
    """Routes over the links that are up now, `detect` (fabric time) after a change."""
    if keep:
        click.echo("routes left as they were (--keep-routes)")
        return
    from .kinds import load
    from .net.routing import links_down_now, reroute
    from .plan import plan_fabric
    from .units import parse_time

    try:
        wait_ns = parse_time(detect)
    except ValueError as e:
        raise FabricError(f"--detect {detect!r}: {e}") from None
    try:
        topo = load(state.source)
    except FabricError as e:
        raise FabricError(f"routes not moved: cannot read {state.source}, which {state.name} "
                          f"was built from ({e}); --keep-routes leaves them") from None
    if state.topology_sha256 and topo.sha256 != state.topology_sha256:
        raise FabricError(f"routes not moved: {state.source} changed since {state.name} was "
                          "built; --keep-routes leaves them")
    time.sleep(wait_ns * state.time_scale / 1e9)
    plan = plan_fabric(topo, backend=state.backend, run_id=state.run_id)
    change = reroute(state, plan, links_down_now(state))
    click.echo(f"routing converged: {change.total} routes, {change.switches} switch tables")


@link.command(name="down")
@click.argument("a")
@click.argument("b")
@click.option("--fabric", "fabric_name", help="Which running fabric (default: the only one).")
@_routing_options
def link_down_(a: str, b: str, fabric_name: str | None, detect: str, keep_routes: bool
               ) -> None:
    """Take link A-B down: it carries nothing either way until `fabric link up`; routes move
    off it after --detect."""
    from .net.lifecycle import resolve
    from .net.live import link_down

    state = resolve(fabric_name)
    link_down(state, a, b)
    click.echo(f"link {a}-{b} down")
    _reroute(state, detect, keep_routes)


@link.command(name="up")
@click.argument("a")
@click.argument("b")
@click.option("--fabric", "fabric_name", help="Which running fabric (default: the only one).")
@_routing_options
def link_up_(a: str, b: str, fabric_name: str | None, detect: str, keep_routes: bool) -> None:
    """Bring link A-B back up; routes use it again after --detect."""
    from .net.lifecycle import resolve
    from .net.live import link_up

    state = resolve(fabric_name)
    link_up(state, a, b)
    click.echo(f"link {a}-{b} up")
    _reroute(state, detect, keep_routes)


@link.command(name="show")
@click.argument("ends", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--fabric", "fabric_name", help="Which running fabric (default: the only one).")
def link_show_(ends: tuple[str, ...], fmt: str, fabric_name: str | None) -> None:
    """What is in force on every link (or link A B) now, read back, and its counters."""
    import json as _json

    from .net.lifecycle import resolve
    from .net.live import link_show

    if len(ends) not in (0, 2):
        raise FabricError("link show: name both ends of a link (A B), or neither")
    rows = link_show(resolve(fabric_name), *ends)
    click.echo(_json.dumps(rows, indent=1) if fmt == "json" else _link_rows(rows))


def _link_rows(rows: list[dict]) -> str:
    from .units import format_loss, format_rate, format_time

    table = []
    for row in rows:
        for key, (src, dst) in (("a-b", (row["a"], row["b"])), ("b-a", (row["b"], row["a"]))):
            d = row[key]
            c = d["counters"]
            table.append([
                f"{src} -> {dst}", "up" if d["up"] else "DOWN",
                format_rate(d["rate_bps"]) if d["rate_bps"] else "-",
                format_time(d["delay_ns"]), format_time(d["jitter_ns"]),
                format_loss(d["loss_ppm"]), format_size(d["queue_bytes"]),
                format_size(d["ecn_bytes"]) if d["ecn_bytes"] else "-", d["realised_by"],
                str(c.get("packets_out", "-")),
                str(c.get("drops_down", c.get("drops", "-")))])
    return _table(table, ["link", "state", "rate", "delay", "jitter", "loss", "queue", "ecn",
                          "by", "packets", "dropped"])


@cli.group()
def node() -> None:
    """Take a running fabric's nodes down and back up (all of their links)."""


@node.command(name="down")
@click.argument("name")
@click.option("--fabric", "fabric_name", help="Which running fabric (default: the only one).")
@_routing_options
def node_down_(name: str, fabric_name: str | None, detect: str, keep_routes: bool) -> None:
    """Take every link of node NAME down; routes move around it after --detect."""
    from .net.lifecycle import resolve
    from .net.live import node_down

    state = resolve(fabric_name)
    node_down(state, name)
    click.echo(f"node {name} down")
    _reroute(state, detect, keep_routes)


@node.command(name="up")
@click.argument("name")
@click.option("--fabric", "fabric_name", help="Which running fabric (default: the only one).")
@_routing_options
def node_up_(name: str, fabric_name: str | None, detect: str, keep_routes: bool) -> None:
    """Bring back the links `fabric node down NAME` took down; routes use them again after
    --detect."""
    from .net.lifecycle import resolve
    from .net.live import node_up

    state = resolve(fabric_name)
    node_up(state, name)
    click.echo(f"node {name} up")
    _reroute(state, detect, keep_routes)


if __name__ == "__main__":
    main()
