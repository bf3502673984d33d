#!/usr/bin/env python3
"""Benchmark the RoCE-style switch node: forwarding rate, per-hop latency, incast scaling.

    python3 scripts/bench_fabric.py [--quick] [--out results/bench_fabric.json]
                                    [--parts fwd,hop,incast] [--rounds 3] [--incast-repeats 3]
                                    [--scales 1000,2000,5000,10000] [--quiet-wait 5]

Root only. Three parts, each against a baseline measured in the same run:

1. **Forwarding rate.** Fabric `a -- sw -- b` (userspace links, time_scale 1, MTU 9000, no
   delay; `sw` is `kind: switch` with a `switches:` section, so `fabric.switch.node` forwards).
   The switch's egress ports run at 400 Gbit/s (rate only on the sw->x directions, which the
   switch serialises; the a->sw and b->sw directions are unshaped, no tbf), so neither the
   switch's serialisation nor a qdisc is the limit. A UDP sender in `a` (Python, nice 19, so
   the relays win when they compete with it for a core) floods `b`, where a socket
   with a tiny receive buffer holds the port open (no ICMP, no receiver CPU). Counted from the
   kernel's interface counters: what left `a`, what the switch namespace sent out of its port
   to `b` (the switch's forwarded packets) and what arrived at `b`; CPU seconds of the switch
   process, the link engine and the sender from /proc/<pid>/stat over the same interval.
   "per core" = packets the switch sent / its CPU seconds. Baseline: the switch process
   stopped and a bare Python relay (epoll, the same AF_PACKET sockets, recv -> sendto, no
   core) run in its namespace. The link engine relays every packet twice (a->sw, sw->b) and
   shares the host's cores with the switch: its CPU is reported beside it (it also pays the
   kernel's receive path of every packet it writes into a TUN device, so a relay's "per
   core" here is its own share only). Three rounds, switch and bare interleaved; the best
   round of each is shown (other work on a shared host only takes from a round).
2. **Per-hop latency.** ping RTTs (kernel echo, 56 bytes, 2 ms apart) a -> b over: one direct
   link; two links forwarded by the kernel of a middle node (a `kind: switch` without a
   `switches:` section); two links forwarded by the switch process. Added per switch hop =
   (RTT switch path - RTT kernel 2-link path) / 2 at p50 and at p99 (one traversal each way;
   the extra link's engine relay cancels); against the direct link it is
   (RTT switch - RTT direct) / 2, which also holds one extra link relay. The ceiling, in the
   same rounds: the switch's fabric with its process stopped and part 1's bare relay in its
   place (relay path - kernel path) / 2, what a Python process on the same sockets adds per
   hop before any switching. The four fabrics are up together and pinged in interleaved
   rounds.
3. **Incast scaling with time_scale.** `leaf_spine` 2 spines, 4 leaves, 4 hosts per leaf,
   100 Gbit/s and 1 us links, MTU 9000, the RoCE classes of topologies/roce-incast.yaml;
   15 hosts send 16 tokens of llama-3.1-8b KV (2 MiB) each to host-15 over `transport: roce`,
   run with `fabric run FILE --cc dcqcn --keep` once per time_scale (1000, 2000, 5000,
   10000) and repeat (--incast-repeats, all time_scales in turn each repeat). Fabric-time
   goodput, FCT slowdown (FCT / (base RTT + bytes / bottleneck rate), as
   the HPCC simulator reports it), switch counters and wall time, each also as a ratio to the
   largest time_scale's row: where the host keeps up, fabric-time figures stop changing as
   time_scale grows. Before removing the fabric the script asks every node's kernel for
   losses no report counts (UDP receive-buffer overflows at hosts, TUN ring overflows).

Every figure is also given as min/median/max over its rounds or repeats (`spread` in the
JSON; a ratio's over the per-round ratios, each against the baseline of the same round).

Before each point the script waits (at most --quiet-wait seconds) for the host to be quiet and
records what other processes used meanwhile: on a shared 2-core host that decides the figures.
Every fabric is removed on the way out (errors, Ctrl-C and SIGTERM too); the script then lists
any namespace of its own still present (there should be none) and how many others exist.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fabric.net.lifecycle import (  # noqa: E402
    FabricState,
    bring_up,
    remove_fabric,
    remove_orphans,
    start_switches,
    stop_switches,
    switch_config,
)
from fabric.net.tun import in_netns  # noqa: E402
from fabric.plan import FabricPlan, parse_netns_name, plan_fabric  # noqa: E402
from fabric.topology import parse_topology  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import cpu_model, cpu_seconds, stop, wait_ready  # noqa: E402
from _spread import fmt_spread, spread  # noqa: E402

PORT = 40001
ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
TOKEN = secrets.token_hex(2)
PREFIX = f"bf{TOKEN}"  # every fabric this run makes is named PREFIX-<part>
SWITCH_RATE = "400Gbps"
MODEL_BYTES_PER_TOKEN = 131_072  # llama-3.1-8b
INCAST_TOKENS = 16
INCAST_SENDERS = 15
INCAST_RATE_BPS = 100_000_000_000
QUIET_CORES = 0.3  # wait_quiet: the host counts as quiet below this many busy cores

THREE_NODE = """
name: {name}
{switches}
nodes: {{a: {{}}, {mid}: {{kind: switch}}, b: {{}}}}
defaults:
  link: {{mtu: {mtu}, delay: {delay}}}
links:
  - endpoints: [a, {mid}]
{rev}
  - endpoints: [b, {mid}]
{rev}
"""

DIRECT = """
name: {name}
nodes: {{a: {{}}, b: {{}}}}
defaults:
  link: {{mtu: {mtu}, delay: {delay}}}
links:
  - endpoints: [a, b]
"""

INCAST = """
name: {name}
time_scale: {ts}
switches:
  buffer: 4MiB
  buffer_mode: shared
  pfc: true
  int: true
defaults:
  link:
    mtu: 9000
classes:
  - {{name: kv, dscp: 26, priority: 3, lossless: true, weight: 4,
     ecn: {{kmin: 400KB, kmax: 1600KB, pmax: 0.2}}, cc: dcqcn}}
  - {{name: control, dscp: 48, priority: 6, strict: true}}
