"""Several memory transactions per datagram: the switch node and the endpoint on local UDP
sockets (no namespaces), driven by hand. Each transaction keeps its header, tag, credit and
order; what the timing model releases together, or what one batch of events queues for one
port, leaves in as few datagrams as the MTU allows."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import trio

from fabric.memsw.deploy import switch_configs
from fabric.memsw.endpoint import MemoryNode
from fabric.memsw.node import MemorySwitchNode
from fabric.memsw.ops import Contribute, Read, ReadResp, ReduceResult, Write, WriteAck
from fabric.memsw.wire import decode_all, encode
from fabric.plan import plan_fabric
from fabric.topology import load_topology

ROOT = Path(__file__).resolve().parent.parent
HBM1 = 0x01000000


def _switch() -> tuple[MemorySwitchNode, dict[str, socket.socket], socket.socket]:
    """memsem-single's switch on 127.0.0.1; gpu-0 sends from 127.0.0.10 and gpu-1 from
    127.0.0.11; everything the switch sends goes to one sink."""
    plan = plan_fabric(load_topology(ROOT / "topologies" / "memsem-single.yaml"),
                       backend="userspace", run_id="r1")
    cfg = switch_configs(plan)["msw"]
    assert {p["mtu"] for p in cfg["ports"]} == {1500}
    node = MemorySwitchNode(cfg)
    node.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    node.sock.bind(("127.0.0.1", 0))
    node.sock.setblocking(False)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2)
    node.addr = dict.fromkeys(node.addr, sink.getsockname())
    senders = {}
    for i, port in enumerate(("gpu-0", "gpu-1")):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.0.{10 + i}", 0))
        senders[port] = s
    node.port_of = {f"127.0.0.{10 + i}": p for i, p in enumerate(("gpu-0", "gpu-1"))}
    return node, senders, sink


def _release(node: MemorySwitchNode) -> None:
    """The timer fires once, a host second later (100 us of fabric time): all that the
    timing model holds is due."""
    node.t0 -= 10**9
    node._on_timer()


def _received(sink: socket.socket) -> list[list]:
    """Every datagram waiting at the sink, each as its decoded messages."""
    out = []
    sink.setblocking(False)
    while True:
        try:
            out.append(decode_all(sink.recv(65536)))
        except BlockingIOError:
            return out


def test_the_switch_batches_what_it_releases_together_and_keeps_each_header() -> None:
    node, senders, sink = _switch()
    arms = []
    set_abs = node.timer.set_abs
    node.timer.set_abs = lambda ns: (arms.append(ns), set_abs(ns))[1]  # type: ignore[method-assign]
    with node.sock, sink, senders["gpu-0"], senders["gpu-1"]:
        writes = [Write(t, 0, HBM1 + 256 * t, bytes([t]) * 256) for t in range(6)]
        parts = [p for w in writes for p in encode(w, src=0)]
        senders["gpu-0"].sendmsg(parts, [], 0, node.sock.getsockname())
        node._drain()
        assert (node.datagrams_in, node.messages_in) == (1, 6)
        assert len(arms) == 1  # one timer syscall for the batch, not one per transaction
        assert _received(sink) == []  # the timing model holds them: none is due yet
        _release(node)
        got = _received(sink)
        # six 298-byte writes to gpu-1: four fit one 1472-byte datagram, two the next
        assert [len(d) for d in got] == [4, 2]
        delivered = [m for d in got for m in d]
        src = node.index["gpu-0"]
        assert [(m.msg.tag, m.src, m.credit) for m in delivered] == [(t, src, 0)
                                                                     for t in range(6)]
        assert [bytes(m.msg.data) for m in delivered] == [bytes(w.data) for w in writes]
        assert node.core.statistics().ports["gpu-1"].credits == 64 - 6
        # gpu-1 answers all six in one datagram, each answer returning its request buffer
        acks = [p for t in range(6) for p in encode(WriteAck(t), src=src, credit=1)]
        senders["gpu-1"].sendmsg(acks, [], 0, node.sock.getsockname())
        node._drain()
        assert node.core.statistics().ports["gpu-1"].credits == 64
        _release(node)
        got = _received(sink)
        assert [len(d) for d in got] == [6]  # six 42-byte acks for gpu-0: one datagram
        assert [(m.msg, m.credit) for m in got[0]] == [(WriteAck(t), 0) for t in range(6)]
        st = node.statistics()
        assert (st["messages_in"], st["datagrams_in"]) == (12, 2)
        assert (st["messages_out"], st["datagrams_out"]) == (12, 3)
        assert st["ports"]["gpu-1"]["datagram_bytes_out"] == 6 * 298


def test_a_bad_message_in_a_batch_is_counted_and_the_rest_of_the_drain_goes_on() -> None:
    node, senders, sink = _switch()
    with node.sock, sink, senders["gpu-0"], senders["gpu-1"]:
        good = b"".join(encode(Read(1, 0, HBM1, 64), src=0))
        senders["gpu-0"].sendto(good + b"\x00" * 50, node.sock.getsockname())
        senders["gpu-0"].sendto(b"".join(encode(Read(2, 0, HBM1, 64), src=0)),
                                node.sock.getsockname())
        node._drain()
        assert node.errors == 1
        _release(node)
        # the cut datagram is refused whole; the next one's read goes through
        assert [[m.msg.tag for m in d] for d in _received(sink)] == [[2]]


def _endpoint(gateway: tuple[str, int], window: int, txn: int = 256) -> MemoryNode:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    plan = {"name": "g0", "time_scale": 1, "txn": txn, "gateway": gateway[0],
            "windows": [], "mcast": [], "timeout_ns": 100_000, "window": window, "mtu": 1500}
    node = MemoryNode(plan, sock)
    node.gateway = gateway
    node.t0 = time.monotonic_ns()
    return node


async def test_the_endpoint_keeps_the_window_and_sends_what_it_frees_together() -> None:
    """A 4 KiB write in 16 transactions with a window of 6: the first six leave in two
    datagrams (4 + 2 under a 1500-byte MTU); each batch of answers frees slots that the next
    datagrams fill, in offset order; the write completes with every piece answered."""
    fake = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await fake.bind(("127.0.0.1", 0))
    node = _endpoint(fake.getsockname(), window=6)
    seen: list[list[int]] = []
    outstanding = 0
    most = 0

    async def switch() -> None:
        nonlocal outstanding, most
        while True:
            raw, addr = await fake.recvfrom(65536)
            msgs = decode_all(raw)
            seen.append([m.msg.offset for m in msgs])
            outstanding += len(msgs)
            most = max(most, outstanding)
            with trio.move_on_after(0.02):  # gather what else is on the way, then answer
                while True:
                    raw, addr = await fake.recvfrom(65536)
                    more = decode_all(raw)
                    seen.append([m.msg.offset for m in more])
                    msgs += more
                    outstanding += len(more)
                    most = max(most, outstanding)
            outstanding -= len(msgs)
            await fake.sendto(b"".join(p for m in msgs
                                       for p in encode(WriteAck(m.msg.tag, m.msg.offset))),
                              addr)

    with fake, node.sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.receive_loop)
            nursery.start_soon(switch)
            data = bytes(range(256)) * 16
            resp, _ = await node.request(Write(node.tag(), 0, 0x4000, data))
            nursery.cancel_scope.cancel()
    assert resp == WriteAck(resp.tag)
    assert most == 6
    assert seen[:2] == [[0, 256, 512, 768], [1024, 1280]]
    assert [o for d in seen for o in d] == list(range(0, 4096, 256))
    assert node.waiting == {}
    assert node._limiter().value == 6


async def test_the_endpoint_reduce_sends_contributions_in_offset_order_batched() -> None:
    """A one-member reduce against a fake switch that answers each contribution with itself:
    the result is the vector, every contribution went in offset order, several a datagram."""
    fake = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await fake.bind(("127.0.0.1", 0))
    node = _endpoint(fake.getsockname(), window=8)
    offsets: list[list[int]] = []

    async def switch() -> None:
        while True:
            raw, addr = await fake.recvfrom(65536)
            msgs = [m.msg for m in decode_all(raw)]
            assert all(isinstance(m, Contribute) for m in msgs)
            offsets.append([m.offset for m in msgs])
            await fake.sendto(b"".join(
                p for m in msgs
                for p in encode(ReduceResult(m.tag, m.group_id, bytes(m.data), offset=m.offset,
                                             seq=m.seq))), addr)

    with fake, node.sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.receive_loop)
            nursery.start_soon(switch)
            res = await node.task({"k": "reduce-switch", "seed": 3, "n": 1024, "dtype": "float32",
                                   "seq": 1, "group": "tp"})
            nursery.cancel_scope.cancel()
    from fabric.memsw.endpoint import digest, values_for
    from fabric.memsw.ops import encode as encode_values

    assert res["digest"] == digest(encode_values(values_for(3, 1024, "float32"), "float32"))
    assert [o for d in offsets for o in d] == list(range(0, 4096, 256))
    assert max(len(d) for d in offsets) == 4  # 4 x 302 B per 1472-byte datagram
    assert node.reduce_wait == {}
    assert node.lost == []


async def test_served_requests_are_answered_in_one_datagram_per_receive_batch() -> None:
    """Requests that arrive together are applied in order and answered together: a read
    after a write to the same bytes sees the write."""
    from fabric.memsw.ops import MemoryEndpoint

    fake = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await fake.bind(("127.0.0.1", 0))
    node = _endpoint(fake.getsockname(), window=8)
    node.memories = [MemoryEndpoint(0x1000, 4096)]
    with fake, node.sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.receive_loop)
            reqs = [Read(1, 0, 0x1000, 64), Write(2, 0, 0x1000, b"\x07" * 64),
                    Read(3, 0, 0x1000, 64)]
            await fake.sendto(b"".join(p for r in reqs for p in encode(r, src=5)),
                              node.sock.getsockname())
            raw = await fake.recv(65536)
            nursery.cancel_scope.cancel()
    got = decode_all(raw)
    assert [(m.msg.tag, m.src, m.credit) for m in got] == [(1, 5, 1), (2, 5, 1), (3, 5, 1)]
    assert got[0].msg == ReadResp(1, bytes(64))
    assert got[1].msg == WriteAck(2)
    assert got[2].msg == ReadResp(3, b"\x07" * 64)
