"""What an export format is and what it is handed: :class:`ExportFormat` (its name,
its words for the CLI, the app and the model card, its quantisations, and ``write``)
and :class:`ExportContext` (everything the generic driver in
:mod:`mlx_lora.export.exporter` has ready before a format writes: the adapter, the
base, the float32 reference it must reproduce, the temporary folder, the stage
reporter and the checks).

A format's ``write(ctx)`` writes its files into ``ctx.folder`` and checks them with
``ctx.compare`` / ``ctx.torch_compare``; the driver does the rest (validation,
verification.json, the model card, the rename into place, the push). Nothing here
imports MLX: the CLI and the app read the registry without loading a model library.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from mlx_lora.adapters import AdapterFiles
from mlx_lora.export import verify
from mlx_lora.export.verify import THRESHOLDS, ExportVerified

# What `demo` is on the Hub, for model cards and PEFT's base_model_name_or_path.
DEMO_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"


def base_model_name(spec: str) -> str:
    """The base as others should find it: the Hub id where there is one."""
    if spec == "demo":
        return DEMO_REPO
    return spec


def hub_id(spec: str) -> str | None:
    """The Hub model ``spec`` is (or, for the demo, was made from); None for a local path."""
    import re

    name = base_model_name(spec)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not Path(name).expanduser().exists():
        return name
    return None


def thresholds(dtype, quantize: int | None) -> verify.Thresholds:
    """The check's tolerances for an export stored as ``dtype`` (an mx dtype or its name),
    quantised to ``quantize`` bits or not."""
    from mlx_lora.export.fused import dtype_name

    if quantize:
        return THRESHOLDS[f"q{quantize}"]
    return THRESHOLDS.get(dtype if isinstance(dtype, str) else dtype_name(dtype), THRESHOLDS["exact"])


def fused_bytes(base_dir: Path, quantize: int | None) -> int:
    """The size of the base's weights fused back to their dtype (16 bits for a quantised
    base: config.json's ``quantization.bits``), requantised to ``quantize`` bits."""
    import json

    size = sum(p.stat().st_size for p in Path(base_dir).glob("*.safetensors"))
    try:
        bits = int((json.loads((Path(base_dir) / "config.json").read_text()).get("quantization") or {}).get("bits", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        bits = 0
    if 0 < bits < 16:
        size = size * 16 // bits
    return size * (quantize + 1) // 16 if quantize else size


@dataclasses.dataclass
class ExportContext:
    """One export in progress, as a format's ``write`` sees it."""

    files: AdapterFiles  # the resolved adapter (a run, its best/ or a checkpoint)
    base_spec: str  # the base as the adapter names it: "demo", a Hub id or a folder
    base_dir: Path  # that base's local folder
    reference: Any  # ChatModel: base+adapter in float32, what the export must reproduce
    session: Any  # ChatSession over the reference (its stop_ids end a chat turn)
    prompt_ids: list[list[int]]  # the verification prompts through the chat template
    reference_logits: Callable  # verify.reference_from_model(reference.model)
    folder: Path  # the temporary folder being written; renamed to out_dir once every check passed
    out_dir: Path  # where the export will be
    quantize: int | str | None  # a value of the format's ``quantize``
    step: Callable[[str], None]  # announce the next stage (raises Cancelled when asked to stop)
    should_stop: Callable[[], bool]
    reporter: Any
    fuse: Callable[[Any], None]  # merges the adapter layers in place (tests pass a broken one)
    torch_python: str | None  # a Python with torch+transformers+peft, or None
    imatrix: bool = False  # quantise with an importance matrix from the run's training data (GGUF K-quants)
    notes: list[str] = dataclasses.field(default_factory=list)  # for the result and the model card
    checks: list[ExportVerified] = dataclasses.field(default_factory=list)
    trained_base: dict | None = None  # what the adapter was trained on (mlx_lora.export.provenance)
    _validation: Any = None

    def validation(self) -> tuple[list, str | None, tuple[float, float, int] | None]:
        """The run's validation examples (:mod:`mlx_lora.export.val_loss`), why there are none,
        and (base+adapter's loss, the base's loss, trained targets) in float32; computed once."""
        if self._validation is None:
            from mlx_lora.export.val_loss import mlx_losses, validation_examples

            examples, why = validation_examples(self.files, self.reference.tokenizer)
            if why:
                self.notes.append(f"validation loss not measured: {why}")
            self._validation = (examples, why, mlx_losses(self.reference.model, examples) if examples else None)
        return self._validation

    @property
    def base_model_name(self) -> str:
        return base_model_name(self.base_spec)

    def record(self, check: ExportVerified) -> None:
        self.checks.append(check)
        self.reporter.emit(check)

    def thresholds_for_model(self, thresholds: verify.Thresholds) -> verify.Thresholds:
        """``thresholds`` as they apply to this base (a mixture of experts: :func:`verify.for_model`)."""
        config = self.base_dir / "config.json"
        return verify.for_model(thresholds, json.loads(config.read_text()) if config.is_file() else {})

    def compare(self, check: str, export_fn, thresholds: verify.Thresholds, batch_size: int = 4,
                **figures: Any) -> ExportVerified:
        """Logits of ``export_fn`` (token-id batches → logits) against the reference, recorded;
        ``figures``: more fields of the check (its validation loss…)."""
        result = verify.compare_logits(self.reference_logits, export_fn, self.prompt_ids, check,
                                       self.thresholds_for_model(thresholds), self.should_stop, batch_size)
        result = dataclasses.replace(result, **figures)
        self.record(result)
        return result

    def torch_compare(self, check: str, base: Path, peft: Path | None, thresholds: verify.Thresholds) -> None:
        """The export loaded with transformers (and peft) on torch, in a child process; recorded
        as not run when there is no such Python."""
        import mlx.core as mx

        from mlx_lora.export import torch_check

        if self.torch_python is None:
            self.record(verify.not_run(check, "torch, transformers and peft are not installed (see "
                                              f"{torch_check.ENV_PYTHON})"))
            return
        logits = torch_check.torch_logits(self.torch_python, base, peft, self.prompt_ids)
        by_prompt = {tuple(ids): mx.array(out)[None] for ids, out in zip(self.prompt_ids, logits)}
        self.compare(check, lambda batch: by_prompt[tuple(batch[0])], thresholds, batch_size=1)

    def fused_model(self):
        """The first stage of a fused format: (model, config.json, storage dtype), the
        dequantised base with the adapter merged in by ``fuse``."""
        from mlx_lora.export.fused import fused_model

        self.step("fusing the adapter into the dequantised base")
        return fused_model(self.base_dir, self.files, self.fuse)

    @contextmanager
    def scratch(self, prefix: str) -> Iterator[Path]:
        """A folder for intermediate files, next to the export (same disk), removed after."""
        # the writer's pid in the name: a killed export's folder is known stale at once (atomic.py)
        with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-", dir=self.out_dir.parent) as path:
            yield Path(path)


class ExportFormat(abc.ABC):
    """One ``--format``. Subclass it in a module of :mod:`mlx_lora.export.formats` that
    sets ``FORMAT = YourFormat()``; the registry finds it there."""

    name: ClassVar[str]  # the --format value
    label: ClassVar[str]  # the app's combo text
    description: ClassVar[str]  # the CLI's help and the model card's "This is …"
    library: ClassVar[str]  # the model card's library_name
    order: ClassVar[int]  # its place in the CLI's choices and the app's combo
    fused: ClassVar[bool]  # the adapter merged into the base (True) or an adapter on its own
    # --quantize values it takes: bits, or a type's name (GGUF: "q4_k_m"…); None: as trained
    quantize: ClassVar[tuple[int | str | None, ...]] = (None,)
    quantize_labels: ClassVar[dict[int | str, str]] = {}  # value → the app's words, where "N-bit" is not enough

    def requirement(self, quantize: int | str | None) -> str | None:
        """Why this export cannot be made on this machine (a missing extra: what to install), or
        None. Asked before anything loads."""
        return None

    def takes_imatrix(self, quantize: int | str | None) -> bool:
        """Whether ``quantize`` can use an importance matrix (llama.cpp's K-quants)."""
        return False

    def quantize_label(self, bits: int | str | None) -> str:
        if bits is None:
            return "no (as trained)"
        return self.quantize_labels.get(bits, f"{bits}-bit")

    @property
    def tags(self) -> tuple[str, ...]:
        """The model card's tags (after the app's own)."""
        return ("fine-tuned" if self.fused else "lora", self.name)

    def estimated_bytes(self, files: AdapterFiles, base_dir: Path, quantize: int | None) -> int:
        """About how much disk writing this export takes (checked against the free space
        before anything is written). Fused: the base's weights, dequantised to 16 bits when
        the base is quantised, then quantised to ``quantize`` bits (+1 bit of scales); an
        adapter: the adapter's weights. Plus 16 MB for the tokenizer, card and configs."""
        if not self.fused:
            return files.weights.stat().st_size + 16 * 2**20
        return fused_bytes(base_dir, quantize) + 16 * 2**20

    @abc.abstractmethod
    def stages(self, torch_python: str | None) -> int:
        """How many times ``write`` calls ``ctx.step`` (for the progress bar)."""

    @abc.abstractmethod
    def write(self, ctx: ExportContext) -> None:
        """Write the export into ``ctx.folder`` and check it against ``ctx``'s reference."""

    @abc.abstractmethod
    def usage(self, repo: str, base: str, files: list[str], trained_base: dict | None = None) -> str:
        """The model card's usage snippet (markdown) for the export at ``repo`` of ``base``."""
