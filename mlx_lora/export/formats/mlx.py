"""``--format mlx``: the adapter fused into its base, saved as an MLX model folder
(safetensors, optionally re-quantised to 4 or 8 bits), checked by loading it back
with mlx-lm. :class:`MlxFolder` is also the hf format's writer (:mod:`.hf`)."""

from __future__ import annotations

import gc

from mlx_lora.export.formats.base import ExportContext, ExportFormat, thresholds


class MlxFolder(ExportFormat):
    name = "mlx"
    label = "Fused MLX model (mlx-lm, LM Studio)"
    description = "the adapter fused into the base model (MLX safetensors)"
    library = "mlx"
    order = 10
    fused = True
    quantize = (None, 4, 8)

    def stages(self, torch_python: str | None) -> int:
        return 3  # fuse, write, check

    def write(self, ctx: ExportContext) -> None:
        from mlx_lora.export import verify
        from mlx_lora.export.fused import QUANTIZE_GROUP_SIZE, dtype_name, load_float32, save_model_folder

        model, config, dtype = ctx.fused_model()
        ctx.step(f"writing the {self.name} model folder")
        save_model_folder(model, config, ctx.base_dir, ctx.folder, fmt=self.name, quantize=ctx.quantize,
                          eos_ids=ctx.session.stop_ids)
        del model  # the fused copy: free it before loading the saved one back
        gc.collect()
        ctx.step("checking the saved model against base+adapter")
        exported = load_float32(ctx.folder)
        ctx.compare(f"fused {self.name} folder (loaded with mlx-lm)", verify.logits_of(exported),
                    thresholds(dtype, ctx.quantize))
        del exported
        self.check_elsewhere(ctx, dtype)
        ctx.notes.append(f"stored as {dtype_name(dtype)}" + (f", quantised to {ctx.quantize} bits "
                                                              f"(group {QUANTIZE_GROUP_SIZE}) after fusing"
                                                              if ctx.quantize else ""))

    def check_elsewhere(self, ctx: ExportContext, dtype) -> None:
        """Checks of the saved folder by other libraries (none for mlx)."""

    def usage(self, repo: str, base: str, files: list[str], trained_base: dict | None = None) -> str:
        return f'''```python
from mlx_lm import load, generate
model, tokenizer = load("{repo}")
```'''


FORMAT = MlxFolder()
