"""The Models page's controller: the local model list, opening a folder, importing
a GGUF file, the Hugging Face Hub (search, download, cache) when
``mlx_lora.models.hub`` is there, and "will it fit": the engine's estimate of the
memory a training run needs (:func:`mlx_lora.train.memory.estimate_training_memory`)
against this computer's memory. Every engine call runs in a :class:`Job`."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.controllers.app_state import AppState
from app.jobs.workers import Job


@dataclass(frozen=True)
class ModelEntry:
    """One model the user can pick. ``spec`` is what the engine resolves (see models.local)."""

    name: str
    spec: str
    source: str  # "demo", "imported", "folder" or "hub"
    size_bytes: int = 0
    path: str = ""
    note: str = ""


@dataclass(frozen=True)
class FitEstimate:
    """Will training ``model`` with these settings fit in this computer's memory?"""

    model: str
    verdict: str  # "fits", "tight" (fits, but without the headroom the OS and the app need), "too big" or "unknown"
    needed_bytes: int = 0
    available_bytes: int = 0
    batch: tuple[int, int] = (0, 0)  # (rows, tokens) of the largest batch the estimate is for
    breakdown: str = ""  # the engine's one-line description, largest parts first
    problem: str = ""  # why there is no estimate (verdict "unknown")
    limit_source: str = ""  # where available_bytes, the run's memory limit, comes from (train/memory_guard.py)
    from_data: bool = False  # batch is the widest pass of the loaded dataset (not batch_size × max_seq_length)


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def hub_available() -> bool:
    return importlib.util.find_spec("mlx_lora.models.hub") is not None


def list_local_models(reporter, should_stop) -> list[ModelEntry]:
    """The demo model, the imported models and the Hub cache."""
    from mlx_lora import paths
    from mlx_lora.models import demo

    entries = []
    demo_folder = paths.models_dir() / demo.DEMO_NAME
    if (demo_folder / "config.json").exists():
        entries.append(ModelEntry("SmolLM2-135M-Instruct (demo)", "demo", "demo", _folder_size(demo_folder),
                                  str(demo_folder), "built in · works offline"))
    else:
        entries.append(ModelEntry("SmolLM2-135M-Instruct (demo)", "demo", "demo", 0, "",
                                  "built in · imported on first use"))
    for folder in sorted(paths.models_dir().iterdir()):
        if folder.name == demo.DEMO_NAME or not (folder / "config.json").is_file():
            continue
        entries.append(ModelEntry(folder.name, str(folder), "imported", _folder_size(folder), str(folder)))
    if hub_available():
        from mlx_lora.models import hub

        for cached in hub.list_cached():
            entries.append(ModelEntry(cached.repo_id, cached.repo_id, "hub", cached.size_bytes,
                                      str(getattr(cached, "path", ""))))
    return entries


def _open_folder(reporter, should_stop, folder: str) -> ModelEntry:
    from mlx_lora.models.local import check_model_folder

    path = check_model_folder(Path(folder))
    return ModelEntry(path.name, str(path), "folder", _folder_size(path), str(path))


def _plan_import(reporter, should_stop, gguf: str):
    """(path, ImportPlan): how the GGUF will be imported and the memory it will take
    (header only; a K-quant file is dequantised)."""
    from mlx_lora.models.gguf import import_plan

    return gguf, import_plan(gguf)


def _import_gguf(reporter, should_stop, gguf: str) -> ModelEntry:
    from mlx_lora.models.local import resolve_model

    folder = resolve_model(gguf, reporter=reporter, should_stop=should_stop)
    return ModelEntry(folder.name, str(folder), "imported", _folder_size(folder), str(folder))


def _search(reporter, should_stop, query: str, sort: str, limit: int):
    """(query, results, "") — or (query, [], why) when the Hub cannot be reached: being offline
    is a state the page shows (with Retry), not an error dialog."""
    from mlx_lora.models import hub

    try:
        return query, hub.search_models(query, sort=sort, limit=limit), ""
    except hub.HubUnreachable as exc:
        return query, [], str(exc)


def _details(reporter, should_stop, repo_id: str):
    from mlx_lora.models import hub

    return hub.model_details(repo_id)


def _download(reporter, should_stop, repo_id: str):
    from mlx_lora.models import hub

    return hub.download_model(repo_id, reporter=reporter, should_stop=should_stop)


def _estimate_fit(reporter, should_stop, model: str, config, data_lengths=None) -> FitEstimate:
    """The engine's estimate for ``config`` (the Train page's settings; None: the engine's
    defaults) with ``model`` as the base. Reads the model's config.json or GGUF header only.
    ``data_lengths``: (token lengths, trained tokens) of the dataset's training examples
    (AppState.data_lengths): the estimate is then for the widest pass that data makes."""
    from mlx_lora import backend, paths
    from mlx_lora.config import TrainConfig
    from mlx_lora.errors import UserError
    from mlx_lora.models import demo
    from mlx_lora.train.memory import estimate_training_memory, largest_pass, read_model_shape

    from mlx_lora.train.memory_guard import MemoryGuard, device_memory

    config = (config or TrainConfig()).replace(model=model)
    # The run's own limit (the memory guard stops a step past it), beside the estimate.
    guard = MemoryGuard.for_config(config)
    available, device_total = guard.limit, device_memory()[0]
    shape_source = model
    if model == "demo" and (paths.models_dir() / demo.DEMO_NAME / "config.json").is_file():
        # The imported demo folder is what training loads, and its config.json reads in a
        # millisecond; the GGUF's header (the estimator's source for "demo") takes seconds of
        # Python to parse (its 49k-token vocabulary): 3-5 s on a 2-core CPU.
        shape_source = str(paths.models_dir() / demo.DEMO_NAME)
    try:
        batch, share = largest_pass(data_lengths[0], config, data_lengths[1]) if data_lengths else (None, 1.0)
        estimate = estimate_training_memory(config, shape=read_model_shape(shape_source), batch_tokens=batch,
                                            trained_share=share)
    except UserError as exc:
        return FitEstimate(model, "unknown", available_bytes=available, problem=str(exc))
    except (KeyError, TypeError, ValueError) as exc:  # a config.json of a shape the estimator does not know
        return FitEstimate(model, "unknown", available_bytes=available,
                           problem=f"the estimator cannot read this model's shape ({type(exc).__name__}: {exc})")
    needed = estimate.total_bytes
    if not available:
        verdict = "unknown"
    elif estimate.fits(available, headroom=1.0):
        verdict = "fits"
    else:  # over the guard's limit: within the device's memory it may still run with a higher limit
        verdict = "tight" if needed <= device_total else "too big"
    return FitEstimate(model, verdict, needed, available, tuple(estimate.batch), estimate.describe(),
                       limit_source=guard.source, from_data=bool(data_lengths))


