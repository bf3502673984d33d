"""Drive a topology's traffic through a running fabric and collect what the nodes measured.

`run_traffic(state, topo)`:
1. expands the traffic section into transfers (`fabric.traffic.schedule`);
2. forks one node process per endpoint that sends or receives, each in its namespace;
3. gives every node its plan over its control channel and waits until all listen;
4. sends one shared start time (CLOCK_MONOTONIC, 0.2 s ahead) so open-loop arrivals line up;
5. shows progress, and ends when every node reports done, when a node dies (named in the
   report, and the others are stopped and still report what they measured) or at the timeout;
6. returns the records, plus link counters taken before and after.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from fabric.errors import FabricError
from fabric.kv.content import pool_for
from fabric.kv.layout import chunks_of
from fabric.metrics.records import ChunkRecord, TransferRecord
from fabric.metrics.stats import lateness_between
from fabric.net.lifecycle import FabricState
from fabric.node.agent import AgentBook, end_clocks, start_node
from fabric.node.runtime import serve_node
from fabric.node.session import Done, Go, Nodes, Progress, Records, Stop
from fabric.node.spawn import NodeProcess, reap
from fabric.run.events import put_back, timeline_for
from fabric.topology.document import Topology
from fabric.traffic import Transfer, schedule
from fabric.units import format_size
from fabric.wire.udp import mss_for_mtu

READY_TIMEOUT = 30.0
START_LEAD_NS = 200_000_000
STOP_GRACE = 10.0


@dataclass
class RunResult:
    transfers: list[Transfer]
    chunk_records: list[ChunkRecord] = field(default_factory=list)
    transfer_records: list[TransferRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    links: dict = field(default_factory=dict)
    died: list[str] = field(default_factory=list)  # nodes whose channel closed mid-run
    ready_seconds: float = 0.0  # from the first fork to every node listening
    node_memory: dict[str, tuple[int, int]] = field(default_factory=dict)  # KiB: start, peak
    started_ns: int = 0
    ended_ns: int = 0
    timed_out: bool = False
    transport: dict[str, dict[str, int]] = field(default_factory=dict)  # node -> its counters
    # nodes run by agents: node -> {host, agent, offset_ns, error_ns} (times in the records
    # are already moved onto the runner's clock)
    clocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    chunk_receivers: list[str] = field(default_factory=list)  # per chunk record: who sent it
    events: list[dict[str, Any]] = field(default_factory=list)  # the timeline as applied
    recovery: dict[str, Any] = field(default_factory=dict)  # what each failure did
    # node -> [(runner's clock, its retransmission counters then)], sampled during a timeline
    counters: dict[str, list[tuple[int, dict[str, int]]]] = field(default_factory=dict)
    # prefix-cache blocks (fabric.node.blocks): per block transfer (at its receiver) and
    # block operation, what its node proved and when its KV was whole (`t_ready_ns`, the
    # runner's clock); per from_store send (`what: send`, at its sender) the blocks it
    # served and those it never had (`missing`); per node holding blocks, its store's
    # statistics
    blocks: list[dict[str, Any]] = field(default_factory=list)
    block_stores: list[dict[str, Any]] = field(default_factory=list)


def run_traffic(state: FabricState, topo: Topology, *, timeout: float = 300.0,
                progress: Callable[[str, bool], None] | None = None,
                transfers: list[Transfer] | None = None,
                agents: AgentBook | None = None, plan: Any = None,  # noqa: ANN401
                block_ops: dict[str, list[dict]] | None = None) -> RunResult:
    """Run `topo`'s traffic (or the given `transfers`) on the running fabric `state`; the
    nodes `agents` lists run through their agents, the others are forked here.
    `block_ops`: per node, its block operations (`fabric.node.blocks`: append, drop), in
    its plan; a node with operations runs even when it moves no transfer."""
    if transfers is None:
        transfers = schedule(topo)
    if not transfers:
        raise FabricError(f"{topo.source}: no traffic: add a `traffic:` section")
    block_ops = {n: ops for n, ops in (block_ops or {}).items() if ops}
    unknown = sorted(set(block_ops) - set(state.nodes))
    if unknown:
        raise FabricError(f"{topo.source}: block operations on {', '.join(unknown)}, which "
                          "the fabric has no endpoint for")
    names = sorted({t.src for t in transfers} | {t.dst for t in transfers} | set(block_ops))
    result = RunResult(transfers=transfers)
    before = read_link_stats(state)
    # the content pool, made once here so the forked nodes share its pages
    seed = topo.traffic.seed if topo.traffic else 1
    pool_for(seed, max((spec.nbytes + spec.block_offset for t in transfers
                        for spec in chunks_of(t)), default=0))
    procs: list[NodeProcess] = []
    result.ready_seconds = time.monotonic()  # completed in _orchestrate
    timeline = timeline_for(state, topo, plan, timeout)
    try:
        for name in names:
            local = agents is None or name not in agents.agents
            procs.append(start_node(name, state.netns_of(name) if local else None, procs,
                                    serve_node, agents))
        trio.run(_orchestrate, state, topo, transfers, procs, result, timeout, progress,
                 timeline, block_ops)
        end_clocks(procs, agents)
    finally:
        for p in procs:
            p.ctl.close()
        killed = reap(procs, grace=5.0)
        if timeline is not None:
            result.events = timeline.log
            result.errors += [f"after the events: {p}" for p in put_back(timeline)]
    for p in procs:
        if p.name in result.died:
            result.errors.append(f"node {p.name} died mid-run ({p.describe_exit()}); the "
                                 "others were stopped and reported what they measured")
        elif p.name in killed:
            result.errors.append(f"node {p.name} did not exit after the run (killed)")
        elif p.exit_status:
            result.errors.append(f"node {p.name} ended badly ({p.describe_exit()})")
    result.links = link_delta(before, read_link_stats(state, fresh_after_ns=result.ended_ns))
    onto_runner_clock(result, procs)
    if timeline is not None:
        from fabric.run.events import recovery

        result.recovery = recovery(result.events, topo, result.transfer_records,
                                   result.chunk_records, result.chunk_receivers, result.links,
                                   result.counters)
        left = [s.label for s in timeline.events.steps[len(
            [e for e in result.events if e["action"] != "converge"]):]]
        if left:
            result.errors.append(f"the run ended before {len(left)} event step"
                                 f"{'s' if len(left) > 1 else ''} (first: {left[0]}): make "
                                 "the traffic last longer or the events earlier")
    _account_unreported(result)
    if result.timed_out:
        result.errors.append(_stuck(result))
    return result


def _moved(t: int, by: int) -> int:
    """A node's time `t` (0: none) on the runner's clock, the node's being `by` ahead."""
    return t - by if t else 0


