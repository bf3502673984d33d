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
writes JSON (--json). Both links are up together and each transport's runs alternate between
them, --repeat times; each row is its run of median goodput, with min/median/max over the runs
in the JSON (`spread`), and a ratio's spread is over the per-repeat ratios.
Run as root: python3 scripts/bench_reorder.py [--quick] [--mib 3] [--loss 2%] [--repeat 3]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import cpu_model  # noqa: E402
from _spread import fmt_spread, spread  # noqa: E402

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


SPREAD_KEYS = ("goodput_bps", "wire_per_payload", "resends", "wall_s")


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median goodput (a run that did not finish counts as the slowest), with
    `spread`: min/median/max over the runs of each figure (goodput over the runs that
    finished), and `runs`: each run's figures."""
    ranked = sorted(runs, key=lambda r: r["goodput_bps"] or 0.0)
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["spread"] = {k: spread(r[k] for r in runs) for k in SPREAD_KEYS}
    chosen["repeats"] = len(runs)
    chosen["runs"] = [{k: r[k] for k in (*SPREAD_KEYS, "timed_out")} for r in runs]
    return chosen


def _per_repeat_ratios(base: list[dict[str, Any]], reord: list[dict[str, Any]],
                       key: str) -> list[float | None]:
    """Each reordered run's `key` over the loss-only run of the same repeat."""
    return [r[key] / b[key] if r[key] and b[key] else None
            for b, r in zip(base, reord, strict=True)]


def conditions(loss: str, jitter: str, tokens: int, timeout: float, repeat: int,
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Build both pairs (loss only, the baseline; loss + reordering), and for each transport
    run its transfer on each in turn, `repeat` times: a repeat's two runs are moments apart on
    a shared host, and its ratio compares them."""
    tag = os.getpid() % 10000
    labels = {"loss": None, "loss+reorder": jitter}
    texts = {label: {t: PAIR.format(name=f"br{tag}{'r' if jit else 'l'}", loss=loss,
                                    model=MODEL, tokens=tokens, transport=t,
                                    jitter=f", jitter: {jit}" if jit else "")
                     for t in TRANSPORTS}
             for label, jit in labels.items()}
    states: dict[str, Any] = {}
    base_rows, reord_rows = [], []
    try:
        for label in labels:
            states[label] = lifecycle.bring_up(plan_fabric(parse_topology(texts[label]["tcp"]),
                                                           backend="userspace"))
        for transport in TRANSPORTS:
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
            for i in range(repeat):
                for label in labels:
                    r = one_run(states[label], texts[label][transport], transport, timeout)
                    runs[label].append(r)
                    print(f"  {label:<14} {transport:<5} #{i + 1} {r['wall_s']:6.1f} s",
                          flush=True)
            b, r = _median_run(runs["loss"]), _median_run(runs["loss+reorder"])
            b["condition"], r["condition"] = "loss", "loss+reorder"
            for key, name in (("goodput_bps", "goodput_vs_base"),
                              ("wire_per_payload", "wire_vs_base")):
                r["spread"][name] = spread(_per_repeat_ratios(runs["loss"],
                                                              runs["loss+reorder"], key))
            base_rows.append(b)
            reord_rows.append(r)
    finally:
        for st in states.values():
            lifecycle.remove_fabric(st)
    return base_rows, reord_rows


def _mbit(bps: float | None) -> str:
    return "-" if bps is None else f"{bps / 1e6:.1f} Mbit/s"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, help="payload per transport (MiB; default 4, quick 1)")
    ap.add_argument("--repeat", type=int, help="runs per transport and link (default 3, quick "
                    "2); the one of median goodput is shown, with min/median/max")
    ap.add_argument("--quick", action="store_true", help="1 MiB, 2 repeats")
    ap.add_argument("--loss", default="2%", help="random loss on the link, both runs")
    ap.add_argument("--jitter", default="1ms", help="the reordering run's jitter")
    ap.add_argument("--timeout", type=float, default=60.0, help="per run, seconds")
    ap.add_argument("--json", default="results/bench_reorder.json")
    args = ap.parse_args()
    args.mib = args.mib or (1 if args.quick else 4)
    args.repeat = args.repeat or (2 if args.quick else 3)
    model = get_model(MODEL)
    tokens = 1
    while transfer_bytes(model, tokens) < args.mib << 20:  # KV comes in blocks of tokens
        tokens += 1

    print(f"KV of {tokens} tokens ({transfer_bytes(model, tokens) / 2**20:.1f} MiB) a -> b "
          f"over 100 Mbit/s, 2 ms, loss {args.loss}")
    base, reord = conditions(args.loss, args.jitter, tokens, args.timeout, args.repeat)

    header = ["transport", "link", "goodput", "goodput min-max", "wire/payload", "resends",
              "timeouts", "drops", "goodput vs base", "wire vs base", "integrity"]
    table = []
    for b, r in zip(base, reord, strict=True):
        for row, is_base in ((b, True), (r, False)):
            if not is_base:  # the median of the per-repeat ratios
                row["goodput_vs_base"] = row["spread"]["goodput_vs_base"]["median"]
                row["wire_vs_base"] = row["spread"]["wire_vs_base"]["median"]
            link = row["condition"] if is_base else f"+ jitter {args.jitter}"
            integrity = render_integrity(row["integrity"]).removeprefix("integrity: ")
            if row["timed_out"]:
                integrity += f" (timed out at {args.timeout:.0f} s)"
            gsp = row["spread"]["goodput_bps"]
            gmm = (f"{gsp['min'] / 1e6:.1f}-{gsp['max'] / 1e6:.1f}" if gsp["n"] else "-")
            table.append([row["transport"] if is_base else "", link, _mbit(row["goodput_bps"]),
                          gmm, _x(row["wire_per_payload"]), str(row["resends"]),
                          str(row.get("timeouts", "-")), str(row["link_drops"]),
                          "" if is_base else fmt_spread(row["spread"]["goodput_vs_base"]),
                          "" if is_base else fmt_spread(row["spread"]["wire_vs_base"]),
                          integrity])
    widths = [max(len(str(c[i])) for c in [header, *table]) for i in range(len(header))]
    for cells in [header, *table]:
        print("  ".join(str(c).ljust(w) if i in (0, 1, 10) else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip())
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"host": os.uname().nodename, "cpu": cpu_model(),
                               "loss": args.loss,
                               "jitter": args.jitter, "payload_mib": args.mib,
                               "repeat": args.repeat, "quick": args.quick,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "rows": base + reord}, indent=1, default=str))
    print("wire/payload: bytes the link took in from the sender (headers and resends included) "
          "over the payload; resends: the sender transport's count (TCP: RetransSegs); "
          "drops: the link's, sender to receiver; goodput: payload over the transfer's span; "
          f"each row the run of median goodput of {args.repeat}; vs base: median (min-max) of "
          "the per-repeat ratios, each reordered run against the loss-only run of its repeat")
    print(f"wrote {out}")
    return 0 if all(r["integrity"]["ok"] and not r["errors"] for r in base + reord) else 1


if __name__ == "__main__":
    sys.exit(main())
