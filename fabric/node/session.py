"""The control channel between a runner and its node processes: typed messages, and both ends.

Every runner (`fabric.run.traffic`, `.lpu`, `.memory`) and every node program it forks
(`fabric.node.runtime`, `fabric.lpu.executor`, `fabric.memsw.endpoint`) speaks this one
protocol over the socket pair `fabric.node.spawn` makes, as frames of `fabric.wire.frames`:

    runner -> node   Plan(body)                 what the node is to do
    node -> runner   Ready()                    sockets bound, waiting
    runner -> node   Go(t0, now)                the shared start time (CLOCK_MONOTONIC ns)
    then, per kind:  Progress(rx, tx), Records(body)     node -> runner (traffic, LPU)
                     Task(body) -> Result(body)          runner -> node -> runner (memory)
                     Sync(now)                           runner -> node (LPU clock resync)
    runner -> node   Stop()                     end now, report what you have
    node -> runner   Done(...)                  the last word (traffic)

A message is a frozen dataclass (named, validated event classes, as h11 has); `body` fields
travel as the frame's msgpack payload, the others in its header. `Channel` is one end of the
socket; `Nodes` is the runner's side of all of them (start every node and wait for its Ready,
naming the one that fails; send Go; stop the rest).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import msgpack
import trio

from ..errors import FabricError
from ..wire.frames import (
    CLOSED,
    NEED_DATA,
    FrameDecoder,
    Header,
    Payload,
    ProtocolError,
    Sentinel,
    encode_frame,
    encode_header,
)

__all__ = ["Auth", "Channel", "Clock", "ClockEstimate", "Done", "Go", "Hello", "Message",
           "MessageReader", "Nodes", "Plan", "Progress", "Ready", "Records", "Refused", "Result",
           "Stop",
           "Sync", "Task", "Welcome", "decode", "encode", "measure_clock"]


@dataclass(frozen=True)
class _Message:
    kind: ClassVar[str] = ""


@dataclass(frozen=True)
class Plan(_Message):
    kind = "plan"
    body: Any


@dataclass(frozen=True)
class Ready(_Message):
    kind = "ready"


@dataclass(frozen=True)
class Go(_Message):
    kind = "go"
    t0: int  # the shared start time
    now: int = 0  # the runner's clock as it sent this (LPU nodes set their clocks by it)


@dataclass(frozen=True)
class Sync(_Message):
    kind = "sync"
    now: int


@dataclass(frozen=True)
class Stop(_Message):
    kind = "stop"


@dataclass(frozen=True)
class Task(_Message):
    kind = "task"
    body: Any


@dataclass(frozen=True)
class Result(_Message):
    kind = "result"
    body: Any


@dataclass(frozen=True)
class Progress(_Message):
    kind = "progress"
    rx: int
    tx: int
    counters: dict[str, int] = field(default_factory=dict)  # retransmissions so far


@dataclass(frozen=True)
class Records(_Message):
    kind = "records"
    body: Any


@dataclass(frozen=True)
class Done(_Message):
    kind = "done"
    rss_start_kb: int = 0
    hwm_kb: int = 0
    transport: dict[str, int] = field(default_factory=dict)


# ---- a node agent's handshake (fabric.node.agent), before the node's own session -------


@dataclass(frozen=True)
class Hello(_Message):
    """agent -> runner, first: who serves here, and a fresh challenge."""

    kind = "hello"
    version: str  # the agent's fabric version
    node: str  # the node it serves ("" when it serves whichever node the runner names)
    host: str  # the machine it runs on, as it calls itself
    nonce: str  # hex


@dataclass(frozen=True)
class Auth(_Message):
    """runner -> agent: proof of the shared secret over both challenges, and what to run."""

    kind = "auth"
    proof: str  # hex HMAC-SHA256
    nonce: str  # the runner's challenge, hex
    version: str
    node: str
    target: str  # the node program (`fabric.node.agent.TARGETS`), or "clock"


@dataclass(frozen=True)
class Welcome(_Message):
    """agent -> runner: the agent's proof of the same secret (so results go to no impostor)."""

    kind = "welcome"
    proof: str


@dataclass(frozen=True)
class Refused(_Message):
    """agent -> runner, instead of `Welcome`: why it will not run this session (the node is
    running for another runner)."""

    kind = "refused"
    reason: str


@dataclass(frozen=True)
class Clock(_Message):
    """runner -> agent with `sent`; agent -> runner with `sent` echoed and its `now`."""

    kind = "clock"
    sent: int
    now: int = 0


Message = (Plan | Ready | Go | Sync | Stop | Task | Result | Progress | Records | Done | Hello
           | Auth | Welcome | Refused | Clock)
_KINDS: dict[str, type[_Message]] = {c.kind: c for c in (Plan, Ready, Go, Sync, Stop, Task,
                                                          Result, Progress, Records, Done, Hello,
                                                          Auth, Welcome, Refused, Clock)}


def encode(msg: _Message) -> bytes:
    """One frame: the header holds the kind and the fields, a `body` is the msgpack payload."""
    header: dict[str, Any] = {"t": msg.kind}
    for f in fields(msg):
        if f.name != "body":
            header[f.name] = getattr(msg, f.name)
    if hasattr(msg, "body"):
        return encode_frame(header, msgpack.packb(msg.body))
    return encode_header({**header, "n": 0})


def decode(header: Mapping[str, Any], payload: bytes = b"") -> Message:
    """The message one frame holds; ProtocolError for a kind or field this protocol lacks."""
    cls = _KINDS.get(header.get("t", ""))
    if cls is None:
        raise ProtocolError(f"unknown control message {header.get('t')!r}")
    kw = {k: v for k, v in header.items() if k not in ("t", "n")}
    if any(f.name == "body" for f in fields(cls)):
        kw["body"] = msgpack.unpackb(payload, strict_map_key=False) if payload else None
    try:
        msg = cls(**kw)
    except TypeError as e:
        raise ProtocolError(f"control message {cls.kind!r}: {e}") from None
    return msg  # type: ignore[return-value]  # every class in _KINDS is one of Message's


