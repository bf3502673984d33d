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
        window = max(16, min(512, up // 3 // (mem.txn + DATAGRAM_OVERHEAD)))
        out[n] = {
            "window": window,
            "name": n, "address": plan.nodes[n].loopback,
            "gateway": gateway_of(plan, n, switches), "time_scale": topo.time_scale,
            "txn": mem.txn,
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

    async def start(self) -> None:
        await self.nodes.start(self.plans, within=30)
        await self.nodes.broadcast(Go(t0=time.monotonic_ns()))

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

    async def run_all(self) -> None:
        await self.start()
        assert self.mem is not None
        for r in self.mem.runs:
            self.say(f"run {r.name} ({r.kind})")
            await getattr(self, "_" + r.kind.replace("-", "_"))(r)
        await self.stop()

    async def _loadstore(self, r: Any) -> None:  # noqa: ANN401
        w = next(w for w in self.mem.windows if w.name == r.window)
        res, links = await self.measured({r.src: {"k": "loadstore", "base": w.base,
                                                  "span": w.size, "sizes": list(r.sizes),
                                                  "count": r.count}})
        out = res[r.src]
        for size in r.sizes:
            lat = out[str(size)]
            self.outcomes.append(VariantOutcome(
                r.name, r.kind, "load/store", size, bool(out["ok"]), None,
                {"write": _pcts(lat["write"]), "read": _pcts(lat["read"])}, links))
        self.outcomes.append(VariantOutcome(
            r.name, r.kind, "atomic", 8, bool(out["ok"]), None,
            {"atomic": _pcts(out["atomic"]["atomic"])}, links))

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
        self.outcomes.append(VariantOutcome(r.name, r.kind, "hypercast", size, ok,
                                            sent["ns"], link_bytes=links))
        if len(m.members) > 1:  # dynamic membership: the last member leaves, then rejoins
            leaver = m.members[-1]
            await self.tasks({leaver: {"k": "group", "op": "leave", "group": m.name}})
            old = got[leaver]["digest"]
            sent, links, got = await self._cast(r.src, m, size)
            ok = sent["ok"] and got[leaver]["digest"] == old and all(
                got[n]["digest"] == sent["digest"] for n in m.members if n != leaver)
            self.outcomes.append(VariantOutcome(r.name, r.kind, f"after {leaver} left", size,
                                                ok, sent["ns"], link_bytes=links))
            await self.tasks({leaver: {"k": "group", "op": "join", "group": m.name}})
        await self._created_group(r, m.members, size)
        targets = {}
        for n in m.members:
            owned = [w for w in self.mem.windows if w.node == n and w.size >= size]
            if owned:
                targets[n] = owned[0].base
        if len(targets) < len(m.members):
            self.outcomes.append(VariantOutcome(r.name, r.kind, "unicast", size, True, None,
                                                note="a member has no window to write"))
            return
        seed = self.next_seq()
        res, links = await self.measured({r.src: {"k": "unicast", "addrs": list(targets.values()),
                                                  "size": size, "seed": seed}})
        want = res[r.src]["digest"]
        got = await self.tasks({n: {"k": "digest", "addr": a, "size": size}
                                for n, a in targets.items()})
        ok = res[r.src]["ok"] and all(g["digest"] == want for g in got.values())
        self.outcomes.append(VariantOutcome(r.name, r.kind, "unicast", size, ok,
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
        self.outcomes.append(VariantOutcome(r.name, r.kind, "group created at run time", size,
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
                self.outcomes.append(VariantOutcome(r.name, r.kind, variant, size, ok, done,
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
        self.outcomes.append(VariantOutcome(r.name, r.kind, "pull", size, ok,
                                            max(v["ns"] for v in res.values()),
                                            {"chunk": _pcts(lat)}, links))
        at = self.at()
        tasks = {r.src: {"k": "push-send", "to": list(r.dst), "addr": w.base, "size": size,
                         "at": at}}
        tasks.update({d: {"k": "push-recv", "size": size, "at": at} for d in r.dst})
        res, links = await self.measured(tasks)
        ok = all(res[d]["digest"] == want for d in r.dst)
        self.outcomes.append(VariantOutcome(r.name, r.kind, "push", size, ok,
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
    try:
        for n in plans:
            local = agents is None or n not in agents.agents
            procs.append(start_node(n, state.netns_of(n) if local else None, procs,
                                    serve_memory, agents))
        driver = _Driver(state, topo, procs, plans, say)

        async def bounded() -> None:
            with trio.move_on_after(timeout) as scope:
                await driver.run_all()
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
    write_outcomes(driver.outcomes, topo, out_dir)
    return driver.outcomes


def write_outcomes(outcomes: list[VariantOutcome], topo: RunLabel, out_dir: Path) -> Path:
    """memory.json: every variant's outcome, which `fabric report` re-prints."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "memory.json"
    path.write_text(json.dumps({"fabric": topo.name, "time_scale": topo.time_scale,
                                "outcomes": [o.__dict__ for o in outcomes]}, indent=1))
    return path


def read_outcomes(path: Path) -> tuple[list[VariantOutcome], RunLabel]:
    """What write_outcomes wrote: the outcomes and the fabric's name and time scale."""
    from fabric.metrics.report import SavedRun

    data = json.loads(path.read_text())
    return ([VariantOutcome(**o) for o in data["outcomes"]],
            SavedRun(data["fabric"], data["time_scale"]))


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
                rows.append([o.run, f"{op} {format_size(o.size)}", "ok" if o.ok else "FAILED",
                             f"{_t(p.get('p50'))} / {_t(p.get('p99'))}",
                             format_rate(round(bw)) if bw else "-",
                             format_size(busiest), format_size(total)])
            continue
        bw = o.size * 8e9 / o.ns if o.ns else None
        rows.append([o.run, f"{o.variant} {format_size(o.size)}",
                     "ok" if o.ok else ("-" if o.note else "FAILED"),
                     _t(o.ns), format_rate(round(bw)) if bw else "-",
                     format_size(busiest), format_size(total)])
    head = (f"{topo.name}: fabric time (host ran {topo.time_scale:g}x slower); latency is "
            "p50 / p99 per op for load/store, completion otherwise; bandwidth = size / time "
            "(algorithm bandwidth for all-reduce); bytes from the counters of the links at "
            "memory switches; every figure measured on the fabric")
    return head + "\n" + format_table(rows, ["run", "variant", "check", "latency / completion",
                                             "bandwidth", "busiest link", "all links"],
                                      numeric=range(3, 7))


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
