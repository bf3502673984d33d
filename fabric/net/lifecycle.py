"""Bring a fabric up and down, find and remove leftovers.

Ownership: every namespace is named `fab.<fabric>.<run_id>.<node>` and a state directory
`/run/fabric/<fabric>/` records the run id, the namespaces, the link engine's pid and the
orchestrator's pid. The state is written *before* the first kernel object is created, so a
killed `fabric up` leaves a trail the next `fabric up`/`fabric down` follows. Removal goes by
recorded names and by the run id, never by a broad pattern: `down --all` removes only
namespaces whose names parse as ours.

Liveness: the state names its owner, the process that built it, by pid and start time (so a
recycled pid is not mistaken for it). A fabric is *kept* when `fabric up` (or `run --keep`)
built it to outlive its owner; a kept fabric may be *used* by one `fabric run` at a time,
which leases it (pid and start time again). A fabric that is neither kept nor owned by a live
process is *stale* (its run was killed): `status` says so, and `up`/`run` of its file remove it,
saying so, and build afresh. A live fabric in use by another process is never attached to:
the second run is refused with that process's pid, and `down` asks for `--force`.

`/run` is a tmpfs, like the namespaces it describes: both vanish at reboot together.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FabricStateError
from ..plan import FabricPlan, parse_netns_name
from ..topology.document import roce_classes
from .apply import apply_steps
from .daemon import DaemonSpec, alive, interrupts_held, spawn_daemon, stop_process
from .kernel import NETNS_ETC_DIR, NETNS_RUN_DIR, Kernel

DEFAULT_STATE_ROOT = Path("/run/fabric")
STATE_ROOT = Path(os.environ.get("FABRIC_STATE_DIR", DEFAULT_STATE_ROOT))


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
    owner_start: int = 0  # the orchestrator's start time (clock ticks after boot)
    kept: bool = False  # built to outlive its owner (`fabric up`, `run --keep`)
    user_pid: int = 0  # the `fabric run` using a kept fabric now, if any
    user_start: int = 0

    @property
    def dir(self) -> Path:
        return STATE_ROOT / self.name

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(self.dir / "state.json")

    @classmethod
    def load(cls, name: str, root: Path | None = None) -> FabricState | None:
        try:
            data = json.loads(((root or STATE_ROOT) / name / "state.json").read_text())
            return cls(**data)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
            return None

    # ---- liveness --------------------------------------------------------------------

    @property
    def owner_alive(self) -> bool:
        return same_process(self.orchestrator_pid, self.owner_start)

    @property
    def stale(self) -> bool:
        """Neither kept nor owned by a live process: what a killed run left behind."""
        return not self.owner_alive and not (self.kept and self.status == "up")

    def in_use_by(self) -> int | None:
        """The pid of the live process (not this one) whose run this fabric is now: its
        owner while it is not kept, else the run that leased it."""
        me = os.getpid()
        if not self.kept or self.status != "up":
            pid, start = self.orchestrator_pid, self.owner_start
        else:
            pid, start = self.user_pid, self.user_start
        return pid if pid and pid != me and same_process(pid, start) else None

    def describe_use(self, pid: int) -> str:
        return (f"fabric {self.name} is in use by another fabric command (pid {pid}, "
                f"run {self.run_id})")

    def netns_of(self, node: str) -> str:
        try:
            return self.nodes[node]["netns"]
        except KeyError:
            known = ", ".join(self.nodes) or "none"
            raise FabricStateError(f"fabric {self.name} has no node {node!r} "
                                   f"(nodes: {known})") from None


def list_states(root: Path | None = None) -> list[FabricState]:
    root = root or STATE_ROOT
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        st = FabricState.load(d.name, root)
        if st is not None:
            out.append(st)
    return out





def process_start(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot (/proc/PID/stat field 22)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def same_process(pid: int, start: int) -> bool:
    """Whether `pid` is alive and is the process that had start time `start` (0: unknown,
    as in states written before start times were recorded)."""
    return alive(pid) and (not start or process_start(pid) == start)


def running(name: str) -> FabricState | None:
    """The fabric's state if it is live: kept and up, or owned by a live process."""
    st = FabricState.load(name)
    if st is None or st.stale:
        return None
    return st


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise the check-then-claim of one fabric's state between fabric processes."""
    import fcntl

    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def lease(name: str, *, within: int | None = None) -> FabricState | None:
    """Claim the live fabric `name` for this process's run; None if it is not live.

    A kept fabric is leased (one run at a time); a fabric another live process is running is
    refused with its pid, unless that process is `within` (a run's own helper process, such
    as its background traffic)."""
    with _locked(name):
        st = running(name)
        if st is None:
            return None
        pid = st.in_use_by()
        if pid is not None and pid != within:
            raise FabricStateError(f"{st.describe_use(pid)}: wait for it to end; two runs on "
                                   "one fabric would share its addresses and ports")
        if st.kept and st.status == "up" and within is None:
            st.user_pid, st.user_start = os.getpid(), process_start(os.getpid()) or 0
            st.save()
        return st


