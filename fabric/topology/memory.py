"""The `memory:` section: memory-semantic switch hops (a load/store fabric) and what
`fabric run` measures over them.

```yaml
memory:
  switches: [msw]          # nodes (kind: switch) that are memory switches
  latency: 100ns           # port-to-port latency of a memory switch, fabric time
  credits: 16              # request buffers per endpoint port
  txn: 256                 # largest transaction in bytes: 64 | 128 | 192 | 256
  timeout: 100us           # completion timeout: a transaction unanswered this long is lost
  windows:                 # endpoint memory regions
    - {name: gpu0-hbm, node: gpu-0, base: 0x0, size: 16MiB}
    - {name: gpu1-hbm, node: gpu-1, base: 0x1000000, size: 16MiB}
  multicast:               # Hypercast windows: a write is replicated to every member
    - {name: bcast, base: 0x80000000, size: 4MiB, members: [gpu-1, gpu-2]}
  reduce:                  # in-network reduce groups
    - {name: tp, members: [gpu-0, gpu-1, gpu-2, gpu-3], dtype: float32}
  runs:                    # what `fabric run` measures, in order
    - {name: ls, kind: loadstore, from: gpu-0, window: gpu1-hbm, sizes: [64, 256, 4KiB]}
    - {name: hc, kind: hypercast, from: gpu-0, window: bcast, size: 1MiB}
    - {name: ar, kind: allreduce, group: tp, sizes: [64KiB, 1MiB]}
    - {name: kv, kind: kv-pull, from: gpu-0, to: [gpu-1], window: gpu0-hbm,
       model: llama-3.1-8b, tokens: 16}
```

Every check the address map itself makes (alignment, overlap, unique names) is made here
first, against the file, so a bad window is a `FILE:LINE: key: message` naming both windows
and their lines rather than an `AddressMapError` at run time.

A memory endpoint must hang off a memory switch: loads and stores are routed by address inside
memory switches and cannot cross a packet (IP or RoCE) switch. So every host named here needs a
link to a memory switch, and two hosts that talk need a path between their memory switches
over links that join memory switches only (leaf -- spine -- leaf is fine, a detour through an
IP router is not).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from yaml.nodes import ScalarNode

from fabric.units import format_size, format_time, parse_size, parse_time

if TYPE_CHECKING:
    import yaml

    from fabric.topology.model import Link, Node
    from fabric.topology.walker import Walker

__all__ = [
    "ATOMIC_DTYPES",
    "ELEMENT_BYTES",
    "FLIT",
    "REDUCE_DTYPES",
    "TXN_SIZES",
    "DEFAULT_COUNT",
    "DEFAULT_CREDITS",
    "DEFAULT_DTYPE",
    "DEFAULT_LATENCY_NS",
    "DEFAULT_TIMEOUT_NS",
    "DEFAULT_TXN",
    "RUN_KINDS",
    "McastWindow",
    "MemRun",
    "MemWindow",
    "MemorySpec",
    "ReduceSpec",
    "parse_memory",
]

RUN_KINDS = ("loadstore", "hypercast", "allreduce", "kv-pull")
DEFAULT_LATENCY_NS = 100
DEFAULT_CREDITS = 16
DEFAULT_TXN = 256
# A PCIe-class completion timeout (PCIe's range is 50 us to 50 ms; memory fabrics sit at its
# short end): a transaction unanswered this long, in fabric time, is counted lost.
DEFAULT_TIMEOUT_NS = 100_000
DEFAULT_COUNT = 100
DEFAULT_DTYPE = "float32"

# The memory fabric's vocabulary: the schema checks a file against it, and the memory switch
# core (fabric.memsw) takes it from here, so the two cannot disagree.
FLIT = 64
"""Bytes in one flit: the alignment of windows and the unit of every transaction's size."""

TXN_SIZES = (64, 128, 192, 256)
"""Allowed transaction sizes in bytes (UALink 1.0 request sizes)."""

