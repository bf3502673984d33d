"""Check a plan against its graph and topology, from the plan alone, and name the first conflict.

The verifier shares no bookkeeping with the compiler: it recomputes slot lengths from the link
rates, arrival times from slot + delay, batch counts from nbytes, and checks every rule over
the plan's sends. It accepts any route (not only the compiler's shortest path) as long as the
hops chain from the transfer's source to its destination over links that exist.

Checks run in a fixed order (plan settings, each send's link and timing, completeness and hop
chains, hop timing, dependencies, link overlaps, makespan), so the same bad plan always names
the same conflict.
"""

from __future__ import annotations

import math

from fabric.errors import FabricError
from fabric.schedule.compiler import Plan, Send
from fabric.schedule.graph import TransferGraph
from fabric.schedule.topo import LpuTopology

__all__ = ["PlanConflict", "verify"]


class PlanConflict(FabricError):
    """A plan breaks a scheduling rule; the message names the sends involved."""


def _dir(direction: int) -> str:
    return "a->b" if direction == 0 else "b->a"


def _name(s: Send) -> str:
    return f"transfer {s.transfer} batch {s.batch} hop {s.hop}"


def _guard_needed(plan: Plan) -> int:
    # Recomputed here rather than imported, so a bug in the compiler's rule cannot hide.
    if plan.drift_ppm == 0:
        return plan.offset_ns
    if plan.resync_period_ns is None:
        raise PlanConflict(f"plan {plan.name}: {plan.drift_ppm} ppm clock drift without "
                           f"resyncs: no guard band can cover it")
    return math.ceil(round(2 * abs(plan.drift_ppm) * plan.resync_period_ns, 6) / 1e6) \
        + plan.offset_ns


