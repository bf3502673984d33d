"""Apply a file's `events:` timeline during a run, and say what each event did to the traffic.

`Timeline.run(t0)` runs beside the run's nodes from the shared start time: each step at its
fabric time (times `time_scale` on the host clock) through `fabric.net.live` (link down/up,
property changes, node down/up), and, `events.detect` after any change of a link's state,
routing reconverges over the links up then (`fabric.net.routing`). `restore()` puts the
fabric back as the file describes it (links up, file values, the plan's routes), also after
an error, so a kept fabric or the next variant starts clean.

`recovery(...)` reads the run's records against the applied log: per failure, the transfers
in flight whose shortest paths can cross the failed link, how long until each got a chunk
through again (first chunk completed after the failure), and their completion times against
those of the transfers the failure did not touch. All of it is measured on the fabric.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from fabric.errors import FabricError
from fabric.metrics.records import ChunkRecord, TransferRecord
from fabric.net.lifecycle import FabricState
from fabric.plan import FabricPlan
from fabric.topology.document import Topology
from fabric.topology.events import Events, EventStep, down_after, links_down
from fabric.units import format_time

__all__ = ["Timeline", "put_back", "recovery", "render_events", "switch_spikes",
           "timeline_for"]


@dataclass
class Timeline:
    state: FabricState
    plan: FabricPlan
    topo: Topology
    events: Events
    log: list[dict[str, Any]] = field(default_factory=list)
    _applied: list[EventStep] = field(default_factory=list)
    # per direction (sender, receiver): the properties the timeline changed
    _set_fields: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    _down_before: set[frozenset[str]] = field(default_factory=set)  # by `fabric link down`
    _rerouted: bool = False

    def __post_init__(self) -> None:
        from fabric.net.routing import links_down_now

        self._down_before = links_down_now(self.state)
        self._converging = trio.Lock()

    async def run(self, t0_ns: int) -> None:
        """Every step at its time; converges `detect` after each change of link state."""
        ts = self.topo.time_scale
        async with trio.open_nursery() as nursery:
            for step in self.events.steps:
                due = t0_ns + round(step.at_ns * ts)
                await trio.sleep(max(0.0, (due - time.monotonic_ns()) / 1e9))
                applied = time.monotonic_ns()
                await trio.to_thread.run_sync(self._apply, step)
                self._applied.append(step)
                self.log.append({**step.to_dict(), "applied_ns": applied,
                                 "done_ns": time.monotonic_ns(), "late_ns": applied - due})
                if step.action != "set":
                    nursery.start_soon(self._converge_after, applied, step)

    async def _converge_after(self, changed_ns: int, step: EventStep) -> None:
        await trio.sleep(self.events.detect_ns * self.topo.time_scale / 1e9)
        # one reconvergence at a time, each to the links as they are when it starts (two at
        # once could finish out of order and leave routes around a link that is up again)
        async with self._converging:
            t = time.monotonic_ns()
            down = links_down(self._applied, self.topo.links)
            change = await trio.to_thread.run_sync(self._converge, down)
        self.log.append({"action": "converge", "after": step.label, "line": step.line,
                         "at_ns": step.at_ns + self.events.detect_ns, "applied_ns": t,
                         "done_ns": time.monotonic_ns(), "links_down": sorted(
                             "--".join(sorted(k)) for k in down),
                         "routes_changed": change.total, "switch_tables": change.switches})

    def _apply(self, step: EventStep) -> None:
        import fabric.net.live as live

        if step.action == "down" and step.link:
            live.link_down(self.state, *step.link)
        elif step.action == "up" and step.link:
            live.link_up(self.state, *step.link)
        elif step.action == "node_down" and step.node:
            live.node_down(self.state, step.node)
        elif step.action == "node_up" and step.node:
            live.node_up(self.state, step.node)
        elif step.action == "set" and step.link:
            props: dict[str, Any] = dict(step.props)
            live.link_set(self.state, *step.link, direction=step.direction, **props)
            a, b = step.link
            for pair in ([(a, b)] if step.direction == "a-b" else [(b, a)]
                         if step.direction == "b-a" else [(a, b), (b, a)]):
                self._set_fields.setdefault(pair, set()).update(props)

    def _converge(self, down: set[frozenset[str]]) -> Any:  # noqa: ANN401 - a RouteChange
        from fabric.net.routing import reroute

        self._rerouted = True
        return reroute(self.state, self.plan, down | self._down_before)

    def restore(self) -> list[str]:
        """The fabric as the file describes it again; returns what could not be restored."""
        import fabric.net.live as live

        problems = []
        links, nodes = down_after(self._applied)
        for node in sorted(nodes):
            try:
                live.node_up(self.state, node)
            except FabricError as e:
                problems.append(str(e))
        for key in links:
            a, b = sorted(key)
            try:
                live.link_up(self.state, a, b)
            except FabricError as e:
                problems.append(str(e))
        for lp in self.plan.links:
            for shape, queue, (x, y) in (
                    (lp.link.forward, lp.a_queue_bytes, (lp.a.node, lp.b.node)),
                    (lp.link.reverse, lp.b_queue_bytes, (lp.b.node, lp.a.node))):
                changed = self._set_fields.get((x, y))
                if not changed:
                    continue
                # the file's values of what the timeline changed; the queue as built (its
                # default is a bandwidth-delay product, which time scaling keeps in bytes)
                values = {f: queue if f == "queue_bytes" else getattr(shape, f)
                          for f in changed}
                values = {f: v for f, v in values.items() if v is not None}
                try:
                    live.link_set(self.state, x, y, direction="a-b", **values)
                except FabricError as e:
                    problems.append(str(e))
        if self._rerouted:
            try:
                self._converge(set())
            except FabricError as e:
                problems.append(str(e))
        return problems


def timeline_for(state: FabricState, topo: Topology, plan: FabricPlan | None, timeout: float
                 ) -> Timeline | None:
    """The file's event timeline for a run, or None; FabricError when a step is timed after
    the run's timeout (it could never apply)."""
    events = topo.events
    if events is None or not events.steps:
        return None
    last = events.steps[-1]
    if last.at_ns * topo.time_scale / 1e9 >= timeout:
        raise FabricError(f"{topo.source}:{last.line}: events.timeline: {last.label} at "
                          f"{format_time(last.at_ns)} (fabric time; "
                          f"{last.at_ns * topo.time_scale / 1e9:.3g} s on this host) comes "
                          f"after the run's timeout ({timeout:g} s): raise --timeout")
    if plan is None:
        from fabric.plan import plan_fabric

        plan = plan_fabric(topo, backend=state.backend, run_id=state.run_id)
    return Timeline(state, plan, topo, events)


