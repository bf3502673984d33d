#!/usr/bin/env python3
"""Regenerate the README's performance summary from the benchmarks' JSON.

    python3 scripts/perf_table.py [--check] [--print] [--results results] [--readme README.md]

Reads results/bench_*.json (whichever exist) and writes one table row per headline figure
between `<!-- perf-table:begin -->` and `<!-- perf-table:end -->` in README.md: measure,
fabric figure and its ratio to a baseline measured in the same run (each median (min-max) over
the benchmark's repeats; a ratio's spread is over the per-repeat ratios), the goal from issue
18's table, whether the figure meets it, and when it ran with how many repeats. A benchmark
whose JSON is missing gets a row saying "not run"; a figure its JSON lacks (a --quick run
skips some points) says "not in this run". `--check` changes nothing and exits 1 when the
README's block differs from what the JSON gives (printing the difference); `--print` prints
the block instead of writing it.

Each headline is one `Headline` in `HEADLINES`, with a small function that picks its figures
out of its benchmark's JSON: when a benchmark's keys change, only that function does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import json
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _spread import fmt_spread  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from fabric.net.daemon import DAEMON_NICE  # noqa: E402

BEGIN = "<!-- perf-table:begin -->"
END = "<!-- perf-table:end -->"
# the niceness the fabric's daemons run at: bench_engine's rows for the engine as it runs
ENGINE_NICE = DAEMON_NICE
HEADER = ("measure", "fabric (median, min-max)", "baseline, same run",
          "ratio (median, min-max)", "goal", "met?", "date and repeats")


@dataclass(frozen=True)
class Row:
    """One line of the table, every cell already text."""

    measure: str
    fabric: str = "-"
    baseline: str = "-"
    ratio: str = "-"
    goal: str = "-"
    met: str = "-"
    when: str = "-"

    def cells(self) -> tuple[str, ...]:
        return (self.measure, self.fabric, self.baseline, self.ratio, self.goal, self.met,
                self.when)


@dataclass(frozen=True)
class Check:
    """One condition of a goal: the figure's median (or, with `every`, its worst repeat)
    compared with `limit`."""

    figure: dict | None
    op: str  # ">=", "<=" or "<"
    limit: float
    every: bool = False


@dataclass(frozen=True)
class Figures:
    """What a headline's function found in its benchmark's JSON."""

    fabric: str
    baseline: str = "-"
    ratio: str = "-"
    checks: tuple[Check, ...] = ()
    n: int | None = None  # repeats, when the JSON does not say at its top
    measure: str | None = None  # overrides the headline's (one function, several rows)
    met: str | None = None  # overrides the checks' verdict


Extract = Callable[..., "Figures | list[Figures] | None"]


@dataclass(frozen=True)
class Headline:
    measure: str
    bench: str | None  # results/<bench>.json; None: no benchmark measures it yet
    goal: str
    extract: Extract | None = None
    min_runs: int = 0  # the goal asks for at least this many runs
    # results/<before>.json: the same benchmark run on the code before issue 18's change,
    # kept beside it; `extract` then gets it as `before=` (a dict, or None if absent)
    before: str | None = None


# -- reading spreads defensively -----------------------------------------------------------


def sp(x: Any) -> dict | None:  # noqa: ANN401
    """A {"min","median","max","n"} spread from a spread dict or a bare number (a figure of
    a JSON from before the spreads: n None, repeats unknown), else None."""
    if isinstance(x, dict) and x.get("median") is not None:
        n = x.get("n", len(x["values"]) if isinstance(x.get("values"), list) else None)
        return {"min": x.get("min", x["median"]), "median": x["median"],
                "max": x.get("max", x["median"]), "n": n if n is not None else 2}
    if isinstance(x, int | float) and not isinstance(x, bool):
        return {"min": x, "median": x, "max": x, "n": None}
    return None


def fig(row: dict, key: str) -> dict | None:
    """Figure `key` of a row: its `spread` entry if it has one, else the key itself."""
    s = sp((row.get("spread") or {}).get(key))
    return s if s is not None else sp(row.get(key))


def med(s: dict | None) -> float | None:
    return None if s is None else s["median"]


def unit(s: dict | None, scale: float, fmt: str, suffix: str) -> str:
    """A spread as `median (min-max)` plus `suffix`: a word (" us") once at the end, a bare
    multiplier ("k") on every number."""
    if suffix and not suffix.startswith(" "):
        if not s or s.get("median") is None:
            return "-"
        m, lo, hi = (format(s[k] / scale, fmt) + suffix for k in ("median", "min", "max"))
        n = s.get("n", 2)
        return m if n is None or n < 2 else f"{m} ({lo}-{hi})"
    text = fmt_spread(s, fmt, scale)
    return text if text == "-" else f"{text}{suffix}"


def kpps(s: dict | None) -> str:
    return unit(s, 1e3, ".0f", "k")


def gbit(s: dict | None) -> str:
    return unit(s, 1e9, ".2f", " Gbit/s")


def us(s: dict | None) -> str:
    return unit(s, 1, ".0f", " us")


def secs(s: dict | None) -> str:
    return unit(s, 1, ".2f", " s")


def ratio(s: dict | None) -> str:
    return fmt_spread(s, ".2f")


def n_of(*spreads: dict | None) -> int | None:
    """The repeats behind a row: the fewest of any of its figures."""
    ns = [s["n"] for s in spreads if s is not None and s.get("n") is not None]
    return min(ns) if ns else None


# -- one function per headline --------------------------------------------------------------


def kv_goodput(d: dict) -> Figures | None:
    r = next((r for r in d.get("rows", []) if "raw_bps" in r), None)
    if r is None:
        return None
    kv, raw, x = fig(r, "kv_bps"), fig(r, "raw_bps"), fig(r, "kv_vs_raw")
    return Figures(gbit(kv), f"raw socket {gbit(raw and sp(raw['median']))}", ratio(x),
                   (Check(x, ">=", 0.9, every=True),), n_of(kv, x))


def _kv_latency(d: dict, q: str) -> Figures | None:
    r = next((r for r in d.get("rows", []) if f"kv_{q}_us" in r), None)
    if r is None:
        return None
    kv, raw, x = fig(r, f"kv_{q}_us"), fig(r, f"raw_half_rtt_{q}_us"), fig(r, f"ratio_{q}")
    trio = fig(r, f"trio_half_rtt_{q}_us")  # runs that measured it: the event loop's floor
    in_trio = f" (through trio: {us(sp(trio['median']))})" if trio else ""
    return Figures(us(kv), f"raw ping-pong RTT/2 {us(raw and sp(raw['median']))}{in_trio}",
                   ratio(x),
                   (Check(x, "<=", 2.0),), n_of(kv, x))


def kv_latency_p50(d: dict) -> Figures | None:
    return _kv_latency(d, "p50")


def kv_latency_p99(d: dict) -> Figures | None:
    return _kv_latency(d, "p99")


def _engine_row(d: dict, relay: str, mtu: int) -> dict | None:
    return next((r for r in d.get("throughput", [])
                 if r.get("relay") == relay and r.get("mtu") == mtu), None)


def engine_pps(d: dict) -> Figures | None:
    eng, bare = _engine_row(d, "engine", 1500), _engine_row(d, "bare", 1500)
    c = _engine_row(d, "c", 1500)  # the same relay in C: runs that had a C compiler
    if eng is None:
        return None
    pps, x = fig(eng, "pps"), fig(eng, "pps_ratio")
    base = med(fig(bare, "pps")) if bare else None
    in_c = f" (the same relay in C: {kpps(sp(med(fig(c, 'pps'))))})" if c else ""
    return Figures(kpps(pps), f"bare relay {kpps(sp(base))}{in_c}", ratio(x),
                   (Check(pps, ">=", 500e3), Check(x, ">=", 0.9)), n_of(pps, x))


def _late_row(d: dict, relay: str, delay_ms: int, loaded: bool, nice: int) -> dict | None:
    """A bench_engine lateness row; `loaded`: measured beside busy processes (rows written
    before there were any have no `load`: quiet)."""
    return next((r for r in d.get("lateness", [])
                 if r.get("relay") == relay and r.get("delay_ms") == delay_ms
                 and bool(r.get("load")) == loaded and r.get("nice", 0) == nice), None)


def engine_lateness(d: dict, loaded: bool = False, relay: str = "engine") -> Figures | None:
    """bench_engine's p99 at 1 ms for `relay`; the goal is the default engine's (`engine`),
    the other relays are shown beside it."""
    late = _late_row(d, relay, 1, loaded, ENGINE_NICE)
    bare = _late_row(d, "bare", 0, loaded, ENGINE_NICE)
    if late is None:
        return None
    p99, x = fig(late, "p99_us"), fig(late, "p99_ratio")
    base = med(fig(bare, "p99_us")) if bare else None
    under = f" beside {late['load']} busy processes" if loaded else ""
    cpu = f"; engine CPU {med(fig(late, 'cpu_share')):.0%} of a core" if "cpu_share" in late \
        else ""
    # to the receiving socket (kernel receive timestamps) where the row has the receiving
    # process's figure beside it; rows from before that were measured at the process
    app = fig(late, "app_p99_us")
    at = f"; at the receiving process (its wake-up included) {us(app)}" if app else ""
    return Figures(us(p99), f"bare relay one-way p99 {us(sp(base))}{under}{cpu}{at}",
                   ratio(x), (Check(p99, "<=", 400.0),) if relay == "engine" else (),
                   n_of(p99, x))


def links_5g(d: dict) -> Figures | None:
    rows = (d.get("results") or {}).get("userspace", [])
    r = next((r for r in rows if r.get("kind") == "rate" and r.get("mtu") == 1500
              and r.get("rate_bps") == 5_000_000_000), None)
    if r is None:
        return None
    gp, x = fig(r, "tcp_goodput_bps"), fig(r, "tcp_vs_ceiling")
    ceiling = r.get("ceiling_bps") or r["rate_bps"] * (1500 - 52) / 1500
    return Figures(gbit(gp), f"header ceiling {ceiling / 1e9:.2f} Gbit/s", ratio(x),
                   (Check(x, ">=", 0.9),), n_of(gp, x))


def _fwd_row(d: dict, relay: str, size: int) -> dict | None:
    return next((r for r in d.get("forwarding", [])
                 if r.get("relay") == relay and r.get("payload_bytes") == size), None)


def switch_per_core(d: dict) -> Figures | None:
    sw, bare = _fwd_row(d, "switch", 1400), _fwd_row(d, "bare", 1400)
    if sw is None:
        return None
    pc, x = fig(sw, "pps_per_relay_core"), fig(sw, "x_bare_per_core")
    base = med(fig(bare, "pps_per_relay_core")) if bare else None
    text = f"bare AF_PACKET relay {kpps(sp(base))}"
    core = sw.get("core_us_per_packet")
    if core and base:  # what the switch adds to the relay's packet, measured sans-IO
        text += (f"; the switch core's Python alone {core:.2f} us a packet, against the "
                 f"relay's whole packet {1e6 / base:.2f} us")
    return Figures(kpps(pc), text, ratio(x),
                   (Check(pc, ">=", 400e3), Check(x, ">=", 0.9)), n_of(pc, x))


def switch_delivered(d: dict) -> Figures | None:
    sw, bare = _fwd_row(d, "switch", 1400), _fwd_row(d, "bare", 1400)
    if sw is None:
        return None
    pps, x = fig(sw, "b_pps"), fig(sw, "x_bare_pps")
    base = med(fig(bare, "b_pps")) if bare else None
    return Figures(kpps(pps), f"bare relay {kpps(sp(base))}", ratio(x),
                   (Check(pps, ">=", 200e3),), n_of(pps, x))


def switch_hop_p99(d: dict) -> Figures | None:
    derived = (d.get("latency") or {}).get("derived")
    if not derived:
        return None
    hop = fig(derived, "switch_hop_p99_us")
    kernel = fig(derived, "kernel_p99_us") or sp(
        d["latency"].get("paths", {}).get("kernel", {}).get("p99_us"))
    base = f"kernel-forwarded path RTT p99 {us(sp(med(kernel)))}"
    relay = fig(derived, "relay_hop_p99_us")
    if relay is not None:  # the same rounds through a bare Python relay: the floor of a hop
        base = f"bare relay's hop p99 {us(relay)}; {base}"
    return Figures(us(hop), base, "-", (Check(hop, "<=", 400.0),), n_of(hop))


def memsem_rate(d: dict, before: dict | None = None) -> Figures | None:
    r = d.get("rate")
    if not r or "memory" not in r:
        return None
    rate, x = fig(r["memory"], "rate"), sp(r.get("ratio"))
    base = med(fig(r.get("bare") or {}, "rate"))
    text = unit(rate, 1e3, ".1f", "k") + " txn/s"
    checks: tuple[Check, ...] = ()
    old = med(fig((before or {}).get("rate", {}).get("memory") or {}, "rate"))
    if old and rate and rate.get("median") is not None:
        times = {k: rate[k] / old for k in ("min", "median", "max")} | {"n": rate.get("n")}
        text += (f"; {fmt_spread(times, '.2f')}x the {old / 1e3:.1f}k before "
                 f"({str(before.get('started', ''))[:10] if before else ''})")
        checks = (Check(times, ">=", 3.0),)
    baseline = f"bare UDP relay + echo {unit(sp(base), 1e3, '.1f', 'k')} txn/s"
    ceiling = med(fig(r.get("endpoints") or {}, "rate"))
    if ceiling:  # the same endpoints with the bare relay in the switch's place
        baseline += (f"; the endpoints through the bare relay {ceiling / 1e3:.1f}k (memory "
                     f"path {fmt_spread(sp(r.get('of_endpoints')), '.2f')} of it)")
    return Figures(text, baseline, ratio(x),
                   checks, n=n_of(rate, x),
                   met=None if r.get("ok", True) else "NO: transactions lost")


def _memsem_allreduce(d: dict, size: int) -> Figures | None:
    a = d.get("allreduce") or {}
    sw, ring, x = (sp(a.get(k)) for k in (f"switch {size}", f"ring {size}", f"ratio {size}"))
    if sw is None:
        return None
    base = unit(sp(med(ring)), 1e3, ".1f", " us")
    return Figures(unit(sw, 1e3, ".1f", " us"), f"ring over TCP {base}", ratio(x),
                   (Check(x, "<", 1.0),), n_of(sw, x))


def memsem_allreduce_16k(d: dict) -> Figures | None:
    return _memsem_allreduce(d, 16384)


def memsem_allreduce_256k(d: dict) -> Figures | None:
    return _memsem_allreduce(d, 262144)


def _scale_row(d: dict, size: int) -> dict | None:
    return next((r for r in d.get("rows", []) if r.get("namespaces") == size), None)


def _scale(d: dict, key: str, limit: float) -> Figures | None:
    r = _scale_row(d, 1000)
    if r is None:
        return None
    s, base = fig(r, f"{key}_s"), fig(r, f"ip_batch_{key}_s")
    x = fig(r, f"{key}_vs_ip_batch")
    if x is not None:
        text = ratio(x)
    elif med(s) is not None and med(base):
        text = f"{med(s) / med(base):.2f} (of medians)"
    else:
        text = "-"
    return Figures(secs(s), f"ip -batch {secs(sp(med(base)))}", text,
                   (Check(s, "<", limit),), n_of(s))


def scale_up(d: dict) -> Figures | None:
    return _scale(d, "up", 10.0)


def scale_down(d: dict) -> Figures | None:
    return _scale(d, "down", 5.0)


def scale_traffic(d: dict) -> Figures | None:
    tr = d.get("traffic")
    if not tr:
        return None
    cpu = tr.get("cpu_s_per_gbit")
    return Figures(
        f"{tr.get('gbit_per_s', 0):.2f} Gbit/s, "
        + ("-" if cpu is None else f"{cpu:.1f}") + " CPU s per Gbit",
        measure=f"all-to-all KV through {tr.get('namespaces', '?')} namespaces "
                f"({tr.get('hosts', '?')} hosts): emulated Gbit/s, CPU s per Gbit",
        met="yes" if tr.get("integrity") else "NO: integrity failed", n=1)


def udp_cc(d: dict) -> list[Figures] | None:
    """bench_kv.json's `udp_cc` section (bench_kv runs bench_udp_cc)."""
    d = d.get("udp_cc") or {}
    summary = d.get("summary")
    if not isinstance(summary, dict) or not summary:
        return None
    rate = d.get("rate_bps", 1e9)
    out = []
    for cc, s in summary.items():
        g, drops = sp(s.get("goodput_ratio")), sp(s.get("drops"))
        out.append(Figures(
            f"{unit(g, 1e6 / rate, '.0f', ' Mbit/s')}, drops {fmt_spread(drops, '.0f')}",
            f"rate {rate / 1e9:g} Gbit/s", ratio(g), n=n_of(g, drops),
            measure=f"4 UDP flows into 1 Gbit/s, cc {cc}: goodput / rate, queue drops"))
    return out


