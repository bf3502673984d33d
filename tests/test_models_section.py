"""The `models:` section: every field, every error at its FILE:LINE, and file models that
restate a built-in giving exactly the built-in's KV sizes and layout."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from fabric.errors import FabricError, TopologyError
from fabric.kv import MODELS, ModelSpec, get_model, plan_chunks, transfer_bytes
from fabric.kv.models import BUILTIN_MODELS, file_models, use_file_models
from fabric.topology.loader import load_topology, parse_topology
from fabric.topology.models import APPLIES

HEAD = "name: t\nnodes: {a: {}, b: {}}\nlinks: [{endpoints: [a, b]}]\nmodels:\n"  # models: line 4

Write = Callable[[str], Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def _write(text: str) -> Path:
        path = tmp_path / "topo.yaml"
        path.write_text(text)
        return path
    return _write


@pytest.fixture(autouse=True)
def _builtins_only():
    yield
    use_file_models({})  # the next test starts from the built-ins


def _models(body: str) -> dict[str, ModelSpec]:
    return parse_topology(HEAD + body).models


def test_every_field() -> None:
    got = _models(
        "  dense:\n"
        "    attention: gqa\n    layers: 2\n    kv_heads: 4\n    head_dim: 64\n"
        "    dtype: fp8\n    block_size: 32\n    kv_compression: 2.6\n"
        "  latent:\n"
        "    attention: mla\n    layers: 3\n    kv_lora_rank: 256\n    rope_dim: 32\n"
        "  lin:\n"
        "    attention: hybrid\n    layers: 4\n    full_attention_layers: 1\n"
        "    kv_lora_rank: 512\n    rope_dim: 64\n    state_bytes: 3KiB\n"
        "    state_dtype: fp16\n"
        "  slide:\n"
        "    attention: swa\n    layers: 6\n    full_attention_layers: 1\n    window: 64\n"
        "    kv_heads: 2\n    swa_kv_heads: 4\n    head_dim: 8\n"
        "  kimi-copy:\n    like: kimi-linear-48b-a3b\n    state_bytes: 0\n")
    assert got["dense"] == ModelSpec("dense", "gqa", layers=2, kv_heads=4, head_dim=64,
                                     dtype="fp8", block_size=32, kv_compression=2.6)
    assert got["latent"] == ModelSpec("latent", "mla", layers=3, kv_lora_rank=256, rope_dim=32)
    assert got["lin"] == ModelSpec("lin", "hybrid", layers=4, full_attention_layers=1,
                                   kv_lora_rank=512, rope_dim=64, state_bytes=3072,
                                   state_dtype="fp16")
    assert got["slide"] == ModelSpec("slide", "swa", layers=6, full_attention_layers=1,
                                     window=64, kv_heads=2, swa_kv_heads=4, head_dim=8)
    kimi = get_model("kimi-linear-48b-a3b")
    assert got["kimi-copy"].state_bytes == 0
    assert got["kimi-copy"].kv_bytes(1_000) == kimi.kv_bytes(1_000) - kimi.state_bytes
    # the file's models are known to every later section and to get_model
    assert get_model("slide") is got["slide"]
    assert set(file_models()) == set(got)


def test_like_with_another_attention_keeps_only_what_applies() -> None:
    got = _models("  g:\n    like: deepseek-v3\n    attention: gqa\n    kv_heads: 8\n"
                  "    head_dim: 128\n")["g"]
    assert (got.attention, got.layers, got.kv_lora_rank, got.kv_heads) == ("gqa", 61, 0, 8)


def test_restating_a_builtin_under_its_own_name_is_allowed() -> None:
    got = _models("  minimax-m2.5:\n    attention: gqa\n    layers: 62\n    kv_heads: 8\n"
                  "    head_dim: 128\n")
    assert got["minimax-m2.5"] == BUILTIN_MODELS["minimax-m2.5"]
    assert file_models() == {}


def test_a_file_without_models_forgets_the_previous_files() -> None:
    _models("  mine:\n    like: qwen3-8b\n")
    assert "mine" in MODELS
    parse_topology(HEAD.replace("models:\n", ""))
    assert "mine" not in MODELS


# ---- errors -------------------------------------------------------------------------------

ERRORS = [
    ("  x:\n    attention: gqa\n    layers: 2\n    kv_heads: 1\n    head_dim: 1\n"
     "    heads: 4\n",
     "10: models.x.heads: unknown key 'heads'"),
    ("  x:\n    layers: 2\n", "5: models.x: missing required key 'attention'"),
    ("  x:\n    attention: rnn\n", "6: models.x.attention: unknown attention 'rnn' (one of: "
     "gqa, mla, hybrid, swa)"),
    ("  x:\n    attention: gqa\n    kv_heads: 1\n    head_dim: 1\n",
     "5: models.x: missing required key 'layers'"),
    ("  x:\n    attention: gqa\n    layers: 0\n", "7: models.x.layers: layers 0 is outside "
     "1..10000"),
    ("  x:\n    attention: gqa\n    layers: two\n", "7: models.x.layers: expected an integer, "
     "got 'two'"),
    ("  x:\n    attention: mla\n    layers: 4\n    kv_lora_rank: 512\n    kv_heads: 8\n",
     "9: models.x.kv_heads: kv_heads does not apply to an mla model"),
    ("  x:\n    attention: gqa\n    layers: 4\n    kv_heads: 8\n    head_dim: 8\n"
     "    window: 64\n", "10: models.x.window: window does not apply to a gqa model"),
    ("  x:\n    attention: gqa\n    layers: 4\n    kv_heads: 8\n    head_dim: 8\n"
     "    state_bytes: 4\n", "10: models.x.state_bytes: state_bytes does not apply to a gqa"),
    ("  x:\n    attention: hybrid\n    layers: 4\n    full_attention_layers: 1\n"
     "    kv_heads: 2\n    head_dim: 8\n    kv_lora_rank: 64\n",
     "11: models.x.kv_lora_rank: a hybrid's full-attention layers are MLA"),
    ("  x:\n    attention: hybrid\n    layers: 4\n    full_attention_layers: 5\n"
     "    kv_heads: 2\n    head_dim: 8\n",
     "8: models.x.full_attention_layers: full_attention_layers 5 is more than the model's 4"),
    ("  x:\n    attention: swa\n    layers: 4\n    kv_heads: 2\n    head_dim: 8\n"
     "    window: 100\n", "10: models.x.window: window 100 must be a whole number of "
     "16-token blocks"),
    ("  x:\n    attention: gqa\n    layers: 4\n    kv_heads: 2\n    head_dim: 8\n"
     "    kv_compression: 0.5\n", "10: models.x.kv_compression: kv_compression 0.5 is outside "
     "1..1000"),
    ("  x:\n    attention: gqa\n    layers: 4\n    kv_heads: 2\n    head_dim: 8\n"
     "    dtype: int4\n", "10: models.x.dtype: unknown dtype 'int4'"),
    ("  x:\n    attention: hybrid\n    layers: 4\n    full_attention_layers: 1\n"
     "    kv_heads: 2\n    head_dim: 8\n    state_bytes: 64 potatoes\n",
     "11: models.x.state_bytes: bad size"),
    ("  x:\n    like: llama-4\n", "6: models.x.like: unknown built-in model 'llama-4' "
     "(built-ins: deepseek-v3"),
    ("  X-Big:\n    like: qwen3-8b\n", "5: models.X-Big: bad model name 'X-Big'"),
    # ModelSpec's own checks come out at the model's line
    ("  x:\n    attention: swa\n    layers: 4\n    kv_heads: 2\n    head_dim: 8\n",
     "5: models.x: swa needs window > 0"),
    ("  x:\n    attention: hybrid\n    layers: 4\n    full_attention_layers: 1\n"
     "    kv_heads: 2\n    head_dim: 8\n    state_bytes: 10\n",
     "5: models.x: state_bytes must be >= 0 and split evenly"),
    ("  x:\n    attention: mla\n    layers: 4\n",
     "5: models.x: MLA needs kv_lora_rank > 0"),
    # shadowing a built-in with another shape, at the name's line
    ("  llama-3.1-8b:\n    like: llama-3.1-8b\n    layers: 33\n",
     "5: models.llama-3.1-8b: 'llama-3.1-8b' is a built-in model with another shape "
     "(layers differs)"),
    ("  x:\n    like: qwen3-8b\n  x:\n    like: qwen3-8b\n",
     "7: models.x: duplicate model name 'x' (first at line 5)"),
    ("  x: 3\n", "5: models.x: expected a mapping, got 3"),
]


@pytest.mark.parametrize(("body", "expected"), ERRORS,
                         ids=[f"{i}:{e[:40]}" for i, (_, e) in enumerate(ERRORS)])
def test_errors(write: Write, body: str, expected: str) -> None:
    path = write(HEAD + body)
    with pytest.raises(TopologyError, match=f"^{re.escape(f'{path}:{expected}')}"):
        load_topology(path)


def test_use_file_models_refuses_a_clash_outside_the_loader() -> None:
    with pytest.raises(FabricError, match="'qwen3-8b' is a built-in model with another shape"):
        use_file_models({"qwen3-8b": ModelSpec("qwen3-8b", "gqa", layers=1, kv_heads=1,
                                               head_dim=1)})
    spec = ModelSpec("a", "gqa", layers=1, kv_heads=1, head_dim=1)
    with pytest.raises(FabricError, match="registered under another name"):
        use_file_models({"b": spec})


# ---- restating a built-in -----------------------------------------------------------------

def _restate(spec: ModelSpec, name: str) -> str:
    """YAML that writes every field of `spec` that applies to its attention, by hand."""
    lines = [f"  {name}:"]
    for key in APPLIES[spec.attention]:
        value = getattr(spec, key)
        if value in (0, "") and key != "full_attention_layers":
            continue
        lines.append(f"    {key}: {value}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("builtin", sorted(BUILTIN_MODELS))
def test_file_models_give_the_same_kv_sizes_as_the_builtins_they_restate(builtin: str) -> None:
    ref = BUILTIN_MODELS[builtin]
    got = _models(_restate(ref, "restated"))["restated"]
    assert got == ModelSpec(**{**ref.__dict__, "name": "restated"})
    for tokens in (0, 1, 15, 16, 17, 127, 128, 129, 1_000, 4_096, 32_768, 131_072):
        assert got.kv_bytes(tokens) == ref.kv_bytes(tokens)
        assert transfer_bytes(got, tokens) == transfer_bytes(ref, tokens)
    for tokens in (16, 1_000, 4_096):
        mine = plan_chunks(got, tokens, request_id=3)
        theirs = plan_chunks(ref, tokens, request_id=3)
        assert sum(c.nbytes for c in mine) == sum(c.nbytes for c in theirs)
        assert mine == theirs  # the same chunks, shapes and offsets too


@pytest.mark.parametrize("builtin", ["minimax-m2.5", "ring-2.5-1t", "mimo-v2-flash"])
def test_like_alone_restates_a_builtin(builtin: str) -> None:
    got = _models(f"  copy:\n    like: {builtin}\n")["copy"]
    assert got.kv_bytes(32_768) == BUILTIN_MODELS[builtin].kv_bytes(32_768)


# ---- fabric kv --file ---------------------------------------------------------------------

def test_fabric_kv_lists_file_models_beside_builtins(write: Write) -> None:
    from click.testing import CliRunner

    from fabric.cli import cli

    path = write(HEAD + "  dense-kivi:\n    like: minimax-m2.5\n    kv_compression: 2.6\n"
                 "  qwen3-8b:\n    like: qwen3-8b\n")
    runner = CliRunner()
    out = runner.invoke(cli, ["kv", "--file", str(path), "--tokens", "32768"])
    assert out.exit_code == 0, out.output
    assert re.search(r"^dense-kivi\s+file\s+gqa\s+95\.385 KiB\s+2\.981 GiB$", out.output,
                     re.MULTILINE)
    assert re.search(r"^qwen3-8b\s+file \(restates the built-in\)\s+gqa", out.output,
                     re.MULTILINE)
    assert re.search(r"^ring-2\.5-1t\s+built-in\s+hybrid", out.output, re.MULTILINE)
    one = runner.invoke(cli, ["kv", "dense-kivi", "--file", str(path), "--tokens", "32768"])
    assert one.exit_code == 0, one.output
    assert "compressed 2.6x from 253,952 B" in one.output
    assert f"defined in   {path} (models: dense-kivi)" in one.output
    # without the file, its models are unknown again
    gone = runner.invoke(cli, ["kv", "dense-kivi"])
    assert gone.exit_code == 1


def test_a_layer_count_below_an_inherited_full_attention_count_blames_layers(tmp_path) -> None:
    from fabric.errors import TopologyError
    from fabric.topology import load_topology

    path = tmp_path / "fal.yaml"
    path.write_text("name: fal\nnodes:\n  a: {}\nmodels:\n  m1:\n    like: prfaas-hybrid-1t\n"
                    "    layers: 4\n")
    with pytest.raises(TopologyError) as err:
        load_topology(str(path))
    assert str(err.value) == (f"{path}:7: models.m1.layers: full_attention_layers 15 is more "
                              "than the model's 4 layers (the other from `like:`)")