def put_back(timeline: Timeline) -> list[str]:
    """`timeline.restore()` after a run, also after its error: what could not be put back,
    also printed (a run that failed never reports it), and never raising over the run's own
    error."""
    try:
        problems = timeline.restore()
    except Exception as e:  # noqa: BLE001 - never hides the run's own error
        problems = [f"{type(e).__name__}: {e}"]
    for problem in problems:
        print(f"fabric: after the events, not put back: {problem}", file=sys.stderr)
    return problems


# ---- what the events did -------------------------------------------------------------------


def recovery(log: list[dict[str, Any]], topo: Topology, transfers: list[TransferRecord],
             chunks: list[ChunkRecord], chunk_receivers: list[str],
             links: dict[str, Any] | None = None,
             counters: dict[str, list[tuple[int, dict[str, int]]]] | None = None,
             ) -> dict[str, Any]:
    """Per failure (a link or node going down): the transfers in flight then whose shortest
    paths can cross it, the time until each got a chunk through again, the completion times
    of the transfers it touched against those it did not, and what the transports resent
    from it until the next failure (`counters`: each node's retransmission counters over
    time, on the runner's clock). Times in fabric ns."""
    from fabric.topology.graph import adjacency, search

    ts = topo.time_scale
    adj = adjacency(topo.links)
    dist: dict[str, dict[str, int]] = {}

    def hops(a: str) -> dict[str, int]:
        if a not in dist:
            dist[a] = search(a, lambda n: adj.get(n, ())).hops
        return dist[a]

    def crosses(src: str, dst: str, x: str, y: str) -> bool:
        d = hops(src).get(dst)
        if d is None:
            return False
        for p, q in ((x, y), (y, x)):
            hp, hq = hops(src).get(p), hops(q).get(dst)
            if hp is not None and hq is not None and hp + 1 + hq == d:
                return True
        return False

    from fabric.metrics.records import parse_links

    queues = [(f"{lk.id} {'->' if name == 'forward' else '<-'}", c.samples)
              for lk in parse_links(links) for name, c in lk.directions() if c.samples]
    lat: dict[tuple[str, int, str], list[int]] = {}
    for c, dst in zip(chunks, chunk_receivers, strict=True):
        if c.ok:
            lat.setdefault((c.flow, c.request, dst), []).append(c.latency_ns)
    done_at: dict[tuple[str, int, str], list[int]] = {}
    for c, dst in zip(chunks, chunk_receivers, strict=True):
        if c.ok:
            done_at.setdefault((c.flow, c.request, dst), []).append(c.t_last_ns)
    for v in done_at.values():
        v.sort()
    events = []
    failures = sorted(e["applied_ns"] for e in log if e["action"] in ("down", "node_down"))
    for entry in log:
        if entry["action"] not in ("down", "node_down"):
            continue
        t = entry["applied_ns"]
        until = min((f for f in failures if f > t), default=None)
        failed = [tuple(entry["link"])] if entry["action"] == "down" else [
            (lk.a, lk.b) for lk in topo.links if entry["node"] in (lk.a, lk.b)]
        in_flight = [r for r in transfers if r.t_start_ns and r.t_start_ns <= t
                     and (not r.t_done_ns or r.t_done_ns > t)]
        touched = [r for r in in_flight
                   if any(crosses(r.src, r.dst, x, y) for x, y in failed)]
        # routing moved at this failure's reconvergence; chunks that complete before it may
        # have been past the failed link already (queued beyond it), so the stall that
        # counts is the longest gap in chunk completions that begins by then
        moved = _routing_moved(log, entry)
        waits = []
        stuck = []
        for r in touched:
            after = [x for x in done_at.get((r.flow, r.request, r.dst), []) if x > t]
            if not after:
                stuck.append(f"{r.flow}#{r.request}")
                continue
            points = [t, *after]
            gaps = [(b - a, b) for a, b in zip(points, points[1:], strict=False)
                    if moved is None or a <= moved]
            waits.append((max(gaps)[1] - t) / ts)
        touched_ids = {id(r) for r in touched}
        others = [r for r in transfers if r.status == "ok" and id(r) not in touched_ids]
        # what the failed links dropped while down (the engine counts it; over the whole run,
        # so events on the same link share it; None where the backend does not count it)
        down = [d for x, y in failed for lid in (f"{x}--{y}", f"{y}--{x}")
                for d in ((links or {}).get("links", {}).get(lid) or {}).values()]

        def count(key: str, down: list[dict[str, Any]] = down) -> int | None:
            got = [int(d[key]) for d in down if isinstance(d.get(key), int)]
            return sum(got) if got else None
        events.append({
            "event": entry["label"], "line": entry["line"], "at_ns": entry["at_ns"],
            "transfers_in_flight": len(in_flight), "transfers_touched": len(touched),
            "recovery_ns": max(waits) if waits else None,
            "recovery_p50_ns": float(np.percentile(waits, 50)) if waits else None,
            "never_recovered": stuck,
            "packets_dropped_down": count("drops_down"),
            "bytes_dropped_down": count("bytes_dropped_down"),
            "bytes_lost_in_flight": count("bytes_lost_in_flight"),
            "fct_touched_p50_ns": _pct([r for r in touched if r.status == "ok"], 50, ts),
            "fct_touched_p99_ns": _pct([r for r in touched if r.status == "ok"], 99, ts),
            "fct_others_p50_ns": _pct(others, 50, ts),
            "fct_others_p99_ns": _pct(others, 99, ts),
            "chunk_touched_p99_ns": _lat(touched, lat, 99, ts),
            "chunk_others_p99_ns": _lat(others, lat, 99, ts),
            **_queue_spike(queues, t, moved),
            "retransmitted": resent(counters or {}, t, until),
        })
    rec = [e["recovery_ns"] for e in events if e["recovery_ns"] is not None]
    return {"events": events, "max_ns": max(rec) if rec else None,
            "retransmitted_before": resent(counters or {}, None, failures[0])
            if failures else None,
            "mean_ns": float(np.mean(rec)) if rec else None,
            "note": "recovery: per transfer in flight whose shortest paths can cross the "
                    "failed link, from the failure to the end of its longest stall in chunk "
                    "completions that began by routing's reaction (chunks already past the "
                    "link still arrive first); the worst is the event's; measured on the "
                    "fabric, in fabric time"}


