"""The test-only sender fault (`fabric.node.faults`), in memory: which frames leave instead of
a chunk, and that the UDP sender's view of its endpoint applies them."""

from __future__ import annotations

import numpy as np
import pytest

from fabric.errors import FabricError
from fabric.kv.content import digest
from fabric.node.faults import FAULT_ENV, Fault, from_env, wrap_endpoints
from fabric.traffic import Transfer
from fabric.wire.frames import FrameDecoder, chunk_header, encode_chunk_header


def transfer(tid: int, transport: str = "tcp") -> Transfer:
    return Transfer(id=tid, flow="f", kind="one-to-one", cls="default", src="a", dst="b",
                    transport=transport, request=tid, model=None, tokens=None, nbytes=3000,
                    chunk_bytes=1000, start_ns=0)


def payload(seed: int, n: int = 1000) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def test_other_transfers_leave_as_they_are() -> None:
    p = payload(1)
    for kind in ("corrupt", "truncate", "duplicate"):
        fault = Fault(kind, xfer=7)
        for index in range(3):
            (frame,) = fault.frames(6, index, 3, p)
            assert frame is p


def test_corrupt_damages_a_copy_of_chunk_0_past_the_digest() -> None:
    p = payload(2)
    fault = Fault("corrupt", xfer=7)
    (bad,) = fault.frames(7, 0, 3, p)
    assert bad is not p
    assert digest(bad) != digest(p)  # what the receiver's check sees
    diff = np.flatnonzero(bad != p)
    assert diff.tolist() == [500]
    assert int(bad[500]) == int(p[500]) ^ 0xFF
    assert fault.frames(7, 1, 3, p)[0] is p  # one chunk only


def test_corrupt_leaves_a_frames_header_alone() -> None:
    frame = payload(3, 1100)
    (bad,) = Fault("corrupt", xfer=1).frames(1, 0, 2, frame, payload_at=100)
    assert np.flatnonzero(bad != frame).tolist() == [100 + 500]


def test_truncate_drops_the_last_chunk() -> None:
    p = payload(4)
    fault = Fault("truncate", xfer=7)
    assert [len(fault.frames(7, i, 3, p)) for i in range(3)] == [1, 1, 0]


def test_duplicate_sends_chunk_0_twice() -> None:
    p = payload(5)
    fault = Fault("duplicate", xfer=7)
    assert fault.frames(7, 0, 3, p) == [p, p]
    assert [len(fault.frames(7, i, 3, p)) for i in (1, 2)] == [1, 1]


def test_from_env_reads_the_variable_and_picks_the_last_tcp_or_udp_transfer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sends = [transfer(3, "udp"), transfer(5, "tcp"), transfer(9, "roce"), transfer(4)]
    monkeypatch.delenv(FAULT_ENV, raising=False)
    assert from_env(sends) is None
    monkeypatch.setenv(FAULT_ENV, "")
    assert from_env(sends) is None
    monkeypatch.setenv(FAULT_ENV, "truncate")
    assert from_env(sends) == Fault("truncate", 5)  # RoCE is not reached
    assert from_env([transfer(9, "roce")]) is None
    assert from_env([]) is None
    monkeypatch.setenv(FAULT_ENV, "flip")
    with pytest.raises(FabricError, match=r"^FABRIC_TEST_FAULT='flip': expected one of "
                                          r"corrupt, truncate, duplicate \(a test-only"):
        from_env(sends)


class FakeUdp:
    """Records the units a UDP sender hands its endpoint."""

    def __init__(self) -> None:
        self.units: list[tuple[str, bytes, int]] = []

    async def send_unit(self, dst: str, unit: np.ndarray, tos: int) -> None:
        self.units.append((dst, bytes(memoryview(unit)), tos))

    def statistics(self) -> dict[str, int]:
        return {"udp_retransmitted": 3}


def unit(xfer: int, index: int, count: int, body: np.ndarray) -> np.ndarray:
    """A chunk frame as `fabric.node.udp` builds one: header, then payload."""
    header = encode_chunk_header(xfer, index, count, body.nbytes, digest(body), 1, 2)
    return np.concatenate([np.frombuffer(header, np.uint8), body])


def received(data: bytes) -> tuple[int, int, bool]:
    """(transfer, index, digest matches) of a frame, as the receiver checks it."""
    dec = FrameDecoder()
    dec.receive_data(data)
    chunk = chunk_header(dec.next_event())
    assert chunk is not None
    return chunk.xfer, chunk.index, digest(np.frombuffer(data[-chunk.nbytes:], np.uint8)) == \
        chunk.digest


@pytest.mark.parametrize(("kind", "expected"), [
    ("corrupt", [(1, 0, True), (1, 1, True), (2, 0, False), (2, 1, True)]),
    ("truncate", [(1, 0, True), (1, 1, True), (2, 0, True)]),
    ("duplicate", [(1, 0, True), (1, 1, True), (2, 0, True), (2, 0, True), (2, 1, True)]),
])
async def test_the_udp_senders_endpoint_applies_the_fault(kind: str, expected: list) -> None:
    fake = FakeUdp()
    endpoints: dict = {"udp": fake, "roce": object()}
    wrap_endpoints(endpoints, Fault(kind, xfer=2))
    assert endpoints["udp"] is not fake
    assert endpoints["udp"].statistics() == {"udp_retransmitted": 3}
    for xfer in (1, 2):
        for index in range(2):
            await endpoints["udp"].send_unit("b", unit(xfer, index, 2, payload(index)), 40)
    assert [received(u) for _, u, _ in fake.units] == expected
    assert {(dst, tos) for dst, _, tos in fake.units} == {("b", 40)}
