"""Change, take down and bring back the links and nodes of a running fabric, on both backends.

    link_set(state, "a", "b", delay_ns=20_000_000)     # fabric units, as `Shape`'s fields
    link_down(state, "a", "b"); link_up(state, "a", "b")
    node_down(state, "spine-0"); node_up(state, "spine-0")
    link_show(state)                                     # what is in force now, read back

Values are in fabric units (`topology.model.Shape`: bits/s, ns, ppm, bytes) and are scaled by
the fabric's `time_scale` into host units exactly as the plan does (`Shape.scaled`); what
`link_show` reports is read back from where it is realised (the link engine's models, the
kernel's qdiscs) and scaled back to fabric units.

Userspace backend: the link engine's control socket (`engine.control_request`) takes new
shapes and up/down between packets; where the kernel's tbf on the TUN shapes a link's rate
(links the engine does not serialise), the rate and queue change there. A link that is down
drops every packet that arrives and what it held (`LinkDirection.set_up`), counted as
`drops_down`; the kernel's routes are left alone (the engine is the wire).

netem backend: the netem and tbf qdiscs change in place (`kernel.LiveKernel.set_egress`); a
link goes down by taking both veth ends down, which resets their qdiscs and makes the kernel
withdraw the routes through them at once; they are kept in `live.json` in the fabric's state
directory and put back when the link comes up.

Every change is checked before anything is touched (unknown node or link, a value the backend
cannot realise); one that fails half-way is rolled back to what was in force before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from ..errors import FabricError
from ..plan import MAX_DELAY_NS, TBF_MAX_BPS, TBF_MAX_BYTES, AddRoute
from ..topology.linkprops import LINK_PROPERTIES, shape_conflict
from ..topology.model import Shape
from ..topology.model import queue_bytes as default_queue_bytes
from ..units import format_rate, format_size, format_time
from .engine import control_request, shape_from_dict
from .lifecycle import FabricState

DIRECTIONS = ("a-b", "b-a", "both")
LIVE_FILE = "live.json"  # routes kept while links are down, links each node_down took down
_ENGINE_DIR = {False: ("forward", "reverse"), True: ("reverse", "forward")}
# link_set's keywords -> the link property (linkprops) each one is
_PROPERTY_OF = {"rate_bps": "rate", "delay_ns": "delay", "jitter_ns": "jitter",
                "loss_ppm": "loss", "queue_bytes": "queue", "ecn_bytes": "ecn"}


class LiveError(FabricError):
    """A change to a running fabric was refused or failed (and was rolled back)."""


@dataclass(frozen=True)
class _Link:
    """Link `id` between the nodes a and b as the caller named them; `flipped` when the file
    has them the other way round. `ends[0]` is a's (netns, dev), `ends[1]` b's."""

    id: str
    a: str
    b: str
    flipped: bool
    ends: tuple[tuple[str, str], tuple[str, str]]

    def engine_direction(self, direction: str) -> str:
        """The engine's name ("forward": the file's a -> b) of "a-b" or "b-a"."""
        return _ENGINE_DIR[self.flipped][0 if direction == "a-b" else 1]

    def sender(self, direction: str) -> tuple[str, str]:
        return self.ends[0] if direction == "a-b" else self.ends[1]


# ---- naming ----------------------------------------------------------------------------------


def _node_of(state: FabricState) -> dict[str, str]:
    return {info["netns"]: name for name, info in state.nodes.items()}


def _check_node(state: FabricState, node: str) -> None:
    if node not in state.nodes:
        raise LiveError(f"fabric {state.name} has no node {node!r} (nodes: "
                        f"{', '.join(state.nodes) or 'none'})")


def _links(state: FabricState) -> list[_Link]:
    """Every link of the fabric, in the file's order and direction."""
    node = _node_of(state)
    out = []
    for lid, ends in state.links.items():
        a, b = (ends["a"][0], ends["a"][1]), (ends["b"][0], ends["b"][1])
        out.append(_Link(lid, node.get(a[0], a[0]), node.get(b[0], b[0]), False, (a, b)))
    return out


