"""Export a topology file to an engine users already run at scale: containerlab (containers
on one host, on several through VXLAN, or on Kubernetes through clabernetes) and the HPCC ns-3
simulator.

An exporter is pure: it reads the loaded topology (and its plan, for names and addresses) and
returns the files to write plus a warning for every setting the target cannot express, which
is never dropped silently. `write_export` puts the files in a directory. To add a target: a
module in this package with `export(topo, options) -> Export`, and one line in `TARGETS`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FabricError
from ..topology.document import Topology

__all__ = ["TARGETS", "Export", "ExportOptions", "export_topology", "write_export"]

# target name -> (module, what it writes): `fabric export --help` lists them
TARGETS: dict[str, tuple[str, str]] = {
    "containerlab": ("fabric.export.containerlab",
                     "a containerlab topology per host, a netem script for the impairments, "
                     "the node image's Dockerfile, agents.json and a README"),
    "hpcc-ns3": ("fabric.export.hpcc",
                 "the HPCC ns-3 simulator's topology.txt, flow.txt and config.txt"),
}


@dataclass(frozen=True)
class ExportOptions:
    """What the command line adds to the file: the hosts to spread the nodes over (an even
    split, or a placement file naming each node's host)."""

    hosts: int = 1
    placement: Path | None = None
    command_file: str = ""  # the topology file as the user named it (for generated commands)


@dataclass
class Export:
    target: str
    files: dict[str, str] = field(default_factory=dict)  # path in the directory -> text
    executable: set[str] = field(default_factory=set)  # which of them are scripts
    private: set[str] = field(default_factory=set)  # readable by their owner only (keys)
    warnings: list[str] = field(default_factory=list)  # settings the target cannot express


def export_topology(topo: Topology, target: str, options: ExportOptions) -> Export:
    """`topo` as the files of `target`; FabricError for a target that does not exist."""
    if target not in TARGETS:
        raise FabricError(f"unknown export target {target!r} (choose: {', '.join(TARGETS)})")
    module = importlib.import_module(TARGETS[target][0])
    exporter: Callable[[Topology, ExportOptions], Export] = module.export
    return exporter(topo, options)


def write_export(result: Export, out: Path) -> list[Path]:
    """Write the files under `out` (made if missing); a directory that already holds any
    file is refused, so an export never mixes with an older one. Returns the paths."""
    if out.exists() and not out.is_dir():
        raise FabricError(f"{out} is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise FabricError(f"{out} is not empty: choose another --out or remove it")
    written: list[Path] = []
    try:
        for rel, text in sorted(result.files.items()):
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o600 if rel in result.private else 0o755 if rel in result.executable \
                else 0o644
            # made with its mode: a key is never readable by others, not even for a moment
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            written.append(path)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(path, mode)  # whatever the umask took away from a script
    except (OSError, UnicodeError) as e:
        for path in written:
            path.unlink(missing_ok=True)
        raise FabricError(f"cannot write {out}: {getattr(e, 'strerror', None) or e}") from None
    return written
