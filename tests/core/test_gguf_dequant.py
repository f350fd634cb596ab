"""GGUF import is exact: every supported tensor type dequantises to gguf-py's values
(``gguf.quants.dequantize``, llama.cpp's formulas; what transformers uses), bit for bit.
The one difference the format allows: Q4_0's zero is ``d·(8-8)`` in gguf-py (a negative
``d`` gives -0.0) and ``d·8 + (-8·d)`` = +0.0 in MLX's affine form, so signed zeros are
compared as equal (``x + 0.0`` turns -0.0 into +0.0 and changes no other bit)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlx_lora.models.dequant import dequantize_exact
from mlx_lora.models.gguf import import_gguf
from mlx_lora.models.gguf_header import read_gguf_header
from mlx_lora.models.gguf_tensors import import_plan, read_dequantized

# byte offsets of each block's float16 fields (ggml-common.h), so random blocks hold sane scales
_F16_FIELDS = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}
QUANTISED_BY_GGUF_PY = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "BF16")
MLX_HELD = ("Q4_0", "Q4_1", "Q8_0")


def _bits(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, dtype=np.float32) + np.float32(0.0)).view(np.uint32)


def _raw_tensor(kind: str, rows: int, cols: int, rng) -> tuple[np.ndarray, "object"]:
    import gguf
    from gguf.constants import GGML_QUANT_SIZES

    qtype = gguf.GGMLQuantizationType[kind]
    if kind == "F32":
        return (rng.standard_normal((rows, cols)) * 3).astype(np.float32), qtype
    if kind == "F16":
        return (rng.standard_normal((rows, cols)) * 3).astype(np.float16), qtype
    if kind in QUANTISED_BY_GGUF_PY:
        values = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)
        values[0, :32] = 0.0  # a block of zeros: d = 0
        values[1, :32] = -np.abs(values[1, :32])  # all negative: Q4_0's d < 0, so gguf-py's -0.0
        return gguf.quants.quantize(values, qtype), qtype
    block, block_bytes = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, cols // block, block_bytes), dtype=np.uint8)
    for at in _F16_FIELDS[kind]:
        scale = (rng.standard_normal((rows, cols // block)) * 0.05).astype(np.float16)
        raw[..., at:at + 2] = scale.view(np.uint8).reshape(rows, cols // block, 2)
    return raw.reshape(rows, -1), qtype


def _write(path, tensors: dict) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    for name, (raw, qtype) in tensors.items():
        if qtype.name in ("F32", "F16"):
            writer.add_tensor(name, raw)
        else:
            writer.add_tensor(name, raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _reference(raw: np.ndarray, qtype) -> np.ndarray:
    from gguf.quants import dequantize

    return raw.astype(np.float32) if qtype.name in ("F32", "F16") else dequantize(raw, qtype)


@pytest.mark.parametrize("kind", ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                                  "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_each_type_reads_as_gguf_py_dequantises_it(kind, tmp_path):
    import mlx.core as mx

    raw, qtype = _raw_tensor(kind, 8, 512, np.random.default_rng(0))
    path = tmp_path / f"{kind}.gguf"
    _write(path, {"x.weight": (raw, qtype)})
    reference = _reference(raw, qtype)
    assert reference.shape == (8, 512) and np.isfinite(reference).all()

    header = read_gguf_header(path)
    ours = np.array(read_dequantized(path, header, "float32")["x.weight"])
    assert np.array_equal(_bits(ours), _bits(reference))
    if kind in MLX_HELD:  # mx.load's affine form, dequantised the way the CPU base is (models/dequant.py)
        loaded = mx.load(str(path))
        bits = loaded["x.weight"].shape[1] * 32 // (loaded["x.scales"].shape[1] * 32)
        exact = dequantize_exact(loaded["x.weight"], loaded["x.scales"], loaded["x.biases"], 32, bits,
                                 dtype=mx.float32)
        assert np.array_equal(_bits(np.array(exact)), _bits(reference))
        # what mlx-lm's dequantize_model did (float16 arithmetic) is not exact
        rounded = mx.dequantize(loaded["x.weight"], loaded["x.scales"], loaded["x.biases"], 32, bits)
        assert not np.array_equal(np.array(rounded.astype(mx.float32)), reference)


def test_the_demo_base_in_float32_is_the_files_exact_values(demo_model, tmp_path):
    """The chain a CPU run uses: the demo's Q4_1 GGUF → 4-bit MLX folder → prepare_base
    (float32) equals gguf-py's d·q + m for every weight; and so does a float32 import."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import load_model

    from mlx_lora.chat.model import prepare_base
    from mlx_lora.export.gguf_export import permute
    from mlx_lora.models.demo import demo_gguf_path

    path = demo_gguf_path()
    header = read_gguf_header(path)
    names = {"blk.3.attn_q.weight": ("model.layers.3.self_attn.q_proj.weight", 9),
             "blk.3.ffn_down.weight": ("model.layers.3.mlp.down_proj.weight", 0),
             "token_embd.weight": ("model.embed_tokens.weight", 0)}
    reference = read_dequantized(path, type(header)(header.metadata,
                                                    {k: header.tensors[k] for k in names}), "float32")
    model, _ = load_model(demo_model)
    prepare_base(model, compute_dtype="float32")
    ours = dict(tree_flatten(model.parameters()))
    imported = import_gguf(path, tmp_path / "f32", dequantize="float32")
    assert json.loads((imported / "config.json").read_text())["torch_dtype"] == "float32"
    written = mx.load(str(imported / "model.safetensors"))
    for gguf_name, (name, heads) in names.items():
        expected = np.array(reference[gguf_name])
        for got in (ours[name], written[name]):
            got = np.array(got)
            assert got.dtype == np.float32
            assert np.array_equal(_bits(permute(got, heads) if heads else got), _bits(expected)), name


