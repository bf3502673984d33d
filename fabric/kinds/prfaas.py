"""PrfaaS: prefill offloaded across a shaped egress link, per routing policy."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import FabricError
from .base import Kind, RunContext, RunOption

POLICY_OPTION = RunOption(
    "--policy", "policies",
    "prfaas and workload files: comma list of policies (prfaas: local, remote-all, threshold, "
    "adaptive; workload: pd, ppd, ppd/pin, ppd/ttl, ppd/evict); default: the file's.")


class PrfaasKind(Kind):
    name = "prfaas"
    title = "a PrfaaS run"
    result_file = "prfaas.json"
    describes = ("A file with a `prfaas:` section offloads long prefills across its egress "
                 "link under each routing policy (--policy) and compares throughput and TTFT.")
    options = (POLICY_OPTION,)

    def refuse(self, topo: Any, options: Mapping[str, Any]) -> None:  # noqa: ANN401
        policies = options.get("policies")
        if not policies:
            return
        from ..topology.prfaas import POLICY_NAMES

        if topo.prfaas is None:
            if topo.workload is None:
                raise FabricError(f"--policy is for files with a prfaas: or a workload: "
                                  f"section ({topo.source})")
            return
        for p in policies.split(","):
            if p not in POLICY_NAMES:
                raise FabricError(f"--policy: unknown policy '{p}' (one of: "
                                  f"{', '.join(POLICY_NAMES)})")

    def applies(self, topo: Any, options: Mapping[str, Any]) -> bool:  # noqa: ANN401
        return topo.prfaas is not None

    def prepare(self, topo: Any, options: Mapping[str, Any]) -> list[str]:  # noqa: ANN401
        policies = options.get("policies")
        return policies.split(",") if policies else list(topo.prfaas.policies)

    def run(self, ctx: RunContext) -> None:
        from ..run.prfaas import render, run_prfaas

        runs = run_prfaas(ctx.state, ctx.topo, ctx.prepared, ctx.out_dir, progress=ctx.say)
        ctx.out(render(runs, ctx.topo))
        ctx.out(f"wrote {ctx.out_dir}/ (prfaas.json, prfaas.png)")
        errors = [e for r in runs for e in r.errors]
        if any(r.chunks_bad for r in runs):
            errors.append("corrupt KV chunks (see the integrity line)")
        if errors:
            raise FabricError("; ".join(errors))

    def report(self, d: Path, out: Callable[[str], None]) -> None:
        from ..metrics.report import format_table

        data = json.loads((d / self.result_file).read_text())
        header = ["policy", "offered/s", "req/s", "TTFT mean s", "TTFT P90 s", "offload %",
                  "egress Gb/s", "peak Gb/s"]
        rows = [[r["policy"], f"{r['offered_rps']:g}", f"{r['throughput_rps']:.3f}",
                 f"{r['mean_ttft_s']:.2f}", f"{r['p90_ttft_s']:.2f}",
                 f"{100 * r['offloaded_fraction']:.1f}", f"{r['egress_mean_gbps']:.2f}",
                 f"{r['egress_peak_gbps']:.2f}"] for r in data["runs"]]
        out(f"{data['model']}: kv_scale {data['kv_scale']}, time_scale "
            f"{data['time_scale']:g}; fabric time and bytes. Measured on the fabric: egress "
            "(the link's counters) and the KV arrival times; computed from them by the model: "
            "req/s, TTFT, offload\n" + format_table(rows, header))
