"""The lessons, in order, and the figures their tables read.

Every figure comes from one variant's run (`fabric.run.roce.VariantResult`): its traffic
summary (`summary["kinds"]`: per flow pattern, so KV and bulk stay apart even when they
share one class) and its comparison metrics (switch queues, drops, pauses, marks, CNPs,
retransmissions). All are fabric time.
"""

from __future__ import annotations

from typing import Any

from ..units import format_rate, format_size, format_time
from .model import Column, Lesson, LessonStep

# ---- reading a variant's figures ------------------------------------------------------------


def kind_ns(r: Any, kind: str, key: str, stat: str) -> float | None:  # noqa: ANN401
    """A time figure (fabric ns) of the transfers of pattern `kind`: `key` one of
    chunk_latency, ttfb, transfer_latency; `stat` p50, p99, max, mean."""
    group = (r.summary.get("kinds") or {}).get(kind) or {}
    value = ((group.get(key) or {}).get("fabric_ns") or {}).get(stat)
    return None if value is None else float(value)


def kind_bps(r: Any, kind: str) -> float | None:  # noqa: ANN401
    group = (r.summary.get("kinds") or {}).get(kind) or {}
    value = (group.get("goodput") or {}).get("fabric_bps")
    return None if not value else float(value)


def t(ns: float | None) -> str:
    return "-" if ns is None else format_time(round(ns))


def rate(bps: float | None) -> str:
    return "-" if not bps else format_rate(round(bps))


def size(nbytes: float | None) -> str:
    return "-" if nbytes is None else format_size(int(nbytes))


