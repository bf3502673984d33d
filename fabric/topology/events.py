"""The `events:` section: a timeline of link and node changes applied during `fabric run`.

Times are fabric time from the run's start (the shared start time every node begins at), so
`time_scale` applies as it does to the traffic. Each entry has `at` and one action:

```yaml
events:
  detect: 50ms                 # routes and ECMP groups react this long after a link changes
  timeline:
    - {at: 2ms, down: [leaf-0, spine-0]}                  # a link fails ...
    - {at: 6ms, up: [leaf-0, spine-0]}                    # ... and comes back
    - {at: 1ms, flap: [leaf-1, spine-1], period: 2ms, count: 3}   # down half of each period
    - {at: 3ms, set: [dc-a, dc-b], loss: 2%, rate: 10Gbps, direction: a-b}   # a step
    - {at: 3ms, ramp: [dc-a, dc-b], rate: 1Gbps, over: 2ms, steps: 4}       # a ramp
    - {at: 0ms, trace: [dc-a, dc-b], file: dci.csv}       # rates over time (time,rate rows)
    - {at: 4ms, node_down: spine-0}                       # every link of a node
    - {at: 8ms, node_up: spine-0}
```

The timeline is expanded into primitive steps in time order (a flap into its downs and ups,
a ramp into its steps), and contradictions are refused at their line (a link taken down while
it is down, brought up while up, a node brought up that is not down): what the file asks
must be what the run does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fabric.errors import TopologyError
from fabric.units import format_time, parse_loss, parse_queue, parse_rate, parse_size, parse_time

if TYPE_CHECKING:
    import yaml

    from fabric.topology.model import Link, Node, Shape
    from fabric.topology.walker import Walker

__all__ = ["ACTIONS", "EventStep", "Events", "contradiction", "down_after", "links_down",
           "parse_events", "read_trace"]

ACTIONS = ("down", "up", "flap", "set", "ramp", "trace", "node_down", "node_up")
DIRECTIONS = ("a-b", "b-a", "both")
_EVENTS_KEYS = ("detect", "timeline")
# the properties a running link can change (both link backends change them in place)
_PROPS: dict[str, tuple[str, Any, str]] = {
    "rate": ("rate_bps", parse_rate, "a rate such as 10Gbps"),
    "delay": ("delay_ns", parse_time, "a time such as 5ms"),
    "jitter": ("jitter_ns", parse_time, "a time such as 1ms"),
    "loss": ("loss_ppm", parse_loss, "a loss such as 1%"),
    "queue": ("queue_bytes", parse_queue, "a size such as 256KiB"),
    "ecn": ("ecn_bytes", parse_size, "a size such as 64KiB"),
}
_RAMPABLE = ("rate", "delay", "jitter", "loss")
MAX_STEPS = 100_000  # primitive steps one timeline may expand to
MAX_TIME_NS = 86_400 * 10**9


@dataclass(frozen=True)
class EventStep:
    """One primitive change at fabric time `at_ns`: `down`/`up` of a link (`link` = (a, b)),
    `set` of its properties (`props`: Shape field -> value, on `direction`), `node_down`/
    `node_up` (`node`). `line` and `label` say which timeline entry it came from."""

    at_ns: int
    action: str
    link: tuple[str, str] | None = None
    node: str | None = None
    direction: str = "both"
    props: tuple[tuple[str, int], ...] = ()
    line: int = 0
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"at_ns": self.at_ns, "action": self.action, "link": self.link,
                "node": self.node, "direction": self.direction, "props": dict(self.props),
                "line": self.line, "label": self.label}


@dataclass(frozen=True)
class Events:
    detect_ns: int
    steps: tuple[EventStep, ...] = field(default_factory=tuple)
    line: int = 0

    @property
    def last_ns(self) -> int:
        return max((s.at_ns for s in self.steps), default=0)


def parse_events(w: Walker, node: yaml.Node, nodes: dict[str, Node],
                 links: tuple[Link, ...]) -> Events:
    """The section at `node`, checked against the fabric's nodes and links."""
    from fabric.topology.walker import line_of

    f = w.mapping(node, "events", _EVENTS_KEYS, required=("timeline",))
    detect = 0
    if "detect" in f:
        detect = w.unit(f["detect"][1], "events.detect", parse_time, "a time such as 50ms")
        if detect > MAX_TIME_NS:
            raise w.error(f["detect"][1], "events.detect", "detect is longer than a day")
    linked = {frozenset((lk.a, lk.b)): lk for lk in links}
    shapes = {(lk.a, lk.b): lk.forward for lk in links} | {(lk.b, lk.a): lk.reverse
                                                            for lk in links}
    raw: list[EventStep] = []
    # (at, link, direction, target values, over, steps, line, label): expanded once every
    # other step is known, so each starts from the value in force when it starts
    ramps: list[tuple[int, tuple[str, str], str, dict[str, int], int, int, int, str]] = []
    for i, item in enumerate(w.sequence(f["timeline"][1], "events.timeline")):
        path = f"events.timeline[{i}]"
        e = w.mapping(item, path, ("at", "period", "count", "over", "steps", "direction",
                                   "file", *ACTIONS, *_PROPS))
        if "at" not in e:
            raise w.error(item, path, "missing required key 'at' (fabric time from the run's "
                          "start, e.g. 2ms)")
        at = w.unit(e["at"][1], f"{path}.at", parse_time, "a time such as 2ms")
        if at > MAX_TIME_NS:
            raise w.error(e["at"][1], f"{path}.at", "at is later than a day into the run")
        acts = [a for a in ACTIONS if a in e]
        if len(acts) != 1:
            raise w.error(item, path, f"give exactly one action of {', '.join(ACTIONS)}" +
                          (f" (got {' and '.join(acts)})" if acts else ""))
        act = acts[0]
        line = line_of(item)
        label = f"{act} {_target_text(w, e[act][1])}"
        allowed = {"down": (), "up": (), "flap": ("period", "count"),
                   "set": ("direction", *_PROPS), "ramp": ("direction", "over", "steps",
                                                            *_RAMPABLE),
                   "trace": ("direction", "file"),
                   "node_down": (), "node_up": ()}[act]
        for key, (key_node, _) in e.items():
            if key not in ("at", act) and key not in allowed:
                raise w.error(key_node, f"{path}.{key}", f"'{key}' does not apply to {act}"
                              + (f" (it takes {', '.join(allowed)})" if allowed else ""))
        if act in ("node_down", "node_up"):
            name = w.text(e[act][1], f"{path}.{act}", "a node name")
            if name not in nodes:
                raise w.error(e[act][1], f"{path}.{act}", f"unknown node {name!r} (nodes: "
                              f"{_some(nodes)})")
            raw.append(EventStep(at, act, node=name, line=line, label=label))
            continue
        pair = _link(w, e[act][1], f"{path}.{act}", nodes, linked)
        if act in ("down", "up"):
            raw.append(EventStep(at, act, link=pair, line=line, label=label))
        elif act == "trace":
            direction = w.choice(e["direction"][1], f"{path}.direction", DIRECTIONS,
                                 "direction") if "direction" in e else "both"
            if "file" not in e:
                raise w.error(item, path, "trace needs `file`: a CSV of time,rate rows "
                              "(e.g. 0ms,10Gbps), relative to this file")
            name = w.text(e["file"][1], f"{path}.file", "a file name")
            for t, rate in read_trace(w, e["file"][1], f"{path}.file", name):
                raw.append(EventStep(at + t, "set", link=pair, direction=direction,
                                     props=(("rate_bps", rate),), line=line,
                                     label=f"trace {label.split(' ', 1)[1]} ({name})"))
                if len(raw) > MAX_STEPS:
                    break
        elif act == "flap":
            period = w.unit(e["period"][1], f"{path}.period", parse_time, "a time such as 2ms") \
                if "period" in e else None
            if not period:
                raise w.error(item, path, "flap needs a period (down for the first half of "
                              "each, e.g. period: 2ms)")
            count = w.integer(e["count"][1], f"{path}.count", 1, 10_000) if "count" in e else 1
            for k in range(count):
                start = at + k * period
                raw.append(EventStep(start, "down", link=pair, line=line, label=label))
                raw.append(EventStep(start + period // 2, "up", link=pair, line=line,
                                     label=label))
        else:
            direction = w.choice(e["direction"][1], f"{path}.direction", DIRECTIONS,
                                 "direction") if "direction" in e else "both"
            props = {}
            for key in _PROPS:
                if key in e:
                    fld, parse, expects = _PROPS[key]
                    props[fld] = w.unit(e[key][1], f"{path}.{key}", parse, expects)
            if not props:
                raise w.error(item, path, f"{act} changes nothing: give one or more of "
                              f"{', '.join(_PROPS if act == 'set' else _RAMPABLE)}")
            if "queue_bytes" in props and isinstance(props["queue_bytes"], tuple):
                raise w.error(e["queue"][1], f"{path}.queue", "give the queue in bytes (a "
                              "size such as 256KiB) for a change at run time")
            if act == "set":
                raw.append(EventStep(at, "set", link=pair, direction=direction,
                                     props=tuple(sorted(props.items())), line=line,
                                     label=label))
            else:
                over = w.unit(e["over"][1], f"{path}.over", parse_time, "a time such as 2ms") \
                    if "over" in e else None
                if not over:
                    raise w.error(item, path, "ramp needs `over` (how long it takes)")
                steps = w.integer(e["steps"][1], f"{path}.steps", 1, 1000) \
                    if "steps" in e else 10
                ramps.append((at, pair, direction, props, over, steps, line, label))
        if len(raw) + sum(r[5] for r in ramps) > MAX_STEPS:
            raise w.error(item, path, f"the timeline expands to more than {MAX_STEPS:,} "
                          "steps")
    for r_at, r_pair, r_dir, r_props, r_over, r_steps, r_line, r_label in sorted(
            ramps, key=lambda r: r[0]):
        start = _start_values(shapes, raw, r_at, r_pair, r_dir, r_props)
        for k in range(1, r_steps + 1):
            vals = tuple(sorted(
                (fld, round(start[fld] + (target - start[fld]) * k / r_steps))
                for fld, target in r_props.items()))
            raw.append(EventStep(r_at + r_over * k // r_steps, "set", link=r_pair,
                                 direction=r_dir, props=vals, line=r_line, label=r_label))
    for step in raw:  # what a run could not put back afterwards
        if step.action != "set" or step.link is None:
            continue
        a, b = step.link
        for x, y in ([(a, b)] if step.direction == "a-b" else [(b, a)]
                     if step.direction == "b-a" else [(a, b), (b, a)]):
            for fld, what in (("rate_bps", "rate"), ("ecn_bytes", "ecn threshold")):
                if fld in dict(step.props) and getattr(shapes[(x, y)], fld) is None:
                    raise TopologyError(
                        f"{step.label}: {x}->{y} has no {what} in the file, so the run could "
                        f"not put it back afterwards: give the link a {what}",
                        file=w.source, line=step.line, key="events.timeline")
    events = Events(detect_ns=detect, steps=tuple(sorted(raw, key=lambda s: s.at_ns)),
                    line=line_of(node))
    problem = contradiction(events)
    if problem is not None:
        step, why = problem
        raise TopologyError(why, file=w.source, line=step.line, key="events.timeline")
    return events


