"""The runner/node control protocol: every message round-trips through one frame, a bad frame
is a ProtocolError, and both ends over a real socket pair (start, ready, go, stop, a node
that dies before it is ready)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from fabric.errors import FabricError
from fabric.node.session import (
    Channel,
    Done,
    Go,
    Nodes,
    Plan,
    Progress,
    Ready,
    Records,
    Result,
    Stop,
    Sync,
    Task,
    decode,
    encode,
)
from fabric.wire.frames import FrameDecoder, Header, Payload, ProtocolError, encode_header

MESSAGES = [
    Plan({"address": "198.19.0.1", "sends": [{"id": 1}], "7": [1, 2]}), Ready(),
    Go(t0=123, now=99), Sync(now=5), Stop(), Task({"k": "loadstore", "sizes": [64]}),
    Result({1: {"ns": 10}, "served": 3}), Progress(rx=10, tx=20),
    Records({"chunks": [[1, 2]], "transfers": []}),
    Done(rss_start_kb=1, hwm_kb=2, transport={"udp_retransmitted": 4}),
]


def _frames(data: bytes) -> tuple[dict, bytes]:
    dec = FrameDecoder()
    dec.receive_data(data)
    header = dict(dec.next_event())  # type: ignore[arg-type]
    if header["n"] == 0:
        return header, b""
    ev = dec.next_event()
    assert isinstance(ev, Payload)
    return header, bytes(ev.data)


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg) -> None:  # noqa: ANN001
    header, payload = _frames(encode(msg))
    assert header["t"] == msg.kind
    assert decode(header, payload) == msg


def test_fields_travel_in_the_header_and_a_body_as_payload() -> None:
    header, payload = _frames(encode(Go(t0=7, now=8)))
    assert (header, payload) == ({"t": "go", "n": 0, "t0": 7, "now": 8}, b"")
    header, payload = _frames(encode(Plan({"a": 1})))
    assert header == {"t": "plan", "n": len(payload)}


@pytest.mark.parametrize(("header", "message"), [
    ({"t": "howdy", "n": 0}, "unknown control message 'howdy'"),
    ({"t": "go", "n": 0}, "control message 'go': "),
    ({"t": "progress", "n": 0, "rx": 1, "tx": 2, "extra": 3}, "control message 'progress': "),
])
def test_bad_frames_are_protocol_errors(header: dict, message: str) -> None:
    with pytest.raises(ProtocolError, match=f"^{message}"):
        decode(Header(header))


async def test_runner_and_nodes_over_socket_pairs() -> None:
    """Nodes.start sends each plan and waits for every Ready; Go and Stop reach every node;
    each node's Records come back to the runner."""
    pairs = {name: socket.socketpair() for name in ("a", "b")}
    nodes = Nodes({name: ours for name, (ours, _) in pairs.items()})

    async def node(theirs: socket.socket, name: str) -> None:
        ctl = Channel.from_socket(theirs)
        plan = await ctl.receive()
        assert plan == Plan({"name": name})
        await ctl.send(Ready())
        go = await ctl.receive()
        assert isinstance(go, Go)
        assert go.t0 == 42
        assert await ctl.receive() == Stop()
        await ctl.send(Records({"from": name}))

    async with trio.open_nursery() as nursery:
        for name, (_, theirs) in pairs.items():
            nursery.start_soon(node, theirs, name)
        await nodes.start({name: {"name": name} for name in pairs}, within=5)
        await nodes.broadcast(Go(t0=42))
        await nodes.broadcast(Stop())
        got = {name: await nodes[name].receive() for name in pairs}
    assert got == {name: Records({"from": name}) for name in pairs}
    for pair in pairs.values():
        for sock in pair:
            sock.close()


async def test_a_node_that_dies_before_ready_is_named() -> None:
    ours, theirs = socket.socketpair()
    nodes = Nodes({"n7": ours}, what="memory node")
    theirs.close()  # the node process died
    with pytest.raises(FabricError, match=r"^memory node n7 failed to start \(its error is "):
        await nodes.start({"n7": {}}, within=5)
    # a message to a node already gone is passed over, not raised
    await nodes.broadcast(Stop())
    ours.close()


async def test_a_node_that_never_gets_ready_times_out() -> None:
    ours, theirs = socket.socketpair()
    nodes = Nodes({"slow": ours}, what="LPU node")
    with pytest.raises(FabricError, match=r"^LPU nodes did not get ready within 0 s"):
        await nodes.start({"slow": {}}, within=0.05)
    theirs.close()
    ours.close()


async def test_an_unknown_message_from_a_node_is_a_protocol_error() -> None:
    ours, theirs = socket.socketpair()
    ctl = Channel.from_socket(ours)
    theirs.sendall(encode_header({"t": "howdy", "n": 0}))
    with pytest.raises(ProtocolError, match="unknown control message 'howdy'"):
        await ctl.receive()
    theirs.close()
    ours.close()


async def test_a_cancelled_send_never_leaves_half_a_message_on_the_channel() -> None:
    """A task cancelled while its message is going out (the peer's buffer full) still sends
    the whole message, or none of it when it was still waiting for the channel: a message
    cut in two would make every later one on the channel unreadable (the node's progress
    loop is cancelled when its run ends, and its Records follow it)."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ctl, peer = Channel.from_socket(ours), Channel.from_socket(theirs)
    big = Records({"chunks": [[i, "x" * 40] for i in range(5000)]})  # far more than fits
    got: list = []

    async with trio.open_nursery() as nursery:
        first, second = trio.CancelScope(), trio.CancelScope()
        nursery.start_soon(_send_within, first, ctl, big)
        await trio.testing.wait_all_tasks_blocked()  # blocked: the peer reads nothing
        nursery.start_soon(_send_within, second, ctl, Progress(rx=1, tx=1))
        await trio.testing.wait_all_tasks_blocked()  # waiting for the channel
        first.cancel()
        second.cancel()

        async def read_all() -> None:
            while (msg := await peer.receive()) is not None:
                got.append(msg)

        nursery.start_soon(read_all)
        await ctl.send(Done())
        await ctl.stream.aclose()
    # the cut-in message arrived whole, the one still waiting never left, the next is intact
    assert got == [big, Done()]
    theirs.close()


async def _send_within(scope: trio.CancelScope, ctl: Channel, msg: Records | Progress) -> None:
    with scope:
        await ctl.send(msg)
