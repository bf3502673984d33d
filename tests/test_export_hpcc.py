"""`fabric export FILE --to hpcc-ns3`: the files read back as the HPCC simulator reads them.

The reader here is written from the simulator's source (`simulation/scratch/third.cc` at
alibaba-edu/High-Precision-Congestion-Control 9f4be2a9ead8a90e8bf732c66bd758c00e58e5be), not
from the exporter: whitespace-separated tokens, counts from the headers, ns-3's DataRate and
Time suffixes, one `KEY value...` per known key. It is first run over the simulator's own
sample files (tests/data/hpcc), then over every export.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from fabric.cli import cli, default_topology_path
from fabric.export import ExportOptions, export_topology
from fabric.kinds import load
from fabric.traffic import schedule

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "hpcc"
ROCE_FILES = sorted((ROOT / "topologies").glob("roce-*.yaml")) + [
    ROOT / "topologies" / "leaf-spine.yaml", Path(default_topology_path())]

# ---- a reader of the simulator's formats ----------------------------------------------------

# ns-3 DataRate::DoParse suffixes (src/network/utils/data-rate.cc) -> bits per unit
_RATE_UNITS = {"bps": 1, "b/s": 1, "Bps": 8, "B/s": 8}
for _p, _m in (("k", 10**3), ("K", 10**3), ("M", 10**6), ("G", 10**9)):
    _RATE_UNITS.update({f"{_p}bps": _m, f"{_p}b/s": _m, f"{_p}Bps": 8 * _m, f"{_p}B/s": 8 * _m})
for _p, _m in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30)):
    _RATE_UNITS.update({f"{_p}b/s": _m, f"{_p}B/s": 8 * _m})
# ns-3 Time(const std::string&) suffixes (src/core/model/time.cc), no suffix = seconds
_TIME_UNITS = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0, "ps": 1e-3, "fs": 1e-6, "": 1e9}

# the keys third.cc's config loop reads, with how many tokens follow (-1: a map `n k v k v`)
_CONFIG_KEYS = {
    **dict.fromkeys((
        "ENABLE_QCN", "USE_DYNAMIC_PFC_THRESHOLD", "CLAMP_TARGET_RATE", "PAUSE_TIME",
        "DATA_RATE", "LINK_DELAY", "PACKET_PAYLOAD_SIZE", "L2_CHUNK_SIZE", "L2_ACK_INTERVAL",
        "L2_BACK_TO_ZERO", "TOPOLOGY_FILE", "FLOW_FILE", "TRACE_FILE", "TRACE_OUTPUT_FILE",
        "SIMULATOR_STOP_TIME", "ALPHA_RESUME_INTERVAL", "RP_TIMER", "EWMA_GAIN",
        "FAST_RECOVERY_TIMES", "RATE_AI", "RATE_HAI", "ERROR_RATE_PER_LINK", "CC_MODE",
        "RATE_DECREASE_INTERVAL", "MIN_RATE", "FCT_OUTPUT_FILE", "HAS_WIN", "GLOBAL_T",
        "MI_THRESH", "VAR_WIN", "FAST_REACT", "U_TARGET", "INT_MULTI", "RATE_BOUND",
        "ACK_HIGH_PRIO", "DCTCP_RATE_AI", "PFC_OUTPUT_FILE", "ENABLE_TRACE", "BUFFER_SIZE",
        "QLEN_MON_FILE", "QLEN_MON_START", "QLEN_MON_END", "MULTI_RATE", "SAMPLE_FEEDBACK",
        "PINT_LOG_BASE", "PINT_PROB"), 1),
    "LINK_DOWN": 3, "KMAX_MAP": -1, "KMIN_MAP": -1, "PMAX_MAP": -1,
}


def ns3_rate(text: str) -> int:
    m = re.fullmatch(r"([0-9.]+)(.+)", text)
    if m is None or m.group(2) not in _RATE_UNITS:
        raise ValueError(f"not an ns-3 DataRate: {text!r}")
    return int(float(m.group(1)) * _RATE_UNITS[m.group(2)])


def ns3_time_ns(text: str) -> float:
    m = re.fullmatch(r"([+\-0-9.]+)([a-z]*)", text)
    if m is None or m.group(2) not in _TIME_UNITS:
        raise ValueError(f"not an ns-3 Time: {text!r}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


@dataclass
class SimTopology:
    nodes: int
    switches: list[int]
    links: list[tuple[int, int, int, float, float]]  # src dst bps delay_ns error_rate
    rest: list[str]  # tokens after the declared records (third.cc never reads them)

    @property
    def hosts(self) -> set[int]:
        return set(range(self.nodes)) - set(self.switches)


def read_topology(text: str) -> SimTopology:
    tok = text.split()
    n, s, m = int(tok[0]), int(tok[1]), int(tok[2])
    switches = [int(x) for x in tok[3:3 + s]]
    assert len(switches) == s
    assert len(set(switches)) == s
    assert all(0 <= x < n for x in switches), "switch id out of range"
    links = []
    pos = 3 + s
    for _ in range(m):
        a, b, rate, delay, err = tok[pos:pos + 5]
        pos += 5
        links.append((int(a), int(b), ns3_rate(rate), ns3_time_ns(delay), float(err)))
    for a, b, rate, delay, err in links:
        if not (0 <= a < n and 0 <= b < n and a != b):
            raise ValueError(f"bad link {a} {b}")
        assert rate > 0
        assert delay >= 0
        assert 0 <= err <= 1
    return SimTopology(n, switches, links, tok[pos:])


@dataclass
class SimFlow:
    src: int
    dst: int
    pg: int
    dport: int
    size: int
    start_s: float


def read_flows(text: str, topo: SimTopology) -> tuple[list[SimFlow], list[str]]:
    tok = text.split()
    count = int(tok[0])
    flows = []
    for i in range(count):
        src, dst, pg, dport, size, start = tok[1 + 6 * i: 7 + 6 * i]
        flows.append(SimFlow(int(src), int(dst), int(pg), int(dport), int(size), float(start)))
    for f in flows:
        # third.cc asserts both ends are hosts (node type 0)
        assert f.src in topo.hosts
        assert f.dst in topo.hosts
        assert f.src != f.dst
        assert 0 <= f.pg < 8  # the switches' 8 queues (switch-mmu.h qCnt)
        assert 0 < f.size < 2**32  # read into a uint32_t
    starts = [f.start_s for f in flows]
    # ScheduleFlowInputs reads the next line once the previous flow started: "Please order
    # the flows in ascending start_time!" (mix/flow.txt)
    assert starts == sorted(starts)
    return flows, tok[1 + 6 * count:]


def read_config(text: str) -> dict[str, list[str]]:
    tok = text.split()
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(tok):
        key = tok[i]
        assert key in _CONFIG_KEYS, f"third.cc reads no key {key!r}"
        arity = _CONFIG_KEYS[key]
        if arity < 0:
            arity = 1 + 2 * int(tok[i + 1])
        out[key] = tok[i + 1:i + 1 + arity]
        assert len(out[key]) == arity, f"{key}: too few values"
        i += 1 + arity
    return out


def rate_map(values: list[str]) -> dict[int, float]:
    n = int(values[0])
    pairs = values[1:]
    return {int(pairs[2 * i]): float(pairs[2 * i + 1]) for i in range(n)}


@dataclass
class Exported:
    topo: SimTopology
    flows: list[SimFlow]
    config: dict[str, list[str]]
    files: dict[str, str]
    warnings: list[str]


def exported(path: Path | str) -> Exported:
    result = export_topology(load(path), "hpcc-ns3", ExportOptions(command_file=str(path)))
    files = result.files
    assert set(files) == {"topology.txt", "flow.txt", "trace.txt", "config.txt", "README.md"}
    topo = read_topology(files["topology.txt"])
    assert topo.rest == [], "an export has nothing after its records"
    flows, rest = read_flows(files["flow.txt"], topo)
    assert rest == []
    assert files["trace.txt"].split() == ["0"]
    config = read_config(files["config.txt"])
    sub = config["TOPOLOGY_FILE"][0].rsplit("/", 1)[0]
    assert config["FLOW_FILE"] == [f"{sub}/flow.txt"]
    assert config["TRACE_FILE"] == [f"{sub}/trace.txt"]
    # third.cc asserts kmin, kmax and pmax for every switch port's rate
    port_rates = {r for a, b, r, _, _ in topo.links
                  if a in topo.switches or b in topo.switches}
    for key in ("KMIN_MAP", "KMAX_MAP", "PMAX_MAP"):
        assert port_rates <= set(rate_map(config[key])), key
    for w in result.warnings:
        assert w in files["README.md"]
    return Exported(topo, flows, config, files, result.warnings)


# ---- the reader accepts the simulator's own files ----------------------------------------


def test_reader_accepts_the_simulators_own_samples() -> None:
    topo = read_topology((DATA / "upstream-topology.txt").read_text())
    assert (topo.nodes, topo.switches, len(topo.links)) == (66, [0], 65)
    assert topo.links[0] == (0, 1, 100 * 10**9, 1000.0, 0.0)
    assert topo.rest[:4] == ["0", "66", "100Gbps", "0.001ms"]  # beyond the count: unread
    flows, rest = read_flows((DATA / "upstream-flow.txt").read_text(), topo)
    assert [(f.src, f.dst, f.pg, f.dport, f.size, f.start_s) for f in flows] == [
        (2, 1, 3, 100, 200_000_000, 2.0), (3, 1, 3, 100, 200_000_000, 2.0)]
    config = read_config((DATA / "upstream-config.txt").read_text())
    assert config["CC_MODE"] == ["3"]
    assert rate_map(config["KMIN_MAP"]) == {25 * 10**9: 100, 50 * 10**9: 200, 100 * 10**9: 400}


def test_reader_units_are_ns3s() -> None:
    assert ns3_rate("100Gbps") == ns3_rate("100Gb/s") == 100 * 10**9
    assert ns3_rate("50Mb/s") == 50 * 10**6
    assert ns3_time_ns("0.001ms") == ns3_time_ns("1000ns") == ns3_time_ns("1us") == 1000
    with pytest.raises(ValueError, match="not an ns-3 DataRate: '100Gbit'"):
        ns3_rate("100Gbit")  # fabric writes this; ns-3 does not parse it
    with pytest.raises(ValueError, match="not an ns-3 Time"):
        ns3_time_ns("1µs")


# ---- every shipped RoCE file ----------------------------------------------------------------


@pytest.mark.parametrize("path", ROCE_FILES, ids=lambda p: p.name)
def test_shipped_files_export_and_read_back(path: Path) -> None:
    topo = load(path)
    out = exported(path)
    names = list(topo.nodes)
    assert out.topo.nodes == len(names)
    assert len(out.topo.switches) == sum(n.kind == "switch" for n in topo.nodes.values())
    assert len(out.topo.links) == len(topo.links)
    # each link's ends, rate and delay, in fabric time
    ids = _ids(out)
    for link, (a, b, rate, delay, err) in zip(topo.links, out.topo.links, strict=True):
        assert (ids[a], ids[b]) == (link.a, link.b)
        assert rate == link.forward.rate_bps
        assert delay == link.forward.delay_ns
        assert err == link.forward.loss_ppm / 1e6
    # every transfer is one flow of its bytes, between the same hosts
    transfers = schedule(topo)
    assert len(out.flows) == len(transfers)
    assert Counter((ids[f.src], ids[f.dst], f.size) for f in out.flows) == \
        Counter((t.src, t.dst, t.nbytes) for t in transfers)
    assert out.flows[0].start_s == 2.0  # fabric's time 0, as traffic_gen.py starts
    if topo.time_scale != 1:
        assert any(f"time_scale {topo.time_scale:g}" in w for w in out.warnings)


def _ids(out: Exported) -> dict[int, str]:
    """Simulator id -> fabric name, from the README's table (what a user reads)."""
    rows = re.findall(r"^\| (\d+) \| (\S+) \| (host|switch) \|$", out.files["README.md"], re.M)
    return {int(i): name for i, name, _ in rows}