generate:
  - leaf_spine:
      spines: 2
      leaves: 4
      hosts_per_leaf: 4
      uplink: {{rate: 100Gbps, delay: 1us}}
      downlink: {{rate: 100Gbps, delay: 1us}}
traffic:
  model: llama-3.1-8b
  chunk: 1MiB
  seed: 3
  flows:
    - {{name: kv-incast, pattern: incast, from: [{senders}], to: host-15, class: kv,
       transport: roce, requests: 1, tokens: {tokens}}}
"""


class Interrupted(Exception):
    """SIGTERM, turned into an exception so every `finally` runs."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Interrupted("SIGTERM")


# -- roles run as subprocesses -------------------------------------------------------------


def role_send(ns: str, dst: str, size: int, seconds: float, nice: int) -> None:
    """Flood `dst` with UDP datagrams of `size` payload bytes for `seconds`."""
    if nice:
        os.nice(nice)
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((dst, PORT))
    payload = b"\0" * size
    send = s.send
    sent = errors = 0
    print("READY", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(64):
            try:
                send(payload)
                sent += 1
            except OSError:
                errors += 1
    print(json.dumps({"sent": sent, "errors": errors}), flush=True)


def role_relay(ns: str, dev0: str, dev1: str) -> None:
    """The baseline: a bare epoll relay between two ports, with the switch's socket setup."""
    socks = []
    with in_netns(ns):
        for dev in (dev0, dev1):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((dev, ETH_P_IP))
            s.setblocking(False)
            socks.append(s)
    ep = select.epoll()
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    route = {socks[0].fileno(): (socks[0], socks[1], (dev1, ETH_P_IP)),
             socks[1].fileno(): (socks[1], socks[0], (dev0, ETH_P_IP))}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"READY {os.getpid()}", flush=True)
    while True:
        for fd, _ in ep.poll():
            src, dst, addr = route[fd]
            recv, sendto = src.recv, dst.sendto
            for _ in range(64):
                try:
                    pkt = recv(65535)
                except BlockingIOError:
                    break
                try:
                    sendto(pkt, addr)
                except OSError:
                    pass


# -- helpers -------------------------------------------------------------------------------


