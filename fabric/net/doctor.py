"""What this host offers the emulator, probed for real, and which link backend `up` will use.

Each check tries the real thing where it can (a throwaway namespace with a netem qdisc on its
loopback, opening /dev/net/tun) and falls back to reading the kernel config only to explain.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import FabricError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    needed_for: str = ""


@cache
def kernel_config() -> dict[str, str]:
    """CONFIG_* values from /proc/config.gz (empty when the kernel does not expose it)."""
    try:
        text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            out[line[2:].split()[0]] = "n"
    return out


def _config_note(key: str) -> str:
    v = kernel_config().get(key)
    if v is None:
        return ""
    return f" ({key}={v})"


def is_root() -> bool:
    return os.geteuid() == 0


@cache
def probe_qdiscs() -> dict[str, str | None]:
    """Try netem, tbf, htb and red on the loopback of a throwaway namespace with no name (it
    dies with the probe's process, so no kill point leaves it). kind -> error or None."""
    from ..errors import KernelError
    from .kernel import _red_codec, probe_qdisc_kinds, red_options

    _red_codec()
    attempts: dict[str, dict[str, Any]] = {
        "netem": {"delay": 1000},
        "tbf": {"rate": "1000000bit", "burst": 3000, "limit": 10000},
        "htb": {"default": 0x10},
        "red": {"limit": 100_000, **red_options((10_000, 30_000, 0.1), 10**8, 1500, 100_000)},
    }
    try:
        return probe_qdisc_kinds(attempts)
    except KernelError as e:
        return dict.fromkeys(attempts, str(e))


def tun_available() -> str | None:
    """None if /dev/net/tun opens, else why not."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError as e:
        return f"/dev/net/tun: {e.strerror}"
    os.close(fd)
    return None


def tcp_congestion_controls() -> tuple[list[str], list[str]]:
    """(available now, loadable as modules)."""
    try:
        avail = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    except OSError:
        avail = []
    loadable = []
    moddir = Path(f"/lib/modules/{os.uname().release}/kernel/net/ipv4")
    if moddir.is_dir():
        for p in moddir.glob("tcp_*.ko*"):
            name = p.name.split(".")[0].removeprefix("tcp_")
            if name not in avail and name not in ("diag",):
                loadable.append(name)
    for key, val in kernel_config().items():
        if key.startswith("CONFIG_TCP_CONG_") and val == "m":
            name = key.removeprefix("CONFIG_TCP_CONG_").lower()
            if name not in avail and name not in loadable:
                loadable.append(name)
    return avail, sorted(loadable)


def choose_backend(requested: str = "auto") -> tuple[str, str]:
    """(backend, why). Raises FabricError if the requested backend cannot run here."""
    if not is_root():
        raise FabricError("building a fabric needs root (network namespaces): run as root")
    q = probe_qdiscs()
    tun = tun_available()
    if requested == "netem":
        if q.get("netem") is not None:
            raise FabricError(f"--links netem: this kernel has no sch_netem ({q['netem']}); "
                              "use --links userspace")
        return "netem", "requested"
    if requested == "userspace":
        if tun is not None:
            raise FabricError(f"--links userspace: {tun}")
        return "userspace", "requested"
    if q.get("netem") is None:
        return "netem", "kernel has sch_netem"
    if tun is None:
        why = "no sch_netem in this kernel" + _config_note("CONFIG_NET_SCH_NETEM")
        return "userspace", why + "; TUN + link engine, rate by kernel tbf"
    raise FabricError(f"no link backend: no sch_netem ({q['netem']}) and {tun}")


def check_class_qdiscs(plan) -> None:  # noqa: ANN001 - a plan.FabricPlan
    """Before a netem-backend fabric is built: where a class sets `ecn` on a shaped link, its
    queue is a red qdisc; a kernel without sch_red fails here, in one line naming the class,
    with nothing built."""
    from ..plan import SetNetem, SetTbf

    if plan.backend != "netem":
        return
    marked: list[str] = []
    for step in plan.steps:
        if isinstance(step, (SetNetem, SetTbf)):
            marked += [c.name for c in step.classes if c.red is not None and c.name not in marked]
    if not marked:
        return
    err = probe_qdiscs().get("red")
    if err is not None:
        who = (f"class {marked[0]} sets" if len(marked) == 1
               else f"classes {', '.join(marked)} set")
        raise FabricError(f"{who} ecn, which the netem backend marks with a red qdisc on the "
                          f"class's queue, and this kernel has no sch_red ({err}"
                          f"{_config_note('CONFIG_NET_SCH_RED')}); use --links userspace")


def guess_backend(requested: str = "auto") -> str:
    """The backend `up` would choose, without touching the kernel (for check, --dry-run).

    Trusts the kernel config where it is readable (CONFIG_NET_SCH_NETEM); else assumes
    netem is there, as on standard distribution kernels.
    """
    if requested != "auto":
        return requested
    netem = kernel_config().get("CONFIG_NET_SCH_NETEM")
    if netem == "n":
        return "userspace"
    if netem == "m" and not Path(f"/lib/modules/{os.uname().release}").is_dir():
        return "userspace"
    return "netem"


def run_checks() -> tuple[list[Check], str]:
    """All checks, plus a one-line verdict on the backend."""
    checks: list[Check] = []
    root = is_root()
    checks.append(Check("root", root, "uid 0" if root else f"uid {os.geteuid()}",
                        "namespaces, links, qdiscs"))
    netns_ok = Path("/proc/self/ns/net").exists()
    checks.append(Check("network namespaces", netns_ok,
                        "yes" + _config_note("CONFIG_NET_NS"), "every fabric"))
    veth_ok = kernel_config().get("CONFIG_VETH", "y") in ("y", "m") or Path(
        "/sys/module/veth").exists()
    checks.append(Check("veth", veth_ok, "yes" + _config_note("CONFIG_VETH"), "netem backend"))
    tun = tun_available()
    checks.append(Check("TUN", tun is None, tun or "/dev/net/tun" + _config_note("CONFIG_TUN"),
                        "userspace backend"))
    if root:
        q = probe_qdiscs()
        for kind, cfg in (("netem", "CONFIG_NET_SCH_NETEM"), ("tbf", "CONFIG_NET_SCH_TBF"),
                          ("htb", "CONFIG_NET_SCH_HTB"), ("red", "CONFIG_NET_SCH_RED")):
            err = q.get(kind)
            ok = err is None
            detail = "probed: qdisc added" if ok else f"probed: {err}{_config_note(cfg)}"
            need = {"netem": "netem backend", "tbf": "link rates", "htb": "link rates",
                    "red": "class ECN on the netem backend"}[kind]
            checks.append(Check(f"sch_{kind}", ok, detail, need))
    else:
        checks.append(Check("qdiscs", False, "not probed (needs root)", "link shaping"))
    avail, loadable = tcp_congestion_controls()
    detail = " ".join(avail) if avail else "unknown"
    if loadable:
        detail += f" (loadable: {' '.join(loadable)})"
    checks.append(Check("TCP congestion control", bool(avail), detail, "per-class TCP CC"))
    try:
        userns = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        userns = 0
    checks.append(Check("user namespaces", userns > 0, f"max {userns}", "rootless (future)"))
    for tool, need in (("ip", "fabric exec"), ("ping", "link checks"),
                       ("iperf3", "link checks, benchmarks"), ("tcpdump", "captures")):
        path = shutil.which(tool)
        checks.append(Check(tool, path is not None, path or "not found", need))
    try:
        backend, why = choose_backend("auto")
        verdict = f"link backend: {backend} ({why})"
    except FabricError as e:
        verdict = f"link backend: none ({e})"
    return checks, verdict


# ---- where netem tests run ---------------------------------------------------------------

GUEST_NEED = "netem tests here"


def guest_checks(*, probe: bool = False,
                 say: Callable[[str], None] | None = None) -> tuple[list[Check], str]:
    """One row per netem guest backend and a line saying where netem tests run.

    Without `probe`, the rows show what is installed and the verdicts recorded by the last
    guest boot on this host (a test run, a benchmark or `doctor --guest`); with it, the
    backends are booted now, in order, until one comes up with netem.
    """
    from ..testing import guest

    # as root, the qdisc probe the other rows made (cached) answers; else the harness's own
    native = probe_qdiscs().get("netem") is None if is_root() else guest.host_has_netem()
    ran = None
    if probe and not native:
        try:
            ran = guest.run_in_guest(["true"], timeout=120, on_try=lambda name: say and say(
                f"booting a {guest.LABELS[name]} ..."))
        except guest.GuestUnavailable:
            ran = None  # nothing installed: the rows say what to install
    record = guest.last_record() or {}
    recorded = {v["backend"]: v for v in record.get("verdicts", [])}
    checks = []
    for backend in guest.BACKENDS:
        missing = backend.missing()
        v = recorded.get(backend.name)
        if missing:
            ok, detail = False, missing
        elif v is None:
            ok, detail = True, "installed; not probed on this host yet (fabric doctor --guest)"
        elif v["ok"]:
            ok, detail = True, f"boots with netem in {v['seconds']:.1f} s (probed {v['when']})"
        else:
            ok, detail = False, f"{v['reason']} (probed {v['when']})"
        checks.append(Check(f"guest {backend.name}", ok, detail, GUEST_NEED))
    return checks, _guest_verdict(native, ran, recorded)


def _guest_verdict(native: bool, ran: object, recorded: dict[str, dict]) -> str:
    from ..testing import guest

    if native:
        return "netem tests: natively (host kernel has sch_netem)"
    if isinstance(ran, guest.GuestResult) and not ran.backend:
        return f"netem tests: none can run here ({ran.output})"
    passed: list[str] = []
    for backend in guest.BACKENDS:
        missing = backend.missing()
        v = recorded.get(backend.name)
        if missing:
            passed.append(f"{backend.name}: {missing}")
        elif v is None:
            return ("netem tests: in a guest, not probed on this host yet (fabric doctor --guest "
                    "boots the backends in order until one comes up)")
        elif v["ok"]:
            why = f"; passed over: {'; '.join(passed)}" if passed else ""
            return f"netem tests: in a {guest.LABELS[backend.name]}{why}"
        else:
            passed.append(f"{backend.name}: {v['reason']}")
    return f"netem tests: none can run here ({'; '.join(passed)}); run {guest.INSTALL_HINT}"