MAX_TRACE_BYTES = 4 << 20


def read_trace(w: Walker, node: yaml.Node, path: str, name: str) -> list[tuple[int, int]]:
    """A capacity trace, as Mahimahi replays one for a time-varying link: CSV rows of
    `time,rate` (a time and a rate with their units, e.g. `1.5ms,40Gbps`; a first row that
    is not one is a header), times from the event's `at`, rising. The file is found beside
    the topology file; an error names the trace's file and line."""
    import csv
    import os

    from fabric.units import parse_rate as rate_of
    from fabric.units import parse_time as time_of

    base = os.path.dirname(w.source) if not w.source.startswith("<") else "."
    full = os.path.join(base, name)
    try:
        with open(full, encoding="utf-8", newline="") as f:
            text = f.read(MAX_TRACE_BYTES + 1)
    except OSError as e:
        raise w.error(node, path, f"cannot read the trace {full}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise w.error(node, path, f"the trace {full} is not UTF-8 text") from None
    if len(text) > MAX_TRACE_BYTES:
        raise w.error(node, path, f"the trace {full} is larger than 4 MiB")
    rows: list[tuple[int, int]] = []
    for n, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or row[0].strip().startswith("#"):
            continue
        where = f"{full}:{n}"
        if len(row) != 2:
            raise TopologyError(f"{where}: expected two fields, time,rate (e.g. 0ms,10Gbps); "
                                f"got {len(row)}", file=w.source, key=path)
        try:
            t = time_of(row[0].strip())
        except ValueError as e:
            if not rows and n == 1:
                continue  # a header
            raise TopologyError(f"{where}: time: {e}", file=w.source, key=path) from None
        try:
            r = rate_of(row[1].strip())
        except ValueError as e:
            raise TopologyError(f"{where}: rate: {e}", file=w.source, key=path) from None
        if rows and t <= rows[-1][0]:
            raise TopologyError(f"{where}: time {format_time(t)} does not come after the row "
                                "before it", file=w.source, key=path)
        rows.append((t, r))
        if len(rows) > MAX_STEPS:
            raise TopologyError(f"{full}: more than {MAX_STEPS:,} rows", file=w.source,
                                key=path)
    if not rows:
        raise w.error(node, path, f"the trace {full} has no time,rate rows")
    return rows


def contradiction(events: Events) -> tuple[EventStep, str] | None:
    """The first step that contradicts the state the steps before it leave (a link taken
    down while down, up while up, a node up that is not down), or None."""
    down: set[frozenset[str]] = set()  # links down by a link event
    node_down: set[str] = set()
    for s in events.steps:
        when = format_time(s.at_ns)
        if s.action in ("down", "up") and s.link is not None:
            key = frozenset(s.link)
            a, b = s.link
            if node_down & set(s.link):
                return s, (f"{s.label} at {when}: {' and '.join(sorted(node_down & set(s.link)))}"
                           " is down then (node_down): bring the node up first")
            if s.action == "down" and key in down:
                return s, f"{s.label} at {when}: the link {a}--{b} is already down then"
            if s.action == "up" and key not in down:
                return s, f"{s.label} at {when}: the link {a}--{b} is not down then"
            (down.add if s.action == "down" else down.discard)(key)
        elif s.action == "node_down" and s.node is not None:
            if s.node in node_down:
                return s, f"{s.label} at {when}: node {s.node} is already down then"
            node_down.add(s.node)
        elif s.action == "node_up" and s.node is not None:
            if s.node not in node_down:
                return s, f"{s.label} at {when}: node {s.node} is not down then"
            node_down.discard(s.node)
    return None


def down_after(steps: tuple[EventStep, ...] | list[EventStep]
               ) -> tuple[set[frozenset[str]], set[str]]:
    """What `steps` leave down: the links taken down by a link step, and the nodes."""
    down: set[frozenset[str]] = set()
    nodes: set[str] = set()
    for s in steps:
        if s.action == "down" and s.link:
            down.add(frozenset(s.link))
        elif s.action == "up" and s.link:
            down.discard(frozenset(s.link))
        elif s.action == "node_down" and s.node:
            nodes.add(s.node)
        elif s.action == "node_up" and s.node:
            nodes.discard(s.node)
    return down, nodes


def links_down(steps: tuple[EventStep, ...] | list[EventStep], links: tuple[Link, ...],
               ) -> set[frozenset[str]]:
    """The links down after `steps` (a node's links count while it is down)."""
    down, nodes = down_after(steps)
    return down | {frozenset((lk.a, lk.b)) for lk in links if {lk.a, lk.b} & nodes}


def _directions(pair: tuple[str, str], direction: str) -> list[tuple[str, str]]:
    """The (sender, receiver) directions a step on link `pair` changes."""
    a, b = pair
    return [(a, b)] if direction == "a-b" else [(b, a)] if direction == "b-a" else [(a, b),
                                                                                     (b, a)]


def _start_values(shapes: dict[tuple[str, str], Shape], steps: list[EventStep], at: int,
                  pair: tuple[str, str], direction: str,
                  props: dict[str, int]) -> dict[str, int]:
    """Where a ramp starts: on the (first) direction it changes, each property's value in
    force at `at`: the last `steps` entry (a set, a trace row, an earlier ramp's step) at or
    before it that set the property there, else the file's value."""
    first = _directions(pair, direction)[0]
    out = {fld: int(getattr(shapes[first], fld) or 0) for fld in props}
    for step in sorted((s for s in steps if s.action == "set" and s.link is not None
                        and s.at_ns <= at), key=lambda s: s.at_ns):
        assert step.link is not None
        if first in _directions(step.link, step.direction):
            for fld, value in step.props:
                if fld in out:
                    out[fld] = int(value)
    return out


def _link(w: Walker, node: yaml.Node, path: str, nodes: dict[str, Node],
          linked: dict[frozenset[str], Link]) -> tuple[str, str]:
    items = w.sequence(node, path)
    if len(items) != 2:
        raise w.error(node, path, f"a link is its two ends, e.g. [leaf-0, spine-0]; got "
                      f"{len(items)} item{'s' if len(items) != 1 else ''}")
    a, b = (w.text(x, f"{path}[{i}]", "a node name") for i, x in enumerate(items))
    for x, n in ((a, items[0]), (b, items[1])):
        if x not in nodes:
            raise w.error(n, path, f"unknown node {x!r} (nodes: {_some(nodes)})")
    if frozenset((a, b)) not in linked:
        near = sorted(f"{lk.a}--{lk.b}" for lk in linked.values() if a in (lk.a, lk.b))
        raise w.error(node, path, f"no link joins {a} and {b}" +
                      (f" (links of {a}: {', '.join(near[:6])})" if near else ""))
    return a, b


def _target_text(w: Walker, node: yaml.Node) -> str:
    from yaml.nodes import ScalarNode, SequenceNode

    if isinstance(node, SequenceNode):
        return "--".join(str(x.value) for x in node.value if isinstance(x, ScalarNode))
    return str(node.value) if isinstance(node, ScalarNode) else "?"


def _some(names: dict[str, Any]) -> str:
    shown = sorted(names)
    return ", ".join(shown[:8]) + (", ..." if len(shown) > 8 else "")
