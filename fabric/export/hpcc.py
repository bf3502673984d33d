"""Export to the HPCC ns-3 simulator (github.com/alibaba-edu/High-Precision-Congestion-Control):
its `topology.txt`, `flow.txt`, `trace.txt` and `mix/config.txt`-style `config.txt`, plus a
README naming what did not carry over.

The formats are the ones `simulation/scratch/third.cc` reads (checked against commit
9f4be2a9ead8a90e8bf732c66bd758c00e58e5be):

- topology: `<nodes> <switches> <links>`, the switch ids, then `src dst rate delay error_rate`
  per link. One id space; `third.cc` marks the listed ids as switches, so hosts need not come
  first, but the published topologies (`mix/fat.txt`) list hosts first and so do we. The rate
  is an ns-3 DataRate string (`100Gbps`), the delay an ns-3 Time string (`1000ns`), the error
  rate a per-packet drop probability on receive.
- flows: a count, then `src dst pg dport size start` per flow, start in seconds. `third.cc`
  schedules each flow when the previous one has started, so the lines go in start order.
- config: whitespace-separated `KEY value` tokens, read one token at a time; an unknown key is
  skipped but its value is then read as a key, so the file holds no comments.

Everything is in fabric time (the figures the file states): `time_scale` is not applied.
Every fabric setting the simulator has no knob for is a warning (also in the README).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, fields
from typing import Any

from ..cc.registry import is_plugin, make_cc, resolve_cc
from ..errors import FabricError
from ..roce.inttrailer import MAX_HOPS
from ..roce.wire import payload_mtu
from ..topology.document import Topology
from ..topology.graph import Search, adjacency, search
from ..topology.model import Shape, TrafficClass
from ..traffic import Transfer, schedule
from ..units import format_rate, format_size
from . import Export, ExportOptions

__all__ = ["CC_MODES", "DPORT_INCAST", "DPORT_OTHER", "FLOW_OFFSET_S", "export"]

UPSTREAM = "alibaba-edu/High-Precision-Congestion-Control"
UPSTREAM_COMMIT = "9f4be2a9ead8a90e8bf732c66bd758c00e58e5be"

# CC_MODE as `third.cc`/`rdma-hw.cc` dispatch on it (mix/config_doc.txt): 1 DCQCN (the
# Mellanox model), 3 HPCC, 7 TIMELY, 8 DCTCP (10 is HPCC-PINT, which fabric has no policy for).
# A mode none of those branches takes leaves every queue pair at line rate: fabric's `none`.
CC_MODES = {"dcqcn": 1, "hpcc": 3, "timely": 7, "dctcp": 8, "none": 0}
# The nearest mode for a policy the simulator lacks, by what it reacts to (`needs`), never by
# its name: INT -> HPCC, a fine RTT -> TIMELY, ECN -> DCQCN, nothing -> no CC.
_MODE_BY_NEED = (("int", 3), ("fine_rtt", 7), ("ecn", 1))
_MODE_NAMES = {0: "no congestion control", 1: "DCQCN", 3: "HPCC", 7: "TIMELY", 8: "DCTCP"}

# traffic_gen.py starts flows at 2 s and fct_analysis.py reads flows finishing before 3 s,
# with dport 100 for ordinary flows and 200 for incast: the export follows that convention so
# the simulator's own analysis scripts read the result unchanged.
FLOW_OFFSET_S = 2.0
DPORT_OTHER, DPORT_INCAST = 100, 200

# pg 0 is the simulator's control queue (strict priority, never paused, never marked) and pg 1
# its TCP queue (CNPs on it are ignored): data classes take pg 2..7.
_DATA_PGS = range(2, 8)
_FLOW_SIZE_MAX = 2**32 - 1  # third.cc reads the size into a uint32_t
_PORTS_MAX = 256  # switch-mmu.h: pCnt = 257 ports, of which device 0 is the loopback
_NS3_RATE_UNITS = ((10**9, "Gbps"), (10**6, "Mbps"), (10**3, "Kbps"), (1, "bps"))


@dataclass(frozen=True)
class _Flow:
    src: int
    dst: int
    pg: int
    dport: int
    size: int
    start_s: float


def export(topo: Topology, options: ExportOptions) -> Export:
    """`topo` as the HPCC simulator's input files; the warnings name what it cannot take."""
    warn: list[str] = []
    _warn_sections(topo, warn)
    ids = _node_ids(topo, warn)
    rates = _link_rates(topo, warn)
    topology_txt = _topology_txt(topo, ids, rates, warn)
    pgs = _priority_groups(topo.classes, warn)
    transfers = schedule(topo)
    flows = _flows(topo, transfers, ids, pgs, rates, warn)
    cc_class = _cc_class(topo, transfers, warn)
    nic_bps = _nic_rate(topo, ids, rates, warn)
    subdir = "mix/fabric-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", topo.name).strip("-") or "x")
    config_txt, mode = _config_txt(topo, transfers, flows, cc_class, nic_bps, rates, subdir,
                                   warn)
    flow_lines = [f"{f.src} {f.dst} {f.pg} {f.dport} {f.size} {f.start_s:.9f}" for f in flows]
    files = {
        "topology.txt": topology_txt,
        "flow.txt": "\n".join([str(len(flows)), *flow_lines]) + "\n",
        "trace.txt": "0\n",  # third.cc reads a count of nodes to trace: none
        "config.txt": config_txt,
    }
    files["README.md"] = _readme(topo, options, ids, pgs, cc_class, mode, subdir, warn)
    return Export(target="hpcc-ns3", files=files, warnings=warn)


