#!/usr/bin/env python3
"""KV transfer performance against baselines measured in the same run.

1. Unshaped path (two namespaces, plain veth): goodput of `fabric run` moving 1 MiB chunks
   (TCP, seeded content, digest checked per chunk) against a raw Python socket
   sender/receiver (sendall / recv_into of the same sizes, no digests) and iperf3.
   Target: KV >= 0.9 x raw in every repeat.
2. Shaped link (userspace backend: TUN + kernel tbf + engine): KV goodput against the
   configured rate. Target: >= 0.9 x rate.
3. Per-chunk latency overhead: 64 KiB chunks one at a time (closed loop) vs a raw TCP
   ping-pong of the same size on the same path. Target: <= 2 x the half RTT at p50 and p99.
   Beside it, the same ping-pong through trio (non-blocking sockets, as a node's I/O): the
   event loop's own floor.
4. Memory: the receiving node's peak RSS growth while moving 1 GiB (target: under 2 x the
   largest chunk in flight, not the transfer size).
5. Start-up: 64 node processes forked and listening (target: under 5 s).
6. UDP congestion control: four UDP flows into one 1 Gbit/s link, goodput against the rate
   and the queue's drops, per policy (`scripts/bench_udp_cc.py`, its own table; "udp_cc" in
   the JSON).

Every figure is measured --repeats times (KV and its baseline alternately, so a ratio
compares figures taken moments apart); the table and the JSON give min/median/max over the
repeats (the JSON also each value). --only picks sections. Prints a table, writes JSON
(--json). Run as root: python3 scripts/bench_kv.py [--quick] [--repeats 5] [--only ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _spread  # noqa: E402 - scripts/_spread.py, beside this file
import bench_udp_cc  # noqa: E402 - scripts/bench_udp_cc.py: the UDP congestion-control section
from _proc import cpu_model  # noqa: E402

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


# The same ping-pong through trio, as a fabric node does its I/O (non-blocking sockets, a
# wait_readable per receive): the event loop's own cost per message, the floor of any node
# built on it.
TRIO_PINGPONG = r"""
import socket, sys, time, trio
role, addr, size, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
buf = bytearray(size); view = memoryview(buf)
async def recv_exact(s):
    got = 0
    while got < size:
        got += await s.recv_into(view[got:])
async def send_all(s):
    sent = 0
    while sent < size:
        sent += await s.send(view[sent:])
async def main():
    if role == "server":
        ls = trio.socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await ls.bind((addr, 7602)); ls.listen(1); print("ready", flush=True)
        c, _ = await ls.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            await recv_exact(c); await send_all(c)
    else:
        s = trio.socket.socket()
        await s.connect((addr, 7602))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtts = []
        for _ in range(count):
            t = time.monotonic_ns(); await send_all(s); await recv_exact(s)
            rtts.append(time.monotonic_ns() - t)
        rtts.sort(); print(rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.99)], flush=True)
trio.run(main)
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


