"""Thin OS helpers for the userspace link backend: TUN devices, namespaces, timerfd, IPv4 ECN.

Only the standard library and ctypes (no pyroute2 here: one module in the project owns it).
Namespace switches (`setns`) act on the calling thread only; every helper that switches
switches back before it returns, also on error.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNGETIFF = 0x800454D2
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16
NETNS_RUN_DIR = "/run/netns"

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1
PR_SET_NAME = 15
PR_SET_TIMERSLACK = 29


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.timerfd_create.argtypes = (ctypes.c_int, ctypes.c_int)


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


_libc.timerfd_settime.argtypes = (
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(_Itimerspec),
    ctypes.c_void_p,
)


class TunError(OSError):
    """A TUN or namespace operation failed; the message says which device or namespace."""


def _oserror(what: str) -> OSError:
    err = ctypes.get_errno()
    return TunError(err, f"{what}: {os.strerror(err)}")


# -- namespaces ------------------------------------------------------------------------------


def netns_path(netns: str) -> str:
    """The bind-mount path of a named network namespace (as `ip netns add` makes it)."""
    if "/" in netns:
        return netns
    return os.path.join(NETNS_RUN_DIR, netns)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace open at `fd`."""
    if _libc.setns(fd, nstype) != 0:
        raise _oserror("setns")


@contextlib.contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the body with the calling thread in network namespace `netns` (None: stay put).

    Sockets and TUN fds opened inside keep belonging to that namespace after the switch back.
    """
    if netns is None:
        yield
        return
    try:
        target = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TunError(errno.ENOENT, f"network namespace {netns!r} does not exist") from None
    try:
        home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net",
                       os.O_RDONLY | os.O_CLOEXEC)
    except Exception:
        os.close(target)
        raise
    try:
        try:
            setns(target)
        except OSError as exc:
            raise TunError(exc.errno, f"entering network namespace {netns!r}: {exc.strerror}")\
                from None
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)


# -- TUN devices -----------------------------------------------------------------------------


def _ifreq(name: str, flags: int) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ:
        raise TunError(errno.EINVAL, f"bad interface name {name!r} (1-15 bytes)")
    return struct.pack("16sH22x", raw, flags)


def _tunsetiff(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise TunError(exc.errno, f"TUNSETIFF {name}: {exc.strerror}") from None
    return fd


def create_persistent_tun(name: str) -> None:
    """Create a persistent L3 TUN device (IFF_TUN | IFF_NO_PI) in the current namespace."""
    fd = _tunsetiff(name)
    try:
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as exc:
        raise TunError(exc.errno, f"TUNSETPERSIST {name}: {exc.strerror}") from None
    finally:
        os.close(fd)


def delete_persistent_tun(name: str) -> None:
    """Remove a persistent TUN device of the current namespace (it must not be in use)."""
    if not device_exists(name):
        raise TunError(errno.ENODEV, f"no device {name!r}")
    fd = _tunsetiff(name)
    try:
        fcntl.ioctl(fd, TUNSETPERSIST, 0)
    except OSError as exc:
        raise TunError(exc.errno, f"TUNSETPERSIST {name}: {exc.strerror}") from None
    finally:
        os.close(fd)


def device_exists(name: str) -> bool:
    """Whether the calling thread's network namespace has a device `name`."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def open_tun(dev: str, netns: str | None = None) -> int:
    """Attach to the existing TUN device `dev` in namespace `netns`; return a non-blocking fd.

    Refuses to create a device: TUNSETIFF would silently make a new transient one when the
    name is missing, so the device is looked up first.
    """
    with in_netns(netns):
        if not device_exists(dev):
            where = f" in network namespace {netns!r}" if netns else ""
            raise TunError(errno.ENODEV, f"no device {dev!r}{where}")
        fd = _tunsetiff(dev)
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    return fd


# -- timerfd ---------------------------------------------------------------------------------


class TimerFd:
    """A CLOCK_MONOTONIC timerfd, non-blocking, armed with absolute deadlines in ns.

    Python 3.11 has no `os.timerfd_*`; this goes through ctypes with a preallocated struct so
    re-arming costs one syscall. Wait for it with `trio.lowlevel.wait_readable(timer.fileno())`.
    """

    def __init__(self) -> None:
        fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            raise _oserror("timerfd_create")
        self._fd = fd
        self._spec = _Itimerspec()
        self._ref = ctypes.byref(self._spec)
        self.armed_ns: int | None = None

    def fileno(self) -> int:
        return self._fd

    def set_abs(self, deadline_ns: int) -> None:
        """Fire at CLOCK_MONOTONIC `deadline_ns` (immediately if it has passed)."""
        if deadline_ns < 1:
            deadline_ns = 1  # 0 would disarm
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        if _libc.timerfd_settime(self._fd, TFD_TIMER_ABSTIME, self._ref, None) != 0:
            raise _oserror("timerfd_settime")
        self.armed_ns = deadline_ns

    def disarm(self) -> None:
        value = self._spec.it_value
        value.tv_sec = value.tv_nsec = 0
        if _libc.timerfd_settime(self._fd, TFD_TIMER_ABSTIME, self._ref, None) != 0:
            raise _oserror("timerfd_settime")
        self.armed_ns = None

    def clear(self) -> int:
        """Consume expirations; return how many (0 if it had not fired)."""
        try:
            return int.from_bytes(os.read(self._fd, 8), "little")
        except BlockingIOError:
            return 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TimerFd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- process hints ---------------------------------------------------------------------------


def set_timer_slack(ns: int = 1) -> None:
    """Shrink the thread's timer slack (default 50 us) so timed wake-ups are not coalesced."""
    _libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0)


M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3


def keep_freed_memory(nbytes: int = 256 << 20) -> None:
    """Tell glibc malloc to keep up to `nbytes` of freed heap instead of returning it.

    A relay that holds packets for a delay frees buffers in a different order than it
    allocates them; by default glibc then trims the heap and every new packet buffer
    page-faults fresh memory in (measured: a quarter of the engine's CPU at MTU 9000).
    """
    mallopt = getattr(_libc, "mallopt", None)
    if mallopt is None:  # not glibc
        return
    mallopt(M_MMAP_THRESHOLD, 1 << 20)
    mallopt(M_TRIM_THRESHOLD, nbytes)
    mallopt(M_TOP_PAD, 16 << 20)


def set_thread_name(name: str) -> None:
    """Set the kernel's comm name (15 bytes, shown by ps/top) of the calling thread."""
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
