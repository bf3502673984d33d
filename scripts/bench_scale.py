#!/usr/bin/env python3
"""How bring-up and teardown scale with the fabric's size, and where the time goes.

    python3 scripts/bench_scale.py [--sizes 64,256,1000] [--repeat 3] [--profile 256]
                                   [--backend userspace] [--json results/bench_scale.json]

Root only. For each size, a generated leaf-spine of exactly that many namespaces
(64: 4 spines, 4 leaves, 56 hosts; 256: 4, 12, 240; 1000: 8, 32, 960, the issue's), userspace
links at 1 Gbit/s:

- **up / down**: `lifecycle.bring_up(plan_fabric(...))` and `lifecycle.remove_fabric`, wall
  seconds, min / median / max over the repeats; per namespace; and against `ip -batch` making
  the same number of namespaces and veth pairs, addressed and up, in the same run (the
  cheapest iproute2 way, no routes: a floor, not the same work);
- **memory**: the host's MemAvailable before and with the fabric up (kernel objects and the
  link engine), per namespace;
- **reachable**: host-0 pings the last host once through the fabric before it goes down;
- **leftovers**: namespaces of this run's fabrics still present at the end (must be 0).

With `--traffic N,M` (default 256,1000), per size one `fabric run`-style run of all-to-all KV
traffic through that fabric between `--per-leaf` hosts of every leaf (default 2,1: at 256, 24
hosts and 552 ordered pairs; at 1000, 32 hosts and 992; a pair on two leaves crosses a spine),
each ordered pair one transfer of `--pair-tokens` tokens of Llama-3.1-8B's KV (one chunk per
layer at least: 2 MiB a transfer), digests checked: wall time from first send to last chunk,
the bytes moved as emulated Gbit/s, the CPU seconds every process spent (runner, node
processes, link engine) per emulated Gbit moved, and integrity (every transfer ok, every
chunk's digest matched).
Every host against every host (`--per-leaf 0`) is an incast of N-1 TCP flows into each 1
Gbit/s host link: it collapses as TCP incast does (a 56-host run moved 6 GiB at 0.06
Gbit/s, its flows waiting out retransmission timeouts), which measures TCP, not the fabric.

With `--profile N`, one more bring-up of the size-N fabric runs under cProfile and the top
entries by own time and by cumulative time are printed and saved: where the time goes.
Writes JSON and a plot of seconds per namespace against size (where it stops being flat is
where the cost stops growing linearly).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabric.net import lifecycle  # noqa: E402
from fabric.net.kernel import Kernel  # noqa: E402
from fabric.plan import plan_fabric  # noqa: E402
from fabric.topology import parse_topology  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import cpu_model, cpu_seconds  # noqa: E402
from _spread import spread  # noqa: E402
from bench_bringup import ip_batch_baseline  # noqa: E402

SHAPES = {64: (4, 4, 14), 256: (4, 12, 20), 1000: (8, 32, 30)}  # spines, leaves, hosts/leaf

TOPO = """
name: {name}
generate:
  - leaf_spine:
      spines: {spines}
      leaves: {leaves}
      hosts_per_leaf: {hosts}
      uplink: {{rate: 1Gbps}}
      downlink: {{rate: 1Gbps}}