def test_roce_incast_figures_carry_over() -> None:
    out = exported(ROOT / "topologies" / "roce-incast.yaml")
    c = out.config
    assert c["CC_MODE"] == ["1"]  # class kv: cc dcqcn -> DCQCN
    assert rate_map(c["KMIN_MAP"]) == {100 * 10**9: 400}  # ecn kmin 400KB
    assert rate_map(c["KMAX_MAP"]) == {100 * 10**9: 1600}  # kmax 1600KB
    assert rate_map(c["PMAX_MAP"]) == {100 * 10**9: 0.2}
    assert c["ENABLE_QCN"] == ["1"]
    assert c["BUFFER_SIZE"] == ["4"]  # switches.buffer 4MiB, in MiB
    # DCQCN's defaults at 100 Gb/s, as fabric's policy (and run.py) scale them
    assert (c["RATE_AI"], c["RATE_HAI"], c["MIN_RATE"]) == (["20Mb/s"], ["200Mb/s"],
                                                            ["1000Mb/s"])
    assert (c["RP_TIMER"], c["ALPHA_RESUME_INTERVAL"], c["RATE_DECREASE_INTERVAL"]) == \
        (["300"], ["1"], ["4"])
    assert float(c["EWMA_GAIN"][0]) == 1 / 256
    assert c["PACKET_PAYLOAD_SIZE"] == ["4096"]  # the RoCE path MTU in 9000-byte frames
    assert {f.pg for f in out.flows} == {3}  # class kv, priority 3
    assert {f.dport for f in out.flows} == {200}  # incast, as fct_analysis.py reads it
    assert {f.dst for f in out.flows} == {7}  # host-7
    stop = float(c["SIMULATOR_STOP_TIME"][0])
    assert stop > max(f.start_s for f in out.flows)


