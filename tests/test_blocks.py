"""The node's block store (fabric.node.blocks), sans-IO: proofs, pending keys, drops."""

from __future__ import annotations

import numpy as np
import pytest

from fabric.errors import FabricError
from fabric.kv.content import chunk_view
from fabric.kv.layout import block_chunks, chunks_of
from fabric.node.blocks import BlockStore, block_parts
from fabric.traffic import Transfer

SEED = 7
CB = 1000  # chunk bytes: a 2500-byte block is three parts (834, 833, 833)


def deliver(store: BlockStore, blocks: tuple[tuple[int, int], ...], source=None,
            chunk_bytes: int = CB) -> None:
    """What a receiver does with a kept transfer: every verified chunk into the store."""
    sizes = dict(blocks)
    for spec in block_chunks(5, blocks, chunk_bytes):
        assert spec.content is not None
        key, part = spec.content
        store.put_part(key, part, np.array(chunk_view(spec, SEED)), block_bytes=sizes[key],
                       chunk_bytes=chunk_bytes, source=source)


def test_reuse_of_delivered_and_made_blocks_is_proved():
    store = BlockStore(SEED, chunk_bytes=CB)
    deliver(store, ((1, 2500), (2, 800)))
    store.make(3, 4000)
    p = store.prove([1, 2, 3], now_ns=0)
    assert p.ok == (1, 2, 3)
    assert p.missing == p.corrupt == p.pending == ()
    # a made block has exactly the bytes a transfer of it carries
    other = BlockStore(SEED, chunk_bytes=CB)
    deliver(other, ((3, 4000),))
    assert np.array_equal(other.bytes_of(3), store.bytes_of(3))
    s = store.statistics()
    assert (s.held_blocks, s.held_bytes, s.received, s.made) == (3, 7300, 2, 1)


def test_a_key_never_held_is_missing():
    store = BlockStore(SEED, chunk_bytes=CB)
    deliver(store, ((1, 2500),))
    p = store.prove([1, 9], now_ns=0)
    assert p.ok == (1,)
    assert p.missing == (9,)
    assert store.bytes_of(9) is None


def test_a_flipped_byte_in_a_held_block_is_corrupt():
    store = BlockStore(SEED, chunk_bytes=CB)
    deliver(store, ((1, 2500), (2, 800)))
    held = store.bytes_of(1)
    assert held is not None
    held[1700] ^= 0x01
    p = store.prove([1, 2], now_ns=0)
    assert p.corrupt == (1,)
    assert p.ok == (2,)


def test_the_proof_uses_the_generator_not_what_arrived():
    # a block assembled from the wrong bytes (whose own digests a sender could claim) fails
    store = BlockStore(SEED, chunk_bytes=CB)
    for spec in block_parts(4, 1500, CB):
        store.put_part(4, spec.content[1], np.zeros(spec.nbytes, np.uint8), block_bytes=1500,
                       chunk_bytes=CB)
    assert store.prove([4], now_ns=0).corrupt == (4,)


def test_a_pending_key_waits_for_its_source_then_proves():
    store = BlockStore(SEED, chunk_bytes=CB)
    src = ("transfer", 1)
    store.expect(src, 100, arrives=[1, 2])
    store.expect(("op", 0), 200, reuse=[1, 2])
    p = store.prove([1, 2], now_ns=0, who=("op", 0))
    assert p.pending == (1, 2)
    assert p.ok == p.missing == ()
    deliver(store, ((1, 2500),), source=src)
    p = store.prove([1, 2], now_ns=0, who=("op", 0))
    assert p.ok == (1,)
    assert p.pending == (2,)
    # the source ended without block 2 (it failed): no longer due, so missing
    store.settle(src)
    assert store.prove([2], now_ns=0, who=("op", 0)).missing == (2,)


def test_a_source_planned_after_the_reuser_does_not_make_a_key_pending():
    store = BlockStore(SEED, chunk_bytes=CB)
    store.expect(("transfer", 1), 500, arrives=[1])  # a reload, later
    store.expect(("op", 0), 200, reuse=[1])
    assert store.prove([1], now_ns=0, who=("op", 0)).missing == (1,)


