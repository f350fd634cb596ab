"""The Export page's controller: runs :func:`mlx_lora.export.export_run` in a worker
and re-emits its events — progress between stages, and one ``ExportVerified`` per
check of the export against base+adapter — as Qt signals.

The checks arrive before the export is renamed into place, so a failed
verification (the engine raises, and writes nothing) still shows its figures.
The formats and their quantisations on offer, with their labels, come from the
engine's registry (:mod:`mlx_lora.export.formats`).

After an export, the hand-offs (:mod:`mlx_lora.export.handoff`) run in a worker too
(copying a model of gigabytes into LM Studio's folder, ``ollama create``) and answer
with a :class:`HandOff`: what was done, or the exact command to run by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.jobs.workers import Job

LMSTUDIO_PUBLISHER = "mlx-lora-studio"  # the CLI's too: <models>/mlx-lora-studio/<name>/


@dataclass(frozen=True)
class HandOff:
    """The outcome of a hand-off: ``app`` "lmstudio" or "ollama"; ``done`` False when the
    user must finish it (Ollama not installed), ``command`` then says exactly how."""

    app: str
    done: bool
    message: str
    where: str = ""  # LM Studio: the model's folder
    command: str = ""  # Ollama: the command that ran, or that the user should run


def handoff_formats() -> dict[str, tuple[str, ...]]:
    """app -> the export formats it takes."""
    from mlx_lora.export import handoff

    return {"lmstudio": handoff.LMSTUDIO_FORMATS, "ollama": handoff.OLLAMA_FORMATS}


def ollama_name(name: str) -> str:
    """A model name Ollama accepts (lower case letters, digits, . _ -)."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "model"


def _send_to_lmstudio(reporter, should_stop, out_dir: str, name: str) -> HandOff:
    from mlx_lora.export import handoff

    where = handoff.send_to_lmstudio(Path(out_dir), LMSTUDIO_PUBLISHER, name)
    return HandOff("lmstudio", True, f"Sent to LM Studio: {where}", where=str(where))


def _send_to_ollama(reporter, should_stop, out_dir: str, name: str) -> HandOff:
    from mlx_lora.export import handoff

    command, ran = handoff.ollama_create(Path(out_dir), ollama_name(name))
    if ran:
        return HandOff("ollama", True, f"Created the Ollama model {ollama_name(name)}: ollama run {ollama_name(name)}",
                       command=command)
    return HandOff("ollama", False, "Ollama is not on PATH. Install it (ollama.com), then run this in a terminal:",
                   command=command)

def format_choices() -> list[tuple[str, str]]:
    """(label, --format name) of every export format, in the registry's order."""
    from mlx_lora.export.formats import FORMATS

    return [(fmt.label, name) for name, fmt in FORMATS.items()]


def quantize_choices(fmt: str) -> list[tuple[str, int | str | None]]:
    """(label, bits) of the quantisations ``fmt`` takes; None: as trained."""
    from mlx_lora.export.formats import format_for

    export_format = format_for(fmt)
    return [(export_format.quantize_label(bits), bits) for bits in export_format.quantize]


def default_out_dir(adapter_dir: str | Path, fmt: str, quantize: int | str | None) -> Path:
    """<app home>/exports/<run>[-<checkpoint>]-<format>[-q<bits>], made unique."""
    from mlx_lora import paths

    adapter_dir = Path(adapter_dir)
    name = adapter_dir.name
    if adapter_dir.name == "best" or adapter_dir.parent.name == "checkpoints":
        run = adapter_dir.parent if adapter_dir.name == "best" else adapter_dir.parent.parent
        name = f"{run.name}-{adapter_dir.name}"
    base = paths.home() / "exports" / f"{name}-{fmt}{f'-q{quantize}' if isinstance(quantize, int) else f'-{quantize}' if quantize else ''}"
    path, n = base, 2
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def _export(reporter, should_stop, adapter_dir, out_dir, fmt, quantize, push, private, options):
    from mlx_lora.export import export_run

    return export_run(adapter_dir, out_dir, fmt, quantize, push, reporter, should_stop, private=private, **options)


class ExportController(QObject):
    progressed = Signal(str, int, int)  # message, stage done, stages
    check_reported = Signal(dict)  # an ExportVerified event as a dict
    export_finished = Signal(object)  # ExportResult
    failed = Signal(str)
    cancelled = Signal()
    busy_changed = Signal(bool)
    handed_off = Signal(object)  # HandOff
    handoff_failed = Signal(str)

    def __init__(self, export_options: dict | None = None) -> None:
        """``export_options`` go to export_run as keywords (tests pass fewer ``prompts``
        and ``torch_python=None``; push tests a stand-in ``hub_api``)."""
        super().__init__()
        self.export_options = dict(export_options or {})
        self.checks: list[dict] = []
        self._job: Job | None = None
        self._handoff: Job | None = None

    def is_busy(self) -> bool:
        return self._job is not None or self._handoff is not None

    def send_to_lmstudio(self, out_dir: str, name: str) -> None:
        """Copy the export at ``out_dir`` into LM Studio's models folder as ``name``."""
        self._hand_off(_send_to_lmstudio, out_dir, name)

    def send_to_ollama(self, out_dir: str, name: str) -> None:
        """``ollama create NAME -f Modelfile`` in ``out_dir``, or the command to run."""
        self._hand_off(_send_to_ollama, out_dir, name)

    def _hand_off(self, function, out_dir: str, name: str) -> None:
        if self.is_busy():
            return
        job = Job(function, str(out_dir), name, name="handoff")

        def finish(emit, value) -> None:
            self._handoff = None
            self.busy_changed.emit(False)
            emit(value)

        job.finished.connect(lambda result: finish(self.handed_off.emit, result))
        job.failed.connect(lambda message: finish(self.handoff_failed.emit, message))
        job.cancelled.connect(lambda: finish(self.handoff_failed.emit, "the hand-off was cancelled"))
        self._handoff = job
        self.busy_changed.emit(True)
        job.start()

    def export(self, adapter_dir: str, out_dir: str, fmt: str, quantize: int | None = None,
               push: str | None = None, private: bool = True) -> None:
        if self.is_busy():
            return
        from mlx_lora.errors import UserError
        from mlx_lora.export.destination import check_destination

        try:
            check_destination(out_dir, adapter_dir)  # the engine's rule, before a worker starts
        except UserError as exc:
            self.failed.emit(str(exc))
            return
        self.checks = []
        job = Job(_export, str(adapter_dir), str(out_dir), fmt, quantize, push or None, private,
                  self.export_options, name="export")
        job.event_emitted.connect(self._on_event)
        # free before the result is heard, so a listener may export again at once
        job.finished.connect(lambda result: (self._on_done(), self.export_finished.emit(result)))
        job.failed.connect(lambda message: (self._on_done(), self.failed.emit(message)))
        job.cancelled.connect(lambda: (self._on_done(), self.cancelled.emit()))
        self._job = job
        self.busy_changed.emit(True)
        job.start()

    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def _on_done(self) -> None:
        if self._job is not None:
            self._job = None
            self.busy_changed.emit(False)

    def _on_event(self, event) -> None:
        kind = getattr(event, "kind", "")
        if kind == "progress" and event.job == "export":
            self.progressed.emit(event.message, int(event.done), int(event.total))
        elif kind == "progress":
            self.progressed.emit(event.message, -1, -1)  # a stage's own progress (a model import…)
        elif kind == "export_verified":
            check = event.to_dict()
            self.checks.append(check)
            self.check_reported.emit(check)
