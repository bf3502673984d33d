"""KV cache as data: exact bytes per token, chunk plans, seeded content and digests."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.errors import FabricError
from fabric.kv import (
    BLOCK_SIZE,
    MODELS,
    ChunkSpec,
    ModelSpec,
    chunk_digest,
    describe,
    digest,
    fill_chunk,
    get_model,
    num_blocks,
    padded_tokens,
    plan_chunks,
    transfer_bytes,
    verify,
)
from fabric.kv.content import POOL_SPAN, chunk_view

MiB = 1 << 20


@pytest.mark.parametrize(
    ("name", "per_token"),
    [
        ("llama-3.1-8b", 131_072),
        ("llama-3.1-70b", 327_680),
        ("qwen3-8b", 147_456),
        ("deepseek-v3", 70_272),
        ("minimax-m2.5", 253_952),
        ("prfaas-hybrid-1t", 17_280),
    ],
)
def test_bytes_per_token_exact(name: str, per_token: int) -> None:
    assert get_model(name).bytes_per_token() == per_token


def test_reference_totals() -> None:
    # Mooncake: 32,768 Qwen3-8B tokens = 4.50 GiB; one 16-token block-layer of Llama = 64 KiB.
    assert get_model("qwen3-8b").kv_bytes(32_768) == 4_831_838_208 == int(4.5 * (1 << 30))
    for name in ("llama-3.1-8b", "llama-3.1-70b"):
        m = get_model(name)
        assert BLOCK_SIZE * m.layer_bytes_per_token() == 64 * 1024
    assert get_model("llama-3.1-8b").kv_bytes(0) == 0


# The PrfaaS seed's figures and the stated tolerance of the fit (see models.py).
@pytest.mark.parametrize(
    ("tokens", "seed_mib", "tolerance"),
    [(1_024, 190.8, 0.06), (32_768, 701.3, 0.005), (131_072, 2_316.3, 0.005)],
)
def test_hybrid_matches_prfaas_seed(tokens: int, seed_mib: float, tolerance: float) -> None:
    m = get_model("prfaas-hybrid-1t")
    got_mib = m.kv_bytes(tokens) / MiB
    assert abs(got_mib - seed_mib) / seed_mib <= tolerance


def test_hybrid_fitted_numbers() -> None:
    m = get_model("prfaas-hybrid-1t")
    assert (m.layers, m.kv_layers, m.linear_layers) == (60, 15, 45)
    assert m.state_bytes == 171_800_460 == 45 * 3_817_788
    assert m.kv_bytes(1_024) == 189_495_180
    assert m.kv_bytes(32_768) == 738_031_500
    assert m.kv_bytes(131_072) == 2_436_724_620
    # Hybrid state makes KV grow far slower than the dense counter-case (seed: 59.93 vs 3.19 Gbps).
    dense = get_model("minimax-m2.5")
    assert dense.kv_bytes(32_768) / m.kv_bytes(32_768) > 10


def test_unknown_model_lists_known_names() -> None:
    known = r"unknown model 'gpt-9': known models are .*llama-3\.1-8b"
    with pytest.raises(FabricError, match=known):
        get_model("gpt-9")


def test_bad_specs_are_rejected() -> None:
    with pytest.raises(FabricError, match="attention must be one of"):
        ModelSpec("x", "rnn", layers=1, kv_heads=1, head_dim=1)
    with pytest.raises(FabricError, match="dtype must be one of"):
        ModelSpec("x", "gqa", layers=1, kv_heads=1, head_dim=1, dtype="int4")
    with pytest.raises(FabricError, match="MLA needs kv_lora_rank"):
        ModelSpec("x", "mla", layers=1)
    with pytest.raises(FabricError, match="only applies to hybrid"):
        ModelSpec("x", "gqa", layers=1, kv_heads=1, head_dim=1, state_bytes=4)
    with pytest.raises(FabricError, match="split evenly"):
        ModelSpec("x", "hybrid", layers=4, full_attention_layers=1, kv_heads=1, head_dim=1,
                  state_bytes=10)


def test_dtype_bytes() -> None:
    m = ModelSpec("x", "gqa", layers=2, kv_heads=2, head_dim=4, dtype="fp8")
    assert m.dtype_bytes == 1
    assert m.bytes_per_token() == 2 * 2 * 2 * 4


# -- layout ---------------------------------------------------------------------------------

def _check_cover(model: ModelSpec, tokens: int, chunks: list[ChunkSpec], target: int) -> None:
    bs = model.block_size
    nblocks = num_blocks(tokens, bs)
    seen: dict[str, set[tuple[int, int]]] = {"kv": set(), "window": set()}
    unit = {"kv": bs * model.layer_bytes_per_token(),
            "window": bs * model.swa_layer_bytes_per_token()}
    offset = 0
    for i, c in enumerate(chunks):
        assert c.index == i
        assert c.offset == offset
        offset += c.nbytes
        elem = 4 if c.kind == "state" else 1 if c.dtype == "u8" else model.dtype_bytes
        assert c.nbytes == int(np.prod(c.shape)) * elem
        if c.kind in seen:
            if not model.compressed:
                assert c.nbytes <= target or c.nbytes == unit[c.kind]
            for cell in itertools.product(range(c.layer_start, c.layer_end),
                                          range(c.block_start, c.block_end)):
                assert cell not in seen[c.kind]
                seen[c.kind].add(cell)
            real = min(c.block_end * bs, tokens) - c.block_start * bs
            assert c.tokens == real
        else:
            assert c.kind == "state"
            assert c.nbytes <= max(target, unit["kv"])
    assert seen["kv"] == set(itertools.product(range(model.kv_layers), range(nblocks)))
    wb = min(nblocks, -(-model.window // bs)) if model.attention == "swa" else 0
    assert seen["window"] == set(itertools.product(range(model.swa_layers),
                                                   range(nblocks - wb, nblocks)))
    assert offset == transfer_bytes(model, tokens)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("tokens", [16, 1_024, 4_096])
def test_plan_covers_every_block_layer_once(name: str, tokens: int) -> None:
    model = get_model(name)
    chunks = plan_chunks(model, tokens, request_id=7)
    _check_cover(model, tokens, chunks, 1 << 20)
    assert sum(c.nbytes for c in chunks) == model.kv_bytes(tokens)
    assert all(c.request_id == 7 for c in chunks)


def test_llama_chunks_are_one_layer_of_256_tokens() -> None:
    chunks = plan_chunks(get_model("llama-3.1-8b"), 1_024, request_id=0)
    assert len(chunks) == 32 * 4
    c = chunks[0]
    assert (c.layer_start, c.layer_end, c.block_start, c.block_end) == (0, 1, 0, 16)
    assert c.shape == (1, 2, 16, 16, 8, 128)
    assert c.nbytes == 1 << 20
    assert c.tokens == 256
    assert c.dtype == "bf16"
    assert c.kind == "kv"
    # layer-major: the first four chunks are layer 0
    assert [x.layer_start for x in chunks[:5]] == [0, 0, 0, 0, 1]


def test_short_request_groups_whole_layers() -> None:
    chunks = plan_chunks(get_model("llama-3.1-8b"), 64, request_id=0)  # 4 blocks
    # 16 block-layers per MiB -> 4 layers of 4 blocks per chunk
    assert len(chunks) == 8
    assert chunks[0].shape == (4, 2, 4, 16, 8, 128)
    assert all(c.nbytes == 1 << 20 for c in chunks)


def test_mla_shape() -> None:
    c = plan_chunks(get_model("deepseek-v3"), 1_024, request_id=0)[0]
    assert c.shape[0] == 1
    assert c.shape[2:] == (16, 576)


def test_runs_are_even() -> None:
    # 7 blocks with 3 block-layers per chunk -> 3, 2, 2 rather than 3, 3, 1
    m = get_model("llama-3.1-8b")
    chunks = plan_chunks(m, 7 * 16, request_id=0, target_bytes=3 * 64 * 1024)
    assert [c.block_end - c.block_start for c in chunks[:3]] == [3, 2, 2]


def test_block_layer_bigger_than_target_travels_alone() -> None:
    m = get_model("llama-3.1-70b")
    chunks = plan_chunks(m, 48, request_id=0, target_bytes=1_000)
    assert len(chunks) == 80 * 3
    assert all(c.nbytes == 64 * 1024 for c in chunks)


def test_partial_last_block_ships_whole_blocks() -> None:
    m = get_model("llama-3.1-8b")
    chunks = plan_chunks(m, 1_000, request_id=0)
    assert num_blocks(1_000) == 63
    assert padded_tokens(1_000) == 1_008
    assert sum(c.nbytes for c in chunks) == m.kv_bytes(1_008) == transfer_bytes(m, 1_000)
    last = [c for c in chunks if c.block_end == 63][0]
    assert last.tokens == 1_000 - last.block_start * 16
    _check_cover(m, 1_000, chunks, 1 << 20)


def test_hybrid_ships_state_after_kv() -> None:
    m = get_model("prfaas-hybrid-1t")
    chunks = plan_chunks(m, 32_768, request_id=3)
    kinds = [c.kind for c in chunks]
    first_state = kinds.index("state")
    assert set(kinds[:first_state]) == {"kv"}
    assert set(kinds[first_state:]) == {"state"}
    state = chunks[first_state:]
    assert sum(c.nbytes for c in state) == m.state_bytes
    assert all(c.dtype == "fp32" and c.nbytes <= 1 << 20 for c in state)
    assert {c.layer_start for c in state} == set(range(45))
    assert sum(c.nbytes for c in chunks) == m.kv_bytes(32_768)
    # zero tokens: only the state moves
    only_state = plan_chunks(m, 0, request_id=3)
    assert only_state
    assert all(c.kind == "state" for c in only_state)


def test_small_state_groups_whole_layers() -> None:
    m = ModelSpec("h", "hybrid", layers=4, full_attention_layers=1, kv_heads=1, head_dim=8,
                  state_bytes=3 * 1024)
    state = [c for c in plan_chunks(m, 16, request_id=0, target_bytes=2048) if c.kind == "state"]
    assert [(c.layer_start, c.layer_end, c.nbytes) for c in state] == [(0, 2, 2048), (2, 3, 1024)]


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(MODELS)),
    tokens=st.integers(0, 3_000),
    target=st.integers(1, 4 << 20),
)
def test_plan_property(name: str, tokens: int, target: int) -> None:
    model = get_model(name)
    _check_cover(model, tokens, plan_chunks(model, tokens, request_id=1, target_bytes=target),
                 target)


def test_plan_rejects_bad_arguments() -> None:
    m = get_model("llama-3.1-8b")
    with pytest.raises(ValueError, match="target_bytes must be positive"):
        plan_chunks(m, 16, request_id=0, target_bytes=0)
    with pytest.raises(ValueError, match="tokens must be >= 0"):
        plan_chunks(m, -1, request_id=0)


# -- content --------------------------------------------------------------------------------

def _spec(nbytes: int, index: int = 0, request_id: int = 0) -> ChunkSpec:
    return ChunkSpec(request_id, index, 0, 1, 0, 1, 16, nbytes, "bf16", (nbytes // 2,))


def test_fill_is_deterministic_and_keyed() -> None:
    a, b, c, d = (np.empty(4096, np.uint8) for _ in range(4))
    fill_chunk(a, _spec(4096), seed=1)
    fill_chunk(b, _spec(4096), seed=1)
    fill_chunk(c, _spec(4096, index=1), seed=1)
    fill_chunk(d, _spec(4096), seed=2)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    assert a.tobytes() != d.tobytes()
    e = np.empty(4096, np.uint8)
    fill_chunk(e, _spec(4096, request_id=1), seed=1)
    assert a.tobytes() != e.tobytes()


def test_fill_accepts_memoryview_and_odd_sizes() -> None:
    ref = np.empty(1 << 20, np.uint8)
    fill_chunk(ref, _spec(1 << 20), seed=9)
    for n in (1, 7, 8, 13, 4099):
        buf = bytearray(n)
        fill_chunk(memoryview(buf), _spec(n), seed=9)
        # a prefix of the same window: content does not depend on the buffer size
        assert bytes(buf) == ref[:n].tobytes()


def test_content_is_a_window_of_the_seeded_pool() -> None:
    # a chunk larger than the pool's offset span still reads one stream: the pool grows
    n = (3 << 20) + 24
    big = np.empty(n, np.uint8)
    fill_chunk(big, _spec(n), seed=4)
    view = chunk_view(_spec(n), seed=4)
    assert not view.flags.writeable
    assert big.tobytes() == view.tobytes()
    start = int(np.random.SeedSequence([4, 0, 0]).generate_state(1)[0]) % (POOL_SPAN // 8) * 8
    words = np.random.PCG64(np.random.SeedSequence([4, 0xFAB])).random_raw((start + n) // 8 + 1)
    stream = words.astype("<u8").view(np.uint8)
    assert big.tobytes() == stream[start: start + n].tobytes()
    # growing the pool for a bigger chunk does not change smaller chunks' content
    small = np.empty(4096, np.uint8)
    fill_chunk(small, _spec(4096, index=3), seed=4)
    fill_chunk(np.empty(40 << 20, np.uint8), _spec(40 << 20, index=5), seed=4)
    assert chunk_view(_spec(4096, index=3), seed=4).tobytes() == small.tobytes()


def test_fill_checks_the_buffer() -> None:
    with pytest.raises(ValueError, match="buffer holds 10 bytes, chunk 0 needs 12"):
        fill_chunk(bytearray(10), _spec(12), seed=0)
    ro = np.zeros(16, np.uint8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fill_chunk(ro, _spec(16), seed=0)


def test_digest_and_verify() -> None:
    spec = plan_chunks(get_model("llama-3.1-8b"), 256, request_id=5)[0]
    buf = np.empty(spec.shape, dtype=np.uint16)  # bf16 stored as raw 16-bit words
    fill_chunk(buf, spec, seed=42)
    d = digest(buf)
    assert len(d) == 16
    assert d == chunk_digest(spec, 42)
    assert verify(buf, spec, d)
    flat = buf.reshape(-1).view(np.uint8)
    flat[12345] ^= 1
    assert not verify(buf, spec, d)
    flat[12345] ^= 1
    assert verify(memoryview(flat), spec, d)
    assert not verify(flat[:-1], spec, d)


def test_describe() -> None:
    text = describe(get_model("llama-3.1-8b"), 32_768)
    assert "131,072 B (128 KiB)" in text
    assert "4,294,967,296 B (4 GiB)" in text
    assert "2,048 of 16 tokens" in text
    assert "4,096 at 1 MiB" in text
    hybrid = describe(get_model("prfaas-hybrid-1t"), 1_000)
    assert "15 full attention, 45 linear" in hybrid
    assert "fixed state  171,800,460 B" in hybrid
    assert "last partial" in hybrid


def test_a_cache_block_has_the_same_bytes_however_it_is_cut() -> None:
    from fabric.kv.content import chunk_view
    from fabric.kv.layout import block_chunks

    whole = [chunk_view(c, 5) for c in block_chunks(1, ((77, 3000), (78, 100)), 4096)]
    for cut in (1000, 256, 7):
        parts = block_chunks(2, ((77, 3000), (78, 100)), cut)
        got = np.concatenate([chunk_view(c, 5) for c in parts if c.content[0] == 77])
        assert np.array_equal(got, whole[0])
        assert [c.content[1] for c in parts if c.content[0] == 78] == list(
            range(len([c for c in parts if c.content[0] == 78])))
    # another block, another window
    assert not np.array_equal(whole[0][:100], whole[1])
