#!/usr/bin/env python3
"""How fast a fabric comes up and goes down, against `ip -batch` doing the same in one run.

Fabric: a leaf-spine with 100 namespaces (4 spines, 16 leaves, 80 hosts: 144 links), built by
`fabric`'s lifecycle (plan, kernel adapter, routes, hosts files, and for the userspace backend
the link engine attaching to 288 TUN devices). Baseline: `ip -batch` creating the same number
of namespaces and veth pairs, addressed and up (no routes), the cheapest way iproute2 knows.
Targets (issue 2): up < 2 s, down < 1 s. Prints a table, writes JSON (--json).

Run as root: python3 scripts/bench_bringup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default="results/bench_bringup.json")
    args = ap.parse_args()
    topo = parse_topology(TOPO)
    n_ns, n_links = len(topo.nodes), len(topo.links)
    rows = []
    base = [ip_batch_baseline(n_ns, n_links) for _ in range(args.repeat)]
    base_up = statistics.median(b[0] for b in base)
    base_down = statistics.median(b[1] for b in base)
    rows.append({"what": "ip -batch (netns + veth, addressed, up; no routes)",
                 "up_s": base_up, "down_s": base_down})
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
        pts = [fabric_point(backend, text) for _ in range(args.repeat)]
        rows.append({"what": f"fabric up/down, {label}", "backend": backend,
                     "up_s": statistics.median(p[0] for p in pts),
                     "down_s": statistics.median(p[1] for p in pts),
                     "steps": pts[0][2], "links": pts[0][3]})
    print(f"{n_ns} namespaces, {n_links} links; median of {args.repeat}")
    print(f"{'what':<52} {'up s':>7} {'down s':>7} {'up / ip -batch':>15}")
    for r in rows:
        print(f"{r['what']:<52} {r['up_s']:>7.3f} {r['down_s']:>7.3f} "
              f"{r['up_s'] / base_up:>15.2f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"namespaces": n_ns, "links": n_links, "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
