"""Paged KV blocks as vLLM lays them out, and how one request's KV is cut into transfer chunks.

vLLM keeps, per layer, a GQA cache tensor of shape `(2, num_blocks, block_size, kv_heads,
head_dim)` (K and V) and an MLA cache of shape `(num_blocks, block_size, kv_lora_rank +
rope_dim)` (one latent); `block_size` is 16 tokens by default. The unit of transfer is therefore
one *block-layer*: `block_size` tokens of one layer (64 KiB for both Llama 3.1 models in bf16).

`plan_chunks` groups block-layers into chunks close to `target_bytes`:

- if a whole layer's blocks fit, a chunk is one or more whole layers (all blocks);
- otherwise a chunk is a run of blocks of one layer;
- a single block-layer bigger than the target travels alone (the only case above the target).

Runs are split evenly (7 blocks at 3 per chunk -> 3, 2, 2, not 3, 3, 1) so chunks stay close to
the target. Chunks come layer-major (layer 0 first), the order a layer-by-layer prefill produces
them. A chunk's wire image is C-contiguous with shape `(layers, 2, blocks, block_size, kv_heads,
head_dim)` for GQA (per layer: the K blocks, then the V blocks) and `(layers, blocks,
block_size, latent)` for MLA.

**Partial last block.** Serving engines allocate and ship whole blocks, so a request of `tokens`
occupies `ceil(tokens / block_size)` blocks and every block counts in full: `nbytes` covers whole
blocks and `sum(nbytes) == model.kv_bytes(padded_tokens(tokens))`; a chunk's `tokens` field says
how many of its token slots hold real tokens. When `tokens` is a multiple of `block_size`,
`sum(nbytes) == model.kv_bytes(tokens)` exactly.

**Hybrid state.** A hybrid model's fixed linear-attention state ships as `kind="state"` chunks
after the KV chunks (the recurrent state is final only after the layer has seen every token).
The state is laid out per linear-attention layer; chunks group whole layers, or split one layer's
state evenly into element-aligned pieces when it exceeds the target (pieces are never made
smaller than one KV block-layer, so state, like KV, exceeds the target only when a block-layer
does). For state chunks,
`layer_start`/`layer_end` are ordinals among the linear-attention layers, blocks and tokens are 0,
and `shape` is `(elements,)` of `state_dtype`. For hybrid KV chunks, layer numbers are ordinals
among the full-attention layers.

**Sliding window.** An swa model's sliding-window layers ship `kind="window"` chunks after
the growing layers' `"kv"` chunks: each such layer carries only the last
`ceil(window / block_size)` blocks of the request (all of them when the request is shorter),
the window counted back from the request's last block; layer numbers are ordinals among the
sliding-window layers, and the shape uses `swa_kv_heads`. The model's `window` is a whole
number of blocks, so `sum(nbytes) == model.kv_bytes(padded_tokens(tokens))` still holds.

**Block size** is the model's own (`ModelSpec.block_size`, 16 unless the file says otherwise);
`plan_chunks` and `transfer_bytes` take another only when asked.

**Compression.** When `kv_compression > 1`, KV and window chunks keep their tiles (layers,
blocks, tokens) but carry opaque bytes (`dtype="u8"`, `shape=(nbytes,)`): chunk sizes are the
compressed raw image's cumulative sizes, differenced (`compress(end) - compress(start)`), so
they sum to exactly `model.compress(raw KV)`; a chunk that compresses to nothing is dropped.
State chunks are not compressed.

`offset` is the chunk's byte offset in the request's transfer image (chunks in plan order,
back to back), so a receiver can land every chunk in one preallocated buffer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from fabric.kv.models import DTYPE_BYTES, ModelSpec, get_model

__all__ = [
    "BLOCK_SIZE",
    "ChunkSpec",
    "Chunked",
    "block_chunks",
    "chunks_of",
    "num_blocks",
    "padded_tokens",
    "plan_chunks",
    "transfer_bytes",
    "window_blocks",
]

BLOCK_SIZE = 16
"""vLLM's default block size in tokens."""


@dataclass(frozen=True)
class ChunkSpec:
    """One transfer chunk: a layer range x a block range of one request (or a piece of state)."""

    request_id: int
    index: int
    layer_start: int
    layer_end: int  # exclusive
    block_start: int
    block_end: int  # exclusive
    tokens: int  # real tokens covered; the last block may be partial
    nbytes: int  # whole blocks
    dtype: str
    shape: tuple[int, ...]
    kind: str = "kv"  # "kv" | "window" | "state" | "bulk" | "block"
    offset: int = 0  # byte offset in the request's transfer image
    # a cache block's (key, part), when the chunk is a part of one: the content generator then
    # keys the bytes by the block's key and takes them at `block_offset` within the block, so
    # a block has the same bytes in every transfer, however it is cut into parts
    content: tuple[int, int] | None = None
    block_offset: int = 0