def _role(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--role", *args],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)


def host_busy_seconds() -> tuple[float, float]:
    """(busy CPU seconds, total CPU seconds) of the whole host so far, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = vals[3] + vals[4]
    return (sum(vals) - idle) / hz, sum(vals) / hz


def proc_cpu() -> dict[int, tuple[str, float]]:
    """{pid: (name, CPU seconds)} of every process on the host."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        out[int(entry)] = (head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / hz)
    return out


def others_cpu(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
               ours: set[int], seconds: float) -> tuple[float, list[tuple[str, float]]]:
    """Cores used by processes not in `ours` between two `proc_cpu` snapshots, and the top
    three of them (processes started in between count from zero)."""
    use = []
    for pid, (name, cpu) in after.items():
        if pid in ours:
            continue
        d = cpu - before.get(pid, (name, 0.0))[1]
        if d > 0:
            use.append((name, d / seconds))
    use.sort(key=lambda x: -x[1])
    return sum(u for _, u in use), [(n, round(u, 3)) for n, u in use[:3]]


def wait_quiet(max_wait: float) -> float:
    """Wait (at most `max_wait` s) until the host's busy CPU over 0.5 s is below QUIET_CORES:
    other work on a shared host takes cores the relays need. Returns the last busy figure."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = host_busy_seconds()[0]
        time.sleep(0.5)
        busy = (host_busy_seconds()[0] - b0) / 0.5
        if busy < QUIET_CORES or time.monotonic() >= deadline:
            return busy


def if_counters(ns: str) -> dict[str, dict[str, int]]:
    """{dev: {rx_packets, rx_bytes, tx_packets, tx_bytes, tx_dropped}} inside namespace `ns`."""
    out = subprocess.run(["ip", "-s", "-j", "-n", ns, "link", "show"], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    res = {}
    for d in json.loads(out):
        st = d.get("stats64", {})
        rx, tx = st.get("rx", {}), st.get("tx", {})
        res[d["ifname"]] = {"rx_packets": rx.get("packets", 0), "rx_bytes": rx.get("bytes", 0),
                            "tx_packets": tx.get("packets", 0), "tx_bytes": tx.get("bytes", 0),
                            "tx_dropped": tx.get("dropped", 0)}
    return res


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def three_node(name: str, *, roce: bool, mtu: int = 9000, delay: str = "0us") -> str:
    """a -- mid -- b; with `roce` the middle node is a RoCE switch (400G egress ports)."""
    if roce:
        return THREE_NODE.format(name=name, switches="switches: {buffer: 4MiB}", mid="sw",
                                 mtu=mtu, delay=delay,
                                 rev=f"    reverse: {{rate: {SWITCH_RATE}}}")
    return THREE_NODE.format(name=name, switches="", mid="r", mtu=mtu, delay=delay, rev="")


class Fabrics:
    """Fabrics brought up by this run; all removed by `close` (also after errors)."""

    def __init__(self) -> None:
        self.states: list[FabricState] = []

    def up(self, text: str) -> tuple[FabricState, FabricPlan]:
        plan = plan_fabric(parse_topology(text), backend="userspace")
        state = bring_up(plan)
        self.states.append(state)
        return state, plan

    def down(self, state: FabricState) -> None:
        self.states.remove(state)
        remove_fabric(state)

    def close(self) -> None:
        while self.states:
            st = self.states.pop()
            try:
                remove_fabric(st)
            except Exception as exc:  # keep removing the others
                print(f"bench_fabric: removing {st.name}: {exc}", file=sys.stderr)


def sink(ns: str, addr: str) -> socket.socket:
    """Hold UDP `PORT` open in `ns` with the smallest receive buffer and never read it: the
    kernel drops the datagrams at the socket (no ICMP unreachable, no receiver CPU)."""
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)
    s.bind((addr, PORT))
    return s


# -- part 1: forwarding rate ---------------------------------------------------------------


def flood(state: FabricState, relay_pid: int, size: int, seconds: float, nice: int,
          quiet: float, warmup: float = 0.7) -> dict[str, Any]:
    busy_before = wait_quiet(quiet)
    ns_a, ns_sw, ns_b = state.netns_of("a"), state.netns_of("sw"), state.netns_of("b")
    dst = state.nodes["b"]["loopback"]
    hold = sink(ns_b, dst)
    sender = _role("send", ns_a, dst, str(size), str(warmup + seconds + 0.5), str(nice))
    try:
        wait_ready(sender, "sender", 15)
        time.sleep(warmup)
        pids = {"relay": relay_pid, "engine": state.engine_pid, "sender": sender.pid}
        p0 = proc_cpu()
        c0 = {k: cpu_seconds(p, missing_ok=True) for k, p in pids.items()}
        h0 = host_busy_seconds()
        t0 = time.monotonic()
        a0, sw0, b0 = if_counters(ns_a), if_counters(ns_sw), if_counters(ns_b)
        time.sleep(seconds)
        a1, sw1, b1 = if_counters(ns_a), if_counters(ns_sw), if_counters(ns_b)
        t1 = time.monotonic()
        c1 = {k: cpu_seconds(p, missing_ok=True) for k, p in pids.items()}
        h1 = host_busy_seconds()
        p1 = proc_cpu()
        out = sender.communicate(timeout=seconds + 30)[0]
        sent = json.loads(out.strip().splitlines()[-1])
    finally:
        if sender.poll() is None:
            stop(sender)
        hold.close()
    dt = t1 - t0

    def rate(c0: dict, c1: dict, dev: str, key: str) -> float:
        return (c1[dev][key] - c0[dev][key]) / dt

    cpu = {k: (c1[k] - c0[k]) / dt for k in pids}
    host_cores = (h1[0] - h0[0]) / dt
    others, top = others_cpu(p0, p1, {p for p in pids.values() if p} | {os.getpid()}, dt)
    b_pps, b_bps = rate(b0, b1, "eth0", "rx_packets"), rate(b0, b1, "eth0", "rx_bytes") * 8
    # tun counts tx_packets when the engine reads a packet; a packet the relay sent into a
    # full ring is dropped by the driver and counted in tx_dropped instead: the relay's own
    # send rate is the sum of the two
    fwd_pps = rate(sw0, sw1, "eth1", "tx_packets")
    ring_pps = (sw1["eth1"]["tx_dropped"] - sw0["eth1"]["tx_dropped"]) / dt
    relay_tx = fwd_pps + ring_pps
    return {
        "payload_bytes": size, "ip_bytes": size + 28, "seconds": dt,
        "sent_pps": rate(a0, a1, "eth0", "tx_packets"),
        "switch_rx_pps": rate(sw0, sw1, "eth0", "rx_packets"),
        "relay_tx_pps": relay_tx, "ring_drop_pps": ring_pps,
        "forwarded_pps": fwd_pps, "forwarded_gbps": rate(sw0, sw1, "eth1", "tx_bytes") * 8 / 1e9,
        "b_pps": b_pps, "b_gbps": b_bps / 1e9,
        "relay_cpu": cpu["relay"], "engine_cpu": cpu["engine"], "sender_cpu": cpu["sender"],
        "host_busy_cores": host_cores, "busy_before": busy_before,
        "other_cpu": others, "other_top": top,
        "unattributed_cpu": max(0.0, host_cores - sum(cpu.values()) - others),
        "pps_per_relay_core": relay_tx / cpu["relay"] if cpu["relay"] > 0 else None,
        "engine_cpu_us_per_packet": cpu["engine"] / b_pps * 1e6 if b_pps else None,
        "sender_errors": sent["errors"],
    }


def core_cost(plan: FabricPlan, size: int, n: int = 20_000, repeats: int = 5,
              ) -> dict[str, float]:
    """The switch core's own Python per packet, sans-IO: `SwitchCore.receive` then `dequeue`
    of a UDP packet of `size` payload bytes from a to b, with the forwarding fabric's switch
    config (no socket, no timer, no event loop), the least of `repeats` runs of `n` packets;
    beside it the same loop with only the packet's copy into a bytearray (what the node does
    before `receive`). What the switch process adds to a bare relay's packet is this and the
    node's few calls around it."""
    import ipaddress

    from fabric.switch.core import SwitchCore
    from fabric.switch.node import build_spec

    with tempfile.TemporaryDirectory() as tmp:
        cfg = switch_config(plan, "sw", Path(tmp))
    a, b = (ipaddress.ip_address(p["peer_address"]).packed for p in cfg["ports"][:2])
    total = size + 28
    raw = (struct.pack("!BBHHHBBH4s4sHHHH", 0x45, 0, total, 0, 0, 64, socket.IPPROTO_UDP, 0, a,
                       b, 5000, 6000, size + 8, 0) + bytes(size))
    core_us, copy_us = [], []
    for _ in range(repeats):
        core = SwitchCore(build_spec(cfg))
        now = time.monotonic_ns()
        t = time.perf_counter()
        for i in range(n):
            if core.receive(now + 2 * i, 0, bytearray(raw)) != "queued" or \
                    core.dequeue(now + 2 * i + 1, 1) is None:
                raise RuntimeError("bench_fabric: the core did not forward a -> b")
        core_us.append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        for _ in range(n):
            bytearray(raw)
        copy_us.append((time.perf_counter() - t) / n * 1e6)
    return {"core_us_per_packet": min(core_us), "copy_us_per_packet": min(copy_us)}


