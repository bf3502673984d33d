"""`fabric run` on a file with a `memory:` section: the memory runs, memory semantics against
the alternative on the same links, with the bytes each variant put on each link.

- `loadstore`: writes, then reads, of each size at a window (latency per op kind and size);
- `hypercast`: one write to the multicast window, replicated by the switch, against the source
  writing each member's window itself;
- `allreduce`: in-network reduce (`Contribute`, the switch sums) against a ring all-reduce
  over TCP between the members, for each size;
- `kv-pull`: decode nodes READ the prefill's KV from its window (pull), against the prefill
  pushing it over TCP (message passing).

Every variant's result is checked. Read data must equal what was written. Each Hypercast or
unicast member must hold the source's bytes. Every member's reduced vector must equal numpy's
sum, and both variants use vectors of small integers, so their different summation orders give
bit-identical sums. Every pulled or pushed KV must equal the prefill's.

Bytes per link come from the link layer's counters, read before and after each variant.
Times are fabric time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio

from fabric.errors import FabricError
from fabric.memsw.endpoint import digest, serve_memory, values_for
from fabric.memsw.ops import encode as encode_values
from fabric.memsw.ops import itemsize
from fabric.metrics.report import RunLabel, format_table
from fabric.node.agent import start_node
from fabric.node.session import Go, Nodes, Result, Stop, Task
from fabric.node.spawn import NodeProcess, reap
from fabric.run.events import put_back, timeline_for
from fabric.topology.document import Topology
from fabric.units import format_rate, format_size, format_time

START_LEAD_NS = 200_000_000
DATAGRAM_OVERHEAD = 28 + 42 + 32  # IPv4 + UDP, our header, room for a group name
PULL_CHUNK = 64 * 1024


@dataclass
class VariantOutcome:
    run: str
    kind: str
    variant: str
    size: int
    ok: bool
    ns: float | None  # completion (fabric)
    latency: dict[str, Any] = field(default_factory=dict)
    link_bytes: dict[str, dict[str, int]] = field(default_factory=dict)
    note: str = ""
    lost: int = 0  # transactions unanswered within the completion timeout

    @property
    def status(self) -> str:
        """ok, lost (a transaction was lost: the data could not all arrive) or FAILED (the
        data that arrived is wrong)."""
        return "ok" if self.ok else f"lost {self.lost}" if self.lost else "FAILED"


def _pcts(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "n": len(a)} if len(a) else {}


def node_plans(plan: Any, topo: Topology) -> dict[str, dict[str, Any]]:  # noqa: ANN401
    from fabric.memsw.deploy import gateway_of

    mem = topo.memory
    assert mem is not None
    switches = set(mem.switches)
    out = {}
    for n in mem.endpoints():
        # the node's outstanding transactions fill at most a third of its link's queue (its
        # NIC; the switch's port toward it holds their answers and what it delivers to the
        # node's own memory), so nothing is dropped there; 16..512
        up = min((lp.a_queue_bytes, lp.b_queue_bytes) for lp in plan.links
                 if n in (lp.a.node, lp.b.node))[0]
        # several transactions travel in one datagram up to the link's MTU (wire.Packer)
        mtu = min(lp.link.forward.mtu for lp in plan.links if n in (lp.a.node, lp.b.node))
        window = max(16, min(512, up // 3 // (mem.txn + DATAGRAM_OVERHEAD)))
        out[n] = {
            "window": window, "mtu": mtu,
            "name": n, "address": plan.nodes[n].loopback,
            "gateway": gateway_of(plan, n, switches), "time_scale": topo.time_scale,
            "txn": mem.txn, "timeout_ns": mem.timeout_ns,
            "windows": [{"name": w.name, "base": w.base, "size": w.size}
                        for w in mem.windows if w.node == n],
            "mcast": [{"name": m.name, "base": m.base, "size": m.size}
                      for m in mem.multicast if n in m.members],
            "peers": {p: plan.nodes[p].loopback for p in mem.endpoints()},
        }
    return out


def _link_delta(before: dict, after: dict, links: set[str] | None = None,
                ) -> dict[str, dict[str, int]]:
    """Bytes each link (of `links`, if given) carried between two counter snapshots."""
    out = {}
    for lid, dirs in after.get("links", {}).items():
        if links is not None and lid not in links:
            continue
        row = {}
        for d in ("forward", "reverse"):
            b = before.get("links", {}).get(lid, {}).get(d, {}).get("bytes_out", 0) or 0
            a = dirs.get(d, {}).get("bytes_out", 0) or 0
            row[d] = int(a - b)
        out[lid] = row
    return out


def memory_links(topo: Topology) -> set[str]:
    """The links the memory runs and their message-passing baselines cross: an end at a
    memory switch, or both ends at hosts the memory section names. Traffic elsewhere (a
    RoCE side, background load there) is not theirs to count."""
    assert topo.memory is not None
    switches = set(topo.memory.switches)
    hosts = set(topo.memory.endpoints())
    return {link.name for link in topo.links
            if link.a in switches or link.b in switches or {link.a, link.b} <= hosts}


class _Driver:
    def __init__(self, state: Any, topo: Topology, procs: list[NodeProcess],  # noqa: ANN401
                 plans: dict[str, dict], say: Callable[[str], None]) -> None:
        self.state = state
        self.topo = topo
        assert topo.memory is not None
        self.mem = topo.memory
        self.nodes = Nodes({p.name: p.ctl for p in procs}, what="memory node",
                           offsets={p.name: p.offset_ns for p in procs})
        self.plans = plans
        self.say = say
        self.memory_links = memory_links(topo)
        self.seq = 0
        self.outcomes: list[VariantOutcome] = []
        self.t0 = 0
        self.run_name = ""
        self.lost: list[tuple[int, str, str]] = []  # (fabric ns, node, run) per lost txn
        self._lost_pending = 0  # lost since the last outcome was recorded
        self.send_errors: dict[str, int] = {}

    async def start(self) -> None:
        await self.nodes.start(self.plans, within=30)
        self.t0 = time.monotonic_ns()
        await self.nodes.broadcast(Go(t0=self.t0))

    def add(self, outcome: VariantOutcome, lost: int | None = None) -> None:
        """Record a variant's outcome, with the transactions its tasks lost (all lost since
        the last outcome, or the `lost` of them that were this variant's)."""
        outcome.lost = self._lost_pending if lost is None else lost
        self._lost_pending -= outcome.lost
        if outcome.lost:
            outcome.ok = False
        self.outcomes.append(outcome)

    async def tasks(self, tasks: dict[str, dict]) -> dict[str, dict]:
        """Send one task to each named node (all at once) and collect every result."""
        results: dict[str, dict] = {}
        for name, t in tasks.items():
            await self.nodes[name].send(Task(t))

        async def collect(name: str) -> None:
            msg = await self.nodes[name].receive()
            if not isinstance(msg, Result):
                raise FabricError(f"memory node {name} died mid-run")
            results[name] = msg.body
            lost = msg.body.get("lost") or []
            self.lost += [(int(t), name, self.run_name) for t in lost]
            self._lost_pending += len(lost)
            self.send_errors[name] = int(msg.body.get("send_errors", 0))
            if "error" in results[name]:
                raise FabricError(f"memory node {name}: {results[name]['error']}")

        async with trio.open_nursery() as nursery:
            for name in tasks:
                nursery.start_soon(collect, name)
        return results

    async def measured(self, tasks: dict[str, dict]) -> tuple[dict[str, dict], dict]:
        from fabric.run.traffic import read_link_stats

        before = await trio.to_thread.run_sync(read_link_stats, self.state, time.monotonic_ns())
        results = await self.tasks(tasks)
        after = await trio.to_thread.run_sync(read_link_stats, self.state, time.monotonic_ns())
        return results, _link_delta(before, after, self.memory_links)

    def at(self) -> int:
        return time.monotonic_ns() + START_LEAD_NS

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def stop(self) -> None:
        await self.nodes.broadcast(Stop())

    # -- the runs -----------------------------------------------------------------------------

    async def run_all(self, timeline: Any = None) -> None:  # noqa: ANN401 - a Timeline
        """Every run in order; the file's event timeline (if any) beside them from the start,
        cut off when the last run ends."""
        await self.start()
        assert self.mem is not None
        async with trio.open_nursery() as nursery:
            if timeline is not None:
                nursery.start_soon(timeline.run, self.t0)
            for r in self.mem.runs:
                self.say(f"run {r.name} ({r.kind})")
                self.run_name = r.name
                await getattr(self, "_" + r.kind.replace("-", "_"))(r)
            nursery.cancel_scope.cancel()
        await self.stop()

    async def _loadstore(self, r: Any) -> None:  # noqa: ANN401
        w = next(w for w in self.mem.windows if w.name == r.window)
        res, links = await self.measured({r.src: {"k": "loadstore", "base": w.base,
                                                  "span": w.size, "sizes": list(r.sizes),
                                                  "count": r.count}})
        out = res[r.src]
        for size in r.sizes:
            lat = out[str(size)]
            self.add(VariantOutcome(
                r.name, r.kind, "load/store", size, bool(lat["ok"]), None,
                {"write": _pcts(lat["write"]), "read": _pcts(lat["read"])}, links),
                lost=lat["lost"])
        self.add(VariantOutcome(
            r.name, r.kind, "atomic", 8, bool(out["atomic"]["ok"]), None,
            {"atomic": _pcts(out["atomic"]["atomic"])}, links), lost=out["atomic"]["lost"])

    async def _cast(self, src: str, m: Any, size: int) -> tuple[dict, dict, dict]:  # noqa: ANN401
        """One Hypercast write of fresh data from `src` to window `m`: the source's result,
        the link bytes, and what each member then holds (digests)."""
        res, links = await self.measured({src: {"k": "hypercast", "addrs": [m.base],
                                                "size": size, "seed": self.next_seq()}})
        got = await self.tasks({n: {"k": "digest", "addr": m.base, "size": size}
                                for n in m.members})
        return res[src], links, got

    async def _hypercast(self, r: Any) -> None:  # noqa: ANN401
        m = next(m for m in self.mem.multicast if m.name == r.window)
        size = r.sizes[0]
        sent, links, got = await self._cast(r.src, m, size)
        ok = sent["ok"] and all(g["digest"] == sent["digest"] for g in got.values())
        self.add(VariantOutcome(r.name, r.kind, "hypercast", size, ok,
                                            sent["ns"], link_bytes=links))
        if len(m.members) > 1:  # dynamic membership: the last member leaves, then rejoins
            leaver = m.members[-1]
            await self.tasks({leaver: {"k": "group", "op": "leave", "group": m.name}})
            old = got[leaver]["digest"]
            sent, links, got = await self._cast(r.src, m, size)
            ok = sent["ok"] and got[leaver]["digest"] == old and all(
                got[n]["digest"] == sent["digest"] for n in m.members if n != leaver)
            self.add(VariantOutcome(r.name, r.kind, f"after {leaver} left", size,
                                                ok, sent["ns"], link_bytes=links))
            await self.tasks({leaver: {"k": "group", "op": "join", "group": m.name}})
        await self._created_group(r, m.members, size)
        targets = {}
        for n in m.members:
            owned = [w for w in self.mem.windows if w.node == n and w.size >= size]
            if owned:
                targets[n] = owned[0].base
        if len(targets) < len(m.members):
            self.add(VariantOutcome(r.name, r.kind, "unicast", size, True, None,
                                                note="a member has no window to write"))
            return
        seed = self.next_seq()
        res, links = await self.measured({r.src: {"k": "unicast", "addrs": list(targets.values()),
                                                  "size": size, "seed": seed}})
        want = res[r.src]["digest"]
        got = await self.tasks({n: {"k": "digest", "addr": a, "size": size}
                                for n, a in targets.items()})
        ok = res[r.src]["ok"] and all(g["digest"] == want for g in got.values())
        self.add(VariantOutcome(r.name, r.kind, "unicast", size, ok,
                                            res[r.src]["ns"], link_bytes=links))

    async def _created_group(self, r: Any, members: tuple[str, ...],  # noqa: ANN401
                             size: int) -> None:
        """A group created at run time by the source, joined by the members, written once."""
        mib = 1 << 20
        end = max([w.base + w.size for w in self.mem.windows]
                  + [m.base + m.size for m in self.mem.multicast])
        base = -(-end // mib) * mib
        name = f"dyn{self.next_seq()}"
        await self.tasks({r.src: {"k": "group", "op": "create", "group": name, "base": base,
                                  "size": size}})
        await self.tasks({n: {"k": "group", "op": "join", "group": name, "base": base,
                              "size": size} for n in members})
        seed = self.next_seq()
        res, links = await self.measured({r.src: {"k": "hypercast", "addrs": [base],
                                                  "size": size, "seed": seed}})
        want = res[r.src]["digest"]
        got = await self.tasks({n: {"k": "digest", "addr": base, "size": size}
                                for n in members})
        ok = res[r.src]["ok"] and all(g["digest"] == want for g in got.values())
        self.add(VariantOutcome(r.name, r.kind, "group created at run time", size,
                                            ok, res[r.src]["ns"], link_bytes=links))
        await self.tasks({n: {"k": "group", "op": "leave", "group": name} for n in members})

    async def _allreduce(self, r: Any) -> None:  # noqa: ANN401
        g = next(g for g in self.mem.reduce if g.name == r.group)
        members = list(g.members)
        for size in r.sizes:
            n = size // itemsize(g.dtype)
            total = np.zeros(n, dtype=np.float32)
            for i in range(len(members)):
                total += values_for(i + 1, n, "float32")
            want = digest(encode_values(total, g.dtype))
            for variant in ("switch", "ring"):
                self.say(f"  {variant} all-reduce of {format_size(size)}")
                seq = self.next_seq()
                at = self.at()
                kind = "reduce-switch" if variant == "switch" else "reduce-ring"
                tasks = {m: {"k": kind, "group": g.name, "members": members, "n": n,
                             "dtype": g.dtype, "seed": i + 1, "seq": seq, "at": at}
                         for i, m in enumerate(members)}
                res, links = await self.measured(tasks)
                ok = all(v["digest"] == want for v in res.values())
                done = max(v["ns"] for v in res.values())
                self.add(VariantOutcome(r.name, r.kind, variant, size, ok, done,
                                                    link_bytes=links))

    async def _kv_pull(self, r: Any) -> None:  # noqa: ANN401
        from fabric.kv import get_model
        from fabric.kv.layout import transfer_bytes

        w = next(w for w in self.mem.windows if w.name == r.window)
        size = transfer_bytes(get_model(r.model), r.tokens)
        seed = self.next_seq()
        filled = await self.tasks({r.src: {"k": "fill", "addr": w.base, "size": size,
                                           "seed": seed}})
        want = filled[r.src]["digest"]
        at = self.at()
        res, links = await self.measured({d: {"k": "pull", "addr": w.base, "size": size,
                                              "chunk": PULL_CHUNK, "at": at} for d in r.dst})
        ok = all(v["ok"] and v["digest"] == want for v in res.values())
        lat = [x for v in res.values() for x in v["lat"]]
        self.add(VariantOutcome(r.name, r.kind, "pull", size, ok,
                                            max(v["ns"] for v in res.values()),
                                            {"chunk": _pcts(lat)}, links))
        at = self.at()
        tasks = {r.src: {"k": "push-send", "to": list(r.dst), "addr": w.base, "size": size,
                         "at": at}}
        tasks.update({d: {"k": "push-recv", "size": size, "at": at} for d in r.dst})
        res, links = await self.measured(tasks)
        ok = all(res[d]["digest"] == want for d in r.dst)
        self.add(VariantOutcome(r.name, r.kind, "push", size, ok,
                                            max(res[d]["ns"] for d in r.dst), link_bytes=links))


def run_memory(state: Any, topo: Topology, out_dir: Path,  # noqa: ANN401
               say: Callable[[str], None] = print, timeout: float = 300.0,
               plan: Any = None, agents: Any = None) -> list[VariantOutcome]:  # noqa: ANN401
    """Run every `memory.runs` entry on the running fabric `state` (built from `plan`, the
    fabric handle's; planned again from the state's run id when not given); the nodes
    `agents` (a `node.agent.AgentBook`) lists run through their agents."""
    from fabric.plan import plan_fabric

    if plan is None:
        plan = plan_fabric(topo, backend=state.backend, run_id=state.run_id)
    plans = node_plans(plan, topo)
    procs: list[NodeProcess] = []
    timeline = timeline_for(state, topo, plan, timeout)
    events: dict[str, Any] = {}
    try:
        for n in plans:
            local = agents is None or n not in agents.agents
            procs.append(start_node(n, state.netns_of(n) if local else None, procs,
                                    serve_memory, agents))
        driver = _Driver(state, topo, procs, plans, say)

        async def bounded() -> None:
            with trio.move_on_after(timeout) as scope:
                await driver.run_all(timeline)
            if scope.cancelled_caught:
                from fabric.run.traffic import read_link_stats

                stats = await trio.to_thread.run_sync(read_link_stats, state)
                drops = sum(int(d.get("drops_queue", 0) or 0) + int(d.get("drops_loss", 0) or 0)
                            for lid, dirs in stats.get("links", {}).items()
                            if lid in driver.memory_links
                            for d in dirs.values())
                why = (f"; the links dropped {drops} packets, and a lost memory transaction "
                       "is never resent (give the links larger queues, or lower "
                       "memory.credits)" if drops else "")
                raise FabricError(f"the memory runs did not finish within {timeout:g} s "
                                  f"(--timeout); finished: {len(driver.outcomes)} variants"
                                  + why)

        trio.run(bounded)
    finally:
        for p in procs:
            p.ctl.close()
        reap(procs, grace=3.0)
        if timeline is not None:
            events = {"log": timeline.log, "not_restored": put_back(timeline)}
    if timeline is not None:
        from fabric.memsw.ops import completion_timeout_s

        assert topo.memory is not None
        waited = completion_timeout_s(topo.memory.timeout_ns, topo.time_scale) * 1e9
        events.update(lost_by_event(timeline.log, driver.lost, driver.t0, topo.time_scale,
                                    waited / topo.time_scale))
        events["switches"] = switch_losses(state)
        events["t0_ns"] = driver.t0  # the runs' start (the runner's clock)
        done = len([e for e in timeline.log if e["action"] != "converge"])
        left = [st.label for st in timeline.events.steps[done:]]
        if left:
            events["not_applied"] = left
    write_outcomes(driver.outcomes, topo, out_dir, events)
    if events.get("not_applied"):
        left = events["not_applied"]
        raise FabricError(f"the memory runs ended before {len(left)} event step"
                          f"{'s' if len(left) > 1 else ''} (first: {left[0]}): add runs or "
                          "counts, or put the events earlier")
    return driver.outcomes


def lost_by_event(log: list[dict[str, Any]], lost: list[tuple[int, str, str]], t0_ns: int,
                  time_scale: float, timeout_ns: float) -> dict[str, Any]:
    """Each lost transaction (fabric ns since the start it was issued, node, run) against the
    timeline's steps that can lose one (a link or node down, a property set: a loss burst):
    it belongs to the last of them applied before it was given up (issued plus the
    completion timeout, `timeout_ns` in fabric time), which struck while it was on the way
    or before it left; none before the first. A link coming back loses nothing itself: what
    is lost before routing has it again is the failure's. Pure: the applied log and the
    lost."""
    # one entry per step applied (a flap's, ramp's or trace's steps share a label)
    per = sorted(({"event": e["label"], "line": e["line"],
                   "at_ns": (e["applied_ns"] - t0_ns) / time_scale, "lost": 0, "runs": []}
                  for e in log if e["action"] in ("down", "node_down", "set")),
                 key=lambda x: x["at_ns"])
    before = 0
    for t, _node, run in sorted(lost):
        owner = None
        for step in per:
            if step["at_ns"] <= t + timeout_ns:
                owner = step
        if owner is None:
            before += 1
            continue
        owner["lost"] += 1
        if run not in owner["runs"]:
            owner["runs"].append(run)
    return {"lost_total": len(lost), "lost_before_events": before,
            "lost": [{"at_ns": t, "node": n, "run": r} for t, n, r in sorted(lost)[:1000]],
            "by_event": per,
            "note": "transactions unanswered within the completion timeout (memory.timeout), "
                    "each counted under the last event applied before it was given up; "
                    "measured on the fabric"}


def switch_losses(state: Any) -> dict[str, dict[str, Any]]:  # noqa: ANN401
    """Per memory switch: the requests it gave up per port (their buffers reclaimed at the
    completion timeout) and the answers that came after, from its statistics file."""
    from fabric.memsw.deploy import daemon_name

    out = {}
    for node, role in sorted(state.switch_roles.items()):
        if role != "memory":
            continue
        try:
            st = json.loads((state.dir / f"{daemon_name(node)}.json").read_text())
        except (OSError, ValueError):
            continue
        out[node] = {"timed_out": {p: n for p, n in (st.get("timed_out") or {}).items() if n},
                     "late": int(st.get("late", 0))}
    return out


def figures(outcomes: list[VariantOutcome]) -> dict[str, Any]:
    """What a memory run's expectations are judged by (`metrics.expect`): the transactions
    lost, the variants whose data was wrong with nothing lost, and integrity as a traffic
    run's summary gives it (ok when no variant's data was wrong)."""
    failed = sum(1 for o in outcomes if not o.ok and not o.lost)
    return {"lost": sum(o.lost for o in outcomes), "failed": failed,
            "integrity": {"ok": failed == 0}}


def write_outcomes(outcomes: list[VariantOutcome], topo: RunLabel, out_dir: Path,
                   events: dict[str, Any] | None = None) -> Path:
    """memory.json: every variant's outcome, and what the event timeline did (if the file
    has one), which `fabric report` re-prints."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "memory.json"
    path.write_text(json.dumps({"fabric": topo.name, "time_scale": topo.time_scale,
                                "outcomes": [o.__dict__ for o in outcomes],
                                "events": events or {}}, indent=1))
    return path


def read_outcomes(path: Path) -> tuple[list[VariantOutcome], RunLabel, dict[str, Any]]:
    """What write_outcomes wrote: the outcomes, the fabric's name and time scale, and the
    events' record (empty without a timeline)."""
    from fabric.metrics.report import SavedRun

    data = json.loads(path.read_text())
    return ([VariantOutcome(**o) for o in data["outcomes"]],
            SavedRun(data["fabric"], data["time_scale"]), data.get("events") or {})


def _t(ns: float | None) -> str:
    return "-" if ns is None else format_time(round(ns))


def render(outcomes: list[VariantOutcome], topo: RunLabel) -> str:
    """Per run: each variant's completion (or latency), bandwidth, bytes on the busiest link."""
    rows = []
    for o in outcomes:
        busiest = max((max(v.values()) for v in o.link_bytes.values()), default=0)
        total = sum(sum(v.values()) for v in o.link_bytes.values())
        if o.kind == "loadstore":
            for op in ("write", "read", "atomic"):
                if op not in o.latency:
                    continue
                p = o.latency.get(op, {})
                bw = o.size * 8e9 / p["mean"] if p.get("mean") else None
                rows.append([o.run, f"{op} {format_size(o.size)}", o.status,
                             f"{_t(p.get('p50'))} / {_t(p.get('p99'))}",
                             format_rate(round(bw)) if bw else "-",
                             format_size(busiest), format_size(total)])
            continue
        bw = o.size * 8e9 / o.ns if o.ns else None
        rows.append([o.run, f"{o.variant} {format_size(o.size)}",
                     o.status if o.ok or not o.note else "-",
                     _t(o.ns), format_rate(round(bw)) if bw else "-",
                     format_size(busiest), format_size(total)])
    head = (f"{topo.name}: fabric time (host ran {topo.time_scale:g}x slower); latency is "
            "p50 / p99 per op for load/store, completion otherwise; bandwidth = size / time "
            "(algorithm bandwidth for all-reduce); bytes from the counters of the links at "
            "memory switches; every figure measured on the fabric")
    return head + "\n" + format_table(rows, ["run", "variant", "check", "latency / completion",
                                             "bandwidth", "busiest link", "all links"],
                                      numeric=range(3, 7))


def render_events(events: dict[str, Any], time_scale: float) -> list[str]:
    """The timeline as applied and what each step cost in transactions, for the printout."""
    from fabric.run.events import render_events as timeline_lines

    if not events.get("log"):
        return []
    t0 = events.get("t0_ns") or min(e["applied_ns"] - e["at_ns"] * time_scale
                                    for e in events["log"] if e["action"] != "converge")
    out = ["events (fabric time from the start; measured on the fabric):"]
    out += timeline_lines(events["log"], {}, time_scale, round(t0))
    for e in events.get("by_event", []):
        if e["lost"]:
            out.append(f"  {e['event']}: {e['lost']} transactions lost (completion timeout) "
                       f"in {', '.join(e['runs'])}")
        else:
            out.append(f"  {e['event']}: no transaction lost")
    if events.get("by_event"):
        out.append(f"  ({events['note']})")
    if events.get("lost_before_events"):
        out.append(f"  before the first event: {events['lost_before_events']} transactions "
                   "lost")
    for sw, st in (events.get("switches") or {}).items():
        if st["timed_out"] or st["late"]:
            ports = ", ".join(f"{p} {n}" for p, n in st["timed_out"].items()) or "none"
            out.append(f"  memory switch {sw}: requests given up per port: {ports}; "
                       f"answers after the timeout: {st['late']}")
    for p in events.get("not_restored", []):
        out.append(f"  not put back: {p}")
    return out


def write_link_plot(outcomes: list[VariantOutcome], topo: RunLabel, out_dir: Path) -> Path:
    """links.png: bytes on each link (both directions) for each variant of each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [o for o in outcomes if o.link_bytes and o.kind != "loadstore"]
    links = sorted({lid for o in shown for lid, v in o.link_bytes.items() if sum(v.values())})
    fig, ax = plt.subplots(figsize=(max(6, len(links) * 0.9), 4.2))
    width = 0.8 / max(len(shown), 1)
    for i, o in enumerate(shown):
        ys = [sum(o.link_bytes.get(lid, {}).values()) / 2**20 for lid in links]
        ax.bar(np.arange(len(links)) + i * width, ys, width,
               label=f"{o.run}: {o.variant} {format_size(o.size)}")
    ax.set_xticks(np.arange(len(links)) + 0.4 - width / 2, links, rotation=30, ha="right",
                  fontsize=8)
    ax.set_ylabel("MiB on the link (both directions)")
    ax.set_title(f"{topo.name}: bytes per link, per variant")
    if shown:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "links.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