REDUCE_DTYPES = ("float16", "float32", "bfloat16")
"""Element types the in-network reduce sums."""

ELEMENT_BYTES = {"int32": 4, "int64": 8, "uint32": 4, "uint64": 8, "float16": 2,
                 "float32": 4, "bfloat16": 2}
"""Bytes per element of each type `AtomicAdd` accepts (the reduce types among them)."""

ATOMIC_DTYPES = tuple(ELEMENT_BYTES)
"""Element types `AtomicAdd` accepts."""
_KEYS = ("switches", "latency", "credits", "txn", "timeout", "windows", "multicast", "reduce",
         "runs")
_WINDOW_KEYS = ("name", "node", "base", "size")
_MCAST_KEYS = ("name", "base", "size", "members")
_REDUCE_KEYS = ("name", "members", "dtype")
# per kind: (keys it takes, keys it needs); `name` and `kind` are common to all
_RUN_SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "loadstore": (("from", "window", "sizes", "count"), ("from", "window", "sizes")),
    "hypercast": (("from", "window", "size"), ("from", "window", "size")),
    "allreduce": (("group", "sizes"), ("group", "sizes")),
    "kv-pull": (("from", "to", "window", "model", "tokens"),
                ("from", "to", "window", "model", "tokens")),
}
_RUN_KEYS = ("name", "kind", "from", "to", "window", "group", "sizes", "size", "count", "model",
             "tokens")
_NEEDS = {"from": "the host that issues it", "to": "the hosts that pull, e.g. [gpu-1]",
          "window": "a window name", "sizes": "bytes per access, e.g. [64, 256, 4KiB]",
          "size": "bytes per write, e.g. 1MiB", "group": "a reduce group name",
          "model": "a KV model such as llama-3.1-8b", "tokens": "tokens of KV to pull"}


# ---- the model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemWindow:
    """`size` bytes of `node`'s memory at global addresses `[base, base + size)`."""

    name: str
    node: str
    base: int
    size: int
    line: int | None = None

    @property
    def end(self) -> int:
        return self.base + self.size


@dataclass(frozen=True)
class McastWindow:
    """A Hypercast window: a write into it is replicated to every member host."""

    name: str
    base: int
    size: int
    members: tuple[str, ...]
    line: int | None = None

    @property
    def end(self) -> int:
        return self.base + self.size


@dataclass(frozen=True)
class ReduceSpec:
    """An in-network reduce group: the switch sums the members' vectors of `dtype`."""

    name: str
    members: tuple[str, ...]
    dtype: str
    line: int | None = None


@dataclass(frozen=True)
class MemRun:
    """One measurement `fabric run` makes over the memory fabric.

    `src` is the issuing host (None for an allreduce, which every member issues). `dst` is
    every host the run's data reaches: the window's owner (loadstore), the multicast members
    (hypercast), the group's members (allreduce), `to:` (kv-pull). `sizes` are bytes per
    operation: `sizes:` (loadstore, allreduce), `(size,)` (hypercast), the KV transfer's bytes
    in whole blocks (kv-pull). `count` repeats each size (loadstore; 1 for the others).
    """

    name: str
    kind: str
    src: str | None
    dst: tuple[str, ...]
    window: str | None
    group: str | None
    sizes: tuple[int, ...]
    count: int
    model: str | None
    tokens: int | None
    line: int | None = None


