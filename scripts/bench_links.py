#!/usr/bin/env python3
"""Configured vs measured link properties, per available backend, with ping and iperf3.

For each backend this host can run (`--backends`), builds a two-node fabric per point of a
rate sweep (TCP and UDP goodput against the configured rate, at 1 ms delay) and a delay sweep
(ping RTT against 2 x delay, at 100 Mbit/s), plus a loss point and a jitter point, and prints
configured, measured and their ratio. The userspace backend also reports the link engine's CPU
per Gbit/s carried. Each point is measured --repeats times on the same fabric; the JSON gives
each figure's median and its min/median/max over the repeats (`spread`). Writes everything to
JSON (--json).

TCP goodput can at most reach rate x (MTU - 52) / MTU (IPv4 + TCP headers with timestamps):
the `vs ceiling` column divides by that, which is what "accurate to 5%" is judged on.

Run as root: python3 scripts/bench_links.py [--backends userspace,netem] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabric.errors import FabricError  # noqa: E402
from fabric.net import lifecycle  # noqa: E402
from fabric.net.doctor import choose_backend  # noqa: E402
from fabric.plan import plan_fabric  # noqa: E402
from fabric.run.probe import iperf3, ping  # noqa: E402
from fabric.topology import parse_topology  # noqa: E402
from fabric.units import format_rate, format_time  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import cpu_model, cpu_seconds  # noqa: E402
from _spread import fmt_spread, spread  # noqa: E402

PAIR = """
name: bench
nodes: {{a: {{}}, b: {{}}}}
links:
  - endpoints: [a, b]
    rate: {rate}
    delay: {delay}
    jitter: {jitter}
    loss: {loss}
    mtu: {mtu}
"""


class Pair:
    """A two-node fabric, up for the duration of a `with` block."""

    def __init__(self, backend: str, **kw: str) -> None:
        kw.setdefault("jitter", "0ms")
        kw.setdefault("loss", "0%")
        kw.setdefault("mtu", "1500")
        self.topo = parse_topology(PAIR.format(**kw))
        self.backend = backend

    def __enter__(self) -> Pair:
        self.state = lifecycle.bring_up(plan_fabric(self.topo, backend=self.backend))
        self.a = self.state.netns_of("a")
        self.b = self.state.netns_of("b")
        self.b_addr = self.state.nodes["b"]["loopback"]
        ping(self.a, self.b_addr, 2)
        return self

    def __exit__(self, *exc: object) -> None:
        lifecycle.remove_fabric(self.state)


def _summarise(runs: list[dict], keys: tuple[str, ...]) -> dict:
    """The first run's fixed fields, each of `keys` as its median (the printed table's), and
    `spread`: min/median/max of each over the repeats; `runs`: each repeat's figures."""
    row = {k: v for k, v in runs[0].items() if k not in keys}
    sp = {k: spread(r[k] for r in runs) for k in keys}
    row.update({k: v["median"] for k, v in sp.items()}, spread=sp, repeats=len(runs),
               runs=[{k: r[k] for k in keys} for r in runs])
    return row


RATE_KEYS = ("tcp_goodput_bps", "tcp_ratio", "tcp_vs_ceiling", "udp_received_bps", "udp_ratio",
             "engine_cpu_s_per_gbit", "engine_cpu_share")
DELAY_KEYS = ("rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "rtt_mdev_ms", "ping_loss_pct",
              "rtt_ratio")


def rate_point(backend: str, rate: str, mtu: int, seconds: float, repeats: int = 1) -> dict:
    """TCP and UDP goodput through one link, `repeats` times on the same fabric; the baseline
    (the configured rate and its header ceiling) is fixed, so each ratio's spread is the
    goodput's over the same constant."""
    with Pair(backend, rate=rate, delay="1ms", mtu=str(mtu)) as p:
        bps = p.topo.links[0].forward.rate_bps
        runs = []
        for _ in range(repeats):
            cpu0, t0 = cpu_seconds(p.state.engine_pid), time.monotonic()
            tcp = iperf3(p.a, p.b, p.b_addr, seconds)
            cpu1, t1 = cpu_seconds(p.state.engine_pid), time.monotonic()
            udp = iperf3(p.a, p.b, p.b_addr, seconds, udp_rate_bps=int(bps * 1.2))
            tcp_bps = tcp.get("end", {}).get("sum_received", {}).get("bits_per_second", 0.0)
            udp_bps = udp.get("end", {}).get("sum", {}).get("bits_per_second", 0.0)
            udp_lost = udp.get("end", {}).get("sum", {}).get("lost_percent")
            # UDP: what arrived = sent x (1 - lost)
            udp_recv = udp_bps * (1 - (udp_lost or 0) / 100)
            ceiling = bps * (mtu - 52) / mtu
            gbits = tcp_bps * seconds / 1e9
            runs.append({
                "kind": "rate", "rate_bps": bps, "mtu": mtu, "ceiling_bps": ceiling,
                "tcp_goodput_bps": tcp_bps, "tcp_ratio": tcp_bps / bps,
                "tcp_vs_ceiling": tcp_bps / ceiling,
                "udp_received_bps": udp_recv,
                "udp_ratio": udp_recv * (mtu) / (mtu - 28) / bps,
                "engine_cpu_s_per_gbit": ((cpu1 - cpu0) / gbits) if p.state.engine_pid and gbits
                else None,
                "engine_cpu_share": ((cpu1 - cpu0) / (t1 - t0)) if p.state.engine_pid
                else None,
            })
        return _summarise(runs, RATE_KEYS)


