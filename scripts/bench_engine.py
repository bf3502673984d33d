#!/usr/bin/env python3
"""Benchmark the userspace link engine against a bare epoll TUN relay (root only).

    python scripts/bench_engine.py [--quick] [--seconds 2] [--repeats 3] [--load N]
                                   [--json results/bench_engine.json]

Builds two namespaces `fabbench-<token>-a/b` joined by a TUN pair, then for each relay
(`bare`: a minimal epoll loop, no model; `c`: the same loop in C, compiled at the start where
a C compiler exists: the ceiling of a read/write-per-packet relay on this host; `engine`:
fabric.net.engine (trio), no delay;
`epoll`: the same engine with `--loop=epoll`; `+1ms`: holding every packet 1 ms) floods UDP
from a to b for a few seconds at MTU 1500 and 9000 and counts at the receiver; then sends
paced probes through 1 ms and 10 ms of emulated delay and reports how late they arrive
(one-way minus configured delay, to the receiving socket by the kernel's receive timestamp;
and to the receiving process, whose own wake-up beside busy processes can take a scheduler
slice), next to the bare relay's one-way latency. `engine` is the engine as `fabric up` starts
it (spinning 150 us before each release within a tenth of one CPU); at 1 ms also
`engine-sleep`, never spinning (`--engine-spin 0`), and `engine-spin`, spinning 150 us
without a budget (`--engine-spin 150us`), with each relay's CPU share while the probes ran.
Then the same under load: with N busy processes (default: one per core) beside them, the bare
relay, and the engine at 1 ms at the default priority and at the fabric daemons' own (nice
-10, `fabric.net.daemon.DAEMON_NICE`), sleeping and spinning. Every other relay runs at the
daemons' niceness, as `fabric up` starts the engine.
Sender, relay and receiver are separate processes. Every point is measured --repeats
times (all points once, then again), and the table and the JSON give min/median/max over the
repeats; a ratio to the bare relay is taken per repeat, against the bare relay's figure of
that repeat.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fabric.net.daemon import DAEMON_NICE  # noqa: E402
from fabric.net.engine import Endpoint, EngineConfig, EngineLink  # noqa: E402
from fabric.net.tun import (  # noqa: E402
    create_persistent_tun,
    delete_persistent_tun,
    in_netns,
    open_tun,
)
from fabric.topology.model import Shape  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import cpu_model, cpu_seconds, wait_ready  # noqa: E402
from _spread import fmt_spread, spread  # noqa: E402

ADDR_A, ADDR_B = "198.18.0.1", "198.18.0.2"
DEV_A, DEV_B = "fba0", "fbb0"
PORT = 40001
SO_RCVBUFFORCE = 33
MS = 1_000_000
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # receive timestamps, CLOCK_REALTIME


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def netpair() -> Iterator[tuple[str, str]]:
    token = secrets.token_hex(3)
    ns_a, ns_b = f"fabbench-{token}-a", f"fabbench-{token}-b"
    made = []
    try:
        for ns, dev, local, peer in ((ns_a, DEV_A, ADDR_A, ADDR_B), (ns_b, DEV_B, ADDR_B, ADDR_A)):
            _ip("netns", "add", ns)
            made.append((ns, dev))
            _ip("netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            with in_netns(ns):
                create_persistent_tun(dev)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", local, "peer", f"{peer}/32", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up", "txqueuelen", "1000")
        yield ns_a, ns_b
    finally:
        for ns, dev in made:
            with contextlib.suppress(OSError), in_netns(ns):
                delete_persistent_tun(dev)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def set_mtu(ns_a: str, ns_b: str, mtu: int) -> None:
    _ip("-n", ns_a, "link", "set", DEV_A, "mtu", str(mtu))
    _ip("-n", ns_b, "link", "set", DEV_B, "mtu", str(mtu))


# -- roles run as subprocesses -------------------------------------------------------------


def role_relay(ns_a: str, ns_b: str) -> None:
    """The baseline: a minimal epoll relay between the two TUNs, no model."""
    fa, fb = open_tun(DEV_A, ns_a), open_tun(DEV_B, ns_b)
    ep = select.epoll()
    ep.register(fa, select.EPOLLIN)
    ep.register(fb, select.EPOLLIN)
    peer = {fa: fb, fb: fa}
    read, write = os.read, os.write
    print(f"READY {os.getpid()}", flush=True)
    while True:
        for fd, _ in ep.poll():
            dst = peer[fd]
            while True:
                try:
                    pkt = read(fd, 65536)
                except BlockingIOError:
                    break
                try:
                    write(dst, pkt)
                except OSError:
                    pass


# The same relay in C (read / write per packet, no model): what one syscall per packet costs
# without Python, the ceiling of any relay built that way on this host. Compiled at the start
# of a run where a C compiler exists; its row is left out otherwise.
C_RELAY = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int fa = atoi(argv[1]), fb = atoi(argv[2]);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN}, got[2];
    ev.data.fd = fa;
    epoll_ctl(ep, EPOLL_CTL_ADD, fa, &ev);
    ev.data.fd = fb;
    epoll_ctl(ep, EPOLL_CTL_ADD, fb, &ev);
    static char buf[65536];
    printf("READY %d\n", getpid());
    fflush(stdout);
    for (;;) {
        int n = epoll_wait(ep, got, 2, -1);
        for (int i = 0; i < n; i++) {
            int fd = got[i].data.fd, dst = fd == fa ? fb : fa;
            for (;;) {
                ssize_t k = read(fd, buf, sizeof buf);
                if (k < 0)
                    break;
                if (write(dst, buf, (size_t)k) < 0) {
                    /* dropped, as the Python relay drops */
                }
            }
        }
    }
}
"""


