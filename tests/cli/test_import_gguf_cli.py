"""``mlx-lora models import-gguf`` on a file MLX cannot hold (Q5_0, Q5_1, BF16 tensors: the
K-quants' path, on a model small enough for rows of 64): it says the memory first, then
writes a float16 folder whose weights are gguf-py's dequantisation, un-permuted for q/k."""

from __future__ import annotations

import numpy as np

from mlx_lora.cli.main import main
from tests.reliability.ggufs import HEADS, KV_HEADS, tiny_spec, write_gguf


def test_import_gguf_says_the_memory_first_and_dequantises_exactly(tmp_path, capsys):
    import gguf
    from mlx.utils import tree_flatten
    from mlx_lm.utils import load_model

    from mlx_lora.export.gguf_export import permute

    spec = tiny_spec()
    kinds = {"blk.0.attn_q.weight": "Q5_0", "blk.0.attn_k.weight": "BF16", "blk.0.ffn_down.weight": "Q5_1"}
    for name, kind in kinds.items():
        spec.tensors[name] = (spec.tensors[name][0], kind)
    path = write_gguf(spec, tmp_path / "tiny-q5.gguf")
    out = tmp_path / "imported"

    assert main(["models", "import-gguf", str(path), "--out", str(out)]) == 0
    printed, said = capsys.readouterr()
    assert printed.strip() == str(out)
    assert "MLX cannot hold" in said and "BF16, Q5_0, Q5_1" in said and "dequantised to float16" in said

    model, config = load_model(out)
    assert "quantization" not in config
    weights = dict(tree_flatten(model.parameters()))
    reader = gguf.GGUFReader(str(path))
    raw = {t.name: t for t in reader.tensors}
    names = {"blk.0.attn_q.weight": ("model.layers.0.self_attn.q_proj.weight", HEADS),
             "blk.0.attn_k.weight": ("model.layers.0.self_attn.k_proj.weight", KV_HEADS),
             "blk.0.ffn_down.weight": ("model.layers.0.mlp.down_proj.weight", 0)}
    for gguf_name, (name, heads) in names.items():
        tensor = raw[gguf_name]
        exact = gguf.quants.dequantize(tensor.data, tensor.tensor_type)  # float32, GGUF row order
        ours = np.array(weights[name])
        assert ours.dtype == np.float16
        assert np.array_equal(permute(ours, heads) if heads else ours, exact.astype(np.float16)), name
