#!/usr/bin/env python3
"""KV transfer performance against baselines measured in the same run.

1. Unshaped path (two namespaces, plain veth): goodput of `fabric run` moving 1 MiB chunks
   (TCP, seeded content, digest checked per chunk) against a raw Python socket
   sender/receiver (sendall / recv_into of the same sizes, no digests) and iperf3.
   Target: KV >= 0.8 x raw.
2. Shaped link (userspace backend: TUN + kernel tbf + engine): KV goodput against the
   configured rate. Target: >= 0.9 x rate.
3. Per-chunk latency overhead: 64 KiB chunks one at a time (closed loop) vs a raw TCP
   ping-pong of the same size on the same path.
4. Memory: the receiving node's peak RSS growth while moving 1 GiB (target: under 2 x the
   largest chunk in flight, not the transfer size).
5. Start-up: 64 node processes forked and listening (target: under 5 s).

Prints a table, writes JSON (--json). Run as root: python3 scripts/bench_kv.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabric.net import lifecycle  # noqa: E402
from fabric.plan import plan_fabric  # noqa: E402
from fabric.run.probe import iperf3  # noqa: E402
from fabric.run.traffic import run_traffic  # noqa: E402
from fabric.topology import parse_topology  # noqa: E402

PAIR = """
name: benchkv
nodes: {{a: {{}}, b: {{}}}}
links:
  - {{endpoints: [a, b]{shape}}}
traffic:
  flows:
    - {{pattern: bulk, from: a, to: b, size: {size}, requests: {requests}, chunk: {chunk}}}
"""

RAW_SERVER = r"""
import socket, sys, time, numpy as np
addr, total, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((addr, 7600)); ls.listen(1); print("ready", flush=True)
c, _ = ls.accept(); buf = np.empty(chunk, np.uint8); view = memoryview(buf); got = 0
t0 = None
while got < total:
    k = c.recv_into(view, min(chunk, total - got))
    if not k: break
    if t0 is None: t0 = time.monotonic_ns()
    got += k
print(got, time.monotonic_ns() - t0, flush=True)
"""

RAW_CLIENT = r"""
import socket, sys, numpy as np
addr, total, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((addr, 7600)); buf = np.random.default_rng(1).integers(
    0, 255, chunk, dtype=np.uint8); view = memoryview(buf); sent = 0
while sent < total:
    n = min(chunk, total - sent); s.sendall(view[:n]); sent += n
s.close()
"""

PINGPONG = r"""
import socket, sys, time, numpy as np
role, addr, size, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
buf = bytearray(size); view = memoryview(buf)
def recv_exact(s):
    got = 0
    while got < size:
        k = s.recv_into(view[got:]); got += k
if role == "server":
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, 7601)); ls.listen(1); print("ready", flush=True)
    c, _ = ls.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(count):
        recv_exact(c); c.sendall(view)
else:
    s = socket.create_connection((addr, 7601))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for _ in range(count):
        t = time.monotonic_ns(); s.sendall(view); recv_exact(s)
        rtts.append(time.monotonic_ns() - t)
    rtts.sort(); print(rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.99)], flush=True)