def bringup_up(d: dict) -> Figures | None:
    r = next((r for r in d.get("rows", []) if r.get("backend") == "userspace"), None)
    base = next((r for r in d.get("rows", []) if "ip -batch" in r.get("what", "")), None)
    if r is None:
        return None
    up, x = fig(r, "up_s"), fig(r, "up_vs_ip_batch")
    return Figures(secs(up), f"ip -batch {secs(sp(med(fig(base, 'up_s')) if base else None))}",
                   ratio(x), n=n_of(up, x))


def reorder_roce(d: dict) -> Figures | None:
    rows = d.get("rows", [])
    base = next((r for r in rows if r.get("transport") == "roce"
                 and r.get("condition") == "loss"), None)
    reord = next((r for r in rows if r.get("transport") == "roce"
                  and r.get("condition") == "loss+reorder"), None)
    if reord is None:
        return None
    gp, x = fig(reord, "goodput_bps"), fig(reord, "goodput_vs_base")
    b = sp(med(fig(base, "goodput_bps"))) if base else None
    return Figures(unit(gp, 1e6, ".1f", " Mbit/s"), f"loss only {unit(b, 1e6, '.1f', ' Mbit/s')}",
                   ratio(x), n=n_of(gp, x))


HEADLINES: tuple[Headline, ...] = (
    Headline("KV goodput / raw Python socket, unshaped veth, 1 MiB chunks", "bench_kv",
             ">= 0.9 in every one of 5 runs", kv_goodput, min_runs=5),
    Headline("64 KiB chunk one-way latency / raw ping-pong half-RTT, p50", "bench_kv",
             "<= 2x", kv_latency_p50),
    Headline("64 KiB chunk one-way latency / raw ping-pong half-RTT, p99", "bench_kv",
             "<= 2x", kv_latency_p99),
    Headline("userspace link engine, packets/s, MTU 1500", "bench_engine",
             ">= 500k, and >= 0.9 of the bare relay", engine_pps),
    Headline("userspace TCP goodput at 5 Gbit/s, MTU 1500, / header ceiling", "bench_links",
             ">= 0.9", links_5g),
    Headline("RoCE switch forwarding per switch CPU-second, 1400 B", "bench_fabric",
             ">= 400k, and >= 0.9 of the relay", switch_per_core),
    Headline("a -> switch -> b delivered on 2 cores, 1400 B, packets/s", "bench_fabric",
             ">= 200k", switch_delivered),
    Headline("added per switch hop, p99", "bench_fabric", "<= 400 us", switch_hop_p99),
    Headline("delay lateness p99 at 1 ms (the engine as fabric up starts it: spinning 150 us "
             "within a tenth of one CPU)", "bench_engine", "<= 400 us", engine_lateness),
    Headline("delay lateness p99 at 1 ms, under load (one busy process per core)",
             "bench_engine", "<= 400 us", partial(engine_lateness, loaded=True)),
    Headline("delay lateness p99 at 1 ms, engine never spinning (--engine-spin 0)",
             "bench_engine", "-", partial(engine_lateness, relay="engine-sleep")),
    Headline("delay lateness p99 at 1 ms, engine never spinning, under load", "bench_engine",
             "-", partial(engine_lateness, loaded=True, relay="engine-sleep")),
    Headline("delay lateness p99 at 1 ms, engine spinning 150 us without a budget "
             "(--engine-spin 150us)", "bench_engine", "-",
             partial(engine_lateness, relay="engine-spin")),
    Headline("delay lateness p99 at 1 ms, engine spinning 150 us without a budget, under load",
             "bench_engine", "-", partial(engine_lateness, loaded=True, relay="engine-spin")),
    Headline("memory-semantic transactions, 256 B writes, per second", "bench_memsem",
             ">= 3x the rate before issue 18", memsem_rate,
             before="bench_memsem.before-batching"),
    Headline("all-reduce 16 KiB, memsem-single, switch reduce / ring", "bench_memsem",
             "< 1 (switch faster at every size)", memsem_allreduce_16k),
    Headline("all-reduce 256 KiB, memsem-single, switch reduce / ring", "bench_memsem",
             "< 1 (switch faster at every size)", memsem_allreduce_256k),
    Headline("4 UDP flows into 1 Gbit/s: goodput / rate, queue drops", "bench_kv",
             "-", udp_cc),
    Headline("1,000-namespace leaf-spine up", "bench_scale", "< 10 s", scale_up),
    Headline("1,000-namespace leaf-spine down", "bench_scale", "< 5 s", scale_down),
    Headline("all-to-all KV through the fabric: emulated Gbit/s, CPU s per Gbit",
             "bench_scale", "integrity", scale_traffic),
    Headline("100-namespace leaf-spine up, userspace links", "bench_bringup", "-", bringup_up),
    Headline("RoCE goodput, 2% loss + reordering / loss only", "bench_reorder", "-",
             reorder_roce),
)


