"""``--format gguf-adapter``: the LoRA adapter alone as a GGUF file in llama.cpp's adapter
format, for ``llama-cli -m base.gguf --lora adapter.gguf``, Ollama's ``ADAPTER`` and
llama-cpp-python's ``lora_path`` — a few MB instead of a whole fused model.

The format (llama.cpp ``convert_lora_to_gguf.py`` and ``src/llama-adapter.cpp``):

- metadata ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``
  (float32) and the base's ``general.architecture`` (llama.cpp refuses another arch);
- per adapted base weight ``<name>`` (llama.cpp's name, e.g. ``blk.3.attn_q.weight``):
  ``<name>.lora_a`` of numpy shape (r, in) and ``<name>.lora_b`` (out, r) — PEFT's
  ``lora_A`` / ``lora_B``, i.e. mlx-lm's ``lora_a``ᵀ (in, r) and ``lora_b``ᵀ (r, out); in
  GGUF's ne order a = [in, r], b = [r, out], which is what llama.cpp checks against
  the base tensor's [in, out];
- llama.cpp computes ``W x + (scale · alpha / r) · B (A x)`` with r = b's ne[0], so
  ``alpha = mlx-lm's scale × r`` (the PEFT export's ``lora_alpha``, from which the
  tensors are taken: :func:`mlx_lora.export.peft_export.peft_state_dict`);
- the llama family's rotary row order: ``attn_q`` / ``attn_k`` rows are permuted in the
  base GGUF, so ``lora_b``'s rows (the output rows) get the same permutation
  (:func:`~mlx_lora.export.gguf_export.permute`), as the LoraTorchTensor of
  ``convert_lora_to_gguf.py`` does; ``lora_a`` (the input side) is unchanged.

Names and the permutation come from the fused GGUF's writer
(:mod:`mlx_lora.export.gguf_naming`), so both files always agree. DoRA is refused
(llama.cpp has no DoRA).

The check (with the ``gguf`` extra): the base as the run trained on it and the fused
model are written as f16 GGUFs in a scratch folder; llama.cpp loads the base with this
adapter and its logits are compared (1) with base+adapter in MLX, under the f16 export's
rule, and (2) with llama.cpp's logits of the fused f16 GGUF — the file the adapter must
be equivalent to.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

from mlx_lora.errors import UserError
from mlx_lora.export import verify
from mlx_lora.export.formats.base import ExportContext, ExportFormat, fused_bytes, thresholds

ADAPTER_FILE = "adapter.gguf"
FUSED_CHECK = "GGUF adapter on the f16 base (llama.cpp) against the fused f16 GGUF (llama.cpp)"
CHECK = "GGUF adapter on the f16 base (loaded by llama.cpp)"


def adapter_tensors(files, config: dict) -> tuple[dict[str, Any], float]:
    """({llama.cpp tensor name: float32 numpy}, alpha) of an mlx-lm LoRA adapter."""
    from mlx_lora.export.gguf_export import permute
    from mlx_lora.export.gguf_naming import naming
    from mlx_lora.export.peft_export import PREFIX, peft_state_dict

    tensors, peft_config = peft_state_dict(files)
    if peft_config.get("use_dora"):
        raise UserError("llama.cpp's adapters are LoRA only: a DoRA adapter cannot be a GGUF adapter — export it "
                        "fused (--format gguf) instead")
    _, permuted, gguf_name = naming(config)
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    out: dict[str, Any] = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[len(PREFIX):-len(".lora_A.weight")]
        if module in ("lm_head", "model.embed_tokens"):
            raise UserError(f"{module}: an adapter on the embeddings or the output head cannot be written as a "
                            "GGUF adapter here; export it fused (--format gguf)")
        name = gguf_name(f"{module}.weight")
        b = tensors[f"{PREFIX}{module}.lora_B.weight"]  # (out, r)
        if permuted and module.endswith("self_attn.q_proj"):
            b = permute(b, n_head)
        elif permuted and module.endswith("self_attn.k_proj"):
            b = permute(b, n_kv)
        out[f"{name}.lora_a"], out[f"{name}.lora_b"] = a, b
    if not out:
        raise UserError(f"{files.weights}: no LoRA tensors to write")
    return out, float(peft_config["lora_alpha"])


def write_adapter_gguf(path: Path, tensors: dict[str, Any], alpha: float, config: dict, name: str,
                       base_model: str) -> None:
    import gguf
    import numpy as np

    from mlx_lora.export.gguf_naming import naming

    writer = gguf.GGUFWriter(str(path), naming(config)[0])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(name)
    writer.add_base_model_count(1)
    writer.add_base_model_name(0, base_model)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, tensor in sorted(tensors.items()):
        writer.add_tensor(key, np.ascontiguousarray(tensor, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


class GgufAdapter(ExportFormat):
    name = "gguf-adapter"
    label = "LoRA adapter as GGUF (llama.cpp --lora, Ollama ADAPTER)"
    description = "the LoRA adapter in llama.cpp's GGUF adapter format"
    library = "gguf"
    order = 35
    fused = False

    def estimated_bytes(self, files, base_dir, quantize) -> int:
        # the adapter (float32), and for the check two f16 GGUFs of the base in a scratch folder
        return 2 * files.weights.stat().st_size + 2 * fused_bytes(base_dir, None) + 16 * 2**20

    def stages(self, torch_python: str | None) -> int:
        return 4  # write, base GGUF, fused GGUF, llama.cpp

    def write(self, ctx: ExportContext) -> None:
        from mlx_lora.export import llama_cpp_check

        config = json.loads((ctx.base_dir / "config.json").read_text())
        ctx.step("writing the LoRA adapter as a GGUF file")
        tensors, alpha = adapter_tensors(ctx.files, config)
        name = f"{ctx.base_model_name.split('/')[-1]}-{ctx.files.label.replace('/', '-')}"
        write_adapter_gguf(ctx.folder / ADAPTER_FILE, tensors, alpha, config, name, ctx.base_model_name)
        ctx.notes.append(f"{len(tensors) // 2} adapted weights, rank {ctx.files.lora_parameters['rank']}, "
                         f"alpha {alpha:g} (llama.cpp scales by alpha / rank = mlx-lm's scale "
                         f"{ctx.files.lora_parameters['scale']:g})")
        if not llama_cpp_check.available():
            ctx.step("llama.cpp is not installed: not checked by llama.cpp")
            ctx.record(verify.not_run(CHECK, llama_cpp_check.NOT_INSTALLED))
            return
        with ctx.scratch(".gguf-adapter-check-") as scratch:
            base_gguf, fused_gguf = scratch / "base-f16.gguf", scratch / "fused-f16.gguf"
            self._write_base_and_fused(ctx, config, base_gguf, fused_gguf)
            ctx.step("loading the base GGUF with the adapter in llama.cpp")
            run = lambda model, lora=None: llama_cpp_check.llama_cpp_logits(  # noqa: E731
                model, ctx.prompt_ids, stop_ids=ctx.session.stop_ids, n_predict=1, lora=lora)[0]
            with_adapter, fused, base = run(base_gguf, ctx.folder / ADAPTER_FILE), run(fused_gguf), run(base_gguf)
        import mlx.core as mx

        index = {tuple(ids): i for i, ids in enumerate(ctx.prompt_ids)}
        logits_of = lambda arrays: lambda batch: mx.array(arrays[index[tuple(batch[0])]])[None]  # noqa: E731
        f16 = thresholds("float16", None)
        ctx.compare(CHECK, logits_of(with_adapter), f16, batch_size=1)
        # the adapter against the fused file, both in llama.cpp: the fused logits play the tuned model
        fused_reference = lambda batch: (logits_of(fused)(batch), logits_of(base)(batch))  # noqa: E731
        ctx.record(verify.compare_logits(fused_reference, logits_of(with_adapter), ctx.prompt_ids, FUSED_CHECK,
                                         ctx.thresholds_for_model(f16), ctx.should_stop, batch_size=1))

    def _write_base_and_fused(self, ctx: ExportContext, config: dict, base_gguf: Path, fused_gguf: Path) -> None:
        from mlx_lora.export.fused import load_base_float32
        from mlx_lora.export.gguf_export import write_gguf

        ctx.step("writing the base as an f16 GGUF (for the check)")
        write = lambda model, path: write_gguf(  # noqa: E731
            model, config, ctx.reference.tokenizer, ctx.base_dir, path, quantize=None,
            eos_ids=ctx.session.stop_ids, name=path.stem)
        base = load_base_float32(ctx.base_dir, ctx.files)
        write(base, base_gguf)
        del base
        gc.collect()
        model, _, _ = ctx.fused_model()  # announces its own stage
        write(model, fused_gguf)
        del model
        gc.collect()

    def usage(self, repo: str, base: str, files: list[str], trained_base: dict | None = None) -> str:
        return (f"```sh\n# {ADAPTER_FILE} of {repo}, onto a GGUF of {base} (the f16 file of "
                f"`mlx-lora export --format gguf`, or one from the Hub)\n"
                f"llama-cli -m {base.split('/')[-1]}-f16.gguf --lora {ADAPTER_FILE} -cnv\n"
                f"# Ollama: a Modelfile with `FROM <that base GGUF>` and `ADAPTER ./{ADAPTER_FILE}`\n```")


FORMAT = GgufAdapter()