"""


def in_ns(ns: str, code: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args]


def raw_goodput(state, total: int, chunk: int) -> float:
    b_addr = state.nodes["b"]["loopback"]
    server = subprocess.Popen(in_ns(state.netns_of("b"), RAW_SERVER, b_addr, str(total),
                                    str(chunk)), stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    server.stdout.readline()
    subprocess.run(in_ns(state.netns_of("a"), RAW_CLIENT, b_addr, str(total), str(chunk)),
                   check=True)
    got, ns = (int(x) for x in server.stdout.readline().split())
    server.wait()
    return got * 8 / (ns / 1e9)


def pingpong(state, size: int, count: int) -> tuple[int, int]:
    b_addr = state.nodes["b"]["loopback"]
    server = subprocess.Popen(in_ns(state.netns_of("b"), PINGPONG, "server", b_addr, str(size),
                                    str(count)), stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    server.stdout.readline()
    out = subprocess.run(in_ns(state.netns_of("a"), PINGPONG, "client", b_addr, str(size),
                               str(count)), capture_output=True, text=True, check=True)
    server.wait()
    p50, p99 = (int(x) for x in out.stdout.split())
    return p50, p99


def kv_goodput(res) -> float:
    recs = [r for r in res.transfer_records if r.status == "ok"]
    nbytes = sum(r.nbytes for r in recs)
    span = max(r.t_done_ns for r in recs) - min(r.t_start_ns for r in recs)
    return nbytes * 8 / (span / 1e9)


def fabric(text: str, backend: str):
    topo = parse_topology(text)
    return topo, lifecycle.bring_up(plan_fabric(topo, backend=backend))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="results/bench_kv.json")
    args = ap.parse_args()
    gib = 1 << 30
    total = gib // 2 if args.quick else 2 * gib
    rows: list[dict] = []

    # 1. unshaped: raw vs iperf3 vs KV
    text = PAIR.format(shape="", size=total // 4, requests=4, chunk="1MiB")
    topo, state = fabric(text, "netem")  # plain veth: no qdisc when nothing is shaped
    try:
        raw = statistics.median(raw_goodput(state, total, 1 << 20) for _ in range(3))
        ip3 = iperf3(state.netns_of("a"), state.netns_of("b"), state.nodes["b"]["loopback"],
                     3)["end"]["sum_received"]["bits_per_second"]
        runs = [run_traffic(state, topo, timeout=120) for _ in range(3)]
        kv = statistics.median(kv_goodput(r) for r in runs)
        mem = runs[-1].node_memory.get("b", (0, 0))
        rows.append({"what": "unshaped veth, 1 MiB chunks", "raw_bps": raw, "iperf3_bps": ip3,
                     "kv_bps": kv, "kv_vs_raw": kv / raw, "kv_vs_iperf3": kv / ip3,
                     "integrity_ok": all(r.errors == [] for r in runs)})
        rows.append({"what": "receiver memory, 1 MiB chunks", "moved_bytes": total // 4 * 4,
                     "rss_start_kib": mem[0], "peak_kib": mem[1],
                     "growth_kib": mem[1] - mem[0], "largest_chunk_kib": 1024})
        # 3. per-chunk latency overhead, 64 KiB chunks one at a time
        stopo = parse_topology(PAIR.format(shape="", size="64KiB", requests=200,
                                           chunk="64KiB"))
        res = run_traffic(state, stopo, timeout=120)
        smem = res.node_memory.get("b", (0, 0))
        rows.append({"what": "receiver memory, 64 KiB chunks", "moved_bytes": 200 * 65536,
                     "rss_start_kib": smem[0], "peak_kib": smem[1],
                     "growth_kib": smem[1] - smem[0], "largest_chunk_kib": 64})
        lat = sorted(c.t_last_ns - c.t_send_ns for c in res.chunk_records)
        p50, p99 = pingpong(state, 64 * 1024, 200)
        rows.append({"what": "64 KiB chunk one-way latency vs raw ping-pong RTT/2",
                     "kv_p50_us": lat[len(lat) // 2] / 1e3,
                     "kv_p99_us": lat[int(len(lat) * 0.99)] / 1e3,
                     "raw_half_rtt_p50_us": p50 / 2e3, "raw_half_rtt_p99_us": p99 / 2e3,
                     "overhead_p50_us": (lat[len(lat) // 2] - p50 / 2) / 1e3})
    finally:
        lifecycle.remove_fabric(state)

    # 2. shaped: KV vs configured rate (userspace backend)
    for rate in ("100Mbps", "1Gbps"):
        size = 64 << 20 if rate == "100Mbps" else 256 << 20
        text = PAIR.format(shape=f", rate: {rate}, delay: 1ms", size=size, requests=2,
                           chunk="1MiB")
        topo, state = fabric(text, "userspace")
        try:
            res = run_traffic(state, topo, timeout=120)
            bps = topo.links[0].forward.rate_bps
            kv = kv_goodput(res)
            rows.append({"what": f"shaped {rate} 1 ms (userspace)", "rate_bps": bps,
                         "kv_bps": kv, "kv_vs_rate": kv / bps,
                         "integrity_ok": res.errors == []})
        finally:
            lifecycle.remove_fabric(state)

    # 5. start-up of 64 nodes
    hosts = "\n".join(f"  h{i}: {{}}" for i in range(64))
    links = "\n".join(f"  - {{endpoints: [sw, h{i}]}}" for i in range(64))
    senders = ", ".join(f"h{i}" for i in range(1, 64))
    text = (f"name: benchkv64\nnodes:\n  sw: {{kind: switch}}\n{hosts}\nlinks:\n{links}\n"
            f"traffic:\n  flows:\n    - {{pattern: incast, from: [{senders}], to: h0, "
            f"tokens: 16}}\n")
    topo, state = fabric(text, "netem")
    try:
        res = run_traffic(state, topo, timeout=120)
        rows.append({"what": "64 nodes forked and listening", "ready_s": res.ready_seconds,
                     "integrity_ok": res.errors == []})
    finally:
        lifecycle.remove_fabric(state)

    table = []
    for r in rows:
        if "raw_bps" in r:
            table.append((r["what"], f"KV {r['kv_bps'] / 1e9:.2f} Gbit/s",
                          f"raw {r['raw_bps'] / 1e9:.2f} Gbit/s", r["kv_vs_raw"]))
            table.append(("", "", f"iperf3 {r['iperf3_bps'] / 1e9:.2f} Gbit/s",
                          r["kv_vs_iperf3"]))
        elif "rate_bps" in r:
            table.append((r["what"], f"KV {r['kv_bps'] / 1e6:.1f} Mbit/s",
                          f"rate {r['rate_bps'] / 1e6:.0f} Mbit/s", r["kv_vs_rate"]))
        elif "kv_p50_us" in r:
            table.append((r["what"], f"p50 {r['kv_p50_us']:.0f} / p99 {r['kv_p99_us']:.0f} us",
                          f"p50 {r['raw_half_rtt_p50_us']:.0f} / p99 "
                          f"{r['raw_half_rtt_p99_us']:.0f} us",
                          r["kv_p50_us"] / r["raw_half_rtt_p50_us"]))
        elif "growth_kib" in r:
            table.append((r["what"], f"+{r['growth_kib'] / 1024:.2f} MiB peak",
                          f"chunk {r['largest_chunk_kib']} KiB",
                          r["growth_kib"] / r["largest_chunk_kib"]))
        elif "ready_s" in r:
            table.append((r["what"], f"{r['ready_s']:.2f} s", "target 5 s", r["ready_s"] / 5))
    print(f"{'measure':<52} {'figure':>28} {'baseline':>28} {'ratio':>7}")
    for what, fig, base, ratio in table:
        print(f"{what:<52} {fig:>28} {base:>28} {ratio:>7.2f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "host": os.uname().nodename}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
