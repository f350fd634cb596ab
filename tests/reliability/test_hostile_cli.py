"""Hostile model folders through the CLI: ``data check --model``, ``train`` and
``chat`` (and ``models import-gguf`` for GGUF files) each exit 2 with one line
``error: FILE: reason`` — no traceback, no "internal error", and nothing
allocated in proportion to a hostile number first.

Kinds of hostility: chat templates that run forever or fill the memory; config.json
sizes no model has (ten million layers, zero heads, strings, 1e12); GGUF files
whose structure is sound but whose model is not (head counts of 0, missing or
text, no token list, tokens that are not text, 1-D quantised tensors, bad token
types, blocks or shapes that disagree with the metadata)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlx_lora.cli.main import main
from mlx_lora.paths import sample_datasets_dir
from tests.reliability.ggufs import tiny_spec, write_gguf

PIRATE = sample_datasets_dir() / "pirate"


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one ``error:`` line and no traceback."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out and "internal error" not in err + out
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1, (code, err[-2000:])
    return errors[0]


def every_command(folder: Path, tmp_path: Path) -> dict[str, list]:
    """The commands that load a model folder, each pointed at ``folder``."""
    return {
        "data check": ["data", "check", PIRATE, "--model", folder],
        "train": ["train", "--model", folder, "--data", PIRATE, "--iters", 1, "--run-dir", tmp_path / "run"],
        "chat": ["chat", "--model", folder, "--prompt", "Hi", "--max-tokens", 2],
    }


def model_with_template(tiny_model: Path, folder: Path, template: str) -> Path:
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


TEMPLATES = {
    "nested ranges": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
                     "{% for m in messages %}{{ m.content }}{% endfor %}",
    "a gigabyte": "{{ 'a' * 10**9 }}{% for m in messages %}{{ m.content }}{% endfor %}",
}


@pytest.mark.parametrize("template", list(TEMPLATES))
@pytest.mark.parametrize("command", ["data check", "train", "chat"])
def test_an_expensive_chat_template_is_one_named_error(template, command, tiny_model, tmp_path, capsys):
    folder = model_with_template(tiny_model, tmp_path / "model", TEMPLATES[template])
    line = one_line_error(capsys, every_command(folder, tmp_path)[command])
    assert f"{folder / 'tokenizer_config.json'}: chat template: too expensive" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def model_with_config(tiny_model: Path, folder: Path, **changes) -> Path:
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# name -> (config.json changes, words of the reason)
BAD_CONFIGS = {
    "ten million layers": ({"num_hidden_layers": 10_000_000}, "num_hidden_layers must be a whole number from 1"),
    "zero heads": ({"num_attention_heads": 0}, "num_attention_heads must be a whole number from 1"),
    "negative hidden size": ({"hidden_size": -64}, "hidden_size must be a whole number from 1"),
    "a string size": ({"intermediate_size": "128"}, "intermediate_size must be a whole number from 1"),
    "vocab 1e12": ({"vocab_size": 1e12}, "vocab_size must be a whole number from 1"),
    "a boolean size": ({"num_key_value_heads": True}, "num_key_value_heads must be a whole number"),
    "heads not a multiple": ({"num_key_value_heads": 3}, "must be a multiple of num_key_value_heads"),
    "hidden not divisible": ({"hidden_size": 66, "head_dim": None}, "hidden_size (66) must be a multiple"),
    "text_config": ({"text_config": {"num_hidden_layers": 10**9}}, "num_hidden_layers must be a whole number"),
    "quantization bits": ({"quantization": {"bits": 1000, "group_size": 64}}, "quantization bits must be"),
    "zero norm epsilon": ({"rms_norm_eps": 0}, "rms_norm_eps must be a number above 0"),
    "rope base as text": ({"rope_theta": "10000"}, "rope_theta must be a number above 0"),
}


@pytest.mark.parametrize("kind", list(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["data check", "train", "chat"])
def test_a_config_with_impossible_sizes_is_one_named_error(kind, command, tiny_model, tmp_path, capsys):
    changes, words = BAD_CONFIGS[kind]
    folder = model_with_config(tiny_model, tmp_path / "model", **changes)
    line = one_line_error(capsys, every_command(folder, tmp_path)[command])
    assert line.startswith(f"error: {folder / 'config.json'}: ") and words in line


def test_the_memory_estimate_refuses_them_too(tiny_model, tmp_path):
    from mlx_lora.errors import UserError
    from mlx_lora.train.memory import read_model_shape

    folder = model_with_config(tiny_model, tmp_path / "model", num_attention_heads=0)
    with pytest.raises(UserError, match="num_attention_heads must be a whole number from 1"):
        read_model_shape(folder)


# The language-model part of real configs (from their config.json on the Hub): all pass.
REAL_CONFIGS = {
    "Llama 3.1 405B": {"num_hidden_layers": 126, "hidden_size": 16384, "intermediate_size": 53248,
                       "num_attention_heads": 128, "num_key_value_heads": 8, "vocab_size": 128256,
                       "max_position_embeddings": 131072},
    "Gemma 3 27B": {"text_config": {"num_hidden_layers": 62, "hidden_size": 5376, "intermediate_size": 21504,
                                    "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
                                    "vocab_size": 262208, "max_position_embeddings": 131072}},
    "Qwen3-235B-A22B": {"num_hidden_layers": 94, "hidden_size": 4096, "intermediate_size": 12288,
                        "moe_intermediate_size": 1536, "num_attention_heads": 64, "num_key_value_heads": 4,
                        "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "vocab_size": 151936,
                        "max_position_embeddings": 40960},
    "DeepSeek-V3": {"num_hidden_layers": 61, "hidden_size": 7168, "intermediate_size": 18432,
                    "moe_intermediate_size": 2048, "num_attention_heads": 128, "num_key_value_heads": 128,
                    "n_routed_experts": 256, "num_experts_per_tok": 8, "vocab_size": 129280,
                    "max_position_embeddings": 163840},
    "Llama 4 Scout": {"text_config": {"num_hidden_layers": 48, "hidden_size": 5120, "intermediate_size": 8192,
                                      "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
                                      "num_local_experts": 16, "vocab_size": 202048,
                                      "max_position_embeddings": 10485760}},
    "an MLX 4-bit conversion": {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9,
                                "num_key_value_heads": 3, "vocab_size": 49152,
                                "quantization": {"group_size": 64, "bits": 4, "mode": "affine"}},
}


@pytest.mark.parametrize("name", list(REAL_CONFIGS))
def test_real_model_configs_pass(name):
    from mlx_lora.models.local import check_config

    check_config(REAL_CONFIGS[name], f"{name}/config.json")


def _without(key):
    return lambda spec: spec.metadata.pop(key)


def _set(key, *value):
    return lambda spec: spec.metadata.__setitem__(key, value)


def _tensor(name, kind):
    return lambda spec: spec.tensors.__setitem__(name, (spec.tensors[name][0], kind))


# name -> (change to the tiny GGUF, words of the reason)
BAD_GGUFS = {
    "zero heads": (_set("llama.attention.head_count", 0, "UINT32"), "llama.attention.head_count must be"),
    "missing heads": (_without("llama.attention.head_count"), "no llama.attention.head_count"),
    "heads as text": (_set("llama.attention.head_count", "four", "STRING"), "llama.attention.head_count must be"),
    "heads per layer": (_set("llama.attention.head_count", [4], "ARRAY", "UINT32"), "llama.attention.head_count must"),
    "kv heads not dividing": (_set("llama.attention.head_count_kv", 3, "UINT32"), "multiple of num_key_value_heads"),
    "ten million blocks": (_set("llama.block_count", 10_000_000, "UINT32"), "llama.block_count must be"),
    "more blocks than tensors": (_set("llama.block_count", 2, "UINT32"), "tensor blk.1.attn_q.weight is missing"),
    "width disagrees": (_set("llama.embedding_length", 32, "UINT32"), "tensor token_embd.weight has shape [64, 8]"),
    "no token list": (_without("tokenizer.ggml.tokens"), "no tokenizer.ggml.tokens"),
    "tokens are numbers": (_set("tokenizer.ggml.tokens", list(range(8)), "ARRAY", "INT32"),
                           "tokenizer.ggml.tokens must be a list of strings"),
    "token types out of range": (_set("tokenizer.ggml.token_type", [99] * 8, "ARRAY", "INT32"),
                                 "tokenizer.ggml.token_type holds 99"),
    "token types short": (_set("tokenizer.ggml.token_type", [1] * 3, "ARRAY", "INT32"),
                          "tokenizer.ggml.token_type has 3 entries for 8 tokens"),
    "token types as text": (_set("tokenizer.ggml.token_type", ["x"] * 8, "ARRAY", "STRING"),
                            "tokenizer.ggml.token_type must be a list of integers"),
    "eos out of range": (_set("tokenizer.ggml.eos_token_id", 9999, "UINT32"), "tokenizer.ggml.eos_token_id 9999"),
    "1-D quantised tensor": (_tensor("blk.0.attn_norm.weight", "Q8_0"), "is quantised but has 1 dimension"),
    # found by tests/reliability/test_fuzz.py: mlx's RMSNorm refuses eps 0 when the model loads
    "zero norm epsilon": (_set("llama.attention.layer_norm_rms_epsilon", 0, "UINT32"),
                          "llama.attention.layer_norm_rms_epsilon must be a number above 0"),
    "negative rope base": (_set("llama.rope.freq_base", -1.0, "FLOAT32"), "llama.rope.freq_base must be a number"),
}


@pytest.mark.parametrize("kind", list(BAD_GGUFS))
@pytest.mark.parametrize("command", ["import-gguf", "train", "chat", "data check"])
def test_a_gguf_whose_model_is_unsound_is_one_named_error(kind, command, tmp_path, capsys):
    from mlx_lora.models.local import imported_gguf_path

    change, words = BAD_GGUFS[kind]
    spec = tiny_spec()
    change(spec)
    path = write_gguf(spec, tmp_path / "bad.gguf")
    argv = ["models", "import-gguf", path, "--out", tmp_path / "out"] if command == "import-gguf" else \
        every_command(path, tmp_path)[command]
    line = one_line_error(capsys, argv)
    assert line.startswith(f"error: {path}: ") and words in line
    assert not (tmp_path / "out").exists() and not imported_gguf_path(path).exists()


def test_the_tiny_gguf_itself_imports_and_loads(tmp_path):
    from mlx_lm import load

    from mlx_lora.models.gguf import import_gguf

    out = import_gguf(write_gguf(tiny_spec(), tmp_path / "tiny.gguf"), tmp_path / "out")
    model, tokenizer = load(str(out))
    assert tokenizer.encode("abcd") == [5, 2, 3]
