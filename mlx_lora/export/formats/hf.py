"""``--format hf``: the adapter fused into its base as a plain transformers checkpoint
(transformers' tensor names, ``torch_dtype``, no MLX quantisation) — the mlx
format's writer with ``fmt="hf"`` — checked with mlx-lm and, where a Python with
torch is found, with transformers itself."""

from __future__ import annotations

from mlx_lora.export.formats.base import ExportContext, thresholds
from mlx_lora.export.formats.mlx import MlxFolder


class HfFolder(MlxFolder):
    name = "hf"
    label = "Fused Hugging Face safetensors (transformers)"
    description = "the adapter fused into the base model (transformers safetensors)"
    library = "transformers"
    order = 20
    quantize = (None,)

    def check_elsewhere(self, ctx: ExportContext, dtype) -> None:
        ctx.torch_compare("fused hf folder (loaded with transformers on torch)", ctx.folder, None,
                          thresholds(dtype, None))

    def usage(self, repo: str, base: str, files: list[str], trained_base: dict | None = None) -> str:
        return f'''```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{repo}")
tokenizer = AutoTokenizer.from_pretrained("{repo}")
```'''


FORMAT = HfFolder()