# ---- nodes and links ------------------------------------------------------------------------


def _warn_sections(topo: Topology, warn: list[str]) -> None:
    # The links of these fabrics export; what the section runs over them is a workload the
    # simulator has no model for, and it moves no bytes through `traffic:`.
    for attr, what in (("memory", "memory: (memory-semantic switches: load/store by address, "
                        "Hypercast, in-network reduction)"),
                       ("lpu", "lpu: (compiler-scheduled LPU transfers)"),
                       ("prfaas", "prfaas: (the cross-cluster prefill scheduler)")):
        if getattr(topo, attr) is not None:
            warn.append(f"{what} not exported: the simulator has no model for it; its links "
                        "export as plain links and switches, and only `traffic:` flows become "
                        "simulator flows")
    if topo.events is not None:
        warn.append(f"events: ({len(topo.events.steps)} steps) not exported: the simulator "
                    "takes at most one link failure (LINK_DOWN time src dst, left at 0 0 0) "
                    "and no restore, rate or loss change, or routing detection time")
    if topo.expect:
        warn.append(f"expect: ({len(topo.expect)} lines) not exported: judge the simulator's "
                    "fct.txt yourself")
    if topo.time_scale != 1:
        warn.append(f"time_scale {topo.time_scale:g} not applied: the export is in fabric time "
                    "(the rates and delays the file states); the simulator needs no slow-down")


def _node_ids(topo: Topology, warn: list[str]) -> dict[str, int]:
    """Hosts first (those with a link before those without: third.cc reads the NIC rate from
    the first host's first port), then switches, each in file order."""
    adj = adjacency(topo.links)
    hosts = [n for n, node in topo.nodes.items() if node.kind == "host"]
    lonely = [h for h in hosts if h not in adj]
    switches = [n for n, node in topo.nodes.items() if node.kind != "host"]
    order = [h for h in hosts if h in adj] + lonely + switches
    if lonely:
        warn.append(f"host(s) without links exported as isolated nodes: {', '.join(lonely)}")
    wide = [s for s in switches if len(adj.get(s, ())) > _PORTS_MAX]
    if wide:
        raise FabricError(f"{topo.source}: switch {wide[0]} has {len(adj[wide[0]])} links; the "
                          f"simulator's switch takes at most {_PORTS_MAX} ports (switch-mmu.h)")
    multi = [h for h in hosts if len(adj.get(h, ())) > 1]
    if multi:
        warn.append(f"host(s) with several links: {', '.join(multi)}: the simulator gives a "
                    "host one address, on its first link (third.cc), so the others carry no "
                    "flows of their own")
    return {name: i for i, name in enumerate(order)}


def _link_rates(topo: Topology, warn: list[str]) -> dict[int, int]:
    """Each link's rate in bit/s (by index): the forward direction's; an unshaped link (no
    rate in fabric) takes the fastest rate in the file, else 100 Gbit/s."""
    shaped = [r for link in topo.links for r in (link.forward.rate_bps, link.reverse.rate_bps)
              if r]
    fallback = max(shaped) if shaped else 100 * 10**9
    out: dict[int, int] = {}
    unshaped = []
    for i, link in enumerate(topo.links):
        rate = link.forward.rate_bps or link.reverse.rate_bps
        if rate is None:
            unshaped.append(link.name)
            rate = fallback
        out[i] = rate
    if unshaped:
        warn.append(f"{len(unshaped)} unshaped link(s) ({_few(unshaped)}) exported at "
                    f"{format_rate(fallback)}: every simulator link needs a rate")
    return out


def ns3_rate(bps: int) -> str:
    """An ns-3 DataRate string that parses back to exactly `bps` (`100Gbps`, `1500Mbps`)."""
    for scale, unit in _NS3_RATE_UNITS:
        if bps % scale == 0:
            return f"{bps // scale}{unit}"
    raise AssertionError("unreachable: every integer is a multiple of 1")