def release(st: FabricState) -> None:
    """End this process's lease of a kept fabric (after its run)."""
    with _locked(st.name):
        now = FabricState.load(st.name)
        if now is not None and now.user_pid == os.getpid():
            now.user_pid = now.user_start = 0
            now.save()


def keep(st: FabricState) -> None:
    """Mark `st` as kept: it outlives this process (`run --keep`)."""
    st.kept = True
    st.save()


def resolve(name: str | None, how: str = "--fabric NAME") -> FabricState:
    """The fabric a command means: the one named, or the only one running."""
    if name is not None:
        st = running(name)
        if st is None:
            raise FabricStateError(f"fabric {name!r} is not running (see `fabric status`)")
        return st
    states = [s for s in list_states() if s.status == "up" and not s.stale]
    if not states:
        raise FabricStateError("no fabric is running (start one with `fabric up FILE`)")
    if len(states) > 1:
        names = ", ".join(s.name for s in states)
        raise FabricStateError(f"several fabrics are running ({names}): name one with {how}")
    return states[0]


# ---- up -----------------------------------------------------------------------------------


Progress = Callable[[int, int], None]


def bring_up(plan: FabricPlan, *, daemons: Sequence[DaemonSpec] = (),
             progress: Progress | None = None, kept: bool = False,
             say: Callable[[str], None] | None = None, engine_spin_ns: int | None = None,
             ) -> FabricState:
    """Build `plan` in the kernel, start the link engine, the RoCE switches and the kinds'
    `daemons` (`fabric.kinds.daemons(plan)`: the memory switches). On any failure, undo all
    of it. A stale fabric of the same name (its run was killed) is removed first, and `say`
    is told so; a live one is an error naming who has it. `engine_spin_ns`: the link engine
    busy-waits that long before each release (`start_engine`)."""
    with _locked(plan.name):
        state = _claim(plan, kept, say)
    return _build(plan, state, daemons, progress, engine_spin_ns)


def _claim(plan: FabricPlan, kept: bool, say: Callable[[str], None] | None) -> FabricState:
    existing = FabricState.load(plan.name)
    if existing is not None:
        if not existing.stale:
            pid = existing.in_use_by()
            if pid is not None:
                raise FabricStateError(f"{existing.describe_use(pid)}; wait for it to end")
            raise FabricStateError(
                f"fabric {plan.name!r} is already running (run {existing.run_id}); `fabric run` "
                f"uses it as it is, or `fabric down {plan.name}` first")
        _remove(existing)  # under the lock already
        if say is not None:
            say(f"removed fabric {plan.name} left by a run that is gone (pid "
                f"{existing.orchestrator_pid}, run {existing.run_id}); building afresh")
    remove_orphans(plan.name)

    state = FabricState(
        name=plan.name, run_id=plan.run_id, backend=plan.backend, source=plan.topology.source,
        status="building", namespaces=plan.namespaces,
        nodes={n.name: {"netns": n.netns, "loopback": n.loopback, "kind": n.kind}
               for n in plan.nodes.values()},
        links={lp.name: {"a": [lp.a.netns, lp.a.dev], "b": [lp.b.netns, lp.b.dev]}
               for lp in plan.links},
        orchestrator_pid=os.getpid(), time_scale=plan.topology.time_scale, created=time.time(),
        topology_sha256=plan.topology.sha256, owner_start=process_start(os.getpid()) or 0,
        kept=kept,
    )
    state.save()
    return state


