"""The `workload:` section: agentic sessions or a replayed request trace, moving only the KV
each request lacks, under per-session policies compared side by side.

```yaml
workload:
  model: llama-3.1-8b          # built-in, or one the file's `models:` section defines
  seed: 1
  kv_scale: 64                 # KV bytes on the wire = real / kv_scale (write link rates / N)
  class: kv                    # traffic class of the KV transfers (default: the first class)
  chunk: 1MiB
  prefill: [p0, p1]            # prefill nodes
  decode: [d0, d1]             # decode nodes (they hold the KV cache that is reused)
  store: s0                    # optional: a KV store node (CPU/SSD tier) evicted blocks go to
  duration: 120s               # optional: arrivals after this much fabric time are cut
  block_tokens: 512            # a cache block, in tokens (the Mooncake trace's hash block)
  cache: {size: 8GiB, policy: lru}          # per decode node, real (fabric) bytes; lru | fifo
  compute:                     # modelled, and labelled so: prefill and decode times
    profile: prfaas-hybrid-1t  # a built-in prefill profile, or `points: [[tokens, s], ...]`
    decode_speed: 1.0          # a decode node's prefill speed against a prefill node's
    tpot: 25ms                 # decode time per output token
  policies: [pd, ppd]          # compared side by side (`fabric run --policy`)
  retention: [pin, ttl, evict] # what ppd does with a session's KV across a pause
  ttl: auto                    # or a time; auto: `ttl_factor` x the KV's reload time
  ttl_factor: 20
  append: local                # ppd's append-prefill: local (on the decode node, nothing
                               # moves) or remote (a prefill node sends the missing blocks)
  sessions:                    # agentic sessions ...
    count: 8
    rate: 0.5/s                # session starts (Poisson; `arrival: fixed` for a clock)
    turns: {min: 3, max: 8}    # or a number
    first: {mean: 15000, sigma: 0.5, min: 2000, max: 60000}   # tokens of turn 1
    append: 2000               # new input tokens of each later turn (a number or a dist)
    output: 300                # output tokens per turn
    pause: {mean: 5s, sigma: 0.8, min: 500ms, max: 60s}       # tool-call pause
  trace:                       # ... or a Mooncake-format JSONL trace
    file: data/mooncake-excerpt.jsonl   # relative to this file
    start: 0s                  # window start, trace time
    duration: 60s              # window length, trace time
    speedup: 1                 # replay N times faster
    sample: 1.0                # keep this share of the window's requests (seeded)
    limit: 200                 # at most this many requests
    sessions: false            # true: requests that extend an earlier one's prefix are its
                               # session's next turn
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from yaml.nodes import MappingNode, ScalarNode

from fabric.topology.traffic import ARRIVALS, MAX_TOKENS, _chunk, _node_list, _rate
from fabric.units import format_size, format_time, parse_size, parse_time

if TYPE_CHECKING:
    import yaml

    from fabric.kv.models import ModelSpec
    from fabric.topology.model import Link, Node, TrafficClass
    from fabric.topology.walker import Walker

POLICIES = ("pd", "ppd")
RETENTIONS = ("pin", "ttl", "evict")
CACHE_POLICIES = ("lru", "fifo")
APPENDS = ("local", "remote")  # where ppd's append-prefill runs: the decode node, a prefill node


@dataclass(frozen=True)
class Dist:
    """A quantity drawn per session or turn: log-normal with this mean and sigma (of the
    untruncated distribution), truncated to [min, max]; fixed at `mean` when sigma is 0."""

    mean: float
    sigma: float = 0.0
    min: float = 0.0
    max: float = float("inf")


@dataclass(frozen=True)
class TraceSpec:
    path: str  # absolute, resolved against the topology file's directory
    start_s: float = 0.0  # window start, trace seconds
    duration_s: float | None = None  # window length, trace seconds (None: to the end)
    speedup: float = 1.0
    sample: float = 1.0
    limit: int | None = None
    sessions: bool = False
    line: int | None = None


@dataclass(frozen=True)
class SessionsSpec:
    count: int
    rate_per_s: float  # session starts per fabric second
    arrival: str  # poisson | fixed
    turns_min: int
    turns_max: int
    first: Dist  # tokens
    append: Dist  # tokens
    output: Dist  # tokens
    pause: Dist  # seconds
    line: int | None = None


@dataclass(frozen=True)
class ComputeSpec:
    points: tuple[tuple[int, float], ...]  # (tokens, seconds) prefill on a prefill node
    profile: str = ""  # the built-in profile these points came from, if any
    decode_speed: float = 1.0
    tpot_s: float = 0.025


@dataclass(frozen=True)
class CacheSpec:
    size_bytes: int  # per decode node, real (fabric) KV bytes
    policy: str = "lru"


@dataclass(frozen=True)
class WorkloadSpec:
    model: str
    seed: int
    kv_scale: int
    cls: str
    chunk_bytes: int
    prefill: tuple[str, ...]
    decode: tuple[str, ...]
    store: str | None
    block_tokens: int
    cache: CacheSpec
    compute: ComputeSpec
    policies: tuple[str, ...]
    retention: tuple[str, ...]
    ttl_s: float | None  # None: auto
    ttl_factor: float
    duration_s: float | None
    append: str = "local"  # ppd's append-prefill: on the decode node, or a prefill node that
    # sends only the missing blocks
    sessions: SessionsSpec | None = None
    trace: TraceSpec | None = None
    line: int | None = None

    def variants(self, policies: tuple[str, ...] | None = None) -> list[str]:
        """The variants a run compares, by name: `pd`, and `ppd/<retention>` per retention."""
        out = []
        for p in policies or self.policies:
            if p == "pd":
                out.append("pd")
            else:
                out.extend(f"ppd/{r}" for r in self.retention)
        return out


_KEYS = ("model", "seed", "kv_scale", "class", "chunk", "prefill", "decode", "store",
         "duration", "block_tokens", "cache", "compute", "policies", "retention", "ttl",
         "ttl_factor", "append", "sessions", "trace")
_HINTS = {"rate": "session starts are `sessions.rate`",
          "count": "the number of sessions is `sessions.count`",
          "file": "a trace file is `trace: {file: ...}`",
          "policy": "write `policies: [pd, ppd]`, or `cache: {policy: lru}` for the cache"}
_CACHE_KEYS = ("size", "policy")
_COMPUTE_KEYS = ("profile", "points", "decode_speed", "tpot")
_SESSIONS_KEYS = ("count", "rate", "arrival", "turns", "first", "append", "output", "pause")
_TRACE_KEYS = ("file", "start", "duration", "speedup", "sample", "limit", "sessions")
_DIST_KEYS = ("mean", "sigma", "min", "max")
_TURNS_KEYS = ("min", "max")
DEFAULT_MODEL = "llama-3.1-8b"
DEFAULT_BLOCK_TOKENS = 512  # the Mooncake trace's hash block
DEFAULT_CACHE_BLOCKS = 64
DEFAULT_SIGMA = 0.5  # as traffic's `prompt:`
MAX_TURNS = 10_000
MAX_SESSIONS = 65_536  # fabric.workload.session_key's range


def parse_workload(w: Walker, node: yaml.Node, nodes: dict[str, Node], links: list[Link],
                   classes: tuple[TrafficClass, ...] | None = None) -> WorkloadSpec:
    """Validate the `workload:` mapping; every error names its line and key.

    `classes` are the file's traffic classes (`workload.class` must name one; the default is
    the first). Without them (a caller that has none) the class is only checked as a name and
    defaults to the built-in `default` class.
    """
    from fabric.kv import MODELS

    f = w.mapping(node, "workload", _KEYS, required=("prefill", "decode", "compute"),
                  hints=_HINTS)
    if ("sessions" in f) == ("trace" in f):
        if "trace" in f:
            raise w.error(f["trace"][0], "workload.trace", "a workload has either `sessions:` "
                          "or `trace:`, not both (run a second file for the other)")
        raise w.error(node, "workload", "a workload needs exactly one of `sessions:` "
                      "(generated agentic sessions) or `trace:` (a replayed request trace)")
    model = DEFAULT_MODEL
    if "model" in f:
        model = w.text(f["model"][1], "workload.model", "a model name")
        if model not in MODELS:
            raise w.error(f["model"][1], "workload.model", f"unknown model '{model}' (known: "
                          f"{', '.join(sorted(MODELS))}; or define it under `models:`)")
    seed = w.integer(f["seed"][1], "workload.seed", 0, 2**32, "a seed", "seed") \
        if "seed" in f else 1
    kv_scale = w.integer(f["kv_scale"][1], "workload.kv_scale", 1, 10**9, "a divisor >= 1",
                         "kv_scale") if "kv_scale" in f else 1
    cls = _class(w, f, classes)
    chunk = _chunk(w, f["chunk"][1], "workload.chunk") if "chunk" in f else 1 << 20
    prefill, decode, store = _roles(w, f, nodes, links)
    duration_s = None
    if "duration" in f:
        duration_s = _time_s(w, f["duration"][1], "workload.duration", "a run length such "
                             "as 120s")
        if duration_s <= 0:
            raise w.error(f["duration"][1], "workload.duration", "the duration must be above "
                          "0 (leave it out to run every arrival)")
    block_tokens = DEFAULT_BLOCK_TOKENS
    if "block_tokens" in f:
        block_tokens = w.integer(f["block_tokens"][1], "workload.block_tokens", 1, (1 << 20) - 1,
                                 "a token count", "block_tokens")
    cache = _cache(w, f, MODELS[model], block_tokens)
    compute = _compute(w, f["compute"][1])
    policies = _subset(w, f, "policies", POLICIES, "policy")
    retention = _subset(w, f, "retention", RETENTIONS, "retention policy")
    ttl_s = None
    if "ttl" in f:
        tnode = f["ttl"][1]
        if not (isinstance(tnode, ScalarNode) and tnode.value == "auto"):
            ttl_s = _time_s(w, tnode, "workload.ttl", "`auto` or a time such as 30s")
            if ttl_s <= 0:
                raise w.error(tnode, "workload.ttl", "a time-to-live must be above 0 (or "
                              "`auto`; `retention: [evict]` drops KV at once)")
    ttl_factor = _above_zero(w, f, "ttl_factor", "workload", 20.0, 1e6, "a number above 0",
                             "the time-to-live is this times the KV's reload time")
    append = "local"
    if "append" in f:
        append = w.choice(f["append"][1], "workload.append", APPENDS, "append-prefill place")
    sessions = _sessions(w, f["sessions"][1], duration_s) if "sessions" in f else None
    trace = _trace(w, f["trace"][1]) if "trace" in f else None
    return WorkloadSpec(model=model, seed=seed, kv_scale=kv_scale, cls=cls, chunk_bytes=chunk,
                        prefill=prefill, decode=decode, store=store, block_tokens=block_tokens,
                        cache=cache, compute=compute, policies=policies, retention=retention,
                        ttl_s=ttl_s, ttl_factor=ttl_factor, duration_s=duration_s,
                        append=append, sessions=sessions, trace=trace,
                        line=node.start_mark.line + 1)


def _above_zero(w: Walker, g: dict, key: str, path: str, default: float, hi: float,
                expected: str, hint: str) -> float:
    """An optional number `key` of mapping `g` in (0, hi]: `default` when absent."""
    if key not in g:
        return default
    node = g[key][1]
    value = w.number(node, f"{path}.{key}", 0, hi, expected, key)
    if value <= 0:
        raise w.error(node, f"{path}.{key}", f"{key} must be above 0 ({hint})")
    return value


def block_bytes(model_name: str, block_tokens: int) -> int:
    """Real KV bytes of one full cache block of `block_tokens` tokens of the model."""
    from fabric.kv import MODELS

    return MODELS[model_name].bytes_per_token() * block_tokens


# ---- pieces ---------------------------------------------------------------------------------

def _time_s(w: Walker, node: yaml.Node, path: str, what: str = "a time such as 5s") -> float:
    return int(w.unit(node, path, parse_time, what)) / 1e9


def _class(w: Walker, f: dict, classes: tuple[TrafficClass, ...] | None) -> str:
    names = [c.name for c in classes] if classes else ["default"]
    if "class" not in f:
        return names[0]
    cnode = f["class"][1]
    if classes is None:
        return w.name(cnode, "workload.class", "traffic class name")
    cls = w.text(cnode, "workload.class", "a traffic class name")
    if cls not in names:
        raise w.error(cnode, "workload.class", f"unknown traffic class '{cls}' (classes: "
                      f"{', '.join(names)})")
    return cls


def _items(w: Walker, node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
    """(item node, dotted path) of a node list written as a list or as one name."""
    if isinstance(node, ScalarNode):
        return [(node, path)]
    return [(item, f"{path}[{i}]") for i, item in enumerate(w.sequence(node, path))]


def _roles(w: Walker, f: dict, nodes: dict[str, Node],
           links: list[Link]) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    from fabric.topology.graph import adjacency, search

    prefill = _node_list(w, f["prefill"][1], "workload.prefill", nodes)
    decode = _node_list(w, f["decode"][1], "workload.decode", nodes)
    for item, where in _items(w, f["decode"][1], "workload.decode"):
        if item.value in prefill:
            raise w.error(item, where, f"node '{item.value}' is already a prefill node: a "
                          "node has one role")
    store = None
    if "store" in f:
        snode = f["store"][1]
        if not isinstance(snode, ScalarNode):
            raise w.error(snode, "workload.store", f"expected one node name, got "
                          f"{w.describe(snode)}")
        (store,) = _node_list(w, snode, "workload.store", nodes)
        for role, names in (("prefill", prefill), ("decode", decode)):
            if store in names:
                raise w.error(snode, "workload.store", f"node '{store}' is already a {role} "
                              "node: the store is a node of its own")
    adj = adjacency(links)

    def reach(start: str) -> dict[str, int]:
        return search(start, lambda n: adj.get(n, ())).hops

    for p in prefill:
        hops = reach(p)
        for item, where in _items(w, f["decode"][1], "workload.decode"):
            if item.value not in hops:
                raise w.error(item, where, f"prefill node '{p}' cannot reach decode node "
                              f"'{item.value}': no path of links joins them")
    if store is not None:
        hops = reach(store)
        for d in decode:
            if d not in hops:
                raise w.error(f["store"][1], "workload.store", f"decode node '{d}' "
                              f"cannot reach the store '{store}': no path of links joins them")
    return prefill, decode, store


def _cache(w: Walker, f: dict, model: ModelSpec, block_tokens: int) -> CacheSpec:
    per_token, name = model.bytes_per_token(), model.name
    one = per_token * block_tokens
    if "cache" not in f:
        return CacheSpec(size_bytes=DEFAULT_CACHE_BLOCKS * one)
    g = w.mapping(f["cache"][1], "workload.cache", _CACHE_KEYS)
    size = DEFAULT_CACHE_BLOCKS * one
    if "size" in g:
        snode = g["size"][1]
        size = w.unit(snode, "workload.cache.size", parse_size, "a size such as 8GiB")
        if size < one:
            raise w.error(snode, "workload.cache.size", f"a cache of {format_size(size)} holds "
                          f"no block: one block of {name} is {block_tokens} tokens x "
                          f"{per_token:,} B/token = {format_size(one)}")
    policy = "lru"
    if "policy" in g:
        policy = w.choice(g["policy"][1], "workload.cache.policy", CACHE_POLICIES,
                          "cache policy")
    return CacheSpec(size_bytes=size, policy=policy)


def _compute(w: Walker, node: yaml.Node) -> ComputeSpec:
    from fabric.errors import FabricError
    from fabric.kv.prefill import PROFILES, PrefillProfile

    path = "workload.compute"
    g = w.mapping(node, path, _COMPUTE_KEYS)
    if ("profile" in g) == ("points" in g):
        where = g["points"][0] if "points" in g else node
        raise w.error(where, path, "compute needs exactly one of `profile:` (a built-in "
                      f"prefill profile: {', '.join(sorted(PROFILES))}) or `points:` "
                      "([[tokens, seconds], ...])")
    profile = ""
    if "profile" in g:
        profile = w.choice(g["profile"][1], f"{path}.profile", sorted(PROFILES),
                           "prefill profile")
        points = PROFILES[profile].points
    else:
        pnode = g["points"][1]
        pts: list[tuple[int, float]] = []
        for i, item in enumerate(w.sequence(pnode, f"{path}.points")):
            where = f"{path}.points[{i}]"
            pair = w.sequence(item, where)
            if len(pair) != 2:
                raise w.error(item, where, "a point is [tokens, seconds], e.g. [32768, 1.84]")
            tokens = w.integer(pair[0], where, 1, MAX_TOKENS, "a token count", "tokens")
            sv = w.scalar(pair[1], where, "seconds")
            if isinstance(sv, str):
                seconds = _time_s(w, pair[1], where, "seconds, or a time such as 1.84s")
            else:
                seconds = w.number(pair[1], where, 0, 86_400, "seconds", "seconds")
            if seconds <= 0:
                raise w.error(pair[1], where, "a prefill time must be above 0")
            pts.append((tokens, seconds))
        try:
            points = PrefillProfile.from_points(pts).points
        except FabricError as e:
            raise w.error(pnode, f"{path}.points", str(e)) from None
    decode_speed = _above_zero(w, g, "decode_speed", path, 1.0, 1000, "a speed ratio above 0",
                               "a decode node's prefill speed against a prefill node's")
    tpot = 0.025
    if "tpot" in g:
        tpot = _time_s(w, g["tpot"][1], f"{path}.tpot", "a time per output token such as 25ms")
    return ComputeSpec(points=points, profile=profile, decode_speed=decode_speed, tpot_s=tpot)


def _subset(w: Walker, f: dict, key: str, options: tuple[str, ...], what: str) -> tuple[str, ...]:
    if key not in f:
        return options
    path = f"workload.{key}"
    out: list[str] = []
    for item, where in _items(w, f[key][1], path):
        value = w.choice(item, where, options, what)
        if value in out:
            raise w.error(item, where, f"{what} '{value}' is listed twice")
        out.append(value)
    if not out:
        raise w.error(f[key][1], path, f"no {what} listed (one or more of: "
                      f"{', '.join(options)})")
    return tuple(out)


def _sessions(w: Walker, node: yaml.Node, duration_s: float | None) -> SessionsSpec:
    path = "workload.sessions"
    g = w.mapping(node, path, _SESSIONS_KEYS, required=("count", "rate", "turns", "first",
                                                          "output"))
    count = w.integer(g["count"][1], f"{path}.count", 1, MAX_SESSIONS, "a session count",
                      "count")
    rate = _rate(w, g["rate"][1], f"{path}.rate")
    arrival = "poisson"
    if "arrival" in g:
        arrival = w.choice(g["arrival"][1], f"{path}.arrival", ARRIVALS, "arrival process")
    tnode = g["turns"][1]
    if isinstance(tnode, MappingNode):
        t = w.mapping(tnode, f"{path}.turns", _TURNS_KEYS, required=_TURNS_KEYS)
        turns_min = w.integer(t["min"][1], f"{path}.turns.min", 1, MAX_TURNS, "a turn count",
                              "turns.min")
        turns_max = w.integer(t["max"][1], f"{path}.turns.max", 1, MAX_TURNS, "a turn count",
                              "turns.max")
        if turns_min > turns_max:
            raise w.error(tnode, f"{path}.turns", f"turns.min {turns_min} is above turns.max "
                          f"{turns_max}")
    else:
        turns_min = turns_max = w.integer(tnode, f"{path}.turns", 1, MAX_TURNS,
                                          "a turn count or {min, max}", "turns")
    first = _tokens(w, g["first"][1], f"{path}.first", 1)
    output = _tokens(w, g["output"][1], f"{path}.output", 0)
    if "append" in g:
        append = _tokens(w, g["append"][1], f"{path}.append", 0)
    elif turns_max > 1:
        raise w.error(node, path, "sessions of more than one turn need `append:` (the new "
                      "input tokens of each later turn)")
    else:
        append = Dist(0.0, 0.0, 0.0, 0.0)
    pause = Dist(0.0, 0.0, 0.0, 0.0)
    if "pause" in g:
        pause = _pause(w, g["pause"][1], f"{path}.pause", duration_s)
    return SessionsSpec(count=count, rate_per_s=rate, arrival=arrival, turns_min=turns_min,
                        turns_max=turns_max, first=first, append=append, output=output,
                        pause=pause, line=node.start_mark.line + 1)


def _tokens(w: Walker, node: yaml.Node, path: str, lo: int) -> Dist:
    """Tokens: a number (fixed) or {mean, sigma, min, max} (a truncated log-normal)."""
    least = f"at least {lo} token" + ("s" if lo != 1 else "")
    if not isinstance(node, MappingNode):
        n = _int_tokens(w, node, path, lo, least)
        return Dist(float(n), 0.0, float(n), float(n))
    g = w.mapping(node, path, _DIST_KEYS, required=("mean",))
    mean = w.number(g["mean"][1], f"{path}.mean", -MAX_TOKENS, MAX_TOKENS,
                    "a mean token count", "mean")
    if mean < lo:
        raise w.error(g["mean"][1], f"{path}.mean", f"the mean must be {least}, got {mean:g}")
    sigma = _sigma(w, g, path)
    lo_t = _int_tokens(w, g["min"][1], f"{path}.min", lo, least) if "min" in g else lo
    hi_t = _int_tokens(w, g["max"][1], f"{path}.max", lo, least) if "max" in g \
        else min(max(int(mean * 8), lo_t), MAX_TOKENS)
    if not lo_t <= mean <= hi_t:
        raise w.error(node, path, f"mean {mean:g} is outside min..max ({lo_t}..{hi_t})")
    return Dist(float(mean), sigma, float(lo_t), float(hi_t))


def _int_tokens(w: Walker, node: yaml.Node, path: str, lo: int, least: str) -> int:
    n = w.integer(node, path, -MAX_TOKENS, MAX_TOKENS, "a token count", "tokens")
    if n < lo:
        raise w.error(node, path, f"{path.rpartition('sessions.')[2]} must be {least}, got {n}")
    return n


def _sigma(w: Walker, g: dict, path: str) -> float:
    if "sigma" not in g:
        return DEFAULT_SIGMA
    return w.number(g["sigma"][1], f"{path}.sigma", 0, 4, "a number", "sigma (of the log)")


def _pause(w: Walker, node: yaml.Node, path: str, duration_s: float | None) -> Dist:
    """A pause: a time (fixed) or {mean, sigma, min, max} of times; none longer than the run."""
    what = "a time such as 5s"

    def longer(value_node: yaml.Node, where: str, s: float, label: str) -> None:
        if duration_s is not None and s > duration_s:
            raise w.error(value_node, where, f"{label}{format_time(round(s * 1e9))} is a pause "
                          f"longer than the run (workload.duration "
                          f"{format_time(round(duration_s * 1e9))})")

    if not isinstance(node, MappingNode):
        s = _time_s(w, node, path, what)
        longer(node, path, s, "")
        return Dist(s, 0.0, s, s)
    g = w.mapping(node, path, _DIST_KEYS, required=("mean",))
    mean = _time_s(w, g["mean"][1], f"{path}.mean", what)
    sigma = _sigma(w, g, path)
    lo = _time_s(w, g["min"][1], f"{path}.min", what) if "min" in g else 0.0
    hi = _time_s(w, g["max"][1], f"{path}.max", what) if "max" in g \
        else min(max(mean * 8, lo), 86_400.0)
    if "min" in g:
        longer(g["min"][1], f"{path}.min", lo, "min ")
    elif sigma == 0:
        longer(g["mean"][1], f"{path}.mean", mean, "")
    if not lo <= mean <= hi:
        raise w.error(node, path, f"mean {format_time(round(mean * 1e9))} is outside min..max "
                      f"({format_time(round(lo * 1e9))}..{format_time(round(hi * 1e9))})")
    return Dist(mean, sigma, lo, hi)


def _trace(w: Walker, node: yaml.Node) -> TraceSpec:
    path = "workload.trace"
    if isinstance(node, ScalarNode) and not w.is_null(node):
        g = {"file": (node, node)}  # `trace: FILE` is `trace: {file: FILE}`
    else:
        g = w.mapping(node, path, _TRACE_KEYS, required=("file",))
    fnode = g["file"][1]
    written = w.text(fnode, f"{path}.file", "a file name")
    try:
        file = Path(written).expanduser()
        if not file.is_absolute():
            file = Path(w.source).parent / file
        file = file.resolve()
        found, regular = file.exists(), file.is_file()
    except (OSError, RuntimeError) as e:  # a name too long, a ~user that does not exist
        shown = written if len(written) <= 60 else f"{written[:60]}... ({len(written)} chars)"
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise w.error(fnode, f"{path}.file", f"cannot look for trace file '{shown}': "
                      f"{why}") from None
    if not found:
        raise w.error(fnode, f"{path}.file", f"no trace file '{written}' (looked for {file})")
    if not regular:
        raise w.error(fnode, f"{path}.file", f"'{written}' is not a file ({file})")
    start = _time_s(w, g["start"][1], f"{path}.start") if "start" in g else 0.0
    duration = None
    if "duration" in g:
        duration = _time_s(w, g["duration"][1], f"{path}.duration")
        if duration <= 0:
            raise w.error(g["duration"][1], f"{path}.duration", "the window must be above 0 "
                          "(leave it out to replay to the end)")
    speedup = _above_zero(w, g, "speedup", path, 1.0, 1e6, "a number above 0",
                          "2: replay twice as fast")
    sample = _above_zero(w, g, "sample", path, 1.0, 1, "a share in (0, 1]",
                         "the share of the window's requests kept; 1 keeps all")
    limit = None
    if "limit" in g:
        limit = w.integer(g["limit"][1], f"{path}.limit", 1, 10**9, "a request count",
                          "limit")
    sessions = w.boolean(g["sessions"][1], f"{path}.sessions") if "sessions" in g else False
    return TraceSpec(path=str(file), start_s=start, duration_s=duration, speedup=speedup,
                     sample=sample, limit=limit, sessions=sessions,
                     line=node.start_mark.line + 1)