def ns3_time(ns: int) -> str:
    """An ns-3 Time string: integer nanoseconds, as mix/fat.txt writes them (`1000ns`)."""
    return f"{ns}ns"


def _topology_txt(topo: Topology, ids: dict[str, int], rates: dict[int, int],
                  warn: list[str]) -> str:
    switches = sorted(i for n, i in ids.items() if topo.nodes[n].kind != "host")
    lines = [f"{len(ids)} {len(switches)} {len(topo.links)}", " ".join(map(str, switches))]
    asym: list[str] = []
    queues: list[str] = []
    mtus: set[int] = set()
    per_dir: dict[str, list[str]] = defaultdict(list)
    for i, link in enumerate(topo.links):
        f = link.forward
        if not link.symmetric:
            diff = [fl.name for fl in fields(Shape)
                    if getattr(link.forward, fl.name) != getattr(link.reverse, fl.name)]
            asym.append(f"{link.name} ({', '.join(diff)})")
        for shape in (link.forward, link.reverse):
            for key, value in (("jitter", shape.jitter_ns), ("corrupt", shape.corrupt_ppm),
                               ("duplicate", shape.duplicate_ppm),
                               ("reorder", shape.reorder_ppm)):
                if value and link.name not in per_dir[key]:
                    per_dir[key].append(link.name)
            if shape.queue_bytes is not None or shape.queue_packets is not None:
                if link.name not in queues:
                    queues.append(link.name)
        mtus.add(f.mtu)
        lines.append(f"{ids[link.a]} {ids[link.b]} {ns3_rate(rates[i])} {ns3_time(f.delay_ns)} "
                     f"{f.loss_ppm / 1e6:.6f}")
    if asym:
        warn.append(f"{len(asym)} asymmetric link(s) exported with their forward (a->b) shape "
                    f"in both directions (a simulator link has one rate, delay and error rate): "
                    f"{_few(asym)}")
    for key, names in per_dir.items():
        warn.append(f"{key} on {len(names)} link(s) not exported (no simulator knob): "
                    f"{_few(names)}")
    if queues:
        warn.append(f"per-link queue sizes on {len(queues)} link(s) not exported "
                    f"({_few(queues)}): the simulator has one shared buffer per switch "
                    "(BUFFER_SIZE) and unbounded host queues")
    if len(mtus) > 1:
        warn.append(f"link MTUs differ ({', '.join(map(str, sorted(mtus)))}): the simulator has "
                    "one packet payload size (PACKET_PAYLOAD_SIZE), taken from the smallest")
    return "\n".join(lines) + "\n"


def _nic_rate(topo: Topology, ids: dict[str, int], rates: dict[int, int],
              warn: list[str]) -> int:
    """The hosts' port rate, which scales the congestion-control defaults (as run.py's --bw
    does): the first host's, as third.cc takes it."""
    host_rates: dict[str, int] = {}
    for i, link in enumerate(topo.links):
        for end in (link.a, link.b):
            if topo.nodes[end].kind == "host":
                host_rates.setdefault(end, rates[i])
    if not host_rates:
        return 100 * 10**9
    first = min(host_rates, key=lambda h: ids[h])
    if len(set(host_rates.values())) > 1:
        warn.append("hosts' link rates differ: the congestion-control rates (RATE_AI, "
                    f"RATE_HAI, MIN_RATE) are one setting, worked out for {first}'s "
                    f"{format_rate(host_rates[first])}")
    return host_rates[first]


# ---- classes and flows ----------------------------------------------------------------------


def _priority_groups(classes: tuple[TrafficClass, ...], warn: list[str]) -> dict[str, int]:
    """Class name -> pg. A class keeps its priority as pg when it is 2..7; priorities 0 and 1
    (the simulator's control and TCP queues) take the lowest free pgs from 2 up, in that
    order. Classes that share a priority share a pg, as they share a queue in fabric."""
    by_prio: dict[int, int] = {p: p for p in _DATA_PGS}
    free = [p for p in _DATA_PGS if p not in {c.priority for c in classes}]
    for low in (0, 1):
        if any(c.priority == low for c in classes):
            by_prio[low] = free.pop(0) if free else 7
    out = {c.name: by_prio[c.priority] for c in classes}
    shared: dict[int, set[int]] = defaultdict(set)
    for c in classes:
        shared[out[c.name]].add(c.priority)
    for pg, prios in sorted(shared.items()):
        if len(prios) > 1:
            warn.append(f"priorities {', '.join(map(str, sorted(prios)))} share pg {pg}: the "
                        "simulator has six data pgs (2..7)")
    weights = {c.weight for c in classes}
    strict = [c.name for c in classes if c.strict]
    if len(weights) > 1 or strict:
        what = []
        if len(weights) > 1:
            what.append("weights " + ", ".join(f"{c.name}={c.weight}" for c in classes))
        if strict:
            what.append("strict priority for " + ", ".join(strict))
        warn.append(f"class scheduling not exported ({'; '.join(what)}): the simulator's "
                    "switch ports serve data pgs round robin with equal turns")
    return out