def ratio(a: float | None, b: float | None) -> str:
    """'2.2x' (a / b), or '-' when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.1f}x"


def metric(name: str) -> Any:  # noqa: ANN401
    return lambda r: r.metrics.get(name)


# ---- 1. KV beside bulk ----------------------------------------------------------------------


def _kv_bulk_verdict(port: str, bulk_name: str) -> Any:  # noqa: ANN401
    """Lessons 1 and 6: what a KV class did beside bulk at `port`."""

    def verdict(rs: list[Any]) -> list[str]:
        fifo, cls = rs[0], rs[1]
        p99 = [kind_ns(r, "pd", "chunk_latency", "p99") for r in rs]
        ttfb = [kind_ns(r, "pd", "ttfb", "p99") for r in rs]
        bulk = [kind_bps(r, "bulk") for r in rs]
        better = p99[0] is not None and p99[1] is not None and p99[1] < p99[0]
        lines = [
            f"KV chunk p99 {t(p99[0])} in one FIFO queue, {t(p99[1])} in its own strict class "
            + (f"({ratio(p99[0], p99[1])} lower)" if better else "(no better)")
            + f"; TTFB p99 {t(ttfb[0])} -> {t(ttfb[1])}.",
            f"In the FIFO, a KV chunk waits behind every {bulk_name} byte queued ahead of it at "
            f"the {port} (up to {size(fifo.metrics.get('max_queue_bytes'))}); with its own "
            "class it is sent first and waits only for the packet on the wire."
            + ("" if better else " Here the FIFO queue stayed short, so there was little to "
               f"jump ahead of: the {bulk_name} never filled the port."),
        ]
        if bulk[0] and bulk[1] and bulk[1] < 0.95 * bulk[0]:
            lines.append(f"The price is paid by bulk: {bulk_name} goodput {rate(bulk[0])} -> "
                         f"{rate(bulk[1])}, since strict priority gives KV every turn it asks "
                         "for.")
        else:
            lines.append(f"Bulk hardly paid for it: {bulk_name} goodput {rate(bulk[0])} -> "
                         f"{rate(bulk[1])}. KV asks for little of the port; strict priority "
                         "only changes who goes first.")
        drops = (cls.metrics.get("by_class") or {}).get("kv", {}).get("drops", 0)
        if drops:
            lines.append(f"The KV class still lost {drops} packets (TCP resent them): strict "
                         f"priority orders the queues but the buffer is shared, and the "
                         f"{bulk_name} filled it. A lossless class (PFC, lesson 2) or a "
                         "reserved buffer closes that gap.")
        return lines

    return verdict


def _kv_bulk_holds(rs: list[Any]) -> tuple[bool, str]:
    a = kind_ns(rs[0], "pd", "chunk_latency", "p99")
    b = kind_ns(rs[1], "pd", "chunk_latency", "p99")
    if a is None or b is None:
        return False, "no KV chunk latency in one of the variants"
    return b < a, f"KV chunk p99 FIFO {t(a)}, own class {t(b)}"


KV_BULK_COLUMNS = (
    Column("KV chunk p50", lambda r: t(kind_ns(r, "pd", "chunk_latency", "p50"))),
    Column("KV chunk p99", lambda r: t(kind_ns(r, "pd", "chunk_latency", "p99"))),
    Column("KV TTFB p99", lambda r: t(kind_ns(r, "pd", "ttfb", "p99"))),
    Column("KV FCT p99", lambda r: t(kind_ns(r, "pd", "transfer_latency", "p99"))),
    Column("KV goodput", lambda r: rate(kind_bps(r, "pd"))),
    Column("bulk goodput", lambda r: rate(kind_bps(r, "bulk"))),
    Column("queue max", lambda r: size(r.metrics.get("max_queue_bytes"))),
    Column("drops", lambda r: str(r.metrics.get("drops", "-"))),
)


KV_BESIDE_BULK = Lesson(
    number=1, slug="kv-beside-bulk", title="KV beside bulk: one FIFO, then a KV class",
    teaches="A bulk checkpoint fills the decode port's queue; KV chunks wait behind it until "
            "KV gets a strict-priority class of its own.",
    steps=(LessonStep("fifo", "01-fifo.yaml"),
           LessonStep("kv-class", "01-kv-class.yaml")),
    columns=KV_BULK_COLUMNS,
    verdict=_kv_bulk_verdict("decode port", "checkpoint"), holds=_kv_bulk_holds,
    small={"kv": {"requests": 6}, "checkpoint": {"size_bytes": 36 << 20}},
)


# ---- 2. lossless or lossy under incast ------------------------------------------------------


def _slowdown(key: str) -> Any:  # noqa: ANN401
    return lambda r: "-" if r.metrics.get(key) is None else f"{r.metrics[key]:.1f}"


def _lossless_verdict(rs: list[Any]) -> list[str]:
    on, off = rs[0].metrics, rs[1].metrics
    return [
        f"PFC on: {on['drops']} drops, {on['pauses']} pauses; the switch paused the prefill "
        f"hosts instead of dropping (the most-paused egress was held {t(on['paused_ns'])} in "
        f"all), and {on['retransmitted']} packets were resent.",
        f"PFC off: the same incast dropped {off['drops']} packets at the switch and go-back-N "
        f"resent {off['retransmitted']} (each drop rewinds a whole window).",
        f"Cost of the losses: FCT p99 {t(on['fct_p99_ns'])} -> {t(off['fct_p99_ns'])}, "
        f"slowdown p99 {ratio(off['slowdown_p99'], on['slowdown_p99'])} worse, goodput "
        f"{rate(on['goodput_bps'])} -> {rate(off['goodput_bps'])}. This is why RoCE runs "
        "lossless.",
    ]


def _lossless_holds(rs: list[Any]) -> tuple[bool, str]:
    on, off = rs[0].metrics, rs[1].metrics
    return (on["drops"] == 0 and off["drops"] > 0,
            f"drops with PFC {on['drops']}, without {off['drops']}")


LOSSLESS = Lesson(
    number=2, slug="lossless-incast", title="Lossless or lossy under incast: PFC on and off",
    teaches="Four senders into one port with no congestion control: PFC pauses them and "
            "nothing drops; without PFC the switch drops and go-back-N resends whole windows.",
    steps=(LessonStep("pfc-on", "incast.yaml", cc="none", pfc=True),
           LessonStep("pfc-off", "incast.yaml", cc="none", pfc=False)),
    columns=(
        Column("drops", lambda r: str(r.metrics["drops"])),
        Column("retx", lambda r: str(r.metrics["retransmitted"])),
        Column("pauses", lambda r: str(r.metrics["pauses"])),
        Column("paused", lambda r: t(r.metrics["paused_ns"])),
        Column("FCT mean", lambda r: t(r.metrics["fct_mean_ns"])),
        Column("FCT p99", lambda r: t(r.metrics["fct_p99_ns"])),
        Column("slowdown p50", _slowdown("slowdown_p50")),
        Column("slowdown p99", _slowdown("slowdown_p99")),
        Column("goodput", lambda r: rate(r.metrics["goodput_bps"])),
    ),
    verdict=_lossless_verdict, holds=_lossless_holds,
    small={"kv-incast": {"requests": 1, "tokens": 16}},
)


# ---- 3. PFC's price: head-of-line blocking ---------------------------------------------------


def pauses_by(r: Any, node: str) -> int:  # noqa: ANN401
    """PFC pauses switch `node` sent (all its ports)."""
    ports = ((r.switches or {}).get(node) or {}).get("ports") or []
    return int(sum(p.get("pauses_sent", 0) or 0 for p in ports))


def _victim_bps(r: Any) -> float | None:  # noqa: ANN401
    return kind_bps(r, "one-to-one")


def _hol_verdict(rs: list[Any]) -> list[str]:
    alone, on, off = rs
    v = [_victim_bps(r) for r in rs]
    lines = [
        f"The victim's port is idle in every variant, yet beside the incast with PFC on its "
        f"goodput fell from {rate(v[0])} alone to {rate(v[1])} ({ratio(v[0], v[1])} slower): "
        "its packets sat in queues that the incast's pauses had stopped.",
        f"The pauses spread upstream: leaf-1 (the hot port's switch) sent "
        f"{pauses_by(on, 'leaf-1')}, the spine {pauses_by(on, 'spine')} and leaf-0 "
        f"{pauses_by(on, 'leaf-0')}; a pause stops a whole priority on a link, every flow of "
        "it, not just the flow that caused it.",
    ]
    if v[2] is not None and v[1] is not None and v[2] < v[1]:
        lines.append(
            f"With PFC off nothing is paused, yet the victim fared worse ({rate(v[2])}): the "
            "incast filled the shared buffer, which the victim's queue draws on too; the "
            f"switches dropped {off.metrics['drops']} packets, and go-back-N rewinds a window "
            "per drop.")
    else:
        lines.append(
            f"With PFC off nothing is paused and the victim kept {rate(v[2])}, but the incast "
            f"lost {off.metrics['drops']} packets and resent {off.metrics['retransmitted']}.")
    lines.append("PFC trades losses for blocking; congestion control (lesson 4) keeps queues "
                 "below XOFF, so that pauses, and the blocking they bring, stay rare.")
    return lines


def _hol_holds(rs: list[Any]) -> tuple[bool, str]:
    alone, on = _victim_bps(rs[0]), _victim_bps(rs[1])
    spine = pauses_by(rs[1], "spine")
    ok = bool(alone and on and on < 0.8 * alone and spine > 0)
    return ok, f"victim {rate(alone)} alone, {rate(on)} beside the incast; spine pauses {spine}"


HOL = Lesson(
    number=3, slug="pfc-hol-blocking", title="PFC's price: head-of-line blocking",
    teaches="An incast into one port pauses its priority upstream, through the spine; a victim "
            "flow to an idle port of the same leaf is stopped with it.",
    steps=(LessonStep("victim-alone", "03-hol.yaml", pfc=True, flows=("victim",)),
           LessonStep("incast-pfc", "03-hol.yaml", pfc=True),
           LessonStep("incast-no-pfc", "03-hol.yaml", pfc=False)),
    columns=(
        Column("victim FCT", lambda r: t(kind_ns(r, "one-to-one", "transfer_latency", "max"))),
        Column("victim goodput", lambda r: rate(_victim_bps(r))),
        Column("incast FCT p99", lambda r: t(kind_ns(r, "incast", "transfer_latency", "p99"))),
        Column("drops", lambda r: str(r.metrics["drops"])),
        Column("retx", lambda r: str(r.metrics["retransmitted"])),
        Column("pauses leaf-1", lambda r: str(pauses_by(r, "leaf-1"))),
        Column("pauses spine", lambda r: str(pauses_by(r, "spine"))),
        Column("pauses leaf-0", lambda r: str(pauses_by(r, "leaf-0"))),
        Column("paused", lambda r: t(r.metrics["paused_ns"])),
    ),
    verdict=_hol_verdict, holds=_hol_holds,
    small={"incast": {"requests": 1}, "victim": {"tokens": 48}},
)


# ---- 4. ECN and DCQCN against no congestion control ------------------------------------------


def _ecn_verdict(rs: list[Any]) -> list[str]:
    none, dcqcn = rs[0].metrics, rs[1].metrics
    lines = [
        f"Without congestion control the senders keep sending at line rate: the decode port's "
        f"queue averaged {size(none['mean_queue_bytes'])} (peak "
        f"{size(none['max_queue_bytes'])}) and PFC had to pause them {none['pauses']} times. "
        f"The switch marked {none['ecn_marks']} packets and the senders got "
        f"{none['cnps']} CNPs, but without a policy they ignore them.",
        f"With DCQCN each CNP cuts the sender's rate: the queue averaged "
        f"{size(dcqcn['mean_queue_bytes'])} (peak {size(dcqcn['max_queue_bytes'])}), "
        f"{dcqcn['ecn_marks']} marks, {dcqcn['cnps']} CNPs, {dcqcn['pauses']} pauses.",
        f"Goodput {rate(none['goodput_bps'])} -> {rate(dcqcn['goodput_bps'])}, FCT p99 "
        f"{t(none['fct_p99_ns'])} -> {t(dcqcn['fct_p99_ns'])}: ECN marks start at kmin "
        "(100 KB here), below PFC's XOFF, so DCQCN slows the senders before the switch has to "
        "pause them, and fewer pauses mean less head-of-line blocking (lesson 3).",
    ]
    if (dcqcn["goodput_bps"] or 0) < 0.95 * (none["goodput_bps"] or 0):
        lines.append("DCQCN paid for the short queue in goodput: its rate comes back in timed "
                     "steps after each cut, and an incast this short ends before the senders "
                     "are back at line rate.")
    return lines


def _ecn_holds(rs: list[Any]) -> tuple[bool, str]:
    none, dcqcn = rs[0].metrics, rs[1].metrics
    ok = (dcqcn["cnps"] > 0 and dcqcn["ecn_marks"] > 0
          and dcqcn["pauses"] < none["pauses"]
          and dcqcn["mean_queue_bytes"] < none["mean_queue_bytes"])
    return ok, (f"pauses {none['pauses']} -> {dcqcn['pauses']}, mean queue "
                f"{size(none['mean_queue_bytes'])} -> {size(dcqcn['mean_queue_bytes'])}, "
                f"CNPs {dcqcn['cnps']}")


ECN = Lesson(
    number=4, slug="ecn-dcqcn", title="ECN and DCQCN against no congestion control",
    teaches="The same incast with PFC on: without congestion control the queue sits at XOFF "
            "and PFC pauses; DCQCN reads ECN marks (CNPs) and slows the senders first.",
    steps=(LessonStep("no-cc", "incast.yaml", cc="none", pfc=True),
           LessonStep("dcqcn", "incast.yaml", cc="dcqcn", pfc=True)),
    columns=(
        Column("queue max", lambda r: size(r.metrics["max_queue_bytes"])),
        Column("queue mean", lambda r: size(r.metrics["mean_queue_bytes"])),
        Column("pauses", lambda r: str(r.metrics["pauses"])),
        Column("paused", lambda r: t(r.metrics["paused_ns"])),
        Column("ECN marks", lambda r: str(r.metrics["ecn_marks"])),
        Column("CNPs", lambda r: str(r.metrics["cnps"])),
        Column("drops", lambda r: str(r.metrics["drops"])),
        Column("FCT p99", lambda r: t(r.metrics["fct_p99_ns"])),
        Column("slowdown p99", _slowdown("slowdown_p99")),
        Column("goodput", lambda r: rate(r.metrics["goodput_bps"])),
    ),
    verdict=_ecn_verdict, holds=_ecn_holds,
    small={"kv-incast": {"requests": 1, "tokens": 16}},
)


# ---- 5. ECMP collisions -----------------------------------------------------------------------


def spine_bytes(r: Any) -> dict[str, int]:  # noqa: ANN401
    """Data bytes each spine sent (every class but the RoCE control class), by spine name."""
    out = {}
    for node, sw in sorted((r.switches or {}).items()):
        if not node.startswith("spine"):
            continue
        out[node] = int(sum(c.get("tx_bytes", 0) or 0 for p in sw.get("ports") or []
                            for name, c in (p.get("classes") or {}).items()
                            if name != "control"))
    return out


def hot_share(r: Any) -> float | None:  # noqa: ANN401
    """The busiest spine's share of the bytes the spines carried."""
    load = spine_bytes(r)
    total = sum(load.values())
    return max(load.values()) / total if total else None


