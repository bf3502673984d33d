"""The `prfaas:` section: prefill-as-a-service across two clusters (PrfaaS seed).

```yaml
prfaas:
  model: prfaas-hybrid-1t      # or minimax-m2.5 (the dense counter-case)
  kv_scale: 10000              # KV bytes on the wire = real / kv_scale; write link rates / kv_scale
  local_prefill: [lp-0, lp-1]  # H20 prefill instances in the local PD cluster
  decode: [ld-0, ld-1]         # H20 decode instances (local)
  remote_prefill: [rp-0]       # H200 prefill instances in the remote cluster
  egress: [gw-local, gw-remote]  # the DCI link: its bytes are the egress
  threshold: 19400             # uncached tokens above which `threshold` offloads
  policies: [local, remote-all, threshold, adaptive]
  workload: {requests: 400, rate: 4/s, mean_tokens: 27000, sigma: 0.95, min_tokens: 1024,
             max_tokens: 131072, output_tokens: 1024, prefix_hit_rate: 0, seed: 1}
```

`kv_scale` keeps every transfer's duration (bytes / rate) while moving 1/N of the bytes, so
a host can carry GB-sized KV at 100 Gbps; reports multiply bytes and rates back and say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fabric.topology.traffic import _node_list, _rate

if TYPE_CHECKING:
    import yaml

    from fabric.topology.model import Link, Node
    from fabric.topology.walker import Walker

POLICY_NAMES = ("local", "remote-all", "threshold", "adaptive")
_KEYS = ("model", "kv_scale", "local_prefill", "decode", "remote_prefill", "egress",
         "threshold", "policies", "workload", "layouts")
_ROLES = ("local_prefill", "decode", "remote_prefill")
_WORKLOAD_KEYS = ("requests", "rate", "ttft_rate", "mean_tokens", "sigma", "min_tokens",
                  "max_tokens", "output_tokens", "prefix_hit_rate", "seed")


@dataclass(frozen=True)
class PrfaasWorkload:
    requests: int = 400
    rate_per_s: float = 4.0
    mean_tokens: float = 27_000
    sigma: float = 0.95
    min_tokens: int = 1_024
    max_tokens: int = 131_072
    output_tokens: int = 1_024
    prefix_hit_rate: float = 0.0
    seed: int = 1
    # a second pass at a load every layout sustains, for TTFT (None: no second pass)
    ttft_rate_per_s: float | None = None


@dataclass(frozen=True)
class PrfaasSpec:
    model: str
    kv_scale: int
    local_prefill: tuple[str, ...]
    decode: tuple[str, ...]
    remote_prefill: tuple[str, ...]
    egress: tuple[str, str]
    threshold: int
    policies: tuple[str, ...]
    workload: PrfaasWorkload
    # policy -> (local_prefill, decode, remote_prefill): a policy's own hardware, as the seed
    # compares equal GPU budgets laid out differently; policies not listed use the defaults
    layouts: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] | None = None
    line: int | None = None

    def layout(self, policy: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(local_prefill, decode, remote_prefill) nodes a policy runs on."""
        if self.layouts and policy in self.layouts:
            return self.layouts[policy]
        return self.local_prefill, self.decode, self.remote_prefill