def onto_runner_clock(result: RunResult, procs: list[NodeProcess]) -> None:
    """Move the times nodes on other machines measured onto the runner's clock: a sender's
    times (send, start) by the sender's offset, a receiver's (first and last byte) by its
    own, so one-way latencies across machines are right to within both estimates' errors.
    Nodes forked here share the runner's clock and are left as they are."""
    off = {p.name: p.offset_ns for p in procs}
    result.clocks = {p.name: {"host": p.host, "agent": p.agent,
                              "offset_ns": p.clock.offset_ns, "error_ns": p.clock.error_ns}
                     for p in procs if p.clock is not None}
    if not any(off.values()):
        return
    result.blocks = [{**b, **{k: _moved(b[k], off.get(b["node"], 0))
                              for k in ("t_ready_ns", "t_acked_ns") if k in b}}
                     for b in result.blocks]
    src_of = {(t.flow, t.request, t.dst): t.src for t in result.transfers}
    from dataclasses import replace

    chunks = []
    for c, dst in zip(result.chunk_records, result.chunk_receivers, strict=True):
        src = src_of.get((c.flow, c.request, dst), "")
        chunks.append(replace(c, t_send_ns=_moved(c.t_send_ns, off.get(src, 0)),
                              t_first_ns=_moved(c.t_first_ns, off.get(dst, 0)),
                              t_last_ns=_moved(c.t_last_ns, off.get(dst, 0))))
    result.chunk_records = chunks
    result.transfer_records = [
        replace(r, t_start_ns=_moved(r.t_start_ns, off.get(r.src, 0)),
                t_first_byte_ns=_moved(r.t_first_byte_ns, off.get(r.dst, 0)),
                t_done_ns=_moved(r.t_done_ns, off.get(r.dst, 0)))
        for r in result.transfer_records]