def _delete_cached(reporter, should_stop, repo_id: str):
    from mlx_lora.models import hub

    hub.delete_cached(repo_id)
    return repo_id


class ModelsController(QObject):
    models_listed = Signal(list)  # [ModelEntry]
    model_opened = Signal(object)  # ModelEntry
    import_planned = Signal(str, object)  # GGUF path, ImportPlan (mlx_lora.models.gguf_tensors)
    progressed = Signal(str, float, float)  # message, done, total (total 0 = unknown)
    search_finished = Signal(str, list)  # query, [ModelSummary]
    search_offline = Signal(str, str)  # query, why (the Hub cannot be reached)
    details_loaded = Signal(object)
    download_finished = Signal(str)  # repo id
    fit_estimated = Signal(object)  # FitEstimate, for the latest request only
    busy_changed = Signal(bool)
    failed = Signal(str)
    cancelled = Signal(str)  # the kind of job ("import", "download") that stopped on Cancel; nothing was written

    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self._jobs: dict[str, Job] = {}  # one per kind of work; a newer search replaces the older
        self._fit_request = 0

    @property
    def hub_available(self) -> bool:
        return hub_available()

    def is_busy(self, kind: str) -> bool:
        return kind in self._jobs

    def _run(self, kind: str, function, *args, on_finished=None) -> Job:
        old = self._jobs.pop(kind, None)
        if old is not None:
            old.cancel()
        job = Job(function, *args, name=kind)
        job.event_emitted.connect(self._on_job_event)
        if on_finished is not None:
            job.finished.connect(on_finished)
        job.failed.connect(self.failed)
        job.cancelled.connect(lambda: self.cancelled.emit(kind))
        job.done.connect(lambda: self._on_job_done(kind, job))
        self._jobs[kind] = job
        self.busy_changed.emit(True)
        job.start()
        return job

    def _on_job_done(self, kind: str, job: Job) -> None:
        if self._jobs.get(kind) is job:
            del self._jobs[kind]
        self.busy_changed.emit(bool(self._jobs))

    def _on_job_event(self, event) -> None:
        kind = getattr(event, "kind", "")
        if kind == "progress":
            self.progressed.emit(event.message, float(event.done), float(event.total))
        elif kind == "download_progress":
            self.progressed.emit(f"{event.repo_id}: {event.filename}", float(event.bytes_done),
                                 float(event.bytes_total))

    # -- actions -------------------------------------------------------------------
    def refresh(self) -> None:
        self._run("list", list_local_models, on_finished=self.models_listed.emit)

    def select(self, entry: ModelEntry) -> None:
        self.state.select_model(entry.spec, entry.name)

    def open_folder(self, folder: str) -> None:
        self._run("open", _open_folder, folder, on_finished=self._on_model_opened)

    def plan_import(self, gguf: str) -> None:
        """Read the GGUF's header: ``import_planned`` says what importing it will cost, first."""
        self._run("plan", _plan_import, gguf, on_finished=lambda result: self.import_planned.emit(*result))

    def import_gguf(self, gguf: str) -> None:
        self._run("import", _import_gguf, gguf, on_finished=self._on_model_opened)

    def cancel(self, kind: str) -> None:
        job = self._jobs.get(kind)
        if job is not None:
            job.cancel()

    def search(self, query: str, sort: str = "downloads", limit: int = 50) -> None:
        self._run("search", _search, query, sort, limit, on_finished=self._on_searched)

    def _on_searched(self, result) -> None:
        query, results, offline = result
        if offline:
            self.search_offline.emit(query, offline)
        else:
            self.search_finished.emit(query, list(results))

    def load_details(self, repo_id: str) -> None:
        self._run("details", _details, repo_id, on_finished=self.details_loaded.emit)

    def download(self, repo_id: str) -> None:
        self._run("download", _download, repo_id,
                  on_finished=lambda _path: (self.download_finished.emit(repo_id), self.refresh()))

    def delete_cached(self, repo_id: str) -> None:
        self._run("delete", _delete_cached, repo_id, on_finished=lambda _r: self.refresh())

    def estimate_fit(self, model: str, config=None) -> None:
        """Estimate the memory a run of ``config`` (a TrainConfig; None: the defaults) needs
        with ``model`` as its base; ``fit_estimated`` answers the latest request only."""
        self._fit_request += 1
        request = self._fit_request
        self._run("fit", _estimate_fit, model, config, self.state.data_lengths,
                  on_finished=lambda estimate: request == self._fit_request and self.fit_estimated.emit(estimate))

    def _on_model_opened(self, entry: ModelEntry) -> None:
        self.model_opened.emit(entry)
        self.select(entry)
        self.refresh()