def test_a_drop_waits_for_reusers_planned_before_it():
    store = BlockStore(SEED, chunk_bytes=CB)
    deliver(store, ((1, 2500), (2, 800), (3, 900)))
    store.expect(("op", 0), 100, reuse=[1])  # before the drop: pins 1
    store.expect(("op", 1), 900, reuse=[2])  # after it: no pin
    now, deferred = store.drop([1, 2, 3], t_ns=500)
    assert (now, deferred) == (2, 1)
    assert store.holds(1)
    assert not store.holds(2)
    assert not store.holds(3)
    p = store.prove([1], now_ns=800, who=("op", 0))
    assert p.ok == (1,)
    assert not store.holds(1)  # freed once its reuser proved it
    assert store.prove([2], now_ns=900, who=("op", 1)).missing == (2,)
    s = store.statistics()
    assert (s.dropped, s.freed_late, s.freed_late_max_ns, s.held_blocks) == (3, 1, 300, 0)
    assert s.held_blocks_peak == 3
    assert s.held_peak_bytes == 4200


def test_a_missing_proof_also_releases_its_pin():
    store = BlockStore(SEED, chunk_bytes=CB)
    deliver(store, ((1, 2500),))
    store.expect(("op", 0), 100, reuse=[1, 9])
    store.drop([1], t_ns=200)
    assert store.holds(1)
    p = store.prove([9, 1], now_ns=300, who=("op", 0))
    assert p.missing == (9,)
    assert p.ok == (1,)
    assert not store.holds(1)


def test_a_new_copy_cancels_a_deferred_drop():
    store = BlockStore(SEED, chunk_bytes=CB)
    deliver(store, ((1, 2500),))
    store.expect(("op", 0), 100, reuse=[1])
    store.drop([1], t_ns=200)
    deliver(store, ((1, 2500),))  # a reload: the cache model admitted it again
    store.prove([1], now_ns=300, who=("op", 0))
    assert store.holds(1)


def test_release_frees_after_the_write_back():
    store = BlockStore(SEED, chunk_bytes=CB)
    deliver(store, ((1, 2500), (2, 800)))
    store.expect(("send", 4), 100, reuse=[1, 2])  # the write-back reads them
    assert store.release([1, 2], t_ns=100) == (0, 2)
    store.unpin([1, 2], ("send", 4), now_ns=150)
    assert not store.holds(1)
    assert not store.holds(2)
    deliver(store, ((3, 900),))
    assert store.release([3, 7]) == (1, 0)  # no planned time: at once; 7 never held
    s = store.statistics()
    assert (s.released, s.dropped, s.held_bytes) == (3, 0, 0)


def test_parts_must_fit_the_block():
    store = BlockStore(SEED, chunk_bytes=CB)
    with pytest.raises(ValueError, match="block 1 part 0: 10 bytes, expected 834"):
        store.put_part(1, 0, np.zeros(10, np.uint8), block_bytes=2500, chunk_bytes=CB)


# ---- Transfer's block fields ------------------------------------------------------------

def _tr(**kw) -> Transfer:
    base = {"id": 3, "flow": "w", "kind": "kv-append", "cls": "kv", "src": "p", "dst": "d",
            "transport": "tcp", "request": 0, "model": None, "tokens": 48, "nbytes": 3300,
            "chunk_bytes": CB, "start_ns": 0}
    base.update(kw)
    return Transfer(**base)


def test_transfer_block_fields_round_trip_through_msgpack():
    import msgpack

    tr = _tr(blocks=((1, 2500), (2, 800)), reuse=(7, 8), keep=True, from_store=True,
             release=True)
    back = Transfer.from_dict(msgpack.unpackb(msgpack.packb(tr.to_dict())))
    assert back == tr
    assert isinstance(back.blocks[0], tuple)
    assert isinstance(back.reuse, tuple)
    plain = _tr(nbytes=100)
    assert Transfer.from_dict(msgpack.unpackb(msgpack.packb(plain.to_dict()))) == plain
    # an older plan body without the fields reads as a plain transfer
    d = plain.to_dict()
    for k in ("blocks", "reuse", "keep", "from_store", "release"):
        del d[k]
    assert Transfer.from_dict(d) == plain
    assert [c.content for c in chunks_of(tr)] == [(1, 0), (1, 1), (1, 2), (2, 0)]


