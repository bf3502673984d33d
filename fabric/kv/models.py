"""Model shapes -> KV-cache bytes per token.

A `ModelSpec` holds only what decides the size and layout of the KV cache a prefill produces:

- **gqa** (grouped-query attention, dense): every layer stores K and V,
  `bytes/token = 2 x layers x kv_heads x head_dim x dtype_bytes`.
- **mla** (multi-head latent attention, DeepSeek-V3 style): every layer stores one compressed
  latent of `kv_lora_rank + rope_dim` elements per token (not a K and a V),
  `bytes/token = layers x (kv_lora_rank + rope_dim) x dtype_bytes`.
- **hybrid** (Kimi-Linear style): only `full_attention_layers` of the `layers` grow with the
  sequence; the linear-attention layers keep a fixed per-request recurrent state of
  `state_bytes` in total. The full-attention layers are MLA when `kv_lora_rank` is set, GQA
  otherwise. `kv_bytes(tokens) = state_bytes + tokens x bytes_per_token()`.

Figures are exact integers; every registry entry says in a comment where its numbers come from.
"""

from __future__ import annotations

from dataclasses import dataclass

from fabric.errors import FabricError

__all__ = ["BUILTIN_MODELS", "DTYPE_BYTES", "MODELS", "ModelSpec", "get_model",
           "use_file_models"]

DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp8": 1, "fp32": 4}
_ATTENTION = ("gqa", "mla", "hybrid")