def part_forwarding(fabrics: Fabrics, sizes: list[int], seconds: float, rounds: int,
                    nice: int, quiet: float) -> list[dict[str, Any]]:
    state, plan = fabrics.up(three_node(f"{PREFIX}-fwd", roce=True))
    ns_sw = state.netns_of("sw")
    costs = {size: core_cost(plan, size) for size in sizes}
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for rnd in range(rounds):
            for size in sizes:
                for relay in ("switch", "bare"):
                    if relay == "switch":
                        start_switches(plan, state)
                        r = flood(state, state.switch_pids["sw"], size, seconds, nice, quiet)
                        stop_switches(state)  # it writes its final statistics as it exits
                        sw_stats = _switch_stats(state)
                    else:
                        proc = _role("relay", ns_sw, "eth0", "eth1")
                        try:
                            wait_ready(proc, "bare relay", 15)
                            r = flood(state, proc.pid, size, seconds, nice, quiet)
                        finally:
                            stop(proc)
                        sw_stats = {}
                    r.update(relay=relay, round=rnd, **sw_stats)
                    runs.setdefault((relay, size), []).append(r)
                    print(f"  fwd round {rnd + 1}/{rounds} {relay:<6} {size:>5} B: "
                          f"{r['b_pps'] / 1e3:7.1f} kpps at b, relay CPU "
                          f"{r['relay_cpu']:.2f}, engine CPU {r['engine_cpu']:.2f}", flush=True)
    finally:
        fabrics.down(state)
    rows = []
    for size in sizes:
        # each round's ratios, against the bare relay of the same round
        for sw, bare in zip(runs[("switch", size)], runs[("bare", size)], strict=True):
            for r in (sw, bare):
                r["x_bare_pps"] = r["b_pps"] / bare["b_pps"] if bare["b_pps"] else None
                pc, bpc = r["pps_per_relay_core"], bare["pps_per_relay_core"]
                r["x_bare_per_core"] = pc / bpc if pc and bpc else None
        med = {relay: _best_run(runs[(relay, size)]) for relay in ("switch", "bare")}
        for relay in ("switch", "bare"):
            r = dict(med[relay])
            base = med["bare"]
            r["x_bare_pps"] = r["b_pps"] / base["b_pps"] if base["b_pps"] else None
            pc, bpc = r["pps_per_relay_core"], base["pps_per_relay_core"]
            r["x_bare_per_core"] = pc / bpc if pc and bpc else None
            r["rounds"] = runs[(relay, size)]
            r["spread"] = {k: spread(x[k] for x in r["rounds"]) for k in FWD_SPREAD}
            if relay == "switch":
                r.update(costs[size])
            rows.append(r)
    return rows


# figures of a forwarding row given as min/median/max over the rounds (`spread`); the row's
# own figures are its best round's, and its x_bare_* the best round against the best bare
FWD_SPREAD = ("b_pps", "b_gbps", "relay_tx_pps", "pps_per_relay_core", "relay_cpu",
              "engine_cpu", "other_cpu", "x_bare_pps", "x_bare_per_core")


