"""``--format gguf``: the adapter fused into its base as one GGUF file for llama.cpp,
Ollama and LM Studio (the writer: :mod:`mlx_lora.export.gguf_export`), in any of
:data:`~mlx_lora.export.gguf_export.GGUF_TYPES`: f16, bf16, q8_0 and q4_0 written by
gguf-py here, the K-quants (q6_k, q5_k_m, q4_k_m) by llama.cpp's own quantiser from
an f32 file.

Beside the file, an Ollama ``Modelfile`` (:mod:`mlx_lora.export.handoff`). Checked twice: the types mlx can read are imported back with ``mlx.core.load``; and,
when llama-cpp-python (the ``gguf`` extra) is installed, the file is loaded by
llama.cpp itself (:mod:`mlx_lora.export.llama_cpp_check`), its logits compared with
base+adapter's and a greedy continuation compared token by token. Without the extra
that check is recorded as not run, and the K-quants are refused (llama.cpp makes them).

The pass rule for the rounded types, bf16, q8_0, the K-quants and q4_0 (README, "GGUF"), which
replaces verify.py's top-1 minimums and mean-error rule for GGUF files: refused only when
the adapter's effect is lost — when, two standard errors included, less than
:data:`MIN_EFFECT_KEPT` of the fine-tune's shift of the logits survives in the file
(verify.py, "the adapter's effect kept"); a top-1 agreement under 90 % or less than 80 %
of the effect kept is a warning in the notes. Every llama.cpp check also carries the
quality report: mean KL against base+adapter (MLX, float32), the adapter's effect kept, its
top-1 changes kept, and the run's validation loss through llama.cpp next to base+adapter's
and the base's (:mod:`mlx_lora.export.val_loss`). With ``imatrix``, the K-quants are
quantised with an importance matrix from the run's training data
(:mod:`mlx_lora.export.imatrix`).
"""

from __future__ import annotations

import gc

from mlx_lora.export import val_loss, verify
from mlx_lora.export.formats.base import ExportContext, ExportFormat, fused_bytes, thresholds
from mlx_lora.export.gguf_export import GGUF_TYPES, LLAMA_CPP_TYPES, gguf_type

# The quantised types: no top-1 minimum and no mean-error rule (module docstring): refused
# only when less than MIN_EFFECT_KEPT of the adapter's shift of the logits survives
# (verify.py, "the adapter's effect kept"). ``rounding``: verify.THRESHOLDS' q8 / q4 figures.
# Measured by llama.cpp (README, "GGUF"; bench/gguf_pirate.py): the demo model's pirate run keeps
# 84.3 % ± 0.1 % of its shift at q4_k_m (top-1 79 %, every held-out answer still in the pirate voice);
# with the adapter dropped by the fuse, −1.8 % ± 0.2 %.
MIN_EFFECT_KEPT = 0.5
# bf16 is one of them: its 8 significant bits are q8_0's precision, and rounding a float32
# model to them moved top-1 agreement to 93.7-100 % on the tiny family models (tests/models,
# the same figure from llama.cpp and from mlx reading the file back: rounding, not the writer),
# where f16 keeps ≥ 99 %. A bf16-trained model's bf16 file is near exact either way.
QUANTISED_THRESHOLDS = {
    kind: verify.Thresholds(0.0, None, rounding=rounding, min_effect_kept=MIN_EFFECT_KEPT)
    for kind, rounding in (("bf16", 0.2), ("q8_0", 0.15), ("q6_k", 0.15), ("q5_k_m", 3.8), ("q4_k_m", 3.8),
                           ("q4_0", 3.8))
}
WARN_BELOW_TOP1 = 0.90  # a quantised file agreeing less than this with the tuned model gets a warning note
WARN_BELOW_KEPT = 0.80  # …or keeping less than this of the adapter's effect
GREEDY_TOKENS = 24


def gguf_thresholds(type_name: str) -> verify.Thresholds:
    if type_name in QUANTISED_THRESHOLDS:
        return QUANTISED_THRESHOLDS[type_name]
    # f16: the file's tensors are float16, so that dtype's tolerances
    return thresholds("float16", None)


def quality_warnings(type_name: str, check: verify.ExportVerified) -> list[str]:
    """The notes a quantised file that passed gets when it kept less than it might."""
    notes = []
    milder = "f16 keeps more" if type_name == "bf16" else "q8_0 or q6_k keeps more"
    if check.top1_agreement < WARN_BELOW_TOP1:
        notes.append(f"warning: the {type_name} file agrees with the tuned model on the most likely next "
                     f"token {check.top1_agreement:.1%} of the time (f16: ≥ 99%): expect its answers "
                     f"to differ from the tuned model's more than the f16 file's; {milder}")
    if check.adapter_effect_kept is not None and check.adapter_effect_kept < WARN_BELOW_KEPT:
        notes.append(f"warning: the {type_name} file keeps {check.adapter_effect_kept:.0%} of the fine-tune's shift "
                     f"of the logits (refused below {MIN_EFFECT_KEPT:.0%}): the tuned behaviour is weakened; "
                     f"{milder}")
    return notes