def resent(counters: dict[str, list[tuple[int, dict[str, int]]]], start: int | None,
           end: int | None) -> dict[str, int] | None:
    """What every node's transports retransmitted from `start` to `end` (the runner's
    clock; None: the run's start or end), summed: each counter's last sample at or before
    `end` minus its last at or before `start` (0 before its first). None without samples."""
    if not counters:
        return None

    def at(series: list[tuple[int, dict[str, int]]], t: int | None, key: str) -> int:
        if t is None:
            return series[-1][1].get(key, 0) if series else 0
        got = 0
        for when, values in series:
            if when > t:
                break
            got = values.get(key, 0)
        return got

    out: dict[str, int] = {}
    for series in counters.values():
        keys = {k for _, values in series for k in values}
        for key in keys:
            before = 0 if start is None else at(series, start, key)
            out[key] = out.get(key, 0) + at(series, end, key) - before
    return out


def _routing_moved(log: list[dict[str, Any]], failure: dict[str, Any]) -> int | None:
    """When routing moved after `failure` (its first reconvergence, the runner's clock), or
    None when it never did during the run."""
    return min((e["applied_ns"] for e in log if e["action"] == "converge"
                and e.get("after") == failure["label"]
                and e["applied_ns"] >= failure["applied_ns"]), default=None)


