"""The `lpu:` section: a fabric of LPU nodes with direct links, and the transfer graph to
compile, schedule and run over it (`fabric run` then runs the LPU executor, not KV traffic).

```yaml
name: lpu-ring
time_scale: 1000            # 112 Gbit/s links become 112 Mbit/s on the host
lpu:
  shape: ring               # mesh | ring | torus
  count: 4                  # mesh, ring; a torus takes rows: and cols:
  link: {rate: 112Gbps, delay: 100ns}
  graph: {kind: tp-allreduce, bytes: 256KiB}
  batch_vectors: 64         # 320-byte vectors per slot (one datagram)
  drift_ppm: [0, 200]       # each value is one scheduled run: how fast the clocks drift
  resync: [1ms, 10ms]       # fabric time between clock resyncs
  plan_drift_ppm: 0         # size the plan's guard band for this drift (default: each run's)
```

Graphs: `tp-allreduce` {bytes}, `pipeline` {bytes, microbatches}, `attention-ffn`
{attention, ffn, tokens, bytes_per_token}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from yaml.nodes import SequenceNode

from fabric.topology.model import Link, Node, Shape
from fabric.units import parse_rate, parse_size, parse_time

if TYPE_CHECKING:
    import yaml

    from fabric.topology.walker import Walker

SHAPES = ("mesh", "ring", "torus")
GRAPHS = {"tp-allreduce": ("bytes",), "pipeline": ("bytes", "microbatches"),
          "attention-ffn": ("attention", "ffn", "tokens", "bytes_per_token")}
_KEYS = ("shape", "count", "rows", "cols", "link", "graph", "vector_bytes", "batch_vectors",
         "drift_ppm", "resync", "plan_drift_ppm", "seed")
# datagrams carry a whole batch: a large MTU keeps it one packet through the links
LPU_MTU = 65000


@dataclass(frozen=True)
class LpuSpec:
    shape: str
    names: tuple[str, ...]
    rows: int
    cols: int
    rate_bps: int
    delay_ns: int
    graph: str
    graph_args: dict[str, int]
    vector_bytes: int = 320
    batch_vectors: int = 64
    drift_ppm: tuple[float, ...] = (0.0,)
    resync_ns: tuple[int, ...] = (1_000_000,)
    # the drift the plan's guard band is sized for; None: each run's own drift (guard matches)
    plan_drift_ppm: float | None = None
    seed: int = 1
    line: int | None = None


def lpu_links(shape: str, names: list[str], rows: int, cols: int) -> list[tuple[str, str]]:
    """Node pairs a mesh, ring or 2-D torus joins (each pair once)."""
    n = len(names)
    if shape == "mesh":
        return [(names[i], names[j]) for i in range(n) for j in range(i + 1, n)]
    if shape == "ring":
        return [(names[i], names[(i + 1) % n]) for i in range(n if n > 2 else n - 1)]
    pairs: set[tuple[str, str]] = set()
    for r in range(rows):
        for c in range(cols):
            me = names[r * cols + c]
            for other in (names[r * cols + (c + 1) % cols], names[((r + 1) % rows) * cols + c]):
                if other != me:
                    pairs.add(tuple(sorted((me, other))))  # type: ignore[arg-type]
    return sorted(pairs, key=lambda p: (names.index(p[0]), names.index(p[1])))


def parse_lpu(w: Walker, node: yaml.Node) -> tuple[LpuSpec, list[Node], list[Link]]:
    f = w.mapping(node, "lpu", _KEYS, required=("shape", "link", "graph"))
    line = node.start_mark.line + 1
    shape = w.choice(f["shape"][1], "lpu.shape", SHAPES, "shape")
    if shape == "torus":
        for key in ("rows", "cols"):
            if key not in f:
                raise w.error(node, "lpu", "a torus needs `rows:` and `cols:`")
        rows = w.integer(f["rows"][1], "lpu.rows", 1, 64, "a count", "rows")
        cols = w.integer(f["cols"][1], "lpu.cols", 1, 64, "a count", "cols")
        if rows * cols < 2:
            raise w.error(node, "lpu", "a torus needs at least two nodes")
    else:
        if "count" not in f:
            raise w.error(node, "lpu", f"a {shape} needs `count:` (number of LPUs)")
        rows, cols = 1, w.integer(f["count"][1], "lpu.count", 2, 256, "a count >= 2", "count")
    names = [f"lpu-{i}" for i in range(rows * cols)]
    lf = w.mapping(f["link"][1], "lpu.link", ("rate", "delay"), required=("rate",))
    rate = w.unit(lf["rate"][1], "lpu.link.rate", parse_rate, "a rate such as 112Gbps")
    delay = w.unit(lf["delay"][1], "lpu.link.delay", parse_time, "a time") if "delay" in lf \
        else 0
    gf_node = f["graph"][1]
    kind_node = w.mapping(gf_node, "lpu.graph", ("kind", *{k for ks in GRAPHS.values()
                                                           for k in ks}), required=("kind",))
    kind = w.choice(kind_node["kind"][1], "lpu.graph.kind", GRAPHS, "graph")
    args: dict[str, int] = {}
    for key in GRAPHS[kind]:
        if key not in kind_node:
            raise w.error(gf_node, "lpu.graph", f"a {kind} graph needs `{key}:`")
        path = f"lpu.graph.{key}"
        if key.startswith("bytes"):
            args[key] = w.unit(kind_node[key][1], path, parse_size, "a size such as 64KiB")
            if args[key] <= 0:
                raise w.error(kind_node[key][1], path, "must be above 0")
        else:
            args[key] = w.integer(kind_node[key][1], path, 1, 100_000, "a count", key)
    for key in kind_node:
        if key != "kind" and key not in GRAPHS[kind]:
            raise w.error(kind_node[key][0], f"lpu.graph.{key}", f"a {kind} graph takes "
                          f"{', '.join(GRAPHS[kind])}, not '{key}'")
    if kind == "attention-ffn" and args["attention"] + args["ffn"] > len(names):
        raise w.error(gf_node, "lpu.graph", f"attention + ffn = "
                      f"{args['attention'] + args['ffn']} nodes, but the fabric has "
                      f"{len(names)}")
    vector = w.integer(f["vector_bytes"][1], "lpu.vector_bytes", 1, 65536) \
        if "vector_bytes" in f else 320
    batch = w.integer(f["batch_vectors"][1], "lpu.batch_vectors", 1, 4096) \
        if "batch_vectors" in f else 64
    if vector * batch + 64 > LPU_MTU - 28:
        raise w.error(node, "lpu", f"a batch of {batch} x {vector} B does not fit one "
                      f"datagram ({LPU_MTU - 28 - 64} B at most)")
    drifts = tuple(float(x) for x in _list(w, f, "drift_ppm", _ppm)) or (0.0,)
    resyncs = tuple(_list(w, f, "resync", lambda n, p: w.unit(n, p, parse_time, "a time"))) \
        or (1_000_000,)
    seed = w.integer(f["seed"][1], "lpu.seed", 0) if "seed" in f else 1
    plan_drift = _ppm(w, f["plan_drift_ppm"][1], "lpu.plan_drift_ppm") \
        if "plan_drift_ppm" in f else None
    spec = LpuSpec(shape=shape, names=tuple(names), rows=rows, cols=cols, rate_bps=rate,
                   delay_ns=delay, graph=kind, graph_args=args, vector_bytes=vector,
                   batch_vectors=batch, drift_ppm=drifts, resync_ns=resyncs,
                   plan_drift_ppm=plan_drift, seed=seed,
                   line=line)
    nodes = [Node(n, kind="host", role="lpu", line=line) for n in names]
    link_shape = Shape(rate_bps=rate, delay_ns=delay, mtu=LPU_MTU)
    links = [Link(a, b, link_shape, link_shape, line=line)
             for a, b in lpu_links(shape, names, rows, cols)]
    return spec, nodes, links


def _ppm(w: Walker, n: yaml.Node, p: str) -> float:
    v = w.scalar(n, p, "a drift in ppm")
    if not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v <= 100_000:
        raise w.error(n, p, "expected a clock drift in ppm, 0..100000")
    return float(v)


def _list(w: Walker, f: dict, key: str, parse: Any) -> list:
    if key not in f:
        return []
    node = f[key][1]
    items = node.value if isinstance(node, SequenceNode) else [node]
    out = []
    for i, item in enumerate(items):
        path = f"lpu.{key}[{i}]" if isinstance(node, SequenceNode) else f"lpu.{key}"
        out.append(parse(w, item, path) if parse is _ppm else parse(item, path))
    return out
