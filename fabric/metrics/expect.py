"""Expectations over a run's figures: which figures exist, how each is read from a run's
results, and whether a file's `expect:` lines hold (pure: dicts in, outcomes out).

`FIGURES` is the one table: a figure's name, its unit, what it means and its reader. The
docs (docs/expect.md, kept equal to `figures_table()` by a test), the validation messages
and `fabric check` all read it. A figure marked `grouped` is also read per traffic class
or per flow pattern (`kv.chunk_p99`, `bulk.fct_p99`): the summary's `classes` and `kinds`
groups. The summary has no per-flow groups, so a flow name is refused with that reason.

A figure the run did not produce (a class that moved nothing, lossless drops in a run
without RoCE switches, recovery without link events) makes its expectation FAIL with the
reason: an expectation never passes for want of a measurement.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fabric.errors import TopologyError
from fabric.topology.expect import Expectation
from fabric.units import format_rate, format_size, format_time

from .report import format_table

__all__ = ["FIGURES", "UNITS", "Figure", "Missing", "Outcome", "RunFigures", "evaluate",
           "expectations_json", "figure_of", "figures_table", "format_figure",
           "render_expectations", "validate_expectations"]


class Missing(Exception):
    """The run did not produce this figure; the message says why."""


@dataclass(frozen=True)
class RunFigures:
    """What a run's expectations are read from: its traffic summary (`summary.json`, from
    `metrics.summarise`), for a RoCE comparison variant that variant's metrics
    (`run.roce.variant_metrics`), and for a memory run its figures (`run.memory.figures`)."""

    summary: Mapping[str, Any]
    roce: Mapping[str, Any] | None = None
    memory: Mapping[str, Any] | None = None  # a memory run's figures (`run.memory.figures`)


Group = Mapping[str, Any]
Reader = Callable[[RunFigures, Group], "float | str"]


@dataclass(frozen=True)
class Figure:
    """One figure: `read(run, group)` gives its value (ns, bit/s, bytes, a count, a ratio, a
    fraction, or a word) or raises `Missing`; `group` is the summary group (the total, or the
    class or pattern an expectation names) for a `grouped` figure, else the total."""

    name: str
    unit: str  # a key of UNITS
    means: str
    read: Reader
    grouped: bool = False


#: a figure's unit -> (the value kinds it is compared with, how a value is written)
UNITS: dict[str, tuple[tuple[str, ...], str]] = {
    "time": (("time",), "a time such as 500us"),
    "rate": (("rate",), "a rate such as 1Gbps"),
    "size": (("size", "number"), "a size such as 4MiB"),
    "count": (("number",), "a plain number such as 0"),
    "ratio": (("number",), "a plain number such as 1.5"),
    "percent": (("percent",), "a percentage such as 99.9%"),
    "word": (("word",), "ok or failed"),
}


# ---- readers ------------------------------------------------------------------------------

def _value(v: Any, why: str) -> float:  # noqa: ANN401
    if v is None or isinstance(v, bool) or not isinstance(v, int | float):
        raise Missing(why)
    return float(v)


def _times(metric: str, key: str, what: str) -> Reader:
    def read(run: RunFigures, g: Group) -> float:
        times = g.get(metric) or {}
        if not times.get("count"):
            raise Missing(f"no {what} in this run")
        return _value((times.get("fabric_ns") or {}).get(key), f"no {what} in this run")
    return read


def _jitter(run: RunFigures, g: Group) -> float:
    return _value(((g.get("jitter") or {}).get("rfc3550") or {}).get("fabric_ns"),
                  "no chunk arrived intact, so no jitter")


def _goodput(run: RunFigures, g: Group) -> float:
    return _value((g.get("goodput") or {}).get("fabric_bps"),
                  "nothing was delivered, so no goodput")


def _count(key: str) -> Reader:
    def read(run: RunFigures, g: Group) -> float:
        return _value((g.get("counts") or {}).get(key), f"the run counted no {key}")
    return read


def _delivered(run: RunFigures, g: Group) -> float:
    counts = g.get("counts") or {}
    planned = counts.get("transfer_bytes") or 0
    if not planned:
        raise Missing("no transfer was recorded")
    return _value(counts.get("bytes_delivered"), "no bytes were counted") / planned


def _integrity(run: RunFigures, g: Group) -> str:
    ok = (run.summary.get("integrity") or {}).get("ok")
    if ok is None:
        raise Missing("the run has no integrity count")
    return "ok" if ok else "failed"


def _directions(run: RunFigures) -> list[Mapping[str, Any]]:
    return [c for link in run.summary.get("links") or []
            for c in (link.get("forward"), link.get("reverse")) if isinstance(c, Mapping)]


_NO_LINKS = "this run has no link counters (the link engine reports them)"


def _links(run: RunFigures, key: str) -> float | None:
    """The sum of `key` over the links' directions; None when no direction has it."""
    values = [c[key] for c in _directions(run) if isinstance(c.get(key), int | float)]
    return float(sum(values)) if values else None


