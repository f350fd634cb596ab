"""The Export page's controller: runs :func:`mlx_lora.export.export_run` in a worker
and re-emits its events — progress between stages, and one ``ExportVerified`` per
check of the export against base+adapter — as Qt signals.

The checks arrive before the export is renamed into place, so a failed
verification (the engine raises, and writes nothing) still shows its figures.
The formats and their quantisations on offer, with their labels, come from the
engine's registry (:mod:`mlx_lora.export.formats`).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.jobs.workers import Job

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

    def __init__(self, export_options: dict | None = None) -> None:
        """``export_options`` go to export_run as keywords (tests pass fewer ``prompts``
        and ``torch_python=None``; push tests a stand-in ``hub_api``)."""
        super().__init__()
        self.export_options = dict(export_options or {})
        self.checks: list[dict] = []
        self._job: Job | None = None

    def is_busy(self) -> bool:
        return self._job is not None

    def export(self, adapter_dir: str, out_dir: str, fmt: str, quantize: int | None = None,
               push: str | None = None, private: bool = True) -> None:
        if self._job is not None:
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
