"""Run a command inside a throw-away guest kernel that has `sch_netem`.

The development and CI kernels here are built without `sch_netem`, so the netem backend is
tested inside a guest kernel that has it. Guest backends, in the order they are tried:

- `uml`: Debian's `user-mode-linux` boots a real Linux 6.1 kernel as an ordinary process
  (no image, no KVM) over the host's `/` (hostfs). Boots in ~2.5 s. It panics before init
  on CPUs whose XSAVE area outgrew it (AMX), so it is probed, not trusted.
- `qemu-kvm`: Debian's own kernel (`linux-image-amd64`, unpacked into GUEST_KERNEL_ROOT by
  `scripts/install.sh`) in QEMU with KVM, over the host's `/` through virtme-ng (9p, with
  overlays on the directories a run writes). Nested KVM can hang silently, so a boot that
  prints no kernel banner within seconds is abandoned.
- `qemu-tcg`: the same kernel under pure emulation (TCG): slower, but boots on any x86 host.

Every guest runs the host's Python, packages and checkout. `run_in_guest` boots the first
backend that really comes up *and* can add a netem qdisc, runs the command in that boot (the
probe is the boot itself: nothing is booted twice), and says which backend ran and why each
earlier one was passed over. A backend that failed to boot is remembered for the rest of the
process, and each verdict is also written to a small record that `fabric doctor` shows.

Callers should batch work into one boot (see `fabric.testing.pytest_netem`): system calls
are slow in every guest, and an emulated CPU is slower still.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from fabric.errors import FabricError

__all__ = [
    "BACKENDS",
    "INSTALL_HINT",
    "Backend",
    "GuestResult",
    "GuestUnavailable",
    "Verdict",
    "available_backends",
    "host_has_netem",
    "last_record",
    "make_payload",
    "run_in_guest",
]

INSTALL_HINT = "bash scripts/install.sh"
UML_BINARY = "/usr/bin/linux.uml"
UML_MODULES = Path("/usr/lib/uml/modules")
UML_HINT = "apt-get install user-mode-linux kmod"
QEMU_HINT = (
    "apt-get install qemu-system-x86 busybox-static kmod; pip install virtme-ng; "
    "unpack Debian's linux-image-amd64 into /var/lib/fabric/guest-kernel (scripts/install.sh "
    "does all three)"
)
# Where scripts/install.sh unpacks Debian's kernel package (boot/ and lib/modules/ inside).
# Not /var/cache: virtme-ng's guest init mounts a tmpfs over /var/cache.
GUEST_KERNEL_ROOT = Path("/var/lib/fabric/guest-kernel")
GUEST_KERNEL_ENV = "FABRIC_GUEST_KERNEL"  # a vmlinuz to use instead
RECORD_ENV = "FABRIC_GUEST_RECORD"  # where verdicts are recorded (tests point it elsewhere)
BACKEND_ENV = "FABRIC_GUEST_BACKEND"  # set inside a guest: the backend that booted it
# Modules the guest loads up front; a missing one is not an error (the kernel may have it
# built in, or a test may not need it). sch_netem itself is checked by adding a qdisc. ipv6
# is a module of the UML kernel that `ip -6 addr add` does not load: a test that needs IPv6
# addresses failed when it ran before anything had opened an IPv6 socket in the guest.
GUEST_MODULES = ("veth", "sch_netem", "sch_tbf", "sch_htb", "sch_red", "tun", "ifb", "ipv6")
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Directories the QEMU guest writes through to a private overlay (the host's / is read-only
# in it): /etc for `ip netns` hosts files, the rest as virtme-ng's own `vng` does.
QEMU_OVERLAYS = ("/etc", "/lib", "/home", "/opt", "/srv", "/usr", "/var", "/tmp")
QEMU_MEMORY = "2G"
# Exit code reported when the command never reported one (panic, crash, no boot).
NO_STATUS = 255
TIMED_OUT = 124  # same as timeout(1)
NO_NETEM = 125  # the guest booted but could not add a netem qdisc
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# virtme-run accepts only these characters in --rwdir paths.
_SAFE_PATH = re.compile(r"[a-zA-Z0-9_+ /.-]+\Z")


class GuestUnavailable(FabricError):
    """No guest backend can run here (none installed, or none booted)."""


@dataclass(frozen=True)
class Verdict:
    """What became of one backend: it ran the command, or why it was passed over."""

    backend: str
    ok: bool
    reason: str = ""
    seconds: float = 0.0  # wall time this backend cost (for a passed-over one: until given up)


@dataclass(frozen=True)
class GuestResult:
    """What one guest run produced.

    `output` is the command's stdout and stderr; when the command could not report a
    status (timeout, panic, no backend booted) it also carries the console tail and a line
    saying what happened. `boot_seconds` is the wall time from launching the guest until
    the command started; `run_seconds` is the rest (command plus power-off). `backend` is
    the guest that ran it ("" if none did) and `passed_over` the verdicts of the backends
    tried or skipped before it.
    """

    exit_code: int
    output: str
    boot_seconds: float
    run_seconds: float = 0.0
    console: str = ""
    backend: str = ""
    passed_over: tuple[Verdict, ...] = ()

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def label(self) -> str:
        """The backend's human name, e.g. 'QEMU (TCG) guest'."""
        return LABELS.get(self.backend, "no guest")

    def passed_over_text(self) -> str:
        """'uml: UML cannot boot on this CPU (...); qemu-kvm: ...' (empty if none)."""
        return "; ".join(f"{v.backend}: {v.reason}" for v in self.passed_over)