def _roce(key: str, why: str = "only a RoCE comparison counts it (its switches and "
          "transports)") -> Reader:
    def read(run: RunFigures, g: Group) -> float:
        if run.roce is None:
            raise Missing(why)
        return _value(run.roce.get(key), f"the RoCE run has no {key}")
    return read


def _memory(key: str) -> Reader:
    def read(run: RunFigures, g: Group) -> float:
        if run.memory is None:
            raise Missing("only a memory run counts it")
        return _value(run.memory.get(key), f"the memory run has no {key}")
    return read


def _drops_links(run: RunFigures, g: Group) -> float:
    links = _links(run, "drops")
    if links is None:
        raise Missing(_NO_LINKS)
    return links


def _drops(run: RunFigures, g: Group) -> float:
    links = _links(run, "drops")
    if run.roce is None:
        if links is None:
            raise Missing(_NO_LINKS)
        return links
    # the switches' drops, the link layer's (its queues and random loss, which
    # variant_metrics counts from the same links) and the hosts' own
    return float(sum(_value(run.roce.get(k), f"the RoCE run has no {k}")
                     for k in ("drops", "link_queue_drops", "link_loss", "host_drops")))


def _ecn(run: RunFigures, g: Group) -> float:
    links = _links(run, "ecn_marks")
    if run.roce is None:
        if links is None:
            raise Missing(_NO_LINKS)
        return links
    return _value(run.roce.get("ecn_marks"), "the RoCE run has no ecn_marks") + (links or 0)


def _queue_max(run: RunFigures, g: Group) -> float:
    seen = [c["queue_high_water"] for c in _directions(run)
            if c.get("queue_observed") != 0 and isinstance(c.get("queue_high_water"), int)]
    if run.roce is not None:
        seen.append(_value(run.roce.get("max_queue_bytes"), "the RoCE run has no queue max"))
    if not seen:
        raise Missing("no queue was observed in this run (the link engine or RoCE switches "
                      "observe them)")
    return float(max(seen))


def _recovery(how: str) -> Reader:
    def read(run: RunFigures, g: Group) -> float:
        events = [e for e in (run.summary.get("recovery") or {}).get("events") or []
                  if isinstance(e, Mapping)]
        if not events:
            raise Missing("no link events in this run")
        # a failure no transfer in flight could cross has nothing to recover
        touched = [e for e in events if e.get("transfers_touched")]
        stuck = [e for e in touched if e.get("never_recovered")]
        if stuck:
            raise Missing(f"the traffic did not recover after {len(stuck)} of {len(touched)} "
                          f"link events ({', '.join(str(e.get('event')) for e in stuck[:3])})")
        times = [float(t) for e in touched
                 if isinstance(t := e.get("recovery_ns"), int | float)
                 and not isinstance(t, bool)]
        if not times:
            raise Missing("no link event touched a transfer in flight: nothing to recover")
        return float(max(times) if how == "max" else sum(times) / len(times))
    return read