def switch_spikes(rec: dict[str, Any], log: list[dict[str, Any]], started_ns: int, ts: float,
                  samples: dict[str, list[list[Any]]],
                  pauses: dict[str, list[tuple[float, str]]]) -> None:
    """Add to each failure of `rec` (from `recovery`) what it did inside the RoCE switches,
    over its window (from the failure to the end of its recovery, at least until routing
    moved): the PFC pauses they sent, against as many as the same length of time before
    the failure held on average, and their deepest queue, against the deepest before.
    `samples`: per switch, [fabric ns since the run's start, [queue bytes per port]];
    `pauses`: per switch, (fabric ns since the run's start, ingress port) per pause sent.
    Measured in the switches; times in fabric ns."""
    # recovery() gives one event per failure, in the log's order (a flap's failures share
    # a label, so they are paired by order, not by name)
    failures = [e for e in log if e["action"] in ("down", "node_down")]
    for ev, entry in zip(rec.get("events", []), failures, strict=True):
        t = (entry["applied_ns"] - started_ns) / ts
        m = _routing_moved(log, entry)
        moved = t if m is None else (m - started_ns) / ts
        # the window's length exactly (no rounding through t): never shorter than recovery
        span = max(float(ev.get("recovery_ns") or 0), moved - t, 1.0)
        end = t + span
        sent = [(w, sw, port) for sw, rows in pauses.items() for w, port in rows]
        during = [x for x in sent if t <= x[0] <= end]
        before = [x for x in sent if x[0] < t]
        by_port: dict[str, int] = {}
        for _, sw, port in during:
            by_port[f"{sw}:{port}"] = by_port.get(f"{sw}:{port}", 0) + 1
        q_during = [(max(q), sw) for sw, rows in samples.items() for w, q in rows
                    if t <= w <= end and q]
        q_before = [max(q) for rows in samples.values() for w, q in rows if w < t and q]
        ev.update({
            "window_ns": span,
            "pauses_sent": len(during),
            "pauses_before_same_span": len(before) * span / t if t > 0 else None,
            "pauses_by_port": dict(sorted(by_port.items(), key=lambda kv: -kv[1])[:5]),
            "switch_queue_max_bytes": max(q_during)[0] if q_during else None,
            "switch_queue_max_switch": max(q_during)[1] if q_during else None,
            "switch_queue_before_max_bytes": max(q_before) if q_before else None,
        })


def _lat(records: list[TransferRecord], lat: dict[tuple[str, int, str], list[int]], q: float,
         ts: float) -> float | None:
    """A percentile of the chunk latencies of `records`' transfers, in fabric ns."""
    vals = [v / ts for r in records for v in lat.get((r.flow, r.request, r.dst), [])]
    return float(np.percentile(vals, q)) if vals else None


def _queue_spike(queues: list[tuple[str, Any]], t: int, moved: int | None) -> dict[str, Any]:
    """The deepest link queue (engine samples, bytes) from the failure until routing moved,
    against the deepest before the failure: where the failure piled traffic up."""
    end = moved if moved is not None else t
    before = max((x.queue_bytes for _, s in queues for x in s if x.t_ns < t), default=None)
    during = [(x.queue_bytes, label) for label, s in queues for x in s if t <= x.t_ns <= end]
    if not during:
        return {"queue_max_bytes": None, "queue_max_link": None,
                "queue_before_max_bytes": before}
    q, label = max(during)
    return {"queue_max_bytes": q, "queue_max_link": label, "queue_before_max_bytes": before}


