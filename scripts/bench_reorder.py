#!/usr/bin/env python3
"""What reordering costs each transport, against the same loss without reordering.

The same KV transfer (a -> b, one link: 100 Mbit/s, 2 ms, --loss random loss) moves over
TCP (the kernel's), UDP (selective NACKs with RACK's reordering window) and RoCE (go-back-N,
as RoCEv2 NICs do), first through a link that only loses (the baseline, measured in the same
run), then through one that also reorders (jitter --jitter, larger than the ~0.12 ms between
full-size packets at 100 Mbit/s, so packets overtake each other). For each run:

- goodput: payload bits over the span from the first transfer's start to the last one's end;
- wire / payload: bytes the link took in from the sender (headers and every resend included,
  the link engine's own counter) over the payload;
- resends: what the sender's transport counted (UDP and RoCE: their counters; TCP: the
  sender namespace's RetransSegs);
- the reordered run's goodput and wire / payload as a ratio to the baseline's.

Every run's integrity (each chunk's digest checked at the receiver) is shown. Prints a table,
writes JSON (--json). Run as root: python3 scripts/bench_reorder.py [--mib 3] [--loss 2%]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fabric.kv import get_model  # noqa: E402
from fabric.kv.layout import transfer_bytes  # noqa: E402
from fabric.metrics import integrity_counts  # noqa: E402
from fabric.metrics.report import render_integrity  # noqa: E402
from fabric.net import lifecycle  # noqa: E402
from fabric.plan import plan_fabric  # noqa: E402
from fabric.run.traffic import run_traffic  # noqa: E402
from fabric.topology import parse_topology  # noqa: E402

PAIR = """
name: {name}
nodes: {{a: {{}}, b: {{}}}}
links:
  - {{endpoints: [a, b], rate: 100Mbps, delay: 2ms, loss: {loss}{jitter}}}
traffic:
  model: {model}
  seed: 7
  flows:
    - {{name: kv, pattern: one-to-one, from: a, to: b, transport: {transport},
       tokens: {tokens}, requests: 1}}
"""

TRANSPORTS = ("tcp", "udp", "roce")
MODEL = "llama-3.1-8b"


def tcp_retransmits(netns: str) -> int:
    """RetransSegs of a namespace's TCP (its /proc/net/snmp)."""
    out = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/snmp"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("RetransSegs")])


def resends(transport: str, stats: dict[str, int]) -> int:
    if transport == "udp":
        return int(stats.get("udp_retransmitted", 0))
    return int(stats.get("retransmitted", 0))


def one_run(state: Any, text: str, transport: str, timeout: float) -> dict[str, Any]:  # noqa: ANN401
    topo = parse_topology(text)
    tcp_before = tcp_retransmits(state.netns_of("a")) if transport == "tcp" else 0
    t0 = time.monotonic()
    res = run_traffic(state, topo, timeout=timeout)
    wall = time.monotonic() - t0
    counts = integrity_counts(res.chunk_records, res.transfer_records)
    done = [r for r in res.transfer_records if r.status == "ok"]
    payload = sum(r.nbytes for r in res.transfer_records)
    span = (max(r.t_done_ns for r in done) - min(r.t_start_ns for r in done)) if done else 0
    fwd = res.links["links"]["a--b"]["forward"]
    stats = res.transport.get("a", {})
    row: dict[str, Any] = {
        "transport": transport, "payload_bytes": payload, "wall_s": round(wall, 2),
        "goodput_bps": payload * 8 / (span / 1e9) if span and len(done) == len(
            res.transfer_records) else None,
        "wire_bytes": fwd["bytes_in"], "wire_packets": fwd["packets_in"],
        "wire_per_payload": fwd["bytes_in"] / payload if payload else None,
        "link_drops": fwd.get("drops_loss", 0) + fwd.get("drops_queue", 0),
        "resends": (tcp_retransmits(state.netns_of("a")) - tcp_before if transport == "tcp"
                    else resends(transport, stats)),
        "integrity": counts.to_dict(), "errors": res.errors, "timed_out": res.timed_out,
        "transport_stats": stats,
    }
    if transport == "roce":
        row["naks"] = stats.get("naks", 0)
        row["timeouts"] = stats.get("timeouts", 0)
    if transport == "udp":
        row["spurious"] = stats.get("udp_spurious", 0)
        row["timeouts"] = stats.get("udp_timeouts", 0)
    return row


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median goodput (a run that did not finish counts as the slowest)."""
    ranked = sorted(runs, key=lambda r: r["goodput_bps"] or 0.0)
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["runs"] = [{k: r[k] for k in ("goodput_bps", "wire_per_payload", "resends",
                                         "wall_s", "timed_out")} for r in runs]
    return chosen


def condition(label: str, loss: str, jitter: str | None, tokens: int, timeout: float,
              repeat: int) -> list[dict[str, Any]]:
    """Build the pair once with this link, run each transport's transfer on it."""
    name = f"br{os.getpid() % 10000}{'r' if jitter else 'l'}"
    rows = []
    texts = {t: PAIR.format(name=name, loss=loss, model=MODEL, tokens=tokens, transport=t,
                            jitter=f", jitter: {jitter}" if jitter else "")
             for t in TRANSPORTS}
    state = lifecycle.bring_up(plan_fabric(parse_topology(texts["tcp"]), backend="userspace"))
    try:
        for transport in TRANSPORTS:
            runs = []
            for _ in range(repeat):
                runs.append(one_run(state, texts[transport], transport, timeout))
                print(f"  {label:<14} {transport:<5} {runs[-1]['wall_s']:6.1f} s", flush=True)
            row = _median_run(runs)
            row["condition"] = label
            rows.append(row)
    finally:
        lifecycle.remove_fabric(state)
    return rows


