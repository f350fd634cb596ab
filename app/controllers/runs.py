"""The Runs page's controller: the run history (:mod:`mlx_lora.run_history`), read in
workers — listing reads every run's config.yaml and metrics.jsonl — the curves of
the runs a person selects, deleting a run (to the runs folder's trash), and evaluating
one (:mod:`app.controllers.evaluation`)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from app.controllers.evaluation import EvaluationController
from app.jobs.workers import Job


def _list(reporter, should_stop):
    from mlx_lora.run_history import list_runs

    return list_runs()


def _curves(reporter, should_stop, run_dirs: list[str]):
    from mlx_lora.run_history import load_run_curves

    return {run_dir: load_run_curves(run_dir) for run_dir in run_dirs}


def _delete(reporter, should_stop, run_dir: str):
    from mlx_lora.run_history import delete_run

    delete_run(run_dir)
    return run_dir


class RunsController(QObject):
    runs_listed = Signal(list)  # [RunSummary], newest first
    curves_loaded = Signal(dict)  # {run folder: {"step": […], "loss": […], "val_step": […], "val_loss": […]}}
    run_deleted = Signal(str)
    failed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.runs: list = []
        self._jobs: dict[str, Job] = {}
        self.evaluation = EvaluationController()  # the Evaluate action; its results refresh the history
        self.evaluation.evaluation_finished.connect(lambda _result: self.refresh())

    def _run(self, kind: str, function, *args, on_finished) -> None:
        old = self._jobs.pop(kind, None)
        if old is not None:
            old.cancel()  # a newer request replaces the older (its result is dropped)
        job = Job(function, *args, name=kind)
        job.finished.connect(lambda result: on_finished(result) if self._jobs.get(kind) is job else None)
        job.failed.connect(self.failed)
        job.done.connect(lambda: self._jobs.pop(kind, None) if self._jobs.get(kind) is job else None)
        self._jobs[kind] = job
        job.start()

    def is_busy(self) -> bool:
        return bool(self._jobs)

    def refresh(self) -> None:
        self._run("list", _list, on_finished=self._on_listed)

    def load_curves(self, run_dirs: list[str]) -> None:
        self._run("curves", _curves, list(run_dirs), on_finished=self.curves_loaded.emit)

    def delete(self, run_dir: str) -> None:
        self._run("delete", _delete, str(run_dir), on_finished=self._on_deleted)

    def _on_listed(self, runs: list) -> None:
        self.runs = runs
        self.runs_listed.emit(runs)

    def _on_deleted(self, run_dir: str) -> None:
        self.run_deleted.emit(run_dir)
        self.refresh()
