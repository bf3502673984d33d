"""Bring a fabric up and down, find and remove leftovers.

Ownership: every namespace is named `fab.<fabric>.<run_id>.<node>` and a state directory
`/run/fabric/<fabric>/` records the run id, the namespaces, the link engine's pid and the
orchestrator's pid. The state is written *before* the first kernel object is created, so a
killed `fabric up` leaves a trail the next `fabric up`/`fabric down` follows. Removal goes by
recorded names and by the run id, never by a broad pattern: `down --all` removes only
namespaces whose names parse as ours.

`/run` is a tmpfs, like the namespaces it describes: both vanish at reboot together.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FabricStateError
from ..plan import FabricPlan, parse_netns_name
from .daemon import DaemonSpec, alive, spawn_daemon, stop_process
from .kernel import NETNS_ETC_DIR, NETNS_RUN_DIR, Kernel

STATE_ROOT = Path(os.environ.get("FABRIC_STATE_DIR", "/run/fabric"))


@dataclass
class FabricState:
    name: str
    run_id: str
    backend: str
    source: str
    status: str  # "building" | "up"
    namespaces: list[str]
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {netns, loopback}
    # link id -> {"a": [netns, dev], "b": [netns, dev]}: where each link's counters live
    links: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    orchestrator_pid: int = 0
    engine_pid: int | None = None
    switch_pids: dict[str, int] = field(default_factory=dict)  # switch node -> pid
    switch_roles: dict[str, str] = field(default_factory=dict)  # switch node -> its role
    time_scale: float = 1.0
    created: float = 0.0
    topology_sha256: str = ""  # of the file the fabric was built from

    @property
    def dir(self) -> Path:
        return STATE_ROOT / self.name

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(self.dir / "state.json")

    @classmethod
    def load(cls, name: str) -> FabricState | None:
        try:
            data = json.loads((STATE_ROOT / name / "state.json").read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (json.JSONDecodeError, TypeError):
            return None
        return cls(**data)

    def netns_of(self, node: str) -> str:
        try:
            return self.nodes[node]["netns"]
        except KeyError:
            known = ", ".join(self.nodes) or "none"
            raise FabricStateError(f"fabric {self.name} has no node {node!r} "
                                   f"(nodes: {known})") from None


def list_states() -> list[FabricState]:
    if not STATE_ROOT.is_dir():
        return []
    out = []
    for d in sorted(STATE_ROOT.iterdir()):
        st = FabricState.load(d.name)
        if st is not None:
            out.append(st)
    return out





def running(name: str) -> FabricState | None:
    """The fabric's state if it is up (or being built by a live orchestrator)."""
    st = FabricState.load(name)
    if st is None:
        return None
    if st.status == "up" or alive(st.orchestrator_pid):
        return st
    return None


def resolve(name: str | None, how: str = "--fabric NAME") -> FabricState:
    """The fabric a command means: the one named, or the only one running."""
    if name is not None:
        st = running(name)
        if st is None:
            raise FabricStateError(f"fabric {name!r} is not running (see `fabric status`)")
        return st
    states = [s for s in list_states() if s.status == "up"]
    if not states:
        raise FabricStateError("no fabric is running (start one with `fabric up FILE`)")
    if len(states) > 1:
        names = ", ".join(s.name for s in states)
        raise FabricStateError(f"several fabrics are running ({names}): name one with {how}")
    return states[0]


# ---- up -----------------------------------------------------------------------------------


Progress = Callable[[int, int], None]


def bring_up(plan: FabricPlan, *, daemons: Sequence[DaemonSpec] = (),
             progress: Progress | None = None) -> FabricState:
    """Build `plan` in the kernel, start the link engine, the RoCE switches and the kinds'
    `daemons` (`fabric.kinds.daemons(plan)`: the memory switches). On any failure, undo all
    of it."""
    existing = FabricState.load(plan.name)
    if existing is not None:
        if existing.status == "up" or alive(existing.orchestrator_pid):
            raise FabricStateError(
                f"fabric {plan.name!r} is already running (run {existing.run_id}); "
                f"`fabric down {plan.name}` first")
        remove_fabric(existing)  # leftovers of a crashed run
    remove_orphans(plan.name)

    state = FabricState(
        name=plan.name, run_id=plan.run_id, backend=plan.backend, source=plan.topology.source,
        status="building", namespaces=plan.namespaces,
        nodes={n.name: {"netns": n.netns, "loopback": n.loopback, "kind": n.kind}
               for n in plan.nodes.values()},
        links={lp.name: {"a": [lp.a.netns, lp.a.dev], "b": [lp.b.netns, lp.b.dev]}
               for lp in plan.links},
        orchestrator_pid=os.getpid(), time_scale=plan.topology.time_scale, created=time.time(),
        topology_sha256=plan.topology.sha256,
    )
    state.save()
    try:
        with Kernel() as k:
            total = len(plan.steps)
            for i, step in enumerate(plan.steps):
                k.apply(step)
                if progress is not None and (i % 50 == 0 or i == total - 1):
                    progress(i + 1, total)
        if plan.link_backend.engine:
            state.engine_pid = start_engine(plan, state)
        if plan.switches:
            start_switches(plan, state)
        for spec in daemons:
            start_daemon(spec, state)
        state.status = "up"
        state.save()
    except BaseException:
        remove_fabric(state)
        raise
    return state