LABELS = {
    "uml": "user-mode Linux guest",
    "qemu-kvm": "QEMU (KVM) guest",
    "qemu-tcg": "QEMU (TCG, emulated) guest",
}


# ---- the payload every backend runs ------------------------------------------------------


def make_payload(job: Path, argv: Sequence[str], env: Mapping[str, str], cwd: str) -> str:
    """Shell lines that load modules, prove netem works, run `argv` and record its status.

    Milestone files in `job` (visible on the host) let the host tell a guest that never
    came up from one that did: `started` when the guest reaches this script, `netem` with
    the result of adding a netem qdisc, `status` with the command's exit code.
    """
    q = shlex.quote
    exports = "".join(f"export {k}={q(v)}\n" for k, v in env.items())
    return f"""export PATH={GUEST_PATH}
for m in {" ".join(GUEST_MODULES)}; do modprobe -q "$m" 2>/dev/null; done
ip link set lo up
date +%s.%N > {q(str(job / "started"))}
if tc qdisc add dev lo root netem delay 1ms > {q(str(job / "netem"))} 2>&1; then
  tc qdisc del dev lo root
  echo ok >> {q(str(job / "netem"))}
  (
  cd {q(cwd)} || exit 126
  {exports}exec {" ".join(q(a) for a in argv)}
  ) > {q(str(job / "output"))} 2>&1 < /dev/null
  echo $? > {q(str(job / "status"))}
else
  echo {NO_NETEM} > {q(str(job / "status"))}
fi
sync
"""


def make_uml_init(job: Path, argv: Sequence[str], env: Mapping[str, str], cwd: str) -> str:
    """The UML guest's /sbin/init: private mounts, the payload, power off.

    linux.uml itself always exits 0, so the status travels through `job/status` (hostfs
    writes go straight to the host file).
    """
    mounts = "\n".join(
        [
            "mount -t proc proc /proc",
            "mount -t sysfs sysfs /sys",
            # The kernel may already have automounted devtmpfs on /dev.
            "mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev",
            "mkdir -p /dev/shm /dev/pts",
            "mount -t tmpfs tmpfs /dev/shm",
            "mount -t devpts devpts /dev/pts",
            # Private /run: `ip netns` keeps its bind mounts in /run/netns.
            "mount -t tmpfs tmpfs /run",
            f"mount -t hostfs -o {shlex.quote(str(UML_MODULES))} hostfs /lib/modules",
        ]
    )
    return f"""#!/bin/sh
# Generated by fabric.testing.guest; runs as PID 1 inside the UML guest.
export PATH={GUEST_PATH}
{mounts}
{make_payload(job, argv, env, cwd)}echo o > /proc/sysrq-trigger
sleep 60
"""


# ---- backends ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """How to start one guest and how to tell, early, that it will not come up."""

    argv: list[str]
    env: dict[str, str]
    # Text the console must show within `banner_seconds`, else the guest is abandoned
    # (None: no banner check). Then the payload must start within `boot_seconds`.
    banner: str | None
    banner_seconds: float
    boot_seconds: float