def _link(state: FabricState, a: str, b: str) -> _Link:
    """The link between `a` and `b`, ends in the caller's order; one line naming what exists
    when there is none."""
    _check_node(state, a)
    _check_node(state, b)
    for lk in _links(state):
        if (lk.a, lk.b) == (a, b):
            return lk
        if (lk.a, lk.b) == (b, a):
            return _Link(lk.id, a, b, True, (lk.ends[1], lk.ends[0]))
    shown = ", ".join(f"{lk.a}-{lk.b}" for lk in _links(state)[:12])
    more = "" if len(state.links) <= 12 else f" and {len(state.links) - 12} more"
    raise LiveError(f"fabric {state.name} has no link between {a} and {b} (links: "
                    f"{shown or 'none'}{more})")


@contextlib.contextmanager
def _locked(state: FabricState) -> Iterator[dict[str, Any]]:
    """Serialise live changes to one fabric; yields `live.json`'s content, saved after, also
    when the change failed part-way (what it did by then, e.g. the links a failed `node_down`
    took, stays recorded for `node_up`)."""
    state.dir.mkdir(parents=True, exist_ok=True)
    with open(state.dir / "live.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        path = state.dir / LIVE_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        data.setdefault("routes", {})
        data.setdefault("node_down", {})
        try:
            yield data
        finally:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(path)


# ---- reading what is in force ----------------------------------------------------------------


def _engine(state: FabricState, request: dict[str, Any]) -> dict[str, Any]:
    path = str(state.dir / "engine.sock")
    try:
        reply = control_request(path, request)
    except OSError as exc:
        raise LiveError(f"fabric {state.name}: the link engine does not answer on {path} "
                        f"({exc}); was it started by this version? `fabric down` and up again"
                        ) from None
    if not reply.get("ok"):
        raise LiveError(f"fabric {state.name}: link engine: {reply.get('error')}")
    return reply


@dataclass(frozen=True)
class _Direction:
    """One direction as it is in force (host units)."""

    shape: Shape
    queue_bytes: int
    up: bool
    kernel_rate: bool  # the kernel's tbf shapes its rate (else the engine or netem's tree)
    realised_by: str
    counters: dict[str, int]


def _read(state: FabricState, links: list[_Link]) -> dict[tuple[str, str], _Direction]:
    """(link id, "forward"|"reverse") -> what is in force, read back from the engine and the
    kernel."""
    from .kernel import LiveKernel

    out: dict[tuple[str, str], _Direction] = {}
    if state.backend == "userspace":
        shown = _engine(state, {"op": "show"})["links"]
        with LiveKernel() as k:
            for lk in links:
                info = shown.get(lk.id)
                if info is None:
                    raise LiveError(f"link {lk.id}: the link engine does not relay it")
                file_ends = lk.ends if not lk.flipped else (lk.ends[1], lk.ends[0])
                for name, (ns, dev) in zip(("forward", "reverse"), file_ends, strict=True):
                    d = info[name]
                    shape = shape_from_dict(d["shape"])
                    stats = d["stats"]
                    counters = {key: stats[key] for key in (
                        "packets_in", "bytes_in", "packets_out", "bytes_out", "drops_loss",
                        "drops_queue", "drops_down", "ecn_marks", "held_packets")}
                    kernel_rate = not info["rate_in_engine"]
                    queue = shape.queue_bytes or default_queue_bytes(shape)
                    realised = "engine"
                    if kernel_rate:
                        eg = k.read_egress(ns, dev)
                        tbf = eg["tbf"]
                        shape = replace(shape, rate_bps=tbf["rate_bps"] if tbf else None)
                        if tbf:
                            queue = tbf["queue_bytes"]
                            shape = replace(shape, queue_bytes=queue, queue_packets=None)
                            realised = "engine+tbf"
                            counters["drops_tbf"] = eg["stats"].get("drops", 0)
                    out[(lk.id, name)] = _Direction(shape, queue, bool(d["up"]), kernel_rate,
                                                    realised, counters)
        return out
    with LiveKernel() as k:
        for lk in links:
            file_ends = lk.ends if not lk.flipped else (lk.ends[1], lk.ends[0])
            for name, (ns, dev) in zip(("forward", "reverse"), file_ends, strict=True):
                eg = k.read_egress(ns, dev)
                netem, tbf = eg["netem"] or {}, eg["tbf"]
                shape = Shape(rate_bps=tbf["rate_bps"] if tbf else None,
                              delay_ns=netem.get("delay_ns", 0),
                              jitter_ns=netem.get("jitter_ns", 0),
                              loss_ppm=netem.get("loss_ppm", 0),
                              corrupt_ppm=netem.get("corrupt_ppm", 0),
                              duplicate_ppm=netem.get("duplicate_ppm", 0),
                              reorder_ppm=netem.get("reorder_ppm", 0),
                              queue_bytes=tbf["queue_bytes"] if tbf else None,
                              mtu=eg["mtu"])
                queue = tbf["queue_bytes"] if tbf else default_queue_bytes(shape)
                realised = "+".join(x for x, v in (("netem", eg["netem"]), ("tbf", tbf)) if v)
                counters = dict(eg["stats"])
                out[(lk.id, name)] = _Direction(shape, queue, eg["up"], True,
                                                realised or "none", counters)
    return out


def _fabric_units(state: FabricState, d: _Direction) -> dict[str, Any]:
    ts = state.time_scale
    s = d.shape
    return {
        "up": d.up,
        "rate_bps": None if s.rate_bps is None else round(s.rate_bps * ts),
        "delay_ns": round(s.delay_ns / ts), "jitter_ns": round(s.jitter_ns / ts),
        "loss_ppm": s.loss_ppm, "corrupt_ppm": s.corrupt_ppm,
        "duplicate_ppm": s.duplicate_ppm, "reorder_ppm": s.reorder_ppm,
        "queue_bytes": d.queue_bytes, "ecn_bytes": s.ecn_bytes if not d.kernel_rate else None,
        "mtu": s.mtu, "realised_by": d.realised_by, "counters": d.counters,
    }


def _row(state: FabricState, lk: _Link, now: dict[tuple[str, str], _Direction]
         ) -> dict[str, Any]:
    ab = now[(lk.id, lk.engine_direction("a-b"))]
    ba = now[(lk.id, lk.engine_direction("b-a"))]
    return {"link": lk.id, "a": lk.a, "b": lk.b, "backend": state.backend,
            "time_scale": state.time_scale, "up": ab.up and ba.up,
            "a-b": _fabric_units(state, ab), "b-a": _fabric_units(state, ba)}


def link_show(state: FabricState, a: str | None = None, b: str | None = None
              ) -> list[dict[str, Any]]:
    """Per link, per direction ("a-b": a's egress), what is in force now, read back from the
    engine or the kernel (fabric units), whether it is up, and its counters."""
    if (a is None) != (b is None):
        raise LiveError("link show: name both ends of a link, or neither")
    links = [_link(state, a, b)] if a is not None and b is not None else _links(state)
    now = _read(state, links)
    return [_row(state, lk, now) for lk in links]


# ---- link set --------------------------------------------------------------------------------


def _switch_egress(state: FabricState, node: str) -> bool:
    return state.switch_roles.get(node) == "roce"


def _check_values(given: dict[str, int]) -> None:
    for key, value in given.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise LiveError(f"{_PROPERTY_OF[key]}: {value!r} is not an integer")
        if value < 0 or (key == "rate_bps" and value == 0):
            raise LiveError(f"{_PROPERTY_OF[key]}: {value} must be "
                            f"{'above' if key == 'rate_bps' else 'at least'} 0")
    if given.get("loss_ppm", 0) > 1_000_000:
        raise LiveError(f"loss: {given['loss_ppm']} ppm is above 100%")


def _new_shape(state: FabricState, lk: _Link, direction: str, d: _Direction,
               given: dict[str, int]) -> tuple[Shape, int]:
    """The host shape and queue a direction gets; LiveError (changing nothing) when the backend
    cannot realise it."""
    where = f"{lk.a} -> {lk.b}" if direction == "a-b" else f"{lk.b} -> {lk.a}"
    sender = lk.a if direction == "a-b" else lk.b
    for key in given:
        prop = next(p for p in LINK_PROPERTIES if p.key == _PROPERTY_OF[key])
        why = prop.not_realised_by.get(state.backend)
        if why is not None:
            raise LiveError(f"link {where}: the {state.backend} backend cannot realise the "
                            f"{prop.label} ({why})")
        if prop.switch_realises and _switch_egress(state, sender):
            raise LiveError(f"link {where}: the {prop.label} of a RoCE switch's egress is the "
                            "switch port's, not the link's; it cannot change while it runs")
    if "ecn_bytes" in given and d.kernel_rate:
        raise LiveError(f"link {where}: the link engine marks ECN only on links it serialises "
                        "(built with a rate under ~240 Mbit/s or with an ecn threshold); the "
                        "kernel's tbf shapes this one")
    fabric = Shape(rate_bps=given.get("rate_bps"), delay_ns=given.get("delay_ns", 0),
                   jitter_ns=given.get("jitter_ns", 0)).scaled(state.time_scale)
    shape = d.shape
    if "rate_bps" in given:
        shape = replace(shape, rate_bps=fabric.rate_bps)
    if "delay_ns" in given:
        shape = replace(shape, delay_ns=fabric.delay_ns)
    if "jitter_ns" in given:
        shape = replace(shape, jitter_ns=fabric.jitter_ns)
    if "loss_ppm" in given:
        shape = replace(shape, loss_ppm=given["loss_ppm"])
    if "ecn_bytes" in given:
        shape = replace(shape, ecn_bytes=given["ecn_bytes"])
    queue = d.queue_bytes
    if "queue_bytes" in given:
        queue = given["queue_bytes"]
    shape = replace(shape, queue_bytes=queue, queue_packets=None)
    conflict = shape_conflict(shape, where.replace(" ", ""))
    if conflict:
        raise LiveError(f"link {where}: {conflict}")
    if shape.delay_ns + shape.jitter_ns > MAX_DELAY_NS:
        raise LiveError(f"link {where}: delay {format_time(shape.delay_ns + shape.jitter_ns)} "
                        f"on the host is beyond {format_time(MAX_DELAY_NS)}")
    if d.kernel_rate and shape.rate_bps is not None and shape.rate_bps > TBF_MAX_BPS:
        raise LiveError(f"link {where}: rate {format_rate(shape.rate_bps)} on the host is above "
                        f"what the kernel's tbf can shape ({format_rate(TBF_MAX_BPS)})")
    if d.kernel_rate and shape.rate_bps is not None and queue > TBF_MAX_BYTES:
        raise LiveError(f"link {where}: queue {format_size(queue)} is above the kernel's tbf "
                        f"limit ({format_size(TBF_MAX_BYTES)})")
    return shape, queue


def _set_direction(state: FabricState, lk: _Link, direction: str, d: _Direction,
                   shape: Shape, queue: int) -> None:
    """Put `shape` in force on one direction (host units)."""
    from .kernel import LiveKernel

    ns, dev = lk.sender(direction)
    if state.backend == "userspace":
        if d.kernel_rate and (shape.rate_bps, queue) != (d.shape.rate_bps, d.queue_bytes):
            with LiveKernel() as k:
                k.set_egress(ns, dev, replace(shape, delay_ns=0, jitter_ns=0, loss_ppm=0),
                             queue, netem=False)
        _engine(state, {"op": "set", "changes": [
            {"link": lk.id, "direction": lk.engine_direction(direction),
             "shape": {**_shape_dict(shape)}}]})
        return
    with LiveKernel() as k:
        k.set_egress(ns, dev, shape, queue, netem=True)


def _shape_dict(shape: Shape) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(shape)


def _all_or_nothing(what: str, actions: list[tuple[str, Callable[[], None],
                                                   Callable[[], None]]]) -> None:
    """Run each (name, do, undo); when one fails, undo those done (newest first) and raise
    one LiveError naming what failed and whether the roll-back held."""
    done: list[tuple[str, Callable[[], None]]] = []
    for name, do, undo in actions:
        try:
            do()
        except Exception as exc:  # noqa: BLE001 - reported, after the roll-back
            failed = []
            for uname, u in reversed(done):
                try:
                    u()
                except Exception as uexc:  # noqa: BLE001
                    failed.append(f"{uname}: {uexc}")
            back = ("rolled back" if not failed
                    else f"ROLL-BACK FAILED ({'; '.join(failed)})")
            raise LiveError(f"{what}: {name}: {exc}; {back}") from None
        done.append((name, undo))


def link_set(state: FabricState, a: str, b: str, *, direction: str = "both",
             rate_bps: int | None = None, delay_ns: int | None = None,
             jitter_ns: int | None = None, loss_ppm: int | None = None,
             queue_bytes: int | None = None, ecn_bytes: int | None = None) -> dict[str, Any]:
    """Change only the given properties of link a<->b ("a-b" is a's egress towards b), in
    fabric units; returns the link's `link_show` row. All or nothing."""
    if direction not in DIRECTIONS:
        raise LiveError(f"direction {direction!r}: a-b, b-a or both")
    given = {k: v for k, v in (("rate_bps", rate_bps), ("delay_ns", delay_ns),
                               ("jitter_ns", jitter_ns), ("loss_ppm", loss_ppm),
                               ("queue_bytes", queue_bytes), ("ecn_bytes", ecn_bytes))
             if v is not None}
    lk = _link(state, a, b)
    _check_values(given)
    if not given:
        return link_show(state, a, b)[0]
    dirs = ["a-b", "b-a"] if direction == "both" else [direction]
    with _locked(state):
        before = _read(state, [lk])
        actions: list[tuple[str, Callable[[], None], Callable[[], None]]] = []
        for dn in dirs:
            d = before[(lk.id, lk.engine_direction(dn))]
            shape, queue = _new_shape(state, lk, dn, d, given)
            now_d = replace(d, shape=shape, queue_bytes=queue)

            actions.append((f"{lk.a} -> {lk.b}" if dn == "a-b" else f"{lk.b} -> {lk.a}",
                            partial(_set_direction, state, lk, dn, d, shape, queue),
                            partial(_set_direction, state, lk, dn, now_d, d.shape,
                                    d.queue_bytes)))
        _all_or_nothing(f"link set {a} {b}", actions)
        return _row(state, lk, _read(state, [lk]))


# ---- down and up -----------------------------------------------------------------------------


def _set_up(state: FabricState, lk: _Link, up: bool, live: dict[str, Any]) -> None:
    if state.backend == "userspace":
        _engine(state, {"op": "set", "changes": [
            {"link": lk.id, "direction": name, "up": up} for name in ("forward", "reverse")]})
        return
    from .kernel import LiveKernel

    with LiveKernel() as k:
        if not up:
            if lk.id not in live["routes"]:  # kept once: a second down must not forget them
                kept = []
                for ns, dev in lk.ends:
                    kept += [[r.netns, r.dst, [list(h) for h in r.nexthops], r.src]
                             for r in k.routes_via(ns, {dev})]
                live["routes"][lk.id] = kept
            for ns, dev in lk.ends:
                k.set_link_state(ns, dev, False)
            return
        for ns, dev in lk.ends:
            k.set_link_state(ns, dev, True)
        for ns, dst, hops, src in live["routes"].pop(lk.id, []):
            k.restore_route(AddRoute(ns, dst, tuple((gw, dev) for gw, dev in hops), src))


def link_down(state: FabricState, a: str, b: str) -> None:
    """Link a<->b carries nothing either way until `link_up`. Idempotent."""
    lk = _link(state, a, b)
    with _locked(state) as live:
        _set_up(state, lk, False, live)


def link_up(state: FabricState, a: str, b: str) -> None:
    """Bring link a<->b back (the shape it had); idempotent."""
    lk = _link(state, a, b)
    with _locked(state) as live:
        _set_up(state, lk, True, live)
        for ids in live["node_down"].values():  # brought back by hand: no node owns it now
            if lk.id in ids:
                ids.remove(lk.id)


def _node_links(state: FabricState, node: str) -> list[_Link]:
    return [lk if lk.a == node else _Link(lk.id, lk.b, lk.a, True, (lk.ends[1], lk.ends[0]))
            for lk in _links(state) if node in (lk.a, lk.b)]


def node_down(state: FabricState, node: str) -> None:
    """Take every link of `node` down; `node_up` brings back exactly those this took down
    (not one that was down already). Idempotent."""
    _check_node(state, node)
    links = _node_links(state, node)
    with _locked(state) as live:
        now = _read(state, links)
        took = live["node_down"].setdefault(node, [])
        for lk in links:
            if now[(lk.id, "forward")].up and now[(lk.id, "reverse")].up:
                _set_up(state, lk, False, live)
                took.append(lk.id)


def node_up(state: FabricState, node: str) -> None:
    """Bring back the links `node_down` took down (a link that was down before stays down)."""
    _check_node(state, node)
    by_id = {lk.id: lk for lk in _node_links(state, node)}
    with _locked(state) as live:
        for lid in live["node_down"].pop(node, []):
            if lid in by_id:
                _set_up(state, by_id[lid], True, live)