def machines(result: RunResult) -> dict[str, Any]:
    """Which figures cross machines, for the report: the nodes run by agents (host, clock
    offset and its error) and, per flow whose ends are on different machines, the error its
    one-way latencies carry (the two ends' clock errors added). Empty when every node ran
    here."""
    if not result.clocks:
        return {}
    here = os.uname().nodename
    host = {n: c["host"] or c["agent"] for n, c in result.clocks.items()}
    err = {n: c["error_ns"] for n, c in result.clocks.items()}
    flows: dict[str, dict[str, Any]] = {}
    for t in result.transfers:
        a, b = host.get(t.src, here), host.get(t.dst, here)
        if a != b:
            e = err.get(t.src, 0) + err.get(t.dst, 0)
            f = flows.setdefault(t.flow, {"hosts": sorted({a, b}), "error_ns": 0})
            f["error_ns"] = max(f["error_ns"], e)
            f["hosts"] = sorted(set(f["hosts"]) | {a, b})
    return {"runner": here, "nodes": result.clocks, "flows": flows}


def _stuck(result: RunResult) -> str:
    """Which transfers a timed-out run left unfinished, and how far each got."""
    got: dict[tuple[str, int], set[int]] = {}
    for c in result.chunk_records:
        if c.ok:
            got.setdefault((c.flow, c.request), set()).add(c.chunk)
    left = [f"{r.flow}#{r.request} {r.src}->{r.dst} "
            f"({len(got.get((r.flow, r.request), ()))}/{r.chunks} chunks)"
            for r in result.transfer_records if r.status != "ok"]
    shown = ", ".join(left[:6]) + (f" and {len(left) - 6} more" if len(left) > 6 else "")
    return f"unfinished at the timeout: {shown or 'none'}"

def _account_unreported(result: RunResult) -> None:
    """A planned transfer no receiver reported (it died) counts as failed, never as absent."""
    seen = {(r.flow, r.dst, r.request) for r in result.transfer_records}
    for tr in result.transfers:
        if (tr.flow, tr.dst, tr.request) not in seen:
            result.transfer_records.append(TransferRecord(
                flow=tr.flow, cls=tr.cls, kind=tr.kind, src=tr.src, dst=tr.dst,
                request=tr.request, nbytes=tr.nbytes, chunks=0, t_start_ns=0,
                t_first_byte_ns=0, t_done_ns=0, status="failed"))


