"""``--format peft``: the LoRA adapter in PEFT's format (names, shapes and alpha:
:mod:`mlx_lora.export.peft_export`), checked by PEFT's convention in numpy and,
where a Python with torch is found, by peft itself on a transformers copy of the base."""

from __future__ import annotations

import json

from mlx_lora.export.formats.base import ExportContext, ExportFormat
from mlx_lora.export.verify import THRESHOLDS

TORCH_CHECK = "PEFT adapter (loaded with peft on torch)"


class PeftAdapter(ExportFormat):
    name = "peft"
    label = "PEFT adapter (transformers + peft)"
    description = "the LoRA adapter in PEFT's format"
    library = "peft"
    order = 40
    fused = False

    def stages(self, torch_python: str | None) -> int:
        return 2 + (torch_python is not None)  # write, numpy check[, torch check]

    def write(self, ctx: ExportContext) -> None:
        from mlx_lora.export.fused import load_base_float32, save_model_folder
        from mlx_lora.export.peft_export import check_peft_numpy, write_peft

        ctx.step("writing the PEFT adapter")
        write_peft(ctx.files, ctx.folder, ctx.base_model_name, ctx.trained_base)
        ctx.step("checking the PEFT tensors against base+adapter")
        check_peft_numpy(ctx.folder, ctx.base_dir, ctx.files, ctx.compare)
        if ctx.torch_python is None:
            ctx.torch_compare(TORCH_CHECK, ctx.base_dir, ctx.folder, THRESHOLDS["exact"])  # recorded as not run
            return
        ctx.step("checking the PEFT adapter with peft on torch")
        # peft loads onto a transformers checkpoint: the base as the run trained on it, saved as hf
        with ctx.scratch(".peft-base-") as base_hf:
            base_model = load_base_float32(ctx.base_dir, ctx.files)
            config = json.loads((ctx.base_dir / "config.json").read_text())
            save_model_folder(base_model, config, ctx.base_dir, base_hf, fmt="hf", quantize=None,
                              eos_ids=ctx.session.stop_ids)
            del base_model
            ctx.torch_compare(TORCH_CHECK, base_hf, ctx.folder, THRESHOLDS["exact"])

    def usage(self, repo: str, base: str, files: list[str], trained_base: dict | None = None) -> str:
        load = (trained_base or {}).get("load") or f'AutoModelForCausalLM.from_pretrained("{base}")'
        return f'''```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = {load}  # the base as the adapter was trained on it
model = PeftModel.from_pretrained(base, "{repo}")
```'''


FORMAT = PeftAdapter()