def test_leaf_spine_link_ecn_and_tcp_flows() -> None:
    out = exported(ROOT / "topologies" / "leaf-spine.yaml")
    # no class marks; every link marks at 100KB: a step at 100 kB on both rates
    assert rate_map(out.config["KMIN_MAP"]) == {200 * 10**9: 100, 400 * 10**9: 100}
    assert rate_map(out.config["KMAX_MAP"]) == {200 * 10**9: 100, 400 * 10**9: 100}
    assert set(rate_map(out.config["PMAX_MAP"]).values()) == {1.0}
    assert out.config["CC_MODE"] == ["0"]
    text = "\n".join(out.warnings)
    assert "flows over tcp exported as RDMA flows" in text
    assert "checkpoint (tcp)" in text
    assert "per-link queue sizes on 16 link(s)" in text
    assert "lossy class(es) bulk" in text
    # bulk is priority 1, the simulator's TCP queue: it moves to the lowest free pg
    pgs = Counter(f.pg for f in out.flows)
    assert pgs == Counter({3: 20, 2: 1})


def test_roce_mixed_names_what_hpcc_cannot_take() -> None:
    out = exported(ROOT / "topologies" / "roce-mixed.yaml")
    text = "\n".join(out.warnings)
    assert "weights kv=4, bulk=1, control=1" in text
    assert "strict priority for control" in text
    assert "checkpoint (tcp)" in text
    assert "bulk: cubic" in text
    assert "lossy class(es) bulk run lossless" in text
    assert out.config["CC_MODE"] == ["1"]
    assert not any("different congestion control" in w for w in out.warnings)