def udp_windows(name: str, topo: Topology, transfers: list[Transfer], mss: int) -> dict:
    """Per peer a UDP sender reaches: how many segments it may have in flight.

    A rate-based congestion control (`none`, the default, paces at the first hop's rate)
    leaves this window to bound what is in flight, so it is what the path's tightest queue
    absorbs: the smallest queue on the path in segments (16..1024). Queues default to at
    least one bandwidth x round trip, so the window still fills the path.
    """
    from itertools import pairwise

    from fabric.run.probe import shortest_path
    from fabric.topology.model import queue_bytes

    out = {}
    for dst in sorted({t.dst for t in transfers if t.src == name and t.transport == "udp"}):
        hops = pairwise(shortest_path(topo, name, dst))
        shaped = [s for s in (topo.shape(a, b) for a, b in hops) if s.rate_bps]
        tightest = min((queue_bytes(s) for s in shaped), default=1024 * mss)
        out[dst] = max(16, min(1024, tightest // mss))
    return out


def udp_plan(name: str, topo: Topology, transfers: list[Transfer]) -> dict:
    """What a node's UDP senders need for congestion control, in fabric units: the time
    scale, each class's policy (`cc:`, `cc_params:`, as RoCE flows pick theirs) and, per peer
    it sends UDP to, the path's line rate (first hop, as a NIC's) and base RTT."""
    dsts = sorted({t.dst for t in transfers if t.src == name and t.transport == "udp"})
    if not dsts:
        return {}
    from fabric.topology.paths import path_figures

    peers = {}
    for dst in dsts:
        pf = path_figures(topo, name, dst)
        rate = pf.first_hop_bps or pf.bottleneck_bps or 100_000_000_000
        peers[dst] = {"rate_bps": rate, "base_rtt_ns": pf.base_rtt_ns}
    return {"time_scale": topo.time_scale,
            "classes": {c.name: {"cc": c.cc, "cc_params": dict(c.cc_params)}
                        for c in topo.classes},
            "peers": peers}


def _plan_for(name: str, state: FabricState, topo: Topology, transfers: list[Transfer],
              block_ops: dict[str, list[dict]] | None = None) -> dict[str, Any]:
    mss = mss_for_mtu(min((link.forward.mtu for link in topo.links), default=1500))
    return {
        "address": state.nodes[name]["loopback"],
        "peers": {n: v["loopback"] for n, v in state.nodes.items()},
        "classes": {c.name: {"dscp": c.dscp, "tcp_cc": c.tcp_cc} for c in topo.classes},
        "seed": topo.traffic.seed if topo.traffic else 1,
        "sends": [t.to_dict() for t in transfers if t.src == name],
        "expects": [t.to_dict() for t in transfers if t.dst == name],
        "udp_mss": mss,
        "udp_window": udp_windows(name, topo, transfers, mss),
        "udp": udp_plan(name, topo, transfers),
        "roce": roce_plan(name, topo, transfers),
        # with a timeline, when each retransmission happened tells one failure's from another's
        "sample_counters": topo.events is not None,
        "block_ops": (block_ops or {}).get(name, []),
        # the file's own models: a node on another machine (an agent) knows only built-ins
        "models": {n: asdict(m) for n, m in topo.models.items()},
    }


def roce_plan(name: str, topo: Topology, transfers: list[Transfer]) -> dict:
    """What a node's RoCE transport needs, in fabric units: the time scale, each class's
    congestion control, and per peer it sends to the path's NIC rate, base RTT and MTU."""
    if not any(t.transport == "roce" and name in (t.src, t.dst) for t in transfers):
        return {}
    from fabric.topology.document import control_class
    from fabric.topology.paths import path_figures

    sw = topo.switches
    peers = {}
    for dst in sorted({t.dst for t in transfers if t.src == name and t.transport == "roce"}):
        pf = path_figures(topo, name, dst)
        rate = pf.first_hop_bps or pf.bottleneck_bps or 100_000_000_000
        # Go-back-N's timeout must outlast the queueing a lossless fabric may add (a full
        # switch buffer draining at the NIC's rate, twice), or it fires spuriously and
        # resends what is merely queued; losses are found by NAKs long before.
        drain = sw.buffer_bytes * 8 * 1_000_000_000 // rate if sw else 0
        peers[dst] = {"rate_bps": rate, "base_rtt_ns": pf.base_rtt_ns, "mtu": pf.mtu,
                      "hops": pf.hops, "rto_ns": max(4 * pf.base_rtt_ns, 2 * drain)}
    first_hops = [topo.shape(name, nb).rate_bps for nb in topo.neighbours(name)]
    control = control_class(topo)
    return {
        "time_scale": topo.time_scale,
        # one link: its rate is the NIC's; several (multi-homed): leave pacing per QP
        "nic_rate_bps": first_hops[0] if len(first_hops) == 1 else None,
        "int": bool(sw and sw.int_enabled),
        "nodes": sorted(topo.nodes),
        "classes": {c.name: {"cc": c.cc, "cc_params": dict(c.cc_params),
                             "priority": c.priority, "index": i}
                    for i, c in enumerate(topo.classes)},
        # CNPs, ACKs and NAKs leave in the RoCE control class
        "control_dscp": control.dscp if control is not None else 0,
        "peers": peers,
    }


async def _orchestrate(state: FabricState, topo: Topology, transfers: list[Transfer],
                       procs: list[NodeProcess], result: RunResult, run_timeout: float,
                       progress: Callable[[str, bool], None] | None,
                       timeline: Any = None,  # noqa: ANN401 - a run.events.Timeline
                       block_ops: dict[str, list[dict]] | None = None) -> None:
    nodes = Nodes({p.name: p.ctl for p in procs}, offsets={p.name: p.offset_ns for p in procs})
    total = sum(t.nbytes for t in transfers)
    rx: dict[str, int] = {p.name: 0 for p in procs}
    done: set[str] = set()
    dead: dict[str, str] = {}
    all_done = trio.Event()
    node_gone = trio.Event()

    await nodes.start({p.name: _plan_for(p.name, state, topo, transfers, block_ops)
                       for p in procs}, READY_TIMEOUT)
    result.ready_seconds = time.monotonic() - result.ready_seconds

    t0 = time.monotonic_ns() + START_LEAD_NS
    result.started_ns = t0
    await nodes.broadcast(Go(t0=t0))

    async def listen(p: NodeProcess) -> None:
        while True:
            msg = await nodes[p.name].receive()
            if msg is None:
                if p.name not in done:
                    dead[p.name] = "died"
                    result.died.append(p.name)  # its exit status is read after the run
                    node_gone.set()
                return
            if isinstance(msg, Progress):
                rx[p.name] = msg.rx
                if msg.counters:
                    result.counters.setdefault(p.name, []).append(
                        (time.monotonic_ns(), msg.counters))
            elif isinstance(msg, Records):
                result.chunk_records += [ChunkRecord(*r) for r in msg.body["chunks"]]
                result.chunk_receivers += [p.name] * len(msg.body["chunks"])
                result.transfer_records += [TransferRecord(*r) for r in msg.body["transfers"]]
                result.blocks += msg.body.get("blocks", [])
                result.block_stores += msg.body.get("block_stores", [])
            elif isinstance(msg, Done):
                result.node_memory[p.name] = (msg.rss_start_kb, msg.hwm_kb)
                result.transport[p.name] = msg.transport
                done.add(p.name)
                if len(done) + len(dead) == len(procs):
                    all_done.set()
                return

    async def show_progress() -> None:
        t_start = time.monotonic()
        while True:
            got = sum(rx.values())
            frac = got / total if total else 1.0
            line = (f"[{'#' * int(frac * 30):<30}] {frac:4.0%}  {format_size(got)} of "
                    f"{format_size(total)}  {time.monotonic() - t_start:5.1f} s")
            if progress:
                progress(line, False)
            await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        for p in procs:
            nursery.start_soon(listen, p)
        nursery.start_soon(show_progress)
        if timeline is not None:
            nursery.start_soon(timeline.run, t0)
        with trio.move_on_after(run_timeout) as scope:
            async with trio.open_nursery() as waiters:
                async def wait(ev: trio.Event) -> None:
                    await ev.wait()
                    waiters.cancel_scope.cancel()
                waiters.start_soon(wait, all_done)
                waiters.start_soon(wait, node_gone)
        if scope.cancelled_caught:
            result.timed_out = True
            result.errors.append(f"the run did not finish within {run_timeout:.0f} s; "
                                 "what arrived by then is reported")
        if not all_done.is_set():
            # stop the live ones: each sends what it measured, then done
            await nodes.broadcast(Stop(), [p.name for p in procs
                                            if p.name not in done and p.name not in dead])
            with trio.move_on_after(STOP_GRACE):
                await all_done.wait()
        nursery.cancel_scope.cancel()
    result.ended_ns = time.monotonic_ns()
    if progress:
        progress("", True)


# ---- link counters ---------------------------------------------------------------------


def read_link_stats(state: FabricState, fresh_after_ns: int = 0) -> dict:
    """Per-link counters of a running fabric: the userspace engine's stats file, else the
    netem/tbf qdisc counters. `fresh_after_ns`: wait (up to ~1.5 s) for an engine snapshot
    taken after that time."""
    from fabric.net.kernel import Kernel
    from fabric.plan import link_backend

    with Kernel() as k:
        kernel = k.qdisc_stats(state)
    if not link_backend(state.backend).engine:
        return kernel
    data = engine_stats(state, fresh_after_ns)
    # where the kernel's tbf shapes a userspace link, its drops happen before the engine
    # sees the packets: count them as queue drops of that link direction
    for lid, dirs in kernel.get("links", {}).items():
        for d, k_stats in dirs.items():
            eng = data.setdefault("links", {}).setdefault(lid, {}).setdefault(d, {})
            eng["drops_queue"] = eng.get("drops_queue", 0) + k_stats.get("drops_queue", 0)
            eng["tbf_drops"] = k_stats.get("drops_queue", 0)
    return data


def engine_stats(state: FabricState, fresh_after_ns: int = 0) -> dict:
    """The userspace link engine's statistics file (`links.json`), {} without one;
    `fresh_after_ns`: wait (up to ~1.5 s) for a snapshot the engine took after that time."""
    path = state.dir / "links.json"
    deadline = time.monotonic() + 1.5
    while True:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            data = {}
        if data.get("monotonic_ns", 0) >= fresh_after_ns or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


def engine_lateness_since(state: FabricState, before: dict) -> dict | None:
    """How late the link engine wrote its releases since `before` (an `engine_stats` taken
    earlier; {} for all since it started), from a snapshot taken after now: the
    `lateness_between` figures, None without an engine or a release."""
    return _lateness(before, engine_stats(state, time.monotonic_ns()))


def _lateness(before: dict | None, after: dict | None) -> dict | None:
    """The engine's releases between two of its statistics documents; all of `after`'s
    when `before` is another engine's (restarted between) or missing."""
    before, after = before or {}, after or {}
    same = bool(before) and before.get("pid") == after.get("pid")
    return lateness_between(before.get("release_lateness") if same else None,
                            after.get("release_lateness"))


def link_delta(before: dict, after: dict) -> dict:
    """Counters for the run alone: after minus before (high-water marks and samples kept)."""
    out: dict = {"links": {}}
    b_links = before.get("links", {}) if before else {}
    for lid, dirs in (after.get("links", {}) if after else {}).items():
        out["links"][lid] = {}
        for d, s in dirs.items():
            prev = b_links.get(lid, {}).get(d, {})
            row = dict(s)
            for key, val in s.items():
                if isinstance(val, int) and key.startswith(("packets", "bytes", "drops", "ecn")):
                    row[key] = val - int(prev.get(key, 0))
            out["links"][lid][d] = row
    late = _lateness(before, after)  # how late the userspace engine wrote its releases
    if late is not None:
        out["release_lateness"] = late
    return out


def progress_printer() -> Callable[[str, bool], None]:
    """Progress on stderr: a live bar on a terminal, a line every ~5 s otherwise."""
    tty = sys.stderr.isatty()
    last = [0.0]

    def show(line: str, final: bool) -> None:
        if tty:
            sys.stderr.write("\r" + (line if not final else " " * 72 + "\r"))
            sys.stderr.flush()
        elif line and time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            print(line, file=sys.stderr, flush=True)

    return show


__all__ = ["RunResult", "link_delta", "machines", "onto_runner_clock", "progress_printer",
           "read_link_stats", "run_traffic", "udp_plan", "engine_stats",
           "engine_lateness_since"]
