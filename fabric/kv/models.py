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
- **swa** (sliding window, MiMo-V2-Flash style): `full_attention_layers` are GQA layers that
  grow with the sequence; every other layer keeps at most `window` tokens of K and V (with
  `swa_kv_heads` KV heads when they differ from the full layers'). So
  `kv_bytes(tokens) = tokens x bytes_per_token() + min(tokens, window) x swa bytes/token`.
  `full_attention_layers: 0` is a pure sliding-window model.

Two more fields change every kind:

- `block_size` (tokens per paged KV block, 16 as vLLM's default): transfers and caches hold
  whole blocks (`fabric.kv.layout`).
- `kv_compression` (a ratio >= 1, e.g. KIVI 2-bit 2.6, CacheGen 3.5-4.3): the KV (growing and
  window layers, not a hybrid's recurrent state) is stored and shipped `kv_compression` times
  smaller. `kv_bytes` rounds the compressed KV of a whole request up to a byte once;
  `bytes_per_token()` is the compressed per-token figure rounded up, so for a compressed model
  `kv_bytes(t) - fixed` may be up to `t` bytes below `t x bytes_per_token()`. Uncompressed
  models are exact integers throughout.

Figures are exact integers; every registry entry says in a comment where its numbers come from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from fractions import Fraction

from fabric.errors import FabricError

__all__ = ["ATTENTION_KINDS", "BUILTIN_MODELS", "DTYPE_BYTES", "MODELS", "SHAPE_FIELDS",
           "ModelSpec", "file_models", "get_model", "shape_clash", "use_file_models"]

DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp8": 1, "fp32": 4}
ATTENTION_KINDS = ("gqa", "mla", "hybrid", "swa")
_ATTENTION = ATTENTION_KINDS


@dataclass(frozen=True)
class ModelSpec:
    """The KV-relevant shape of one model. Use `MODELS` / `get_model` for known ones."""

    name: str
    attention: str  # "gqa" | "mla" | "hybrid" | "swa"
    layers: int
    kv_heads: int = 0
    head_dim: int = 0
    dtype: str = "bf16"
    # MLA (also the full-attention layers of an MLA-based hybrid)
    kv_lora_rank: int = 0
    rope_dim: int = 0
    # hybrid (linear-attention layers with a fixed state) and swa (sliding-window layers)
    full_attention_layers: int = 0
    state_bytes: int = 0
    state_dtype: str = "fp32"  # linear-attention recurrent state is kept in fp32
    # swa: tokens a sliding-window layer keeps, and its KV heads (0: the same as kv_heads)
    window: int = 0
    swa_kv_heads: int = 0
    block_size: int = 16  # tokens per paged KV block (vLLM's default)
    kv_compression: float = 1.0  # KV stored and shipped this many times smaller

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
        if self.block_size <= 0:
            raise bad("block_size must be positive")
        ratio = self.kv_compression
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or \
                not math.isfinite(ratio) or ratio < 1:
            raise bad(f"kv_compression must be a ratio >= 1, not {ratio!r}")
        object.__setattr__(self, "kv_compression", float(ratio))
        if self.uses_latent:
            if self.kv_lora_rank <= 0 or self.rope_dim < 0:
                raise bad("MLA needs kv_lora_rank > 0 and rope_dim >= 0")
            if self.attention == "hybrid" and (self.kv_heads or self.head_dim):
                raise bad("a hybrid's full-attention layers are MLA (kv_lora_rank) or GQA "
                          "(kv_heads, head_dim), not both")
        elif self.kv_heads <= 0 or self.head_dim <= 0:
            raise bad("GQA needs kv_heads > 0 and head_dim > 0")
        elif self.rope_dim:
            raise bad("rope_dim only applies to MLA layers (with kv_lora_rank)")
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
        elif self.state_bytes:
            raise bad("state_bytes only applies to hybrid models (the linear-attention state)")
        elif self.attention == "swa":
            if not 0 <= self.full_attention_layers < self.layers:
                raise bad("swa needs 0 <= full_attention_layers < layers (at least one "
                          "sliding-window layer)")
        elif self.full_attention_layers:
            raise bad("full_attention_layers only applies to hybrid and swa models")
        if self.attention == "swa":
            if self.window <= 0:
                raise bad("swa needs window > 0 (the tokens a sliding-window layer keeps)")
            if self.window % self.block_size:
                raise bad(f"window {self.window} must be a whole number of "
                          f"{self.block_size}-token blocks")
            if self.swa_kv_heads < 0:
                raise bad("swa_kv_heads must be >= 0 (0: the same as kv_heads)")
        elif self.window or self.swa_kv_heads:
            raise bad("window and swa_kv_heads only apply to swa models")

    @property
    def uses_latent(self) -> bool:
        """True when the KV-producing layers store an MLA latent rather than K and V."""
        return self.attention == "mla" or (self.attention == "hybrid" and self.kv_lora_rank > 0)

    @property
    def kv_layers(self) -> int:
        """Layers whose cache grows with the sequence (all of them unless hybrid or swa)."""
        return self.full_attention_layers if self.attention in ("hybrid", "swa") else self.layers

    @property
    def linear_layers(self) -> int:
        """Layers with a fixed per-request state instead of a growing cache (hybrid only)."""
        return self.layers - self.kv_layers if self.attention == "hybrid" else 0

    @property
    def swa_layers(self) -> int:
        """Sliding-window layers, which keep at most `window` tokens (swa only)."""
        return self.layers - self.kv_layers if self.attention == "swa" else 0

    @property
    def dtype_bytes(self) -> int:
        """Bytes per KV element."""
        return DTYPE_BYTES[self.dtype]

    @property
    def compressed(self) -> bool:
        """True when the KV is stored and shipped compressed (kv_compression > 1)."""
        return self.kv_compression > 1

    def layer_bytes_per_token(self) -> int:
        """KV bytes one growing (full-attention) layer stores per token, uncompressed."""
        if self.uses_latent:
            return (self.kv_lora_rank + self.rope_dim) * self.dtype_bytes
        return 2 * self.kv_heads * self.head_dim * self.dtype_bytes

    def swa_layer_bytes_per_token(self) -> int:
        """KV bytes one sliding-window layer stores per token it keeps, uncompressed."""
        if self.attention != "swa":
            return 0
        return 2 * (self.swa_kv_heads or self.kv_heads) * self.head_dim * self.dtype_bytes

    def compress(self, nbytes: int) -> int:
        """`nbytes` of KV as stored and shipped: divided by kv_compression, rounded up."""
        if not self.compressed:
            return nbytes
        ratio = Fraction(repr(self.kv_compression))  # 2.6 -> 13/5 exactly
        return -(-nbytes * ratio.denominator // ratio.numerator)

    def raw_bytes_per_token(self) -> int:
        """Uncompressed KV bytes per token of the growing layers."""
        return self.kv_layers * self.layer_bytes_per_token()

    def bytes_per_token(self) -> int:
        """KV bytes the growing layers store per token (excluding a hybrid's fixed state and
        a sliding window's bounded part); compressed and rounded up when kv_compression > 1."""
        return self.compress(self.raw_bytes_per_token())

    def window_bytes(self, tokens: int) -> int:
        """Uncompressed KV the sliding-window layers hold for a request of `tokens` tokens."""
        return min(tokens, self.window) * self.swa_layers * self.swa_layer_bytes_per_token()

    def raw_kv_bytes(self, tokens: int) -> int:
        """Uncompressed KV of one request (growing and window layers; no hybrid state)."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, not {tokens}")
        return tokens * self.raw_bytes_per_token() + self.window_bytes(tokens)

    def kv_bytes(self, tokens: int) -> int:
        """KV bytes of one request of `tokens` tokens: fixed state + compressed KV."""
        return self.state_bytes + self.compress(self.raw_kv_bytes(tokens))


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
    # The PrfaaS seed's other models (its "32K KV Throughput" table; prefill profiles fitted to
    # those throughputs in fabric.kv.prefill). Shapes from each model's published config.json.
    #
    # MiMo-V2-Flash (seed: 4.66 Gbps, "hybrid / flash-style", 5:1 SWA:full). config.json /
    # transformers' MiMoV2FlashConfig: num_hidden_layers 48; layer_types full attention at layer
    # 0 and every 6th layer (5, 11, ..., 47) = 9 full, 39 sliding; sliding_window 128;
    # num_key_value_heads 4 (full layers), swa_num_key_value_heads 8 (sliding layers); head_dim
    # 192 for K, v_head_dim 128 for V. A head stores 192 + 128 = 320 elements = 2 x 160, so
    # head_dim=160 gives the exact bytes (the layout's K/V split is nominal). KV cached in bf16
    # (SGLang's default; the weights are FP8). 9 x 2 x 4 x 160 x 2 = 23,040 B/token; the
    # sliding layers hold 39 x 2 x 8 x 160 x 2 x 128 = 25,559,040 B at most.
    ModelSpec("mimo-v2-flash", "swa", layers=48, full_attention_layers=9, kv_heads=4,
              swa_kv_heads=8, head_dim=160, window=128, dtype="bf16"),
    # Kimi Linear (seed: 3.87 Gbps, "linear-attention family"): Kimi-Linear-48B-A3B config.json:
    # num_hidden_layers 27, linear_attn_config.full_attn_layers [4, 8, ..., 24, 27] = 7 MLA
    # layers, kda_layers = the other 20; kv_lora_rank 512, qk_rope_head_dim 64 (mla_use_nope
    # is set, but the cache still holds the 512 + 64 latent as vLLM's MLA cache does: assumed),
    # bf16 -> 8,064 B/token. KDA state per layer (assumed from vLLM's KDA cache): the recurrent
    # state num_heads 32 x head_dim 128 x 128 in fp32 (2,097,152 B) plus the short-convolution
    # window (q, k, v: 3 x 4,096 channels x (kernel 4 - 1) in bf16 = 73,728 B), 2,170,880 B per
    # layer, 43,417,600 B in all, counted as fp32 elements.
    ModelSpec("kimi-linear-48b-a3b", "hybrid", layers=27, full_attention_layers=7,
              kv_lora_rank=512, rope_dim=64, dtype="bf16", state_bytes=43_417_600,
              state_dtype="fp32"),
    # Ring-2.5-1T (seed: 2.59 Gbps @32K, 1.46 @128K, "hybrid architecture with MLA"; 7:1
    # linear:MLA). inclusionAI's Ring-V2.5 README: "1:7 MLA + Lightning Linear Attention";
    # configuration_bailing_moe_v2_5.py: kv_lora_rank 512, qk_rope_head_dim 64; the MLA layers
    # are every 8th (layers 7, 15, 23, 31, ... per SGLang-JAX's loader). Assumed, as the HF
    # config.json was not at hand: 80 layers (Ling-1T's depth, which Ling/Ring-2.5 upgrades),
    # so 10 MLA + 70 linear; each Lightning-attention layer keeps a 64-head x 128 x 128 fp32
    # state (4 MiB; Ling-1T's 64 heads of 128). 10 x 576 x 2 = 11,520 B/token; state 280 MiB.
    ModelSpec("ring-2.5-1t", "hybrid", layers=80, full_attention_layers=10, kv_lora_rank=512,
              rope_dim=64, dtype="bf16", state_bytes=293_601_280, state_dtype="fp32"),
    # Qwen3, the seed's dense Qwen3 case (512-H200 egress 2.1 Tbps against MiniMax-M2.5's 3.8):
    # Qwen3-235B-A22B. Why this one: public summaries of the PrfaaS paper (arXiv 2604.15039)
    # name "Qwen3-235B" at 33.35 Gbps beside Qwen3.5-397B, and 2.1 / 3.8 x 59.93 = 33.1 Gbps
    # agrees; it is also the Qwen3 peer of MiniMax-M2.5 (230B-A10B) on one 8xH200 instance.
    # config.json: num_hidden_layers 94, num_key_value_heads 4, head_dim 128, bf16 ->
    # 192,512 B/token.
    ModelSpec("qwen3-235b-a22b", "gqa", layers=94, kv_heads=4, head_dim=128, dtype="bf16"),
)


BUILTIN_MODELS: dict[str, ModelSpec] = dict(MODELS)
"""The models fabric ships; `MODELS` is these plus the current topology file's own."""

#: the ModelSpec fields that describe a shape (everything but the name)
SHAPE_FIELDS = tuple(f.name for f in fields(ModelSpec) if f.name != "name")


def shape_clash(spec: ModelSpec) -> str | None:
    """Why `spec` may not be defined under its name, or None: a file model may restate a
    built-in under the built-in's own name (same shape), never shadow it with another shape."""
    builtin = BUILTIN_MODELS.get(spec.name) or {
        k.lower(): v for k, v in BUILTIN_MODELS.items()}.get(spec.name.lower())
    if builtin is None or builtin == spec:
        return None
    differ = [f for f in SHAPE_FIELDS if getattr(builtin, f) != getattr(spec, f)]
    return (f"'{spec.name}' is a built-in model with another shape ({', '.join(differ)} "
            f"differ{'s' if len(differ) == 1 else ''}): choose another name, or use "
            f"`like: {builtin.name}` under a new name to start from it")


def use_file_models(specs: dict[str, ModelSpec]) -> None:
    """Make a topology file's own models (`models:`) known beside the built-in ones, in place
    of the previous file's: `MODELS` is the built-ins plus these.

    `FabricError` if a key is not its spec's name or a spec shadows a built-in with another
    shape (the topology loader reports both at the file's line first)."""
    for key, spec in specs.items():
        if key != spec.name:
            raise FabricError(f"model {key!r}: registered under another name ({spec.name!r})")
        clash = shape_clash(spec)
        if clash:
            raise FabricError(f"model {key!r}: {clash}")
    MODELS.clear()
    MODELS.update(BUILTIN_MODELS)
    MODELS.update(specs)


def file_models() -> dict[str, ModelSpec]:
    """The models the current topology file defines that are not built-in ones."""
    return {k: v for k, v in MODELS.items() if BUILTIN_MODELS.get(k) != v}


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