@dataclass(frozen=True)
class ClockEstimate:
    """The node's clock minus the runner's, and how far off that can be (half the round
    trip of the sample it came from), both in ns."""

    offset_ns: int
    error_ns: int

    @staticmethod
    def combine(a: ClockEstimate | None, b: ClockEstimate | None) -> ClockEstimate | None:
        """Start and end estimates as one: their mean, its error widened by their drift."""
        if a is None or b is None:
            return a or b
        mid = (a.offset_ns + b.offset_ns) // 2
        return ClockEstimate(mid, max(a.error_ns, b.error_ns) + abs(a.offset_ns - mid))


def measure_clock(samples: list[tuple[int, int, int]]) -> ClockEstimate:
    """From (sent, their now, received back) samples: the one with the shortest round trip
    bounds the offset best (NTP's clock filter, in its simplest form)."""
    t1, t2, t4 = min(samples, key=lambda s: s[2] - s[0])
    return ClockEstimate(offset_ns=t2 - (t1 + t4) // 2, error_ns=max(1, (t4 - t1 + 1) // 2))



class MessageReader:
    """Bytes in, messages out (sans-IO): what either kind of socket end reads with."""

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._header: dict[str, Any] | None = None

    def receive_data(self, data: bytes) -> None:
        """More bytes from the socket (b"" once it has closed)."""
        self._decoder.receive_data(data)

    def next_message(self) -> Message | Sentinel | None:
        """The next whole message; NEED_DATA until its bytes are in; None once closed.
        ProtocolError for bytes that are not this protocol."""
        while True:
            ev = self._decoder.next_event()
            if ev is NEED_DATA:
                return NEED_DATA
            if ev is CLOSED:
                return None
            if isinstance(ev, Header):
                if ev["n"] == 0:
                    return decode(ev)
                self._header = dict(ev)
                continue
            if isinstance(ev, Payload):
                assert self._header is not None
                return decode(self._header, bytes(ev.data))


class Channel:
    """One end of a control socket: typed messages out and in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._reader = MessageReader()
        self._lock = trio.Lock()  # several tasks of a node may report at once

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        """The node's end, from the descriptor `fabric.node.spawn` hands it: a socket pair's
        end, or an agent's TCP connection to the runner (the socket says which)."""
        return cls(trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket(fileno=fd))))

    @classmethod
    def from_socket(cls, sock: socket.socket) -> Channel:
        """The runner's end of a node's socket pair."""
        return cls(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))

    async def send(self, msg: _Message) -> None:
        """Send `msg` whole. A caller cancelled while it waits for the channel sends nothing;
        once its message has started out, the rest follows before the cancellation takes
        effect: half a message would leave every later one unreadable."""
        async with self._lock:
            data = encode(msg)
            with trio.CancelScope(shield=True):
                await self.stream.send_all(data)

    async def receive(self) -> Message | None:
        """The next message, or None once the other end has closed (or died)."""
        while (msg := self._reader.next_message()) is NEED_DATA:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None  # the other end died: same as closed
            self._reader.receive_data(data)
        return msg  # type: ignore[return-value]  # NEED_DATA is ruled out above


class Nodes:
    """The runner's side of every node's channel, by node name."""

    def __init__(self, procs: Mapping[str, socket.socket], what: str = "node",
                 offsets: Mapping[str, int] | None = None) -> None:
        self.channels = {name: Channel.from_socket(sock) for name, sock in procs.items()}
        self.what = what  # "node", "LPU node", "memory node": how errors name one
        # node clock minus the runner's, per node on another machine (its agent measured it):
        # the runner's times in Go and Sync reach such a node on its own clock
        self.offsets = {n: off for n, off in (offsets or {}).items() if off}

    def on_clock_of(self, name: str, msg: _Message) -> _Message:
        """`msg` with the runner's times in it moved onto node `name`'s clock."""
        off = self.offsets.get(name, 0)
        if not off:
            return msg
        if isinstance(msg, Go):
            return Go(t0=msg.t0 + off, now=msg.now + off if msg.now else 0)
        if isinstance(msg, Sync):
            return Sync(now=msg.now + off)
        return msg

    def __getitem__(self, name: str) -> Channel:
        return self.channels[name]

    async def start(self, plans: Mapping[str, Any], within: float) -> None:
        """Send each node its plan and wait for every Ready; FabricError names the first
        node that closes instead (its own error is on stderr) or `within` seconds passing."""
        for name, body in plans.items():
            try:
                await self.channels[name].send(Plan(body))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise FabricError(f"{self.what} {name} failed to start (its error is "
                                  "above)") from None
        with trio.move_on_after(within) as scope:
            for name in plans:
                msg = await self.channels[name].receive()
                if not isinstance(msg, Ready):
                    raise FabricError(f"{self.what} {name} failed to start (its error is above)")
        if scope.cancelled_caught:
            raise FabricError(f"{self.what}s did not get ready within {within:.0f} s")

    async def send(self, name: str, msg: _Message) -> None:
        """`msg` to node `name`, on its clock."""
        await self.channels[name].send(self.on_clock_of(name, msg))

    async def broadcast(self, msg: _Message, names: list[str] | None = None) -> None:
        """`msg` to every node (or those named); a node already gone is passed over."""
        for name in names if names is not None else list(self.channels):
            try:
                await self.channels[name].send(self.on_clock_of(name, msg))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