#: every figure an expectation can name; docs/expect.md lists this table
FIGURES: tuple[Figure, ...] = (
    Figure("integrity", "word", "ok when every chunk arrived once and intact and every "
           "transfer completed", _integrity),
    Figure("goodput", "rate", "intact bytes over the active span, fabric time", _goodput, True),
    Figure("chunk_p50", "time", "chunk latency (one-way, whole chunk), median",
           _times("chunk_latency", "p50", "chunk latency"), True),
    Figure("chunk_p99", "time", "chunk latency, 99th percentile",
           _times("chunk_latency", "p99", "chunk latency"), True),
    Figure("chunk_p99.9", "time", "chunk latency, 99.9th percentile",
           _times("chunk_latency", "p99.9", "chunk latency"), True),
    Figure("chunk_max", "time", "chunk latency, the largest",
           _times("chunk_latency", "max", "chunk latency"), True),
    Figure("fct_p50", "time", "transfer latency (start to done, transfers ok), median",
           _times("transfer_latency", "p50", "completed transfer"), True),
    Figure("fct_p99", "time", "transfer latency, 99th percentile",
           _times("transfer_latency", "p99", "completed transfer"), True),
    Figure("fct_max", "time", "transfer latency, the largest",
           _times("transfer_latency", "max", "completed transfer"), True),
    Figure("ttfb_p50", "time", "time to first byte (transfers ok), median",
           _times("ttfb", "p50", "completed transfer"), True),
    Figure("ttfb_p99", "time", "time to first byte, 99th percentile",
           _times("ttfb", "p99", "completed transfer"), True),
    Figure("jitter", "time", "RFC 3550 jitter, chunk-weighted mean over the flows", _jitter,
           True),
    Figure("transfers_failed", "count", "transfers whose status is not ok",
           _count("transfers_failed"), True),
    Figure("bytes", "size", "bytes delivered intact", _count("bytes_delivered"), True),
    Figure("delivered", "percent", "bytes delivered intact, of the bytes the transfers "
           "announced", _delivered, True),
    Figure("drops", "count", "packets dropped: on the links (queue and loss); in a RoCE "
           "comparison also by its switches and hosts", _drops),
    Figure("drops.links", "count", "packets the links dropped (queue and loss)", _drops_links),
    Figure("drops.lossless", "count", "packets of lossless classes the RoCE switches dropped",
           _roce("drops_lossless", "only a RoCE comparison's switches count lossless drops")),
    Figure("ecn_marks", "count", "packets marked CE: by the links, and by RoCE switches", _ecn),
    Figure("queue_max", "size", "the highest queue any link or RoCE switch port held",
           _queue_max),
    Figure("pauses", "count", "PFC pause frames the RoCE switches sent", _roce("pauses")),
    Figure("slowdown_p50", "ratio", "RoCE flow completion over its ideal, median",
           _roce("slowdown_p50")),
    Figure("slowdown_p99", "ratio", "RoCE flow completion over its ideal, 99th percentile",
           _roce("slowdown_p99")),
    Figure("retransmitted", "count", "packets the RoCE transports retransmitted",
           _roce("retransmitted")),
    Figure("cnps", "count", "congestion notification packets the RoCE receivers sent",
           _roce("cnps")),
    Figure("control.wait_max", "time", "the longest a CNP, ACK or NAK (the RoCE control "
           "class) waited in a RoCE switch queue", _roce("control_wait_max_ns")),
    Figure("recovery.max", "time", "time to recover after a link event (first byte again "
           "on the affected flows), the longest", _recovery("max")),
    Figure("recovery.mean", "time", "time to recover after a link event, the mean",
           _recovery("mean")),
    Figure("memory.lost", "count", "memory transactions lost (unanswered within the "
           "completion timeout)", _memory("lost")),
    Figure("memory.failed", "count", "memory run variants whose data did not check out "
           "(with nothing lost)", _memory("failed")),
)

_BY_NAME = {f.name: f for f in FIGURES}


def figures_table() -> str:
    """The figures as a Markdown table (docs/expect.md holds it; a test keeps them equal)."""
    lines = ["| figure | unit | per class or pattern | means |", "| --- | --- | --- | --- |"]
    for f in FIGURES:
        lines.append(f"| `{f.name}` | {f.unit} | {'yes' if f.grouped else ''} | {f.means} |")
    return "\n".join(lines)


# ---- validation ---------------------------------------------------------------------------

def _known(limit: int = 14) -> str:
    names = [f.name for f in FIGURES]
    more = f", ... ({len(names)} in all, docs/expect.md)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def figure_of(name: str) -> tuple[Figure, str | None]:
    """The figure `name` names and its group (a class or pattern name, or None); KeyError
    when the name is no figure. The group is not checked here."""
    if name in _BY_NAME:
        return _BY_NAME[name], None
    group, _, rest = name.partition(".")
    if rest in _BY_NAME and group:
        return _BY_NAME[rest], group
    raise KeyError(name)


