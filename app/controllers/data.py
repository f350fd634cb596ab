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


def _stats(reporter, should_stop, tokenizer, records, max_seq_length: int, mask_prompt: bool,
           chat_template: str = "model"):
    from mlx_lora.data.stats import dataset_stats
    from mlx_lora.data.template import use_chat_template

    use_chat_template(tokenizer, chat_template)  # the config's template, as training renders

    return dataset_stats(tokenizer, records, max_seq_length, mask_prompt, should_stop=should_stop)


def _preview(reporter, should_stop, tokenizer, record, mask_prompt: bool, chat_template: str = "model"):
    """[Span], or for a preference pair ([Span] of chosen, [Span] of rejected), or for a prompt
    record {"spans": [Span], "fields": {the reward fields}}; rendered with the config's template."""
    from mlx_lora.data.records import PREFERENCE, PROMPT, record_format
    from mlx_lora.data.render import preview
    from mlx_lora.data.template import use_chat_template

    use_chat_template(tokenizer, chat_template)

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


def problems_text(report) -> str:
    """The dataset's problems in one line for refusing Start ("" when there are none)."""
    if report.ok:
        return ""
    problems = report.problems
    first = problems[0]
    where = f"{Path(first.file).name} {first.line}: " if first.line else f"{Path(first.file).name}: "
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in the dataset — {where}{first.reason}{more}"


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
        self._tokenizer = None
        self._tokenizer_spec = ""
        self._loading_spec = ""
        self._waiting: list = []  # callbacks waiting for the tokenizer being loaded
        self._jobs: dict[str, Job] = {}
        self._preview_index = 0
        state.model_selected.connect(self._on_model_selected)
        state.config_changed.connect(self._on_config_changed)
        self._shown = self._shown_settings(state.config)

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
        self._run("scan", _scan, path, on_finished=lambda result: self._on_scanned(result, path))

    def line_text(self, file: str, line: int) -> str:
        return read_line(file, line)

    @property
    def training_records(self) -> list[dict]:
        if not self.records:
            return []
        return self.records.get("train.jsonl") or next(iter(self.records.values()))

    # the settings this page shows are the app's one TrainConfig (AppState.config)
    @property
    def max_seq_length(self) -> int:
        return self.state.config.data.max_seq_length

    @property
    def mask_prompt(self) -> bool:
        return self.state.config.data.mask_prompt

    def split_sizes(self) -> tuple[int, int, int]:
        """(train, valid, test) as training will make them: the engine's own split of the
        scanned records (a folder's valid.jsonl / test.jsonl used as they are)."""
        from mlx_lora.data.dataset import splits_of

        data = self.state.config.data
        splits = splits_of(self.report, self.records, data.valid_ratio, data.test_ratio, self.state.config.run.seed)
        return len(splits.train), len(splits.valid), len(splits.test)

    def has_own_split(self, name: str) -> bool:
        """Whether the dataset folder has its own ``valid.jsonl`` / ``test.jsonl``."""
        return self.report is not None and self.report.is_folder and name in self.records

    def update(self, **settings) -> None:
        """Change settings of the one config (split, seed, max length, prompt masking);
        a UserError names a bad value."""
        self.state.update_config(**settings)

    def compute_stats(self) -> None:
        records = self.training_records
        if not records:
            return
        self._with_tokenizer(lambda tok: self._run(
            "stats", _stats, tok, records, self.max_seq_length, self.mask_prompt, self.state.config.data.chat_template,
            on_finished=self._on_stats_computed))

    def _on_stats_computed(self, stats) -> None:
        self.state.set_data_lengths(self.state.dataset, stats.lengths, stats.trained_tokens)  # for "Will it fit?"
        self.stats_computed.emit(stats)

    def render_preview(self, index: int) -> None:
        self._preview_index = index
        records = self.training_records
        if not 0 <= index < len(records):
            return
        record = records[index]
        self._with_tokenizer(lambda tok: self._run(
            "preview", _preview, tok, record, self.mask_prompt, self.state.config.data.chat_template,
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

    def _on_scanned(self, result, path: str = "") -> None:
        self.report, self.records = result
        self.state.set_data_problems(path or self.report.path, problems_text(self.report))
        self.dataset_checked.emit(self.report, self.records)
        if self.records:
            self.compute_stats()
            self.render_preview(0)

    @staticmethod
    def _shown_settings(config) -> tuple:
        return config.data.max_seq_length, config.data.mask_prompt, config.data.chat_template

    def _on_config_changed(self, config) -> None:
        shown = self._shown_settings(config)
        if shown != self._shown:  # what the statistics and the preview depend on
            self._shown = shown
            self.compute_stats()
            self.render_preview(self._preview_index)

    def _on_model_selected(self, _spec: str) -> None:
        self._tokenizer = None
        self._waiting = []
        if self.records:
            self.compute_stats()
            self.render_preview(0)

    @staticmethod
    def display_name(path: str) -> str:
        return Path(path).name or path
