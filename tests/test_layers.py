"""The house plan (docs/architecture.md) as a test: every import inside `fabric` runs from a
layer down to the same layer or a lower one, and the topology layer is data only. Read from
the source (imports under TYPE_CHECKING count too), nothing is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fabric"

# bottom to top; a module belongs to the last layer one of whose patterns matches its name
# (relative to `fabric.`), so `switch.node` is a process although `switch.*` is pure
LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["errors", "units"]),
    ("pure", [r"kv(\..*)?", r"wire(\..*)?", r"cc(\..*)?", r"topology(\..*)?",
              r"schedule(\..*)?", r"metrics(\..*)?", r"testing(\..*)?", r"roce(\..*)?",
              r"switch(\..*)?", r"memsw(\..*)?", r"prfaas(\..*)?", "lpu", "linkmodel",
              "traffic", "plan", "checks", r"export(\..*)?", r"explain(\..*)?",
              r"workload(\..*)?"]),
    ("host", [r"net(\..*)?"]),
    ("process", [r"node(\..*)?", "switch.node", r"memsw\.(node|endpoint|deploy)",
                 "lpu.executor"]),
    ("run", [r"run(\..*)?"]),
    ("kinds", [r"kinds(\..*)?", r"lessons(\..*)?"]),
    ("cli", ["cli", "__main__", "entry"]),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(name: str) -> int:
    found = [i for i, (_, patterns) in enumerate(LAYERS)
             if any(re.fullmatch(p, name) for p in patterns)]
    assert found, f"fabric.{name} is in no layer: add it to LAYERS (and docs/architecture.md)"
    return found[-1]


def _imports(name: str, path: Path | None = None) -> set[str]:
    """The `fabric` modules `name` (read from `path`, by default its file) imports; a name
    imported from a package counts as the module when there is one by that name."""
    path = path or MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[: len(package) - (node.level - 1)]
                base = ".".join(["fabric", *up, *([base] if base else [])])
            # `from PKG import mod` imports PKG.mod; `from PKG import name` imports PKG
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}"[len("fabric."):] in MODULES
                       else base for a in node.names]
        for t in targets:
            if not t.startswith("fabric."):
                continue
            t = t[len("fabric."):]
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        if name:
            _layer(name)


def test_imports_run_down_the_layers() -> None:
    up = []
    for name in MODULES:
        if not name:
            continue
        for target in sorted(_imports(name)):
            if _layer(target) > _layer(name):
                up.append(f"fabric.{name} ({LAYERS[_layer(name)][0]}) imports fabric.{target} "
                          f"({LAYERS[_layer(target)][0]})")
    assert up == []


def test_topology_is_data_only() -> None:
    """Loading a file pulls in no runtime core: the schema names only units, errors and the
    KV model data; the kinds check what the cores need (`fabric.kinds.load`)."""
    allowed = re.compile(r"errors|units|kv(\..*)?|topology(\..*)?")
    for name in MODULES:
        if name.startswith("topology"):
            assert {t for t in _imports(name) if not allowed.fullmatch(t)} == set(), name


def test_no_import_loops() -> None:
    graph = {name: _imports(name) for name in MODULES if name}
    state: dict[str, int] = {}
    loops: list[list[str]] = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                loops.append([*stack[stack.index(m):], m] if m in stack else [n, m])
            elif m not in state:
                visit(m, [*stack, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert loops == []


def test_the_check_sees_upward_imports(tmp_path: Path) -> None:
    """The check itself: absolute, relative and type-only imports of a higher layer are
    read, and each lands on its layer."""
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\n"
                   "from fabric.cli import main\n"
                   "from ..net import lifecycle\n"
                   "if TYPE_CHECKING:\n"
                   "    from ..run.traffic import run_traffic\n")
    found = _imports("topology.bad", bad)
    assert found == {"cli", "net.lifecycle", "run.traffic"}
    assert all(_layer(t) > _layer("topology.loader") for t in found)
    assert _layer("switch.node") > _layer("switch.core")
    assert _layer("memsw.deploy") > _layer("memsw.ops")
