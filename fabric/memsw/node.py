"""The memory-switch node process: memory transactions in, `MemorySwitch` decisions out.

`python -m fabric.memsw.node CONFIG.json` enters the switch's namespace, binds UDP port
`MEM_PORT` and serves until SIGTERM. Endpoints send their load/store/atomic/contribute
transactions (`fabric.memsw.wire`) to the switch's address on their link; the switch routes
each by address (not by IP), replicates Hypercast writes, sums reduce contributions, applies
credit flow control and its timing model (port-to-port latency, serialisation at the port
rate), and sends each `Deliver` and `Respond` action when the core releases it. IP traffic
that is not a memory transaction (message passing between the same endpoints) is forwarded by
the namespace's kernel as usual, over the same links.

Ports are the neighbouring nodes, by name. A datagram's port is the neighbour whose link
address it came from. A request delivered to an endpoint carries `src`, the index of the
requester's port here, which the endpoint echoes in its response.

**Two tiers.** A window behind another memory switch leads to the port toward it. That switch
sees this one as a requester, and the response comes back as from an endpoint. Tags are only
unique per requester, so a request forwarded to a switch port gets a fresh tag here. The
original tag is restored on the response.

Times: the core runs in fabric time, `(monotonic - t0) / time_scale`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import sys
import time
from dataclasses import replace
from typing import Any, cast

import trio

from fabric.errors import FabricError
from fabric.memsw.addrmap import AddressMap, Window
from fabric.memsw.ops import (
    AtomicAdd,
    Contribute,
    Error,
    Op,
    Read,
    ReadResp,
    ReduceResult,
    Response,
    Write,
    WriteAck,
    completion_timeout_s,
)
from fabric.memsw.switch import Deliver, MemorySwitch, PortConfig, ReduceGroup
from fabric.memsw.wire import (
    MEM_PORT,
    Create,
    Credit,
    Join,
    Leave,
    Packer,
    WireError,
    datagram_limit,
    decode_all,
    encode,
)
from fabric.net.daemon import serve_until_signal, write_json_atomic
from fabric.net.tun import TimerFd, netns_path, set_thread_name, set_timer_slack, setns

STATS_INTERVAL_S = 2.0
BATCH = 64
LOST = "lost: no answer within the completion timeout"


def build_switch(cfg: dict[str, Any]) -> MemorySwitch:
    """The sans-IO core from the process config (`fabric.memsw.deploy.switch_config`)."""
    windows = [Window(w["name"], w["base"], w["size"], w["port"]) for w in cfg["windows"]]
    windows += [Window(m["name"], m["base"], m["size"], m["name"], multicast=True)
                for m in cfg["multicast"]]
    amap = AddressMap(windows)
    for m in cfg["multicast"]:
        amap.add_group(m["name"], m["members"])
    ports = {p["name"]: PortConfig(rate_bps=p["rate_bps"], latency_ns=p["latency_ns"],
                                   credits=p["credits"]) for p in cfg["ports"]}
    groups = [ReduceGroup(g["name"], tuple(g["members"]), g["dtype"]) for g in cfg["reduce"]]
    # a port's back-to-back messages leave as one frame, one datagram (see MemorySwitch)
    frame = min(datagram_limit(int(p.get("mtu", 1500))) for p in cfg["ports"])
    return MemorySwitch(amap, ports, groups, max_txn=cfg["txn"], frame_bytes=frame)


class MemorySwitchNode:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.core = build_switch(cfg)
        self.scale = float(cfg["time_scale"])
        self.t0 = time.monotonic_ns()
        self.names = [p["name"] for p in cfg["ports"]]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.addr = {p["name"]: (p["address"], MEM_PORT) for p in cfg["ports"]}
        self.port_of = {p["address"]: p["name"] for p in cfg["ports"]}
        self.switch_ports = set(cfg.get("switch_ports", ()))
        # (port, src port, tag, offset) -> the request delivered there, awaiting its answer
        self.delivered: dict[tuple[str, str | None, int, int], Op] = {}
        # forwarded to a switch port under a fresh tag: (port, tag) -> original request
        self.forwarded: dict[tuple[str, int], Op] = {}
        # when each of those went out (host ns): unanswered past the completion timeout, it is
        # lost (a link down, a dropped datagram) and its request buffer is reclaimed
        self.sent_at: dict[tuple, int] = {}
        self.timeout_ns = int(completion_timeout_s(int(cfg.get("timeout_ns", 100_000)),
                                                   self.scale) * 1e9)
        self.timed_out: dict[str, int] = dict.fromkeys(self.names, 0)
        self.late = 0  # answers that came after their request was given up
        self.given_up: set[tuple] = set()
        self.tags = itertools.count(1)
        self.sock: socket.socket | None = None
        self.timer = TimerFd()
        self.errors = 0
        self.datagrams_in = 0
        self.datagrams_out = 0
        self.messages_in = 0
        # messages queued per port while a batch of events is handled, sent as few datagrams
        # (at most a port's MTU less IP/UDP headers, so nothing is fragmented)
        self.packer = Packer(min(datagram_limit(int(p.get("mtu", 1500)))
                                 for p in cfg["ports"]))
        self.bytes_by_port_out: dict[str, int] = dict.fromkeys(self.names, 0)

    def now(self) -> int:
        return int((time.monotonic_ns() - self.t0) / self.scale)

    def open(self) -> None:
        fd = os.open(netns_path(self.cfg["netns"]), os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd)
        finally:
            os.close(fd)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        s.bind(("0.0.0.0", MEM_PORT))
        s.setblocking(False)
        self.sock = s

    # -- sending ------------------------------------------------------------------------------

    def _send(self, port: str, msg: Any, *, src: int = 0, credit: int = 0) -> None:
        """Queue `msg` for `port`: it goes out with the other messages for that port when the
        current batch of events is handled (`_flush_out`), several to a datagram."""
        for dest, parts in self.packer.add(port, encode(msg, src=src, credit=credit)):
            self._sendmsg(cast(str, dest), parts)

    def _flush_out(self) -> None:
        """Send every queued datagram and re-arm the timer for the core's next deadline."""
        for dest, parts in self.packer.flush():
            self._sendmsg(cast(str, dest), parts)
        self._arm()

    def _sendmsg(self, port: str, parts: list) -> None:
        assert self.sock is not None
        try:
            self.sock.sendmsg(parts, [], 0, self.addr[port])
            self.datagrams_out += 1
            self.bytes_by_port_out[port] += sum(len(p) for p in parts)
        except OSError:
            self.errors += 1

    def _act(self, actions: list) -> None:  # noqa: ANN401 - list of Deliver | Respond
        if not actions:
            return
        sent = time.monotonic_ns()  # one clock read for the batch: timeouts are far coarser
        switch_ports = self.switch_ports
        for a in actions:
            if type(a) is Deliver:
                op = a.op
                port = cast(str, a.port)  # the core keys ports by any hashable; ours are names
                contribute = type(op) is Contribute
                if port in switch_ports and not contribute:
                    tag = next(self.tags)
                    self.forwarded[(port, tag)] = op
                    self.sent_at[(port, tag)] = sent
                    self._send(port, replace(op, tag=tag, src_port=0))
                else:
                    key = (port, cast(str, op.src_port), op.tag, op.offset)
                    self.delivered[key] = op
                    if not contribute:
                        self.sent_at[key] = sent
                    self._send(port, op, src=self.index[op.src_port])
            else:
                # a switch that sent us a request gets its request buffer back with the answer
                back = int(a.port in switch_ports and type(a.resp) is not ReduceResult)
                self._send(a.port, a.resp, credit=back)

    def _arm(self) -> None:
        """One timer syscall only when the deadline changed: re-arming for every event was
        the switch's largest cost (a `timerfd_settime` per transaction)."""
        d = self.core.next_deadline()
        if d is None:
            if self.timer.armed_ns is not None:
                self.timer.disarm()
        else:
            at = self.t0 + int(d * self.scale)
            if at != self.timer.armed_ns:
                self.timer.set_abs(at)

    # -- receiving ----------------------------------------------------------------------------

    def _drain(self) -> None:
        """Handle up to `BATCH` datagrams (each one or several messages), then send what they
        released, batched per port."""
        assert self.sock is not None
        try:
            for _ in range(BATCH):
                try:
                    data, (addr, _port) = self.sock.recvfrom(65536)
                except BlockingIOError:
                    return
                port = self.port_of.get(addr)
                if port is None:
                    continue
                self.datagrams_in += 1
                try:
                    for msg, src, credit in decode_all(data, src_port=port):
                        self.messages_in += 1
                        self._on_message(port, msg, src, credit)
                except (WireError, ValueError) as e:
                    self.errors += 1
                    sys.stderr.write(f"memory switch {self.cfg['node']}: from {port}: {e}\n")
        finally:
            self._flush_out()

    def _on_message(self, port: str, msg: Any, src: int, credit: int) -> None:
        now = self.now()
        core = self.core
        kind = type(msg)  # decoded messages are of these exact classes: one set lookup
        if kind in _REQUESTS:  # a request from the neighbour on `port`
            op = msg if msg.src_port == port else replace(msg, src_port=port)
            self._act(core.submit(op, now))
            return
        if kind is Credit:
            self._act(core.on_credit(port, msg.n, now))
            return
        if kind is Join:
            core.join(msg.group, port)
            return
        if kind is Leave:
            core.leave(msg.group, port)
            return
        if kind is Create:
            self._create(port, msg)
            return
        if kind in _RESPONSES:  # an answer from the endpoint (or switch) on `port`
            resp: Response = msg
            request: Op | None
            if (port, resp.tag) in self.given_up:
                self.given_up.discard((port, resp.tag))
                self.late += 1
                return
            if port in self.switch_ports and (port, resp.tag) in self.forwarded:
                request = self.forwarded.pop((port, resp.tag))
                self.sent_at.pop((port, resp.tag), None)
                resp = replace(resp, tag=request.tag)
            else:
                requester = self.names[src] if src < len(self.names) else None
                key = (port, requester, resp.tag, resp.offset)
                request = self.delivered.pop(key, None)
                self.sent_at.pop(key, None)
                if request is None:
                    if key in self.given_up:  # its buffer was reclaimed: the answer is late
                        self.given_up.discard(key)
                        self.late += 1
                    else:
                        self.errors += 1
                    return
            actions = core.complete(port, request, resp, now)
            if credit:
                actions += core.on_credit(port, credit, now)
            self._act(actions)
            return
        raise WireError(f"{kind.__name__} is not a message the switch takes")

    def _create(self, port: str, msg: Create) -> None:
        """A new Hypercast group at run time: the address map gains its multicast window
        (checked against every other window, as the file's are); members then join."""
        old = self.core.address_map
        try:
            new = AddressMap([*old.windows, Window(msg.group, msg.base, msg.size, msg.group,
                                                   multicast=True)])
            for w in old.windows:
                if w.multicast:
                    new.add_group(w.name, old.members(w.name))
            new.add_group(msg.group, [])
        except FabricError as e:
            self.errors += 1
            self._send(port, Error(0, f"creating group {msg.group!r}: {e}"))
            return
        self.core.address_map = new

    def expire(self, now_host_ns: int) -> int:
        """Give up the requests unanswered for longer than the completion timeout: each is
        lost on the way (to the endpoint or back). The switch completes it with an `Error`
        (as a PCIe completion timeout does), so no later request to the same bytes waits
        behind it for ever, and the request buffer it held at the far end is free again: its
        credit comes back here. Returns how many were given up."""
        stale = [k for k, t in self.sent_at.items() if now_host_ns - t > self.timeout_ns]
        if not stale:
            return 0
        actions = []
        now = self.now()
        for k in stale:
            del self.sent_at[k]
            self.given_up.add(k)
            op = self.forwarded.pop(k) if len(k) == 2 else self.delivered.pop(k)
            port = k[0]
            self.timed_out[port] += 1
            actions += self.core.complete(port, op, Error(op.tag, LOST, offset=op.offset), now)
            actions += self.core.on_credit(port, 1, now)
        self._act(actions)
        self._flush_out()
        self.write_stats()  # rare: the runner reads what was given up without waiting
        return len(stale)

    def _on_timer(self) -> None:
        self.timer.clear()
        self.timer.armed_ns = None
        self._act(self.core.advance(self.now()))
        self._flush_out()

    # -- loops --------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
        async def rx() -> None:
            assert self.sock is not None
            while True:
                await trio.lowlevel.wait_readable(self.sock)
                self._drain()

        async def tick() -> None:
            while True:
                await trio.lowlevel.wait_readable(self.timer.fileno())
                self._on_timer()

        async def stats() -> None:
            while True:
                self.write_stats()
                await trio.sleep(STATS_INTERVAL_S)

        async def sweep() -> None:
            while True:
                await trio.sleep(self.timeout_ns / 2e9)
                self.expire(time.monotonic_ns())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(rx)
            nursery.start_soon(tick)
            nursery.start_soon(stats)
            nursery.start_soon(sweep)
            task_status.started()

    def statistics(self, *, final: bool = False) -> dict[str, Any]:
        st = self.core.statistics()
        ports = {name: {f: getattr(p, f) for f in p.__dataclass_fields__}
                 for name, p in st.ports.items()}
        for name, p in ports.items():
            p["datagram_bytes_out"] = self.bytes_by_port_out.get(cast(str, name), 0)
        return {"node": self.cfg["node"], "final": final, "pid": os.getpid(),
                "ports": ports, "replicated": st.replicated, "reductions": st.reductions,
                "rejected": st.rejected, "errors": self.errors, "late": self.late,
                "timed_out": dict(self.timed_out),
                "datagrams_in": self.datagrams_in, "datagrams_out": self.datagrams_out,
                "messages_in": self.messages_in, "messages_out": self.packer.messages}

    def write_stats(self, *, final: bool = False) -> None:
        if self.cfg.get("stats_path"):
            write_json_atomic(self.cfg["stats_path"], self.statistics(final=final))


_REQUESTS = frozenset((Read, Write, AtomicAdd, Contribute))
_RESPONSES = frozenset((ReadResp, WriteAck, Error, ReduceResult))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m fabric.memsw.node CONFIG.json`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m fabric.memsw.node CONFIG.json\n")
        return 2
    try:
        with open(args[0]) as fh:
            cfg = json.load(fh)
        node = MemorySwitchNode(cfg)
    except Exception as exc:  # noqa: BLE001 - a bad config, reported as the start error
        sys.stderr.write(f"memory switch: config {args[0]}: {exc}\n")
        return 2
    try:
        node.open()
    except OSError as exc:
        sys.stderr.write(f"memory switch {cfg.get('node')}: {exc}\n")
        return 2
    set_timer_slack(1)
    set_thread_name(f"fabmem-{cfg['node']}"[:15])
    try:
        trio.run(serve_until_signal, node.serve)
    finally:
        with contextlib.suppress(OSError):
            node.write_stats(final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