def test_the_import_plan_says_what_a_k_quant_file_will_cost_first(tmp_path):
    raw, qtype = _raw_tensor("Q4_K", 16, 256, np.random.default_rng(1))
    norm = np.ones(256, dtype=np.float32)
    import gguf

    path = tmp_path / "k.gguf"
    _write(path, {"a.weight": (raw, qtype), "n.weight": (norm, gguf.GGMLQuantizationType.F32)})
    plan = import_plan(path)
    assert plan.must_dequantize and plan.dequantize == "float16"
    assert plan.model_bytes == (16 * 256 + 256) * 2
    assert "Q4_K" in plan.summary and "MLX cannot hold" in plan.summary and "float16" in plan.summary
    assert import_plan(path, "float32").model_bytes == (16 * 256 + 256) * 4
    # a file MLX holds keeps its quantisation: 5 bits a Q4 weight (4 + float16 scale and bias per 32)
    q4, q4type = _raw_tensor("Q4_0", 16, 256, np.random.default_rng(2))
    _write(tmp_path / "q4.gguf", {"a.weight": (q4, q4type)})
    kept = import_plan(tmp_path / "q4.gguf")
    assert not kept.must_dequantize and kept.dequantize is None and kept.model_bytes == 16 * 256 * 5 // 8


def test_a_quantised_layer_keeps_its_own_bias_when_dequantised():
    """Qwen2's q/k/v projections have a bias: in a Q8_0 file the weight arrives as MLX's
    weight/scales/biases and the layer's bias beside them; dequantising folds scales and biases
    into the weight and keeps the bias (it was dropped: the family matrix's qwen2 q8_0 and q4_0
    exports failed to load back with 'Missing 6 parameters: ….q_proj.bias')."""
    import mlx.core as mx

    from mlx_lora.models.gguf import dequantize_weights

    dense = mx.random.normal((64, 64))
    packed, scales, biases = mx.quantize(dense, group_size=32, bits=8)
    bias = mx.arange(64, dtype=mx.float32)
    weights = {"q.weight": packed, "q.scales": scales, "q.biases": biases, "q.bias": bias, "norm.weight": bias}
    out = dequantize_weights(weights, {"q": {"group_size": 32, "bits": 8}}, mx.float32)
    assert sorted(out) == ["norm.weight", "q.bias", "q.weight"]
    np.testing.assert_array_equal(np.array(out["q.bias"]), np.array(bias))
    np.testing.assert_allclose(np.array(out["q.weight"]),
                               np.array(mx.dequantize(packed, scales, biases, group_size=32, bits=8)), atol=1e-6)
