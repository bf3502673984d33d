"""Node agents: the node side of the runner/node session over TCP, for nodes that run in a
container or on another machine, and `start_node`, which starts a node here or through its
agent so that every runner drives both the same way.

An agent (`fabric agent --listen ADDR:PORT --secret-file F`) runs where the node's network
is: inside the container, or (in the tests) inside the node's namespace with mount and PID
namespaces of its own. For each connection it forks a child that does the handshake and then
runs the same node program a forked node runs (`fabric.node.spawn.node_main`), with the TCP
connection as its control channel. The handshake, in session frames:

    agent -> runner   Hello(version, node, host, nonce_a)
    runner -> agent   Auth(HMAC(key, "runner" nonce_a nonce_r node target), nonce_r, ...)
    agent -> runner   Welcome(HMAC(key, "agent" nonce_r nonce_a))   or it closes
    runner -> agent   Clock(sent)  and back  Clock(sent, now), CLOCK_ROUNDS times
    then the node's own session: Plan, Ready, Go, ...

Both sides prove they hold the key the agents were started with (`agents.json`'s
`secret_file`) over fresh challenges, so no other host on the management network can open a
session, drive a node or take its results, and a recorded session cannot be replayed. The key
is never sent. The session after the handshake is plain TCP, neither encrypted nor
authenticated frame by frame: a host on the path between runner and agent could read or
alter it, so the management network must be one the operator trusts (containerlab's
management bridge, or a tunnel between machines).

Clocks: the runner estimates each agent's clock offset NTP-style from the round trips of the
`Clock` exchange (the sample with the shortest round trip; its error is at most half that
round trip), when the node starts and again after the run on a second connection. The Go and
Sync times reach the node on its own clock (`session.Nodes`), and the runner moves what the
node measured back onto its own clock before anything compares times of two nodes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import FabricError
from ..net.daemon import INTERRUPTS, interrupts_held
from ..wire.frames import NEED_DATA, ProtocolError
from .session import (
    Auth,
    Clock,
    ClockEstimate,
    Hello,
    Message,
    MessageReader,
    Refused,
    Welcome,
    encode,
    measure_clock,
)
from .spawn import NodeProcess, node_main, spawn_node

__all__ = ["AGENT_PORT", "AgentBook", "AgentEntry", "end_clocks", "load_agents", "main_agent",
           "serve_agent", "start_node"]

AGENT_PORT = 7400
CONNECT_TIMEOUT = 3.0  # seconds to reach an agent
HANDSHAKE_TIMEOUT = 5.0  # seconds for either side's part of the handshake
CLOCK_ROUNDS = 16
MAX_KEY = 4096  # bytes of a secret file


def _targets() -> dict[str, Callable[[int, str], Awaitable[None]]]:
    """The node programs an agent can run, by the name the runner asks for."""
    from ..lpu.executor import serve_lpu
    from ..memsw.endpoint import serve_memory
    from .runtime import serve_node

    return {"traffic": serve_node, "lpu": serve_lpu, "memory": serve_memory}


def _target_name(target: Callable[[int, str], Awaitable[None]]) -> str:
    for name, fn in _targets().items():
        if fn is target:
            return name
    raise FabricError(f"{target.__qualname__} is not a node program an agent runs")


# ---- the secret and the proofs ----------------------------------------------------------


def read_key(path: Path) -> bytes:
    """The shared key from a secret file (its text, stripped); FabricError naming the file."""
    try:
        with open(path, "rb") as f:
            key = f.read(MAX_KEY + 1).strip()
    except OSError as e:
        raise FabricError(f"{path}: cannot read the secret file: {e.strerror or e}") from None
    if len(key) > MAX_KEY:
        raise FabricError(f"{path}: the secret file is longer than {MAX_KEY} bytes")
    if len(key) < 16:
        raise FabricError(f"{path}: the secret is {len(key)} bytes; at least 16 (e.g. "
                          "`python3 -c 'import secrets; print(secrets.token_hex(32))'`)")
    return key


def _proof(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\0".join(parts).encode(), hashlib.sha256).hexdigest()


# ---- blocking frames, for the handshake (before either side enters trio) -----------------


class _Conn:
    """Session messages over a blocking socket, each wait bounded by a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = MessageReader()

    def send(self, msg: Any, deadline: float) -> None:  # noqa: ANN401 - a session message
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        self.sock.sendall(encode(msg))

    def receive(self, deadline: float) -> Message | None:
        """The next message, or None when the other end closed; TimeoutError at the
        deadline, ProtocolError for what is not this protocol."""
        while (msg := self.reader.next_message()) is NEED_DATA:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return None
            self.reader.receive_data(data)
        return msg  # type: ignore[return-value]  # NEED_DATA is ruled out above