# ---- a file with what the simulator cannot take ---------------------------------------------

_ODD = """\
name: odd
time_scale: 10
switches: {buffer: 3000000, buffer_mode: per_port, pfc: false}
classes:
  - {name: kv, dscp: 26, priority: 3, lossless: true, cc: hpcc,
     cc_params: {eta: 0.9, max_stage: 2, initial_u: 0.5}}
  - {name: bulk, dscp: 10, priority: 0, cc: dctcp,
     ecn: {kmin: 100KB, kmax: 200KB, pmax: 0.5}}
nodes:
  h0: {}
  h1: {}
  h2: {}
  s0: {kind: switch}
links:
  - {endpoints: [h0, s0], rate: 100Gbps, delay: 1us, jitter: 100ns, loss: 0.1%}
  - endpoints: [h1, s0]
    rate: 100Gbps
    delay: 1us
    reverse: {rate: 50Gbps}
  - {endpoints: [h2, s0], rate: 100Gbps, delay: 2us, queue: 1MiB}
traffic:
  flows:
    - {name: big, pattern: bulk, from: h0, to: h1, class: kv, transport: roce, size: 64MiB,
       requests: 1}
    - {name: side, pattern: bulk, from: h2, to: h1, class: bulk, transport: roce, size: 1MiB,
       requests: 3, rate: 1000/s, arrival: fixed}
    - {name: ping, pattern: bulk, from: h1, to: h2, class: kv, transport: udp, size: 4KiB}
"""


