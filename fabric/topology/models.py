"""The `models:` section: models defined by shape in the topology file (see fabric.kv.models).

```yaml
models:
  my-dense:                    # a name: lower-case letters, digits, '.', '-', '_'
    attention: gqa             # gqa | mla | hybrid | swa
    layers: 62
    kv_heads: 8
    head_dim: 128
    dtype: bf16                # bf16 | fp16 | fp8 | fp32 (default bf16)
    block_size: 16             # tokens per KV block (default 16)
    kv_compression: 2.6        # optional: KV stored and shipped 2.6x smaller (KIVI 2-bit)
  my-hybrid:
    like: prfaas-hybrid-1t     # start from a built-in's fields, then override
    state_bytes: 64MiB         # sizes as fabric.units.parse_size takes them
  my-swa:
    attention: swa
    layers: 48
    full_attention_layers: 9   # the rest keep at most `window` tokens
    window: 128
    kv_heads: 4
    swa_kv_heads: 8            # optional: the sliding layers' KV heads, when they differ
    head_dim: 160
```

Every error names the file, the line and `models.NAME.FIELD`: unknown fields, values out of
range, a field that does not apply to the model's attention (kv_heads on an mla model) at that
field's line; what `ModelSpec` itself refuses (a hybrid with more full layers than layers) at
the model's line. A name may restate a built-in's exact shape, never give it another.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from fabric.errors import FabricError
from fabric.kv.models import ATTENTION_KINDS, BUILTIN_MODELS, DTYPE_BYTES, ModelSpec, shape_clash
from fabric.units import parse_size

if TYPE_CHECKING:
    import yaml

    from fabric.topology.walker import Walker

__all__ = ["FIELDS", "MODEL_NAME_RE", "parse_models"]

#: model names: lower-case so that a name matches the model card's case-insensitively
#: (`MiniMax-M2.5` finds `minimax-m2.5`), and dots allowed as model names use them
MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_NAME_RULE = "1-63 characters: lower-case letters, digits, '.', '-' and '_', starting with a " \
             "letter or digit"

#: every field, in the order `fabric kv` and the docs show them
FIELDS = ("like", "attention", "layers", "kv_heads", "head_dim", "dtype", "block_size",
          "kv_lora_rank", "rope_dim", "full_attention_layers", "state_bytes", "state_dtype",
          "window", "swa_kv_heads", "kv_compression")

_COMMON = ("attention", "layers", "dtype", "block_size", "kv_compression")
#: which fields apply to which attention kind
APPLIES: dict[str, tuple[str, ...]] = {
    "gqa": (*_COMMON, "kv_heads", "head_dim"),
    "mla": (*_COMMON, "kv_lora_rank", "rope_dim"),
    "hybrid": (*_COMMON, "kv_heads", "head_dim", "kv_lora_rank", "rope_dim",
               "full_attention_layers", "state_bytes", "state_dtype"),
    "swa": (*_COMMON, "kv_heads", "head_dim", "full_attention_layers", "window",
            "swa_kv_heads"),
}
_WHY = {
    "gqa": "a gqa model stores K and V per layer (kv_heads, head_dim)",
    "mla": "an mla model stores one latent per layer (kv_lora_rank, rope_dim)",
    "hybrid": "a hybrid model has full-attention layers and linear-attention layers with a "
              "fixed state",
    "swa": "an swa model has full-attention GQA layers and sliding-window layers",
}
_A = {"gqa": "a", "mla": "an", "hybrid": "a", "swa": "an"}
#: integer fields and their ranges
_INTS: dict[str, tuple[int, int]] = {
    "layers": (1, 10_000), "kv_heads": (1, 65_536), "head_dim": (1, 65_536),
    "block_size": (1, 1 << 20), "kv_lora_rank": (1, 1 << 20), "rope_dim": (0, 1 << 20),
    "full_attention_layers": (0, 10_000), "window": (1, 1 << 30), "swa_kv_heads": (1, 65_536),
}
_SPEC_FIELDS = {f.name for f in fields(ModelSpec)}


def parse_models(w: Walker, node: yaml.Node) -> dict[str, ModelSpec]:
    """The file's models by name, each a validated `ModelSpec`."""
    entries = w.mapping(node, "models", (), what="model name")
    out: dict[str, ModelSpec] = {}
    for name, (key_node, body) in entries.items():
        path = f"models.{name}"
        if not MODEL_NAME_RE.match(name):
            raise w.error(key_node, path, f"bad model name '{name}': {_NAME_RULE}")
        out[name] = _model(w, name, key_node, body, path)
    return out