# ---- the agent ----------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """ADDR:PORT (or :PORT, or [v6]:PORT) as a socket address; FabricError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise FabricError(f"--listen {text!r}: give ADDR:PORT, e.g. 0.0.0.0:{AGENT_PORT}")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve_agent(listen: tuple[str, int], key: bytes, *, node: str = "",
                host: str = "", log: Callable[[str], None] | None = None,
                ready: Callable[[tuple[str, int]], None] | None = None) -> int:
    """Serve sessions on `listen` until SIGTERM/SIGINT: every connection is handled by a
    child of its own (a stuck or hostile peer never blocks the next runner). Returns the
    exit status: 0 after a signal."""
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    host = host or socket.gethostname()
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind(listen)
    except OSError as e:
        srv.close()
        raise FabricError(f"cannot listen on {listen[0]}:{listen[1]}: {e.strerror or e}"
                          ) from None
    srv.listen(64)
    srv.settimeout(0.2)
    stop: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in INTERRUPTS}
    children: dict[int, str] = {}
    where = srv.getsockname()
    say(f"fabric agent {__version__}: serving node {node or '(any)'} on "
        f"{where[0]}:{where[1]}")
    if ready:
        ready((where[0], where[1]))
    try:
        while not stop:
            _reap(children)
            try:
                conn, peer = srv.accept()
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            with interrupts_held():
                pid = os.fork()
                if pid == 0:
                    try:
                        srv.close()
                        _session_child(conn, peer, key, node, host, say)
                    finally:  # never back into the agent's loop (its children are siblings)
                        os._exit(2)
            conn.close()
            children[pid] = f"{peer[0]}:{peer[1]}"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        srv.close()
        # the node programs end with their agent, as a container's processes end with it
        # (they ignore SIGTERM: only their runner ends them); their runners see the session
        # close and name the node
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    say(f"fabric agent: stopped ({signal.Signals(stop[0]).name})" if stop else
        "fabric agent: stopped")
    return 0


def _reap(children: dict[int, str]) -> None:
    for pid in list(children):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            del children[pid]


_held: list[socket.socket] = []  # the node's lock, for the session child's life


def _hold_node(node: str) -> str:
    """Take node `node` for this session (an abstract unix socket's name, which the kernel
    frees when the process ends, however it ends); "" when taken, else why not: two
    runners' sessions would bind the same addresses and ports."""
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        lock.bind(f"\0fabric-agent/{node}")
    except OSError:
        lock.close()
        return (f"node {node} is already running a session for another runner; one runner "
                "at a time per node (end that run first)")
    _held.append(lock)
    return ""


