"""Agentic sessions and replayed traces: prefix-cache reuse, PD against PPD, KV retention."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FabricError, TopologyError
from .base import Kind, RunContext
from .prfaas import POLICY_OPTION


@dataclass(frozen=True)
class Prepared:
    """What `prepare` worked out before anything is built: the variants to run, and the
    workload's turns and where they came from (`run.workload.build_turns`)."""

    variants: list[str]
    turns: list[Any]
    info: dict[str, Any]


class WorkloadKind(Kind):
    name = "workload"
    title = "a workload run"
    result_file = "workload.json"
    describes = ("A file with a `workload:` section replays a request trace or agentic sessions "
                 "over its prefill and decode nodes, under each policy (pd, ppd/pin, ppd/ttl, "
                 "ppd/evict; --policy), moving only the KV blocks a decode node lacks.")
    options = (POLICY_OPTION,)

    def refuse(self, topo: Any, options: Mapping[str, Any]) -> None:  # noqa: ANN401
        spec = topo.workload
        if spec is None:
            return
        for other in ("prfaas", "memory", "lpu"):
            if getattr(topo, other) is not None:
                raise TopologyError(f"a file runs one kind of run: a workload section and a "
                                    f"{other} section cannot share it", file=topo.source,
                                    line=spec.line, key="workload")
        chosen = options.get("policies")
        if chosen:
            known = spec.variants(("pd", "ppd"))
            for v in chosen.split(","):
                if v not in known and v != "ppd":
                    raise FabricError(f"--policy: unknown policy '{v}' for a workload file "
                                      f"(one of: {', '.join(known)}, or ppd for every "
                                      "retention)")

    def applies(self, topo: Any, options: Mapping[str, Any]) -> bool:  # noqa: ANN401
        return topo.workload is not None

    def prepare(self, topo: Any, options: Mapping[str, Any]) -> Prepared:  # noqa: ANN401
        from ..run.workload import build_turns

        # the trace is read and the sessions drawn here, before anything is built: a bad
        # line fails now, and the run uses these turns
        turns, info = build_turns(topo)
        chosen = options.get("policies")
        spec = topo.workload
        if not chosen:
            return Prepared(spec.variants(), turns, info)
        out: list[str] = []
        for v in chosen.split(","):
            out.extend(spec.variants(("ppd",)) if v == "ppd" else [v])
        return Prepared(list(dict.fromkeys(out)), turns, info)

    def check_lines(self, topo: Any, plan: Any) -> list[str]:  # noqa: ANN401
        spec = topo.workload
        if spec is None:
            return []
        from ..run.workload import build_turns

        turns, info = build_turns(topo)
        what = (f"{spec.sessions.count} sessions" if spec.sessions is not None
                else f"trace {Path(spec.trace.path).name} ({info['requests']} requests)")
        lines = [f"workload: {what} of {spec.model}, {len(turns)} turns, prefill "
                 f"{', '.join(spec.prefill)}, decode {', '.join(spec.decode)}"
                 + (f", store {spec.store}" if spec.store else "")
                 + f"; variants {', '.join(spec.variants())}"]
        if info.get("warning"):
            lines.append(f"warning: {info['warning']}")
        return lines

    def run(self, ctx: RunContext) -> None:
        from ..run.workload import render, run_workload

        prepared: Prepared = ctx.prepared
        data = run_workload(ctx.state, ctx.topo, prepared.variants, ctx.out_dir,
                            timeout=ctx.timeout, progress=ctx.say,
                            built=(prepared.turns, prepared.info))
        ctx.out(render(data))
        ctx.out(f"wrote {ctx.out_dir}/ (workload.json, workload.png)")
        errors = [e for r in data["runs"] for e in r["errors"]]
        if any(r["chunks_bad"] for r in data["runs"]):
            errors.append("corrupt KV chunks (see the integrity line)")
        if errors:
            raise FabricError("; ".join(errors))

    def report(self, d: Path, out: Callable[[str], None]) -> None:
        from ..run.workload import plot, render

        data = json.loads((d / self.result_file).read_text())
        out(render(data))
        plot(data, d / "workload.png")