def delay_point(backend: str, delay: str, count: int, jitter: str = "0ms",
                loss: str = "0%", repeats: int = 1) -> dict:
    with Pair(backend, rate="100Mbps", delay=delay, jitter=jitter, loss=loss) as p:
        shape = p.topo.links[0].forward
        interval = 0.003 if loss != "0%" else 0.02
        want_ms = 2 * shape.delay_ns / 1e6
        runs = []
        for _ in range(repeats):
            r = ping(p.a, p.b_addr, count, interval=interval)
            runs.append({
                "kind": "delay", "delay_ns": shape.delay_ns, "jitter_ns": shape.jitter_ns,
                "loss_ppm": shape.loss_ppm, "count": count,
                "rtt_want_ms": want_ms, "rtt_min_ms": r.get("min"), "rtt_avg_ms": r.get("avg"),
                "rtt_max_ms": r.get("max"), "rtt_mdev_ms": r.get("mdev"),
                "ping_loss_pct": r["loss"],
                "rtt_ratio": (r["avg"] / want_ms) if r.get("avg") and want_ms else None,
            })
        return _summarise(runs, DELAY_KEYS)


def guest_netem(quick: bool, repeats: int) -> dict[str, list[dict]]:
    """Run this script's netem sweep in a guest kernel with netem; its rows, labelled.

    The guest is the first of fabric.testing.guest's backends that boots here (user-mode
    Linux, QEMU with KVM, QEMU emulated); the rows' label names it, because an emulated CPU
    bounds what the guest can drive.
    """
    import tempfile

    from fabric.testing.guest import GuestUnavailable, job_parent, run_in_guest

    with tempfile.TemporaryDirectory(dir=job_parent()) as tmp:
        out = Path(tmp) / "guest.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--backends", "netem",
                "--guest-sweep", "--json", str(out), "--repeats", str(repeats)] + (
                    ["--quick"] if quick else [])
        try:
            res = run_in_guest(argv, cwd=str(Path(__file__).resolve().parents[1]),
                               timeout=1200, rw_dirs=[tmp],
                               on_try=lambda name: print(f"netem in a guest: trying {name}",
                                                         flush=True))
        except GuestUnavailable as e:
            print(f"netem in a guest: {e}")
            return {}
        for v in res.passed_over:
            print(f"netem in a guest: passed over {v.backend}: {v.reason}")
        if not res.ok or not out.exists():
            print(f"netem in a {res.label} failed (exit {res.exit_code}):\n{res.output[-2000:]}")
            return {}
        data = json.loads(out.read_text())
    print(f"netem in a {res.label}: boot {res.boot_seconds:.1f} s, sweep {res.run_seconds:.1f} s")
    return {f"netem({res.backend})": data["results"]["netem"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="auto",
                    help="comma list of netem,userspace (default: every one this host runs)")
    ap.add_argument("--quick", action="store_true", help="fewer points, shorter runs, "
                    "2 repeats")
    ap.add_argument("--repeats", type=int, help="measure each point this many times on the "
                    "same fabric (min/median/max reported; default 3, quick 2)")
    ap.add_argument("--json", default="results/bench_links.json")
    ap.add_argument("--netem-in-guest", action="store_true",
                    help="also measure the netem backend inside a guest kernel with netem "
                         "(user-mode Linux or QEMU, whichever boots here; for hosts without "
                         "sch_netem; the guest's CPU bounds it, an emulated one most)")
    ap.add_argument("--guest-sweep", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.backends == "auto":
        backends = []
        for b in ("netem", "userspace"):
            try:
                choose_backend(b)
                backends.append(b)
            except FabricError as e:
                print(f"skipping {b}: {e}")
    else:
        backends = args.backends.split(",")
    seconds = 2.0 if args.quick else 4.0
    repeats = args.repeats or (2 if args.quick else 3)
    if repeats < 1:
        ap.error("--repeats: at least 1")
    rates = ["10Mbps", "100Mbps", "1Gbps"] if args.quick else \
        ["10Mbps", "100Mbps", "500Mbps", "1Gbps", "2Gbps", "5Gbps"]
    delays = ["0.1ms", "1ms", "10ms"] if args.quick else \
        ["0.1ms", "0.5ms", "1ms", "10ms", "100ms"]
    big_mtu_rates = ["1Gbps"] if args.quick else ["1Gbps", "5Gbps"]
    if args.guest_sweep:  # what a guest's slow CPU can drive
        rates, delays, big_mtu_rates = ["10Mbps", "50Mbps", "100Mbps"], ["1ms", "10ms",
                                                                          "100ms"], []
    results: dict[str, list[dict]] = {}
    if args.netem_in_guest:
        results.update(guest_netem(args.quick, repeats))
    for backend in backends:
        rows: list[dict] = []
        for rate in rates:
            rows.append(rate_point(backend, rate, 1500, seconds, repeats))
            print(f"{backend} {rate} mtu 1500: tcp {rows[-1]['tcp_ratio']:.3f}", flush=True)
        for rate in big_mtu_rates:
            rows.append(rate_point(backend, rate, 9000, seconds, repeats))
            print(f"{backend} {rate} mtu 9000: tcp {rows[-1]['tcp_ratio']:.3f}", flush=True)
        for delay in delays:
            count = 20 if delay == "100ms" else 50
            rows.append(delay_point(backend, delay, count, repeats=repeats))
            print(f"{backend} delay {delay}: rtt avg {rows[-1]['rtt_avg_ms']}", flush=True)
        # 3000 round trips: the loss estimate's standard error is then ~0.5 points
        rows.append(delay_point(backend, "10ms", 3000 if not args.quick else 1000, loss="5%",
                                repeats=repeats))
        rows.append(delay_point(backend, "10ms", 200, jitter="2ms", repeats=repeats))
        results[backend] = rows

    print()
    print(f"medians over {repeats} repeats; '/ceiling' also as median (min-max)")
    print(f"{'backend':<16} {'rate':>10} {'mtu':>5} {'TCP goodput':>12} {'/rate':>6} "
          f"{'/ceiling':>8} {'min-max':>11} {'UDP rx':>12} {'/rate':>6} "
          f"{'engine CPU s/Gbit':>17}")
    for backend, rows in results.items():
        for r in rows:
            if r["kind"] != "rate":
                continue
            cpu = r["engine_cpu_s_per_gbit"]
            vc = r.get("spread", {}).get("tcp_vs_ceiling")
            mm = f"{vc['min']:.3f}-{vc['max']:.3f}" if vc and vc["n"] else "-"
            print(f"{backend:<16} {format_rate(r['rate_bps']):>10} {r['mtu']:>5} "
                  f"{format_rate(round(r['tcp_goodput_bps'])):>12} {r['tcp_ratio']:>6.3f} "
                  f"{r['tcp_vs_ceiling']:>8.3f} {mm:>11} "
                  f"{format_rate(round(r['udp_received_bps'])):>12} "
                  f"{r['udp_ratio']:>6.3f} {'-' if cpu is None else f'{cpu:.3f}':>17}")
    print()
    print(f"{'backend':<16} {'delay':>8} {'jitter':>7} {'loss':>6} {'RTT want':>9} {'min':>8} "
          f"{'avg':>8} {'max':>8} {'mdev':>7} {'avg/want':>8} {'avg/want spread':>21} "
          f"{'ping loss':>9}")
    for backend, rows in results.items():
        for r in rows:
            if r["kind"] != "delay":
                continue
            def ms(x: float | None) -> str:
                return "-" if x is None else f"{x:.3f}"
            ratio = r["rtt_ratio"]
            print(f"{backend:<16} {format_time(r['delay_ns']):>8} "
                  f"{format_time(r['jitter_ns']) if r['jitter_ns'] else '-':>7} "
                  f"{r['loss_ppm'] / 1e4:>5g}% {r['rtt_want_ms']:>9.3f} {ms(r['rtt_min_ms']):>8} "
                  f"{ms(r['rtt_avg_ms']):>8} {ms(r['rtt_max_ms']):>8} {ms(r['rtt_mdev_ms']):>7} "
                  f"{'-' if ratio is None else f'{ratio:.3f}':>8} "
                  f"{fmt_spread(r.get('spread', {}).get('rtt_ratio'), '.3f'):>21} "
                  f"{r['ping_loss_pct']:>8.1f}%")
    lossy = [r for rows in results.values() for r in rows if r.get("loss_ppm")]
    for r in lossy:
        # per-direction loss p: a ping round trip survives with (1-p)^2
        p = r["loss_ppm"] / 1e6
        print(f"loss {p:.0%} per direction: expected round-trip loss {1 - (1 - p) ** 2:.2%}, "
              f"measured {r['ping_loss_pct']:.2f}% (median of {r.get('repeats', 1)} runs of "
              f"{r['count']} pings)")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"host": os.uname().nodename, "cpus": os.cpu_count(),
                               "cpu": cpu_model(),
                               "time": time.time(),
                               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "repeats": repeats, "quick": args.quick, "results": results},
                              indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
