"""One handle on a built fabric: its plan and its state, whoever built it.

`open_fabric(topo)` plans the topology, works out every kind's daemons, builds it all
(`net.lifecycle.bring_up`) and hands back a `Fabric`; used as a context manager it takes the
fabric down on the way out (also after an error or Ctrl-C) unless told to keep it.
`attach_fabric(topo)` is the handle on a fabric of this topology that is already running
(`fabric up`), planned once from its recorded run id, so the runners never plan again.
Either way, what the fabric started is in its state's process table (the link engine, each
switch process and its role), which `fabric down` and the crash paths replay.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import FabricError

if TYPE_CHECKING:
    from ..net.lifecycle import FabricState
    from ..node.agent import AgentBook
    from ..plan import FabricPlan
    from ..topology.document import Topology

__all__ = ["Fabric", "attach_fabric", "build_fabric", "open_fabric", "remote_fabric"]


@dataclass
class Fabric:
    plan: FabricPlan
    state: FabricState
    owned: bool  # built through this handle (so closing it takes the fabric down)
    build_seconds: float = 0.0
    why: str = ""  # why its link backend was chosen
    agents: AgentBook | None = None  # nodes run by agents (`fabric run --agents`)
    remote: bool = False  # built elsewhere (containerlab): nothing here to take down

    @property
    def here(self) -> bool:
        """Whether this host built it (its namespaces, links and switch processes)."""
        return not self.remote

    @property
    def topology(self) -> Topology:
        return self.plan.topology

    def close(self) -> None:
        """Take the fabric down if this handle built it, else end this process's lease."""
        from ..net.lifecycle import release, remove_fabric

        if self.remote:
            return
        if self.owned:
            remove_fabric(self.state)
        else:
            release(self.state)


def build_fabric(topo: Topology, links: str = "auto", *,
                 progress: Callable[[int, int], None] | None = None, kept: bool = False,
                 say: Callable[[str], None] | None = None, engine_spin_ns: int | None = None,
                 ) -> Fabric:
    """Plan `topo` on the `links` backend, work out every kind's daemons (a file they would
    refuse fails here, before anything is built) and build it all; it stays up (`kept`: also
    after this process ends). A stale fabric of the name is removed first (`say` is told).
    `engine_spin_ns`: the userspace link engine busy-waits that long before each release
    (None: its default; `say` is told when the backend has no engine)."""
    from ..net.doctor import check_class_qdiscs, choose_backend
    from ..net.lifecycle import bring_up
    from ..plan import plan_fabric
    from . import daemons

    backend, why = choose_backend(links)
    plan = plan_fabric(topo, backend=backend)
    check_class_qdiscs(plan)
    specs = daemons(plan)
    t0 = time.monotonic()
    if engine_spin_ns and not plan.link_backend.engine and say is not None:
        say(f"--engine-spin: the {backend} backend has no userspace link engine; nothing spins")
    state = bring_up(plan, daemons=specs, progress=progress, kept=kept, say=say,
                     engine_spin_ns=engine_spin_ns)
    return Fabric(plan, state, owned=True, build_seconds=time.monotonic() - t0, why=why)


@contextmanager
def open_fabric(topo: Topology, links: str = "auto", *, keep: bool = False,
                progress: Callable[[int, int], None] | None = None) -> Iterator[Fabric]:
    """`build_fabric`, taken down again when the block ends unless `keep`."""
    fabric = build_fabric(topo, links, progress=progress)
    try:
        yield fabric
    finally:
        if not keep:
            fabric.close()


def attach_fabric(topo: Topology, *, within: int | None = None) -> Fabric | None:
    """The live fabric of `topo`'s name, leased for this process's run, or None (a stale one
    is left for `build_fabric` to remove). FabricError when another live process is running
    on it (unless that is `within`, the run this process helps), or when it was built from
    another version of the file (a run on it would not measure what the file says)."""
    from ..net.lifecycle import lease, release
    from ..plan import plan_fabric

    state = lease(topo.name, within=within)
    if state is None:
        return None
    if state.topology_sha256 and state.topology_sha256 != topo.sha256:
        release(state)
        raise FabricError(f"fabric {state.name} is running, built from a different version of "
                          f"this topology ({state.source}); `fabric down {state.name}` first, "
                          "so the run measures what the file describes")
    return Fabric(plan_fabric(topo, backend=state.backend, run_id=state.run_id), state,
                  owned=False)


def remote_fabric(topo: Topology, agents: AgentBook) -> Fabric:
    """The handle on a fabric built elsewhere (by containerlab from `fabric export`), whose
    nodes are reached only through their agents: the plan gives every node's addresses (the
    export wrote the same ones); nothing of it exists on this host, so there are no link
    counters or switch processes to read, and closing it removes nothing.

    The export writes the links in fabric time (containerlab runs in real time), so the run
    is measured with a time scale of 1: the figures are the wall clock's."""
    from dataclasses import replace

    from ..net.lifecycle import FabricState
    from ..plan import address_plan, new_run_id

    run_topo = replace(topo, time_scale=1.0)
    plan = replace(address_plan(run_topo), topology=run_topo, run_id=new_run_id())
    state = FabricState(
        name=topo.name, run_id=plan.run_id, backend="netem", source=topo.source,
        status="up", namespaces=[],
        nodes={n: {"netns": "", "loopback": p.loopback} for n, p in plan.nodes.items()},
        time_scale=1.0, topology_sha256=topo.sha256)
    why = "built elsewhere; nodes reached through agents"
    if topo.time_scale != 1:
        why += (f"; time_scale {topo.time_scale:g} not applied (the export writes the links "
                "in fabric time): figures are wall-clock")
    return Fabric(plan, state, owned=False, agents=agents, remote=True, why=why)