def _session_child(conn: socket.socket, peer: tuple[str, int], key: bytes, node: str,
                   host: str, say: Callable[[str], None]) -> None:
    """The child for one connection: the handshake, then the node program (never returns)."""
    for sig in INTERRUPTS:
        signal.signal(sig, signal.SIG_DFL)  # the agent's SIGTERM ends a session's child too
    who = f"{peer[0]}:{peer[1]}"
    c = _Conn(conn)
    nonce = secrets.token_hex(16)
    try:
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        c.send(Hello(version=__version__, node=node, host=host, nonce=nonce), deadline)
        msg = c.receive(deadline)
        if not isinstance(msg, Auth) or not all(
                isinstance(v, str) for v in (msg.proof, msg.nonce, msg.version, msg.node,
                                             msg.target)):
            say(f"fabric agent: refused {who}: no authentication")
            os._exit(2)
        if not hmac.compare_digest(msg.proof, _proof(key, "runner", nonce, msg.nonce,
                                                      msg.node, msg.target)):
            say(f"fabric agent: refused {who}: wrong secret")
            os._exit(2)
        if msg.version != __version__:
            say(f"fabric agent: refused {who}: runner runs fabric {msg.version}, this agent "
                f"{__version__}")
            os._exit(2)
        if node and msg.node != node:
            say(f"fabric agent: refused {who}: asked for node {msg.node}, this agent serves "
                f"{node}")
            os._exit(2)
        targets = _targets()
        if msg.target != "clock" and msg.target not in targets:
            say(f"fabric agent: refused {who}: unknown node program {msg.target!r}")
            os._exit(2)
        if msg.target != "clock":
            busy = _hold_node(msg.node)
            if busy:
                say(f"fabric agent: refused {who}: {busy}")
                c.send(Refused(reason=busy), deadline)
                os._exit(2)
        c.send(Welcome(proof=_proof(key, "agent", msg.nonce, nonce)), deadline)
        while True:  # the clock exchange, then the session
            clk = c.receive(time.monotonic() + HANDSHAKE_TIMEOUT)
            if not isinstance(clk, Clock) or clk.now:
                break
            c.send(Clock(sent=clk.sent, now=time.monotonic_ns()),
                   time.monotonic() + HANDSHAKE_TIMEOUT)
            if clk.sent < 0:  # the runner's last round
                break
    except (TimeoutError, OSError, ProtocolError) as e:
        say(f"fabric agent: session with {who} ended in the handshake: {e or 'timed out'}")
        os._exit(2)
    except Exception as e:  # noqa: BLE001 - a peer's malformed message: refused, logged
        say(f"fabric agent: refused {who}: malformed handshake ({type(e).__name__}: {e})")
        os._exit(2)
    if msg.target == "clock":
        os._exit(0)
    say(f"fabric agent: running {msg.target} node {msg.node} for {who}")
    conn.settimeout(None)
    # a runner that vanishes without closing (its machine died, the network split) is
    # noticed within about half a minute, and the node program ends with its session
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            conn.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    node_main(msg.node, None, conn.detach(), targets[msg.target])


# ---- the runner's side ------------------------------------------------------------------


@dataclass(frozen=True)
class AgentEntry:
    node: str
    host: str  # the machine it runs on, as agents.json names it ("": as the agent says)
    address: tuple[str, int]

    @property
    def where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"


@dataclass(frozen=True)
class AgentBook:
    """agents.json: which node's agent is where, and the key they share."""

    source: str
    fabric: str
    key: bytes
    agents: Mapping[str, AgentEntry]