def _switch_stats(state: FabricState) -> dict[str, Any]:
    """The switch's own view over its lifetime (warm-up included): tx errors, drops, the
    highest egress queue, from its final statistics file."""
    try:
        st = json.loads((state.dir / "switch-sw.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {"switch_tx_errors": st.get("tx_errors"),
            "switch_drops": sum((st.get("drops") or {}).values()),
            "switch_max_queue_bytes": max((p.get("max_queue_bytes", 0) for p in st["ports"]),
                                          default=0)}


def _best_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the most packets/s at b: on a shared 2-core host other work only ever
    takes from a round, so the best one is the closest to what the relay can do."""
    return max(runs, key=lambda r: r["b_pps"])


# -- part 2: per-hop latency ---------------------------------------------------------------

_TIME_RE = re.compile(r"time=([\d.]+) ms")


def ping_rtts(ns: str, dst: str, count: int, interval: float) -> list[float]:
    """Per-packet ping RTTs in microseconds."""
    out = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-c", str(count), "-i",
                          str(interval), "-W", "2", dst], capture_output=True, text=True,
                         timeout=count * interval + 30).stdout
    return [float(m) * 1e3 for m in _TIME_RE.findall(out)]


def part_latency(fabrics: Fabrics, count: int, rounds: int, delay: str, quiet: float,
                 ) -> dict[str, Any]:
    paths = {
        "direct": (DIRECT.format(name=f"{PREFIX}-dir", mtu=9000, delay=delay), 1),
        "kernel": (three_node(f"{PREFIX}-krn", roce=False, delay=delay), 2),
        "switch": (three_node(f"{PREFIX}-sw", roce=True, delay=delay), 2),
        # the switch's fabric with its process stopped and the bare relay of part 1 in its
        # namespace: what a Python process on these sockets adds per hop before any switching
        "relay": (three_node(f"{PREFIX}-rly", roce=True, delay=delay), 2),
    }
    states = {}
    rtts: dict[str, list[float]] = {k: [] for k in paths}
    relay: subprocess.Popen[str] | None = None
    try:
        for key, (text, _) in paths.items():
            states[key], _ = fabrics.up(text)
        stop_switches(states["relay"])
        relay = _role("relay", states["relay"].netns_of("sw"), "eth0", "eth1")
        wait_ready(relay, "bare relay", 15)
        for st in states.values():  # warm up every path
            ping_rtts(st.netns_of("a"), st.nodes["b"]["loopback"], 5, 0.01)
        per = max(1, count // rounds)
        busy = []
        per_round: list[dict[str, float]] = []
        for rnd in range(rounds):
            busy.append(wait_quiet(quiet))
            got = {}
            for key, st in states.items():
                got[key] = ping_rtts(st.netns_of("a"), st.nodes["b"]["loopback"], per, 0.002)
                rtts[key] += got[key]
            per_round.append({"switch_hop_p50_us": (pct(got["switch"], 0.5)
                                                    - pct(got["kernel"], 0.5)) / 2,
                              "switch_hop_p99_us": (pct(got["switch"], 0.99)
                                                    - pct(got["kernel"], 0.99)) / 2,
                              "relay_hop_p50_us": (pct(got["relay"], 0.5)
                                                   - pct(got["kernel"], 0.5)) / 2,
                              "relay_hop_p99_us": (pct(got["relay"], 0.99)
                                                   - pct(got["kernel"], 0.99)) / 2,
                              **{f"{k}_p{q}_us": pct(v, q / 100) for k, v in got.items()
                                 for q in (50, 99)}})
            print(f"  hop round {rnd + 1}/{rounds}: " + ", ".join(
                f"{k} p50 {pct(v, 0.5):.0f} us" for k, v in rtts.items()), flush=True)
    finally:
        if relay is not None:
            stop(relay)
        for st in states.values():
            fabrics.down(st)
    rows = {}
    for key, values in rtts.items():
        rows[key] = {"links": paths[key][1], "n": len(values),
                     "p50_us": pct(values, 0.5), "p99_us": pct(values, 0.99),
                     "p10_us": pct(values, 0.1), "p25_us": pct(values, 0.25),
                     "p75_us": pct(values, 0.75), "p90_us": pct(values, 0.9),
                     "share_over_1ms": sum(v > 1000 for v in values) / max(1, len(values)),
                     "mean_us": statistics.fmean(values) if values else float("nan"),
                     "min_us": min(values) if values else float("nan")}
    d, k, s, r = rows["direct"], rows["kernel"], rows["switch"], rows["relay"]
    derived = {
        "switch_hop_p50_us": (s["p50_us"] - k["p50_us"]) / 2,
        "switch_hop_p99_us": (s["p99_us"] - k["p99_us"]) / 2,
        "relay_hop_p50_us": (r["p50_us"] - k["p50_us"]) / 2,
        "relay_hop_p99_us": (r["p99_us"] - k["p99_us"]) / 2,
        "vs_direct_p50_us": (s["p50_us"] - d["p50_us"]) / 2,
        "vs_direct_p99_us": (s["p99_us"] - d["p99_us"]) / 2,
        "extra_link_p50_us": (k["p50_us"] - d["p50_us"]) / 2,
        "extra_link_p99_us": (k["p99_us"] - d["p99_us"]) / 2,
    }
    derived["per_round"] = per_round
    derived["switch_hop_p50_us_round_median"] = statistics.median(
        r["switch_hop_p50_us"] for r in per_round)
    # min/median/max over the rounds of each round's figures (the pooled ones above are over
    # every ping of every round)
    derived["spread"] = {k: spread(r[k] for r in per_round) for k in per_round[0]}
    return {"delay": delay, "paths": rows, "derived": derived, "busy_before": busy,
            "method": "ping a -> b, 56 B, 2 ms apart, interleaved rounds; per hop = "
                      "(RTT switch path - RTT kernel-forwarded 2-link path) / 2 per percentile; "
                      "the bare relay's hop the same with the relay path"}


# -- part 3: incast scaling ----------------------------------------------------------------


def fabric_cli(*args: str) -> list[str]:
    return [sys.executable, "-c",
            "import sys; sys.argv[0] = 'fabric'; from fabric.cli import main; main()", *args]


def incast_point(ts: int, tmp: Path, timeout: float) -> dict[str, Any]:
    name = f"{PREFIX}-inc{ts}"
    tmp.mkdir(parents=True, exist_ok=True)
    yaml_path = tmp / f"{name}.yaml"
    senders = ", ".join(f"host-{i}" for i in range(INCAST_SENDERS))
    yaml_path.write_text(INCAST.format(name=name, ts=ts, senders=senders, tokens=INCAST_TOKENS))
    out_dir = tmp / f"out-{ts}"
    h0 = host_busy_seconds()
    t0 = time.monotonic()
    proc = subprocess.Popen(fabric_cli("run", str(yaml_path), "--cc", "dcqcn", "--links",
                                       "userspace", "--timeout", str(timeout), "--out",
                                       str(out_dir), "--keep"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO)
    try:
        log, _ = proc.communicate(timeout=timeout + 120)
    except BaseException as exc:
        # Ctrl-C reached the CLI too (same process group); anything else: pass it on once.
        # Either way the CLI removes its fabric; wait for that, and clean up if it could not.
        if not isinstance(exc, KeyboardInterrupt) and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        remove_leftover_fabric(name)
        raise
    wall = time.monotonic() - t0
    h1 = host_busy_seconds()
    try:  # the CLI kept the fabric up (--keep) so its hosts' kernels can be asked
        hidden = hidden_drops(name)
    finally:
        remove_leftover_fabric(name)
    row: dict[str, Any] = {"time_scale": ts, "wall_s": wall, "exit": proc.returncode,
                           "host_busy_cores": (h1[0] - h0[0]) / wall,
                           "host_rate_bps": INCAST_RATE_BPS / ts, "host_delay_us": ts * 1.0,
                           **hidden}
    try:
        comp = json.loads((out_dir / "comparison.json").read_text())
        v = comp["variants"][0]
        summary = json.loads((out_dir / v["variant"].replace("/", "-") / "summary.json")
                             .read_text())
    except (OSError, json.JSONDecodeError, KeyError, IndexError) as exc:
        row["error"] = f"no comparison.json ({exc}); CLI output: {log[-1500:]}"
        return row
    span = summary["total"].get("goodput", {}).get("span", {})
    row.update({k: v.get(k) for k in (
        "transfers", "transfers_ok", "goodput_bps", "slowdown_p50", "slowdown_p99",
        "fct_mean_ns", "fct_p99_ns", "chunk_p99_ns", "max_queue_bytes", "mean_queue_bytes",
        "drops", "drops_lossless", "link_queue_drops", "link_loss", "ecn_marks", "pauses",
        "paused_ns", "host_paused_ns", "retransmitted", "cnps", "naks", "timeouts", "errors")})
    row["traffic_wall_s"] = (span.get("wall_ns") or 0) / 1e9
    row["integrity_ok"] = summary.get("integrity", {}).get("ok")
    row["bottleneck_utilisation"] = (v["goodput_bps"] / INCAST_RATE_BPS
                                     if v.get("goodput_bps") else None)
    return row


def hidden_drops(name: str) -> dict[str, Any]:
    """Losses no switch or link counter sees, from every node's kernel: datagrams dropped at
    a full UDP socket (`RcvbufErrors`: a host's transport did not read fast enough) and
    packets a TUN device dropped with its ring to the engine full (`tx_dropped`)."""
    st = FabricState.load(name)
    if st is None:
        return {}
    rcvbuf: dict[str, int] = {}
    ring: dict[str, int] = {}
    for node, info in st.nodes.items():
        ns = info["netns"]
        try:
            with in_netns(ns), open("/proc/thread-self/net/snmp") as f:
                rows = [line.split() for line in f if line.startswith("Udp:")]
            udp = dict(zip(rows[0][1:], (int(x) for x in rows[1][1:]), strict=False))
            dropped = sum(d["tx_dropped"] for d in if_counters(ns).values())
        except (OSError, IndexError, subprocess.SubprocessError, ValueError):
            continue
        if udp.get("RcvbufErrors"):
            rcvbuf[node] = udp["RcvbufErrors"]
        if dropped:
            ring[node] = dropped
    return {"socket_drops": sum(rcvbuf.values()), "socket_drops_by_node": rcvbuf,
            "tun_ring_drops": sum(ring.values()), "tun_ring_drops_by_node": ring}


def remove_leftover_fabric(name: str) -> None:
    """Remove fabric `name` if a killed CLI left it (state or namespaces)."""
    st = FabricState.load(name)
    if st is not None:
        remove_fabric(st)
    remove_orphans(name)


INCAST_SPREAD = ("goodput_bps", "slowdown_p50", "slowdown_p99", "fct_mean_ns", "wall_s",
                 "bottleneck_utilisation", "goodput_bps_vs_ref", "slowdown_p50_vs_ref")


def part_incast(scales: list[int], timeout: float, quiet: float, repeats: int = 1,
                ) -> list[dict[str, Any]]:
    """Every time_scale once per repeat (interleaved); one row per time_scale: its run of
    median goodput, with min/median/max over the repeats (`spread`) and each run (`runs`).
    A run's *_vs_ref is against the largest time_scale's run of the same repeat."""
    runs: dict[int, list[dict[str, Any]]] = {ts: [] for ts in scales}
    with tempfile.TemporaryDirectory(prefix="bench_fabric-") as tmp:
        for rep in range(repeats):
            for ts in scales:
                busy = wait_quiet(quiet)
                r = incast_point(ts, Path(tmp) / f"r{rep}", timeout)
                r["busy_before"] = busy
                r["repeat"] = rep
                runs[ts].append(r)
                sd = r.get("slowdown_p50")
                print(f"  incast repeat {rep + 1}/{repeats} time_scale {ts}: wall "
                      f"{r['wall_s']:.1f} s, goodput "
                      f"{(r.get('goodput_bps') or 0) / 1e9:.1f} Gbit/s, slowdown p50 "
                      f"{'-' if sd is None else f'{sd:.2f}'}", flush=True)
    for rep in range(repeats):
        ref = runs[scales[-1]][rep] if scales else {}
        for ts in scales:
            r = runs[ts][rep]
            for key in ("goodput_bps", "slowdown_p50", "slowdown_p99", "fct_mean_ns"):
                a, b = r.get(key), ref.get(key)
                r[f"{key}_vs_ref"] = a / b if a and b else None
    rows = []
    for ts in scales:
        ranked = sorted(runs[ts], key=lambda r: r.get("goodput_bps") or 0.0)
        row = dict(ranked[(len(ranked) - 1) // 2])
        row["spread"] = {k: spread(r.get(k) for r in runs[ts]) for k in INCAST_SPREAD}
        row["repeats"] = repeats
        row["runs"] = [{k: r.get(k) for k in (*INCAST_SPREAD, "repeat", "error")
                        if k in r} for r in runs[ts]]
        rows.append(row)
    return rows


# -- output --------------------------------------------------------------------------------


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def print_forwarding(rows: list[dict[str, Any]]) -> None:
    print("\nForwarding a -> sw -> b, UDP flood (best of the rounds); packets/s from the kernel's "
          "interface counters, CPU in cores over the same interval")
    print(f"{'relay':<7} {'payload':>7} {'sent':>6} {'sw rx':>6} {'relay tx':>8} {'ring':>5} "
          f"{'sock':>5} {'at b':>6} {'Gbit/s':>6} {'relay CPU':>9} {'tx/core':>8} "
          f"{'engine CPU':>10} {'sender':>6} {'others':>6} {'x bare':>6} {'x bare/core':>11} "
          f"{'rounds: at b kpps':>19} {'x bare/core':>17}")
    for r in rows:
        per_core = r["pps_per_relay_core"]
        sock = max(0.0, r["switch_rx_pps"] - r["relay_tx_pps"])
        print(f"{r['relay']:<7} {r['payload_bytes']:>6}B {r['sent_pps'] / 1e3:>5.1f}k "
              f"{r['switch_rx_pps'] / 1e3:>5.1f}k {r['relay_tx_pps'] / 1e3:>7.1f}k "
              f"{r['ring_drop_pps'] / 1e3:>4.1f}k {sock / 1e3:>4.1f}k "
              f"{r['b_pps'] / 1e3:>5.1f}k {r['b_gbps']:>6.2f} {r['relay_cpu']:>9.2f} "
              f"{_f(per_core and per_core / 1e3, '.1f'):>7}k {r['engine_cpu']:>10.2f} "
              f"{r['sender_cpu']:>6.2f} {r['other_cpu']:>6.2f} {_f(r['x_bare_pps'], '.2f'):>6} "
              f"{_f(r['x_bare_per_core'], '.2f'):>11} "
              f"{fmt_spread(r['spread']['b_pps'], '.1f', 1e3):>19} "
              f"{fmt_spread(r['spread']['x_bare_per_core']):>17}")
    print("(packets/s. sent: out of a; sw rx: into the relay's namespace; relay tx: what the "
          "relay (switch process or bare relay) sent out of its port to b; ring: part of it the "
          "tun driver dropped, its ring to the link engine full; sock: sw rx - relay tx, lost "
          "in the relay's socket buffer before it read them; at b: arrived at b; Gbit/s: IP "
          "bytes at b; tx/core: relay tx / relay CPU (target for the switch: >= 80k); x bare: "
          "at-b packets/s and tx/core over the bare relay's; the link engine relays every "
          "packet twice and shares the host's cores; others: processes not of this benchmark; "
          "rounds: median (min-max) over the rounds, each round's ratio against the bare "
          "relay of the same round)")
    for r in rows:
        if r["relay"] == "switch" and "core_us_per_packet" in r:
            bare = next((x for x in rows if x["relay"] == "bare"
                         and x["payload_bytes"] == r["payload_bytes"]), None)
            whole = (f"; a bare relay's whole packet {1e6 / bare['pps_per_relay_core']:.2f} us "
                     f"(1 / its tx per core)" if bare and bare["pps_per_relay_core"] else "")
            print(f"switch core alone, {r['payload_bytes']} B: receive + dequeue "
                  f"{r['core_us_per_packet']:.2f} us a packet sans-IO (the copy alone "
                  f"{r['copy_us_per_packet']:.2f}){whole}; the switch's whole packet "
                  f"{1e6 / r['pps_per_relay_core']:.2f} us" if r["pps_per_relay_core"] else "")


def print_latency(lat: dict[str, Any]) -> None:
    print(f"\nPer-hop latency: ping a -> b, link delay {lat['delay']}, RTT in us")
    print(f"{'path':<28} {'links':>5} {'n':>5} {'min':>7} {'p25':>7} {'p50':>7} {'p90':>7} "
          f"{'p99':>7} {'mean':>7} {'>1ms':>6}")
    names = {"direct": "direct link", "kernel": "2 links, kernel forwards",
             "switch": "2 links, switch process", "relay": "2 links, bare Python relay"}
    for key, r in lat["paths"].items():
        print(f"{names[key]:<28} {r['links']:>5} {r['n']:>5} {r['min_us']:>7.0f} "
              f"{r['p25_us']:>7.0f} {r['p50_us']:>7.0f} {r['p90_us']:>7.0f} "
              f"{r['p99_us']:>7.0f} {r['mean_us']:>7.0f} {r['share_over_1ms']:>6.1%}")
    d = lat["derived"]
    rounds = ", ".join(f"{r['switch_hop_p50_us']:.0f}" for r in d["per_round"])
    print(f"added per switch hop (switch - kernel path) / 2:  p50 {d['switch_hop_p50_us']:.0f} us,"
          f"  p99 {d['switch_hop_p99_us']:.0f} us   (target p50 < 200 us; p50 per round: "
          f"{rounds} us)")
    if "relay_hop_p50_us" in d:
        print(f"added per bare relay hop (relay - kernel path) / 2: p50 "
              f"{d['relay_hop_p50_us']:.0f} us, p99 {d['relay_hop_p99_us']:.0f} us   (the "
              f"same sockets, no switch: the floor of a Python hop here)")
    print(f"switch hop vs direct link (switch - direct) / 2:  p50 {d['vs_direct_p50_us']:.0f} us,"
          f"  p99 {d['vs_direct_p99_us']:.0f} us   (includes one extra link relay)")
    print(f"one extra link + kernel forward (kernel - direct) / 2: p50 "
          f"{d['extra_link_p50_us']:.0f} us, p99 {d['extra_link_p99_us']:.0f} us")
    sp = d.get("spread", {})
    print(f"added per switch hop over the {len(d['per_round'])} rounds, median (min-max): p50 "
          f"{fmt_spread(sp.get('switch_hop_p50_us'), '.0f')} us, p99 "
          f"{fmt_spread(sp.get('switch_hop_p99_us'), '.0f')} us")
    if "relay_hop_p99_us" in sp:
        print(f"added per bare relay hop over the rounds, median (min-max): p50 "
              f"{fmt_spread(sp.get('relay_hop_p50_us'), '.0f')} us, p99 "
              f"{fmt_spread(sp.get('relay_hop_p99_us'), '.0f')} us")


def print_incast(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print(f"\nIncast {INCAST_SENDERS} -> 1 (2 spines, 4 leaves, 16 hosts, 100 Gbit/s, 1 us, "
          f"RoCE + DCQCN, {INCAST_TOKENS} tokens = "
          f"{INCAST_TOKENS * MODEL_BYTES_PER_TOKEN >> 20} MiB per sender); fabric time unless "
          "marked wall; 'vs ref' = / the last row")
    print(f"{'scale':>5} {'wall s':>6} {'traffic s':>9} {'host CPU':>8} {'goodput':>9} "
          f"{'/100G':>5} {'slow p50':>8} {'p99':>6} {'FCT mean':>9} {'FCT p99':>9} "
          f"{'queue max':>9} {'ECN':>6} {'pauses':>6} {'drops':>5} {'hidden':>6} {'retx':>5} "
          f"{'NAKs':>4} "
          f"{'CNPs':>5} "
          f"{'gp vs ref':>9} {'p50 vs ref':>10} {'goodput G, repeats':>19}")
    for r in rows:
        if "error" in r:
            print(f"{r['time_scale']:>5} {r['wall_s']:>6.1f}  error: {r['error'][:200]}")
            continue
        gp = r.get("goodput_bps") or 0
        drops = (r.get("drops") or 0) + (r.get("link_queue_drops") or 0) + \
            (r.get("link_loss") or 0)
        hidden = (r.get("socket_drops") or 0) + (r.get("tun_ring_drops") or 0)

        def ms(ns: float | None) -> str:
            return "-" if ns is None else f"{ns / 1e6:.2f}ms"
        print(f"{r['time_scale']:>5} {r['wall_s']:>6.1f} {r['traffic_wall_s']:>9.2f} "
              f"{r['host_busy_cores']:>8.2f} {gp / 1e9:>7.1f}G "
              f"{_f(r['bottleneck_utilisation'], '.2f'):>5} {_f(r['slowdown_p50'], '.2f'):>8} "
              f"{_f(r['slowdown_p99'], '.2f'):>6} {ms(r['fct_mean_ns']):>9} "
              f"{ms(r['fct_p99_ns']):>9} {(r['max_queue_bytes'] or 0) / 2**20:>7.2f}Mi "
              f"{r['ecn_marks']:>6} {r['pauses']:>6} {drops:>5} {hidden:>6} "
              f"{r['retransmitted']:>5} "
              f"{r['naks']:>4} {r['cnps']:>5} "
              f"{_f(r['goodput_bps_vs_ref'], '.2f'):>9} {_f(r['slowdown_p50_vs_ref'], '.2f'):>10} "
              f"{fmt_spread(r.get('spread', {}).get('goodput_bps'), '.1f', 1e9):>19}")
    print("(slowdown = FCT / (base RTT + bytes / 100 Gbit/s) per flow, p50/p99 over the 15 "
          "flows; a fair 15-way incast that fills the link ends every flow near 15; drops = "
          "switch + link-queue + link-loss; hidden = drops only the nodes' kernels saw (full UDP "
          "socket at a host: its transport fell behind; full TUN ring), in no report; host "
          "CPU = busy cores of the whole host over the run, bring-up included; each row the "
          "run of median goodput; goodput over the repeats as median (min-max))")


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures against the targets (80k packets/s per core, 0.2 ms p50 per hop)."""
    out: dict[str, Any] = {"lines": ["\nSummary"]}
    fwd = [r for r in results.get("forwarding", []) if r["relay"] == "switch"]
    if fwd:
        worst = min((r["pps_per_relay_core"] or 0) for r in fwd)
        out["switch_tx_per_core_min"] = worst
        out["lines"].append(
            "switch forwarding per core (tx / switch CPU, best round): " + ", ".join(
                f"{r['payload_bytes']} B {r['pps_per_relay_core'] / 1e3:.0f}k "
                f"({_f(r['x_bare_per_core'], '.2f')} of bare; rounds "
                f"{fmt_spread(r['spread']['x_bare_per_core'])})" for r in fwd)
            + f"; target >= 80k: {'met' if worst >= 80_000 else 'NOT met'}")
        out["lines"].append(
            "switch delivered at b on this 2-core host: " + ", ".join(
                f"{r['payload_bytes']} B {r['b_pps'] / 1e3:.0f}k pkt/s {r['b_gbps']:.2f} Gbit/s "
                f"(switch {r['relay_cpu']:.2f} + engine {r['engine_cpu']:.2f} cores)"
                for r in fwd))
    lat = results.get("latency")
    if lat:
        d = lat["derived"]
        out["switch_hop_p50_us"] = d["switch_hop_p50_us"]
        out["lines"].append(f"added per switch hop: p50 {d['switch_hop_p50_us']:.0f} us, p99 "
                            f"{d['switch_hop_p99_us']:.0f} us; target p50 < 200 us: "
                            f"{'met' if d['switch_hop_p50_us'] < 200 else 'NOT met'}")
    inc = [r for r in results.get("incast", []) if "error" not in r]
    if inc:
        out["lines"].append("incast, fabric time, by time_scale: " + "; ".join(
            f"{r['time_scale']}: {(r['goodput_bps'] or 0) / 1e9:.1f} Gbit/s, slowdown p50 "
            f"{_f(r['slowdown_p50'], '.2f')}" for r in inc))
    return out


def leftovers() -> tuple[list[str], int]:
    """(namespaces of this run still present, count of other namespaces)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    ours = [n for n in names if (p := parse_netns_name(n)) and p[0].startswith(PREFIX)]
    return ours, len(names) - len(ours)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter floods, fewer pings, one "
                    "round, time_scales 1000 and 5000")
    ap.add_argument("--out", default="results/bench_fabric.json",
                    help="JSON results path (default %(default)s)")
    ap.add_argument("--rounds", type=int, help="forwarding rounds, switch and bare "
                    "interleaved (default 3; quick 1)")
    ap.add_argument("--incast-repeats", type=int, help="runs of every incast time_scale, "
                    "interleaved (default 3; quick 1)")
    ap.add_argument("--parts", default="fwd,hop,incast", help="comma list of fwd, hop, incast")
    ap.add_argument("--seconds", type=float, help="flood seconds per point (default 3; quick 2)")
    ap.add_argument("--scales", help="incast time_scales, comma list (default "
                    "1000,2000,5000,10000; quick 1000,5000)")
    ap.add_argument("--delay", default="0us", help="link delay for the per-hop latency part")
    ap.add_argument("--sender-nice", type=int, default=19, help="niceness of the flood sender "
                    "(19: the relays get the CPU first; default %(default)s)")
    ap.add_argument("--quiet-wait", type=float, default=5.0, help="before each point, wait up "
                    f"to this many seconds for the host to be quiet (< {QUIET_CORES} busy cores; "
                    "default %(default)s; 0: do not wait)")
    ap.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        kind, *rest = args.role
        if kind == "send":
            role_send(rest[0], rest[1], int(rest[2]), float(rest[3]), int(rest[4]))
        elif kind == "relay":
            role_relay(*rest)
        return 0
    if os.geteuid() != 0:
        print("bench_fabric: needs root (network namespaces, TUN)", file=sys.stderr)
        return 1
    parts = set(args.parts.split(","))
    unknown = parts - {"fwd", "hop", "incast"}
    if unknown:
        ap.error(f"--parts: unknown {', '.join(sorted(unknown))}")
    seconds = args.seconds or (2.0 if args.quick else 3.0)
    rounds = args.rounds or (1 if args.quick else 3)
    incast_repeats = args.incast_repeats or (1 if args.quick else 3)
    if rounds < 1 or incast_repeats < 1:
        ap.error("--rounds and --incast-repeats: at least 1")
    scales = [int(x) for x in args.scales.split(",")] if args.scales else \
        ([1000, 5000] if args.quick else [1000, 2000, 5000, 10000])
    sizes = [64, 1400, 8000]
    signal.signal(signal.SIGTERM, _on_sigterm)

    results: dict[str, Any] = {"meta": {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": os.uname().nodename,
        "cpus": os.cpu_count(), "cpu": cpu_model(), "kernel": os.uname().release,
        "quick": args.quick,
        "loadavg_before": os.getloadavg(), "flood_seconds": seconds, "rounds": rounds,
        "incast_repeats": incast_repeats,
        "switch_port_rate": SWITCH_RATE}}
    t_start = time.monotonic()
    fabrics = Fabrics()
    status = 0
    try:
        if "fwd" in parts:
            print("part 1: forwarding rate", flush=True)
            results["forwarding"] = part_forwarding(fabrics, sizes, seconds, rounds,
                                                    args.sender_nice, args.quiet_wait)
        if "hop" in parts:
            print("part 2: per-hop latency", flush=True)
            results["latency"] = part_latency(fabrics, 600 if args.quick else 2000,
                                              2 if args.quick else 4, args.delay,
                                              args.quiet_wait)
        if "incast" in parts:
            print("part 3: incast scaling with time_scale", flush=True)
            results["incast"] = part_incast(scales, 180, args.quiet_wait, incast_repeats)
    except (KeyboardInterrupt, Interrupted):
        print("\nbench_fabric: interrupted; removing what it built", file=sys.stderr)
        status = 130
    finally:
        fabrics.close()
    ours, others = leftovers()
    results["meta"].update(total_seconds=time.monotonic() - t_start,
                           loadavg_after=os.getloadavg(), leftover_namespaces=ours,
                           other_namespaces=others)
    if "forwarding" in results:
        print_forwarding(results["forwarding"])
    if "latency" in results:
        print_latency(results["latency"])
    if "incast" in results:
        print_incast(results["incast"])
    results["summary"] = summarise(results)
    for line in results["summary"]["lines"]:
        print(line)
    print(f"\nnamespaces of this run left: {len(ours)}"
          + (f" ({', '.join(ours)})" if ours else "")
          + (f"; {others} other namespaces exist (not ours)" if others else "")
          + f"; total {results['meta']['total_seconds']:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out}")
    if ours:
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