# -- building the table ---------------------------------------------------------------------


def verdict(checks: tuple[Check, ...], n: int | None, min_runs: int) -> str:
    if not checks:
        return "-"
    for c in checks:
        if c.figure is None or c.figure.get("median") is None:
            return "-"
    ok = True
    for c in checks:
        f = c.figure
        assert f is not None
        v = (f["min"] if c.op == ">=" else f["max"]) if c.every else f["median"]
        ok = ok and (v >= c.limit if c.op == ">=" else v <= c.limit if c.op == "<="
                     else v < c.limit)
    if not ok:
        return "no"
    if min_runs and (n or 0) < min_runs:
        return f"yes, {n or 0} of {min_runs} runs"
    return "yes"


def _date(data: dict, path: Path) -> str:
    """The run's date from its JSON, else the file's modification date (UTC)."""
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    for t in (data.get("date"), data.get("time"), data.get("started"), meta.get("time")):
        if isinstance(t, str) and len(t) >= 10:
            return t[:10]
        if isinstance(t, int | float) and not isinstance(t, bool):
            return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d")
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d")


def _repeats(data: dict) -> int | None:
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    for v in (data.get("repeats"), data.get("repeat"), meta.get("repeats"),
              meta.get("rounds")):
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _cpu(data: dict) -> str:
    """", on CPU-MODEL" where the benchmark recorded its machine's CPU, else ""."""
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    cpu = data.get("cpu") or meta.get("cpu")
    return f", on {cpu}" if isinstance(cpu, str) and cpu else ""


