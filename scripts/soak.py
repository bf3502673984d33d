#!/usr/bin/env python3
"""Soak test: kill `fabric up`, `fabric run` and `fabric down` at random moments with every
signal, for N minutes, and check what each kill leaves behind (root; not run in CI).

Each trial picks a command, a signal (SIGINT, SIGTERM, SIGHUP, SIGKILL) and a moment within
the command's usual duration, sends the signal to the command's process (as `kill PID` or a
supervisor does), and records its exit status, whether it printed a traceback, and the state
of the soak fabric afterwards:

- after SIGINT, SIGTERM or SIGHUP nothing may be left (exit 130/143/129), except the fabric
  a finished `fabric up` leaves on purpose;
- after SIGKILL the fabric may be left, but must then be *stale* in `fabric status`, and the
  next `fabric run` of the file must remove it (saying so) and run to exit 0;
- `fabric down NAME` must then leave no namespace, state directory or process of the fabric.

Only the soak fabric (`--name`, default `soak`) is touched: never `down --all`.

    python3 scripts/soak.py --minutes 30 --json soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

TOPOLOGY = """\
name: {name}
nodes: {{a: {{}}, b: {{}}, c: {{}}}}
links:
  - {{endpoints: [a, b], rate: 200Mbps, delay: 2ms}}
  - {{endpoints: [b, c], rate: 200Mbps, delay: 2ms, loss: 0.5%}}
traffic:
  flows:
    - {{pattern: one-to-one, from: a, to: c, tokens: 32, requests: 3}}
    - {{pattern: one-to-one, from: c, to: a, transport: udp, tokens: 32, requests: 3}}
"""

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL)
# how long each command usually takes here: the kill moment is drawn from 0..this
SPAN_S = {"up": 0.8, "run": 6.0, "down": 0.5}


def fabric(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fabric.entry", *args], capture_output=True,
                          text=True, timeout=timeout)


def leftovers(name: str) -> dict[str, list[str]]:
    """What of fabric `name` exists now: namespaces, its state directory, its processes."""
    ns = sorted(n.split()[0] for n in subprocess.run(["ip", "netns", "list"],
                capture_output=True, text=True).stdout.splitlines()
                if n.startswith(f"fab.{name}."))
    state = [str(p) for p in [Path("/run/fabric") / name] if p.exists()]
    procs = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"/run/fabric/{name}/" in cmd or f"fab.{name}." in cmd:
            procs.append(f"{pid}: {cmd[:80]}")
    return {"namespaces": ns, "state": state, "processes": procs}


def status_of(name: str) -> str:
    """The soak fabric's word in `fabric status`: none, up, stale, building, ..."""
    for line in fabric("status").stdout.splitlines():
        if line.startswith(f"{name}: "):
            return line.split(": ", 1)[1].split(",")[0].split(" ")[0]
    return "none"