@dataclass(frozen=True)
class Backend:
    """One way to boot a guest kernel with netem.

    `missing()` says why it cannot even be tried (not installed, no /dev/kvm), with what
    to install; `launch()` builds the command; `diagnose()` turns a failed boot's console
    (and the watcher's reason, if it gave up) into one line.
    """

    name: str
    missing: Callable[[], str | None]
    launch: Callable[[Path, Sequence[str], Mapping[str, str], str, Sequence[str]], Launch]
    diagnose: Callable[[str, str], str] = field(default=lambda console, stalled: stalled)


def uml_binary() -> str | None:
    """Path of `linux.uml` if it and its modules are installed, else None."""
    binary = shutil.which("linux.uml") or UML_BINARY
    if not os.access(binary, os.X_OK):
        return None
    if not UML_MODULES.is_dir() or not any(p.is_dir() for p in UML_MODULES.iterdir()):
        return None
    return binary


def _uml_missing() -> str | None:
    if uml_binary() is None:
        return f"not installed ({UML_HINT})"
    return None


def _uml_launch(
    job: Path, argv: Sequence[str], env: Mapping[str, str], cwd: str, rw_dirs: Sequence[str]
) -> Launch:
    del rw_dirs  # hostfs shares the whole host read-write
    binary = uml_binary()
    assert binary is not None
    _ensure_dir(Path("/lib/modules"), "the UML guest mounts its modules there")
    (job / "umldir").mkdir()
    init = job / "init"
    init.write_text(make_uml_init(job, argv, env, cwd))
    init.chmod(0o755)
    cmd = [
        binary, "mem=1G", "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "rw",
        "con=null", "con0=null,fd:1", "quiet", f"uml_dir={job / 'umldir'}", f"init={init}",
    ]  # fmt: skip
    # UML backs guest memory with a file in $TMPDIR: keep it in RAM.
    host_env = {**os.environ, "TMPDIR": "/dev/shm" if os.path.isdir("/dev/shm") else str(job)}
    # A UML that cannot boot panics (and exits) within a second or two; one that boots
    # reaches init in ~2.5 s.
    return Launch(cmd, host_env, banner=None, banner_seconds=0, boot_seconds=60)


def _uml_diagnose(console: str, stalled: str) -> str:
    if "ptrace set fp regs failed" in console:
        # The host refuses UML's PTRACE_SETREGSET: its XSAVE buffer predates this CPU's.
        amx = " (AMX XSAVE)" if cpu_has_amx() else " (XSAVE)"
        return f"UML cannot boot on this CPU{amx}: kernel panic before init"
    m = re.search(r"Kernel panic - not syncing: [^\n]*", console)
    if m:
        return f"UML kernel panicked before init: {m.group(0)}"
    return stalled


def cpu_has_amx() -> bool:
    try:
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def guest_kernel() -> tuple[Path, str] | None:
    """(vmlinuz, version) of the kernel QEMU boots, if one with netem modules is installed.

    FABRIC_GUEST_KERNEL names one; else the newest under GUEST_KERNEL_ROOT (what
    scripts/install.sh unpacks); else an installed /boot kernel whose modules have netem.
    """
    forced = os.environ.get(GUEST_KERNEL_ENV)
    candidates = (
        [Path(forced)]
        if forced
        else sorted((GUEST_KERNEL_ROOT / "boot").glob("vmlinuz-*"), reverse=True)
        + sorted(Path("/boot").glob("vmlinuz-*"), reverse=True)
    )
    for image in candidates:
        version = image.name.removeprefix("vmlinuz-")
        if _netem_module(image.parent.parent / "lib/modules" / version) or _netem_module(
            Path("/lib/modules") / version
        ):
            return image, version
    return None


def _netem_module(moddir: Path) -> bool:
    return (moddir / "modules.dep").is_file() and any(
        (moddir / "kernel/net/sched").glob("sch_netem.ko*")
    )


