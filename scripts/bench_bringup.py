#!/usr/bin/env python3
"""How fast a fabric comes up and goes down, against `ip -batch` doing the same in one run.

Fabric: a leaf-spine with 100 namespaces (4 spines, 16 leaves, 80 hosts: 144 links), built by
`fabric`'s lifecycle (plan, kernel adapter, routes, hosts files, and for the userspace backend
the link engine attaching to 288 TUN devices). Baseline: `ip -batch` creating the same number
of namespaces and veth pairs, addressed and up (no routes), the cheapest way iproute2 knows.
Targets (issue 2): up < 2 s, down < 1 s. Each repeat times the baseline and then every
fabric variant; the table and the JSON give min/median/max over the repeats, and up / ip -batch
per repeat. Prints a table, writes JSON (--json).

Run as root: python3 scripts/bench_bringup.py [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabric.errors import FabricError  # noqa: E402
from fabric.net import lifecycle  # noqa: E402
from fabric.net.doctor import choose_backend  # noqa: E402
from fabric.plan import plan_fabric  # noqa: E402
from fabric.topology import parse_topology  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import cpu_model  # noqa: E402
from _spread import fmt_spread, spread  # noqa: E402

TOPO = """
name: benchup
generate:
  - leaf_spine:
      spines: 4
      leaves: 16
      hosts_per_leaf: 5
      uplink: {rate: 1Gbps, delay: 1ms}
      downlink: {rate: 500Mbps, delay: 1ms}
"""


def ip_batch_baseline(n_ns: int, n_links: int) -> tuple[float, float]:
    """Namespaces and veth pairs in one `ip -batch`, then one `ip -n NS -batch` per namespace
    for addresses and link state (batch lines cannot switch namespace)."""
    names = [f"ipb{os.getpid()}-{i}" for i in range(n_ns)]
    root = [f"netns add {n}" for n in names]
    per_ns: dict[str, list[str]] = {n: [] for n in names}
    for i in range(n_links):
        a, b = names[i % n_ns], names[(i + 1) % n_ns]
        root.append(f"link add v{i}a netns {a} type veth peer name v{i}b netns {b}")
        third, fourth = 4 * i // 256, 4 * i % 256
        per_ns[a] += [f"addr add 198.18.{third}.{fourth + 1}/30 dev v{i}a", f"link set v{i}a up"]
        per_ns[b] += [f"addr add 198.18.{third}.{fourth + 2}/30 dev v{i}b", f"link set v{i}b up"]
    tmp = Path(tempfile.mkdtemp(prefix="ipbatch"))
    (tmp / "root").write_text("\n".join(root) + "\n")
    for n, lines in per_ns.items():
        (tmp / n).write_text("\n".join(lines) + "\n")
    (tmp / "down").write_text("\n".join(f"netns del {n}" for n in names) + "\n")
    try:
        t0 = time.perf_counter()
        r = subprocess.run(["ip", "-batch", str(tmp / "root")], capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"ip -batch failed: {r.stderr.strip()}")
        for n in names:
            subprocess.run(["ip", "-n", n, "-batch", str(tmp / n)], check=True)
        t1 = time.perf_counter()
        subprocess.run(["ip", "-batch", str(tmp / "down")], check=True)
        t2 = time.perf_counter()
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return t1 - t0, t2 - t1


def fabric_point(backend: str, text: str) -> tuple[float, float, int, int]:
    topo = parse_topology(text)
    t0 = time.perf_counter()
    plan = plan_fabric(topo, backend=backend)
    state = lifecycle.bring_up(plan)
    t1 = time.perf_counter()
    lifecycle.remove_fabric(state)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(plan.steps), len(plan.links)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, help="repeats (default 3, quick 2)")
    ap.add_argument("--quick", action="store_true", help="2 repeats")
    ap.add_argument("--json", default="results/bench_bringup.json")
    args = ap.parse_args()
    repeat = args.repeat or (2 if args.quick else 3)
    if repeat < 1:
        ap.error("--repeat: at least 1")
    topo = parse_topology(TOPO)
    n_ns, n_links = len(topo.nodes), len(topo.links)
    variants = []  # (backend, topology text, label)
    for backend in ("netem", "userspace"):
        text, label = TOPO, backend
        try:
            choose_backend(backend)
        except FabricError as e:
            if backend != "netem":
                print(f"skipping {backend}: {e}")
                continue
            # without sch_netem the veth backend still builds veth + tbf + routes: time that
            text, label = TOPO.replace("delay: 1ms", "delay: 0ms"), "veth+tbf, no netem"
            print(f"note: {e}")
        variants.append((backend, text, label))
    # each repeat: the baseline, then every fabric variant, so a ratio compares figures
    # taken moments apart on a shared host
    base: list[tuple[float, float]] = []
    pts: dict[str, list[tuple[float, float, int, int]]] = {b: [] for b, _, _ in variants}
    for i in range(repeat):
        base.append(ip_batch_baseline(n_ns, n_links))
        for backend, text, _ in variants:
            pts[backend].append(fabric_point(backend, text))
        print(f"  repeat {i + 1}/{repeat}: ip -batch up {base[-1][0]:.2f} s; " + ", ".join(
            f"{b} up {p[-1][0]:.2f} s" for b, p in pts.items()), flush=True)
    sp = {"up_s": spread(b[0] for b in base), "down_s": spread(b[1] for b in base)}
    rows = [{"what": "ip -batch (netns + veth, addressed, up; no routes)",
             "up_s": sp["up_s"]["median"], "down_s": sp["down_s"]["median"], "spread": sp,
             "runs": [{"up_s": u, "down_s": d} for u, d in base]}]
    for backend, _, label in variants:
        ps = pts[backend]
        sp = {"up_s": spread(p[0] for p in ps), "down_s": spread(p[1] for p in ps),
              "up_vs_ip_batch": spread(p[0] / b[0] for p, b in zip(ps, base, strict=True))}
        rows.append({"what": f"fabric up/down, {label}", "backend": backend,
                     **{k: v["median"] for k, v in sp.items()}, "spread": sp,
                     "runs": [{"up_s": p[0], "down_s": p[1]} for p in ps],
                     "steps": ps[0][2], "links": ps[0][3]})
    print(f"{n_ns} namespaces, {n_links} links; median (min-max) of {repeat}; up / ip -batch "
          "per repeat, against the ip -batch of the same repeat")
    print(f"{'what':<52} {'up s':>19} {'down s':>19} {'up / ip -batch':>17}")
    for r in rows:
        s = r["spread"]
        ratio = fmt_spread(s["up_vs_ip_batch"]) if "up_vs_ip_batch" in s else "1"
        print(f"{r['what']:<52} {fmt_spread(s['up_s'], '.3f'):>19} "
              f"{fmt_spread(s['down_s'], '.3f'):>19} {ratio:>17}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"namespaces": n_ns, "links": n_links, "repeat": repeat,
                               "quick": args.quick,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "host": os.uname().nodename, "cpu": cpu_model(),
                               "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
