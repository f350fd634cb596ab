"""Evaluating a run from the Runs page: base vs tuned answers scored
(:func:`mlx_lora.evaluation.evaluate_generation`) in a worker, with its progress and
Cancel, and a run's saved results read back (in a worker too: it is a file read).

The rows the page shows are made here (:func:`summary_rows`, :func:`example_rows`), so
the view only puts text in cells.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from app.jobs.workers import Job


def _evaluate(reporter, should_stop, run_dir: str, settings):
    from mlx_lora.evaluation import evaluate_generation

    return evaluate_generation(run_dir, settings, reporter, should_stop)


def _read(reporter, should_stop, run_dir: str):
    from mlx_lora.evaluation import read_generation_eval

    return run_dir, read_generation_eval(run_dir)


def default_settings():
    from mlx_lora.evaluation import GenerationSettings

    return GenerationSettings()


def summary_rows(result) -> list[tuple[str, str, str, str]]:
    """(metric, base, tuned, change) rows of the summary table."""
    from mlx_lora.evaluation.results import summary_rows as rows

    return rows(result)


def default_judge_prompt() -> str:
    from mlx_lora.evaluation.judge import DEFAULT_PROMPT

    return DEFAULT_PROMPT


def example_rows(result, k: int = 3) -> list[tuple[str, ...]]:
    """The best ``k`` and worst ``k`` examples by tuned-minus-base ROUGE-L (every example, ranked,
    when there are no more than 2k): (better | worse | same, #index, ROUGE-L base → tuned,
    the judge's verdict, prompt, reference, base answer, tuned answer)."""
    ranked = result.ranked()
    shown = ranked if len(ranked) <= 2 * k else ranked[:k] + ranked[-k:]
    rows = []
    for e in shown:
        verdict = "better" if e.delta > (0, 0, 0) else "worse" if e.delta < (0, 0, 0) else "same"
        rows.append((verdict, f"#{e.index}", f"{e.base.rouge_l:.2f} → {e.tuned.rouge_l:.2f} ({e.delta[0]:+.2f})",
                     e.judge or "—", e.prompt, e.reference, e.base.text, e.tuned.text))
    return rows


class EvaluationController(QObject):
    progressed = Signal(str, int, int)  # what it is doing now, done, total (0: unknown)
    evaluation_finished = Signal(object)  # GenerationEval (already saved in the run folder)
    results_loaded = Signal(str, object)  # run folder, its saved GenerationEval or None
    failed = Signal(str)
    cancelled = Signal()
    busy_changed = Signal(bool)

    def __init__(self) -> None:
        super().__init__()
        self._job: Job | None = None
        self._read_job: Job | None = None
        self.run_dir: str | None = None  # the run being evaluated

    def is_busy(self) -> bool:
        return self._job is not None

    def evaluate(self, run_dir: str, limit: int, max_tokens: int, adapter: str = "final",
                 judge_prompt: str | None = None) -> None:
        """Start evaluating; ``judge_prompt`` given: the run's base also judges tuned vs base with it."""
        if self._job is not None:
            return
        from mlx_lora.errors import UserError
        from mlx_lora.evaluation import GenerationSettings

        try:
            settings = GenerationSettings(limit=limit, max_tokens=max_tokens, adapter=adapter,
                                          judge="base" if judge_prompt is not None else None,
                                          judge_prompt=judge_prompt)
        except UserError as exc:
            self.failed.emit(str(exc))
            return
        job = Job(_evaluate, str(run_dir), settings, name="evaluate")
        job.event_emitted.connect(self._on_event)
        job.finished.connect(lambda result: (self._on_done(), self.evaluation_finished.emit(result)))
        job.failed.connect(lambda message: (self._on_done(), self.failed.emit(message)))
        job.cancelled.connect(lambda: (self._on_done(), self.cancelled.emit()))
        self._job, self.run_dir = job, str(run_dir)
        self.busy_changed.emit(True)
        job.start()

    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def load(self, run_dir: str) -> None:
        """Read a run's saved results; ``results_loaded`` says what (None: not evaluated yet)."""
        if self._read_job is not None:
            self._read_job.cancel()  # its result is dropped
        job = Job(_read, str(run_dir), name="read evaluation")
        job.finished.connect(lambda pair: self.results_loaded.emit(*pair) if self._read_job is job else None)
        job.done.connect(lambda: setattr(self, "_read_job", None) if self._read_job is job else None)
        self._read_job = job
        job.start()

    def _on_done(self) -> None:
        if self._job is not None:
            self._job = None
            self.busy_changed.emit(False)

    def _on_event(self, event) -> None:
        if getattr(event, "kind", "") == "evaluation_progress":
            self.progressed.emit(event.message, int(event.done), int(event.total))
        elif getattr(event, "kind", "") == "progress":  # the model load's own steps
            self.progressed.emit(event.message, 0, 0)