def virtme_run() -> str | None:
    """virtme-run next to this Python (a venv's or pyenv's bin), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "virtme-run"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("virtme-run")


def _qemu_missing(kvm: bool) -> Callable[[], str | None]:
    def missing() -> str | None:
        lacking = [
            what
            for what, ok in (
                ("qemu-system-x86_64", shutil.which("qemu-system-x86_64")),
                ("busybox", shutil.which("busybox")),
                ("virtme-ng", virtme_run()),
                ("a guest kernel with sch_netem", guest_kernel()),
            )
            if not ok
        ]
        if lacking:
            return f"not installed: {', '.join(lacking)} ({QEMU_HINT})"
        if kvm:
            try:
                os.close(os.open("/dev/kvm", os.O_RDWR))
            except OSError as e:
                return f"no KVM (/dev/kvm: {e.strerror})"
        return None

    return missing


def _qemu_launch(kvm: bool) -> Callable[..., Launch]:
    def launch(
        job: Path, argv: Sequence[str], env: Mapping[str, str], cwd: str, rw_dirs: Sequence[str]
    ) -> Launch:
        found, run = guest_kernel(), virtme_run()
        assert found is not None
        assert run is not None
        image, _ = found
        script = job / "payload.sh"
        script.write_text(make_payload(job, argv, env, cwd))
        cmd = [
            run, "--kimg", str(image), "--mods", "auto", "--user", "root", "--force-9p",
            "--memory", QEMU_MEMORY, "--cpus", str(min(os.cpu_count() or 1, 2)),
            "--verbose", "--show-boot-console",
        ]  # fmt: skip
        if not kvm:
            cmd.append("--disable-kvm")
        for d in QEMU_OVERLAYS:
            cmd += ["--overlay-rwdir", d]
        for d in (str(job), *rw_dirs):
            if not _SAFE_PATH.match(d):
                raise GuestUnavailable(f"cannot share {d!r} with a QEMU guest (unusual path)")
            cmd += ["--rwdir", d]
        cmd += ["--script-sh", f"sh {script}"]
        # virtme-run finds busybox, qemu and depmod on PATH; its temporary files go to the
        # job dir, so a guest killed mid-boot leaves nothing in /tmp.
        host_env = {
            **os.environ, "PATH": f"{os.environ.get('PATH', '')}:{GUEST_PATH}", "TMPDIR": str(job)
        }
        # With KVM the banner comes within a second; nested KVM that hangs prints nothing
        # after the real-mode setup. Under emulation the kernel still prints it in seconds.
        return Launch(
            cmd, host_env, banner="Linux version",
            banner_seconds=15 if kvm else 60, boot_seconds=120 if kvm else 300,
        )  # fmt: skip

    return launch


def _qemu_diagnose(kvm: bool) -> Callable[[str, str], str]:
    def diagnose(console: str, stalled: str) -> str:
        m = re.search(r"Kernel panic - not syncing: [^\n]*", console)
        if m:
            return f"guest kernel panicked: {m.group(0)}"
        if stalled.startswith("no kernel output") and kvm:
            return f"{stalled} under KVM (nested virtualisation hangs?)"
        return stalled

    return diagnose


BACKENDS: tuple[Backend, ...] = (
    Backend("uml", _uml_missing, _uml_launch, _uml_diagnose),
    Backend("qemu-kvm", _qemu_missing(True), _qemu_launch(True), _qemu_diagnose(True)),
    Backend("qemu-tcg", _qemu_missing(False), _qemu_launch(False), _qemu_diagnose(False)),
)


def in_emulated_guest() -> bool:
    """Whether this process runs inside the QEMU guest that emulates its CPU (TCG): there
    everything runs ~10x slower, and a timing test may need to allow for it."""
    return os.environ.get(BACKEND_ENV) == "qemu-tcg"


def available_backends() -> list[str]:
    """Names of the backends installed here (not yet proven to boot)."""
    return [b.name for b in BACKENDS if b.missing() is None]


@functools.cache
def host_has_netem() -> bool:
    """Whether the host kernel can create a netem qdisc (probed once, in a scratch netns)."""
    tc, unshare = shutil.which("tc"), shutil.which("unshare")
    if tc is None or unshare is None:
        return False
    # A private network namespace keeps the probe from touching the host's `lo`; without
    # root, a user namespace (-r) supplies the capability.
    flags = "-n" if os.geteuid() == 0 else "-rn"
    argv = [unshare, flags, tc, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


# ---- running ------------------------------------------------------------------------------

# Backends that failed to boot in this process: name -> why (the verdict cache of a run).
_DEAD: dict[str, str] = {}


def run_in_guest(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    cwd: str | None = None,
    rw_dirs: Sequence[str] = (),
    backends: Sequence[str] | None = None,
    on_try: Callable[[str], None] | None = None,
) -> GuestResult:
    """Boot the first guest backend that comes up with netem, run `argv` in it as root.

    `env` is exported on top of a minimal environment (PATH only); `cwd` defaults to the
    caller's working directory. `rw_dirs` are host directories the command writes to (the
    QEMU guests see the rest of the host's files read-only or through a private overlay).
    A command that runs longer than `timeout` seconds is killed and reported with exit code
    124. `backends` limits which are tried (default: all, in order); `on_try(name)` is
    called before each boot. Raises GuestUnavailable if no backend is installed; a result
    with exit code NO_STATUS and the verdicts if none booted.
    """
    with _terminate_cleanly():
        return _run_in_guest(argv, env, timeout, cwd, rw_dirs, backends, on_try)


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """While a guest runs, SIGTERM raises SystemExit instead of ending the process at once,
    so the guest's process group is killed and its job dir removed (Ctrl-C already does)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_in_guest(
    argv: list[str],
    env: dict[str, str] | None,
    timeout: float,
    cwd: str | None,
    rw_dirs: Sequence[str],
    backends: Sequence[str] | None,
    on_try: Callable[[str], None] | None,
) -> GuestResult:
    env = {k: v for k, v in (env or {}).items() if _ENV_NAME.match(k)}
    cwd = cwd or os.getcwd()
    verdicts: list[Verdict] = []
    order = [b for b in BACKENDS if backends is None or b.name in backends]
    for backend in order:
        why = backend.missing() or _DEAD.get(backend.name)
        if why:
            verdicts.append(Verdict(backend.name, False, why))
            continue
        if on_try is not None:
            on_try(backend.name)
        result, failure = _boot(backend, argv, env, cwd, timeout, rw_dirs)
        if failure is None:
            result = replace(result, passed_over=tuple(verdicts))
            _record([*verdicts, Verdict(backend.name, True, "", result.boot_seconds)])
            return result
        _DEAD[backend.name] = failure
        verdicts.append(Verdict(backend.name, False, failure, result.boot_seconds))
    _record(verdicts)
    tried = "; ".join(f"{v.backend}: {v.reason}" for v in verdicts)
    if not any(backend.missing() is None for backend in order):
        raise GuestUnavailable(f"no guest backend is installed ({tried}); run {INSTALL_HINT}")
    return GuestResult(
        NO_STATUS, f"no guest kernel with netem could boot here: {tried}", 0.0,
        passed_over=tuple(verdicts),
    )  # fmt: skip