def _mlx_greedy(model, ids: list[int], n: int, stop_ids) -> list[int]:
    """Base+adapter's greedy continuation (no cache: ``n`` full forwards of a short prompt)."""
    import mlx.core as mx

    out: list[int] = []
    for _ in range(n):
        token = int(model(mx.array([ids + out]))[0, -1].argmax().item())
        if token in stop_ids:
            break
        out.append(token)
    return out


def _not_importable(config: dict, base_dir) -> str | None:
    """Why our own GGUF importer cannot read this export back (None: it can); llama.cpp's
    load is then the only judge."""
    from mlx_lora.export.gguf_families import FAMILIES
    from mlx_lora.models.gguf import SUPPORTED_ARCHS

    family = FAMILIES[config["model_type"]]
    extra = set(family.tensors(config)) - {"rope_freqs.weight"}  # Llama 3's rope_freqs is read back (models/rope.py)
    if family.arch not in SUPPORTED_ARCHS or extra:
        return (f"not read back: the importer reads {', '.join(sorted(SUPPORTED_ARCHS))} GGUFs without Phi-3's "
                "long-context rope factors; llama.cpp's load is this file's check")
    return None


class GgufFile(ExportFormat):
    name = "gguf"
    label = "Fused GGUF file (llama.cpp, Ollama, LM Studio)"
    description = "the adapter fused into the base model, as a GGUF file for llama.cpp"
    library = "gguf"
    order = 30
    fused = True
    quantize = tuple(GGUF_TYPES)  # None (f16), "bf16", 8 (q8_0), "q6_k", "q5_k_m", "q4_k_m", 4 (q4_0)
    quantize_labels = {q: f"{GGUF_TYPES[q]} ({q}-bit)" if isinstance(q, int) else GGUF_TYPES[q]
                       for q in GGUF_TYPES if q is not None}  # q8_0 (8-bit)…

    def requirement(self, quantize) -> str | None:
        from mlx_lora.export import llama_cpp_check

        if gguf_type(quantize) in LLAMA_CPP_TYPES and not llama_cpp_check.available():
            return (f"GGUF {gguf_type(quantize)} is made by llama.cpp's quantiser: install the "
                    f"{llama_cpp_check.EXTRA} extra (pip install 'mlx-lora-studio[{llama_cpp_check.EXTRA}]'), "
                    "or export f16, bf16, q8_0 or q4_0")
        return None

    def takes_imatrix(self, quantize) -> bool:
        return gguf_type(quantize) in LLAMA_CPP_TYPES

    def estimated_bytes(self, files, base_dir, quantize) -> int:
        # the file, and beside it (same disk) an f32 file or the float32 read-back: twice the 16-bit size
        bits = quantize if isinstance(quantize, int) else None
        return super().estimated_bytes(files, base_dir, bits) + 2 * fused_bytes(base_dir, None)

    def stages(self, torch_python: str | None) -> int:
        return 4  # fuse, write, quantise or read back, llama.cpp

    def write(self, ctx: ExportContext) -> None:
        from mlx_lora.export import llama_cpp_check
        from mlx_lora.export.gguf_export import _chat_template, write_gguf
        from mlx_lora.export.handoff import write_modelfile

        type_name = gguf_type(ctx.quantize)
        model, config, _ = ctx.fused_model()
        basename, finetune = ctx.base_model_name.split('/')[-1], ctx.files.label.replace('/', '-')
        name = f"{basename}-{finetune}"
        gguf_path = ctx.folder / f"{name}-{type_name}.gguf"
        write = lambda path, kind: ctx.notes.extend(write_gguf(  # noqa: E731
            model, config, ctx.reference.tokenizer, ctx.base_dir, path, quantize=kind,
            eos_ids=ctx.session.stop_ids, name=name, basename=basename, finetune=finetune))
        if type_name in LLAMA_CPP_TYPES:
            with ctx.scratch(".gguf-f32-") as scratch:
                ctx.step("writing an f32 GGUF for llama.cpp's quantiser")
                write(scratch / "model-f32.gguf", "f32")
                matrix = self._imatrix(ctx, model, config, scratch / "imatrix.npz") if ctx.imatrix else None
                del model
                gc.collect()
                ctx.step(f"quantising to {type_name} with llama.cpp")
                llama_cpp_check.quantize_gguf(scratch / "model-f32.gguf", gguf_path, type_name, imatrix=matrix)
        else:
            ctx.step(f"writing {gguf_path.name}")
            write(gguf_path, ctx.quantize)
            del model  # the fused copy: free it before importing the file back
            gc.collect()
            self._read_back(ctx, gguf_path, type_name, config)
        self._llama_cpp(ctx, gguf_path, type_name)
        checked = [c for c in ctx.checks if c.status == "checked"]  # llama.cpp's when it ran
        if type_name in QUANTISED_THRESHOLDS and checked:
            ctx.notes.extend(quality_warnings(type_name, checked[-1]))
        write_modelfile(ctx.folder, gguf_path.name, ctx.reference.tokenizer, ctx.session.stop_ids,
                        _chat_template(ctx.base_dir), num_ctx=min(4096, int(config.get("max_position_embeddings", 4096))))

    def _imatrix(self, ctx: ExportContext, model, config: dict, path):
        from mlx_lora.errors import UserError
        from mlx_lora.export import imatrix

        examples, why = imatrix.training_tokens(ctx.files, ctx.reference.tokenizer)
        if why:
            raise UserError(f"--imatrix: {why}")
        matrix = imatrix.importance_matrix(model, config, examples)
        ctx.notes.append(f"quantised with an importance matrix of {len(matrix)} weights from the run's training data "
                         f"({len(examples)} examples, {sum(map(len, examples))} tokens)")
        return imatrix.save(matrix, path)

    def _read_back(self, ctx: ExportContext, gguf_path, type_name: str, config: dict) -> None:
        from mlx_lora.export.fused import load_float32
        from mlx_lora.models.gguf import import_gguf

        ctx.step("checking the GGUF file against base+adapter")
        why_not = _not_importable(config, ctx.base_dir)
        if why_not:
            ctx.record(verify.not_run(f"GGUF {type_name} (read back with mlx.core.load)", why_not))
            return
        with ctx.scratch(".gguf-check-") as back:
            imported = import_gguf(gguf_path, back / "model", dequantize="float32")
            exported = load_float32(imported)
            ctx.compare(f"GGUF {type_name} (read back with mlx.core.load)", verify.logits_of(exported),
                        gguf_thresholds(type_name))
            del exported

    def _llama_cpp(self, ctx: ExportContext, gguf_path, type_name: str) -> None:
        import mlx.core as mx

        from mlx_lora.export import llama_cpp_check

        check = f"GGUF {type_name} (loaded by llama.cpp)"
        if not llama_cpp_check.available():
            ctx.step("llama.cpp is not installed: not checked by llama.cpp")
            ctx.record(verify.not_run(check, llama_cpp_check.NOT_INSTALLED))
            return
        ctx.step(f"loading {gguf_path.name} in llama.cpp and checking it against base+adapter")
        tokenizer = ctx.reference.tokenizer  # mlx-lm's TokenizerWrapper → the transformers tokenizer
        tokenizer = tokenizer if hasattr(tokenizer, "apply_chat_template") else tokenizer._tokenizer
        texts = [tokenizer.decode(ids) for ids in ctx.prompt_ids]  # the 32 chats as text, special tokens in
        examples, _, losses = ctx.validation()
        logits, info = llama_cpp_check.llama_cpp_logits(gguf_path, ctx.prompt_ids, stop_ids=ctx.session.stop_ids,
                                                        n_predict=GREEDY_TOKENS, texts=texts, scored=examples)
        by_prompt = {tuple(ids): mx.array(out)[None] for ids, out in zip(ctx.prompt_ids, logits)}
        figures = {} if losses is None else {"val_loss": info["nll"] / info["targets"], "val_loss_tuned": losses[0],
                                             "val_loss_base": losses[1], "val_tokens": losses[2]}
        result = ctx.compare(check, lambda batch: by_prompt[tuple(batch[0])], gguf_thresholds(type_name),
                             batch_size=1, **figures)
        if losses is not None:
            ctx.notes.append(val_loss.summary(result))
        ours_tokens = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
        same_tokens = sum(a == b for a, b in zip(ours_tokens, info["tokens"]))
        if same_tokens == len(texts):
            ctx.notes.append(f"llama.cpp tokenises the {len(texts)} verification chats exactly as the tokenizer does")
        else:
            first = next(t for t, a, b in zip(texts, ours_tokens, info["tokens"]) if a != b)
            ctx.notes.append(f"warning: llama.cpp tokenises {len(texts) - same_tokens} of the {len(texts)} "
                             f"verification chats differently from the tokenizer (first: {first[:80]!r}): "
                             "prompts typed in llama.cpp, Ollama or LM Studio may not give the tuned answers")
        ours = _mlx_greedy(ctx.reference.model, list(ctx.prompt_ids[0]), GREEDY_TOKENS, ctx.session.stop_ids)
        theirs = info["greedy"]
        same = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        ctx.notes.append(f"llama.cpp's greedy continuation ({type_name}) of the first verification prompt: "
                         f"{info['text']!r} — the same as base+adapter's for its first {same} of "
                         f"{max(len(ours), len(theirs))} tokens")

    def usage(self, repo: str, base: str, files: list[str], trained_base: dict | None = None) -> str:
        file = next((f for f in files if f.endswith(".gguf")), "model.gguf")
        return (f"```sh\nllama-cli -m {file} -cnv\nollama create {repo.split('/')[-1].lower()} -f Modelfile\n```")


FORMAT = GgufFile()
