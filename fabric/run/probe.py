"""Measure a running fabric with standard tools and compare with what the topology asks.

For a few host pairs: `ping` (RTT min/avg/max/mdev, loss) and `iperf3` TCP goodput, run inside
the nodes' namespaces, against the expected RTT (sum of one-way delays along the path, both
ways) and the path's bottleneck rate. Figures are converted back to fabric time when the
topology sets `time_scale`, and the wall-clock ones are kept beside them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import pairwise

from fabric.errors import FabricError
from fabric.net.lifecycle import FabricState
from fabric.topology.document import Topology
from fabric.topology.paths import shortest_path as _path
from fabric.units import format_rate, format_time

PING_COUNT = 20
IPERF_SECONDS = 3


@dataclass
class PairResult:
    src: str
    dst: str
    hops: int
    expected_rtt_ns: int
    bottleneck_bps: int | None
    rtt_min_ns: int | None = None
    rtt_avg_ns: int | None = None
    rtt_max_ns: int | None = None
    rtt_mdev_ns: int | None = None
    ping_loss: float | None = None
    goodput_bps: float | None = None
    retransmits: int | None = None


@dataclass
class ProbeReport:
    fabric: str
    backend: str
    time_scale: float
    pairs: list[PairResult]

    def table(self) -> str:
        ts = self.time_scale
        unit = " (fabric time)" if ts != 1 else ""
        header = ["pair", "hops", "RTT want", "RTT min", "avg", "max", "loss",
                  "rate want", "TCP goodput", "ratio"]
        rows = []
        for p in self.pairs:
            def t(ns: int | None) -> str:
                return "-" if ns is None else format_time(round(ns / ts))
            ratio = "-"
            gp = "-"
            if p.goodput_bps is not None:
                gp = format_rate(round(p.goodput_bps * ts))
                if p.bottleneck_bps:
                    ratio = f"{p.goodput_bps * ts / p.bottleneck_bps:.3f}"
            rows.append([f"{p.src} -> {p.dst}", str(p.hops), format_time(p.expected_rtt_ns),
                         t(p.rtt_min_ns), t(p.rtt_avg_ns), t(p.rtt_max_ns),
                         "-" if p.ping_loss is None else f"{p.ping_loss:.1f}%",
                         format_rate(p.bottleneck_bps) if p.bottleneck_bps else "unshaped",
                         gp, ratio])
        from fabric.metrics.report import format_table

        return (f"{self.fabric}: {self.backend} links{unit}; RTT want and rate want computed "
                "from the topology, the rest measured on the fabric (ping, iperf3)\n"
                + format_table(rows, header, numeric=False))

    @classmethod
    def from_json(cls, data: dict) -> ProbeReport:
        return cls(data["fabric"], data["backend"], data["time_scale"],
                   [PairResult(**p) for p in data["pairs"]])

    def to_json(self) -> dict:
        return {"fabric": self.fabric, "backend": self.backend, "time_scale": self.time_scale,
                "figures": "wall-clock on the host; divide times and multiply rates by "
                           "time_scale for fabric time",
                "pairs": [asdict(p) for p in self.pairs]}


def shortest_path(topo: Topology, src: str, dst: str) -> list[str]:
    """One shortest path (hop count), lowest-named neighbour first: deterministic."""
    try:
        return _path(topo, src, dst)
    except KeyError:
        raise FabricError(f"{src} and {dst} are not connected") from None


def expected(topo: Topology, src: str, dst: str) -> tuple[int, int | None, int]:
    """(expected RTT ns, bottleneck rate a->b, hops) along one shortest path, fabric time."""
    path = shortest_path(topo, src, dst)
    rtt = 0
    rates = []
    for a, b in pairwise(path):
        fwd, rev = topo.shape(a, b), topo.shape(b, a)
        rtt += fwd.delay_ns + rev.delay_ns
        if fwd.rate_bps:
            rates.append(fwd.rate_bps)
    return rtt, (min(rates) if rates else None), len(path) - 1


def pick_pairs(topo: Topology, limit: int = 3) -> list[tuple[str, str]]:
    """The first host paired with a few others at different distances (near first)."""
    hosts = [n.name for n in topo.nodes.values() if n.kind == "host"]
    if len(hosts) < 2:
        return []
    src = hosts[0]
    by_hops: dict[int, str] = {}
    for dst in hosts[1:]:
        hops = len(shortest_path(topo, src, dst)) - 1
        by_hops.setdefault(hops, dst)
    return [(src, d) for _, d in sorted(by_hops.items())][:limit]


_PING_RE = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_LOSS_RE = re.compile(r"([\d.]+)% packet loss")


def _in_ns(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def ping(ns: str, dst_addr: str, count: int, interval: float = 0.05) -> dict[str, float]:
    out = subprocess.run(_in_ns(ns, ["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                                     "-W", "5", dst_addr]),
                         capture_output=True, text=True, timeout=count * interval + 30)
    loss = _LOSS_RE.search(out.stdout)
    m = _PING_RE.search(out.stdout)
    res = {"loss": float(loss.group(1)) if loss else 100.0}
    if m:
        res.update(min=float(m.group(1)), avg=float(m.group(2)), max=float(m.group(3)),
                   mdev=float(m.group(4)))
    return res


def iperf3(src_ns: str, dst_ns: str, dst_addr: str, seconds: float,
           udp_rate_bps: int | None = None) -> dict:
    """Run iperf3 once: server in dst_ns, client in src_ns. Returns the client's JSON."""
    server = subprocess.Popen(_in_ns(dst_ns, ["iperf3", "-s", "-1", "-B", dst_addr]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        argv = ["iperf3", "-c", dst_addr, "-t", str(seconds), "-J", "--connect-timeout", "3000"]
        if udp_rate_bps:
            argv += ["-u", "-b", str(udp_rate_bps), "-l", "1400"]
        for _attempt in range(20):  # the server needs a moment to listen
            out = subprocess.run(_in_ns(src_ns, argv), capture_output=True, text=True,
                                 timeout=seconds + 30)
            data = json.loads(out.stdout or "{}")
            if "error" not in data or "connect" not in data["error"]:
                return data
            time.sleep(0.05)
        return data
    finally:
        server.kill()
        server.wait()


def probe_fabric(state: FabricState, topo: Topology,
                 progress: Callable[[str], None] | None = None) -> ProbeReport:
    for tool in ("ping", "iperf3", "ip"):
        if shutil.which(tool) is None:
            raise FabricError(f"`{tool}` not found: apt-get install iputils-ping iperf3 iproute2")
    ts = topo.time_scale
    pairs = []
    for src, dst in pick_pairs(topo):
        rtt, bottleneck, hops = expected(topo, src, dst)
        p = PairResult(src, dst, hops, rtt, bottleneck)
        src_ns, dst_ns = state.netns_of(src), state.netns_of(dst)
        dst_addr = state.nodes[dst]["loopback"]
        if progress:
            progress(f"probing {src} -> {dst}: ping x{PING_COUNT}, iperf3 {IPERF_SECONDS} s")
        ping(src_ns, dst_addr, 2)  # warm up: ARP/neighbour entries along the path
        r = ping(src_ns, dst_addr, PING_COUNT)
        p.ping_loss = r["loss"]
        if "min" in r:
            p.rtt_min_ns, p.rtt_avg_ns, p.rtt_max_ns, p.rtt_mdev_ns = (
                round(r[k] * 1e6) for k in ("min", "avg", "max", "mdev"))
        data = iperf3(src_ns, dst_ns, dst_addr, IPERF_SECONDS)
        end = data.get("end", {})
        if "sum_received" in end:
            p.goodput_bps = end["sum_received"]["bits_per_second"]
            p.retransmits = end.get("sum_sent", {}).get("retransmits")
        pairs.append(p)
    return ProbeReport(topo.name, state.backend, ts, pairs)
