"""``--format adapter``: the run's mlx-lm adapter as it is (adapters.safetensors and
adapter_config.json), checked by loading it onto a fresh copy of its base."""

from __future__ import annotations

import json
import shutil

from mlx_lora.export.formats.base import ExportContext, ExportFormat
from mlx_lora.export.verify import THRESHOLDS


class MlxLmAdapter(ExportFormat):
    name = "adapter"
    label = "mlx-lm adapter (mlx_lm.load adapter_path=…)"
    description = "the LoRA adapter in mlx-lm's format"
    library = "mlx"
    order = 50
    fused = False

    def stages(self, torch_python: str | None) -> int:
        return 2  # copy, check

    def write(self, ctx: ExportContext) -> None:
        from mlx_lora.chat.model import load_chat_model
        from mlx_lora.export import verify

        ctx.step("copying the mlx-lm adapter")
        shutil.copy(ctx.files.weights, ctx.folder / "adapters.safetensors")
        (ctx.folder / "adapter_config.json").write_text(json.dumps(dict(ctx.files.config), indent=2))
        ctx.step("checking the adapter on a fresh base")
        fresh = load_chat_model(ctx.base_spec, ctx.folder, compute_dtype="float32")
        ctx.compare("mlx-lm adapter (loaded on a fresh base)", verify.logits_of(fresh.model), THRESHOLDS["exact"])

    def usage(self, repo: str, base: str, files: list[str], trained_base: dict | None = None) -> str:
        return f'''```python
from mlx_lm import load
model, tokenizer = load("{base}", adapter_path="{repo}")
```'''


FORMAT = MlxLmAdapter()