def build_c_relay(tmp: str) -> str | None:
    """Compile C_RELAY into `tmp`; its path, or None without a C compiler (or if it fails)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src, exe = os.path.join(tmp, "relay.c"), os.path.join(tmp, "relay")
    with open(src, "w") as fh:
        fh.write(C_RELAY)
    done = subprocess.run([cc, "-O2", "-o", exe, src], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"bench_engine: the C relay did not compile, its row is left out:\n{done.stderr}",
              file=sys.stderr)
        return None
    return exe


def role_c_relay(ns_a: str, ns_b: str, exe: str) -> None:
    """Open the TUNs here (setns needs Python's helpers), then become the C relay."""
    fa, fb = open_tun(DEV_A, ns_a), open_tun(DEV_B, ns_b)
    os.set_inheritable(fa, True)
    os.set_inheritable(fb, True)
    os.execv(exe, [exe, str(fa), str(fb)])


def role_send(ns: str, size: int, seconds: float) -> None:
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((ADDR_B, PORT))
    payload = b"\0" * size
    send = s.send
    sent = errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(256):
            try:
                send(payload)
                sent += 1
            except OSError:
                errors += 1
    print(json.dumps({"sent": sent, "errors": errors}), flush=True)


def role_recv(ns: str, seconds: float) -> None:
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    s.bind((ADDR_B, PORT))
    print("READY", flush=True)
    buf = bytearray(65536)
    recv_into = s.recv_into
    s.settimeout(5.0)
    count = nbytes = 0
    try:
        nbytes += recv_into(buf)
    except TimeoutError:
        print(json.dumps({"count": 0, "bytes": 0, "seconds": 0.0}), flush=True)
        return
    t0 = time.monotonic()
    count = 1
    t_last = t0
    s.settimeout(0.3)
    end = t0 + seconds
    while True:
        try:
            nbytes += recv_into(buf)
        except TimeoutError:
            break
        count += 1
        t_last = time.monotonic()
        if t_last >= end:
            break
    print(json.dumps({"count": count, "bytes": nbytes, "seconds": t_last - t0}), flush=True)


def role_probe(ns_a: str, ns_b: str, n: int, interval_s: float) -> None:
    """Send `n` timestamped probes a->b and print one-way delays (ns) as JSON: `delays` to
    the receiving socket (the kernel's receive timestamp, SO_TIMESTAMPNS, against the send
    time on the same clock: what the link took, whenever the receiver got to run) and
    `app_delays` to this process reading it (adds the receiver's own wake-up, which beside
    busy processes can be a scheduler slice)."""
    with in_netns(ns_b):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((ADDR_B, PORT))
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    with in_netns(ns_a):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect((ADDR_B, PORT))
    rx.setblocking(False)
    delays: list[int] = []
    app_delays: list[int] = []
    next_send = time.monotonic_ns()
    sent = 0
    deadline = None
    cmsg_space = socket.CMSG_SPACE(16)
    while True:
        now = time.monotonic_ns()
        if sent < n and now >= next_send:
            tx.send(struct.pack("!QQ", now, time.time_ns()) + b"p" * 48)
            sent += 1
            next_send += int(interval_s * 1e9)
            if sent == n:
                deadline = now + 500 * MS
        timeout = max(0.0, (next_send - time.monotonic_ns()) / 1e9) if sent < n else 0.05
        ready, _, _ = select.select([rx], [], [], timeout)
        if ready:
            while True:
                try:
                    data, anc, _, _ = rx.recvmsg(2048, cmsg_space)
                except BlockingIOError:
                    break
                mono, real = struct.unpack_from("!QQ", data)
                app_delays.append(time.monotonic_ns() - mono)
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", value[:16])
                        delays.append(sec * 1_000_000_000 + nsec - real)
        if deadline is not None and (len(app_delays) >= n or time.monotonic_ns() > deadline):
            break
    print(json.dumps({"delays": delays, "app_delays": app_delays}), flush=True)


# -- driver --------------------------------------------------------------------------------


def _role(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--role", *args], stdout=subprocess.PIPE,
                            text=True, cwd=REPO)




@contextlib.contextmanager
def busy(n: int) -> Iterator[None]:
    """`n` processes that spin on a core each, at the default priority, for the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.2)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


@contextlib.contextmanager
def relay(kind: str, ns_a: str, ns_b: str, tmp: str, delay_ns: int = 0,
          nice: int = DAEMON_NICE) -> Iterator[subprocess.Popen[str]]:
    """A relay between the namespaces, at `nice` (by default the fabric's daemons' own, as
    `fabric up` starts the engine; the bare relay at the same, a like-for-like baseline).
    `engine`: the engine's default config; `engine-sleep`: never spinning (`--engine-spin
    0`); `engine-spin`: spinning SPIN_NS before each release without a budget (`--engine-spin
    150us`)."""
    if kind == "bare":
        proc = _role("relay", ns_a, ns_b)
    elif kind == "c":
        proc = _role("crelay", ns_a, ns_b, os.path.join(tmp, "relay"))
    else:
        shape = Shape(delay_ns=delay_ns, mtu=9000)
        link = EngineLink("a--b", Endpoint(ns_a, DEV_A), Endpoint(ns_b, DEV_B), shape, shape)
        config = EngineConfig("bench", "bench", os.path.join(tmp, "stats.json"), (link,))
        if kind in ("engine-sleep", "engine-spin"):  # `fabric up --engine-spin`: no budget
            config = replace(config, spin_ns=SPIN_NS if kind == "engine-spin" else 0,
                             spin_share=1.0)
        path = os.path.join(tmp, "engine.json")
        with open(path, "w") as fh:
            fh.write(config.to_json())
        loop = ["--loop=epoll"] if kind == "epoll" else []
        proc = subprocess.Popen([sys.executable, "-m", "fabric.net.engine", path, *loop],
                                stdout=subprocess.PIPE, text=True, cwd=REPO)
    os.setpriority(os.PRIO_PROCESS, proc.pid, nice)
    try:
        wait_ready(proc, kind, 10)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


def flood(ns_a: str, ns_b: str, mtu: int, seconds: float) -> dict[str, float]:
    rx = _role("recv", ns_b, str(seconds))
    wait_ready(rx, "receiver", 10)
    tx = _role("send", ns_a, str(mtu - 28), str(seconds + 0.5))
    out_tx = json.loads(tx.communicate(timeout=seconds + 20)[0])
    out_rx = json.loads(rx.communicate(timeout=seconds + 20)[0])
    secs = out_rx["seconds"] or 1.0
    return {
        "pps": out_rx["count"] / secs,
        "gbps": (out_rx["bytes"] + 28 * out_rx["count"]) * 8 / secs / 1e9,
        "sent": out_tx["sent"],
        "received": out_rx["count"],
    }


def probe(ns_a: str, ns_b: str, n: int, interval_s: float) -> dict[str, list[int]]:
    p = _role("probe", ns_a, ns_b, str(n), str(interval_s))
    return json.loads(p.communicate(timeout=n * interval_s + 20)[0])


def lateness(ns_a: str, ns_b: str, tmp: str, probes: int, repeat: int, load: int,
             engines: tuple[tuple[str, int, int], ...]) -> list[dict]:
    """One repeat's lateness rows: the bare relay's one-way latency, then the lateness of
    each (relay, delay ms, nice) of `engines`, each with its ratios to that bare relay, and
    the relay's CPU share while the probes ran. `load`: the busy processes the caller runs
    beside them (recorded, not started here)."""
    with relay("bare", ns_a, ns_b, tmp) as proc:
        bare, cpu = _probed(proc, ns_a, ns_b, probes, 0)
    rows = [{"repeat": repeat, "relay": "bare", "delay_ms": 0, "load": load,
             "nice": DAEMON_NICE, **bare, "cpu_share": cpu}]
    for kind, delay_ms, nice in engines:
        with relay(kind, ns_a, ns_b, tmp, delay_ms * MS, nice=nice) as proc:
            late, cpu = _probed(proc, ns_a, ns_b, probes, delay_ms)
        # the engine's own part (`Engine.release_lateness`, in the statistics it wrote at
        # exit): how late it wrote each release, before the kernel and the receiver
        stats = _engine_stats(tmp)
        own = stats.get("release_lateness", {})
        rows.append({"repeat": repeat, "relay": kind, "delay_ms": delay_ms, "load": load,
                     "nice": nice, **late, "cpu_share": cpu,
                     "engine_p50_us": own.get("window_p50_us"),
                     "engine_p99_us": own.get("window_p99_us"),
                     # releases it spun to, and timers it armed to sleep (budget spent)
                     "spins": stats.get("spins"), "spin_denied": stats.get("spin_denied"),
                     "p50_ratio": _ratio(late["p50_us"], bare["p50_us"]),
                     "p99_ratio": _ratio(late["p99_us"], bare["p99_us"])})
    return rows


def _engine_stats(tmp: str) -> dict:
    try:
        with open(os.path.join(tmp, "stats.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _probed(proc: subprocess.Popen[str], ns_a: str, ns_b: str, probes: int,
            delay_ms: int) -> tuple[dict[str, float | None], float]:
    """Probe through the relay `proc`: the lateness figures, and the share of one CPU the
    relay used meanwhile."""
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    got = probe(ns_a, ns_b, probes, 0.002)
    late = _late(got["delays"], delay_ms)
    app = _late(got["app_delays"], delay_ms)
    late.update(app_p50_us=app["p50_us"], app_p99_us=app["p99_us"])
    return late, (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _late(delays: list[int], delay_ms: int) -> dict[str, float | None]:
    """p50 / p99 (us) of one probe run's one-way delays minus the configured delay."""
    late = [x - delay_ms * MS for x in delays]
    return {"n": len(late), "p50_us": pct(late, 0.5) / 1e3, "p99_us": pct(late, 0.99) / 1e3,
            "min_us": min(late) / 1e3 if late else None}


def _f1(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarise(runs: dict[str, list[dict]]) -> dict[str, list[dict[str, object]]]:
    """Rows of the JSON from the per-repeat runs: each figure's median at the row's top
    level (the printed table's), and `spread` with min/median/max over the repeats; a ratio's
    spread is over the per-repeat ratios, each against the bare relay of the same repeat."""
    out: dict[str, list[dict[str, object]]] = {"throughput": [], "lateness": []}
    keys = sorted({(r["mtu"], r["relay"]) for r in runs["throughput"]},
                  key=lambda k: (k[0], RELAYS.index(k[1])))
    for mtu, kind in keys:
        rs = [r for r in runs["throughput"] if (r["mtu"], r["relay"]) == (mtu, kind)]
        sp = {k: spread(r[k] for r in rs) for k in ("pps", "gbps", "pps_ratio", "rx_tx")}
        out["throughput"].append({
            "mtu": mtu, "relay": kind, **{k: v["median"] for k, v in sp.items()},
            "sent": statistics.median(r["sent"] for r in rs),
            "received": statistics.median(r["received"] for r in rs),
            "spread": sp, "runs": rs})
    for relay, delay_ms, loaded, nice in LATENESS_ROWS:
        rs = [r for r in runs["lateness"] if (r["relay"], r["delay_ms"]) == (relay, delay_ms)
              and bool(r.get("load")) == loaded and r.get("nice", 0) == nice]
        if not rs:
            continue
        keys2 = ("p50_us", "p99_us", "min_us", "cpu_share", "app_p50_us", "app_p99_us") + (
            ("p50_ratio", "p99_ratio", "engine_p50_us", "engine_p99_us") if delay_ms else ())
        sp = {k: spread(r.get(k) for r in rs) for k in keys2}
        out["lateness"].append({"relay": relay, "delay_ms": delay_ms,
                                "load": rs[0].get("load", 0), "nice": nice,
                                "n": sum(r["n"] for r in rs),
                                **{k: v["median"] for k, v in sp.items()},
                                "spread": sp, "runs": rs})
    return out


RELAYS = ("bare", "c", "engine", "epoll", "engine+1ms", "epoll+1ms")
SPIN_NS = 150_000  # the engine-spin rows: `fabric up --engine-spin 150us`
# (relay, delay ms, under load, nice): the lateness rows, in the table's order
LATENESS_ROWS = (("bare", 0, False, DAEMON_NICE), ("engine", 1, False, DAEMON_NICE),
                 ("engine", 10, False, DAEMON_NICE), ("engine-sleep", 1, False, DAEMON_NICE),
                 ("engine-spin", 1, False, DAEMON_NICE),
                 ("bare", 0, True, DAEMON_NICE), ("engine", 1, True, 0),
                 ("engine", 1, True, DAEMON_NICE), ("engine-sleep", 1, True, DAEMON_NICE),
                 ("engine-spin", 1, True, DAEMON_NICE))
QUIET_ENGINES = (("engine", 1, DAEMON_NICE), ("engine", 10, DAEMON_NICE),
                 ("engine-sleep", 1, DAEMON_NICE), ("engine-spin", 1, DAEMON_NICE))
LOADED_ENGINES = (("engine", 1, 0), ("engine", 1, DAEMON_NICE),
                  ("engine-sleep", 1, DAEMON_NICE), ("engine-spin", 1, DAEMON_NICE))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, help="flood seconds per point (default 2; "
                    "quick 1)")
    ap.add_argument("--probes", type=int, help="probes per lateness point (default 500; "
                    "quick 200)")
    ap.add_argument("--repeats", type=int, help="measure every point this many times, "
                    "interleaved (min/median/max reported; default 3, quick 2)")
    ap.add_argument("--quick", action="store_true", help="1 s floods, 200 probes, 2 repeats")
    ap.add_argument("--load", type=int, default=os.cpu_count() or 1,
                    help="busy processes beside the lateness probes under load (default: one "
                         "per core; 0 leaves those rows out)")
    ap.add_argument("--json", default="results/bench_engine.json")
    ap.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        kind, *rest = args.role
        if kind == "relay":
            role_relay(*rest)
        elif kind == "crelay":
            role_c_relay(*rest)
        elif kind == "send":
            role_send(rest[0], int(rest[1]), float(rest[2]))
        elif kind == "recv":
            role_recv(rest[0], float(rest[1]))
        elif kind == "probe":
            role_probe(rest[0], rest[1], int(rest[2]), float(rest[3]))
        return 0
    if os.geteuid() != 0:
        print("bench_engine: needs root (network namespaces, TUN)", file=sys.stderr)
        return 1
    seconds = args.seconds or (1.0 if args.quick else 2.0)
    probes = args.probes or (200 if args.quick else 500)
    repeats = args.repeats or (2 if args.quick else 3)
    if repeats < 1:
        ap.error("--repeats: at least 1")

    runs: dict[str, list[dict]] = {"throughput": [], "lateness": []}
    with netpair() as (ns_a, ns_b), tempfile.TemporaryDirectory() as tmp:
        relays = RELAYS if build_c_relay(tmp) else tuple(k for k in RELAYS if k != "c")
        for rep in range(repeats):
            for mtu in (1500, 9000):
                set_mtu(ns_a, ns_b, mtu)
                base = None
                for kind in relays:
                    delay = MS if kind.endswith("+1ms") else 0
                    with relay(kind.split("+")[0], ns_a, ns_b, tmp, delay):
                        r = flood(ns_a, ns_b, mtu, seconds)
                    base = base or r
                    runs["throughput"].append({
                        "repeat": rep, "mtu": mtu, "relay": kind, **r,
                        "rx_tx": r["received"] / max(1, r["sent"]),
                        "pps_ratio": _ratio(r["pps"], base["pps"])})
                    print(f"  repeat {rep + 1}/{repeats} mtu {mtu} {kind:<11} "
                          f"{r['pps'] / 1e3:8.1f} kpps", flush=True)
            set_mtu(ns_a, ns_b, 1500)
            point = dict(ns_a=ns_a, ns_b=ns_b, tmp=tmp, probes=probes, repeat=rep)
            runs["lateness"] += lateness(**point, load=0, engines=QUIET_ENGINES)
            if args.load > 0:
                with busy(args.load):
                    runs["lateness"] += lateness(**point, load=args.load,
                                                 engines=LOADED_ENGINES)
                print(f"  repeat {rep + 1}/{repeats} lateness under load {args.load}",
                      flush=True)
    results: dict[str, object] = dict(summarise(runs))

    print(f"\nmedian (min-max) over {repeats} repeats; x bare: per repeat, against the bare "
          "relay of the same repeat")
    print(f"{'mtu':>5} {'relay':<11} {'kpps':>19} {'Gbit/s':>17} {'x bare':>17} {'rx/tx':>6}")
    for r in results["throughput"]:  # type: ignore[union-attr]
        sp = r["spread"]
        print(f"{r['mtu']:>5} {r['relay']:<11} {fmt_spread(sp['pps'], '.1f', 1e3):>19} "
              f"{fmt_spread(sp['gbps']):>17} {fmt_spread(sp['pps_ratio']):>17} "
              f"{r['rx_tx']:>6.2f}")
    print()
    print(f"{'relay':<11} {'delay':>6} {'load':>4} {'nice':>4} {'n':>5} {'late p50 us':>19} "
          f"{'late p99 us':>21} {'x bare p50':>17} {'x bare p99':>17} {'CPU':>5} "
          f"{'app p99 us':>10} {'engine p99 us':>13}")
    for r in results["lateness"]:  # type: ignore[union-attr]
        sp = r["spread"]
        print(f"{r['relay']:<11} {r['delay_ms']:>4}ms {r['load']:>4} {r['nice']:>4} "
              f"{r['n']:>5} {fmt_spread(sp['p50_us'], '.1f'):>19} "
              f"{fmt_spread(sp['p99_us'], '.1f'):>21} {fmt_spread(sp.get('p50_ratio')):>17} "
              f"{fmt_spread(sp.get('p99_ratio')):>17} {r['cpu_share']:>5.0%} "
              f"{_f1(r.get('app_p99_us')):>10} {_f1(r.get('engine_p99_us')):>13}")
    print("(one-way to the receiving socket, the kernel's receive timestamp: bare rows, the "
          "latency through the bare relay; engine rows, one-way minus the configured delay; "
          "engine: as fabric up starts it, spinning 150 us before each release within a tenth "
          "of one CPU; engine-sleep: never spinning; engine-spin: spinning 150 us without a "
          "budget; load: busy processes beside them, "
          "x bare against the bare relay under the same load; CPU: the relay's share of one "
          "core while the probes ran, median; app p99: the same to the receiving process "
          "reading it, its own wake-up included, median; engine p99: how late the engine "
          "wrote each release after its due time, its own count, median)")
    results["meta"] = {"seconds": seconds, "probes": probes, "repeats": repeats,
                       "load": args.load,
                       "quick": args.quick, "cpus": os.cpu_count(), "cpu": cpu_model(),
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "note": "lateness = one-way delay - configured, to the receiving "
                               "socket (SO_TIMESTAMPNS); app_*: to the receiving process; "
                               "includes kernel path; "
                               "each figure: median at the row's top level, min/median/max "
                               "over the repeats in 'spread', each repeat in 'runs'"}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
