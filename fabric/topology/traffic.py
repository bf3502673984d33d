"""The `traffic:` section of a topology file: flows of KV transfers, parsed and validated.

Times here are fabric time (as written); `fabric.traffic` turns flows into a schedule of
transfers and the runner scales it by `time_scale`.

```yaml
traffic:
  seed: 7                      # content and arrival randomness
  model: llama-3.1-8b          # default KV model for flows
  chunk: 1MiB                  # default chunk size
  flows:
    - pattern: pd              # one-to-one | incast | all-to-all | pd | bulk
      from: [host-0, host-1]   # prefill nodes (senders)
      to: host-3               # decode node(s) (receivers)
      class: kv                # a traffic class name (DSCP on the sockets)
      transport: tcp           # tcp | udp
      requests: 8
      rate: 20/s               # pd: Poisson arrivals, fabric time (arrival: fixed for a clock)
      prompt: {mean: 4096, sigma: 0.5, min: 256, max: 16384}  # tokens, truncated log-normal
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from yaml.nodes import ScalarNode

from fabric.units import parse_size, parse_time

if TYPE_CHECKING:
    import yaml

    from fabric.topology.model import Node, TrafficClass
    from fabric.topology.walker import Walker

PATTERNS = ("one-to-one", "incast", "all-to-all", "pd", "bulk")
TRANSPORTS = ("tcp", "udp", "roce")
ARRIVALS = ("poisson", "fixed")
_TRAFFIC_KEYS = ("seed", "model", "chunk", "flows")
_FLOW_KEYS = ("name", "pattern", "from", "to", "class", "transport", "model", "tokens",
              "prompt", "requests", "rate", "arrival", "size", "start", "chunk")
_PROMPT_KEYS = ("mean", "sigma", "min", "max")
DEFAULT_CHUNK = 1 << 20
MAX_TOKENS = 10_000_000  # ten times the longest context any model here takes
RATE_MIN, RATE_MAX = 1 / 86_400, 1e6  # request arrivals per fabric second


@dataclass(frozen=True)
class PromptDist:
    """Prompt lengths in tokens: log-normal with this mean and sigma, truncated to [min, max]."""

    mean: float
    sigma: float
    min: int
    max: int


@dataclass(frozen=True)
class Flow:
    name: str
    pattern: str
    src: tuple[str, ...]
    dst: tuple[str, ...]
    cls: str
    transport: str
    model: str
    tokens: int | None  # fixed tokens per request (None: drawn from `prompt`)
    prompt: PromptDist | None
    requests: int
    rate_per_s: float | None  # open-loop arrivals per fabric second; None = back to back
    arrival: str
    size_bytes: int | None  # bulk: bytes to move
    start_ns: int
    chunk_bytes: int
    line: int | None = None


@dataclass(frozen=True)
class Traffic:
    seed: int
    flows: tuple[Flow, ...]
    line: int | None = None  # of the `traffic:` key


def parse_traffic(w: Walker, node: yaml.Node, nodes: dict[str, Node],
                  classes: tuple[TrafficClass, ...]) -> Traffic:
    """Validate the `traffic:` mapping; every error names its line and key."""
    from fabric.kv import MODELS

    f = w.mapping(node, "traffic", _TRAFFIC_KEYS, required=("flows",))
    seed = w.integer(f["seed"][1], "traffic.seed", 0) if "seed" in f else 1
    default_model = "llama-3.1-8b"
    if "model" in f:
        default_model = _model(w, f["model"][1], "traffic.model", MODELS)
    default_chunk = DEFAULT_CHUNK
    if "chunk" in f:
        default_chunk = _chunk(w, f["chunk"][1], "traffic.chunk")
    class_names = [c.name for c in classes]
    flows: list[Flow] = []
    names: dict[str, int] = {}
    items = w.sequence(f["flows"][1], "traffic.flows")
    if not items:
        raise w.error(f["flows"][1], "traffic.flows", "no flows: add at least one")
    for i, item in enumerate(items):
        path = f"traffic.flows[{i}]"
        g = w.mapping(item, path, _FLOW_KEYS, required=("pattern", "from"))
        line = item.start_mark.line + 1
        pattern = w.choice(g["pattern"][1], f"{path}.pattern", PATTERNS, "pattern")
        name = f"{pattern}-{i}"
        if "name" in g:
            name = w.name(g["name"][1], f"{path}.name", "flow name")
        if name in names:
            raise w.error(item, f"{path}.name", f"duplicate flow name '{name}' (first at line "
                          f"{names[name]}); name flows with `name:`")
        names[name] = line
        src = _node_list(w, g["from"][1], f"{path}.from", nodes)
        dst = _node_list(w, g["to"][1], f"{path}.to", nodes) if "to" in g else ()
        _check_ends(w, item, path, pattern, src, dst)
        cls = class_names[0]
        if "class" in g:
            cls = w.text(g["class"][1], f"{path}.class")
            if cls not in class_names:
                raise w.error(g["class"][1], f"{path}.class", f"unknown traffic class '{cls}' "
                              f"(classes: {', '.join(class_names)})")
        transport = "tcp"
        if "transport" in g:
            transport = w.choice(g["transport"][1], f"{path}.transport", TRANSPORTS,
                                 "transport")
        model = _model(w, g["model"][1], f"{path}.model", MODELS) if "model" in g \
            else default_model
        tokens = None
        prompt = None
        size = None
        if pattern == "bulk":
            for key in ("tokens", "prompt", "model"):
                if key in g:
                    raise w.error(g[key][0], f"{path}.{key}", "a bulk flow moves `size:` bytes, "
                                  "not KV")
            if "size" not in g:
                raise w.error(item, path, "a bulk flow needs `size:` (bytes per transfer, "
                              "e.g. 64MiB)")
            size = w.unit(g["size"][1], f"{path}.size", parse_size, "a size such as 64MiB")
            if size <= 0:
                raise w.error(g["size"][1], f"{path}.size", "size must be above 0")
        else:
            if "size" in g:
                raise w.error(g["size"][0], f"{path}.size", "`size:` is for bulk flows; KV "
                              "flows take `tokens:` or `prompt:`")
            if ("tokens" in g) == ("prompt" in g):
                raise w.error(item, path, "a KV flow needs exactly one of `tokens:` (fixed) or "
                              "`prompt:` (a distribution)")
            if "tokens" in g:
                tokens = w.integer(g["tokens"][1], f"{path}.tokens", 1, MAX_TOKENS,
                                   "a token count", "tokens")
            else:
                prompt = _prompt(w, g["prompt"][1], f"{path}.prompt")
        requests = 1
        if "requests" in g:
            requests = w.integer(g["requests"][1], f"{path}.requests", 1, 1_000_000,
                                 "a count", "requests")
        rate = None
        if "rate" in g:
            rate = _rate(w, g["rate"][1], f"{path}.rate")
        elif pattern == "pd":
            raise w.error(item, path, "a pd flow needs `rate:` (request arrivals, e.g. 10/s)")
        arrival = "poisson"
        if "arrival" in g:
            arrival = w.choice(g["arrival"][1], f"{path}.arrival", ARRIVALS, "arrival process")
            if rate is None:
                raise w.error(g["arrival"][0], f"{path}.arrival", "`arrival:` needs `rate:`")
        start = w.unit(g["start"][1], f"{path}.start", parse_time, "a time") if "start" in g \
            else 0
        chunk = _chunk(w, g["chunk"][1], f"{path}.chunk") if "chunk" in g else default_chunk
        flows.append(Flow(name=name, pattern=pattern, src=src, dst=dst, cls=cls,
                          transport=transport, model=model, tokens=tokens, prompt=prompt,
                          requests=requests, rate_per_s=rate, arrival=arrival, size_bytes=size,
                          start_ns=start, chunk_bytes=chunk, line=line))
    return Traffic(seed=seed, flows=tuple(flows))


def _model(w: Walker, node: yaml.Node, path: str, models: dict) -> str:
    name = w.text(node, path, "a model name")
    if name not in models:
        raise w.error(node, path, f"unknown model '{name}' (known: {', '.join(sorted(models))})")
    return name


def _chunk(w: Walker, node: yaml.Node, path: str) -> int:
    size = w.unit(node, path, parse_size, "a size such as 1MiB")
    if not 4096 <= size <= 256 << 20:
        raise w.error(node, path, f"chunk size {size} B is outside 4 KiB..256 MiB")
    return size


def _node_list(w: Walker, node: yaml.Node, path: str, nodes: dict[str, Node]) -> tuple[str, ...]:
    items = [node] if isinstance(node, ScalarNode) else w.sequence(node, path)
    out = []
    for i, item in enumerate(items):
        where = path if isinstance(node, ScalarNode) else f"{path}[{i}]"
        name = w.text(item, where, "a node name")
        if name not in nodes:
            raise w.error(item, where, f"unknown node '{name}'")
        if nodes[name].kind != "host":
            raise w.error(item, where, f"node '{name}' is a {nodes[name].kind}: traffic runs "
                          "between hosts")
        if name in out:
            raise w.error(item, where, f"node '{name}' is listed twice")
        out.append(name)
    if not out:
        raise w.error(node, path, "no nodes listed")
    return tuple(out)


def _check_ends(w: Walker, item: yaml.Node, path: str, pattern: str, src: tuple[str, ...],
                dst: tuple[str, ...]) -> None:
    if pattern == "all-to-all":
        if dst:
            raise w.error(item, f"{path}.to", "all-to-all takes only `from:` (every listed node "
                          "sends to every other)")
        if len(src) < 2:
            raise w.error(item, f"{path}.from", "all-to-all needs at least two nodes")
        return
    if not dst:
        raise w.error(item, path, f"a {pattern} flow needs `to:`")
    if pattern in ("one-to-one", "bulk") and (len(src) != 1 or len(dst) != 1):
        raise w.error(item, path, f"a {pattern} flow has one `from:` node and one `to:` node")
    if pattern == "incast" and (len(src) < 2 or len(dst) != 1):
        raise w.error(item, path, "an incast flow has two or more `from:` nodes and one `to:`")
    both = set(src) & set(dst)
    if both:
        raise w.error(item, path, f"node '{sorted(both)[0]}' is both sender and receiver")


def _prompt(w: Walker, node: yaml.Node, path: str) -> PromptDist:
    f = w.mapping(node, path, _PROMPT_KEYS, required=("mean",))
    mean = w.number(f["mean"][1], f"{path}.mean", 1, MAX_TOKENS,
                    "a mean prompt length in tokens", "mean")
    sigma = 0.5
    if "sigma" in f:
        sigma = w.number(f["sigma"][1], f"{path}.sigma", 0, 4, "a number",
                         "sigma (of the log)")
    lo = w.integer(f["min"][1], f"{path}.min", 1, MAX_TOKENS, label="min") if "min" in f else 1
    hi = w.integer(f["max"][1], f"{path}.max", 1, MAX_TOKENS, label="max") if "max" in f \
        else min(max(int(mean * 8), lo), MAX_TOKENS)
    if not lo <= mean <= hi:
        raise w.error(node, path, f"mean {mean:g} is outside min..max ({lo}..{hi})")
    return PromptDist(mean=float(mean), sigma=float(sigma), min=lo, max=hi)


def _rate(w: Walker, node: yaml.Node, path: str) -> float:
    value = w.scalar(node, path, "a rate such as 10/s")
    text = str(value).strip().replace(" ", "")
    per = 1.0
    for suffix, seconds in (("/s", 1.0), ("/ms", 1e-3), ("/min", 60.0)):
        if text.endswith(suffix):
            text, per = text[: -len(suffix)], seconds
            break
    else:
        raise w.error(node, path, f"bad rate '{value}': write requests per time, e.g. 10/s")
    try:
        n = float(text)
    except ValueError:
        raise w.error(node, path, f"bad rate '{value}': write requests per time, e.g. 10/s") \
            from None
    if not math.isfinite(n) or n <= 0:
        raise w.error(node, path, f"bad rate '{value}': the rate must be a number above 0")
    if not RATE_MIN <= n / per <= RATE_MAX:
        raise w.error(node, path, f"rate {n / per:g}/s is outside {RATE_MIN:g}/s.."
                      f"{RATE_MAX:g}/s (one request a day to a million a second)")
    return n / per


def check_reachable(traffic: Traffic, links: list, source: str) -> None:
    """Every flow's senders must reach its receivers over the links (else it would hang)."""
    from fabric.errors import TopologyError
    from fabric.topology.graph import adjacency, search

    adj = adjacency(links)

    def reach(start: str) -> set[str]:
        return set(search(start, lambda n: adj.get(n, ())).hops)

    for i, flow in enumerate(traffic.flows):
        dsts = flow.dst or flow.src
        for src in flow.src:
            reachable = reach(src)
            for dst in dsts:
                if dst != src and dst not in reachable:
                    raise TopologyError(f"flow '{flow.name}': {src} cannot reach {dst}: no "
                                        "path of links joins them", file=source,
                                        line=flow.line, key=f"traffic.flows[{i}]")