def load_agents(path: str | Path, topo_name: str | None = None,
                nodes: Mapping[str, Any] | None = None) -> AgentBook:
    """Read an agents.json (`fabric export --to containerlab` writes one); FabricError naming
    the file, line or key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise FabricError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise FabricError(f"{path}: not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise FabricError(f"{path}:{e.lineno}: not JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise FabricError(f"{path}: expected an object with `agents` and `secret_file`")

    def need(obj: Mapping[str, Any], key: str, where: str, kind: type) -> Any:  # noqa: ANN401
        if key not in obj:
            raise FabricError(f"{path}: {where}{key}: missing")
        if not isinstance(obj[key], kind):
            raise FabricError(f"{path}: {where}{key}: expected {kind.__name__}, got "
                              f"{type(obj[key]).__name__}")
        return obj[key]

    secret = need(data, "secret_file", "", str)
    key = read_key(path.parent / secret)
    fabric = data.get("fabric", "")
    if topo_name is not None and fabric and fabric != topo_name:
        raise FabricError(f"{path}: fabric: agents of {fabric!r}, but the file is "
                          f"{topo_name!r}")
    entries = {}
    for name, entry in need(data, "agents", "", dict).items():
        where = f"agents.{name}."
        if not isinstance(entry, dict):
            raise FabricError(f"{path}: agents.{name}: expected an object with `address`")
        if nodes is not None and name not in nodes:
            raise FabricError(f"{path}: agents.{name}: no such node in the topology (it has "
                              f"{', '.join(sorted(nodes)[:8])}"
                              f"{', ...' if len(nodes) > 8 else ''})")
        addr = need(entry, "address", where, str)
        try:
            sock_addr = parse_listen(addr)
        except FabricError:
            raise FabricError(f"{path}: {where}address: {addr!r} is not ADDR:PORT") from None
        entries[name] = AgentEntry(node=name, host=str(entry.get("host", "") or ""),
                                   address=sock_addr)
    return AgentBook(source=str(path), fabric=fabric, key=key, agents=entries)


def _open_session(book: AgentBook, name: str, target: str) -> tuple[socket.socket, str,
                                                                     ClockEstimate]:
    """Connect to `name`'s agent, authenticate both ways, measure the clock. Returns the
    socket (ready for the node's session), the agent's host and the clock estimate."""
    entry = book.agents[name]
    where = entry.where
    try:
        sock = socket.create_connection(entry.address, timeout=CONNECT_TIMEOUT)
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise FabricError(f"cannot reach the agent of node {name} at {where}: {reason} "
                          f"({book.source})") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = _Conn(sock)
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        try:
            hello = c.receive(deadline)
        except ProtocolError:
            hello = None
        if not isinstance(hello, Hello) or not all(
                isinstance(v, str) for v in (hello.version, hello.node, hello.host,
                                             hello.nonce)):
            raise FabricError(f"{where} (the agent of node {name} in {book.source}) is not a "
                              "fabric agent: it did not greet as one")
        if hello.version != __version__:
            raise FabricError(f"the agent of node {name} at {where} runs fabric "
                              f"{hello.version}; this is {__version__}: run the same version "
                              "on both sides")
        if hello.node and hello.node != name:
            raise FabricError(f"the agent at {where} serves node {hello.node}, not {name} "
                              f"({book.source})")
        mine = secrets.token_hex(16)
        c.send(Auth(proof=_proof(book.key, "runner", hello.nonce, mine, name, target),
                    nonce=mine, version=__version__, node=name, target=target), deadline)
        welcome = c.receive(deadline)
        if isinstance(welcome, Refused):
            raise FabricError(f"the agent of node {name} at {where} refused the session: "
                              f"{welcome.reason}")
        if not isinstance(welcome, Welcome) or not isinstance(welcome.proof, str):
            raise FabricError(f"the agent of node {name} at {where} refused the session "
                              "(a wrong secret? its log says why)")
        if not hmac.compare_digest(welcome.proof, _proof(book.key, "agent", mine,
                                                          hello.nonce)):
            raise FabricError(f"the agent of node {name} at {where} does not hold the "
                              "secret: not talking to it")
        samples = []
        for i in range(CLOCK_ROUNDS):
            t1 = time.monotonic_ns()
            c.send(Clock(sent=t1 if i < CLOCK_ROUNDS - 1 else -t1), deadline)
            back = c.receive(deadline)
            t4 = time.monotonic_ns()
            if (not isinstance(back, Clock) or not isinstance(back.sent, int)
                    or not isinstance(back.now, int) or abs(back.sent) != t1):
                raise FabricError(f"the agent of node {name} at {where} broke off the "
                                  "clock exchange")
            samples.append((t1, back.now, t4))
    except TimeoutError:
        sock.close()
        raise FabricError(f"the agent of node {name} at {where} did not answer within "
                          f"{HANDSHAKE_TIMEOUT:.0f} s") from None
    except (OSError, ProtocolError) as e:
        sock.close()
        raise FabricError(f"the session with the agent of node {name} at {where} broke: "
                          f"{e}") from None
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock, hello.host, measure_clock(samples)


def start_node(name: str, netns: str | None, others: list[NodeProcess],
               target: Callable[[int, str], Awaitable[None]], agents: AgentBook | None
               ) -> NodeProcess:
    """Node `name`, running `target`: through its agent when `agents` lists it, else forked
    here into namespace `netns`. Either way the runner gets a control socket to drive it."""
    if agents is not None and name in agents.agents:
        entry = agents.agents[name]
        sock, host, clock = _open_session(agents, name, _target_name(target))
        # the deployment's word on which machine it is (agents.json) over the agent's own: a
        # container's hostname is its own, though it shares its host's clock
        return NodeProcess(name=name, pid=None, ctl=sock, agent=entry.where,
                           host=entry.host or host or entry.where, clock=clock)
    if not netns:
        raise FabricError(f"node {name} has no agent in {agents.source if agents else '?'} "
                          "and no local fabric runs it")
    return spawn_node(name, netns, others, target)


def end_clocks(procs: list[NodeProcess], agents: AgentBook | None) -> None:
    """After the run: measure each remote node's clock again (on a new connection to its
    agent) and keep the mean of both estimates; a node whose agent is gone keeps the first."""
    if agents is None:
        return
    for p in procs:
        if p.pid is not None or p.name not in agents.agents:
            continue
        try:
            sock, _, clock = _open_session(agents, p.name, "clock")
        except FabricError:
            continue
        sock.close()
        p.clock = ClockEstimate.combine(p.clock, clock)


def main_agent(listen: str, secret_file: str, node: str, host: str) -> int:
    """`fabric agent`: read the key, serve."""
    key = read_key(Path(secret_file))
    return serve_agent(parse_listen(listen), key, node=node, host=host)