def test_odd_file_warns_for_each_setting(tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(_ODD)
    out = exported(path)
    text = "\n".join(out.warnings)
    for expected in (
        "time_scale 10 not applied",
        "asymmetric link(s)",  # h1--s0 reverse rate
        "s0--h1 (rate_bps)" if "s0--h1" in text else "h1--s0 (rate_bps)",
        "jitter on 1 link(s) not exported (no simulator knob): h0--s0",
        "per-link queue sizes on 1 link(s)",
        "kv: hpcc, bulk: dctcp",  # two classes, two CCs
        "exported hpcc from class kv",
        "initial_u not exported",
        "buffer_mode per_port",
        "switches.pfc off",
        "rounded to 3 MiB",
        "flows over udp",
        "ping (udp)",
        "classes mark ECN differently",
    ):
        assert expected in text, expected
    c = out.config
    assert c["CC_MODE"] == ["3"]
    assert (c["U_TARGET"], c["MI_THRESH"], c["HAS_WIN"], c["VAR_WIN"]) == (
        ["0.9"], ["2"], ["1"], ["1"])
    assert c["INT_MULTI"] == ["4"]  # 100 Gb/s / 25, as run.py
    # kv has no ecn: profile, bulk's is the one the simulator gets
    assert rate_map(c["KMIN_MAP"]) == {100 * 10**9: 100}
    assert rate_map(c["KMAX_MAP"])[100 * 10**9] == 200
    # loss 0.1% on h0--s0 is that link's error rate
    assert out.topo.links[0][4] == pytest.approx(0.001)
    # bulk's priority 0 (the simulator's control queue) takes pg 2; kv keeps 3
    assert sorted({(f.size, f.pg) for f in out.flows}) == [(4096, 3), (1 << 20, 2), (64 << 20, 3)]
    # open-loop fixed arrivals 1 ms apart in fabric time (not host time x10)
    side = sorted(f.start_s for f in out.flows if f.size == 1 << 20)
    assert side == pytest.approx([2.0, 2.001, 2.002])


def test_no_traffic_exports_the_topology_with_no_flows(tmp_path: Path) -> None:
    path = tmp_path / "bare.yaml"
    path.write_text("name: bare\nnodes: {a: {}, b: {}}\nlinks:\n"
                    "  - {endpoints: [a, b], rate: 25Gbps, delay: 500ns}\n")
    out = exported(path)
    assert out.files["flow.txt"].split() == ["0"]
    assert out.topo.links == [(0, 1, 25 * 10**9, 500.0, 0.0)]
    assert any("no traffic: section" in w for w in out.warnings)


@pytest.mark.parametrize(("name", "section"), [("prfaas.yaml", "prfaas:"),
                                               ("lpu-ring.yaml", "lpu:"),
                                               ("memsem-roce.yaml", "memory:")])
def test_kind_sections_are_named_not_dropped(name: str, section: str) -> None:
    out = exported(ROOT / "topologies" / name)
    assert any(w.startswith(section) and "not exported" in w for w in out.warnings)


# ---- the command line -----------------------------------------------------------------------


def test_cli_export_end_to_end(tmp_path: Path) -> None:
    src = ROOT / "topologies" / "roce-mixed.yaml"
    out_dir = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", str(src), "--to", "hpcc-ns3", "--out",
                                      str(out_dir)], prog_name="fabric")
    assert result.exit_code == 0, result.output
    assert f"wrote {out_dir / 'topology.txt'}" in result.stdout
    assert "warning: time_scale 2000 not applied" in result.stderr
    topo = read_topology((out_dir / "topology.txt").read_text())
    assert len(topo.links) == len(load(src).links)
    flows, _ = read_flows((out_dir / "flow.txt").read_text(), topo)
    assert sorted(f.size for f in flows) == sorted(t.nbytes for t in schedule(load(src)))
    config = read_config((out_dir / "config.txt").read_text())
    assert config["TOPOLOGY_FILE"] == ["mix/fabric-roce-mixed/topology.txt"]
    readme = (out_dir / "README.md").read_text()
    assert "./waf --run 'scratch/third mix/fabric-roce-mixed/config.txt'" in readme
    # a second export into the same directory is refused, not mixed
    again = CliRunner().invoke(cli, ["export", str(src), "--to", "hpcc-ns3", "--out",
                                     str(out_dir)], prog_name="fabric")
    assert again.exit_code == 1
    assert "is not empty" in again.output


def test_eight_priorities_fold_into_six_pgs_with_a_warning(tmp_path: Path) -> None:
    classes = "".join(f"  - {{name: c{p}, dscp: {p * 8}, priority: {p}}}\n" for p in range(8))
    path = tmp_path / "prios.yaml"
    path.write_text("name: prios\nnodes: {a: {}, b: {}}\nlinks:\n"
                    "  - {endpoints: [a, b], rate: 25Gbps, delay: 500ns}\n"
                    f"classes:\n{classes}")
    out = exported(path)
    assert "priorities 0, 1, 7 share pg 7: the simulator has six data pgs (2..7)" in \
        out.warnings
    assert "| c0 | 0 | 7 | no | none |" in out.files["README.md"]
    assert "| c3 | 3 | 3 | no | none |" in out.files["README.md"]