class _Paths:
    """(src, dst) -> (one-way delay ns, bottleneck bit/s, switch hops) over the first shortest
    path through switches only (the simulator never routes through a host)."""

    def __init__(self, topo: Topology) -> None:
        self._topo = topo
        self._adj = adjacency(topo.links)
        self._shape: dict[tuple[str, str], Shape] = {}
        for link in topo.links:
            self._shape[(link.a, link.b)] = link.forward
            self._shape[(link.b, link.a)] = link.reverse
        self._searches: dict[str, Search] = {}

    def __call__(self, src: str, dst: str) -> tuple[int, int, int]:
        s = self._searches.get(src)
        if s is None:
            nodes = self._topo.nodes
            s = self._searches[src] = search(
                src, lambda n: self._adj.get(n, ()) if n == src or nodes[n].kind != "host"
                else ())
        hops = list(itertools.pairwise(s.path(dst)))
        delay = sum(self._shape[h].delay_ns for h in hops)
        rate = min((self._shape[h].rate_bps or 0) for h in hops) or 100 * 10**9
        return delay, rate, max(0, len(hops) - 1)


def _flows(topo: Topology, transfers: list[Transfer], ids: dict[str, int],
           pgs: dict[str, int], rates: dict[int, int], warn: list[str]) -> list[_Flow]:
    if topo.traffic is None:
        warn.append("no traffic: section: flow.txt holds no flows (the topology alone exports)")
        return []
    ts = topo.time_scale
    paths = _Paths(topo)
    start_ns: dict[int, int] = {}
    chained: list[str] = []
    for t in transfers:  # ids are in schedule order: a chain's predecessor comes first
        if t.start_ns is not None:
            start_ns[t.id] = round(t.start_ns / ts)  # schedule() gives host time
        else:
            assert t.after is not None
            prev = transfers[t.after]
            delay, rate, _ = paths(prev.src, prev.dst)
            # its predecessor's standalone completion: serialisation at the path's bottleneck
            # plus a round trip
            start_ns[t.id] = start_ns[prev.id] + 2 * delay + -(-prev.nbytes * 8 * 10**9 // rate)
            if t.flow not in chained:
                chained.append(t.flow)
    if chained:
        warn.append(f"closed-loop flows ({', '.join(chained)}) exported open loop: the "
                    "simulator starts every flow at a fixed time, so each next request of a "
                    "chain starts when the previous one would finish alone (bytes at the "
                    "path's bottleneck rate plus one base round trip)")
    other = sorted({t.flow + f" ({t.transport})" for t in transfers if t.transport != "roce"})
    tcp_cc = sorted({f"{c.name}: {c.tcp_cc}" for c in topo.classes if c.tcp_cc
                     and any(t.cls == c.name and t.transport == "tcp" for t in transfers)})
    if other:
        warn.append(f"flows over {'/'.join(sorted({t.transport for t in transfers} - {'roce'}))}"
                    f" exported as RDMA flows in their class's pg: {', '.join(other)}; the "
                    "simulator's flows are all RoCE queue pairs (lossless, under CC_MODE), it "
                    "runs no kernel TCP or UDP"
                    + (f" (so tcp_cc is not used: {', '.join(tcp_cc)})" if tcp_cc else ""))
    chunks = sorted({t.chunk_bytes for t in transfers})
    if chunks:
        warn.append(f"chunk size ({', '.join(format_size(c) for c in chunks)}) not exported: "
                    "each transfer is one simulator flow of its whole size")
    too_big = [t for t in transfers if t.nbytes > _FLOW_SIZE_MAX]
    if too_big:
        t = too_big[0]
        raise FabricError(f"{topo.source}: flow '{t.flow}' moves {format_size(t.nbytes)} in one "
                          f"transfer; the simulator reads a flow's size as a 32-bit count "
                          f"(third.cc), at most {format_size(_FLOW_SIZE_MAX)}: make the "
                          "transfers smaller (more requests of fewer bytes) to export it")
    out = [_Flow(ids[t.src], ids[t.dst], pgs[t.cls],
                 DPORT_INCAST if t.kind == "incast" else DPORT_OTHER, t.nbytes,
                 FLOW_OFFSET_S + start_ns[t.id] / 1e9)
           for t in sorted(transfers, key=lambda t: (start_ns[t.id], t.id))]
    return out


def _cc_class(topo: Topology, transfers: list[Transfer], warn: list[str]) -> TrafficClass:
    """The class whose congestion control the run uses: HPCC has one CC_MODE per run. The
    class moving the most bytes over RoCE (else over any transport; without traffic, the
    first class with a policy), ties to the file's order."""
    classes = {c.name: c for c in topo.classes}
    roce = [t for t in transfers if t.transport == "roce"] or transfers
    moved: Counter[str] = Counter()
    for t in roce:
        moved[t.cls] += t.nbytes
    order = [c.name for c in topo.classes]
    if moved:
        chosen = max(moved, key=lambda n: (moved[n], -order.index(n)))
        used = [n for n in order if n in moved]
    else:
        chosen = next((c.name for c in topo.classes if c.cc != "none"), order[0])
        used = [c.name for c in topo.classes]
    ccs = {n: classes[n].cc for n in used}
    if len(set(ccs.values())) > 1:
        warn.append("classes use different congestion control ("
                    + ", ".join(f"{n}: {cc}" for n, cc in ccs.items())
                    + f"); the simulator runs one CC_MODE per run: exported {classes[chosen].cc} "
                    f"from class {chosen}, which moves the most bytes")
    return classes[chosen]


# ---- config ---------------------------------------------------------------------------------


def _mode(cc: str, warn: list[str]) -> int:
    if cc in CC_MODES:
        if cc == "none":
            warn.append("congestion control none exported as CC_MODE 0: not one of the modes "
                        "mix/config_doc.txt lists (1, 3, 7, 8, 10); rdma-hw.cc then leaves "
                        "every queue pair at line rate, as fabric's none does")
        return CC_MODES[cc]
    policy = resolve_cc(cc)
    mode = next((m for need, m in _MODE_BY_NEED if need in policy.needs), 0)
    kind = "plug-in" if is_plugin(cc) else "policy"
    warn.append(f"congestion control {policy.name} ({kind}) has no simulator mode: exported as "
                f"CC_MODE {mode} ({_MODE_NAMES[mode]}), the mode that reacts to what it needs "
                f"({', '.join(sorted(policy.needs)) or 'nothing'}); its parameters are not "
                "exported")
    return mode


def _mbps(bps: float) -> str:
    """A DataRate string for a config rate: Mb/s as run.py writes them, bit/s when finer."""
    b = round(bps)
    return f"{b // 10**6}Mb/s" if b % 10**6 == 0 else f"{b}b/s"


def _cc_keys(cls: TrafficClass, mode: int, nic_bps: int, base_rtt_ns: int,
             warn: list[str]) -> dict[str, str]:
    """CC_MODE's keys from the class's policy and cc_params (the policy's defaults scaled to
    the NIC rate where a parameter is unset); run.py's profile for the rest."""
    params = dict(cls.cc_params)
    gbps = nic_bps / 1e9
    k: dict[str, str] = {"CC_MODE": str(mode), "ALPHA_RESUME_INTERVAL": "1",
                         "RATE_DECREASE_INTERVAL": "4", "CLAMP_TARGET_RATE": "0",
                         "RP_TIMER": "300", "EWMA_GAIN": "0.00390625",
                         "FAST_RECOVERY_TIMES": "5", "DCTCP_RATE_AI": "1000Mb/s",
                         "HAS_WIN": "0", "VAR_WIN": "0", "FAST_REACT": "0", "U_TARGET": "0.95",
                         "MI_THRESH": "0", "INT_MULTI": "1", "ACK_HIGH_PRIO": "1"}
    unused: list[str] = []
    cc = cls.cc if cls.cc in CC_MODES else ""
    # the policy itself resolves its defaults for this NIC rate (no second copy of them here)
    policy: Any = make_cc(cc, line_rate_bps=nic_bps, base_rtt_ns=base_rtt_ns,
                          **params) if cc else None  # type: ignore[arg-type]
    if cc == "dcqcn":
        p = policy.params
        k.update(ALPHA_RESUME_INTERVAL=_us(p.alpha_interval_ns),
                 RATE_DECREASE_INTERVAL=_us(p.rate_decrease_interval_ns),
                 RP_TIMER=_us(p.rate_increase_interval_ns), EWMA_GAIN=repr(float(p.g)),
                 FAST_RECOVERY_TIMES=str(p.fast_recovery_stages),
                 CLAMP_TARGET_RATE=str(int(p.clamp_target_rate)))
        unused = [n for n, d in (("rate_on_first_cnp", 1.0), ("initial_alpha", 1.0))
                  if getattr(p, n) != d]
    elif cc == "hpcc":
        p = policy.params
        k.update(HAS_WIN="1", VAR_WIN="1", FAST_REACT="1", U_TARGET=repr(float(p.eta)),
                 MI_THRESH=str(p.max_stage), INT_MULTI=str(max(1, int(gbps // 25))),
                 ACK_HIGH_PRIO="0")
        unused = ["initial_u"] if p.initial_u != 1.0 else []
    elif cc == "timely":
        p = policy.params
        unused = [f.name for f in fields(p) if f.name in params and f.name not in
                  ("rate_ai_bps", "min_rate_bps", "hai_factor")]
    elif cc == "dctcp":
        p = policy.params
        k.update(HAS_WIN="1", VAR_WIN="1", EWMA_GAIN=repr(float(p.g)), ACK_HIGH_PRIO="0")
        unused = [n for n in params if n != "g"]
    if cc in ("dcqcn", "timely"):
        k.update(RATE_AI=_mbps(policy.rate_ai_bps),
                 RATE_HAI=_mbps(policy.rate_hai_bps),
                 MIN_RATE=_mbps(policy.min_rate_bps))
    elif cc == "hpcc":
        # the policy keeps them as windows over its base RTT: back to rates
        ai = policy.w_ai_bytes * 8 * 10**9 / base_rtt_ns
        lo = policy.min_window_bytes * 8 * 10**9 / base_rtt_ns
        k.update(RATE_AI=_mbps(ai), RATE_HAI=_mbps(ai), MIN_RATE=_mbps(lo))
    else:  # run.py's DCQCN scaling, read by no mode that runs here
        k.update(RATE_AI=_mbps(5 * gbps / 25 * 1e6), RATE_HAI=_mbps(50 * gbps / 25 * 1e6),
                 MIN_RATE=_mbps(nic_bps / 100))
    if unused:
        warn.append(f"class {cls.name}'s {cls.cc} parameter(s) {', '.join(unused)} not exported:"
                    " the simulator reads no config key for them")
    return k


def _us(ns: int) -> str:
    return f"{ns / 1000:g}"


def _ecn_maps(topo: Topology, transfers: list[Transfer], cc_class: TrafficClass,
              rates: dict[int, int], warn: list[str]) -> tuple[bool, dict[int, tuple[int, int,
                                                                                     float]]]:
    """(ENABLE_QCN, rate -> (kmin KB, kmax KB, pmax)). The simulator marks every data pg of
    a port by one RED profile per link rate: the chosen class's `ecn:`, else another moving
    class's, else the links' `ecn` thresholds (a step: kmin = kmax, pmax 1)."""
    used = {t.cls for t in transfers} or {c.name for c in topo.classes}
    reds = {c.name: c.red for c in topo.classes if c.name in used}
    red = cc_class.red or next((r for r in reds.values() if r), None)
    if len({r for r in reds.values()}) > 1:
        warn.append("classes mark ECN differently ("
                    + ", ".join(f"{n}: {_red_text(r)}" for n, r in reds.items())
                    + f"); the simulator has one profile per link rate: exported {_red_text(red)}")
    link_ecn: dict[int, set[int]] = defaultdict(set)
    for i, link in enumerate(topo.links):
        for s in (link.forward, link.reverse):
            if s.ecn_bytes is not None:
                link_ecn[rates[i]].add(s.ecn_bytes)
    all_rates = sorted(set(rates.values()))
    if red is not None:
        if link_ecn:
            warn.append("per-link ecn thresholds not exported: the class's ecn: profile "
                        f"({_red_text(red)}) applies to every port")
        out = {r: (_kb(red[0], warn), _kb(red[1], warn), red[2]) for r in all_rates}
        return True, out
    if link_ecn:
        out = {}
        for r in all_rates:
            thresholds = sorted(link_ecn.get(r, ()))
            if not thresholds:
                continue
            if len(thresholds) > 1:
                warn.append(f"links at {format_rate(r)} mark at different ecn thresholds "
                            f"({', '.join(map(format_size, thresholds))}): exported the "
                            "smallest, the simulator has one per link rate")
            kb = _kb(thresholds[0], warn)
            out[r] = (kb, kb, 1.0)
        unmarked = [r for r in all_rates if r not in out]
        if unmarked:
            # third.cc asserts a threshold for every port's rate; these never mark in fabric
            warn.append(f"links at {', '.join(map(format_rate, unmarked))} have no ecn "
                        "threshold: the simulator needs one for every port rate, so theirs is "
                        "the whole switch buffer (they never mark)")
            big = max(1, topo.switches.buffer_bytes // 1000 if topo.switches else 32_000)
            for r in unmarked:
                out[r] = (big, big, 1.0)
        return True, out
    # nothing marks in fabric: marking off, but third.cc still asserts an entry for every rate
    return False, {r: (100 * r // 25 // 10**9, 400 * r // 25 // 10**9, 0.2) for r in all_rates}


def _red_text(red: tuple[int, int, float] | None) -> str:
    if red is None:
        return "no marking"
    return f"kmin {format_size(red[0])} kmax {format_size(red[1])} pmax {red[2]:g}"


def _kb(nbytes: int, warn: list[str]) -> int:
    """Bytes as the simulator's KMIN/KMAX unit (switch-mmu.cc multiplies by 1000)."""
    kb = max(1, round(nbytes / 1000))
    if kb * 1000 != nbytes:
        warn.append(f"ECN threshold {nbytes} B rounded to {kb} KB (the simulator counts kB)")
    return kb


def _config_txt(topo: Topology, transfers: list[Transfer], flows: list[_Flow],
                cc_class: TrafficClass, nic_bps: int, rates: dict[int, int], subdir: str,
                warn: list[str]) -> tuple[str, int]:
    mode = _mode(cc_class.cc, warn)
    paths = _Paths(topo)
    pairs = {(t.src, t.dst) for t in transfers}
    rtts = [2 * paths(*p)[0] for p in pairs] or [2 * max((link.forward.delay_ns
                                                          for link in topo.links), default=0)]
    base_rtt = max(max(rtts), 1000)
    keys = _cc_keys(cc_class, mode, nic_bps, base_rtt, warn)

    mtu = min((link.forward.mtu for link in topo.links), default=1500)
    sw = topo.switches
    int_on = sw is None or sw.int_enabled
    hops = max((paths(*p)[2] for p in pairs), default=1)
    try:
        payload = payload_mtu(mtu, min(hops, MAX_HOPS) if int_on else None)
    except ValueError:
        payload = 1000
    qcn, maps = _ecn_maps(topo, transfers, cc_class, rates, warn)

    buffer = sw.buffer_bytes if sw is not None else 32 << 20
    mib = max(1, round(buffer / (1 << 20)))
    if sw is None:
        warn.append("no switches: section: switches exported with the simulator's 32 MiB "
                    "shared buffer, PFC and ECN profile; fabric's kernel switches queue per link "
                    "and drop at a full queue, with no PFC")
    else:
        if mib << 20 != buffer:
            warn.append(f"switch buffer {format_size(buffer)} rounded to {mib} MiB (the "
                        "simulator's BUFFER_SIZE counts MiB)")
        if sw.buffer_mode != "shared":
            warn.append(f"buffer_mode {sw.buffer_mode} not exported: the simulator's switch "
                        "buffer is one shared pool (Broadcom-style dynamic thresholds)")
        if not sw.pfc:
            warn.append("switches.pfc off not exported: the simulator pauses every data pg "
                        "(PFC is always on; no config key turns it off)")
        if sw.xoff_bytes is not None or sw.xon_bytes is not None:
            warn.append("switches xoff/xon not exported: the simulator sets PFC thresholds "
                        "dynamically from the free buffer (USE_DYNAMIC_PFC_THRESHOLD 1)")
        if not sw.int_enabled and mode == 3:
            warn.append("switches.int off: the simulator's HPCC mode always stamps INT")
    lossy = sorted({t.cls for t in transfers}
                   - {c.name for c in topo.classes if c.lossless})
    if lossy:
        warn.append(f"lossy class(es) {', '.join(lossy)} run lossless in the simulator: it "
                    "pauses (PFC) every data pg, and has no per-class lossless setting")

    end_s = max((f.start_s for f in flows), default=FLOW_OFFSET_S)
    slowest = min(rates.values(), default=nic_bps)
    drain_s = 2 * sum(f.size for f in flows) * 8 / slowest
    stop_s = end_s + drain_s + 1.0

    def rate_map(i: int) -> str:
        return " ".join([str(len(maps)), *(f"{r} {v[i]:g}" for r, v in sorted(maps.items()))])

    rows = [
        ("ENABLE_QCN", str(int(qcn))),
        ("USE_DYNAMIC_PFC_THRESHOLD", "1"),
        ("PACKET_PAYLOAD_SIZE", str(payload)),
        ("TOPOLOGY_FILE", f"{subdir}/topology.txt"),
        ("FLOW_FILE", f"{subdir}/flow.txt"),
        ("TRACE_FILE", f"{subdir}/trace.txt"),
        ("TRACE_OUTPUT_FILE", f"{subdir}/mix.tr"),
        ("FCT_OUTPUT_FILE", f"{subdir}/fct.txt"),
        ("PFC_OUTPUT_FILE", f"{subdir}/pfc.txt"),
        ("SIMULATOR_STOP_TIME", f"{stop_s:.6f}"),
        *((key, keys[key]) for key in (
            "CC_MODE", "ALPHA_RESUME_INTERVAL", "RATE_DECREASE_INTERVAL", "CLAMP_TARGET_RATE",
            "RP_TIMER", "EWMA_GAIN", "FAST_RECOVERY_TIMES", "RATE_AI", "RATE_HAI", "MIN_RATE",
            "DCTCP_RATE_AI")),
        ("ERROR_RATE_PER_LINK", "0.0000"),  # each link's own loss is in topology.txt
        ("L2_CHUNK_SIZE", "4000"),
        ("L2_ACK_INTERVAL", "1"),  # an ACK per packet, as fabric's RoCE transport
        ("L2_BACK_TO_ZERO", "0"),  # go-back-N, as fabric's RoCE transport
        *((key, keys[key]) for key in ("HAS_WIN",)),
        ("GLOBAL_T", "1"),
        *((key, keys[key]) for key in ("VAR_WIN", "FAST_REACT", "U_TARGET", "MI_THRESH",
                                        "INT_MULTI")),
        ("MULTI_RATE", "0"),
        ("SAMPLE_FEEDBACK", "0"),
        ("PINT_LOG_BASE", "1.05"),
        ("PINT_PROB", "1.0"),
        ("RATE_BOUND", "1"),
        ("ACK_HIGH_PRIO", keys["ACK_HIGH_PRIO"]),
        ("LINK_DOWN", "0 0 0"),
        ("ENABLE_TRACE", "0"),
        ("KMAX_MAP", rate_map(1)),
        ("KMIN_MAP", rate_map(0)),
        ("PMAX_MAP", rate_map(2)),
        ("BUFFER_SIZE", str(mib)),
        ("QLEN_MON_FILE", f"{subdir}/qlen.txt"),
        ("QLEN_MON_START", str(round(FLOW_OFFSET_S * 1e9))),
        ("QLEN_MON_END", str(round(stop_s * 1e9))),
    ]
    return "\n".join(f"{k} {v}" for k, v in rows) + "\n", mode


# ---- README ---------------------------------------------------------------------------------


def _readme(topo: Topology, options: ExportOptions, ids: dict[str, int], pgs: dict[str, int],
            cc_class: TrafficClass, mode: int, subdir: str, warn: list[str]) -> str:
    source = options.command_file or topo.source
    id_rows = "\n".join(f"| {i} | {n} | {topo.nodes[n].kind} |" for n, i in ids.items())
    pg_rows = "\n".join(f"| {c.name} | {c.priority} | {pgs[c.name]} | "
                        f"{'yes' if c.lossless else 'no'} | {c.cc} |" for c in topo.classes)
    warnings = "\n".join(f"- {w}" for w in warn) or "- none: every setting carried over"
    return f"""# {topo.name}: the HPCC ns-3 simulator's input

Exported by `fabric export {source} --to hpcc-ns3` for the simulator at
https://github.com/{UPSTREAM} (formats checked against commit {UPSTREAM_COMMIT}).
Everything is in fabric time: the rates, delays and start times the topology file states
(time_scale {topo.time_scale:g} is not applied; the simulator needs no slow-down).

## Run it

The file names in `config.txt` are relative to the simulator's `simulation/` directory, under
`{subdir}/`:

```sh
cp -r THIS_DIRECTORY HPCC/simulation/{subdir}
cd HPCC/simulation
./waf --run 'scratch/third {subdir}/config.txt'
```

Results land beside the inputs: `fct.txt` (per flow: sip dip sport dport size start_ns fct_ns
standalone_fct_ns; slowdown = fct / standalone), `pfc.txt` and `qlen.txt`. Flows start at
{FLOW_OFFSET_S:g} s (fabric's time 0), as the simulator's traffic_gen.py does; dport
{DPORT_INCAST} marks incast flows and {DPORT_OTHER} the others, as analysis/fct_analysis.py
expects.

## Congestion control

CC_MODE {mode} ({_MODE_NAMES[mode]}), from class `{cc_class.name}` (`cc: {cc_class.cc}`).

## Node ids

| id | fabric node | kind |
| --- | --- | --- |
{id_rows}

## Classes

| class | priority | pg | lossless in fabric | cc |
| --- | --- | --- | --- | --- |
{pg_rows}

pg 0 is the simulator's control queue and pg 1 its TCP queue, so data classes use pg 2..7:
a class keeps its priority as pg when it is 2..7; priorities 0 and 1 take the lowest free
pgs from 2 up.

## Not carried over

{warnings}
"""


def _few(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