@dataclass(frozen=True)
class MemorySpec:
    """The validated `memory:` section (times in fabric time, sizes in bytes)."""

    switches: tuple[str, ...]
    latency_ns: int
    credits: int
    txn: int
    windows: tuple[MemWindow, ...]
    multicast: tuple[McastWindow, ...]
    reduce: tuple[ReduceSpec, ...]
    runs: tuple[MemRun, ...]
    line: int | None = None
    timeout_ns: int = DEFAULT_TIMEOUT_NS  # completion timeout (fabric time)

    def window(self, name: str) -> MemWindow | McastWindow:
        """The unicast or multicast window called `name` (KeyError if there is none)."""
        every: tuple[MemWindow | McastWindow, ...] = (*self.windows, *self.multicast)
        for w in every:
            if w.name == name:
                return w
        raise KeyError(name)

    def group(self, name: str) -> ReduceSpec:
        """The reduce group called `name` (KeyError if there is none)."""
        for g in self.reduce:
            if g.name == name:
                return g
        raise KeyError(name)

    def endpoints(self) -> list[str]:
        """Every host the section names (window owners, members, run ends), in file order."""
        items: list[tuple[int, int, tuple[str, ...]]] = []
        for w in self.windows:
            items.append((w.line or 0, len(items), (w.node,)))
        for m in self.multicast:
            items.append((m.line or 0, len(items), m.members))
        for g in self.reduce:
            items.append((g.line or 0, len(items), g.members))
        for r in self.runs:
            items.append((r.line or 0, len(items), ((r.src,) if r.src else ()) + r.dst))
        out: dict[str, None] = {}
        for _, _, names in sorted(items):
            out.update(dict.fromkeys(names))
        return list(out)


# ---- parsing --------------------------------------------------------------------------------


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _span(base: int, end: int) -> str:
    return f"[{base:#x}, {end:#x})"


def _bytes(n: int) -> str:
    """`16 MiB (16777216 B)`, or just `100 B`."""
    text = format_size(n)
    return text if text.endswith(" B") else f"{text} ({n} B)"


@dataclass
class _Region:
    """A window while parsing: where it was written, for the overlap and name checks."""

    what: str  # "window" or "multicast window"
    name: str
    base: int
    size: int
    item: yaml.Node
    name_node: yaml.Node
    path: str

    @property
    def end(self) -> int:
        return self.base + self.size

    def __str__(self) -> str:
        return f"{self.what} '{self.name}' {_span(self.base, self.end)}"


class _Fabric:
    """Which hosts hang off which memory switches, and which memory switches reach each other
    over links between memory switches only."""

    def __init__(self, switches: tuple[str, ...], links: list[Link]) -> None:
        self.switches = switches
        msw = set(switches)
        parent = {s: s for s in switches}

        def find(s: str) -> str:
            while parent[s] != s:
                parent[s] = parent[parent[s]]
                s = parent[s]
            return s

        self.attached: dict[str, list[str]] = {}  # host -> its memory switches, link order
        for link in links:
            if link.a in msw and link.b in msw:
                parent[find(link.a)] = find(link.b)
            for me, other in ((link.a, link.b), (link.b, link.a)):
                if other in msw and me not in msw:
                    self.attached.setdefault(me, []).append(other)
        self._island = {s: find(s) for s in switches}

    def islands(self, host: str) -> set[str]:
        return {self._island[s] for s in self.attached.get(host, ())}

    def unreachable(self, hosts: tuple[str, ...]) -> tuple[str, str] | None:
        """The first pair of `hosts` that no memory-switch path joins (None: all pairs meet)."""
        for j, b in enumerate(hosts):
            for a in hosts[:j]:
                if not self.islands(a) & self.islands(b):
                    return a, b
        return None

    def apart(self, a: str, b: str) -> str:
        return (f"no path through memory switches joins '{a}' and '{b}' ('{a}' hangs off "
                f"{', '.join(self.attached[a])}; '{b}' off {', '.join(self.attached[b])}); "
                "link those memory switches, directly or through other memory switches")