def trial(rng: random.Random, name: str, path: str, out: Path) -> dict:
    command = rng.choice(("up", "run", "run", "down"))
    sig = rng.choice(SIGNALS)
    if command == "down":  # something to take down first
        fabric("up", path)
    args = {"up": ["up", path], "run": ["run", path, "--out", str(out / f"r{rng.random()}")],
            "down": ["down", name]}[command]
    delay = rng.uniform(0, SPAN_S[command])
    proc = subprocess.Popen([sys.executable, "-m", "fabric.entry", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    finished_first = proc.poll() is not None
    if not finished_first:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=120)
        hung = False
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        hung = True
    left = leftovers(name)
    st = status_of(name)
    rec = {"command": command, "signal": signal.Signals(sig).name, "delay_s": round(delay, 3),
           "finished_before_signal": finished_first, "rc": proc.returncode, "hung": hung,
           "traceback": "Traceback" in err, "status_after": st,
           "left_after": {k: len(v) for k, v in left.items()}, "last_line": err.strip()[-200:]}
    # what may be left: a built `up`'s fabric, whole; the kept fabric an interrupted `down` had
    # not begun to remove (whole: a removal once begun finishes before the interrupt); after
    # SIGKILL, a fabric `status` calls stale (or up, for an `up` that had finished building)
    anything_left = any(left.values())
    killed = sig == signal.SIGKILL and not finished_first
    if not anything_left:
        rec["unexpected_leftover"] = False
    elif command in ("up", "down"):  # an `up` signalled as it exits has built it whole
        intact = st == "up" and len(left["namespaces"]) == 3
        rec["unexpected_leftover"] = not (intact or (killed and st == "stale"))
    else:
        rec["unexpected_leftover"] = not killed
    if killed and anything_left and command == "run":
        rec["stale_reported"] = st == "stale"
    # recovery: a run of the file must work whatever was left, and say if it removed a fabric
    if anything_left and st != "up":
        again = fabric("run", path, "--out", str(out / f"again{rng.random()}"))
        rec["rerun_rc"] = again.returncode
        rec["rerun_removed_stale"] = "left by a run that is gone" in again.stderr
        rec["rerun_traceback"] = "Traceback" in again.stderr
    if status_of(name) != "none":
        fabric("down", "--force", name)
    after = leftovers(name)
    rec["left_after_down"] = {k: v for k, v in after.items() if v}
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--name", default="soak")
    ap.add_argument("--json", default="soak.json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("soak: needs root (network namespaces)", file=sys.stderr)
        return 2
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    print(f"soak: seed {seed}, {a.minutes:g} minutes, fabric {a.name}", flush=True)
    records = []
    with tempfile.TemporaryDirectory(prefix="fabric-soak-") as tmp:
        path = str(Path(tmp) / f"{a.name}.yaml")
        Path(path).write_text(TOPOLOGY.format(name=a.name))
        fabric("down", "--force", a.name)
        end = time.monotonic() + a.minutes * 60
        while time.monotonic() < end:
            rec = trial(rng, a.name, path, Path(tmp))
            records.append(rec)
            bad = (rec["traceback"] or rec["hung"] or rec["unexpected_leftover"]
                   or rec["left_after_down"] or rec.get("rerun_rc", 0) != 0
                   or rec.get("stale_reported") is False)
            print(f"{len(records):4d} {rec['command']:4s} {rec['signal']:7s} "
                  f"at {rec['delay_s']:5.2f}s rc={rec['rc']} status={rec['status_after']}"
                  + ("  <-- " + json.dumps(rec) if bad else ""), flush=True)
    by = Counter((r["command"], r["signal"]) for r in records)
    summary = {
        "seed": seed, "minutes": a.minutes, "trials": len(records),
        "tracebacks": sum(r["traceback"] or r.get("rerun_traceback", False) for r in records),
        "hangs": sum(r["hung"] for r in records),
        "unexpected_leftovers": sum(r["unexpected_leftover"] for r in records),
        "leftovers_after_down": sum(bool(r["left_after_down"]) for r in records),
        "sigkill_left_fabric": sum("stale_reported" in r for r in records),
        "sigkill_stale_reported": sum(r.get("stale_reported", False) for r in records),
        "reruns": sum("rerun_rc" in r for r in records),
        "reruns_ok": sum(r.get("rerun_rc") == 0 for r in records),
        "reruns_removed_stale": sum(r.get("rerun_removed_stale", False) for r in records),
        "exit_statuses": dict(Counter(f"{r['signal']}:{r['rc']}" for r in records)),
        "trials_by_command_signal": {f"{c} {s}": n for (c, s), n in sorted(by.items())},
    }
    Path(a.json).write_text(json.dumps({"summary": summary, "trials": records}, indent=1))
    width = max(len(k) for k in summary)
    for k, v in summary.items():
        print(f"{k:<{width}}  {v}")
    ok = not (summary["tracebacks"] or summary["hangs"] or summary["unexpected_leftovers"]
              or summary["leftovers_after_down"] or summary["reruns_ok"] != summary["reruns"]
              or summary["sigkill_stale_reported"] != summary["sigkill_left_fabric"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
