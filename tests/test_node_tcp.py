"""The node's TCP chunk path (fabric.node.runtime) over loopback, in one trio run: no root.

Every chunk is checked against its digest however the stream is cut; a chunk's header and
payload leave in one call and arrive whole through full socket buffers; a transfer completes
(and starts the one after it) only on the receiver's ack.
"""

from __future__ import annotations

import dataclasses
import socket
from functools import partial

import numpy as np
import pytest
import trio
import trio.lowlevel
import trio.testing

from fabric.kv.content import chunk_digest, chunk_view, digest
from fabric.kv.layout import chunks_of
from fabric.node import runtime
from fabric.node.runtime import Node, _recv_into, _send_all
from fabric.node.session import Channel, Records
from fabric.node.transport import NodeConfig
from fabric.traffic import Transfer
from fabric.wire.frames import FrameDecoder, acked, encode_chunk_header

SEED = 3
MiB = 1 << 20


def transfer(ident: int, nbytes: int, chunk: int, *, after: int | None = None) -> Transfer:
    return Transfer(id=ident, flow="f", kind="bulk", cls="default", src="a", dst="b",
                    transport="tcp", request=ident, model=None, tokens=None, nbytes=nbytes,
                    chunk_bytes=chunk, start_ns=None if after is not None else 0, after=after)


def node(name: str, sends: list[Transfer], expects: list[Transfer]) -> Node:
    cfg = NodeConfig(name=name, address="127.0.0.1", peers={"a": "127.0.0.1", "b": "127.0.0.1"},
                     classes={"default": {"dscp": 0}}, seed=SEED, t0_ns=0, sends=sends,
                     expects=expects)
    return Node(cfg, ctl=None)  # type: ignore[arg-type] - no runner: nothing reports


@pytest.fixture
def free_port(monkeypatch: pytest.MonkeyPatch) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(runtime, "KV_PORT", port)
    return int(port)


async def test_send_all_sends_every_part_whole_through_a_full_socket() -> None:
    """Header and payload in one call; the kernel takes them a piece at a time (a small send
    buffer, a slow reader): the sender waits for room and the stream is exact."""
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    a.setblocking(False)
    b.setblocking(False)
    header = b"head" * 10
    payload = np.random.default_rng(2).integers(0, 256, MiB, dtype=np.uint8)
    got = bytearray()

    async def read() -> None:
        view = memoryview(bytearray(50_000))
        while len(got) < len(header) + payload.nbytes:
            k = await _recv_into(b, view)
            got.extend(view[:k])
            await trio.lowlevel.checkpoint()

    with a, b:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            assert await _send_all(a, header, payload, b"") is True  # it had to wait
        assert bytes(got) == header + payload.tobytes()
        # what fits at once goes in one call, and nothing waited
        assert await _send_all(a, b"x", memoryview(b"yz")) is False
        assert b.recv(10) == b"xyz"


async def test_a_transfer_and_the_one_after_it_arrive_checked_and_acknowledged(
        free_port: int) -> None:
    """Two nodes over loopback: 3 MiB + 5 bytes in 1 MiB chunks, then, once that is
    acknowledged, a 64 KiB transfer in one chunk; the sender made some chunks' digests
    before the run, the others as they left."""
    first = transfer(1, 3 * MiB + 5, MiB)
    second = transfer(2, 64 * 1024, 64 * 1024, after=1)
    a = node("a", [first, second], [])
    a.prehash(budget=2)  # the first two chunks made before the run, the rest as they leave
    b = node("b", [], [first, second])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(b.listen_tcp)
            nursery.start_soon(a.run_sends)
            await a.all_done.wait()
            await b.all_done.wait()
            nursery.cancel_scope.cancel()
    assert a.sent_done == {1, 2}
    assert [(r.request, r.chunk, r.nbytes, r.ok) for r in b.chunk_records] == [
        (1, 0, MiB, True), (1, 1, MiB, True), (1, 2, MiB, True), (1, 3, 5, True),
        (2, 0, 64 * 1024, True)]
    assert [(t.request, t.status) for t in b.transfer_records()] == [(1, "ok"), (2, "ok")]
    assert b.rx_bytes == a.tx_bytes == 3 * MiB + 5 + 64 * 1024