def _build(plan: FabricPlan, state: FabricState, daemons: Sequence[DaemonSpec],
           progress: Progress | None, engine_spin_ns: int | None = None) -> FabricState:
    try:
        apply_steps(plan.steps, progress=progress)
        if plan.link_backend.engine:
            state.engine_pid = start_engine(plan, state, spin_ns=engine_spin_ns)
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


def start_engine(plan: FabricPlan, state: FabricState, *, spin_ns: int | None = None) -> int:
    """Start the userspace link engine for every link of `plan`; returns its pid when ready.
    `spin_ns`: it busy-waits that long before each release, without a CPU budget (0: never);
    None: its default (`EngineConfig`: 150 us within a tenth of one CPU)."""
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
            classes=lp.classes,
        )
        for i, lp in enumerate(plan.links)
    )
    cfg = EngineConfig(fabric=plan.name, run_id=plan.run_id,
                       stats_path=str(state.dir / "links.json"), links=links)
    if spin_ns is not None:
        cfg = replace(cfg, spin_ns=spin_ns, spin_share=1.0)
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
                     "red": None if c.red is None else list(c.red),
                     "queue_bytes": c.queue_bytes} for c in roce_classes(topo)],
        "settings": settings,
        "seed": sorted(plan.nodes).index(node),
        "stats_path": str(switch_stats_path(state_dir, node)),
        # routing reconverged (`net.routing`): the table to forward by instead, on SIGUSR1
        "routes_path": str(switch_routes_path(state_dir, node)),
    }


def switch_routes_path(state_dir: Path, node: str) -> Path:
    """Where routing writes RoCE switch `node`'s reconverged table (`fabric.net.routing`)."""
    return state_dir / f"switch-{node}.routes.json"


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
    for node in plan.switches:  # a fresh switch forwards by the plan's table
        switch_routes_path(state.dir, node).unlink(missing_ok=True)
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
    """Remove everything `state` owns, with interrupts held until it is done (only SIGKILL
    cuts it short, and the state's "removing" status then marks the remains as stale);
    returns the namespaces removed."""
    with interrupts_held(), _locked(state.name):
        return _remove(state)


def _remove(state: FabricState) -> list[str]:
    if state.dir.is_dir():
        state.status = "removing"  # a kill from here on leaves remains that are stale
        state.save()
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
    live = {(s.name, s.run_id) for s in list_states() if not s.stale}
    if STATE_ROOT != DEFAULT_STATE_ROOT:  # a private state root (tests) spares the machine's
        live |= {(s.name, s.run_id) for s in list_states(DEFAULT_STATE_ROOT) if not s.stale}
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


def tear_down(name: str | None, *, force: bool = False) -> tuple[FabricState, list[str]]:
    """`fabric down [NAME]`; a fabric another live process is running needs `force`. The
    check and the removal hold the fabric's lock, so no run claims or leases it meanwhile."""
    if name is None:
        name = resolve(None, how="`fabric down NAME` (or --all)").name
    with interrupts_held(), _locked(name):
        found = FabricState.load(name)
        if found is None:
            orphans = remove_orphans(name)
            if orphans:
                return FabricState(name=name, run_id="?", backend="?", source="?",
                                   status="orphan", namespaces=orphans), orphans
            raise FabricStateError(f"fabric {name!r} is not running (see `fabric status`)")
        _check_force(found, force)
        return found, _remove(found)


def _check_force(st: FabricState, force: bool) -> None:
    pid = st.in_use_by()
    if pid is not None and not force:
        raise FabricStateError(f"{st.describe_use(pid)}; taking it down would end that run: "
                               f"`fabric down --force {st.name}` if you mean it")


def tear_down_all(*, force: bool = False) -> list[str]:
    """`fabric down --all`: every fabric this program started, and every orphan of ours;
    a fabric another live process is running needs `force`."""
    states = list_states()
    for st in states:
        _check_force(st, force)
    removed: list[str] = []
    for st in states:
        removed += remove_fabric(st)
    removed += remove_orphans(None)
    return removed
