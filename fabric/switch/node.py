"""The RoCE-style switch node process: moves packets between the ports and `SwitchCore`.

`python -m fabric.switch.node CONFIG.json` enters the switch's namespace, opens one packet
socket per port (`AF_PACKET`, IP only, its own transmissions ignored) and a UDP socket on the
PFC port, prints `READY <pid>` and relays until SIGTERM. The kernel of the namespace does not
forward (the plan turns `ip_forward` off), so every transit packet goes through here once:

    port socket -> core.receive(fabric now) -> per-class queues -> timerfd at the port's
    departure time -> core.dequeue -> port socket

The core works in fabric time (rates and delays as the topology file states them); this layer
converts: `fabric_ns = (monotonic_ns - t0) / time_scale`. Departures are serialised in virtual
time: a port's next packet leaves at the time the previous one finished serialising, even when
the timer fired a little late, so a late wake-up costs burstiness, never rate.

PFC frames travel as UDP datagrams to port `PFC_PORT` (links carry IP only, no Ethernet
header); the payload is 802.1Qbb's. Statistics (`SwitchCore.stats`) are written to the stats
path every `STATS_INTERVAL_S` and once more, final, at exit.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import signal
import socket
import sys
import time
from typing import Any

import trio

from fabric.net.daemon import serve_until_signal, write_json_atomic, write_json_sliced
from fabric.net.tun import (
    TimerFd,
    keep_freed_memory,
    netns_path,
    set_thread_name,
    set_timer_slack,
    setns,
)
from fabric.switch.core import (
    ClassSpec,
    PortSpec,
    RedParams,
    SwitchCore,
    SwitchSpec,
)
from fabric.switch.pfc import PFC_PORT, pack_pfc, unpack_pfc

ETH_P_IP = 0x0800
PACKET_IGNORE_OUTGOING = 23  # linux/if_packet.h: do not hand our own transmissions back
SOL_PACKET = 263  # linux/socket.h (the socket module does not export it)
BATCH = 64
STATS_INTERVAL_S = 2.0  # a write with full queue samples costs ms: rare, and final at exit
# Departures this close (host time) count as due now: without it, a batch of packets read
# at once would each wait for a timer wake-up a few ns apart (the engine's COALESCE_NS).
COALESCE_WALL_NS = 20_000
# A timer that fires this much (host time) after a port's departure time still sends in
# virtual time; beyond it the port restarts from now (it was idle or the host stalled).
LATE_CAP_NS = 2_000_000
PFC_TOS = 7 << 5  # CS7: network control


def ip_int(addr: str) -> int:
    return int.from_bytes(socket.inet_aton(addr), "big")


def device_tx_drops() -> dict[str, int]:
    """Transmit drops per device of the calling process's namespace (/proc/self/net/dev)."""
    out = {}
    try:
        with open("/proc/self/net/dev") as fh:
            for line in fh.readlines()[2:]:
                name, _, rest = line.partition(":")
                fields = rest.split()
                if len(fields) >= 12:
                    out[name.strip()] = int(fields[11])  # tx: bytes packets errs drop ...
    except OSError:
        pass
    return out


def routes_of(table: list[Any], all_addresses: Any = ()) -> dict[int, tuple[int, ...]]:  # noqa: ANN401
    """The core's routes from a table of (destination or "default", egress ports)."""
    routes: dict[int, tuple[int, ...]] = {}
    default = None
    for dst, idx in table:
        if dst == "default":
            default = tuple(idx)
        else:
            routes[ip_int(dst)] = tuple(idx)
    if default is not None:  # a switch with one neighbour: every known address goes there
        for addr in all_addresses:
            routes.setdefault(ip_int(addr), default)
    return routes


def build_spec(cfg: dict[str, Any]) -> SwitchSpec:
    """The core's spec from the process config (`fabric.net.lifecycle.switch_config`)."""
    ports = tuple(PortSpec(name=p["dev"], rate_bps=p["rate_bps"], delay_ns=p["delay_ns"],
                           mtu=p["mtu"], peer=p["peer"]) for p in cfg["ports"])
    classes = tuple(
        ClassSpec(name=c["name"], dscp=c["dscp"], priority=c["priority"],
                  lossless=c["lossless"], weight=c["weight"], strict=c["strict"],
                  red=None if c["red"] is None else RedParams(*c["red"]),
                  queue_bytes=c.get("queue_bytes"))
        for c in cfg["classes"])
    routes = routes_of(cfg["routes"], cfg.get("all_addresses", ()))
    s = cfg["settings"]
    return SwitchSpec(
        name=cfg["node"], ports=ports, classes=classes, routes=routes,
        local=frozenset(ip_int(a) for a in cfg["local"]),
        buffer_bytes=s["buffer_bytes"], buffer_mode=s["buffer_mode"], pfc=s["pfc"],
        xoff_bytes=s["xoff_bytes"], xon_bytes=s["xon_bytes"], int_enabled=s["int_enabled"],
        ecmp_seed=cfg.get("seed", 0), red_seed=cfg.get("seed", 0) + 1,
        sample_interval_ns=cfg.get("sample_interval_ns", 1000))