def pingpong(state, size: int, count: int, code: str = PINGPONG) -> tuple[int, int]:
    """RTT p50 and p99 (ns) of `count` ping-pongs of `size` bytes a <-> b (`code`: blocking
    sockets, or TRIO_PINGPONG)."""
    b_addr = state.nodes["b"]["loopback"]
    server = subprocess.Popen(in_ns(state.netns_of("b"), code, "server", b_addr, str(size),
                                    str(count)), stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    server.stdout.readline()
    out = subprocess.run(in_ns(state.netns_of("a"), code, "client", b_addr, str(size),
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


SECTIONS = ("unshaped", "latency", "shaped", "startup", "udp_cc")


def spread(values: list[float]) -> dict[str, Any]:
    """min/median/max (and n) of one figure over the repeats (the shared `_spread` helper),
    and the values themselves."""
    return {**_spread.spread(values), "values": values}


def pct(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def unshaped(state, topo, total: int, repeats: int) -> list[dict]:
    """KV against a raw socket sender/receiver, interleaved: each repeat measures both, so
    each ratio compares figures taken moments apart on this shared machine."""
    raw, ip3, kv, ratio, ok = [], [], [], [], True
    mem = (0, 0)
    for _ in range(repeats):
        r = raw_goodput(state, total, 1 << 20)
        res = run_traffic(state, topo, timeout=120)
        k = kv_goodput(res)
        raw.append(r)
        kv.append(k)
        ratio.append(k / r)
        ok = ok and res.errors == []
        mem = res.node_memory.get("b", (0, 0))
    ip3.append(iperf3(state.netns_of("a"), state.netns_of("b"), state.nodes["b"]["loopback"],
                      3)["end"]["sum_received"]["bits_per_second"])
    return [{"what": "unshaped veth, 1 MiB chunks", "raw_bps": spread(raw),
             "iperf3_bps": spread(ip3), "kv_bps": spread(kv), "kv_vs_raw": spread(ratio),
             "kv_vs_iperf3": spread([k / ip3[0] for k in kv]), "integrity_ok": ok},
            {"what": "receiver memory, 1 MiB chunks", "moved_bytes": total,
             "rss_start_kib": mem[0], "peak_kib": mem[1], "growth_kib": mem[1] - mem[0],
             "largest_chunk_kib": 1024}]


def latency(state, repeats: int, count: int = 200) -> list[dict]:
    """64 KiB chunks one at a time (closed loop) against a raw TCP ping-pong's half RTT."""
    stopo = parse_topology(PAIR.format(shape="", size="64KiB", requests=count, chunk="64KiB"))
    fig: dict[str, list[float]] = {k: [] for k in (
        "kv_p50_us", "kv_p99_us", "raw_half_rtt_p50_us", "raw_half_rtt_p99_us",
        "overhead_p50_us", "ratio_p50", "ratio_p99", "trio_half_rtt_p50_us",
        "trio_half_rtt_p99_us")}
    smem = (0, 0)
    ok = True
    for _ in range(repeats):
        res = run_traffic(state, stopo, timeout=120)
        ok = ok and res.errors == []
        smem = res.node_memory.get("b", (0, 0))
        lat = sorted(c.t_last_ns - c.t_send_ns for c in res.chunk_records)
        p50, p99 = pingpong(state, 64 * 1024, count)
        t50, t99 = pingpong(state, 64 * 1024, count, TRIO_PINGPONG)
        k50, k99 = pct(lat, 0.5) / 1e3, pct(lat, 0.99) / 1e3
        r50, r99 = p50 / 2e3, p99 / 2e3
        for key, v in (("kv_p50_us", k50), ("kv_p99_us", k99), ("raw_half_rtt_p50_us", r50),
                       ("raw_half_rtt_p99_us", r99), ("overhead_p50_us", k50 - r50),
                       ("ratio_p50", k50 / r50), ("ratio_p99", k99 / r99),
                       ("trio_half_rtt_p50_us", t50 / 2e3), ("trio_half_rtt_p99_us", t99 / 2e3)):
            fig[key].append(v)
    return [{"what": "receiver memory, 64 KiB chunks", "moved_bytes": count * 65536,
             "rss_start_kib": smem[0], "peak_kib": smem[1], "growth_kib": smem[1] - smem[0],
             "largest_chunk_kib": 64},
            {"what": "64 KiB chunk one-way latency vs raw ping-pong RTT/2",
             **{k: spread(v) for k, v in fig.items()}, "integrity_ok": ok}]


def shaped(repeats: int) -> list[dict]:
    """KV against the configured rate (userspace backend)."""
    rows = []
    for rate in ("100Mbps", "1Gbps"):
        size = 64 << 20 if rate == "100Mbps" else 256 << 20
        text = PAIR.format(shape=f", rate: {rate}, delay: 1ms", size=size, requests=2,
                           chunk="1MiB")
        topo, state = fabric(text, "userspace")
        try:
            bps = topo.links[0].forward.rate_bps
            kv, ok = [], True
            for _ in range(repeats):
                res = run_traffic(state, topo, timeout=120)
                kv.append(kv_goodput(res))
                ok = ok and res.errors == []
            rows.append({"what": f"shaped {rate} 1 ms (userspace)", "rate_bps": bps,
                         "kv_bps": spread(kv), "kv_vs_rate": spread([k / bps for k in kv]),
                         "integrity_ok": ok})
        finally:
            lifecycle.remove_fabric(state)
    return rows


def startup(repeats: int) -> list[dict]:
    """64 node processes forked and listening."""
    hosts = "\n".join(f"  h{i}: {{}}" for i in range(64))
    links = "\n".join(f"  - {{endpoints: [sw, h{i}]}}" for i in range(64))
    senders = ", ".join(f"h{i}" for i in range(1, 64))
    text = (f"name: benchkv64\nnodes:\n  sw: {{kind: switch}}\n{hosts}\nlinks:\n{links}\n"
            f"traffic:\n  flows:\n    - {{pattern: incast, from: [{senders}], to: h0, "
            f"tokens: 16}}\n")
    topo, state = fabric(text, "netem")
    try:
        ready, ok = [], True
        for _ in range(repeats):
            res = run_traffic(state, topo, timeout=120)
            ready.append(res.ready_seconds)
            ok = ok and res.errors == []
        return [{"what": "64 nodes forked and listening", "ready_s": spread(ready),
                 "integrity_ok": ok}]
    finally:
        lifecycle.remove_fabric(state)


def _mmm(s: dict, scale: float, fmt: str) -> str:
    """min/median/max of a spread, scaled, as one table cell."""
    return "/".join(format(s[k] / scale, fmt) for k in ("min", "median", "max"))


def table(rows: list[dict]) -> list[tuple[str, str, str, str]]:
    """Table lines: measure, figure, baseline, ratio; each a min/median/max over the repeats."""
    out = []
    for r in rows:
        if "raw_bps" in r:
            out.append((r["what"], f"KV {_mmm(r['kv_bps'], 1e9, '.2f')} Gbit/s",
                        f"raw {_mmm(r['raw_bps'], 1e9, '.2f')} Gbit/s",
                        _mmm(r["kv_vs_raw"], 1, ".2f")))
            out.append(("", "", f"iperf3 {r['iperf3_bps']['median'] / 1e9:.2f} Gbit/s",
                        _mmm(r["kv_vs_iperf3"], 1, ".2f")))
        elif "rate_bps" in r:
            out.append((r["what"], f"KV {_mmm(r['kv_bps'], 1e6, '.0f')} Mbit/s",
                        f"rate {r['rate_bps'] / 1e6:.0f} Mbit/s",
                        _mmm(r["kv_vs_rate"], 1, ".2f")))
        elif "kv_p50_us" in r:
            out.append((r["what"] + ", p50", f"{_mmm(r['kv_p50_us'], 1, '.0f')} us",
                        f"{_mmm(r['raw_half_rtt_p50_us'], 1, '.0f')} us",
                        _mmm(r["ratio_p50"], 1, ".2f")))
            out.append(("  p99", f"{_mmm(r['kv_p99_us'], 1, '.0f')} us",
                        f"{_mmm(r['raw_half_rtt_p99_us'], 1, '.0f')} us",
                        _mmm(r["ratio_p99"], 1, ".2f")))
            if "trio_half_rtt_p50_us" in r:
                out.append(("  the same ping-pong through trio (a node's event loop)", "",
                            f"p50 {_mmm(r['trio_half_rtt_p50_us'], 1, '.0f')} us, p99 "
                            f"{_mmm(r['trio_half_rtt_p99_us'], 1, '.0f')} us", ""))
        elif "growth_kib" in r:
            out.append((r["what"], f"+{r['growth_kib'] / 1024:.2f} MiB peak",
                        f"chunk {r['largest_chunk_kib']} KiB",
                        f"{r['growth_kib'] / r['largest_chunk_kib']:.2f}"))
        elif "ready_s" in r:
            out.append((r["what"], f"{_mmm(r['ready_s'], 1, '.2f')} s", "target 5 s",
                        _mmm(r["ready_s"], 5, ".2f")))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="move 512 MiB instead of 2 GiB")
    ap.add_argument("--repeats", type=int, default=5,
                    help="measure each figure this many times (min/median/max reported)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run, of {', '.join(SECTIONS)}")
    ap.add_argument("--json", default="results/bench_kv.json")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown or args.repeats < 1:
        ap.error(f"--only takes {', '.join(SECTIONS)} (got {', '.join(unknown)}); "
                 "--repeats at least 1")
    gib = 1 << 30
    total = gib // 2 if args.quick else 2 * gib
    rows: list[dict] = []

    if "unshaped" in only or "latency" in only:
        text = PAIR.format(shape="", size=total // 4, requests=4, chunk="1MiB")
        topo, state = fabric(text, "netem")  # plain veth: no qdisc when nothing is shaped
        try:
            if "unshaped" in only:
                rows += unshaped(state, topo, total, args.repeats)
            if "latency" in only:
                rows += latency(state, args.repeats)
        finally:
            lifecycle.remove_fabric(state)
    if "shaped" in only:
        rows += shaped(args.repeats)
    if "startup" in only:
        rows += startup(args.repeats)
    udp_cc = bench_udp_cc.run(args.quick, args.repeats) if "udp_cc" in only else None

    print(f"each figure min/median/max over {args.repeats} repeats")
    print(f"{'measure':<56} {'figure':>30} {'baseline':>30} {'ratio':>16}")
    for what, fig, base, ratio in table(rows):
        print(f"{what:<56} {fig:>30} {base:>30} {ratio:>16}")
    if udp_cc is not None:
        print(bench_udp_cc.table(udp_cc))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"repeats": args.repeats, "rows": rows, "udp_cc": udp_cc,
                               "host": os.uname().nodename, "cpu": cpu_model()}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