def start_engine(plan: FabricPlan, state: FabricState) -> int:
    """Start the userspace link engine for every link of `plan`; returns its pid when ready."""
    from dataclasses import replace

    from .engine import Endpoint, EngineConfig, EngineLink

    def resolved(shape, queue: int):  # noqa: ANN001, ANN202 - the plan's queue, one rule
        return replace(shape, queue_bytes=queue, queue_packets=None)

    links = tuple(
        EngineLink(
            id=lp.name,
            a=Endpoint(lp.a.netns, lp.a.dev), b=Endpoint(lp.b.netns, lp.b.dev),
            forward=resolved(lp.a_egress, lp.a_queue_bytes),
            reverse=resolved(lp.b_egress, lp.b_queue_bytes),
            rate_in_engine=lp.engine_rate,
            seed=i + 1,
        )
        for i, lp in enumerate(plan.links)
    )
    cfg = EngineConfig(fabric=plan.name, run_id=plan.run_id,
                       stats_path=str(state.dir / "links.json"), links=links)
    cfg_path = state.dir / "engine.json"
    cfg_path.write_text(cfg.to_json())

    def record(pid: int) -> None:
        state.engine_pid = pid
        state.save()

    return spawn_daemon("fabric.net.engine", cfg_path, state.dir / "engine.log", "link engine",
                        record)


# ---- RoCE switch processes -----------------------------------------------------------------


def switch_config(plan: FabricPlan, node: str, state_dir: Path, *,
                  pfc: bool | None = None) -> dict:
    """The JSON config of one switch process (`fabric.switch.node`); `pfc` overrides the
    file's `switches.pfc` (for `fabric run --pfc on,off`)."""
    from dataclasses import asdict as as_dict

    sp = plan.switches[node]
    topo = plan.topology
    assert topo.switches is not None
    settings = as_dict(topo.switches)
    settings.pop("line")
    if pfc is not None:
        settings["pfc"] = pfc
    return {
        "node": node, "netns": sp.netns, "time_scale": topo.time_scale,
        "ports": [as_dict(p) for p in sp.ports],
        "routes": [[dst, list(idx)] for dst, idx in sp.routes],
        "local": list(sp.local),
        "all_addresses": [n.loopback for n in plan.nodes.values()],
        "classes": [{"name": c.name, "dscp": c.dscp, "priority": c.priority,
                     "lossless": c.lossless, "weight": c.weight, "strict": c.strict,
                     "red": None if c.red is None else list(c.red)} for c in topo.classes],
        "settings": settings,
        "seed": sorted(plan.nodes).index(node),
        "stats_path": str(switch_stats_path(state_dir, node)),
    }


def switch_stats_path(state_dir: Path, node: str) -> Path:
    """Where RoCE switch `node` writes its statistics (every 2 s, and as it exits)."""
    return state_dir / f"switch-{node}.json"


def read_switch_stats(state: FabricState, nodes: Iterable[str]) -> dict[str, Any]:
    """Each RoCE switch's latest statistics ({} where there are none yet)."""
    out: dict[str, Any] = {}
    for node in nodes:
        try:
            out[node] = json.loads(switch_stats_path(state.dir, node).read_text())
        except (OSError, ValueError):
            out[node] = {}
    return out


def start_switches(plan: FabricPlan, state: FabricState, *, pfc: bool | None = None) -> None:
    """Start (or restart, with fresh counters) the switch process of every RoCE switch."""
    stop_switches(state)
    macs = _peer_macs(plan) if plan.link_backend.ethernet else {}
    for node in plan.switches:
        cfg = switch_config(plan, node, state.dir, pfc=pfc)
        for port in cfg["ports"]:
            port["peer_mac"] = macs.get((node, port["dev"]))
        cfg_path = state.dir / f"switch-{node}.config.json"
        cfg_path.write_text(json.dumps(cfg))
        with contextlib.suppress(FileNotFoundError):
            switch_stats_path(state.dir, node).unlink()

        def record(pid: int, node: str = node) -> None:
            state.switch_pids[node] = pid
            state.switch_roles[node] = "roce"
            state.save()

        spawn_daemon("fabric.switch.node", cfg_path, state.dir / f"switch-{node}.log",
                     f"switch {node}", record)