def _boot(
    backend: Backend,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    timeout: float,
    rw_dirs: Sequence[str],
) -> tuple[GuestResult, str | None]:
    """One boot. Returns (result, None) if the guest came up with netem, else (_, why not)."""
    # The job dir must not live under /dev or /run (guests mount their own there); a
    # tempdir on the root file system is visible to every guest under the same path.
    with tempfile.TemporaryDirectory(prefix="fabric-guest-", dir=job_parent()) as tmp:
        job = Path(tmp)
        env = {**env, BACKEND_ENV: backend.name}
        launch = backend.launch(job, argv, env, cwd, rw_dirs)
        start = time.time()
        with open(job / "console", "wb") as console:
            proc = subprocess.Popen(
                launch.argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                env=launch.env, start_new_session=True,
            )  # fmt: skip
            stalled = _watch(proc, job, launch, timeout)
        end = time.time()
        result = _collect(job, backend.name, start, end, timeout, stalled)
        if (job / "started").exists():
            netem = _read(job / "netem")
            if result.exit_code == NO_NETEM and not netem.rstrip().endswith("ok"):
                return result, f"booted, but netem failed: {netem.strip() or 'no output'}"
            return result, None
        why = backend.diagnose(result.console, stalled) or _tail_reason(result.console)
        return result, why