class SwitchNode:
    """The sockets, the timer and the core of one switch."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.core = SwitchCore(build_spec(cfg))
        self.scale = float(cfg["time_scale"])
        self.t0 = time.monotonic_ns()
        self.ports: list[socket.socket] = []
        self.devs = [p["dev"] for p in cfg["ports"]]
        # where a port's frames go: TUN ports carry bare IP; veth ports need the neighbour's
        # Ethernet address (the netem backend), which the config carries
        self.dest = [(p["dev"], ETH_P_IP, 0, 0, bytes.fromhex(p["peer_mac"].replace(":", "")))
                     if p.get("peer_mac") else (p["dev"], ETH_P_IP) for p in cfg["ports"]]
        self.peer_port = {p["peer_address"]: i for i, p in enumerate(cfg["ports"])}
        self.peer_addr = [p["peer_address"] for p in cfg["ports"]]
        self.pfc_sock: socket.socket | None = None
        self.timer = TimerFd()
        self.heap: list[tuple[int, int]] = []  # (wall deadline, port)
        self.scheduled = [0] * len(self.devs)  # each port's pending wall deadline (0: none)
        self.tx_errors = 0
        self.pfc_errors = 0
        self.ring_base: dict[str, int] = {}
        self.route_reloads = 0

    # time

    def fabric_now(self) -> int:
        return int((time.monotonic_ns() - self.t0) / self.scale)

    def wall(self, fabric_ns: int) -> int:
        return self.t0 + int(fabric_ns * self.scale)

    # sockets

    def open(self) -> None:
        fd = os.open(netns_path(self.cfg["netns"]), os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd)  # the whole (single-threaded) process lives in the switch's namespace
        finally:
            os.close(fd)
        for dev in self.devs:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((dev, ETH_P_IP))
            s.setblocking(False)
            self.ports.append(s)
        self.ring_base = device_tx_drops()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, PFC_TOS)
        u.bind(("0.0.0.0", PFC_PORT))
        u.setblocking(False)
        self.pfc_sock = u

    def close(self) -> None:
        for s in self.ports:
            s.close()
        if self.pfc_sock is not None:
            self.pfc_sock.close()
        self.timer.close()

    # hot path

    def _drain(self, port: int) -> None:
        sock = self.ports[port]
        receive = self.core.receive
        now = self.fabric_now()
        for _ in range(BATCH):
            try:
                pkt = bytearray(sock.recv(65535))
            except BlockingIOError:
                break
            receive(now, port, pkt)
        self._service(now)  # a drop can raise a pause too, not only a queued packet

    def _service(self, now: int) -> None:
        """Send PFC frames the core asked for and whatever is due on ports it touched."""
        self._send_pfc()
        ports = self.core.kick_ports()
        if ports:
            now = max(now, self.fabric_now())
            for port in ports:
                self._transmit(port, now)

    def _transmit(self, port: int, now: int) -> None:
        core = self.core
        sock = self.ports[port]
        dev = self.dest[port]
        late_cap = int(LATE_CAP_NS / self.scale)
        due = now + int(COALESCE_WALL_NS / self.scale)
        while True:
            t = core.next_departure(port)
            if t is None:
                return
            if t > due:
                wall = self.wall(t)
                if self.scheduled[port] != wall:
                    self.scheduled[port] = wall
                    heapq.heappush(self.heap, (wall, port))
                    if self.timer.armed_ns is None or wall < self.timer.armed_ns:
                        self.timer.set_abs(wall)
                return
            pkt = core.dequeue(max(t, now - late_cap), port)  # virtual time, bounded
            if pkt is None:
                return
            try:
                sock.sendto(pkt, dev)
            except OSError:
                self.tx_errors += 1  # the link's device queue was full: a drop on the wire

    def _on_timer(self) -> None:
        self.timer.clear()
        self.timer.armed_ns = None
        heap = self.heap
        wall_now = time.monotonic_ns()
        due: list[int] = []
        while heap and heap[0][0] <= wall_now:
            wall, port = heapq.heappop(heap)
            if self.scheduled[port] == wall:
                self.scheduled[port] = 0
                due.append(port)
        now = self.fabric_now()
        for port in due:
            self._transmit(port, now)
        self._send_pfc()
        while heap and self.scheduled[heap[0][1]] != heap[0][0]:
            heapq.heappop(heap)  # superseded entries
        if heap and (self.timer.armed_ns is None or heap[0][0] < self.timer.armed_ns):
            self.timer.set_abs(heap[0][0])

    def _send_pfc(self) -> None:
        actions = self.core.take_pfc()
        if not actions:
            return
        assert self.pfc_sock is not None
        for port, priority, pause in actions:
            try:
                self.pfc_sock.sendto(pack_pfc(priority, pause), (self.peer_addr[port], PFC_PORT))
            except OSError:
                self.pfc_errors += 1

    def _on_pfc(self) -> None:
        assert self.pfc_sock is not None
        while True:
            try:
                data, (addr, _) = self.pfc_sock.recvfrom(256)
            except BlockingIOError:
                return
            port = self.peer_port.get(addr)
            if port is None:
                continue
            try:
                frames = unpack_pfc(data)
            except ValueError:
                continue
            now = self.fabric_now()
            for priority, pause in frames:
                self.core.on_pfc(now, port, priority, pause)
            self._service(now)

    # loops

    async def _read_loop(self, port: int) -> None:
        sock = self.ports[port]
        while True:
            await trio.lowlevel.wait_readable(sock)
            self._drain(port)

    async def _timer_loop(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.timer.fileno())
            self._on_timer()

    async def _pfc_loop(self) -> None:
        assert self.pfc_sock is not None
        while True:
            await trio.lowlevel.wait_readable(self.pfc_sock)
            self._on_pfc()

    async def _stats_loop(self) -> None:
        """`write_stats` every `STATS_INTERVAL_S`, encoded in slices that give the packet
        loops turns (`write_json_sliced`: a file with full samples costs ms to encode)."""
        path = self.cfg.get("stats_path")
        while True:
            if path:
                await write_json_sliced(path, self.statistics())
            await trio.sleep(STATS_INTERVAL_S)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
        async with trio.open_nursery() as nursery:
            for port in range(len(self.ports)):
                nursery.start_soon(self._read_loop, port)
            nursery.start_soon(self._timer_loop)
            nursery.start_soon(self._pfc_loop)
            nursery.start_soon(self._stats_loop)
            nursery.start_soon(self._routes_loop)
            task_status.started()

    async def _routes_loop(self) -> None:
        """SIGUSR1: routing reconverged (`fabric.net.routing`): load the table it wrote."""
        with trio.open_signal_receiver(signal.SIGUSR1) as signals:
            self.reload_routes()  # one that came before the receiver was installed
            async for _ in signals:
                self.reload_routes()

    def reload_routes(self) -> None:
        path = self.cfg.get("routes_path")
        if not path:
            return
        try:
            with open(path) as fh:
                table = json.load(fh)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"switch {self.cfg['node']}: routes {path}: {exc}\n")
            return
        self.core.set_routes(routes_of(table, self.cfg.get("all_addresses", ())))
        self.route_reloads += 1

    # statistics

    def statistics(self, *, final: bool = False) -> dict[str, Any]:
        out = self.core.stats(self.fabric_now())
        ring = device_tx_drops()
        for p in out.get("ports", []):
            # a full device queue towards the link drops in the driver, not in sendto
            p["tx_ring_drops"] = ring.get(p["name"], 0) - self.ring_base.get(p["name"], 0)
        out.update(node=self.cfg["node"], pid=os.getpid(), final=final,
                   time_scale=self.scale, t0_monotonic_ns=self.t0,
                   monotonic_ns=time.monotonic_ns(), tx_errors=self.tx_errors,
                   pfc_errors=self.pfc_errors, route_reloads=self.route_reloads)
        return out

    def write_stats(self, *, final: bool = False) -> None:
        if self.cfg.get("stats_path"):
            write_json_atomic(self.cfg["stats_path"], self.statistics(final=final))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m fabric.switch.node CONFIG.json`; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m fabric.switch.node CONFIG.json\n")
        return 2
    try:
        with open(args[0]) as fh:
            cfg = json.load(fh)
        node = SwitchNode(cfg)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"switch: config {args[0]}: {exc}\n")
        return 2
    try:
        node.open()
    except OSError as exc:
        sys.stderr.write(f"switch {cfg.get('node')}: {exc}\n")
        node.close()
        return 2
    set_timer_slack(1)
    keep_freed_memory()
    set_thread_name(f"fabsw-{cfg['node']}"[:15])
    # a reload signal before its receiver is up must not end the switch (the receiver reads
    # the routes file once it starts)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        trio.run(serve_until_signal, node.serve)
    finally:
        with contextlib.suppress(OSError):
            node.write_stats(final=True)
        node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
