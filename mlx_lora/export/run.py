"""``export_run``: a run's adapter out as a fused model (mlx, hf, gguf) or an adapter
(peft, mlx-lm), checked against base+adapter, with a model card, optionally pushed.

The folder is built under a temporary name and renamed into place only when every
check passed (:func:`mlx_lora.atomic.atomic_dir`): an export folder is never
half-written, and an export that fails its check is an error, not a folder with a
warning in it. The checks go to the reporter as :class:`ExportVerified` events and
into the folder as ``verification.json`` and the model card.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from mlx_lora import __version__, atomic
from mlx_lora.chat.adapters import AdapterFiles, resolve_adapter
from mlx_lora.errors import Cancelled, UserError
from mlx_lora.events import Event, NullReporter, Progress, Reporter, never_stop
from mlx_lora.export import verify
from mlx_lora.export.fused import dtype_name, fuse_adapters
from mlx_lora.export.verify import PROMPTS, THRESHOLDS, ExportVerified

FORMATS = ("mlx", "hf", "gguf", "peft", "adapter")
QUANTIZE = {"mlx": (None, 4, 8), "hf": (None,), "gguf": (None, 8, 4), "peft": (None,), "adapter": (None,)}
# What `demo` is on the Hub, for model cards and PEFT's base_model_name_or_path.
DEMO_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclasses.dataclass(frozen=True)
class ExportFinished(Event):
    out_dir: str
    format: str
    quantize: int | None
    files: tuple[str, ...]
    passed: bool
    pushed_url: str | None


@dataclasses.dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    format: str
    quantize: int | None
    files: tuple[str, ...]
    checks: tuple[ExportVerified, ...]
    pushed_url: str | None
    notes: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


class ExportVerificationFailed(UserError):
    """The export did not reproduce base+adapter; nothing was written."""

    def __init__(self, out_dir: Path, checks: list[ExportVerified], quantize: int | None = None) -> None:
        self.checks = checks
        lines = [f"{c.check}: {'; '.join(c.problems)}" for c in checks if not c.passed]
        hint = (f"\nQuantising to {quantize} bits changes this model more than the fine-tune did; export it "
                "unquantised" + (" or with --quantize 8" if quantize < 8 else "") + "." if quantize else "")
        super().__init__(f"the export to {out_dir} failed its check, so it was not written:\n  "
                         + "\n  ".join(lines) + hint)


def base_model_name(spec: str) -> str:
    """The base as others should find it: the Hub id where there is one."""
    if spec == "demo":
        return DEMO_REPO
    return spec


def _thresholds(dtype, quantize: int | None) -> verify.Thresholds:
    if quantize:
        return THRESHOLDS[f"q{quantize}"]
    return THRESHOLDS.get(dtype_name(dtype), THRESHOLDS["exact"])


class _Steps:
    """Progress events and the cancel check between the stages of one export."""

    def __init__(self, reporter: Reporter, should_stop: Callable[[], bool], total: int) -> None:
        self.reporter, self.should_stop, self.total, self.done = reporter, should_stop, total, 0

    def __call__(self, message: str) -> None:
        if self.should_stop():
            raise Cancelled("export cancelled")
        self.reporter.emit(Progress("export", message, self.done, self.total))
        self.done += 1


def _load_float32(folder: Path):
    from mlx_lm.utils import load_model

    from mlx_lora.chat.model import prepare_base

    model, _ = load_model(folder)
    prepare_base(model, compute_dtype="float32")
    return model


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    format: str = "mlx",  # noqa: A002  (the CLI's --format)
    quantize: int | None = None,
    push: str | None = None,
    reporter: Reporter = NullReporter(),
    should_stop: Callable[[], bool] = never_stop,
    *,
    private: bool = True,
    fuse: Callable[[Any], None] = fuse_adapters,
    prompts: tuple[str, ...] = PROMPTS,
    torch_python: str | None = "auto",
    hub_api=None,
) -> ExportResult:
    """Export the adapter of ``run_dir`` (a run, its ``best/`` or ``checkpoints/step-N/``).

    ``fuse`` merges the adapter layers in place (tests pass a broken one to see the check
    fail); ``torch_python``: "auto" finds a Python with torch+transformers+peft for the
    real PEFT/transformers check (see :mod:`mlx_lora.export.torch_check`), None skips it.
    """
    from mlx_lora.chat.model import load_chat_model
    from mlx_lora.chat.session import ChatSession
    from mlx_lora.export import torch_check
    from mlx_lora.models.local import resolve_model

    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")
    if quantize not in QUANTIZE[format]:
        allowed = [q for q in QUANTIZE[format] if q]
        raise UserError(f"--quantize {quantize} does not apply to the {format} format"
                        + (f" (it takes {' or '.join(map(str, allowed))})" if allowed else
                           " (it is exported unquantised; --format mlx or gguf can be quantised)"))
    out_dir = Path(out_dir).expanduser().resolve()
    files = resolve_adapter(run_dir)
    if out_dir == files.weights.parent or out_dir in files.weights.parents:
        raise UserError(f"{out_dir}: exporting into the run folder itself would replace it; choose another --out")
    base_spec = files.base_model()
    if base_spec is None:
        raise UserError(f"{files.weights.parent}: the adapter does not say which base model it belongs to")
    python = torch_check.torch_python() if torch_python == "auto" else torch_python
    stages = {"mlx": 4, "hf": 4, "gguf": 4, "peft": 3 + (python is not None), "adapter": 3}[format]
    step = _Steps(reporter, should_stop, total=stages + bool(push))

    step(f"loading {base_spec} with the adapter {files.label}")
    base_dir = resolve_model(base_spec, reporter)
    reference = load_chat_model(base_spec, files, compute_dtype="float32", reporter=reporter)
    session = ChatSession(reference.model, reference.tokenizer)
    prompt_ids = verify.prompt_token_ids(session, prompts)
    reference_logits = verify.reference_from_model(reference.model)
    notes = [f"checked in float32 against the base as the run trained on it ({'; '.join(reference.notes)})"] \
        if reference.notes else []
    checks: list[ExportVerified] = []

    def record(check: ExportVerified) -> None:
        checks.append(check)
        reporter.emit(check)

    def compare(check: str, export_fn, thresholds: verify.Thresholds, batch_size: int = 4) -> None:
        record(verify.compare_logits(reference_logits, export_fn, prompt_ids, check, thresholds, should_stop,
                                     batch_size))

    def torch_compare(check: str, base: Path, peft: Path | None, thresholds: verify.Thresholds) -> None:
        import mlx.core as mx

        if python is None:
            record(verify.not_run(check, "torch, transformers and peft are not installed (see "
                                         f"{torch_check.ENV_PYTHON})"))
            return
        logits = torch_check.torch_logits(python, base, peft, prompt_ids)
        by_prompt = {tuple(ids): mx.array(out)[None] for ids, out in zip(prompt_ids, logits)}
        compare(check, lambda batch: by_prompt[tuple(batch[0])], thresholds, batch_size=1)

    if base_spec == "demo" and format in ("mlx", "hf", "gguf"):
        notes.append(f"the base is the app's embedded 4-bit (Q4_1) GGUF of {DEMO_REPO}, dequantised before fusing")
    written: list[str] = []
    with atomic.atomic_dir(out_dir) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # a temporary folder is private (0700); the export is an ordinary folder
        if format in ("mlx", "hf", "gguf"):
            from mlx_lora.export.fused import fused_model, save_model_folder

            step("fusing the adapter into the dequantised base")
            model, config, dtype = fused_model(base_dir, files, fuse)
            if format == "gguf":
                from mlx_lora.export.gguf_export import GGUF_TYPES, write_gguf
                from mlx_lora.models.gguf import import_gguf

                name = f"{base_model_name(base_spec).split('/')[-1]}-{files.label.replace('/', '-')}"
                gguf_path = tmp / f"{name}-{GGUF_TYPES[quantize]}.gguf"
                step(f"writing {gguf_path.name}")
                notes += write_gguf(model, config, reference.tokenizer, base_dir, gguf_path, quantize=quantize,
                                    eos_ids=session.stop_ids, name=name)
                del model
                gc.collect()
                step("checking the GGUF file against base+adapter")
                with tempfile.TemporaryDirectory(prefix=".gguf-check-", dir=out_dir.parent) as back:
                    imported = import_gguf(gguf_path, Path(back) / "model", dequantize="float32")
                    exported = _load_float32(imported)
                    compare(f"GGUF {GGUF_TYPES[quantize]} (read back with mlx.core.load)", verify.logits_of(exported),
                            _thresholds("float16", quantize))
                    del exported
            else:
                step(f"writing the {format} model folder")
                save_model_folder(model, config, base_dir, tmp, fmt=format, quantize=quantize,
                                  eos_ids=session.stop_ids)
                del model
                gc.collect()
                step("checking the saved model against base+adapter")
                exported = _load_float32(tmp)
                compare(f"fused {format} folder (loaded with mlx-lm)", verify.logits_of(exported),
                        _thresholds(dtype, quantize))
                del exported
                if format == "hf":
                    torch_compare("fused hf folder (loaded with transformers on torch)", tmp, None,
                                  _thresholds(dtype, None))
                notes.append(f"stored as {dtype_name(dtype)}" + (f", quantised to {quantize} bits "
                                                                   "(group 64) after fusing" if quantize else ""))
        elif format == "peft":
            from mlx_lora.export.fused import save_model_folder
            from mlx_lora.export.peft_export import write_peft

            step("writing the PEFT adapter")
            write_peft(files, tmp, base_model_name(base_spec))
            step("checking the PEFT tensors against base+adapter")
            check_peft_numpy(tmp, base_dir, files, compare)
            if python is not None:
                step("checking the PEFT adapter with peft on torch")
                with tempfile.TemporaryDirectory(prefix=".peft-base-", dir=out_dir.parent) as base_hf:
                    base_model = _load_base_float32(base_dir, files)
                    config = json.loads((base_dir / "config.json").read_text())
                    save_model_folder(base_model, config, base_dir, Path(base_hf), fmt="hf", quantize=None,
                                      eos_ids=session.stop_ids)
                    del base_model
                    torch_compare("PEFT adapter (loaded with peft on torch)", Path(base_hf), tmp,
                                  THRESHOLDS["exact"])
            else:
                torch_compare("PEFT adapter (loaded with peft on torch)", base_dir, tmp, THRESHOLDS["exact"])
        else:  # adapter
            step("copying the mlx-lm adapter")
            shutil.copy(files.weights, tmp / "adapters.safetensors")
            config = dict(files.config)
            (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
            step("checking the adapter on a fresh base")
            fresh = load_chat_model(base_spec, tmp, compute_dtype="float32")
            compare("mlx-lm adapter (loaded on a fresh base)", verify.logits_of(fresh.model), THRESHOLDS["exact"])
            del fresh

        written = sorted(p.name for p in tmp.iterdir()) + ["README.md", "verification.json"]
        summary = {
            "format": format, "quantize": quantize, "passed": all(c.passed for c in checks),
            "base_model": base_model_name(base_spec), "adapter": str(files.weights.parent),
            "prompts": list(prompts), "checks": [c.to_dict() for c in checks],
            "created_by": f"mlx-lora-studio {__version__}",
        }
        (tmp / "verification.json").write_text(json.dumps(summary, indent=2))
        from mlx_lora.export.card import model_card

        (tmp / "README.md").write_text(model_card(
            fmt=format, base_model=base_model_name(base_spec), adapter_config=files.config,
            run_config=files.run_config(), run_dir=files.run_dir, checks=[c.to_dict() for c in checks],
            files=sorted(written), quantize=quantize, repo=push or out_dir.name, notes=notes), encoding="utf-8")
        if not all(c.passed for c in checks):
            raise ExportVerificationFailed(out_dir, checks, quantize)

    pushed = None
    if push:
        from mlx_lora.export.push import push_folder

        step(f"pushing to {push}")
        pushed = push_folder(out_dir, push, private=private, api=hub_api)
    result = ExportResult(out_dir, format, quantize, tuple(sorted(written)), tuple(checks), pushed, tuple(notes))
    reporter.emit(Progress("export", "done", step.total, step.total))
    reporter.emit(ExportFinished(str(out_dir), format, quantize, result.files, result.passed, pushed))
    return result


def _load_base_float32(base_dir: Path, files: AdapterFiles):
    """The base as the run trained on it, in float32, without the adapter."""
    from mlx_lm.utils import load_model

    from mlx_lora.chat.model import prepare_base, run_base_settings

    model, _ = load_model(base_dir)
    prepare_base(model, compute_dtype="float32", **run_base_settings(files))
    return model


def check_peft_numpy(folder: Path, base_dir: Path, files: AdapterFiles, compare) -> None:
    """PEFT's forward convention in numpy: W' = W + (alpha/r)·B·A from the exported
    tensors, put into a fresh float32 base, logits against base+adapter."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    from mlx_lora.export.peft_export import dense_deltas

    model = _load_base_float32(base_dir, files)
    params = dict(tree_flatten(model.parameters()))
    base_weights = {k: np.array(v) for k, v in params.items() if k.endswith(".weight") and v.ndim == 2}
    merged = dense_deltas(folder, base_weights)
    model.load_weights([(k, mx.array(v)) for k, v in merged.items()], strict=False)
    mx.eval(model.parameters())
    compare("PEFT adapter (PEFT's convention applied in numpy)", verify.logits_of(model), THRESHOLDS["exact"])