def num_blocks(tokens: int, block_size: int = BLOCK_SIZE) -> int:
    """Blocks a request of `tokens` tokens occupies (whole blocks)."""
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, not {tokens}")
    return -(-tokens // block_size)


def padded_tokens(tokens: int, block_size: int = BLOCK_SIZE) -> int:
    """`tokens` rounded up to whole blocks: the token slots a transfer actually carries."""
    return num_blocks(tokens, block_size) * block_size


def window_blocks(model: ModelSpec, nblocks: int, block_size: int | None = None) -> int:
    """Blocks a sliding-window layer ships for a request of `nblocks` blocks: the window in
    whole blocks, counted back from the request's last block (0 unless swa)."""
    if model.attention != "swa":
        return 0
    bs = block_size or model.block_size
    return min(nblocks, -(-model.window // bs))


def transfer_bytes(model: ModelSpec, tokens: int, block_size: int | None = None) -> int:
    """Bytes on the wire for one request: fixed state plus whole blocks (the model's own
    block size unless `block_size` is given), compressed when the model says so."""
    bs = block_size or model.block_size
    nblocks = num_blocks(tokens, bs)
    raw = (nblocks * bs * model.raw_bytes_per_token()
           + window_blocks(model, nblocks, bs) * bs * model.swa_layers
           * model.swa_layer_bytes_per_token())
    return model.state_bytes + model.compress(raw)


def _even_runs(n: int, max_run: int) -> list[tuple[int, int]]:
    """Split range(n) into the fewest runs of at most `max_run`, sizes differing by <= 1."""
    if n == 0:
        return []
    parts = -(-n // max_run)
    base, extra = divmod(n, parts)
    runs, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        runs.append((start, start + size))
        start += size
    return runs


def _tiles(nlayers: int, b0: int, b1: int, per_chunk: int
           ) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(layer range, block range) tiles covering `nlayers` x blocks b0..b1, `per_chunk`
    block-layers at most each: whole layers when a layer's blocks fit, else runs of blocks."""
    n = b1 - b0
    if n <= 0 or nlayers <= 0:
        return []
    if per_chunk >= n:
        return [(lr, (b0, b1)) for lr in _even_runs(nlayers, max(1, per_chunk // n))]
    return [((layer, layer + 1), (b0 + r0, b0 + r1)) for layer in range(nlayers)
            for r0, r1 in _even_runs(n, per_chunk)]


def plan_chunks(
    model: ModelSpec,
    tokens: int,
    *,
    request_id: int,
    target_bytes: int = 1 << 20,
    block_size: int | None = None,
) -> list[ChunkSpec]:
    """Cut one request's KV (and a hybrid's state) into chunks close to `target_bytes`.

    Covers every (KV layer, block) exactly once, then every (sliding-window layer, window
    block), then the state; see the module docstring for the order, shapes, the whole-block
    rule and compression. `block_size` defaults to the model's own.
    """
    if target_bytes <= 0:
        raise ValueError(f"target_bytes must be positive, not {target_bytes}")
    bs = model.block_size if block_size is None else block_size
    if bs <= 0:
        raise ValueError(f"block_size must be positive, not {bs}")
    nblocks = num_blocks(tokens, bs)

    if model.uses_latent:
        tail: tuple[int, ...] = (bs, model.kv_lora_rank + model.rope_dim)
    else:
        tail = (bs, model.kv_heads, model.head_dim)
    # (kind, layers, first block, unit bytes, tail) for the growing and the window layers
    groups = [("kv", model.kv_layers, 0, bs * model.layer_bytes_per_token(), tail)]
    if model.swa_layers:
        wb = window_blocks(model, nblocks, bs)
        groups.append(("window", model.swa_layers, nblocks - wb,
                       bs * model.swa_layer_bytes_per_token(),
                       (bs, model.swa_kv_heads or model.kv_heads, model.head_dim)))

    # The uncompressed image first: (kind, layers, blocks, tokens, raw bytes, shape)
    raw: list[tuple[str, tuple[int, int], tuple[int, int], int, int, tuple[int, ...]]] = []
    for kind, nlayers, first, unit, gtail in groups:
        for (l0, l1), (b0, b1) in _tiles(nlayers, first, nblocks, max(1, target_bytes // unit)):
            nl, nb = l1 - l0, b1 - b0
            shape = (nl, nb, *gtail) if model.uses_latent else (nl, 2, nb, *gtail)
            covered = min(b1 * bs, tokens) - b0 * bs
            raw.append((kind, (l0, l1), (b0, b1), covered, nl * nb * unit, shape))

    chunks: list[ChunkSpec] = []
    offset = 0
    raw_at = 0  # offset in the uncompressed KV image
    for kind, (l0, l1), (b0, b1), covered, nbytes, shape in raw:
        dtype = model.dtype
        if model.compressed:
            # A compressed chunk is an opaque byte string; sizes telescope over the raw image
            # so that they sum to exactly model.compress(raw KV).
            nbytes, raw_at = model.compress(raw_at + nbytes) - model.compress(raw_at), \
                raw_at + nbytes
            if nbytes == 0:
                continue
            dtype, shape = "u8", (nbytes,)
        chunks.append(ChunkSpec(request_id, len(chunks), l0, l1, b0, b1, covered, nbytes,
                                dtype, shape, kind, offset))
        offset += nbytes

    if model.state_bytes:
        elem = DTYPE_BYTES[model.state_dtype]
        per_layer = model.state_bytes // model.linear_layers
        # Pieces of state are never smaller than one KV block-layer, so a tiny target cannot
        # shred the state into millions of chunks; like KV, state exceeds the target only when
        # a block-layer does.
        state_target = max(target_bytes, groups[0][3])
        if per_layer <= state_target:
            pieces = [(lr, 0, (lr[1] - lr[0]) * per_layer)
                      for lr in _even_runs(model.linear_layers, state_target // per_layer)]
        else:
            # One layer's state is bigger than the target: split each layer in even,
            # element-aligned pieces.
            elems = per_layer // elem
            runs = _even_runs(elems, max(1, state_target // elem))
            pieces = [((layer, layer + 1), e0 * elem, e1 * elem)
                      for layer in range(model.linear_layers) for e0, e1 in runs]
        for (l0, l1), start, end in pieces:
            nbytes = end - start
            chunks.append(ChunkSpec(request_id, len(chunks), l0, l1, 0, 0, 0, nbytes,
                                    model.state_dtype, (nbytes // elem,), "state", offset))
            offset += nbytes
    return chunks


class Chunked(Protocol):
    """What a transfer must say to be cut into chunks (`fabric.traffic.Transfer` does)."""

    @property
    def id(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def chunk_bytes(self) -> int: ...
    @property
    def model(self) -> str | None: ...
    @property
    def tokens(self) -> int | None: ...


def block_chunks(request_id: int, blocks: tuple[tuple[int, int], ...],
                 chunk_bytes: int) -> list[ChunkSpec]:
    """A transfer of whole cache blocks (`(key, nbytes)` each, in order): every block cut into
    even parts of at most `chunk_bytes`, each chunk's content a slice of its block's (keyed by
    the block, at the part's `block_offset`), so a block has the same bytes in every transfer
    that carries it, at any chunk size, and its holder can prove it."""
    out: list[ChunkSpec] = []
    offset = 0
    for key, nbytes in blocks:
        if key < 0 or nbytes <= 0:
            raise ValueError(f"block {key}: keys must be >= 0 and sizes > 0 (got {nbytes})")
        for part, (lo, hi) in enumerate(_even_runs(nbytes, max(1, chunk_bytes))):
            out.append(ChunkSpec(request_id=request_id, index=len(out), layer_start=0,
                                 layer_end=0, block_start=0, block_end=0, tokens=0,
                                 nbytes=hi - lo, dtype="u8", shape=(hi - lo,), kind="block",
                                 offset=offset, content=(key, part), block_offset=lo))
            offset += hi - lo
    return out


def chunks_of(tr: Chunked) -> list[ChunkSpec]:
    """The chunks a transfer is cut into (KV: block x layer tiles; bulk: fixed pieces): what
    every transport sends."""
    blocks = getattr(tr, "blocks", ())
    if blocks:
        return block_chunks(tr.id, blocks, tr.chunk_bytes)
    if tr.model is None:
        n = max(1, math.ceil(tr.nbytes / tr.chunk_bytes))
        out = []
        for i in range(n):
            size = min(tr.chunk_bytes, tr.nbytes - i * tr.chunk_bytes)
            out.append(ChunkSpec(request_id=tr.id, index=i, layer_start=0, layer_end=0,
                                 block_start=0, block_end=0, tokens=0, nbytes=size, dtype="u8",
                                 shape=(size,), kind="bulk", offset=i * tr.chunk_bytes))
        return out
    assert tr.tokens is not None
    return plan_chunks(get_model(tr.model), tr.tokens, request_id=tr.id,
                       target_bytes=tr.chunk_bytes)