def _spine_cell(i: int) -> Any:  # noqa: ANN401
    def cell(r: Any) -> str:  # noqa: ANN401
        load = list(spine_bytes(r).items())
        return size(load[i][1]) if i < len(load) else "-"
    return cell


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _job_ns(r: Any) -> float | None:  # noqa: ANN401
    """The last transfer's FCT: when the whole exchange was done."""
    fcts = [f["fct_ns"] for f in r.metrics.get("fcts") or []]
    return max(fcts) if fcts else None


def _ecmp_verdict(rs: list[Any]) -> list[str]:
    few, many = rs
    a, b = hot_share(few), hot_share(many)
    return [
        f"3 queue pairs: the busiest spine carried {_pct(a)} of the bytes. Each queue pair keeps "
        "its UDP source port, so its 5-tuple hashes to one spine for its whole life; three "
        "elephants on two spines cannot split evenly, and the hot spine's uplink sets the pace "
        f"(last transfer done at {t(_job_ns(few))}, goodput {rate(few.metrics['goodput_bps'])}).",
        f"12 queue pairs for the same bytes: the busiest spine carried {_pct(b)} (last transfer "
        f"at {t(_job_ns(many))}, goodput {rate(many.metrics['goodput_bps'])}). More source "
        "ports give the hash more to spread; an even split is likelier, never promised, so "
        "read the per-spine load, not only the totals.",
    ]


