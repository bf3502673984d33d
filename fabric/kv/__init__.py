"""KV cache as data: model shapes, paged block layout, transfer chunks, seeded content, digests,
and prefill time per model (`prefill.py`: the PrfaaS runs' profiles).

Pure: no sockets, no clocks. `describe(model, tokens)` is the text of `fabric kv MODEL --tokens N`.
"""

from __future__ import annotations

from fabric.kv.content import DIGEST_SIZE, chunk_digest, digest, fill_chunk, verify
from fabric.kv.layout import (
    BLOCK_SIZE,
    ChunkSpec,
    num_blocks,
    padded_tokens,
    plan_chunks,
    transfer_bytes,
    window_blocks,
)
from fabric.kv.models import (
    BUILTIN_MODELS,
    DTYPE_BYTES,
    MODELS,
    ModelSpec,
    file_models,
    get_model,
    use_file_models,
)
from fabric.units import format_size

__all__ = [
    "BLOCK_SIZE",
    "BUILTIN_MODELS",
    "DIGEST_SIZE",
    "DTYPE_BYTES",
    "MODELS",
    "ChunkSpec",
    "ModelSpec",
    "chunk_digest",
    "describe",
    "digest",
    "file_models",
    "fill_chunk",
    "get_model",
    "num_blocks",
    "padded_tokens",
    "plan_chunks",
    "transfer_bytes",
    "use_file_models",
    "verify",
    "window_blocks",
]


def describe(model: ModelSpec, tokens: int, *, target_bytes: int = 1 << 20) -> str:
    """A few lines about one request's KV: bytes/token, total, blocks, layers, chunks."""
    chunks = plan_chunks(model, tokens, request_id=0, target_bytes=target_bytes)
    n_state = sum(1 for c in chunks if c.kind == "state")
    if model.uses_latent:
        shape = f"MLA latent {model.kv_lora_rank}+{model.rope_dim}"
    else:
        shape = f"{model.kv_heads} KV heads x {model.head_dim}"
    if model.attention == "hybrid":
        layers = (f"{model.layers} ({model.kv_layers} full attention, {model.linear_layers} "
                  f"linear with fixed state)")
    elif model.attention == "swa":
        heads = (f", {model.swa_kv_heads} KV heads" if model.swa_kv_heads
                 and model.swa_kv_heads != model.kv_heads else "")
        layers = (f"{model.layers} ({model.kv_layers} full attention, {model.swa_layers} "
                  f"sliding window of {model.window:,} tokens{heads})")
    else:
        layers = str(model.layers)
    bpt = model.bytes_per_token()
    lines = [
        f"model        {model.name} ({model.attention}, {shape}, {model.dtype})",
        f"layers       {layers}",
        f"bytes/token  {bpt:,} B ({format_size(bpt)})"
        + (f", compressed {model.kv_compression:g}x from {model.raw_bytes_per_token():,} B"
           if model.compressed else ""),
    ]
    if model.swa_layers:
        most = model.window_bytes(model.window)
        lines.append(f"window       at most {model.compress(most):,} B ({format_size(most)}"
                     f"{' before compression' if model.compressed else ''})")
    if model.state_bytes:
        lines.append(f"fixed state  {model.state_bytes:,} B ({format_size(model.state_bytes)})")
    total = model.kv_bytes(tokens)
    wire = transfer_bytes(model, tokens)
    bs = model.block_size
    lines += [
        f"tokens       {tokens:,}",
        f"KV total     {total:,} B ({format_size(total)})",
        f"blocks       {num_blocks(tokens, bs):,} of {bs} tokens"
        + (f" (last partial; {format_size(wire)} on the wire)" if wire != total else ""),
        f"chunks       {len(chunks):,} at {format_size(target_bytes)}"
        + (f" ({n_state} of them state)" if n_state else ""),
    ]
    return "\n".join(lines)
