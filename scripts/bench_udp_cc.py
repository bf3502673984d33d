#!/usr/bin/env python3
"""Four UDP flows into one 1 Gbit/s link: goodput against the rate, and the queue's drops,
without congestion control and with it.

Four senders, each on its own 1 Gbit/s access link to a forwarding node, send bulk data over
the UDP KV transport to one receiver behind a 1 Gbit/s bottleneck (128 KiB queue, ECN marks
above 32 KiB, 100 us a hop) on the userspace link backend, at time_scale 10 (`--time-scale`;
figures are fabric time). Each variant sets the class's `cc:` (the key RoCE flows pick theirs
by): `none` (pacing at the access rate within a fixed window of the queue: four such flows
overrun it) and `dctcp` (a window cut by the fraction of CE-marked bytes the ACKs echo); `--cc`
adds others (`dcqcn`'s published timers assume microsecond round trips). Every variant is
repeated, interleaved, and reported as min/median/max of

- goodput / rate: payload bytes delivered over the first start to the last completion,
  against the bottleneck's rate (fabric time);
- drops: the bottleneck direction's queue drops (the link engine's counters);
- marks: its ECN marks; retransmitted: UDP segments the senders sent again.

Run as root: python3 scripts/bench_udp_cc.py [--quick] [--json FILE] [--repeats N]
(JSON by default at results/bench_udp_cc.json)

For bench_kv.py: `run(quick) -> dict` runs the experiment and returns the JSON-able result;
`rows(result) -> list[tuple]` gives its table rows under `HEADER`; `table(result)` the text.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _spread import spread  # noqa: E402

from fabric.kinds import validate  # noqa: E402
from fabric.net import lifecycle  # noqa: E402
from fabric.plan import plan_fabric  # noqa: E402
from fabric.run.traffic import run_traffic  # noqa: E402
from fabric.topology import parse_topology  # noqa: E402

RATE = "1Gbps"
RATE_BPS = 1_000_000_000
SENDERS = 4
CCS = ("none", "dctcp")
# The fabric's 1 Gbit/s runs at 100 Mbit/s on the host: four senders, a forwarding node and a
# receiver in Python beside the link engine on two shared cores cannot drive 1 Gbit/s of
# 1500-byte datagrams (at time_scale 1 every variant is host-bound near 0.09 of the rate).
SCALE = 10.0

TOPOLOGY = """
name: udpcc{tag}
time_scale: {scale}
classes:
  - {{name: kv, dscp: 26, cc: {cc}}}
nodes: {{h0: {{}}, h1: {{}}, h2: {{}}, h3: {{}}, sw: {{kind: switch}}, dst: {{}}}}
links:
  - {{endpoints: [h0, sw], rate: {rate}, delay: 100us}}
  - {{endpoints: [h1, sw], rate: {rate}, delay: 100us}}
  - {{endpoints: [h2, sw], rate: {rate}, delay: 100us}}
  - {{endpoints: [h3, sw], rate: {rate}, delay: 100us}}
  - {{endpoints: [sw, dst], rate: {rate}, delay: 100us, queue: 128KiB, ecn: 32KiB}}
traffic:
  chunk: 1MiB
  flows:
{flows}
"""


def topology_text(cc: str, size: str, requests: int, scale: float = 1, tag: str = "") -> str:
    """The experiment's topology with the class's `cc:` set to `cc`, run `scale` times
    slower on the host."""
    flows = "\n".join(
        f"    - {{name: f{i}, pattern: bulk, from: h{i}, to: dst, class: kv, transport: udp, "
        f"size: {size}, requests: {requests}}}" for i in range(SENDERS))
    return TOPOLOGY.format(cc=cc, rate=RATE, flows=flows, tag=tag, scale=scale)


def bottleneck(links: dict[str, Any]) -> dict[str, Any]:
    """The counters of the direction into the receiver: the one of the sw--dst link that
    carried the most bytes (the data; the other carries ACKs)."""
    dirs = [d for lid, ds in links.get("links", {}).items() if "dst" in lid and "sw" in lid
            for d in ds.values()]
    if not dirs:
        raise RuntimeError(f"no sw--dst link in the counters: {sorted(links.get('links', {}))}")
    return max(dirs, key=lambda d: d.get("bytes_out", 0))


def one_run(cc: str, size: str, requests: int, timeout: float, scale: float = 1,
            ) -> dict[str, Any]:
    """Bring the fabric up, move the four flows, take it down; the run's figures."""
    topo = validate(parse_topology(topology_text(cc, size, requests, scale)))
    state = lifecycle.bring_up(plan_fabric(topo, backend="userspace"))
    try:
        result = run_traffic(state, topo, timeout=timeout)
    finally:
        lifecycle.remove_fabric(state)
    recs = [r for r in result.transfer_records if r.status == "ok"]
    if result.errors or len(recs) != len(result.transfers):
        raise RuntimeError(f"{cc}: run failed: {'; '.join(result.errors) or 'transfers lost'}")
    span_ns = max(r.t_done_ns for r in recs) - min(r.t_start_ns for r in recs)
    payload = sum(r.nbytes for r in recs)
    scale = topo.time_scale
    goodput = payload * 8 / (span_ns / scale / 1e9)
    link = bottleneck(result.links)
    retrans = sum(int(s.get("udp_retransmitted", 0)) for s in result.transport.values())
    return {"goodput_bps": goodput, "goodput_ratio": goodput / RATE_BPS,
            "drops": int(link.get("drops_queue", 0)), "marks": int(link.get("ecn_marks", 0)),
            "queue_max_bytes": int(link.get("queue_bytes_max", 0)),
            "retransmitted": retrans, "payload_bytes": payload, "seconds": span_ns / 1e9}


