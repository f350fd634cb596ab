"""The generic export driver, ``export_run``: a run's adapter out in one of the
formats of :mod:`mlx_lora.export.formats`, checked against base+adapter, with a
model card, optionally pushed.

It validates the format and quantisation, resolves the adapter, loads the float32
reference (base+adapter, as chat runs it), and hands an
:class:`~mlx_lora.export.formats.base.ExportContext` to the format's ``write``;
then it writes ``verification.json`` and the model card. The folder is built under
a temporary name and renamed into place only when every check passed
(:func:`mlx_lora.atomic.atomic_dir`): an export folder is never half-written, and an
export that fails its check is an error, not a folder with a warning in it. What it may
replace is decided by :func:`mlx_lora.export.destination.check_destination` (an earlier
export of ours, never the base, a run or the home folder). The
checks go to the reporter as :class:`ExportVerified` events and into the folder.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from mlx_lora import __version__, atomic
from mlx_lora.adapters import resolve_adapter
from mlx_lora.errors import Cancelled, UserError
from mlx_lora.events import Event, NullReporter, Progress, Reporter, never_stop
from mlx_lora.export import provenance, verify
from mlx_lora.export.destination import check_destination
from mlx_lora.export.formats import DEFAULT_FORMAT, ExportContext, ExportFormat, format_for, quantizable
from mlx_lora.export.formats.base import DEMO_REPO, base_model_name, hub_id
from mlx_lora.export.fused import fuse_adapters
from mlx_lora.export.verify import PROMPTS, ExportVerified


@dataclasses.dataclass(frozen=True)
class ExportFinished(Event):
    out_dir: str
    format: str
    quantize: int | str | None
    files: tuple[str, ...]
    passed: bool
    pushed_url: str | None


@dataclasses.dataclass(frozen=True)
class StaleTemporariesRemoved(Event):
    """What killed exports had left in the export's folder, removed before this one
    (:func:`mlx_lora.atomic.clean_stale_temporaries`)."""

    folder: str
    removed: tuple[str, ...]
    freed_bytes: int

    @property
    def message(self) -> str:
        return (f"removed {len(self.removed)} stale temporar{'y' if len(self.removed) == 1 else 'ies'} of killed "
                f"exports from {self.folder}, freed {self.freed_bytes / 1e6:.1f} MB")


def clean_stale_temporaries(folder: str | Path, reporter: Reporter = NullReporter()) -> atomic.Cleaned:
    """Remove what killed exports left in ``folder`` and report it (an event, a log line)."""
    cleaned = atomic.clean_stale_temporaries(folder)
    if cleaned.removed:
        event = StaleTemporariesRemoved(str(cleaned.folder), cleaned.removed, cleaned.freed_bytes)
        logging.getLogger(__name__).info(event.message)
        reporter.emit(event)
    return cleaned


@dataclasses.dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    format: str
    quantize: int | str | None
    files: tuple[str, ...]
    checks: tuple[ExportVerified, ...]
    pushed_url: str | None
    notes: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


class ExportVerificationFailed(UserError):
    """The export did not reproduce base+adapter; nothing was written."""

    def __init__(self, out_dir: Path, checks: list[ExportVerified], quantize: int | str | None = None) -> None:
        self.checks = checks
        lines = [f"{c.check}: {'; '.join(c.problems)}" for c in checks if not c.passed]
        what = f"{quantize} bits" if isinstance(quantize, int) else quantize
        milder = quantize != 8 and quantize not in ("bf16", "q8_0")
        hint = (f"\nQuantising to {what} changes this model more than the fine-tune did; export it "
                "unquantised" + (" or with --quantize 8" if milder else "") + "." if quantize else "")
        super().__init__(f"the export to {out_dir} failed its check, so it was not written:\n  "
                         + "\n  ".join(lines) + hint)


@dataclasses.dataclass(frozen=True)
class ExportFailed(Event):
    """The export ended with a named error (``reason``, as the CLI prints it); nothing was written."""

    out_dir: str
    reason: str


def _write_error(exc: BaseException) -> str | None:
    """What a failed write says, in words; None for an exception that is no write error."""
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"the disk is full ({exc.strerror or exc})"
        return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    if isinstance(exc, RuntimeError) and "Unable to write" in str(exc):
        # MLX's own writer (mx.save_safetensors / mx.save_gguf) says no more than this
        return f"the disk is full or the file could not be written (MLX: {exc})"
    return None


class ExportWriteFailed(UserError):
    """Writing the export failed (a full disk…); its temporary folder was removed."""

    def __init__(self, out_dir: Path, what: str) -> None:
        advice = "free some space" if what.startswith("the disk is full") else "fix that"
        super().__init__(f"{out_dir}: the export could not be written: {what}; nothing of it was kept (its "
                         f"temporary folder was removed) — {advice} and export again")


def _megabytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def estimated_bytes(fmt: ExportFormat, files, base_dir: Path, quantize: int | str | None) -> int:
    """About how much disk the export takes while it is written (its files and scratch)."""
    return fmt.estimated_bytes(files, base_dir, quantize)


def check_free_space(out_dir: Path, need: int) -> None:
    """A UserError when the disk that ``out_dir`` will be on has less than ``need`` bytes free."""
    folder = next(p for p in (out_dir.parent, *out_dir.parent.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if free < need:
        raise UserError(f"{out_dir}: not enough free space for this export: it needs about {_megabytes(need)} and "
                        f"{folder} has {_megabytes(free)} free — free some space, or export to another disk")


class _Steps:
    """Progress events and the cancel check between the stages of one export."""

    def __init__(self, reporter: Reporter, should_stop: Callable[[], bool], total: int) -> None:
        self.reporter, self.should_stop, self.total, self.done = reporter, should_stop, total, 0

    def __call__(self, message: str) -> None:
        if self.should_stop():
            raise Cancelled("export cancelled")
        self.reporter.emit(Progress("export", message, self.done, self.total))
        self.done += 1


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    format: str = DEFAULT_FORMAT,  # noqa: A002  (the CLI's --format)
    quantize: int | str | None = None,
    push: str | None = None,
    reporter: Reporter = NullReporter(),
    should_stop: Callable[[], bool] = never_stop,
    **options: Any,
) -> ExportResult:
    """Export the adapter of ``run_dir`` (a run, its ``best/`` or ``checkpoints/step-N/``)
    to ``out_dir`` in ``format`` (a name of :data:`~mlx_lora.export.formats.FORMATS`);
    ``options`` are :func:`_export_run`'s keywords. A named error (a UserError) is also an
    :class:`ExportFailed` event, the last the reporter gets."""
    try:
        return _export_run(run_dir, out_dir, format, quantize, push, reporter, should_stop, **options)
    except UserError as exc:
        reporter.emit(ExportFailed(str(out_dir), str(exc)))
        raise


def _export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    format: str = DEFAULT_FORMAT,  # noqa: A002  (the CLI's --format)
    quantize: int | str | None = None,
    push: str | None = None,
    reporter: Reporter = NullReporter(),
    should_stop: Callable[[], bool] = never_stop,
    *,
    private: bool = True,
    fuse: Callable[[Any], None] = fuse_adapters,
    prompts: tuple[str, ...] = PROMPTS,
    torch_python: str | None = "auto",
    hub_api=None,
    imatrix: bool = False,
) -> ExportResult:
    """:func:`export_run`'s work. ``fuse`` merges the adapter layers in place (tests pass a broken one to see the check
    fail); ``torch_python``: "auto" finds a Python with torch+transformers+peft for the
    real PEFT/transformers check (see :mod:`mlx_lora.export.torch_check`), None skips it;
    ``imatrix``: quantise with an importance matrix from the run's training data (GGUF K-quants).
    """
    from mlx_lora.chat.model import load_chat_model
    from mlx_lora.chat.session import ChatSession
    from mlx_lora.export import torch_check
    from mlx_lora.models.local import resolve_model

    fmt = format_for(format)
    _check_quantize(fmt, quantize)
    if imatrix and not fmt.takes_imatrix(quantize):
        raise UserError(f"--imatrix applies to llama.cpp's K-quants (--format gguf --quantize q6_k, q5_k_m or "
                        f"q4_k_m), not to --format {fmt.name}" + (f" --quantize {quantize}" if quantize else ""))
    files = resolve_adapter(run_dir)
    out_dir = check_destination(out_dir, files)  # before anything is loaded or written
    clean_stale_temporaries(out_dir.parent, reporter)  # where this export's own temporaries will be
    base_spec = files.base_model()
    if base_spec is None:
        raise UserError(f"{files.weights.parent}: the adapter does not say which base model it belongs to")
    python = torch_check.torch_python() if torch_python == "auto" else torch_python
    step = _Steps(reporter, should_stop, total=1 + fmt.stages(python) + bool(push))

    step(f"loading {base_spec} with the adapter {files.label}")
    base_dir = resolve_model(base_spec, reporter)
    check_destination(out_dir, files, [base_dir])  # the base's folder is known now (a Hub id's cache…)
    check_free_space(out_dir, estimated_bytes(fmt, files, base_dir, quantize))
    reference = load_chat_model(base_spec, files, compute_dtype="float32", reporter=reporter)
    session = ChatSession(reference.model, reference.tokenizer)
    prompt_ids = verify.prompt_token_ids(session, prompts)
    reference_logits = verify.reference_from_model(reference.model)
    notes = [f"checked in float32 against the base as the run trained on it ({'; '.join(reference.notes)})"] \
        if reference.notes else []
    if base_spec == "demo" and fmt.fused:
        notes.append(f"the base is the app's embedded 4-bit (Q4_1) GGUF of {DEMO_REPO}, dequantised before fusing")
    run_config = files.run_config()
    trained_base = provenance.trained_base(base_spec, base_dir, hub_id(base_spec),
                                           run_config.to_dict() if run_config else None)
    written: list[str] = []
    try:
        with atomic.atomic_dir(out_dir) as tmp:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # a temporary folder is private (0700); the export is an ordinary folder
            ctx = ExportContext(
                files=files, base_spec=base_spec, base_dir=base_dir, reference=reference, session=session,
                prompt_ids=prompt_ids, reference_logits=reference_logits, folder=tmp, out_dir=out_dir,
                quantize=quantize, step=step, should_stop=should_stop, reporter=reporter, fuse=fuse,
                torch_python=python, notes=notes, imatrix=imatrix, trained_base=trained_base)
            fmt.write(ctx)
            checks = ctx.checks

            written = sorted(p.name for p in tmp.iterdir()) + ["README.md", "verification.json"]
            summary = {
                "format": format, "quantize": quantize, "passed": all(c.passed for c in checks),
                "base_model": base_model_name(base_spec), "base_model_trained_on": trained_base,
                "adapter": str(files.weights.parent),
                "prompts": list(prompts), "checks": [c.to_dict() for c in checks], "notes": list(notes),
                "created_by": f"mlx-lora-studio {__version__}",
            }
            (tmp / "verification.json").write_text(json.dumps(summary, indent=2))
            from mlx_lora.export.card import model_card

            (tmp / "README.md").write_text(model_card(
                fmt=fmt, base_model=base_model_name(base_spec), adapter_config=files.config,
                run_config=run_config.to_dict() if run_config else {}, run_dir=files.run_dir,
                checks=[c.to_dict() for c in checks],
                files=sorted(written), quantize=quantize, repo=push or out_dir.name, notes=notes,
                trained_base=trained_base), encoding="utf-8")
            if not all(c.passed for c in checks):
                raise ExportVerificationFailed(out_dir, checks, quantize)
    except (OSError, RuntimeError) as exc:
        what = _write_error(exc)
        if what is None:
            raise
        raise ExportWriteFailed(out_dir, what) from exc

    pushed = None
    if push:
        from mlx_lora.export.push import push_folder

        step(f"pushing to {push}")
        pushed = push_folder(out_dir, push, private=private, api=hub_api)
    result = ExportResult(out_dir, format, quantize, tuple(sorted(written)), tuple(checks), pushed, tuple(notes))
    reporter.emit(Progress("export", "done", step.total, step.total))
    reporter.emit(ExportFinished(str(out_dir), format, quantize, result.files, result.passed, pushed))
    return result


def _check_quantize(fmt: ExportFormat, quantize: int | str | None) -> None:
    if quantize in fmt.quantize:
        missing = fmt.requirement(quantize)
        if missing:
            raise UserError(missing)
        return
    allowed = [q for q in fmt.quantize if q]
    raise UserError(f"--quantize {quantize} does not apply to the {fmt.name} format"
                    + (f" (it takes {' or '.join(map(str, allowed))})" if allowed else
                       f" (it is exported unquantised; --format {' or '.join(quantizable())} can be quantised)"))