@dataclass(frozen=True)
class ModelSpec:
    """The KV-relevant shape of one model. Use `MODELS` / `get_model` for known ones."""

    name: str
    attention: str  # "gqa" | "mla" | "hybrid"
    layers: int
    kv_heads: int = 0
    head_dim: int = 0
    dtype: str = "bf16"
    # MLA (also the full-attention layers of an MLA-based hybrid)
    kv_lora_rank: int = 0
    rope_dim: int = 0
    # hybrid
    full_attention_layers: int = 0
    state_bytes: int = 0
    state_dtype: str = "fp32"  # linear-attention recurrent state is kept in fp32

    def __post_init__(self) -> None:
        def bad(msg: str) -> FabricError:
            return FabricError(f"model {self.name!r}: {msg}")

        if self.attention not in _ATTENTION:
            raise bad(f"attention must be one of {', '.join(_ATTENTION)}, not {self.attention!r}")
        for dt in (self.dtype, self.state_dtype):
            if dt not in DTYPE_BYTES:
                raise bad(f"dtype must be one of {', '.join(DTYPE_BYTES)}, not {dt!r}")
        if self.layers <= 0:
            raise bad("layers must be positive")
        if self.uses_latent:
            if self.kv_lora_rank <= 0 or self.rope_dim < 0:
                raise bad("MLA needs kv_lora_rank > 0 and rope_dim >= 0")
        elif self.kv_heads <= 0 or self.head_dim <= 0:
            raise bad("GQA needs kv_heads > 0 and head_dim > 0")
        if self.attention == "hybrid":
            if not 0 < self.full_attention_layers <= self.layers:
                raise bad("hybrid needs 0 < full_attention_layers <= layers")
            # Layout (layout.py) ships the state per linear-attention layer, so each layer's
            # share must be a whole number of state_dtype elements.
            unit = max(self.layers - self.full_attention_layers, 1) * DTYPE_BYTES[self.state_dtype]
            if self.state_bytes < 0 or self.state_bytes % unit:
                raise bad("state_bytes must be >= 0 and split evenly into state_dtype elements "
                          "over the linear-attention layers")
            if self.state_bytes and self.full_attention_layers == self.layers:
                raise bad("state_bytes needs at least one linear-attention layer")
        elif self.full_attention_layers or self.state_bytes:
            raise bad("full_attention_layers and state_bytes only apply to hybrid models")

    @property
    def uses_latent(self) -> bool:
        """True when the KV-producing layers store an MLA latent rather than K and V."""
        return self.attention == "mla" or (self.attention == "hybrid" and self.kv_lora_rank > 0)

    @property
    def kv_layers(self) -> int:
        """Layers whose cache grows with the sequence (all of them unless hybrid)."""
        return self.full_attention_layers if self.attention == "hybrid" else self.layers

    @property
    def linear_layers(self) -> int:
        """Layers with a fixed per-request state instead of a growing cache (hybrid only)."""
        return self.layers - self.kv_layers

    @property
    def dtype_bytes(self) -> int:
        """Bytes per KV element."""
        return DTYPE_BYTES[self.dtype]

    def layer_bytes_per_token(self) -> int:
        """KV bytes one KV-producing layer stores per token."""
        if self.uses_latent:
            return (self.kv_lora_rank + self.rope_dim) * self.dtype_bytes
        return 2 * self.kv_heads * self.head_dim * self.dtype_bytes

    def bytes_per_token(self) -> int:
        """KV bytes the whole model stores per token (excluding a hybrid's fixed state)."""
        return self.kv_layers * self.layer_bytes_per_token()

    def kv_bytes(self, tokens: int) -> int:
        """KV bytes of one request of `tokens` tokens: fixed state + tokens x bytes/token."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, not {tokens}")
        return self.state_bytes + tokens * self.bytes_per_token()


def _registry(*specs: ModelSpec) -> dict[str, ModelSpec]:
    return {s.name: s for s in specs}


# The hybrid model of the PrfaaS paper (seed 002): an internal 1T hybrid "following the Kimi
# Linear architecture with a 3:1 KDA:MLA layer structure". The seed gives only totals; the
# shape below is fitted to them.
#
# Per-token bytes: the slope between the 32K and 128K points is 17,227 B/token, i.e. 14.95 MLA
# layers of (512 + 64) x 2 B = 1,152 B (Kimi Linear's MLA uses DeepSeek-V3's latent: kv_lora_rank
# 512, rope 64, bf16). So 15 MLA layers, 17,280 B/token, and at 3:1 KDA:MLA 45 KDA layers, 60 in
# all. Fixed state: the least-squares intercept with that slope, rounded to whole fp32 elements
# per KDA layer: 171,800,460 B (163.84 MiB, 45 x 3,817,788 B).
#
#   tokens   seed (MiB)   model (MiB)   residual (MiB)   residual
#   1,024      190.8        180.72         -10.08          -5.28 %
#   32,768     701.3        703.84          +2.54          +0.36 %
#   131,072  2,316.3      2,323.84          +7.54          +0.33 %
#
# A free slope (17,159 B/token, 14.9 layers, state 170.19 MiB) fits to -2.0 % / +0.7 % / -0.05 %,
# but is not a whole number of layers and so has no block layout; the test allows 6 % at 1K and
# 0.5 % at 32K and 128K.
PRFAAS_HYBRID = ModelSpec(
    name="prfaas-hybrid-1t",
    attention="hybrid",
    layers=60,
    full_attention_layers=15,
    kv_lora_rank=512,
    rope_dim=64,
    dtype="bf16",
    state_bytes=171_800_460,
    state_dtype="fp32",
)

MODELS: dict[str, ModelSpec] = _registry(
    # Llama 3.1 config.json (num_hidden_layers, num_key_value_heads, head_dim); NIXL kvbench
    # models/llama3_1.py gives the same 131,072 / 327,680 B per token.
    ModelSpec("llama-3.1-8b", "gqa", layers=32, kv_heads=8, head_dim=128, dtype="bf16"),
    ModelSpec("llama-3.1-70b", "gqa", layers=80, kv_heads=8, head_dim=128, dtype="bf16"),
    # Qwen3-8B config.json: 36 layers, 8 KV heads, head_dim 128 -> 147,456 B/token (Mooncake's
    # docs: 4.50 GB for 32,768 tokens = 32,768 x 147,456 B = 4.83e9 B = 4.50 GiB).
    ModelSpec("qwen3-8b", "gqa", layers=36, kv_heads=8, head_dim=128, dtype="bf16"),
    # DeepSeek-V3 config.json: 61 layers, kv_lora_rank 512, qk_rope_head_dim 64; vLLM caches the
    # latent as (blocks, block_size, 576) per layer -> 70,272 B/token in bf16.
    ModelSpec("deepseek-v3", "mla", layers=61, kv_lora_rank=512, rope_dim=64, dtype="bf16"),
    PRFAAS_HYBRID,
    # The seed's dense counter-case, "MiniMax-M2.5, dense GQA baseline" (59.93 Gbps of KV per
    # 32K request). Shape from the MiniMax-M2 / M2.1 / M2.7 config.json (Hugging Face): 62 layers,
    # all full attention (attn_type_list all 1), 8 KV heads, head_dim 128, bf16 -> 253,952
    # B/token, assuming M2.5 keeps the M2 family's attention shape.
    ModelSpec("minimax-m2.5", "gqa", layers=62, kv_heads=8, head_dim=128, dtype="bf16"),
)


BUILTIN_MODELS: dict[str, ModelSpec] = dict(MODELS)


def use_file_models(specs: dict[str, ModelSpec]) -> None:
    """Make a topology file's own models (`models:`) known beside the built-in ones, in place
    of the previous file's: `MODELS` is the built-ins plus these."""
    MODELS.clear()
    MODELS.update(BUILTIN_MODELS)
    MODELS.update(specs)


def get_model(name: str) -> ModelSpec:
    """The registered model called `name`; `FabricError` naming the known models otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        lowered = {k.lower(): v for k, v in MODELS.items()}
        if name.lower() in lowered:  # `Llama-3.1-8B` as the model card writes it
            return lowered[name.lower()]
        known = ", ".join(sorted(MODELS))
        raise FabricError(f"unknown model {name!r}: known models are {known}") from None
