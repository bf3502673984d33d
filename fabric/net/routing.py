"""Routing that reacts like a fabric's would: after links fail or come back, every node's
routes are computed again over the links that are up (the same shortest paths and ECMP sets as
at bring-up, `plan.compute_routes`) and the difference is installed: the kernel routes of every
namespace, aggregated into blocks of loopbacks as at bring-up (routes replaced, a destination
no path reaches withdrawn, one reachable again restored), and each RoCE switch process's
forwarding table (written to its routes file, then SIGUSR1: the switch loads it and hashes
flows over the new ECMP sets).

The caller decides when: `fabric run`'s event timeline calls `converge` a detection time
(`events.detect`, modelling BFD or the routing protocol's timers) after the links change.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2.netlink.exceptions import NetlinkError

from ..errors import FabricError
from ..plan import AddRoute, FabricPlan, aggregate_routes, compute_routes, switch_table
from .kernel import KernelError, LiveKernel
from .lifecycle import FabricState, switch_routes_path

__all__ = ["ROUTING_FILE", "RouteChange", "converge", "links_down_now", "reroute",
           "routes_without"]

ROUTING_FILE = "routing.json"  # in the state directory: the links routes were last computed without


@dataclass(frozen=True)
class RouteChange:
    # kernel routes, each to a destination or a block of them (`plan.aggregate_routes`):
    replaced: int  # routes whose next hops changed
    withdrawn: int  # routes removed: no longer reached, or their block split or merged
    restored: int  # routes added: reached again, or a block split or merged
    switches: int  # RoCE switch tables reloaded

    @property
    def total(self) -> int:
        return self.replaced + self.withdrawn + self.restored


def routes_without(plan: FabricPlan, down: Iterable[frozenset[str]]) -> list[AddRoute]:
    """The fabric's routes with the links in `down` (each as its two node names) failed."""
    gone = set(down)
    return compute_routes(plan.nodes, [lp for lp in plan.links
                                       if frozenset((lp.a.node, lp.b.node)) not in gone])


def converge(state: FabricState, plan: FabricPlan, old: list[AddRoute],
             new: list[AddRoute]) -> RouteChange:
    """Install `new` where it differs from `old` (what is installed now), both one route per
    destination: the kernel's are their aggregates (`plan.aggregate_routes`), as at bring-up,
    and the RoCE switches' tables are built from them as they are. FabricError if a namespace
    refuses a route (the fabric is then between the two: the caller reports it)."""
    pool = plan.topology.loopback_subnet
    before = {(r.netns, r.dst): r for r in aggregate_routes(old, plan.nodes, pool)}
    after = {(r.netns, r.dst): r for r in aggregate_routes(new, plan.nodes, pool)}
    replaced = withdrawn = restored = 0
    try:
        with LiveKernel() as k:
            for key, r in after.items():
                was = before.get(key)
                if was is None:
                    k.restore_route(r)
                    restored += 1
                elif was.nexthops != r.nexthops:
                    k.restore_route(r)
                    replaced += 1
            for key, r in before.items():
                if key not in after:
                    k.withdraw_route(r)
                    withdrawn += 1
    except (KernelError, NetlinkError, OSError) as e:
        raise FabricError(f"routing could not reconverge: {e}") from None
    switches = 0
    for sw in plan.switches:
        if plan.nodes[sw].netns not in {r.netns for r in (*old, *new)}:
            continue
        if _table(plan, sw, old) == (table := _table(plan, sw, new)):
            continue
        _reload_switch(state, sw, table)
        switches += 1
    return RouteChange(replaced, withdrawn, restored, switches)


def _table(plan: FabricPlan, sw: str, routes: list[AddRoute]) -> list[list[object]]:
    return [[dst, list(idx)] for dst, idx in switch_table(sw, plan, routes)]


def _reload_switch(state: FabricState, sw: str, table: list[list[object]]) -> None:
    """Hand RoCE switch `sw` its new table: the file first (atomically), then the signal."""
    path = switch_routes_path(state.dir, sw)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table))
    tmp.replace(path)
    pid = state.switch_pids.get(sw)
    if pid:
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass


def reroute(state: FabricState, plan: FabricPlan, down: Iterable[frozenset[str]]
            ) -> RouteChange:
    """Routes over every link but those in `down`, installed where they differ from what the
    last reroute installed (kept in the state directory, so `fabric link down` in one process
    and `fabric link up` in the next agree on what is installed)."""
    path = state.dir / ROUTING_FILE
    try:
        before = [frozenset(pair) for pair in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        before = []
    now = sorted(set(down), key=sorted)
    change = converge(state, plan, routes_without(plan, before), routes_without(plan, now))
    if now:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([sorted(pair) for pair in now]))
        tmp.replace(path)
    else:
        path.unlink(missing_ok=True)
    return change


def links_down_now(state: FabricState) -> set[frozenset[str]]:
    """The links of the running fabric that are down now (read back, `net.live.link_show`)."""
    from .live import link_show

    return {frozenset((row["a"], row["b"])) for row in link_show(state) if not row["up"]}