def _peer_macs(plan: FabricPlan) -> dict[tuple[str, str], str | None]:
    """(switch, its port device) -> the Ethernet address of the device at the link's other
    end: a veth carries Ethernet frames, and the switch writes them itself (packet sockets
    bypass the kernel's neighbour table, which a non-forwarding switch would not fill)."""
    out: dict[tuple[str, str], str | None] = {}
    with Kernel() as k:
        for lp in plan.links:
            for me, other in ((lp.a, lp.b), (lp.b, lp.a)):
                if me.node in plan.switches:
                    out[(me.node, me.dev)] = k.mac(other.netns, other.dev)
    return out


def start_daemon(spec: DaemonSpec, state: FabricState) -> int:
    """Start one kind's daemon (`DaemonSpec`) and record it in the state's process table."""
    path = state.dir / f"{spec.name}.config.json"
    path.write_text(json.dumps({**spec.config,
                                "stats_path": str(state.dir / f"{spec.name}.json")}))

    def record(pid: int) -> None:
        state.switch_pids[spec.node] = pid
        state.switch_roles[spec.node] = spec.role
        state.save()

    return spawn_daemon(spec.module, path, state.dir / f"{spec.name}.log",
                        f"{spec.role} switch {spec.node}", record)


def stop_switches(state: FabricState) -> None:
    """Stop every RoCE switch process (each writes its final statistics as it exits); the
    other kinds' daemons (memory switches) keep running."""
    for node, pid in list(state.switch_pids.items()):
        if state.switch_roles.get(node, "roce") != "roce":
            continue
        stop_process(pid)
        del state.switch_pids[node]
        state.switch_roles.pop(node, None)
    state.save()


# ---- down ---------------------------------------------------------------------------------


def _kill_netns_processes(namespaces: set[str]) -> None:
    """Stop processes still living in our namespaces (e.g. `fabric exec ... iperf3 -s &`).

    A namespace with a process in it outlives its unmount, with its devices: so look up
    which processes' network namespace is one of ours (by inode) and stop exactly those.
    """
    inodes = {}
    for ns in namespaces:
        with contextlib.suppress(OSError):
            inodes[os.stat(NETNS_RUN_DIR / ns).st_ino] = ns
    if not inodes:
        return
    victims = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                victims.append(int(entry))
        except OSError:
            continue
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    while victims and time.monotonic() < deadline:
        victims = [p for p in victims if alive(p)]
        time.sleep(0.01)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove_fabric(state: FabricState) -> list[str]:
    """Remove everything `state` owns; returns the namespaces removed."""
    for pid in state.switch_pids.values():
        stop_process(pid)
    stop_process(state.engine_pid)
    ours = set(state.namespaces)
    for ns in Kernel.list_netns():
        parsed = parse_netns_name(ns)
        if parsed and parsed[0] == state.name and parsed[1] == state.run_id:
            ours.add(ns)
    _kill_netns_processes(ours)
    removed = []
    with Kernel() as k:
        for ns in sorted(ours):
            if ns in Kernel.list_netns():
                removed.append(ns)
            k.remove_netns(ns)
    shutil.rmtree(state.dir, ignore_errors=True)
    return removed


def remove_orphans(name: str | None = None) -> list[str]:
    """Remove namespaces of ours that no live state owns (`name`: only that fabric's)."""
    live = {(s.name, s.run_id) for s in list_states()
            if s.status == "up" or alive(s.orchestrator_pid)}
    orphans = []
    for ns in Kernel.list_netns():
        parsed = parse_netns_name(ns)
        if parsed is None or (name is not None and parsed[0] != name):
            continue
        if (parsed[0], parsed[1]) not in live:
            orphans.append(ns)
    if orphans:
        _kill_netns_processes(set(orphans))
        with Kernel() as k:
            for ns in orphans:
                k.remove_netns(ns)
    # /etc/netns entries left by a crash after its namespace vanished
    if NETNS_ETC_DIR.is_dir():
        for d in NETNS_ETC_DIR.iterdir():
            parsed = parse_netns_name(d.name)
            if parsed and (name is None or parsed[0] == name) and \
                    (parsed[0], parsed[1]) not in live and d.name not in Kernel.list_netns():
                shutil.rmtree(d, ignore_errors=True)
    return orphans


def tear_down(name: str | None) -> tuple[FabricState, list[str]]:
    """`fabric down [NAME]`."""
    if name is None:
        st = resolve(None, how="`fabric down NAME` (or --all)")
    else:
        found = FabricState.load(name)
        if found is None:
            orphans = remove_orphans(name)
            if orphans:
                return FabricState(name=name, run_id="?", backend="?", source="?",
                                   status="orphan", namespaces=orphans), orphans
            raise FabricStateError(f"fabric {name!r} is not running (see `fabric status`)")
        st = found
    return st, remove_fabric(st)


def tear_down_all() -> list[str]:
    """`fabric down --all`: every fabric this program started, and every orphan of ours."""
    removed: list[str] = []
    for st in list_states():
        removed += remove_fabric(st)
    removed += remove_orphans(None)
    return removed