def parse_prfaas(w: Walker, node: yaml.Node, nodes: dict[str, Node],
                 links: list[Link]) -> PrfaasSpec:
    from fabric.kv import MODELS
    from fabric.kv.prefill import PROFILES

    f = w.mapping(node, "prfaas", _KEYS, required=("decode", "egress"))
    model = "prfaas-hybrid-1t"
    if "model" in f:
        model = w.text(f["model"][1], "prfaas.model")
        if model not in MODELS or model not in PROFILES:
            raise w.error(f["model"][1], "prfaas.model", f"no prefill profile for '{model}' "
                          f"(models with one: {', '.join(sorted(PROFILES))})")
    kv_scale = w.integer(f["kv_scale"][1], "prfaas.kv_scale", 1, 10**9, "a divisor >= 1",
                         "kv_scale") if "kv_scale" in f else 1
    groups = {key: (_node_list(w, f[key][1], f"prfaas.{key}", nodes) if key in f and
                    w.sequence(f[key][1], f"prfaas.{key}") else ())
              for key in _ROLES}
    seen: dict[str, str] = {}
    for key, names in groups.items():
        for n in names:
            if n in seen:
                raise w.error(f[key][1], f"prfaas.{key}", f"node '{n}' is already in "
                              f"prfaas.{seen[n]}: an instance has one role")
            seen[n] = key
    eg = w.sequence(f["egress"][1], "prfaas.egress")
    if len(eg) != 2:
        raise w.error(f["egress"][1], "prfaas.egress", "name the egress link by its two "
                      "endpoints, e.g. [gw-local, gw-remote]")
    ends = tuple(w.text(x, "prfaas.egress", "a node name") for x in eg)
    if not any({lk.a, lk.b} == set(ends) for lk in links):
        raise w.error(f["egress"][1], "prfaas.egress", f"no link joins '{ends[0]}' and "
                      f"'{ends[1]}'")
    threshold = w.integer(f["threshold"][1], "prfaas.threshold", 1, 10**7, "tokens",
                          "threshold") if "threshold" in f else 19_400
    policies: tuple[str, ...] = POLICY_NAMES
    if "policies" in f:
        items = w.sequence(f["policies"][1], "prfaas.policies")
        policies = tuple(w.choice(x, "prfaas.policies", POLICY_NAMES, "policy") for x in items)
    workload = PrfaasWorkload()
    if "workload" in f:
        workload = _workload(w, f["workload"][1])
    layouts = None
    if "layouts" in f:
        layouts = {}
        lf = w.mapping(f["layouts"][1], "prfaas.layouts", POLICY_NAMES)
        for policy, (_, body) in lf.items():
            path = f"prfaas.layouts.{policy}"
            g = w.mapping(body, path, _ROLES)
            roles = []
            for role in _ROLES:
                if role not in g:
                    roles.append(groups[role])
                elif not w.sequence(g[role][1], f"{path}.{role}"):
                    roles.append(())  # an empty list: this policy has none of them
                else:
                    roles.append(_node_list(w, g[role][1], f"{path}.{role}", nodes))
            if not roles[1] or not (roles[0] or roles[2]):
                raise w.error(body, path, "a layout needs decode nodes and some prefill nodes")
            layouts[policy] = (roles[0], roles[1], roles[2])
    return PrfaasSpec(model=model, kv_scale=kv_scale, local_prefill=groups["local_prefill"],
                      decode=groups["decode"], remote_prefill=groups["remote_prefill"],
                      egress=(ends[0], ends[1]), threshold=threshold, policies=policies,
                      workload=workload, layouts=layouts, line=node.start_mark.line + 1)


def _workload(w: Walker, node: yaml.Node) -> PrfaasWorkload:
    f = w.mapping(node, "prfaas.workload", _WORKLOAD_KEYS)
    kw: dict = {}
    ints = {"requests": (1, 100_000), "min_tokens": (1, 10**7), "max_tokens": (1, 10**7),
            "output_tokens": (1, 10**6), "seed": (0, 2**32)}
    for key, (lo, hi) in ints.items():
        if key in f:
            kw[key] = w.integer(f[key][1], f"prfaas.workload.{key}", lo, hi, "an integer", key)
    floats: dict[str, tuple[float, float]] = {"mean_tokens": (1, 1e7), "sigma": (0, 4),
                                              "prefix_hit_rate": (0, 1)}
    for key, (flo, fhi) in floats.items():
        if key in f:
            v = w.scalar(f[key][1], f"prfaas.workload.{key}", "a number")
            if not isinstance(v, int | float) or isinstance(v, bool) or not flo <= v <= fhi:
                raise w.error(f[key][1], f"prfaas.workload.{key}", f"expected a number in "
                              f"{flo:g}..{fhi:g}")
            kw[key] = float(v)
    if "rate" in f:
        kw["rate_per_s"] = _rate(w, f["rate"][1], "prfaas.workload.rate")
    if "ttft_rate" in f:
        kw["ttft_rate_per_s"] = _rate(w, f["ttft_rate"][1], "prfaas.workload.ttft_rate")
    return PrfaasWorkload(**kw)