def verify(plan: Plan, topo: LpuTopology, graph: TransferGraph) -> None:
    """Raise `PlanConflict` naming the first broken rule, or return None for a sound plan."""
    guard = plan.guard_ns
    if guard < 0:
        raise PlanConflict(f"plan {plan.name}: guard_ns is negative ({guard})")
    need = _guard_needed(plan)
    if guard < need:
        raise PlanConflict(f"plan {plan.name}: guard band {guard} ns is below the {need} ns "
                           f"that {plan.drift_ppm} ppm drift over a {plan.resync_period_ns} ns "
                           f"resync period (+{plan.offset_ns} ns offset) needs")
    bits = plan.vector_bytes * plan.batch_vectors * 8
    links = {link.id: link for link in topo.links}
    slot: dict[str, int] = {}
    for link in topo.links:
        slot[link.id] = -(-bits * 1_000_000_000 // link.rate_bps)  # exact ceil
        if plan.slot_ns.get(link.id, slot[link.id]) != slot[link.id]:
            raise PlanConflict(f"link {link.id}: plan slot is {plan.slot_ns[link.id]} ns but "
                               f"{plan.batch_bytes} B at {link.rate_bps} bit/s needs "
                               f"{slot[link.id]} ns")

    # 1. Each send on its own: known transfer, real link joining its ends, right arrival time.
    sends_of: dict[tuple[int, int], dict[int, Send]] = {}
    for s in plan.sends:
        try:
            tr = graph.transfer(s.transfer)
        except KeyError:
            raise PlanConflict(f"{_name(s)}: the graph has no transfer {s.transfer}") from None
        used = links.get(s.link)
        if used is None:
            raise PlanConflict(f"{_name(s)}: send uses link {s.link} that is not in the topology")
        if s.direction not in (0, 1):
            raise PlanConflict(f"{_name(s)}: direction must be 0 (a->b) or 1 (b->a), "
                               f"got {s.direction!r}")
        ends = (used.a, used.b) if s.direction == 0 else (used.b, used.a)
        if (s.src, s.dst) != ends:
            raise PlanConflict(f"{_name(s)}: send uses link {s.link} ({_dir(s.direction)}: "
                               f"{ends[0]} -> {ends[1]}) that does not join {s.src} and {s.dst}")
        if s.depart_ns < 0:
            raise PlanConflict(f"{_name(s)}: departs at {s.depart_ns} ns, before time 0")
        expect = s.depart_ns + slot[s.link] + used.delay_ns
        if s.arrive_ns != expect:
            raise PlanConflict(f"{_name(s)} on link {s.link}: arrives at {s.arrive_ns} ns but "
                               f"depart {s.depart_ns} + slot {slot[s.link]} + delay "
                               f"{used.delay_ns} = {expect} ns")
        nb = -(-tr.nbytes // plan.batch_bytes)
        if not 0 <= s.batch < nb:
            raise PlanConflict(f"{_name(s)}: transfer {tr.id} has only {nb} batches "
                               f"({tr.nbytes} B in {plan.batch_bytes} B batches)")
        seen = sends_of.setdefault((s.transfer, s.batch), {})
        if s.hop in seen:
            raise PlanConflict(f"{_name(s)} is scheduled twice (at {seen[s.hop].depart_ns} and "
                               f"{s.depart_ns} ns)")
        seen[s.hop] = s

    # 2. Completeness and hop chains; 3. hop timing. Also collect each transfer's first
    # departure and last arrival for the dependency check.
    first_depart: dict[int, int] = {}
    last_arrive: dict[int, int] = {}
    for tr in sorted(graph.transfers, key=lambda t: t.id):
        nb = -(-tr.nbytes // plan.batch_bytes)
        for b in range(nb):
            hops = sends_of.get((tr.id, b))
            if not hops:
                raise PlanConflict(f"transfer {tr.id} batch {b} is missing "
                                   f"({tr.src} -> {tr.dst} has {nb} batches)")
            at = tr.src
            prev: Send | None = None
            for h in range(len(hops)):
                hs = hops.get(h)
                if hs is None:
                    raise PlanConflict(f"transfer {tr.id} batch {b} hop {h} is missing "
                                       f"(hops {sorted(hops)} are scheduled)")
                if hs.src != at:
                    where = "the transfer's source" if prev is None else f"hop {h - 1}'s end"
                    raise PlanConflict(f"{_name(hs)} leaves {hs.src} but the batch is at {at} "
                                       f"({where})")
                if prev is not None and hs.depart_ns < prev.arrive_ns + guard:
                    extra = f" + guard {guard} ns" if guard else ""
                    raise PlanConflict(f"{_name(hs)} departs at {hs.depart_ns} ns before hop "
                                       f"{h - 1} arrives at {prev.arrive_ns} ns{extra}")
                at = hs.dst
                prev = hs
            if at != tr.dst:
                raise PlanConflict(f"transfer {tr.id} batch {b} ends at {at}, not at its "
                                   f"destination {tr.dst}")
            h0 = hops[0].depart_ns
            first_depart[tr.id] = min(first_depart.get(tr.id, h0), h0)
            assert prev is not None
            last_arrive[tr.id] = max(last_arrive.get(tr.id, prev.arrive_ns), prev.arrive_ns)

    # 4. Dependencies: a transfer leaves only after each dep has fully arrived (+ guard).
    for tr in sorted(graph.transfers, key=lambda t: t.id):
        for d in tr.deps:
            if first_depart[tr.id] < last_arrive[d] + guard:
                extra = f" + guard {guard} ns" if guard else ""
                raise PlanConflict(f"transfer {tr.id} departs at {first_depart[tr.id]} ns "
                                   f"before its dependency {d} arrives at {last_arrive[d]} "
                                   f"ns{extra}")

    # 5. Link overlaps: on each direction, each send holds [depart, depart + slot + guard).
    per_channel: dict[tuple[str, int], list[Send]] = {}
    for s in plan.sends:
        per_channel.setdefault((s.link, s.direction), []).append(s)
    for (link_id, direction), group in sorted(per_channel.items()):
        group.sort(key=lambda s: (s.depart_ns, s.transfer, s.batch, s.hop))
        hold = slot[link_id] + guard
        for x, y in zip(group, group[1:], strict=False):
            if y.depart_ns < x.depart_ns + hold:
                raise PlanConflict(
                    f"link {link_id} ({_dir(direction)}): transfer {x.transfer} batch {x.batch} "
                    f"at {x.depart_ns}-{x.depart_ns + hold} ns overlaps transfer {y.transfer} "
                    f"batch {y.batch} at {y.depart_ns}-{y.depart_ns + hold} ns"
                    + (f" (slot {slot[link_id]} ns + guard {guard} ns)" if guard else ""))

    # 6. The advertised makespan is the last arrival.
    last = max((s.arrive_ns for s in plan.sends), default=0)
    if plan.makespan_ns != last:
        raise PlanConflict(f"plan {plan.name}: makespan is {plan.makespan_ns} ns but the last "
                           f"send arrives at {last} ns")