def _quick(data: dict) -> bool:
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    return bool(data.get("quick") or meta.get("quick"))


def _load(path: Path) -> dict | str:
    """The JSON at `path`, or why it could not be read."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return "not run"
    except (OSError, ValueError) as e:
        return f"unreadable ({type(e).__name__})"
    return data if isinstance(data, dict) else "unreadable (not an object)"


def build_rows(results: Path) -> list[Row]:
    """One row per headline figure (or several, for a benchmark that gives one per policy)."""
    rows: list[Row] = []
    cache: dict[str, dict | str] = {}
    for h in HEADLINES:
        if h.bench is None or h.extract is None:
            rows.append(Row(h.measure, "not run", goal=h.goal,
                            when="no benchmark writes it yet"))
            continue
        path = results / f"{h.bench}.json"
        if h.bench not in cache:
            cache[h.bench] = _load(path)
        data = cache[h.bench]
        if isinstance(data, str):
            rows.append(Row(h.measure, data, goal=h.goal, when=f"no {path.name}"
                            if data == "not run" else path.name))
            continue
        try:
            if h.before is not None:
                ref = _load(results / f"{h.before}.json")
                found = h.extract(data, before=ref if isinstance(ref, dict) else None)
            else:
                found = h.extract(data)
        except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as e:
            rows.append(Row(h.measure, f"unreadable ({type(e).__name__}: {e})", goal=h.goal,
                            when=path.name))
            continue
        when = _date(data, path)
        quick = " (--quick)" if _quick(data) else ""
        if found is None or found == []:
            rows.append(Row(h.measure, "not in this run", goal=h.goal, when=when + quick))
            continue
        for f in found if isinstance(found, list) else [found]:
            n = f.n if f.n is not None else _repeats(data)
            runs = "runs not recorded" if n is None else f"{n} run" + ("" if n == 1 else "s")
            rows.append(Row(f.measure or h.measure, f.fabric, f.baseline, f.ratio, h.goal,
                            f.met or verdict(f.checks, n, h.min_runs),
                            f"{when}, {runs}{quick}{_cpu(data)}"))
    return rows


def render(rows: list[Row]) -> str:
    """The block between the markers (markers excluded), ending in a newline."""
    caption = textwrap.wrap(
        "Headline figures against issue 18's goals: each fabric figure and ratio is the "
        "median (min-max) over its benchmark's repeats, each ratio taken per repeat against "
        "a baseline measured in the same repeat. Regenerate after running the benchmarks "
        "(as root, on a quiet machine) with `python3 scripts/perf_table.py`. Machines of "
        "one kind differ in CPU: a row names the CPU its benchmark recorded (a row without "
        "one comes from a JSON older than that record); compare a figure with its own "
        "baseline, not across rows.", 95)
    lines = [
        "<!-- generated by scripts/perf_table.py from results/bench_*.json: "
        "edit those, not this -->",
        *caption,
        "",
        "| " + " | ".join(HEADER) + " |",
        "| " + " | ".join("---" for _ in HEADER) + " |",
    ]
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in r.cells()) + " |")
    return "\n".join(lines) + "\n"


def splice(readme: str, block: str) -> str:
    """`readme` with the text between the markers replaced by `block`."""
    try:
        head, rest = readme.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
    except ValueError:
        raise SystemExit(f"perf_table: README has no '{BEGIN}' ... '{END}' block; add the "
                         "two markers where the table goes") from None
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=REPO / "results",
                    help="where the bench_*.json are (default %(default)s)")
    ap.add_argument("--readme", type=Path, default=REPO / "README.md")
    ap.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 if the README's table differs from the JSON")
    ap.add_argument("--print", action="store_true", help="print the block, change nothing")
    args = ap.parse_args(argv)
    rows = build_rows(args.results)
    block = render(rows)
    if args.print:
        print(block, end="")
        return 0
    old = args.readme.read_text()
    new = splice(old, block)
    if args.check:
        if new == old:
            return 0
        sys.stderr.writelines(difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True),
            str(args.readme), f"{args.readme} from {args.results}"))
        print(f"perf_table: {args.readme}'s performance table differs from {args.results}; "
              "run python3 scripts/perf_table.py", file=sys.stderr)
        return 1
    if new != old:
        args.readme.write_text(new)
        print(f"perf_table: wrote {len(rows)} rows into {args.readme}")
    else:
        print(f"perf_table: {args.readme} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