def validate_expectations(topo: Any) -> None:  # noqa: ANN401
    """Check each of `topo.expect` before anything is built: the figure exists, the class or
    pattern it names is in the file, and its value has the figure's unit. TopologyError at
    the expectation's line."""
    classes = [c.name for c in topo.classes]
    flows = topo.traffic.flows if topo.traffic is not None else ()
    patterns = list(dict.fromkeys(f.pattern for f in flows))
    flow_names = {f.name for f in flows}
    for e in topo.expect:
        def fail(message: str, e: Expectation = e) -> TopologyError:
            return TopologyError(f"{e.figure}: {message}", file=topo.source, line=e.line,
                                 key=e.key)

        try:
            fig, group = figure_of(e.figure)
        except KeyError:
            group, _, rest = e.figure.partition(".")
            if rest and rest not in _BY_NAME and rest in {n.partition(".")[0]
                                                          for n in _BY_NAME}:
                rest = ""  # `drops.foo`: a figure of the whole run with a bad part
            close = difflib.get_close_matches(rest if rest else e.figure, list(_BY_NAME), n=1)
            hint = f"; did you mean '{group + '.' if rest else ''}{close[0]}'?" if close else ""
            raise fail(f"unknown figure{hint} (figures: {_known()})") from None
        if group is not None:
            if not fig.grouped:
                raise fail(f"'{fig.name}' is a figure of the whole run, not per class or "
                           "pattern")
            if group in classes and group in patterns:
                raise fail(f"'{group}' is both a class and a flow pattern here: rename the "
                           "class")
            if group not in classes and group not in patterns:
                if group in flow_names:
                    raise fail(f"'{group}' is a flow: figures are per class or per pattern, "
                               "not per flow; give the flow a class of its own")
                raise fail(f"unknown class or pattern '{group}' (classes: "
                           f"{', '.join(classes)}; patterns: {', '.join(patterns) or 'none'})")
        takes, written = UNITS[fig.unit]
        if e.kind not in takes and not (fig.unit == "time" and e.kind == "number"
                                        and e.value == 0):
            raise fail(f"{e.value_text!r} is {_a(e.kind)}, but {fig.name} is {_a(fig.unit)} "
                       f"({fig.means}): compare it with {written}")
        if fig.unit == "word" and e.op not in ("==", "!="):
            raise fail(f"compare {fig.name} with == or != ({written}), not {e.op}")


def _a(kind: str) -> str:
    return {"number": "a plain number", "count": "a count", "ratio": "a ratio",
            "word": "a word", "percent": "a percentage", "time": "a time",
            "rate": "a rate", "size": "a size"}[kind]


# ---- evaluation ---------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class Outcome:
    """One expectation judged: what was measured (None: nothing), as text, and why it failed
    (empty when it passed)."""

    expectation: Expectation
    measured: float | str | None
    measured_text: str
    passed: bool
    why: str = ""


def _group(run: RunFigures, group: str | None) -> Group:
    if group is None:
        return run.summary.get("total") or {}
    for section in ("classes", "kinds"):
        found = (run.summary.get(section) or {}).get(group)
        if found is not None:
            return found
    raise Missing(f"'{group}' moved nothing in this run (no class or pattern by that name "
                  "in its results)")


def format_figure(fig: Figure, value: float | str) -> str:
    """A measured value in the figure's unit, as tables print it."""
    if isinstance(value, str):
        return value
    if fig.unit == "time":
        return format_time(int(round(value)))
    if fig.unit == "rate":
        return format_rate(int(round(value)))
    if fig.unit == "size":
        return format_size(int(round(value)))
    if fig.unit == "percent":
        return f"{value * 100:.4g}%"
    if fig.unit == "count" and value == int(value):
        return str(int(value))
    return f"{value:.3g}"


def evaluate(expectations: Sequence[Expectation], figures: RunFigures) -> list[Outcome]:
    """Each expectation judged over one run's figures. A figure the run did not produce
    fails its expectation with the reason."""
    out = []
    for e in expectations:
        try:
            fig, group = figure_of(e.figure)
        except KeyError:  # validate_expectations refuses these before a run
            out.append(Outcome(e, None, "-", False, "unknown figure"))
            continue
        try:
            value = fig.read(figures, _group(figures, group))
        except Missing as m:
            out.append(Outcome(e, None, "-", False, str(m)))
            continue
        want = e.word if e.kind == "word" else e.value
        text = format_figure(fig, value)
        if isinstance(value, str) != isinstance(want, str):
            out.append(Outcome(e, value, text, False, f"{fig.name} is {_a(fig.unit)}"))
            continue
        passed = _OPS[e.op](value, want)
        why = "" if passed else f"measured {text}, expected {e.op} {e.value_text}"
        out.append(Outcome(e, value, text, passed, why))
    return out


def render_expectations(outcomes: Sequence[Outcome], title: str | None = None) -> str:
    """The pass/fail table: expectation, measured, result (and why it failed)."""
    rows = [[o.expectation.text, o.measured_text, "pass" if o.passed else "FAIL",
             o.why if not o.passed else ""] for o in outcomes]
    failed = sum(1 for o in outcomes if not o.passed)
    head = f"expectations{f' ({title})' if title else ''}: " + (
        f"{failed} of {len(outcomes)} failed" if failed else f"all {len(outcomes)} hold")
    return head + "\n" + format_table(rows, ["expectation", "measured", "result", "why"],
                                      numeric=[1])


def expectations_json(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """The outcomes as JSON rows (`expectations.json`)."""
    return [{"expectation": o.expectation.text, "line": o.expectation.line,
             "figure": o.expectation.figure, "op": o.expectation.op,
             "value": o.expectation.word if o.expectation.kind == "word"
             else o.expectation.value, "measured": o.measured,
             "measured_text": o.measured_text, "passed": o.passed, "why": o.why}
            for o in outcomes]