def _ecmp_holds(rs: list[Any]) -> tuple[bool, str]:
    # What always holds: 3 equal elephants on 2 spines put >= 2/3 on one; 12 queue pairs
    # leave both spines busy (all but one of 12 on one spine: 26 in 4096 hashings).
    a, b = hot_share(rs[0]), hot_share(rs[1])
    ok = a is not None and b is not None and a >= 0.6 and b < 0.9
    return ok, f"busiest spine's share: {_pct(a)} with 3 queue pairs, {_pct(b)} with 12"


ECMP = Lesson(
    number=5, slug="ecmp-collisions", title="ECMP collisions: few elephants, then more entropy",
    teaches="Three elephant queue pairs over two spines: ECMP hashes each to one spine, so one "
            "spine carries most; the same bytes over twelve queue pairs spread further.",
    steps=(LessonStep("3-qps", "05-ecmp.yaml", cc="none",
                      flows=("elephant-0", "elephant-1", "elephant-2")),
           LessonStep("12-qps", "05-ecmp.yaml", cc="none",
                      flows=tuple(f"split-{i}-{c}" for i in range(3)
                                  for c in ("kv", "kv-b", "kv-c", "kv-d")))),
    columns=(
        Column("spine-0 bytes", _spine_cell(0)),
        Column("spine-1 bytes", _spine_cell(1)),
        Column("busiest spine", lambda r: _pct(hot_share(r))),
        Column("last done", lambda r: t(_job_ns(r))),
        Column("FCT p99", lambda r: t(r.metrics["fct_p99_ns"])),
        Column("goodput", lambda r: rate(r.metrics["goodput_bps"])),
        Column("queue max", lambda r: size(r.metrics["max_queue_bytes"])),
        Column("pauses", lambda r: str(r.metrics["pauses"])),
    ),
    verdict=_ecmp_verdict, holds=_ecmp_holds,
    small={**{f"elephant-{i}": {"tokens": 64} for i in range(3)},
           **{f"split-{i}-{c}": {"tokens": 16} for i in range(3)
              for c in ("kv", "kv-b", "kv-c", "kv-d")}},
)


# ---- 6. the KV class across a shaped cross-cluster link -------------------------------------

# Built with a RoCE switch at each DCI edge: its egress port serialises at the DCI link's rate
# and keeps a queue per class. Plain links queue in one FIFO until per-class link queues land.
DCI = Lesson(
    number=6, slug="kv-across-dci", title="The KV class across a shaped cross-cluster link",
    teaches="KV to another cluster beside bulk replication over one 25 Gbit/s DCI link: the "
            "replication fills the DCI edge's queue until KV gets a strict class of its own.",
    steps=(LessonStep("fifo", "06-dci-fifo.yaml"),
           LessonStep("kv-class", "06-dci-kv-class.yaml")),
    columns=KV_BULK_COLUMNS,
    verdict=_kv_bulk_verdict("DCI edge's port", "replication"), holds=_kv_bulk_holds,
    small={"kv": {"requests": 4, "start_ns": 7_000_000}},
)


LESSONS: tuple[Lesson, ...] = (KV_BESIDE_BULK, LOSSLESS, HOL, ECN, ECMP, DCI)