def run(quick: bool, repeats: int | None = None, ccs: tuple[str, ...] = CCS,
        scale: float = SCALE, say: Any = None) -> dict[str, Any]:  # noqa: ANN401
    """The experiment: every policy in `ccs`, `repeats` times each (interleaved, so a busy
    moment of the shared host hits every policy alike); JSON-able, with min/median/max."""
    repeats = repeats or (2 if quick else 5)
    size, requests = ("4MiB", 2) if quick else ("8MiB", 3)
    runs: dict[str, list[dict[str, Any]]] = {cc: [] for cc in ccs}
    for i in range(repeats):
        for cc in ccs:
            t = time.monotonic()
            r = one_run(cc, size, requests, timeout=300.0, scale=scale)
            runs[cc].append(r)
            if say:
                say(f"  {cc} #{i + 1}: goodput {r['goodput_ratio']:.3f} of the rate, "
                    f"{r['drops']} drops, {r['marks']} marks ({time.monotonic() - t:.1f} s)")
    summary = {cc: {key: spread([float(r[key]) for r in rs])
                    for key in ("goodput_ratio", "drops", "marks", "retransmitted")}
               for cc, rs in runs.items()}
    return {"benchmark": "udp_cc", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "senders": SENDERS, "rate_bps": RATE_BPS,
            "time_scale": scale,
            "bytes_per_flow": requests * int(size.removesuffix("MiB")) * 1024 * 1024,
            "repeats": repeats, "topology": topology_text("<cc>", size, requests, scale),
            "summary": summary, "runs": runs}


HEADER = ("cc", "goodput/rate min", "median", "max", "drops min", "median", "max",
          "marks median", "resent median")


def rows(result: dict[str, Any]) -> list[tuple]:
    """One row per policy: goodput/rate and bottleneck queue drops as min/median/max."""
    out = []
    for cc, s in result["summary"].items():
        g, d = s["goodput_ratio"], s["drops"]
        out.append((cc, f"{g['min']:.3f}", f"{g['median']:.3f}", f"{g['max']:.3f}",
                    f"{d['min']:.0f}", f"{d['median']:.0f}", f"{d['max']:.0f}",
                    f"{s['marks']['median']:.0f}", f"{s['retransmitted']['median']:.0f}"))
    return out


def table(result: dict[str, Any]) -> str:
    """The result as a text table, with its title."""
    body = [HEADER, *rows(result)]
    widths = [max(len(str(r[i])) for r in body) for i in range(len(HEADER))]
    lines = [f"{SENDERS} UDP flows into one {RATE} link ({result['repeats']} repeats, "
             f"{result['bytes_per_flow'] // (1 << 20)} MiB per flow, time_scale "
             f"{result['time_scale']:g}, fabric time; drops at its queue)"]
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="less data, 2 repeats")
    ap.add_argument("--repeats", type=int, help="runs per policy (default 5, quick 2)")
    ap.add_argument("--cc", default=",".join(CCS), help="comma list of policies")
    ap.add_argument("--time-scale", type=float, default=SCALE,
                    help=f"run the links this many times slower on the host (default {SCALE:g})")
    ap.add_argument("--json", type=Path, default=Path("results/bench_udp_cc.json"),
                    help="write the result here (default results/bench_udp_cc.json)")
    args = ap.parse_args()
    result = run(args.quick, args.repeats, tuple(args.cc.split(",")), args.time_scale,
                 say=lambda line: print(line, file=sys.stderr, flush=True))
    print(table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