class _MemoryParser:
    def __init__(self, w: Walker, nodes: dict[str, Node], links: list[Link]) -> None:
        self.w = w
        self.nodes = nodes
        self.links = links
        self.fabric = _Fabric((), links)

    # -- the section --------------------------------------------------------------------------

    def parse(self, node: yaml.Node) -> MemorySpec:
        w = self.w
        f = w.mapping(node, "memory", _KEYS, required=("switches", "windows", "runs"))
        switches = self._switches(f["switches"][1])
        self.fabric = _Fabric(switches, self.links)
        latency = DEFAULT_LATENCY_NS
        if "latency" in f:
            latency = w.unit(f["latency"][1], "memory.latency", parse_time,
                             "a time such as 100ns")
        credits = DEFAULT_CREDITS
        if "credits" in f:
            credits = w.integer(f["credits"][1], "memory.credits", 1, what="a count >= 1",
                                label="credits")
        txn = DEFAULT_TXN
        if "txn" in f:
            txn = w.unit(f["txn"][1], "memory.txn", parse_size, "a transaction size in bytes")
            if txn not in TXN_SIZES:
                raise w.error(f["txn"][1], "memory.txn", f"txn {txn} B is not a UALink request "
                              f"size; use one of: {', '.join(map(str, TXN_SIZES))}")
        timeout = DEFAULT_TIMEOUT_NS
        if "timeout" in f:
            timeout = w.unit(f["timeout"][1], "memory.timeout", parse_time,
                             "a completion timeout such as 100us")
            if timeout <= latency:
                raise w.error(f["timeout"][1], "memory.timeout",
                              f"a completion timeout of {format_time(timeout)} is not longer "
                              f"than a switch hop ({format_time(latency)}): every transaction "
                              "would be lost")
        windows, regions = self._windows(f["windows"][1])
        multicast: list[McastWindow] = []
        if "multicast" in f:
            multicast, more = self._multicast(f["multicast"][1])
            regions += more
        self._check_regions(regions)
        groups: list[ReduceSpec] = []
        if "reduce" in f:
            groups = self._reduce(f["reduce"][1])
        runs = self._runs(f["runs"][1], windows, multicast, groups)
        return MemorySpec(switches=switches, latency_ns=latency, credits=credits, txn=txn,
                          windows=tuple(windows), multicast=tuple(multicast),
                          reduce=tuple(groups), runs=tuple(runs), line=_line(node),
                          timeout_ns=timeout)

    def _items(self, node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
        """A list's items with their paths; a lone scalar counts as a one-item list."""
        if isinstance(node, ScalarNode) and not self.w.is_null(node):
            return [(node, path)]
        return [(item, f"{path}[{i}]") for i, item in enumerate(self.w.sequence(node, path))]

    def _switches(self, node: yaml.Node) -> tuple[str, ...]:
        w = self.w
        out: list[str] = []
        items = self._items(node, "memory.switches")
        if not items:
            raise w.error(node, "memory.switches", "no memory switches: list the `kind: switch` "
                          "nodes that switch memory, e.g. [msw]")
        for item, path in items:
            name = self._known(item, path)
            if self.nodes[name].kind != "switch":
                raise w.error(item, path, f"node '{name}' is a {self.nodes[name].kind}; a "
                              "memory switch is a `kind: switch` node")
            if name in out:
                raise w.error(item, path, f"node '{name}' is listed twice")
            out.append(name)
        return tuple(out)

    # -- nodes --------------------------------------------------------------------------------

    def _known(self, item: yaml.Node, path: str) -> str:
        name = self.w.text(item, path, "a node name")
        if name not in self.nodes:
            close = difflib.get_close_matches(name, list(self.nodes), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.w.error(item, path, f"unknown node '{name}'{hint}")
        return name

    def _host(self, item: yaml.Node, path: str) -> str:
        """A host that hangs off a memory switch."""
        name = self._known(item, path)
        kind = self.nodes[name].kind
        if kind != "host":
            raise self.w.error(item, path, f"node '{name}' is a {kind}; memory endpoints are "
                               "hosts")
        if name not in self.fabric.attached:
            sw = self.fabric.switches
            raise self.w.error(item, path, f"host '{name}' has no link to a memory switch "
                               f"({', '.join(sw)}); add a link such as "
                               f"{{endpoints: [{name}, {sw[0]}]}}")
        return name

    def _hosts(self, node: yaml.Node, path: str, empty: str, least: int = 1,
               few: str = "") -> tuple[str, ...]:
        """Distinct hosts that hang off memory switches; `empty`/`few`: the messages for none
        and for fewer than `least`."""
        out: list[str] = []
        for item, where in self._items(node, path):
            name = self._host(item, where)
            if name in out:
                raise self.w.error(item, where, f"node '{name}' is listed twice")
            out.append(name)
        if not out:
            raise self.w.error(node, path, empty)
        if len(out) < least:
            raise self.w.error(node, path, few)
        return tuple(out)

    def _together(self, node: yaml.Node, path: str, hosts: tuple[str, ...]) -> None:
        pair = self.fabric.unreachable(hosts)
        if pair is not None:
            raise self.w.error(node, path, self.fabric.apart(*pair))

    # -- windows ------------------------------------------------------------------------------

    def _extent(self, f: dict, path: str) -> tuple[int, int]:
        w = self.w
        base = w.integer(f["base"][1], f"{path}.base", 0, what="an address such as 0x1000000",
                         label="base")
        if base % FLIT:
            down = base - base % FLIT
            raise w.error(f["base"][1], f"{path}.base", f"base {base:#x} is not {FLIT}-byte "
                          f"aligned; use {down:#x} or {down + FLIT:#x}")
        size = w.unit(f["size"][1], f"{path}.size", parse_size, "a size such as 16MiB")
        if size <= 0:
            raise w.error(f["size"][1], f"{path}.size", f"size must be above 0 (a window holds "
                          f"at least one {FLIT}-byte flit)")
        if size % FLIT:
            down = size - size % FLIT
            fix = f"{down} or {down + FLIT}" if down else f"{FLIT}"
            raise w.error(f["size"][1], f"{path}.size", f"size {size} B is not a multiple of "
                          f"{FLIT} bytes; use {fix}")
        return base, size

    def _windows(self, node: yaml.Node) -> tuple[list[MemWindow], list[_Region]]:
        w = self.w
        items = w.sequence(node, "memory.windows")
        if not items:
            raise w.error(node, "memory.windows", "no windows: add at least one endpoint memory "
                          "region, e.g. {name: gpu0-hbm, node: gpu-0, base: 0x0, size: 16MiB}")
        out: list[MemWindow] = []
        regions: list[_Region] = []
        for i, item in enumerate(items):
            path = f"memory.windows[{i}]"
            f = w.mapping(item, path, _WINDOW_KEYS, required=_WINDOW_KEYS)
            name = w.name(f["name"][1], f"{path}.name", "window name")
            owner = self._host(f["node"][1], f"{path}.node")
            base, size = self._extent(f, path)
            out.append(MemWindow(name, owner, base, size, line=_line(item)))
            regions.append(_Region("window", name, base, size, item, f["name"][1], path))
        return out, regions

    def _multicast(self, node: yaml.Node) -> tuple[list[McastWindow], list[_Region]]:
        w = self.w
        out: list[McastWindow] = []
        regions: list[_Region] = []
        for i, item in enumerate(w.sequence(node, "memory.multicast")):
            path = f"memory.multicast[{i}]"
            f = w.mapping(item, path, _MCAST_KEYS, required=_MCAST_KEYS)
            name = w.name(f["name"][1], f"{path}.name", "window name")
            base, size = self._extent(f, path)
            members = self._hosts(f["members"][1], f"{path}.members",
                                  "no members: a multicast window needs at least one host to "
                                  "replicate to")
            self._together(f["members"][1], f"{path}.members", members)
            out.append(McastWindow(name, base, size, members, line=_line(item)))
            regions.append(_Region("multicast window", name, base, size, item, f["name"][1],
                                   path))
        return out, regions

    def _check_regions(self, regions: list[_Region]) -> None:
        """Unique names and no overlaps across unicast and multicast windows; each error is at
        the later of the two windows, naming the earlier one and its line."""
        w = self.w
        ordered = sorted(regions, key=lambda r: _line(r.item))  # stable: file order
        seen: list[_Region] = []
        for r in ordered:
            for s in seen:
                if s.name == r.name:
                    raise w.error(r.name_node, f"{r.path}.name", f"duplicate window name "
                                  f"'{r.name}' (first at line {_line(s.item)}); windows and "
                                  "multicast windows share one set of names")
            for s in seen:
                if r.base < s.end and s.base < r.end:
                    overlap = min(r.end, s.end) - max(r.base, s.base)
                    raise w.error(r.item, r.path, f"{r} overlaps {s} (line {_line(s.item)}) by "
                                  f"{overlap} bytes; move '{r.name}' to "
                                  f"{_free(r.size, s.end, seen):#x}")
            seen.append(r)

    # -- reduce groups ------------------------------------------------------------------------

    def _reduce(self, node: yaml.Node) -> list[ReduceSpec]:
        w = self.w
        out: list[ReduceSpec] = []
        for i, item in enumerate(w.sequence(node, "memory.reduce")):
            path = f"memory.reduce[{i}]"
            f = w.mapping(item, path, _REDUCE_KEYS, required=("name", "members"))
            name = w.name(f["name"][1], f"{path}.name", "reduce group name")
            for g in out:
                if g.name == name:
                    raise w.error(f["name"][1], f"{path}.name", f"duplicate reduce group name "
                                  f"'{name}' (first at line {g.line})")
            few = ("a reduce group needs at least 2 members: list the hosts whose vectors the "
                   "switch sums")
            members = self._hosts(f["members"][1], f"{path}.members", few, 2, few)
            self._together(f["members"][1], f"{path}.members", members)
            dtype = DEFAULT_DTYPE
            if "dtype" in f:
                dtype = w.choice(f["dtype"][1], f"{path}.dtype", REDUCE_DTYPES, "dtype")
            out.append(ReduceSpec(name, members, dtype, line=_line(item)))
        return out

    # -- runs ---------------------------------------------------------------------------------

    def _runs(self, node: yaml.Node, windows: list[MemWindow], multicast: list[McastWindow],
              groups: list[ReduceSpec]) -> list[MemRun]:
        w = self.w
        items = w.sequence(node, "memory.runs")
        if not items:
            raise w.error(node, "memory.runs", "no runs: add at least one, e.g. {kind: "
                          "loadstore, from: gpu-0, window: gpu1-hbm, sizes: [64, 4KiB]}")
        out: list[MemRun] = []
        for i, item in enumerate(items):
            path = f"memory.runs[{i}]"
            f = w.mapping(item, path, _RUN_KEYS, required=("kind",))
            kind = w.choice(f["kind"][1], f"{path}.kind", RUN_KINDS, "run kind")
            name = f"{kind}-{i}"
            if "name" in f:
                name = w.name(f["name"][1], f"{path}.name", "run name")
            for r in out:
                if r.name == name:
                    where = f["name"][1] if "name" in f else item
                    raise w.error(where, f"{path}.name", f"duplicate run name '{name}' (first "
                                  f"at line {r.line}); name runs with `name:`")
            takes, needs = _RUN_SHAPES[kind]
            for key, (key_node, _) in f.items():
                if key not in ("name", "kind", *takes):
                    raise w.error(key_node, f"{path}.{key}", f"{_a(kind)} run takes "
                                  f"{', '.join(takes)}, not '{key}'")
            for key in needs:
                if key not in f:
                    raise w.error(item, path, f"{_a(kind)} run needs `{key}:` ({_NEEDS[key]})")
            run = _RunParser(self, f, path, name, kind, _line(item), windows, multicast, groups)
            out.append(run.parse())
        return out


class _RunParser:
    """One entry of `memory.runs`, whose keys are already checked against its kind."""

    def __init__(self, p: _MemoryParser, f: dict, path: str, name: str, kind: str, line: int,
                 windows: list[MemWindow], multicast: list[McastWindow],
                 groups: list[ReduceSpec]) -> None:
        self.p, self.w, self.f, self.path = p, p.w, f, path
        self.name, self.kind, self.line = name, kind, line
        self.windows = {x.name: x for x in windows}
        self.multicast = {x.name: x for x in multicast}
        self.groups = {g.name: g for g in groups}

    def node(self, key: str) -> yaml.Node:
        return self.f[key][1]

    def parse(self) -> MemRun:
        kw: dict = {"src": None, "window": None, "group": None, "count": 1, "model": None,
                    "tokens": None}
        if self.kind == "loadstore":
            kw.update(self._loadstore())
        elif self.kind == "hypercast":
            kw.update(self._hypercast())
        elif self.kind == "allreduce":
            kw.update(self._allreduce())
        else:
            kw.update(self._kv_pull())
        return MemRun(name=self.name, kind=self.kind, line=self.line, **kw)

    def _src(self) -> str:
        return self.p._host(self.node("from"), f"{self.path}.from")

    def _reach(self, key: str, a: str, b: str) -> None:
        if self.p.fabric.unreachable((a, b)) is not None:
            raise self.w.error(self.node(key), f"{self.path}.{key}", self.p.fabric.apart(a, b))

    def _window_name(self) -> tuple[str, yaml.Node, str]:
        node = self.node("window")
        path = f"{self.path}.window"
        name = self.w.text(node, path, "a window name")
        if name not in self.windows and name not in self.multicast:
            known = [*self.windows, *self.multicast]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.w.error(node, path, f"unknown window '{name}'{hint} (windows: "
                               f"{', '.join(known)})")
        return name, node, path

    def _unicast(self) -> MemWindow:
        name, node, path = self._window_name()
        if name in self.multicast:
            raise self.w.error(node, path, f"'{name}' is a multicast window; {_a(self.kind)} run "
                               f"targets a unicast window (one of: {', '.join(self.windows)})")
        return self.windows[name]

    def _sizes(self, key: str, check: Callable[[int, yaml.Node, str], None]) -> tuple[int, ...]:
        out: list[int] = []
        items = self.p._items(self.node(key), f"{self.path}.{key}")
        if not items:
            raise self.w.error(self.node(key), f"{self.path}.{key}", "no sizes: list at least "
                               "one, e.g. [64, 4KiB]")
        for item, where in items:
            size = self.w.unit(item, where, parse_size, "a size such as 4KiB")
            if size <= 0:
                raise self.w.error(item, where, "size must be above 0")
            check(size, item, where)
            out.append(size)
        return tuple(out)

    def _fits(self, window: MemWindow | McastWindow) -> Callable[[int, yaml.Node, str], None]:
        def check(size: int, item: yaml.Node, where: str) -> None:
            if size > window.size:
                raise self.w.error(item, where, f"size {_bytes(size)} is larger than window "
                                   f"'{window.name}' ({_bytes(window.size)}, line "
                                   f"{window.line}): a write larger than the window would run "
                                   f"past its end; use at most {format_size(window.size)} or "
                                   "grow the window")
        return check

    def _loadstore(self) -> dict:
        src = self._src()
        window = self._unicast()
        self._reach("window", src, window.node)
        sizes = self._sizes("sizes", self._fits(window))
        count = DEFAULT_COUNT
        if "count" in self.f:
            count = self.w.integer(self.node("count"), f"{self.path}.count", 1,
                                   what="a count >= 1", label="count")
        return {"src": src, "dst": (window.node,), "window": window.name, "sizes": sizes,
                "count": count}

    def _hypercast(self) -> dict:
        src = self._src()
        name, node, path = self._window_name()
        if name not in self.multicast:
            listed = (f"one of: {', '.join(self.multicast)}" if self.multicast
                      else "there are none: add one under memory.multicast")
            raise self.w.error(node, path, f"'{name}' is not a multicast window; a hypercast "
                               f"run writes to a multicast window ({listed})")
        window = self.multicast[name]
        for member in window.members:
            self._reach("window", src, member)
        size = self._sizes("size", self._fits(window))
        return {"src": src, "dst": window.members, "window": name, "sizes": size}

    def _allreduce(self) -> dict:
        node = self.node("group")
        path = f"{self.path}.group"
        name = self.w.text(node, path, "a reduce group name")
        if name not in self.groups:
            listed = (f"groups: {', '.join(self.groups)}" if self.groups
                      else "there are none: add one under memory.reduce")
            raise self.w.error(node, path, f"unknown reduce group '{name}' ({listed})")
        group = self.groups[name]
        item = ELEMENT_BYTES[group.dtype]

        def check(size: int, at: yaml.Node, where: str) -> None:
            if size % item:
                down = size - size % item
                fix = f"{down} or {down + item}" if down else f"{item}"
                raise self.w.error(at, where, f"size {size} B is not a multiple of {item} bytes "
                                   f"(one {group.dtype} element of group '{name}'); use {fix}")

        sizes = self._sizes("sizes", check)
        return {"dst": group.members, "group": name, "sizes": sizes}

    def _kv_pull(self) -> dict:
        from fabric.errors import FabricError
        from fabric.kv import BLOCK_SIZE, MODELS, get_model, transfer_bytes

        src = self._src()
        to_path = f"{self.path}.to"
        dst = self.p._hosts(self.node("to"), to_path, "no hosts: list the hosts that pull the "
                            "KV, e.g. [gpu-1]")
        if src in dst:
            raise self.w.error(self.node("to"), to_path, f"'{src}' is both `from:` and `to:`; "
                               "a host does not pull its own KV")
        for d in dst:
            self._reach("to", src, d)
        name, node, path = self._window_name()
        if name in self.multicast:
            raise self.w.error(node, path, f"'{name}' is a multicast window; a kv-pull reads KV "
                               f"from a window that '{src}' owns")
        window = self.windows[name]
        if window.node != src:
            own = [x.name for x in self.windows.values() if x.node == src]
            fix = (f"use one of its windows ({', '.join(own)})" if own
                   else f"add a window on '{src}'")
            raise self.w.error(node, path, f"window '{name}' belongs to '{window.node}', not "
                               f"'{src}': a kv-pull reads KV from the memory of `from:`; {fix}")
        model_node = self.node("model")
        model_name = self.w.text(model_node, f"{self.path}.model", "a model name")
        try:
            model = get_model(model_name)
        except FabricError:
            raise self.w.error(model_node, f"{self.path}.model", f"unknown model "
                               f"'{model_name}' (known: {', '.join(sorted(MODELS))})") from None
        tokens_node = self.node("tokens")
        tokens = self.w.integer(tokens_node, f"{self.path}.tokens", 1, 10_000_000,
                                "a token count", "tokens")
        need = transfer_bytes(model, tokens)
        if need > window.size:
            grow = -(-need // FLIT) * FLIT
            fit = max(0, (window.size - model.state_bytes) // model.bytes_per_token())
            fit -= fit % BLOCK_SIZE
            fewer = f"pull at most {fit} tokens" if fit else "use a smaller model"
            raise self.w.error(tokens_node, f"{self.path}.tokens", f"the KV of {tokens} tokens "
                               f"of {model.name} needs {format_size(need)} (whole "
                               f"{BLOCK_SIZE}-token blocks); window '{name}' holds "
                               f"{format_size(window.size)}: grow it to {grow} B or {fewer}")
        return {"src": src, "dst": dst, "window": name, "sizes": (need,), "model": model.name,
                "tokens": tokens}


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _free(size: int, start: int, placed: list[_Region]) -> int:
    """The lowest address >= `start` where `size` bytes overlap none of `placed`."""
    at = start
    moved = True
    while moved:
        moved = False
        for s in placed:
            if at < s.end and s.base < at + size:
                at = s.end
                moved = True
    return at


def parse_memory(w: Walker, node: yaml.Node, nodes: dict[str, Node],
                 links: list[Link]) -> MemorySpec:
    """Validate the `memory:` mapping against the topology's nodes and links. With a
    `switches:` section too, the switch nodes not listed here are RoCE switches."""
    return _MemoryParser(w, nodes, links).parse(node)