def _pct(records: list[TransferRecord], q: float, ts: float) -> float | None:
    fcts = [(r.t_done_ns - r.t_start_ns) / ts for r in records if r.t_done_ns and r.t_start_ns]
    return float(np.percentile(fcts, q)) if fcts else None


def render_events(log: list[dict[str, Any]], rec: dict[str, Any], ts: float,
                  t0_ns: int) -> list[str]:
    """The event lines of a run's printout."""
    out = []
    for e in log:
        when = format_time(round((e["applied_ns"] - t0_ns) / ts))
        if e["action"] == "converge":
            out.append(f"  {when:>10}  routing converged after {e['after']}: "
                       f"{e['routes_changed']} routes, {e['switch_tables']} switch tables "
                       f"(links down: {', '.join(e['links_down']) or 'none'})")
        else:
            what = _values(e.get("props") or {})
            way = e.get("direction")
            out.append(f"  {when:>10}  {e['label']}{f': {what}' if what else ''}"
                       f"{f' ({way})' if way not in (None, 'both') else ''} (line {e['line']})")
    for ev in rec.get("events", []):
        r = ev["recovery_ns"]
        got = (f"recovered in {format_time(round(r))}" if r is not None
               else "nothing recovered" if ev["never_recovered"]
               else "no transfer it touched was in flight")
        if ev["never_recovered"]:
            got += f"; never recovered: {', '.join(ev['never_recovered'][:4])}"
        if ev.get("packets_dropped_down"):
            from fabric.units import format_size

            got += f"; the link dropped {ev['packets_dropped_down']} packets while down"
            if ev.get("bytes_dropped_down") is not None:
                got += (f" ({format_size(ev['bytes_dropped_down'])}, of which "
                        f"{format_size(ev.get('bytes_lost_in_flight') or 0)} in flight as it "
                        "failed)")
        again = _resent_words(ev.get("retransmitted"))
        if again:
            got += f"; resent until the next failure or the end: {again}"
        if ev.get("pauses_sent") is not None:
            before = ev.get("pauses_before_same_span")
            got += (f"; RoCE switches sent {ev['pauses_sent']} PFC pauses in its "
                    f"{format_time(round(ev['window_ns']))}"
                    + (f" (as long before it: {before:.3g})" if before is not None else ""))
            if ev.get("pauses_by_port"):
                got += " most at " + ", ".join(f"{p} ({n})" for p, n in
                                                list(ev["pauses_by_port"].items())[:3])
        if ev.get("switch_queue_max_bytes"):
            from fabric.units import format_size

            sb = ev.get("switch_queue_before_max_bytes")
            got += (f"; deepest switch queue {format_size(ev['switch_queue_max_bytes'])} in "
                    f"{ev['switch_queue_max_switch']}" +
                    (f" ({format_size(sb)} before)" if sb is not None else ""))
        if ev.get("queue_max_bytes"):
            from fabric.units import format_size

            before = ev.get("queue_before_max_bytes")
            got += (f"; deepest queue until routing moved {format_size(ev['queue_max_bytes'])}"
                    f" on {ev['queue_max_link']}" +
                    (f" ({format_size(before)} before)" if before is not None else ""))
        out.append(f"  {ev['event']}: {ev['transfers_touched']} of "
                   f"{ev['transfers_in_flight']} transfers in flight could cross it; {got}")
    return out


def _resent_words(counts: dict[str, int] | None) -> str:
    """`2.5 MiB by TCP, 310 RoCE packets` from a `resent` result (what is 0 left out)."""
    from fabric.units import format_size

    if not counts:
        return ""
    words = []
    if counts.get("tcp_bytes_retrans"):
        words.append(f"{format_size(counts['tcp_bytes_retrans'])} by TCP")
    for key, what in (("roce_retransmitted", "RoCE"), ("udp_retransmitted", "UDP")):
        if counts.get(key):
            words.append(f"{counts[key]} {what} packets")
    return ", ".join(words) or "nothing"


def _values(props: dict[str, int]) -> str:
    """A `set` step's new values, in the file's words."""
    from fabric.units import format_rate, format_size

    shown = {"rate_bps": lambda v: f"rate {format_rate(v)}",
             "delay_ns": lambda v: f"delay {format_time(v)}",
             "jitter_ns": lambda v: f"jitter {format_time(v)}",
             "loss_ppm": lambda v: f"loss {v / 10_000:g}%",
             "queue_bytes": lambda v: f"queue {format_size(v)}",
             "ecn_bytes": lambda v: f"ecn {format_size(v)}"}
    return ", ".join(shown[k](v) for k, v in props.items() if k in shown and v is not None)
