"""The Data page's controller: checks a dataset (every line), loads the selected
model's tokenizer (never its weights), computes token statistics, renders
previews through the chat template, and sizes the train/valid/test split.
All engine work (``mlx_lora.data``) runs in :class:`Job` workers."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.controllers.app_state import AppState
from app.jobs.workers import Job


def _scan(reporter, should_stop, path: str):
    from mlx_lora.data.validate import scan_dataset

    return scan_dataset(path)


def _load_tokenizer(reporter, should_stop, spec: str):
    from mlx_lm.tokenizer_utils import load
    from mlx_lm.utils import load_config

    from mlx_lora.models.local import resolve_model

    folder = resolve_model(spec, reporter=reporter)
    return load(folder, eos_token_ids=load_config(folder).get("eos_token_id"))


def _stats(reporter, should_stop, tokenizer, records, max_seq_length: int, mask_prompt: bool):
    from mlx_lora.data.stats import dataset_stats

    return dataset_stats(tokenizer, records, max_seq_length, mask_prompt, should_stop=should_stop)


def _preview(reporter, should_stop, tokenizer, record, mask_prompt: bool):
    """[Span], or for a preference pair ([Span] of chosen, [Span] of rejected), or for a prompt
    record {"spans": [Span], "fields": {the reward fields}}."""
    from mlx_lora.data.records import PREFERENCE, PROMPT, record_format
    from mlx_lora.data.render import preview

    if record_format(record) == PREFERENCE:
        from mlx_lora.data.pairs import preview_pair

        return preview_pair(tokenizer, record)
    if record_format(record) == PROMPT:  # grpo: the prompt as the model sees it, and what the rewards read
        from mlx_lora.data.prompts import reward_fields

        return {"spans": preview(tokenizer, record, mask_prompt), "fields": reward_fields(record)}
    return preview(tokenizer, record, mask_prompt)


def read_line(file: str, line: int, limit: int = 20_000) -> str:
    """Line ``line`` (1-based) of ``file``, cut at ``limit`` characters."""
    try:
        with open(file, encoding="utf-8", errors="replace") as handle:
            for number, text in enumerate(handle, 1):
                if number == line:
                    text = text.rstrip("\n")
                    return text if len(text) <= limit else text[:limit] + " …"
    except OSError as exc:
        return f"(cannot read {file}: {exc})"
    return "(no such line)"


class DataController(QObject):
    dataset_checked = Signal(object, dict)  # DatasetReport, {file name: records}
    stats_computed = Signal(object)  # DatasetStats of the training records
    preview_rendered = Signal(int, list)  # record index, [Span]
    pair_preview_rendered = Signal(int, list, list)  # record index, [Span] of chosen, [Span] of rejected
    prompt_preview_rendered = Signal(int, list, dict)  # record index, [Span] of the prompt, its reward fields
    tokenizer_loading = Signal(str)  # model label
    busy_changed = Signal(bool)
    failed = Signal(str)

    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self.report = None
        self.records: dict[str, list[dict]] = {}
        self.max_seq_length = 2048
        self.mask_prompt = True
        self.valid_ratio = 0.1
        self.test_ratio = 0.0
        self.seed = 0
        self._tokenizer = None
        self._tokenizer_spec = ""
        self._loading_spec = ""
        self._waiting: list = []  # callbacks waiting for the tokenizer being loaded
        self._jobs: dict[str, Job] = {}
        state.model_selected.connect(self._on_model_selected)

    # -- jobs ----------------------------------------------------------------------
    def _run(self, kind: str, function, *args, on_finished) -> None:
        old = self._jobs.pop(kind, None)
        if old is not None:
            old.cancel()
        job = Job(function, *args, name=kind)
        job.finished.connect(on_finished)
        job.failed.connect(self.failed)
        job.done.connect(lambda: self._on_job_done(kind, job))
        self._jobs[kind] = job
        self.busy_changed.emit(True)
        job.start()

    def _on_job_done(self, kind: str, job: Job) -> None:
        if self._jobs.get(kind) is job:
            del self._jobs[kind]
        self.busy_changed.emit(bool(self._jobs))

    def is_busy(self) -> bool:
        return bool(self._jobs)

    # -- actions -------------------------------------------------------------------
    def open(self, path: str) -> None:
        self.state.select_dataset(path)
        self._run("scan", _scan, path, on_finished=self._on_scanned)

    def line_text(self, file: str, line: int) -> str:
        return read_line(file, line)

    @property
    def training_records(self) -> list[dict]:
        if not self.records:
            return []
        return self.records.get("train.jsonl") or next(iter(self.records.values()))

    def split_sizes(self) -> tuple[int, int, int]:
        from mlx_lora.data.dataset import split_sizes

        return split_sizes(len(self.training_records), self.valid_ratio, self.test_ratio)

    def set_split(self, valid_ratio: float, test_ratio: float, seed: int) -> None:
        self.valid_ratio, self.test_ratio, self.seed = valid_ratio, test_ratio, seed

    def set_max_seq_length(self, value: int) -> None:
        self.max_seq_length = value
        self.compute_stats()

    def set_mask_prompt(self, value: bool) -> None:
        self.mask_prompt = value
        self.compute_stats()

    def compute_stats(self) -> None:
        records = self.training_records
        if not records:
            return
        self._with_tokenizer(lambda tok: self._run(
            "stats", _stats, tok, records, self.max_seq_length, self.mask_prompt,
            on_finished=self.stats_computed.emit))

    def render_preview(self, index: int) -> None:
        records = self.training_records
        if not 0 <= index < len(records):
            return
        record = records[index]
        self._with_tokenizer(lambda tok: self._run(
            "preview", _preview, tok, record, self.mask_prompt,
            on_finished=lambda spans: self._on_preview_done(index, spans)))

    def _on_preview_done(self, index: int, spans) -> None:
        if isinstance(spans, dict):  # a prompt record (grpo)
            self.prompt_preview_rendered.emit(index, list(spans["spans"]), dict(spans["fields"]))
        elif isinstance(spans, tuple):  # a preference pair
            self.pair_preview_rendered.emit(index, list(spans[0]), list(spans[1]))
        else:
            self.preview_rendered.emit(index, list(spans))

    # -- internals -----------------------------------------------------------------
    def _with_tokenizer(self, then) -> None:
        """Call ``then(tokenizer)`` once the selected model's tokenizer is loaded (loaded once)."""
        spec = self.state.model
        if self._tokenizer is not None and self._tokenizer_spec == spec:
            then(self._tokenizer)
            return
        self._waiting.append(then)
        if "tokenizer" in self._jobs and self._loading_spec == spec:
            return
        self._loading_spec = spec
        self.tokenizer_loading.emit(self.state.model_label)

        def loaded(tokenizer) -> None:
            self._tokenizer, self._tokenizer_spec = tokenizer, spec
            waiting, self._waiting = self._waiting, []
            for callback in waiting:
                callback(tokenizer)

        self._run("tokenizer", _load_tokenizer, spec, on_finished=loaded)

    def _on_scanned(self, result) -> None:
        self.report, self.records = result
        self.dataset_checked.emit(self.report, self.records)
        if self.records:
            self.compute_stats()
            self.render_preview(0)

    def _on_model_selected(self, _spec: str) -> None:
        self._tokenizer = None
        self._waiting = []
        if self.records:
            self.compute_stats()
            self.render_preview(0)

    @staticmethod
    def display_name(path: str) -> str:
        return Path(path).name or path