def _model(w: Walker, name: str, key_node: yaml.Node, body: yaml.Node,
           path: str) -> ModelSpec:
    f = w.mapping(body, path, FIELDS)
    base: dict[str, Any] = {}
    if "like" in f:
        like_node = f["like"][1]
        like = w.text(like_node, f"{path}.like", "a built-in model's name")
        spec = BUILTIN_MODELS.get(like) or {
            k.lower(): v for k, v in BUILTIN_MODELS.items()}.get(like.lower())
        if spec is None:
            raise w.error(like_node, f"{path}.like", f"unknown built-in model '{like}' "
                          f"(built-ins: {', '.join(sorted(BUILTIN_MODELS))})")
        base = {k: getattr(spec, k) for k in _SPEC_FIELDS if k != "name"}
    elif "attention" not in f:
        raise w.error(key_node, path, "missing required key 'attention' (or `like: BUILTIN` to "
                      f"start from a built-in; attention is one of {', '.join(ATTENTION_KINDS)})")

    attention = base.get("attention", "")
    if "attention" in f:
        attention = w.choice(f["attention"][1], f"{path}.attention", ATTENTION_KINDS,
                             "attention")
        if base and attention != base["attention"]:
            # a new kind keeps only the base's fields that still apply to it
            base = {k: v for k, v in base.items() if k in APPLIES[attention]}
    for key, (key_n, _) in f.items():
        if key not in ("like", "attention") and key not in APPLIES[attention]:
            raise w.error(key_n, f"{path}.{key}", f"{key} does not apply to {_A[attention]} "
                          f"{attention} model: {_WHY[attention]} (its fields: "
                          f"{', '.join(APPLIES[attention])})")

    kw: dict[str, Any] = dict(base)
    kw["attention"] = attention
    for key, (_, value) in f.items():
        fpath = f"{path}.{key}"
        if key in _INTS:
            lo, hi = _INTS[key]
            kw[key] = w.integer(value, fpath, lo, hi, "an integer", key)
        elif key in ("dtype", "state_dtype"):
            kw[key] = w.choice(value, fpath, DTYPE_BYTES, "dtype")
        elif key == "state_bytes":
            kw[key] = w.unit(value, fpath, parse_size, "a size such as 64MiB or 43417600")
        elif key == "kv_compression":
            kw[key] = w.number(value, fpath, 1.0, 1000.0, "a ratio >= 1", "kv_compression")
    _check_combination(w, f, kw, path)
    if "layers" not in kw:
        raise w.error(key_node, path, "missing required key 'layers'")
    try:
        spec = ModelSpec(name=name, **kw)
    except FabricError as e:
        raise w.error(key_node, path, _strip_name(str(e), name)) from None
    clash = shape_clash(spec)
    if clash:
        raise w.error(key_node, path, clash)
    return spec


def _check_combination(w: Walker, f: dict, kw: dict[str, Any], path: str) -> None:
    """Combinations ModelSpec would refuse, reported at the field written in the file."""
    if kw["attention"] == "hybrid" and kw.get("kv_lora_rank") and (
            kw.get("kv_heads") or kw.get("head_dim")):
        # blame whichever of the two sides the file wrote last
        written = [k for k in ("kv_lora_rank", "kv_heads", "head_dim") if k in f]
        key = max(written, key=lambda k: f[k][0].start_mark.line) if written else None
        where = f[key][0] if key else None
        raise w.error(where, f"{path}.{key}" if key else path,
                      "a hybrid's full-attention layers are MLA (kv_lora_rank, rope_dim) or GQA "
                      "(kv_heads, head_dim), not both")
    if ("full_attention_layers" in f or "layers" in f) and "layers" in kw and \
            kw.get("full_attention_layers", 0) > kw["layers"]:
        # blame the one the file wrote (the other may come from `like:`)
        key = "full_attention_layers" if "full_attention_layers" in f else "layers"
        source = "" if "full_attention_layers" in f and "layers" in f else (
            " (the other from `like:`)")
        raise w.error(f[key][1], f"{path}.{key}",
                      f"full_attention_layers {kw['full_attention_layers']} is more than the "
                      f"model's {kw['layers']} layers{source}")
    if "window" in f and kw["window"] % kw.get("block_size", 16):
        raise w.error(f["window"][1], f"{path}.window",
                      f"window {kw['window']} must be a whole number of "
                      f"{kw.get('block_size', 16)}-token blocks (block_size)")


def _strip_name(message: str, name: str) -> str:
    """ModelSpec's `model 'x': ...` without the name the located error already gives."""
    prefix = f"model {name!r}: "
    return message[len(prefix):] if message.startswith(prefix) else message