def test_a_sender_prehashes_its_first_tcp_chunks_in_send_order() -> None:
    """Before the run: the pool windows and their digests, the ones the chunks leave with,
    up to the budget; never a UDP transfer's (its transport hashes its own)."""
    t1 = transfer(1, 2 * MiB, MiB)
    udp = dataclasses.replace(transfer(2, MiB, MiB), transport="udp")
    t3 = transfer(3, 4 * MiB, MiB)
    a = node("a", [t1, udp, t3], [])
    a.prehash(budget=3)
    assert sorted(a._prehashed) == [1, 3]
    assert len(a._prehashed[1]) == 2
    assert len(a._prehashed[3]) == 1
    for tid, tr in ((1, t1), (3, t3)):
        for (view, dg), spec in zip(a._prehashed[tid], chunks_of(tr), strict=False):
            assert np.array_equal(view, chunk_view(spec, SEED))
            assert dg == chunk_digest(spec, SEED)
    b = node("b", [t1, t3], [])
    b.prehash(budget=0)
    assert b._prehashed == {}


@pytest.mark.parametrize("piece", [1, 7, 300, 70_000])
async def test_every_chunk_is_checked_however_the_stream_is_cut(free_port: int,
                                                                piece: int) -> None:
    """A receiver fed the frames `piece` bytes at a time: a header split anywhere, a payload
    that starts in the header's read; a chunk whose bytes do not match its digest is bad,
    and the transfer is acknowledged only once every chunk came good."""
    tr = transfer(9, 200_000, 80_000)  # chunks of 80 000, 80 000, 40 000
    b = node("b", [], [tr])
    specs = chunks_of(tr)
    frames = []
    for i, spec in enumerate(specs):
        payload = chunk_view(spec, SEED)
        good = digest(payload)
        if i == 1:  # first a copy with one flipped bit, then the good one
            bad = payload.copy()
            bad[12_345] ^= 1
            frames.append(encode_chunk_header(9, i, 3, spec.nbytes, good, 1, 2) + bad.tobytes())
        frames.append(encode_chunk_header(9, i, 3, spec.nbytes, good, 1, 2) + payload.tobytes())
    stream = b"".join(frames)
    replies = bytearray()

    async def peer() -> None:
        with socket.create_connection(("127.0.0.1", free_port)) as s:
            s.setblocking(False)
            for lo in range(0, len(stream), piece):
                await _send_all(s, stream[lo: lo + piece])
                if piece < 1000 and lo % (50 * piece) == 0:
                    await trio.lowlevel.checkpoint()  # let the receiver see the pieces apart
            view = memoryview(bytearray(100))
            while not replies:  # the ack
                k = await _recv_into(s, view)
                replies.extend(view[:k])

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(b.listen_tcp)
            nursery.start_soon(peer)
            await b.all_done.wait()
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert [(r.chunk, r.ok) for r in b.chunk_records] == [(0, True), (1, False), (1, True),
                                                         (2, True)]
    (rec,) = b.transfer_records()
    assert rec.status == "ok"
    dec = FrameDecoder()
    dec.receive_data(bytes(replies))
    assert acked(dec.next_event()) == 9


@pytest.mark.parametrize("where", ["waiting for the channel", "sending"])
async def test_streamed_chunk_records_survive_the_progress_loop_being_cancelled(
        where: str) -> None:
    """The progress loop streams chunk records (`send_records(final=False)`) and is cancelled
    when the node's run ends; caught waiting for the channel (another report on it) or with
    its Records going out (the runner's buffer full), no record may be lost or sent twice:
    the final report brings what the loop did not send, and the runner reads every chunk
    once. Before this, integrity counted a chunk missing of a transfer whose receiver had it
    all (a RoCE incast run through agents, in CI)."""
    chunk, nchunks = 4096, 3000
    b = node("b", [], [transfer(1, chunk * nchunks, chunk)])
    for i in range(nchunks):
        b.on_chunk(1, i, chunk, 0, 0, 0, 0, True)
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    b.ctl, runner = Channel.from_socket(ours), Channel.from_socket(theirs)
    got: list[Records] = []

    async def read_all() -> None:
        while (msg := await runner.receive()) is not None:
            if isinstance(msg, Records):
                got.append(msg)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            progress = trio.CancelScope()
            if where == "waiting for the channel":  # another report holds it, blocked
                nursery.start_soon(b.ctl.send, Records({"chunks": [[0] * 8] * 5000,
                                                        "transfers": []}))
                await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(runtime._within, progress, partial(b.send_records, final=False))
            await trio.testing.wait_all_tasks_blocked()
            progress.cancel()  # the run ended (serve_node)
            nursery.start_soon(read_all)
            await b.send_records()
            await b.ctl.stream.aclose()
    theirs.close()
    chunks = [c for r in got for c in r.body["chunks"] if c != [0] * 8]
    transfers = [t for r in got for t in r.body["transfers"]]
    assert sorted(c[4] for c in chunks) == list(range(nchunks))  # field 4: the chunk index
    assert len(transfers) == 1
