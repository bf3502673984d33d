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
    kind: str = "kv"  # "kv" | "state" | "bulk" | "block"
    offset: int = 0  # byte offset in the request's transfer image
    # what the content generator keys this chunk's bytes by, when not (request_id, index): a
    # cache block's (key, part), so a block's bytes are the same in every transfer
    content: tuple[int, int] | None = None


def num_blocks(tokens: int, block_size: int = BLOCK_SIZE) -> int:
    """Blocks a request of `tokens` tokens occupies (whole blocks)."""
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, not {tokens}")
    return -(-tokens // block_size)


def padded_tokens(tokens: int, block_size: int = BLOCK_SIZE) -> int:
    """`tokens` rounded up to whole blocks: the token slots a transfer actually carries."""
    return num_blocks(tokens, block_size) * block_size


def transfer_bytes(model: ModelSpec, tokens: int, block_size: int = BLOCK_SIZE) -> int:
    """Bytes on the wire for one request: fixed state plus whole blocks."""
    return model.kv_bytes(padded_tokens(tokens, block_size))


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


def plan_chunks(
    model: ModelSpec,
    tokens: int,
    *,
    request_id: int,
    target_bytes: int = 1 << 20,
    block_size: int = BLOCK_SIZE,
) -> list[ChunkSpec]:
    """Cut one request's KV (and a hybrid's state) into chunks close to `target_bytes`.

    Covers every (KV layer, block) exactly once; see the module docstring for the order, shapes
    and the whole-block rule.
    """
    if target_bytes <= 0:
        raise ValueError(f"target_bytes must be positive, not {target_bytes}")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, not {block_size}")
    nblocks = num_blocks(tokens, block_size)
    nlayers = model.kv_layers
    unit = block_size * model.layer_bytes_per_token()  # one block-layer
    per_chunk = max(1, target_bytes // unit)  # block-layers per chunk

    if per_chunk >= nblocks > 0:
        layer_runs = _even_runs(nlayers, max(1, per_chunk // nblocks))
        tiles = [(lr, (0, nblocks)) for lr in layer_runs]
    else:
        block_runs = _even_runs(nblocks, per_chunk)
        tiles = [((layer, layer + 1), br) for layer in range(nlayers) for br in block_runs]

    if model.uses_latent:
        tail: tuple[int, ...] = (block_size, model.kv_lora_rank + model.rope_dim)
    else:
        tail = (block_size, model.kv_heads, model.head_dim)

    chunks: list[ChunkSpec] = []
    offset = 0
    for (l0, l1), (b0, b1) in tiles:
        nl, nb = l1 - l0, b1 - b0
        shape = (nl, nb, *tail) if model.uses_latent else (nl, 2, nb, *tail)
        nbytes = nl * nb * unit
        covered = min(b1 * block_size, tokens) - b0 * block_size
        chunks.append(ChunkSpec(request_id, len(chunks), l0, l1, b0, b1, covered, nbytes,
                                model.dtype, shape, "kv", offset))
        offset += nbytes

    if model.state_bytes:
        elem = DTYPE_BYTES[model.state_dtype]
        per_layer = model.state_bytes // model.linear_layers
        # Pieces of state are never smaller than one KV block-layer, so a tiny target cannot
        # shred the state into millions of chunks; like KV, state exceeds the target only when
        # a block-layer does.
        state_target = max(target_bytes, unit)
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
    even parts of at most `chunk_bytes`, each chunk's content keyed by `(key, part)`, so a
    block has the same bytes in every transfer that carries it and its holder can prove it."""
    out: list[ChunkSpec] = []
    offset = 0
    for key, nbytes in blocks:
        if key < 0 or nbytes <= 0:
            raise ValueError(f"block {key}: keys must be >= 0 and sizes > 0 (got {nbytes})")
        for part, (lo, hi) in enumerate(_even_runs(nbytes, max(1, chunk_bytes))):
            out.append(ChunkSpec(request_id=request_id, index=len(out), layer_start=0,
                                 layer_end=0, block_start=0, block_end=0, tokens=0,
                                 nbytes=hi - lo, dtype="u8", shape=(hi - lo,), kind="block",
                                 offset=offset, content=(key, part)))
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
