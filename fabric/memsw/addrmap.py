"""The switch's address map: which egress port (or Hypercast group) owns each byte address.

A memory-semantic switch routes by address, not by destination id: every load, store or
atomic names a global address, and the map says which port's endpoint (memory, accelerator
HBM, or the next switch) owns it. Windows are 64-byte aligned because the fabric moves whole
64-byte flits (UALink requests are 64/128/192/256 B); an unaligned window would make one flit
belong to two owners.

A window with `multicast=True` is a Hypercast window: its `port` is a *group id*, and a write
into it is replicated by the switch to every member port of that group. Groups are dynamic
(`add_group`, `join`, `leave`) because MoE dispatch changes its expert sets at run time; the
windows themselves are fixed when the map is built.

Every method validates before it changes anything, so an error leaves the map as it was.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fabric.errors import FabricError
from fabric.topology.memory import FLIT

if TYPE_CHECKING:
    from fabric.topology.memory import MemorySpec

__all__ = ["FLIT", "AccessError", "AddressMap", "AddressMapError", "Port", "Window",
           "address_map"]


Port = Hashable
"""A switch port id (an int or a str); for a multicast window, its group id."""


class AddressMapError(FabricError):
    """The address map or a multicast group is configured wrongly (overlap, alignment, names)."""


class AccessError(FabricError):
    """A request cannot be served as asked: outside every window, straddling, unaligned, too big.

    The switch turns it into an `Error` response to the requester rather than raising, since a
    remote endpoint's bad request must not stop the switch.
    """


def _span(base: int, end: int) -> str:
    return f"[{base:#x}, {end:#x})"


@dataclass(frozen=True)
class Window:
    """`size` bytes from `base` owned by `port` (if `multicast`: by group `port`'s members)."""

    name: str
    base: int
    size: int
    port: Port
    multicast: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise AddressMapError(f"window {self.name!r}: a window needs a non-empty str name")
        for field in ("base", "size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise AddressMapError(f"window {self.name!r}: {field} must be an int, "
                                      f"got {value!r}")
        if self.base < 0:
            raise AddressMapError(f"window {self.name!r}: base {self.base} is negative")
        if self.size <= 0:
            raise AddressMapError(f"window {self.name!r}: size is {self.size}; a window needs "
                                  f"at least one {FLIT}-byte flit")
        if self.base % FLIT:
            down = self.base - self.base % FLIT
            raise AddressMapError(
                f"window {self.name!r}: base {self.base:#x} is not {FLIT}-byte aligned "
                f"(use {down:#x} or {down + FLIT:#x})")
        if self.size % FLIT:
            up = self.size + FLIT - self.size % FLIT
            raise AddressMapError(
                f"window {self.name!r}: size {self.size} is not a multiple of {FLIT} bytes "
                f"(use {up - FLIT} or {up})")

    @property
    def end(self) -> int:
        """One past the window's last byte."""
        return self.base + self.size

    def __str__(self) -> str:
        return f"window {self.name!r} {_span(self.base, self.end)}"


class AddressMap:
    """Non-overlapping windows, looked up by address, plus the Hypercast groups.

    `lookup(addr, length)` returns the one window that holds the whole access; anything else
    (outside every window, running past a window's end, starting before one) is an
    `AccessError` naming the address and the nearest window.
    """

    def __init__(self, windows: Iterable[Window]) -> None:
        ordered = sorted(windows, key=lambda w: w.base)
        names: dict[str, Window] = {}
        for w in ordered:
            if not isinstance(w, Window):
                raise AddressMapError(f"expected Window, got {type(w).__name__}: {w!r}")
            if w.name in names:
                raise AddressMapError(f"two windows are named {w.name!r}; names must be unique")
            names[w.name] = w
        for a, b in zip(ordered, ordered[1:], strict=False):
            if b.base < a.end:
                overlap = min(a.end, b.end) - b.base
                raise AddressMapError(
                    f"{a} and {b} overlap by {overlap} bytes at {b.base:#x}; move "
                    f"{b.name!r} to {a.end:#x} or shrink {a.name!r}")
        self._windows: tuple[Window, ...] = tuple(ordered)
        self._bases = [w.base for w in ordered]
        self._by_name = names
        self._groups: dict[Port, dict[Port, None]] = {}  # dict as an insertion-ordered set

    @property
    def windows(self) -> tuple[Window, ...]:
        """The windows in address order."""
        return self._windows

    def window(self, name: str) -> Window:
        """The window called `name`."""
        try:
            return self._by_name[name]
        except KeyError:
            raise AddressMapError(f"no window named {name!r}; windows are "
                                  f"{sorted(self._by_name)}") from None

    def nearest(self, addr: int, length: int = 1) -> Window | None:
        """The window closest to the access `[addr, addr + length)` (None if the map is empty)."""
        end = addr + length

        def gap(w: Window) -> int:
            if end <= w.base:
                return w.base - end
            if addr >= w.end:
                return addr - w.end
            return 0

        return min(self._windows, key=gap, default=None)

    def lookup(self, addr: int, length: int) -> Window:
        """The window that holds every byte of `[addr, addr + length)`, or `AccessError`."""
        if not isinstance(addr, int) or not isinstance(length, int):
            raise AccessError(f"address and length must be ints, got {addr!r}, {length!r}")
        if length <= 0:
            raise AccessError(f"access at {addr:#x} has length {length}; it must be positive")
        if addr < 0:
            raise AccessError(f"address {addr:#x} is negative")
        end = addr + length
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0 and addr < self._windows[i].end:
            w = self._windows[i]
            if end <= w.end:
                return w
            raise AccessError(
                f"access {_span(addr, end)} ({length} B at {addr:#x}) runs {end - w.end} bytes "
                f"past the end of {w}; split it at {w.end:#x} or shorten it")
        near = self.nearest(addr, length)
        if near is None:
            raise AccessError(f"address {addr:#x} is outside every window: the map is empty")
        if addr < near.base < end:
            raise AccessError(
                f"access {_span(addr, end)} ({length} B at {addr:#x}) starts "
                f"{near.base - addr} bytes before {near}; start it at {near.base:#x}")
        raise AccessError(
            f"address {addr:#x} ({length} B) is outside every window; the nearest is {near}")

    # -- Hypercast groups ---------------------------------------------------------------------

    @property
    def groups(self) -> dict[Port, tuple[Port, ...]]:
        """A copy of every group's members, in join order."""
        return {g: tuple(m) for g, m in self._groups.items()}

    def members(self, group: Port) -> tuple[Port, ...]:
        """The member ports of `group`, in join order."""
        return tuple(self._group(group))

    def add_group(self, group: Port, ports: Iterable[Port] = ()) -> None:
        """Create Hypercast group `group` with the given member ports."""
        members = list(ports)
        if group in self._groups:
            raise AddressMapError(f"group {group!r} already exists; join() ports to it instead")
        if len(set(members)) != len(members):
            raise AddressMapError(f"group {group!r}: member ports {members} repeat a port")
        self._groups[group] = dict.fromkeys(members)

    def remove_group(self, group: Port) -> None:
        """Delete `group` (writes to its windows then fail until it is added again)."""
        self._group(group)
        del self._groups[group]

    def join(self, group: Port, port: Port) -> None:
        """Add `port` to `group`: later multicast writes are replicated to it too."""
        members = self._group(group)
        if port in members:
            raise AddressMapError(f"port {port!r} is already a member of group {group!r}")
        members[port] = None

    def leave(self, group: Port, port: Port) -> None:
        """Remove `port` from `group`; writes already accepted still reach it."""
        members = self._group(group)
        if port not in members:
            raise AddressMapError(f"port {port!r} is not a member of group {group!r}; members "
                                  f"are {list(members)}")
        del members[port]

    def _group(self, group: Port) -> dict[Port, None]:
        try:
            return self._groups[group]
        except KeyError:
            raise AddressMapError(f"no multicast group {group!r}; add_group() it first "
                                  f"(groups: {list(self._groups)})") from None

    def __repr__(self) -> str:
        return f"AddressMap({list(self._windows)!r})"


def address_map(spec: MemorySpec, port_of: Callable[[str], Port]) -> AddressMap:
    """A memory switch's address map from the file's `memory:` section: each unicast window on
    `port_of(its node)`; each multicast window on the group named after it, whose members are
    `port_of(member)`.

    Members that one port reaches (hosts behind the same next switch) join once: the next
    switch replicates to them itself.
    """
    windows = [Window(w.name, w.base, w.size, port_of(w.node)) for w in spec.windows]
    windows += [Window(m.name, m.base, m.size, m.name, multicast=True) for m in spec.multicast]
    amap = AddressMap(windows)
    for m in spec.multicast:
        amap.add_group(m.name)
        for port in dict.fromkeys(port_of(n) for n in m.members):
            amap.join(m.name, port)
    return amap
