"""The status bar's facts: compute device, MLX backend, BLAS and memory.

Loaded in a worker after the window shows, because asking MLX imports
``mlx.core`` (about a second on a cold start) and the window must show first.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from app.jobs.workers import Job


def backend_facts(reporter, should_stop) -> dict:
    import numpy  # noqa: F401 — warm up for the charts (0.6 s of pyqtgraph's 1.1 s import), off the GUI thread

    from mlx_lora import backend

    blas = backend.blas_status()
    return {
        "device": backend.device_kind().upper(),
        "backend": backend.backend_name(),
        "blas": blas.name,
        "memory_bytes": backend.total_memory_bytes(),
    }


class SystemController(QObject):
    facts_loaded = Signal(dict)
    facts_failed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.facts: dict | None = None
        self._job: Job | None = None

    def load_facts(self) -> None:
        if self._job is not None:
            return
        self._job = Job(backend_facts, name="backend facts")
        self._job.finished.connect(self._on_job_finished)
        self._job.failed.connect(self.facts_failed)
        self._job.start()

    def _on_job_finished(self, facts: dict) -> None:
        self.facts = facts
        self.facts_loaded.emit(facts)