def _watch(proc: subprocess.Popen[bytes], job: Path, launch: Launch, timeout: float) -> str:
    """Wait for the guest, giving up early if it misses a boot milestone. Returns '' or why.

    Ends, also on Ctrl-C or any error, by killing the guest's whole process group (QEMU,
    UML helpers, virtme's children), which a panicking or hung guest can leave behind.
    """
    t0 = time.monotonic()
    started_at = done_at = None
    banner_seen = launch.banner is None
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    try:
        while os.waitid(os.P_PID, proc.pid, flags) is None:
            now = time.monotonic()
            if started_at is None and (job / "started").exists():
                started_at = now
            if done_at is None and (job / "status").exists():
                done_at = now
            if started_at is None:
                if not banner_seen and now - t0 > launch.banner_seconds:
                    assert launch.banner is not None
                    banner_seen = launch.banner.encode() in _read_bytes(job / "console")
                    if not banner_seen:
                        return f"no kernel output within {launch.banner_seconds:g} s"
                if now - t0 > launch.boot_seconds:
                    return f"did not reach init within {launch.boot_seconds:g} s"
            elif done_at is None and now - started_at > timeout:
                return f"timed out after {timeout:g} s and was killed"
            if done_at is not None and now - done_at > 30:
                break  # the command is done; a guest that will not power off is killed
            time.sleep(0.05)
        return ""
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session
        except ProcessLookupError:
            pass
        proc.wait()


def _collect(
    job: Path, backend: str, start: float, end: float, timeout: float, stalled: str
) -> GuestResult:
    """Turn the job dir's files into a GuestResult (runs before the dir is removed)."""
    console = _read(job / "console")
    output = _read(job / "output")
    started = _read(job / "started").strip()
    try:
        boot = float(started) - start if started else end - start
    except ValueError:
        boot = end - start
    status = _read(job / "status").strip()
    if status.isdigit():
        exit_code = int(status)
    else:
        exit_code = TIMED_OUT if "timed out" in stalled else NO_STATUS
        why = stalled or "the guest ended without an exit status (panic?)"
        tail = "\n".join(console.splitlines()[-60:])
        output = f"{output}\n--- guest console (tail) ---\n{tail}\nfabric.testing.guest: {why}\n"
    return GuestResult(
        exit_code, output, max(boot, 0.0), max(end - start - boot, 0.0), console, backend
    )


def _tail_reason(console: str) -> str:
    lines = [ln.strip() for ln in console.splitlines() if ln.strip()]
    return f"did not boot (last console line: {lines[-1][:200]!r})" if lines else "did not boot"


def _read(path: Path) -> str:
    return _read_bytes(path).decode(errors="replace")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def job_parent() -> str:
    """A host directory for job dirs that every guest sees under the same path."""
    parent = tempfile.gettempdir()
    bad = parent.startswith(("/dev/", "/run/", "/proc/", "/sys/")) or parent in ("/dev", "/run")
    if bad or not _SAFE_PATH.match(parent):
        parent = "/var/tmp" if os.path.isdir("/var/tmp") else "/tmp"
    return parent


def _ensure_dir(path: Path, why: str) -> None:
    if path.is_dir():
        return
    try:
        path.mkdir()
    except OSError as e:
        raise GuestUnavailable(
            f"{path} is missing and cannot be created ({e.strerror}); create it as root "
            f"(an empty directory): {why}"
        ) from e


# ---- the record `fabric doctor` shows ------------------------------------------------------


def record_path() -> Path:
    forced = os.environ.get(RECORD_ENV)
    if forced:
        return Path(forced)
    if os.geteuid() == 0:
        return Path("/var/lib/fabric/guest-verdicts.json")
    return Path.home() / ".cache/fabric/guest-verdicts.json"


def host_fingerprint() -> str:
    """Kernel release and CPU (model and flags): a verdict holds only for the same host."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M)
    digest = hashlib.sha256((flags.group(1) if flags else "").encode()).hexdigest()[:12]
    return f"{os.uname().release} | {model.group(1) if model else '?'} | flags {digest}"


def _record(verdicts: Sequence[Verdict]) -> None:
    """Merge these verdicts into the record (best effort: a read-only home is no error)."""
    path = record_path()
    old = last_record() or {}
    by_name = {v["backend"]: v for v in old.get("verdicts", [])}
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    for v in verdicts:
        if v.ok or v.seconds > 0 or v.backend not in by_name:
            by_name[v.backend] = {**asdict(v), "when": now}
    data = {
        "host": host_fingerprint(),
        "verdicts": [by_name[b.name] for b in BACKENDS if b.name in by_name],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except OSError:
        pass


def last_record() -> dict | None:
    """The recorded verdicts if they were made on this host (same kernel and CPU), else None."""
    try:
        data = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("host") != host_fingerprint():
        return None
    return data