"""


def topology(size: int, name: str) -> str:
    if size not in SHAPES:
        raise SystemExit(f"size {size}: one of {', '.join(map(str, SHAPES))}")
    spines, leaves, hosts = SHAPES[size]
    return TOPO.format(name=name, spines=spines, leaves=leaves, hosts=hosts)


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def ping(ns_from: str, address: str) -> bool:
    r = subprocess.run(["ip", "netns", "exec", ns_from, "ping", "-c", "1", "-W", "5", address],
                       capture_output=True, text=True)
    return r.returncode == 0


def point(size: int, backend: str, tag: str) -> dict:
    topo = parse_topology(topology(size, f"sc{tag}"))
    before = mem_available_kib()
    t0 = time.perf_counter()
    plan = plan_fabric(topo, backend=backend)
    state = lifecycle.bring_up(plan)
    t1 = time.perf_counter()
    try:
        used = before - mem_available_kib()
        hosts = [n for n in topo.nodes if n.startswith("host-")]
        reach = ping(plan.nodes[hosts[0]].netns, plan.nodes[hosts[-1]].loopback.split("/")[0])
    finally:
        t2 = time.perf_counter()
        lifecycle.remove_fabric(state)
        t3 = time.perf_counter()
    return {"up_s": t1 - t0, "down_s": t3 - t2, "memory_kib": used, "reachable": reach,
            "links": len(topo.links), "steps": len(plan.steps)}


def traffic(size: int, backend: str, pair_tokens: int, per_leaf: int) -> dict:
    """All-to-all KV traffic between `per_leaf` hosts of every leaf (0: every host) of the
    size-`size` fabric."""
    from fabric.run.traffic import run_traffic

    text = topology(size, "sctr")
    links = parse_topology(text).links
    by_leaf: dict[str, list[str]] = {}
    for lk in links:
        ends = sorted((lk.a, lk.b), key=lambda n: not n.startswith("leaf-"))
        if ends[0].startswith("leaf-") and ends[1].startswith("host-"):
            by_leaf.setdefault(ends[0], []).append(ends[1])
    hosts = [h for leaf in by_leaf.values() for h in (leaf[:per_leaf] if per_leaf else leaf)]
    text += ("traffic:\n  chunk: 64KiB\n  flows:\n    - {pattern: all-to-all, from: ["
             + ", ".join(hosts) + f"], model: llama-3.1-8b, tokens: {pair_tokens}, requests: 1}}\n")
    topo = parse_topology(text)
    state = lifecycle.bring_up(plan_fabric(topo, backend=backend))
    try:
        engine0 = cpu_seconds(state.engine_pid)
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        res = run_traffic(state, topo, timeout=900.0)
        wall = time.perf_counter() - t0
        engine = cpu_seconds(state.engine_pid) - engine0
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        lifecycle.remove_fabric(state)
    cpu = {"runner": self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime,
           "nodes": kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime,
           "engine": engine}
    moved = sum(c.nbytes for c in res.chunk_records)
    span_ns = max((c.t_last_ns for c in res.chunk_records), default=0) - min(
        (c.t_send_ns for c in res.chunk_records), default=0)
    gbit = moved * 8 / 1e9
    ok = sum(1 for t in res.transfer_records if t.status == "ok")
    return {"namespaces": size, "hosts": len(hosts), "per_leaf": per_leaf,
            "transfers": len(res.transfers),
            "transfers_ok": ok, "chunks": len(res.chunk_records),
            "chunks_bad": sum(1 for c in res.chunk_records if not c.ok),
            "errors": res.errors[:5], "bytes": moved, "wall_s": wall,
            "span_s": span_ns / 1e9, "gbit_per_s": gbit / (span_ns / 1e9) if span_ns else 0.0,
            "cpu_s": cpu, "cpu_s_per_gbit": sum(cpu.values()) / gbit if gbit else None,
            "ready_s": res.ready_seconds,
            "integrity": ok == len(res.transfers) and not res.errors
            and all(c.ok for c in res.chunk_records)}


def profile(size: int, backend: str) -> dict:
    topo = parse_topology(topology(size, "scprof"))
    prof = cProfile.Profile()
    prof.enable()
    state = lifecycle.bring_up(plan_fabric(topo, backend=backend))
    prof.disable()
    lifecycle.remove_fabric(state)
    out = {}
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(15)
        out[key] = buf.getvalue()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64,256,1000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", default="userspace")
    ap.add_argument("--profile", type=int, default=0, help="profile one bring-up of this size")
    ap.add_argument("--traffic", default="256,1000",
                    help="all-to-all KV traffic through these sizes (0: none)")
    ap.add_argument("--pair-tokens", type=int, default=1,
                    help="tokens of KV each ordered host pair moves (at least 2 MiB)")
    ap.add_argument("--per-leaf", default="2,1",
                    help="hosts of each leaf in each all-to-all, one per --traffic size "
                         "(0: every host)")
    ap.add_argument("--json", default="results/bench_scale.json")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    mine = ("fab.sc",)
    try:
        for size in sizes:
            topo = parse_topology(topology(size, "scx"))
            base = [ip_batch_baseline(size, len(topo.links)) for _ in range(args.repeat)]
            pts = [point(size, args.backend, f"{size}-{i}") for i in range(args.repeat)]
            up = [p["up_s"] for p in pts]
            down = [p["down_s"] for p in pts]
            row = {"namespaces": size, "links": pts[0]["links"], "steps": pts[0]["steps"],
                   "up_s": spread(up), "down_s": spread(down),
                   "ip_batch_up_s": spread([b[0] for b in base]),
                   "ip_batch_down_s": spread([b[1] for b in base]),
                   "memory_kib": spread([p["memory_kib"] for p in pts]),
                   "reachable": all(p["reachable"] for p in pts)}
            rows.append(row)
            print(f"{size:>5} namespaces: up {row['up_s']['median']:.2f} s "
                  f"(ip -batch {row['ip_batch_up_s']['median']:.2f} s), down "
                  f"{row['down_s']['median']:.2f} s, reachable {row['reachable']}",
                  flush=True)
        sizes_tr = [int(x) for x in args.traffic.split(",") if int(x)]
        per_leaf = [int(x) for x in args.per_leaf.split(",")]
        per_leaf += per_leaf[-1:] * (len(sizes_tr) - len(per_leaf))
        trs = [traffic(n, args.backend, args.pair_tokens, k)
               for n, k in zip(sizes_tr, per_leaf, strict=False)]
        prof = profile(args.profile, args.backend) if args.profile else None
    finally:
        left = [ns for ns in Kernel.list_netns() if ns.startswith(mine)]
    header = (f"{'namespaces':>10} {'links':>6} {'up s (min/med/max)':>22} {'per ns ms':>9} "
              f"{'ip -batch s':>11} {'up/ip':>6} {'down s':>7} {'MiB':>7} {'reach':>5}")
    print(f"backend {args.backend}; {args.repeat} repeats")
    print(header)
    for r in rows:
        u = r["up_s"]
        print(f"{r['namespaces']:>10} {r['links']:>6} "
              f"{u['min']:>6.2f}/{u['median']:>6.2f}/{u['max']:>6.2f} "
              f"{1e3 * u['median'] / r['namespaces']:>9.2f} "
              f"{r['ip_batch_up_s']['median']:>11.2f} "
              f"{u['median'] / r['ip_batch_up_s']['median']:>6.1f} "
              f"{r['down_s']['median']:>7.2f} {r['memory_kib']['median'] / 1024:>7.0f} "
              f"{'yes' if r['reachable'] else 'NO':>5}")
    for tr in trs:
        c = tr["cpu_s"]
        print(f"all-to-all through {tr['namespaces']} namespaces: {tr['hosts']} hosts, "
              f"{tr['transfers']:,} transfers of {args.pair_tokens} tokens "
              f"({tr['bytes'] / 2**30:.2f} GiB) in {tr['span_s']:.1f} s (wall "
              f"{tr['wall_s']:.1f} s with {tr['ready_s']:.1f} s of node start-up): "
              f"{tr['gbit_per_s']:.2f} Gbit/s emulated; CPU "
              f"{sum(c.values()):.1f} s (runner {c['runner']:.1f}, nodes {c['nodes']:.1f}, "
              f"engine {c['engine']:.1f}) = {tr['cpu_s_per_gbit']:.2f} CPU s per Gbit moved; "
              f"integrity {'OK' if tr['integrity'] else 'FAILED'} ({tr['transfers_ok']:,} "
              f"transfers ok, {tr['chunks_bad']} bad chunks)")
    print(f"leftover namespaces of this benchmark: {len(left)}")
    if prof:
        print(f"profile of one bring-up of {args.profile} namespaces, by own time:")
        print(prof["tottime"])
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"backend": args.backend, "repeat": args.repeat, "rows": rows,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "cpu": cpu_model(), "leftovers": left,
                               "traffic": trs[0] if trs else None,
                               "traffic_runs": trs, "profile": prof},
                              indent=1))
    _plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 1 if (left or not all(r["reachable"] for r in rows)
                 or not all(t["integrity"] for t in trs)) else 0


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        n = [r["namespaces"] for r in rows]
        ax.plot(n, [1e3 * r["up_s"]["median"] / r["namespaces"] for r in rows], "o-",
                label="fabric up")
        ax.plot(n, [1e3 * r["down_s"]["median"] / r["namespaces"] for r in rows], "o-",
                label="fabric down")
        ax.plot(n, [1e3 * r["ip_batch_up_s"]["median"] / r["namespaces"] for r in rows],
                "o--", label="ip -batch up (floor)")
        ax.set_xscale("log")
        ax.set_xlabel("namespaces")
        ax.set_ylabel("ms per namespace (median)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