@pytest.mark.parametrize(("kw", "msg"), [
    ({"blocks": ((1, 3300),), "transport": "udp"},
     r"transfer 3 \(w#0 p -> d\): block transfers .* move over TCP only, not 'udp'"),
    ({"reuse": (1,), "transport": "roce"}, "over TCP only, not 'roce'"),
    ({"blocks": ((1, 3000),)}, "nbytes is 3300 but its blocks hold 3000"),
    ({"keep": True}, "keep, from_store and release need blocks to carry"),
])
def test_bad_block_transfers_are_refused(kw, msg):
    with pytest.raises(FabricError, match=msg):
        _tr(**kw)


def test_release_frees_only_the_copy_that_was_sent():
    store = BlockStore(SEED, chunk_bytes=CB)
    deliver(store, ((1, 2500), (2, 800)))
    sent = {1: store.bytes_of(1), 2: store.bytes_of(2)}
    deliver(store, ((1, 2500),))  # block 1 came back (a reload) before the ack
    assert store.release([1, 2], copies=sent) == (1, 0)
    assert store.holds(1)
    assert not store.holds(2)


def test_a_node_plan_carries_its_block_ops_and_the_files_models():
    from types import SimpleNamespace

    import msgpack

    from fabric.kv.models import ModelSpec
    from fabric.run.traffic import _plan_for
    from fabric.topology import parse_topology

    topo = parse_topology(
        "name: t\nnodes: {p: {}, d: {}, s: {}}\n"
        "links: [{endpoints: [p, d]}, {endpoints: [d, s]}]\n"
        "models:\n  mine:\n    attention: gqa\n    layers: 4\n    kv_heads: 2\n"
        "    head_dim: 64\n")
    state = SimpleNamespace(nodes={n: {"loopback": f"10.0.0.{i}"}
                                   for i, n in enumerate(("p", "d", "s"))})
    ops = {"s": [{"id": 0, "t_ns": 0, "op": "drop", "drop": [1]}]}
    transfers = [_tr(src="p", dst="d", nbytes=3300, blocks=((1, 2500), (2, 800)), keep=True)]
    body = msgpack.unpackb(msgpack.packb(_plan_for("s", state, topo, transfers, ops)))
    assert body["block_ops"] == ops["s"]
    assert {n: ModelSpec(**d) for n, d in body["models"].items()} == topo.models
    assert _plan_for("p", state, topo, transfers, ops)["block_ops"] == []


def test_a_drop_planned_before_its_block_lands_frees_it_on_landing() -> None:
    store = BlockStore(seed=1)
    store.expect(("transfer", 7), 1_000, arrives=[42])
    store.expect(("transfer", 9), 5_000, arrives=[42])
    assert store.drop([42], 2_000) == (0, 1)
    store.make(42, 64, source=("transfer", 7), now_ns=3_000)
    assert not store.holds(42)
    assert store.statistics().dropped == 1
    # a copy from a source planned after the drop is a new admission: it stays
    store.make(42, 64, source=("transfer", 9), now_ns=6_000)
    assert store.holds(42)


def test_a_late_copy_planned_earlier_neither_replaces_nor_is_released_for_a_later_one() -> None:
    store = BlockStore(seed=1)
    store.expect(("transfer", 1), 1_000, arrives=[5])
    store.expect(("transfer", 2), 3_000, arrives=[5])
    store.make(5, 64, source=("transfer", 2), now_ns=3_500)  # the later-planned copy lands
    later = store.bytes_of(5)
    store.make(5, 64, source=("transfer", 1), now_ns=4_000)  # the earlier one, late
    assert store.bytes_of(5) is later
    # a write-back planned at 2,000 (for transfer 1's copy) does not free transfer 2's
    assert store.release([5], 2_000) == (0, 0)
    assert store.holds(5)
    # a drop planned after transfer 2 does
    assert store.drop([5], 5_000) == (1, 0)
    assert not store.holds(5)