def _mbit(bps: float | None) -> str:
    return "-" if bps is None else f"{bps / 1e6:.1f} Mbit/s"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=4, help="payload per transport (MiB)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per transport and link; the one of median goodput is shown")
    ap.add_argument("--loss", default="2%", help="random loss on the link, both runs")
    ap.add_argument("--jitter", default="1ms", help="the reordering run's jitter")
    ap.add_argument("--timeout", type=float, default=60.0, help="per run, seconds")
    ap.add_argument("--json", default="results/bench_reorder.json")
    args = ap.parse_args()
    model = get_model(MODEL)
    tokens = 1
    while transfer_bytes(model, tokens) < args.mib << 20:  # KV comes in blocks of tokens
        tokens += 1

    print(f"KV of {tokens} tokens ({transfer_bytes(model, tokens) / 2**20:.1f} MiB) a -> b "
          f"over 100 Mbit/s, 2 ms, loss {args.loss}")
    base = condition("loss", args.loss, None, tokens, args.timeout, args.repeat)
    reord = condition("loss+reorder", args.loss, args.jitter, tokens, args.timeout,
                      args.repeat)

    header = ["transport", "link", "goodput", "wire/payload", "resends", "timeouts", "drops",
              "goodput vs base", "wire vs base", "integrity"]
    table = []
    for b, r in zip(base, reord, strict=True):
        for row, is_base in ((b, True), (r, False)):
            gp_ratio = (row["goodput_bps"] / b["goodput_bps"]
                        if not is_base and row["goodput_bps"] and b["goodput_bps"] else None)
            wire_ratio = (row["wire_per_payload"] / b["wire_per_payload"]
                          if not is_base and row["wire_per_payload"] and b["wire_per_payload"]
                          else None)
            if not is_base:
                row["goodput_vs_base"] = gp_ratio
                row["wire_vs_base"] = wire_ratio
            link = row["condition"] if is_base else f"+ jitter {args.jitter}"
            integrity = render_integrity(row["integrity"]).removeprefix("integrity: ")
            if row["timed_out"]:
                integrity += f" (timed out at {args.timeout:.0f} s)"
            table.append([row["transport"] if is_base else "", link, _mbit(row["goodput_bps"]),
                          _x(row["wire_per_payload"]), str(row["resends"]),
                          str(row.get("timeouts", "-")), str(row["link_drops"]),
                          "" if is_base else _x(gp_ratio), "" if is_base else _x(wire_ratio),
                          integrity])
    widths = [max(len(str(c[i])) for c in [header, *table]) for i in range(len(header))]
    for cells in [header, *table]:
        print("  ".join(str(c).ljust(w) if i in (0, 1, 9) else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip())
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"host": os.uname().nodename, "loss": args.loss,
                               "jitter": args.jitter, "payload_mib": args.mib,
                               "rows": base + reord}, indent=1, default=str))
    print("wire/payload: bytes the link took in from the sender (headers and resends included) "
          "over the payload; resends: the sender transport's count (TCP: RetransSegs); "
          "drops: the link's, sender to receiver; goodput: payload over the transfer's span")
    print(f"wrote {out}")
    return 0 if all(r["integrity"]["ok"] and not r["errors"] for r in base + reord) else 1


if __name__ == "__main__":
    sys.exit(main())
