#!/usr/bin/env python3
"""Benchmark the memory-semantic switch: transaction rate, and the all-reduce against the ring.

    python3 scripts/bench_memsem.py [--repeats 3] [--seconds 5] [--window 64]
                                    [--profile 5] [--parts rate,allreduce]
                                    [--out results/bench_memsem.json]

Root only. Two parts, each against a baseline measured in the same run:

1. **Transaction rate.** The fabric of `topologies/memsem-single.yaml` at `time_scale: 100`
   (userspace links at 2 Gbit/s on the host, which neither shape nor queue at these rates, so the
   processes are the limit). gpu-0 streams 256-byte WRITEs to gpu-1's window through the
   memory switch (`fabric.memsw.node`, the real process), with the real endpoint code
   (`fabric.memsw.endpoint.MemoryNode`: `request()` of 64 KiB writes, split into 256 B
   transactions, `--window` outstanding) at both ends. Transactions/s = WriteAcks returned
   per second of host time. Baseline: a bare Python UDP relay in the switch's namespace
   (recvfrom, sendto the other endpoint, no core) and a bare echo in gpu-1, with gpu-0
   keeping the same number of 298-byte datagrams (a WRITE's size) outstanding: the same four
   datagram hops per transaction, through the same namespaces and link engine. CPU seconds
   of the switch (or relay), both endpoints and the link engine over the interval, from
   /proc. A third path measures what the endpoints alone reach: the same `MemoryNode`
   endpoints and 64 KiB writes as the memory path, with the bare relay in the switch's
   place (it forwards each datagram to the other endpoint's memory port and models
   nothing: no credits, ordering, latency or port rate). It is the ceiling of the memory
   path with a switch that costs no more than a relay; memory / this is the switch's share.
   Rounds rotate memory/bare/endpoints; min/median/max over `--repeats`.
   With `--profile S`, py-spy samples the switch and the requesting endpoint for S seconds
   in one extra memory round; the top entries (own time and inclusive) go in the JSON.
2. **All-reduce.** `fabric run` on memsem-single.yaml with only its `allreduce` run (group
   tp, four members, float32, 16 KiB and 256 KiB), `--repeats` times: switch (in-network
   reduce) against the ring over TCP on the same links, in the same run (fabric time). Every
   run checks each member's vector bit for bit (the run fails otherwise).

Figures are measured on the fabric, on a shared 2-core host: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import cpu_model, cpu_seconds, stop, wait_ready  # noqa: E402
from _spread import spread  # noqa: E402

from fabric.net.tun import in_netns  # noqa: E402

TOPOLOGY = REPO / "topologies" / "memsem-single.yaml"
RELAY_PORT = 4795
ECHO_PORT = 4796
TXN = 256
WRITE_DATAGRAM = TXN + 42  # one WRITE's datagram: header + data
OP_BYTES = 64 * 1024


# -- roles, run as subprocesses ------------------------------------------------------------


def _stop_on_term() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def role_relay(ns: str, a: str, b: str, to: str = "echo") -> None:
    """The bare relay: a datagram from `a` goes to `b`'s echo port, one from `b` to `a`. With
    `to="memory"` both go to the other's memory port (`MEM_PORT`): endpoints' traffic."""
    from fabric.memsw.wire import MEM_PORT

    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    s.bind(("0.0.0.0", RELAY_PORT))
    if to == "memory":
        route = {a: (b, MEM_PORT), b: (a, MEM_PORT)}
    else:
        route = {a: (b, ECHO_PORT), b: (a, RELAY_PORT)}
    _stop_on_term()
    print(f"READY {os.getpid()}", flush=True)
    recvfrom, sendto = s.recvfrom, s.sendto
    while True:
        data, (addr, _) = recvfrom(65536)
        dst = route.get(addr)
        if dst is not None:
            sendto(data, dst)


def role_echo(ns: str) -> None:
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", ECHO_PORT))
    _stop_on_term()
    print(f"READY {os.getpid()}", flush=True)
    recvfrom, sendto = s.recvfrom, s.sendto
    while True:
        data, addr = recvfrom(65536)
        sendto(data, addr)


def role_blast(ns: str, relay: str, window: int, seconds: float) -> None:
    """Keep `window` datagrams outstanding through the relay; count the echoes."""
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", RELAY_PORT))
    s.connect((relay, RELAY_PORT))
    payload = b"\x5a" * WRITE_DATAGRAM
    print(f"READY {os.getpid()}", flush=True)
    sys.stdin.readline()  # GO
    for _ in range(window):
        s.send(payload)
    s.settimeout(1.0)
    done = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while True:
        try:
            s.recv(65536)
        except TimeoutError:  # a datagram lost: put it back
            s.send(payload)
            continue
        done += 1
        if time.monotonic() >= end:
            break
        s.send(payload)
    print(json.dumps({"txns": done, "seconds": time.monotonic() - t0}), flush=True)


def _endpoint_plan(node: str, cfg: dict[str, Any], window: int) -> dict[str, Any]:
    return {"name": node, "time_scale": 100.0, "txn": TXN, "gateway": cfg["gateway"],
            "windows": cfg["windows"], "mcast": [], "window": window,
            "timeout_ns": 10_000_000_000, "address": "", "peers": {}}


def role_memory(ns: str, plan_json: str, seconds: float, target: int,
                gateway_port: int = 0) -> None:
    """A real memory endpoint (`MemoryNode`): serves its windows and, with `target`, streams
    64 KiB writes there (split into 256 B transactions) for `seconds`. With `gateway_port`,
    it sends to that port at its gateway (the bare relay's) instead of the switch's."""
    import trio

    from fabric.memsw.endpoint import MemoryNode
    from fabric.memsw.ops import Write, WriteAck
    from fabric.memsw.wire import MEM_PORT

    plan = json.loads(plan_json)
    with in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.bind(("0.0.0.0", MEM_PORT))
    sock.setblocking(False)
    _stop_on_term()

    async def main() -> None:
        node = MemoryNode(plan, sock)
        if gateway_port:
            node.gateway = (node.gateway[0], gateway_port)
        node.t0 = time.monotonic_ns()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.receive_loop)
            print(f"READY {os.getpid()}", flush=True)
            if target < 0:
                await trio.sleep_forever()
            await trio.to_thread.run_sync(sys.stdin.readline)  # GO
            data = bytes(range(256)) * (OP_BYTES // 256)
            done = ops = bad = 0
            t0 = time.monotonic()
            end = t0 + seconds
            while time.monotonic() < end:
                resp, _ = await node.request(Write(node.tag(), 0, target + (ops % 16) * OP_BYTES,
                                                   data))
                ops += 1
                done += OP_BYTES // TXN
                bad += not isinstance(resp, WriteAck)
            print(json.dumps({"txns": done, "seconds": time.monotonic() - t0, "failed": bad,
                              "lost": len(node.lost)}), flush=True)
            nursery.cancel_scope.cancel()

    trio.run(main)


ROLES = {"relay": role_relay, "echo": role_echo, "blast": role_blast, "memory": role_memory}


# -- helpers -------------------------------------------------------------------------------


def _role(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--role", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=REPO)


def _result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("{"):
        raise RuntimeError(f"bench_memsem: no result: {line!r}")
    return json.loads(line)


# -- part 1: transaction rate ----------------------------------------------------------------


def _rate_topology() -> str:
    text = TOPOLOGY.read_text()
    text = re.sub(r"^time_scale: .*$", "time_scale: 100", text, flags=re.M)
    return text.replace("name: memsem-single", f"name: bms{os.getpid() % 10000}")


def _go(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("GO\n")
        p.stdin.flush()


def rate_round(state: Any, cfgs: dict[str, Any], kind: str, window: int, seconds: float,
               profile: float = 0.0) -> dict[str, Any]:
    ns = {n: state.netns_of(n) for n in ("msw", "gpu-0", "gpu-1")}
    addr = {n: cfgs["ep"][n]["gateway"] for n in ("gpu-0", "gpu-1")}
    switch_addr = {p["name"]: p["address"] for p in cfgs["switch"]["ports"]}
    procs: list[subprocess.Popen[str]] = []
    try:
        if kind == "memory":
            server = _role("memory", ns["gpu-1"], json.dumps(cfgs["plan"]["gpu-1"]), "0", "-1")
            procs.append(server)
            pids = {"server": int(wait_ready(server, "memory server", 20)[0]),
                    "switch": state.switch_pids["msw"]}
            client = _role("memory", ns["gpu-0"], json.dumps(cfgs["plan"]["gpu-0"]),
                           str(seconds), str(cfgs["target"]))
        elif kind == "endpoints":
            relay = _role("relay", ns["msw"], switch_addr["gpu-0"], switch_addr["gpu-1"],
                          "memory")
            server = _role("memory", ns["gpu-1"], json.dumps(cfgs["plan"]["gpu-1"]), "0", "-1",
                           str(RELAY_PORT))
            procs += [relay, server]
            pids = {"switch": int(wait_ready(relay, "relay", 20)[0]),
                    "server": int(wait_ready(server, "memory server", 20)[0])}
            client = _role("memory", ns["gpu-0"], json.dumps(cfgs["plan"]["gpu-0"]),
                           str(seconds), str(cfgs["target"]), str(RELAY_PORT))
        else:
            relay = _role("relay", ns["msw"], switch_addr["gpu-0"], switch_addr["gpu-1"])
            echo = _role("echo", ns["gpu-1"])
            procs += [relay, echo]
            pids = {"switch": int(wait_ready(relay, "relay", 20)[0]),
                    "server": int(wait_ready(echo, "echo", 20)[0])}
            client = _role("blast", ns["gpu-0"], addr["gpu-0"], str(window), str(seconds))
        procs.append(client)
        pids["client"] = int(wait_ready(client, kind + " client", 20)[0])
        pids["engine"] = state.engine_pid or 0
        stats0 = _switch_stats(state) if kind == "memory" else {}
        cpu0 = {k: cpu_seconds(p, missing_ok=True) for k, p in pids.items()}
        _go([client])
        spy: list[subprocess.Popen[str]] = []
        outs: dict[str, str] = {}
        if profile:
            time.sleep(0.5)
            for who in ("switch", "client"):
                outs[who] = tempfile.mktemp(suffix=f"-{who}.txt")
                spy.append(subprocess.Popen(
                    ["py-spy", "record", "-p", str(pids[who]), "-d", str(int(profile)),
                     "-r", "200", "-f", "raw", "-o", outs[who], "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        res = _result(client, seconds + 60)
        cpu1 = {k: cpu_seconds(p, missing_ok=True) for k, p in pids.items()}
        for p in spy:
            p.wait(timeout=60)
        out: dict[str, Any] = {
            "kind": kind, "txns": res["txns"], "seconds": res["seconds"],
            "rate": res["txns"] / res["seconds"],
            "cpu": {k: cpu1[k] - cpu0[k] for k in pids},
            "failed": res.get("failed", 0), "lost": res.get("lost", 0)}
        out["switch_cpu_per_txn_us"] = out["cpu"]["switch"] / max(res["txns"], 1) * 1e6
        if profile:
            out["profile"] = {who: top_entries(Path(path)) for who, path in outs.items()}
        if kind == "memory":  # the switch writes its counters every 2 s
            time.sleep(2.2)
            st = _switch_stats(state)
            delta = {k: st.get(k, 0) - stats0.get(k, 0) for k in
                     ("messages_in", "datagrams_in", "messages_out", "datagrams_out")}
            if delta["datagrams_in"] and delta["messages_in"]:
                out["switch_messages_per_datagram"] = {
                    "in": delta["messages_in"] / delta["datagrams_in"],
                    "out": delta["messages_out"] / max(delta["datagrams_out"], 1)}
            else:  # a switch without the counters: one message per datagram
                out["switch_messages_per_datagram"] = {"in": 1.0, "out": 1.0}
        return out
    finally:
        for p in procs:
            stop(p)


def _switch_stats(state: Any) -> dict[str, Any]:  # noqa: ANN401
    try:
        return json.loads((state.dir / "memswitch-msw.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def top_entries(path: Path, n: int = 12) -> dict[str, list[tuple[str, float]]]:
    """py-spy's collapsed stacks -> the top `n` frames by own time and by inclusive time."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = [re.sub(r" \((.*/)?([^/]*)\)$", r" (\2)", f) for f in stack.split(";")]
        if frames:
            own[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    path.unlink(missing_ok=True)
    if not total:
        return {}
    return {"own": [(f, round(c / total, 3)) for f, c in own.most_common(n)],
            "inclusive": [(f, round(c / total, 3)) for f, c in incl.most_common(n + 8)
                          if "<module>" not in f and "run (trio" not in f][:n]}


def part_rate(repeats: int, seconds: float, window: int, profile: float) -> dict[str, Any]:
    from fabric.kinds import daemons
    from fabric.memsw.deploy import gateway_of, switch_configs
    from fabric.net.lifecycle import bring_up, remove_fabric
    from fabric.plan import plan_fabric
    from fabric.topology import parse_topology

    topo = parse_topology(_rate_topology())
    plan = plan_fabric(topo, backend="userspace")
    sw = switch_configs(plan)["msw"]
    mem = topo.memory
    assert mem is not None
    eps = {n: {"gateway": gateway_of(plan, n, {"msw"}),
               "windows": [{"name": w.name, "base": w.base, "size": w.size}
                           for w in mem.windows if w.node == n]} for n in ("gpu-0", "gpu-1")}
    cfgs = {"switch": sw, "ep": eps,
            "plan": {n: _endpoint_plan(n, eps[n], window) for n in eps},
            "target": eps["gpu-1"]["windows"][0]["base"]}
    state = bring_up(plan, daemons=daemons(plan))
    kinds = ("memory", "bare", "endpoints")
    rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    out: dict[str, Any] = {"window": window, "seconds": seconds}
    try:
        time.sleep(1.0)
        for i in range(repeats):
            for kind in kinds[i % 3:] + kinds[:i % 3]:
                r = rate_round(state, cfgs, kind, window, seconds)
                rounds[kind].append(r)
                print(f"  rate {kind:6s} round {i + 1}: {r['rate']:8.0f} txn/s  cpu "
                      + " ".join(f"{k} {v:.2f}s" for k, v in r["cpu"].items()), flush=True)
        if profile:
            r = rate_round(state, cfgs, "memory", window, profile + 2, profile=profile)
            out["profile"] = r.pop("profile", {})
            out["profile_round"] = r
    finally:
        remove_fabric(state)
    out["rounds"] = rounds
    for kind, rs in rounds.items():
        out[kind] = {"rate": spread([r["rate"] for r in rs]),
                     "switch_cpu_per_txn_us": spread([r["switch_cpu_per_txn_us"] for r in rs]),
                     "cpu_per_s": {k: spread([r["cpu"][k] / r["seconds"] for r in rs])
                                   for k in rs[0]["cpu"]}}
    out["memory"]["switch_messages_per_datagram"] = {
        d: spread([r["switch_messages_per_datagram"][d] for r in rounds["memory"]])
        for d in ("in", "out")}
    out["ratio"] = spread([m["rate"] / b["rate"] for m, b in zip(rounds["memory"],
                                                                 rounds["bare"], strict=True)])
    out["of_endpoints"] = spread([m["rate"] / e["rate"] for m, e in
                                  zip(rounds["memory"], rounds["endpoints"], strict=True)])
    out["ok"] = all(r["failed"] == 0 and r["lost"] == 0
                    for r in rounds["memory"] + rounds["endpoints"])
    return out


# -- part 2: the all-reduce ----------------------------------------------------------------


def _allreduce_topology() -> str:
    text = TOPOLOGY.read_text()
    head, _, runs = text.partition("  runs:\n")
    keep = [line for line in runs.splitlines() if "name: allreduce," in line]
    return (head + "  runs:\n" + "\n".join(keep) + "\n").replace(
        "name: memsem-single", f"name: bma{os.getpid() % 10000}")


def part_allreduce(repeats: int) -> dict[str, Any]:
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "allreduce.yaml"
        path.write_text(_allreduce_topology())
        for i in range(repeats):
            out = Path(tmp) / f"out{i}"
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "fabric.entry", "run", str(path), "--out",
                                str(out), "--timeout", "300"], cwd=REPO, capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            if p.returncode != 0:
                raise RuntimeError(f"bench_memsem: fabric run failed: {p.stdout}{p.stderr}")
            doc = json.loads((out / "memory.json").read_text())
            got = {}
            for o in doc["outcomes"]:
                if not o["ok"]:
                    raise RuntimeError(f"bench_memsem: {o['variant']} {o['size']} failed")
                got[f"{o['variant']} {o['size']}"] = o["ns"]
                rows.setdefault(f"{o['variant']} {o['size']}", []).append(o["ns"])
            for size in (16384, 262144):
                rows.setdefault(f"ratio {size}", []).append(got[f"switch {size}"]
                                                            / got[f"ring {size}"])
            print(f"  allreduce run {i + 1} ({time.monotonic() - t0:.0f} s): "
                  + ", ".join(f"{k} {v / 1000:.1f} us" for k, v in got.items()), flush=True)
    return {k: spread(v) for k, v in rows.items()}


# -- report --------------------------------------------------------------------------------


def print_table(res: dict[str, Any]) -> None:
    if "rate" in res:
        r = res["rate"]
        print(f"\ntransaction rate (256 B writes, window {r['window']}; host time; "
              f"min / median / max of {len(r['rounds']['memory'])})")
        print(f"{'path':34s} {'txn/s':>26s} {'switch CPU us/txn':>22s}")
        for kind, label in (("memory", "memory switch + endpoints"),
                            ("bare", "bare UDP relay + echo (baseline)"),
                            ("endpoints", "bare UDP relay + endpoints (ceiling)")):
            if kind not in r:
                continue
            s, c = r[kind]["rate"], r[kind]["switch_cpu_per_txn_us"]
            print(f"{label:34s} {s['min']:8.0f} {s['median']:8.0f} {s['max']:8.0f} "
                  f"{c['min']:7.1f} {c['median']:7.1f} {c['max']:7.1f}")
        q = r["ratio"]
        print(f"{'memory / bare':34s} {q['min']:8.2f} {q['median']:8.2f} {q['max']:8.2f}")
        if "of_endpoints" in r:
            q = r["of_endpoints"]
            print(f"{'memory / relay + endpoints':34s} {q['min']:8.2f} {q['median']:8.2f} "
                  f"{q['max']:8.2f}")
        m = r["memory"]["switch_messages_per_datagram"]
        print(f"switch messages per datagram: in {m['in']['median']:.2f}, out "
              f"{m['out']['median']:.2f} (median)")
        for who, top in r.get("profile", {}).items():
            print(f"\nprofile of the {who} (py-spy, own time):")
            for f, share in top.get("own", [])[:8]:
                print(f"  {share:6.1%}  {f}")
    if "allreduce" in res:
        a = res["allreduce"]
        print("\nall-reduce, memsem-single.yaml group tp (fabric time, us; min / median / max)")
        for size in (16384, 262144):
            for v in ("switch", "ring"):
                s = a[f"{v} {size}"]
                print(f"  {size // 1024:4d} KiB {v:7s} {s['min'] / 1e3:8.2f} "
                      f"{s['median'] / 1e3:8.2f} {s['max'] / 1e3:8.2f}")
            s = a[f"ratio {size}"]
            print(f"  {size // 1024:4d} KiB switch/ring {s['min']:6.2f} {s['median']:6.2f} "
                  f"{s['max']:6.2f}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--role":
        fn = ROLES[sys.argv[2]]
        args: list[Any] = list(sys.argv[3:])
        if sys.argv[2] == "blast":
            args = [args[0], args[1], int(args[2]), float(args[3])]
        elif sys.argv[2] == "memory":
            args = [args[0], args[1], float(args[2]), int(args[3]), *map(int, args[4:])]
        fn(*args)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--profile", type=float, default=5.0, help="py-spy seconds (0: none)")
    ap.add_argument("--parts", default="rate,allreduce")
    ap.add_argument("--out", default=str(REPO / "results" / "bench_memsem.json"))
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    res: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "load_before": os.getloadavg(), "cpu": cpu_model()}
    if "rate" in parts:
        print("transaction rate:", flush=True)
        res["rate"] = part_rate(a.repeats, a.seconds, a.window, a.profile)
    if "allreduce" in parts:
        print("all-reduce:", flush=True)
        res["allreduce"] = part_allreduce(a.repeats)
    res["load_after"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print_table(res)
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
