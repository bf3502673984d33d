"""The link engine relaying real packets between two network namespaces (root only)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from fabric.net import engine
from fabric.net.engine import Endpoint, EngineConfig, EngineLink
from fabric.net.tun import create_persistent_tun, delete_persistent_tun, in_netns
from fabric.topology.model import Shape

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[1]
ADDR_A = "198.18.0.1"
ADDR_B = "198.18.0.2"
PORT = 40000
ECT0 = 0x02
CE = 0x03
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)


def _can_run() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    if shutil.which("ip") is None:
        return "needs iproute2"
    return None


if _can_run():
    pytestmark = [pytest.mark.netns, pytest.mark.skip(reason=_can_run())]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class NetPair:
    """Namespaces a and b joined by TUN `dev_a` / `dev_b` (198.18.0.1 <-> 198.18.0.2)."""

    ns_a: str
    ns_b: str
    dev_a: str = "fta0"
    dev_b: str = "ftb0"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def config(self, tmp: Path, forward: Shape, reverse: Shape | None = None, *,
               rate_in_engine: bool = False, seed: int = 1, spin_ns: int = 0) -> EngineConfig:
        link = EngineLink(
            id="a--b",
            a=Endpoint(self.ns_a, self.dev_a),
            b=Endpoint(self.ns_b, self.dev_b),
            forward=forward,
            reverse=reverse or Shape(),
            rate_in_engine=rate_in_engine,
            seed=seed,
        )
        return EngineConfig(fabric="test", run_id=self.ns_a, stats_path=str(tmp / "stats.json"),
                            links=(link,), spin_ns=spin_ns)

    @contextlib.contextmanager
    def engine(self, config: EngineConfig, tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
        path = tmp / f"engine-{config.run_id}.json"
        path.write_text(config.to_json())
        proc = subprocess.Popen([sys.executable, "-m", "fabric.net.engine", str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        self.procs.append(proc)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            line = proc.stdout.readline().decode() if ready else ""  # type: ignore[union-attr]
            if not line.startswith("READY"):
                proc.kill()
                err = proc.stderr.read().decode()  # type: ignore[union-attr]
                raise AssertionError(f"engine not ready: {line!r} {err}")
            assert line.split() == ["READY", str(proc.pid)]
            yield proc
        finally:
            _stop(proc)

    def socket(self, ns: str, tos: int | None = None) -> socket.socket:
        with in_netns(ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if tos is not None:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        return s


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return proc.returncode


@pytest.fixture(scope="module")
def pair() -> Iterator[NetPair]:
    token = secrets.token_hex(3)
    p = NetPair(ns_a=f"fabtest-{token}-a", ns_b=f"fabtest-{token}-b")
    made: list[str] = []
    try:
        for ns, dev, local, peer in ((p.ns_a, p.dev_a, ADDR_A, ADDR_B),
                                     (p.ns_b, p.dev_b, ADDR_B, ADDR_A)):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            with in_netns(ns):
                create_persistent_tun(dev)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", local, "peer", f"{peer}/32", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up", "mtu", "1500")
        yield p
    finally:
        for proc in p.procs:
            if proc.poll() is None:
                proc.kill()
            _stop(proc)
        for ns, dev in ((p.ns_a, p.dev_a), (p.ns_b, p.dev_b)):
            if ns in made:
                with contextlib.suppress(OSError):
                    with in_netns(ns):
                        delete_persistent_tun(dev)
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


class Receiver:
    """Receives datagrams on a thread, stamping each with monotonic_ns and its IP TOS."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
        sock.settimeout(0.05)
        self.got: list[tuple[int, bytes, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, 64)
            except TimeoutError:
                continue
            t = time.monotonic_ns()
            tos = -1
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == socket.IP_TOS:
                    tos = value[0]
            self.got.append((t, data, tos))

    def wait_quiet(self, count: int, idle_s: float = 0.3, limit_s: float = 5.0) -> None:
        end = time.monotonic() + limit_s
        last, last_change = -1, time.monotonic()
        while time.monotonic() < end and len(self.got) < count:
            if len(self.got) != last:
                last, last_change = len(self.got), time.monotonic()
            elif time.monotonic() - last_change > idle_s:
                break
            time.sleep(0.01)
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _open_pair(pair: NetPair, tos: int | None = None) -> tuple[socket.socket, Receiver]:
    rx = pair.socket(pair.ns_b)
    rx.bind((ADDR_B, PORT))
    tx = pair.socket(pair.ns_a, tos)
    tx.connect((ADDR_B, PORT))
    return tx, Receiver(rx)


def _stamped(pair: NetPair, config: EngineConfig, tmp: Path, sent: int,
             gap: Callable[[int], float]) -> list:
    """Send `sent` packets a -> b through an engine serving `config`, each carrying its number
    and send time, packet i followed by `gap(i)` seconds; what b got, (time, data, tos) each,
    once the engine stopped cleanly."""
    with pair.engine(config, tmp) as proc:
        tx, rx = _open_pair(pair)
        for i in range(sent):
            tx.send(struct.pack("!IQ", i, time.monotonic_ns()) + b"x" * 100)
            time.sleep(gap(i))
        rx.wait_quiet(sent)
        tx.close()
        assert _stop(proc) == 0
    return rx.got


def _stats(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)


def test_missing_device_exits_2(pair: NetPair, tmp_path: Path) -> None:
    config = pair.config(tmp_path, Shape())
    link = config.links[0]
    bad = EngineConfig(config.fabric, config.run_id, config.stats_path,
                       (EngineLink(link.id, link.a, Endpoint(pair.ns_b, "nosuch0"),
                                   link.forward, link.reverse),))
    path = tmp_path / "bad.json"
    path.write_text(bad.to_json())
    proc = subprocess.run([sys.executable, "-m", "fabric.net.engine", str(path)],
                          capture_output=True, cwd=REPO, timeout=10)
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == (
        f"engine: a--b: no device 'nosuch0' in network namespace '{pair.ns_b}'")


def test_config_json_round_trip(pair: NetPair, tmp_path: Path) -> None:
    config = pair.config(tmp_path, Shape(rate_bps=10**9, delay_ns=5, jitter_ns=1, loss_ppm=3,
                                         queue_packets=7, ecn_bytes=100, mtu=9000),
                         rate_in_engine=True, seed=42, spin_ns=150_000)
    assert EngineConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize("spin", [-1, 1_000_001, 1.5])
def test_config_refuses_a_spin_outside_0_to_1ms(pair: NetPair, tmp_path: Path, spin) -> None:
    with pytest.raises(ValueError, match=r"spin_ns .*: an int of nanoseconds in 0..1000000"):
        pair.config(tmp_path, Shape(), spin_ns=spin)


def test_spinning_releases_nothing_early_and_reads_what_comes_meanwhile(
        pair: NetPair, tmp_path: Path) -> None:
    """With `spin_ns` the timer wakes early and the engine busy-waits to each release: no
    packet may leave before its delay, and packets that arrive while it spins (bursts every
    0.4 ms, against 0.3 ms of spinning before each release) are all read and delivered, in
    order."""
    delay = 2_000_000
    config = pair.config(tmp_path, Shape(delay_ns=delay), spin_ns=300_000)
    sent = 200  # bursts, then sparse packets
    got = _stamped(pair, config, tmp_path, sent, lambda i: 0.0004 if i % 50 < 40 else 0.003)
    seqs = [struct.unpack_from("!I", data)[0] for _, data, _ in got]
    assert seqs == list(range(sent))
    one_way = [t - struct.unpack_from("!IQ", data)[1] for t, data, _ in got]
    assert min(one_way) >= delay
    s = _stats(config.stats_path)
    assert s["spin_ns"] == 300_000
    assert s["spin_s"] > 0


def test_the_default_spin_stays_within_its_budget_under_steady_traffic(
        pair: NetPair, tmp_path: Path) -> None:
    """The default engine spins 150 us before a release within a tenth of one CPU: a packet
    every ~0.3 ms through 1 ms of delay would have it spin half the time, so it spins until the
    budget is spent and then sleeps to the releases it cannot afford (counted), spinning no
    more than a tenth of its life plus the burst; every packet still arrives, none early."""
    delay = 1_000_000
    config = replace(pair.config(tmp_path, Shape(delay_ns=delay)),
                                 spin_ns=engine.DEFAULT_SPIN_NS,
                                 spin_share=engine.DEFAULT_SPIN_SHARE)
    sent = 3000
    got = _stamped(pair, config, tmp_path, sent, lambda i: 0.0003)
    assert sorted(struct.unpack_from("!I", data)[0] for _, data, _ in got) == list(range(sent))
    assert min(t - struct.unpack_from("!IQ", data)[1] for t, data, _ in got) >= delay
    s = _stats(config.stats_path)
    spin = {k: s[k] for k in ("spin_ns", "spin_share", "spins", "spin_denied", "spin_s",
                              "uptime_s")}
    assert (s["spin_ns"], s["spin_share"]) == (150_000, 0.1)
    assert s["spins"] > 0
    assert s["spin_denied"] > s["spins"] / 2, spin  # most releases could not be afforded
    burst = engine.SPIN_BURST_NS / 1e9
    assert s["spin_s"] <= 0.1 * s["uptime_s"] + burst + 0.005, spin


def test_delivery_and_delay(pair: NetPair, tmp_path: Path) -> None:
    delay = 20_000_000
    config = pair.config(tmp_path, Shape(delay_ns=delay), Shape(delay_ns=delay))
    sent = 60
    got = _stamped(pair, config, tmp_path, sent, lambda i: 0.002)
    assert len(got) == sent
    one_way = [t - struct.unpack_from("!IQ", data)[1] for t, data, _ in got]
    median = statistics.median(one_way)
    assert abs(median - delay) < 500_000, f"median one-way {median / 1e6:.3f} ms"
    assert min(one_way) >= delay
    s = _stats(config.stats_path)
    assert s["final"] is True
    assert s["run_id"] == config.run_id
    fwd = s["links"]["a--b"]["forward"]
    assert fwd["packets_out"] == fwd["packets_in"] >= sent
    assert fwd["bytes_in"] >= sent * (28 + 112)
    assert fwd["drops_loss"] == fwd["drops_queue"] == fwd["drops_write"] == 0
    # the engine's own lateness: each write precedes its packet's arrival, so no quantile of
    # it can exceed the same quantile of the lateness the receiver saw
    late = s["release_lateness"]
    assert late["releases"] >= sent
    assert 0 <= late["window_p50_us"] <= late["window_max_us"] <= late["max_us"]
    assert late["window_p50_us"] * 1e3 <= median - delay


def test_loss_ratio(pair: NetPair, tmp_path: Path) -> None:
    config = pair.config(tmp_path, Shape(loss_ppm=200_000), seed=7)
    with pair.engine(config, tmp_path) as proc:
        tx, rx = _open_pair(pair)
        sent = 2000
        for i in range(sent):
            tx.send(struct.pack("!I", i))
            if i % 50 == 49:
                time.sleep(0.001)
        rx.wait_quiet(sent)
        tx.close()
        assert _stop(proc) == 0
    lost = 1 - len(rx.got) / sent
    assert 0.16 <= lost <= 0.24, lost
    fwd = _stats(config.stats_path)["links"]["a--b"]["forward"]
    assert fwd["packets_in"] == sent
    assert fwd["drops_loss"] == sent - len(rx.got)
    assert fwd["packets_out"] == len(rx.got)


def test_corrupted_datagrams_fail_the_receivers_checksum(pair: NetPair, tmp_path: Path) -> None:
    """`corrupt: 100%`: the engine flips one bit past the IP header of every packet and the
    receiving kernel's UDP checksum drops each one: none reaches the socket."""
    config = pair.config(tmp_path, Shape(corrupt_ppm=1_000_000), seed=3)
    with pair.engine(config, tmp_path) as proc:
        tx, rx = _open_pair(pair)
        sent = 200
        for i in range(sent):
            tx.send(struct.pack("!I", i) + b"c" * 60)
        rx.wait_quiet(sent, idle_s=0.5)
        tx.close()
        assert _stop(proc) == 0
    assert rx.got == []
    fwd = _stats(config.stats_path)["links"]["a--b"]["forward"]
    assert fwd["packets_corrupted"] == fwd["packets_out"] == fwd["packets_in"] == sent


def test_duplicated_datagrams_arrive_twice(pair: NetPair, tmp_path: Path) -> None:
    config = pair.config(tmp_path, Shape(duplicate_ppm=1_000_000, delay_ns=2_000_000), seed=5)
    with pair.engine(config, tmp_path) as proc:
        tx, rx = _open_pair(pair)
        sent = 100
        for i in range(sent):
            tx.send(struct.pack("!I", i) + b"d" * 60)
            time.sleep(0.0005)
        rx.wait_quiet(2 * sent)
        tx.close()
        assert _stop(proc) == 0
    seqs = sorted(struct.unpack_from("!I", data)[0] for _, data, _ in rx.got)
    assert seqs == sorted(list(range(sent)) * 2)
    assert all(data[4:] == b"d" * 60 for _, data, _ in rx.got)  # both copies intact
    fwd = _stats(config.stats_path)["links"]["a--b"]["forward"]
    assert fwd["packets_duplicated"] == sent
    assert fwd["packets_in"] == fwd["packets_out"] == 2 * sent


def test_ecn_marking_with_engine_rate(pair: NetPair, tmp_path: Path) -> None:
    rate = 10_000_000
    shape = Shape(rate_bps=rate, queue_bytes=200_000, ecn_bytes=4000)
    config = pair.config(tmp_path, shape, rate_in_engine=True)
    size = 1000 + 28
    burst = 40
    with pair.engine(config, tmp_path) as proc:
        tx, rx = _open_pair(pair, tos=ECT0)
        for i in range(burst):
            tx.send(struct.pack("!I", i) + b"e" * 996)
        rx.wait_quiet(burst)
        tx.close()
        tx2, rx2 = _open_pair(pair, tos=0)
        for i in range(burst):
            tx2.send(struct.pack("!I", i) + b"n" * 996)
        rx2.wait_quiet(burst)
        tx2.close()
        assert _stop(proc) == 0
    assert len(rx.got) == burst
    assert len(rx2.got) == burst
    tos = [t for _, _, t in rx.got]
    # the queue exceeds 4000 bytes once ~4 packets wait behind the one on the wire
    assert tos[:4] == [ECT0] * 4
    assert tos[-20:] == [CE] * 20
    assert set(tos) <= {ECT0, CE}
    assert all(t == 0 for _, _, t in rx2.got), "non-ECT packets must never be marked"
    # serialisation at 10 Mbit/s: ~822 us per packet
    gaps = [b[0] - a[0] for a, b in zip(rx.got, rx.got[1:], strict=False)]
    per_packet = size * 8 * 1e9 / rate
    assert abs(statistics.median(gaps) - per_packet) < 0.15 * per_packet
    fwd = _stats(config.stats_path)["links"]["a--b"]["forward"]
    assert fwd["ecn_marks"] == tos.count(CE)
    assert fwd["packets_in"] == fwd["packets_out"] == 2 * burst
    assert fwd["queue_bytes_max"] >= 20 * size
    assert fwd["samples"]
    assert all(len(s) == 3 for s in fwd["samples"])  # (t, queue bytes, bytes out)
    assert fwd["queue_observed"] is True
