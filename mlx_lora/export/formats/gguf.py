"""``--format gguf``: the adapter fused into its base as one GGUF file (f16, q8_0 or
q4_0) for llama.cpp and Ollama (the writer: :mod:`mlx_lora.export.gguf_export`),
checked by importing the file back with ``mlx.core.load``."""

from __future__ import annotations

import gc

from mlx_lora.export.formats.base import ExportContext, ExportFormat, fused_bytes, thresholds
from mlx_lora.export.gguf_export import GGUF_TYPES


class GgufFile(ExportFormat):
    name = "gguf"
    label = "Fused GGUF file (llama.cpp, Ollama)"
    description = "the adapter fused into the base model, as a GGUF file for llama.cpp"
    library = "gguf"
    order = 30
    fused = True
    quantize = (None, 8, 4)
    quantize_labels = {bits: f"{GGUF_TYPES[bits]} ({bits}-bit)" for bits in (8, 4)}  # q8_0 (8-bit)…

    def estimated_bytes(self, files, base_dir, quantize) -> int:
        # the file, and beside it (same disk) its float32 read-back: twice the 16-bit size
        return super().estimated_bytes(files, base_dir, quantize) + 2 * fused_bytes(base_dir, None)

    def stages(self, torch_python: str | None) -> int:
        return 3  # fuse, write, check

    def write(self, ctx: ExportContext) -> None:
        from mlx_lora.export import verify
        from mlx_lora.export.fused import load_float32
        from mlx_lora.export.gguf_export import write_gguf
        from mlx_lora.models.gguf import import_gguf

        model, config, _ = ctx.fused_model()
        name = f"{ctx.base_model_name.split('/')[-1]}-{ctx.files.label.replace('/', '-')}"
        gguf_path = ctx.folder / f"{name}-{GGUF_TYPES[ctx.quantize]}.gguf"
        ctx.step(f"writing {gguf_path.name}")
        ctx.notes.extend(write_gguf(model, config, ctx.reference.tokenizer, ctx.base_dir, gguf_path,
                                    quantize=ctx.quantize, eos_ids=ctx.session.stop_ids, name=name))
        del model  # the fused copy: free it before importing the file back
        gc.collect()
        ctx.step("checking the GGUF file against base+adapter")
        with ctx.scratch(".gguf-check-") as back:
            imported = import_gguf(gguf_path, back / "model", dequantize="float32")
            exported = load_float32(imported)
            # the file's unquantised tensors are float16 (f16), so float16's tolerances
            ctx.compare(f"GGUF {GGUF_TYPES[ctx.quantize]} (read back with mlx.core.load)", verify.logits_of(exported),
                        thresholds("float16", ctx.quantize))
            del exported

    def usage(self, repo: str, base: str, files: list[str]) -> str:
        file = next((f for f in files if f.endswith(".gguf")), "model.gguf")
        return f"```sh\nllama-cli -m {file} -cnv\n```"


FORMAT = GgufFile()
