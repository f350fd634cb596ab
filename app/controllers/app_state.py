"""What the user has chosen so far, shared by the pages: the model, the dataset, and the one
training config (:class:`mlx_lora.config.TrainConfig`) that every page edits or shows.

There is one config in the app: the Train page's form, the Data page's split / length /
prompt-masking controls and the Models page's choice all change it here, and each page
follows :attr:`AppState.config_changed`, so no page keeps settings (or defaults) of its own.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal

from mlx_lora.config import TrainConfig


class AppState(QObject):
    model_selected = Signal(str)  # a model spec: "demo", a folder, a .gguf path or org/name
    dataset_selected = Signal(str)  # a JSONL file or a dataset folder
    config_changed = Signal(object)  # the new TrainConfig (any setting: from any page)
    data_problems_changed = Signal(str)  # what is wrong with the chosen dataset ("" when nothing known)
    data_lengths_changed = Signal()  # the chosen dataset's token lengths became known (or unknown)

    def __init__(self) -> None:
        super().__init__()
        self.model = "demo"  # the embedded model works offline, so it is always a valid choice
        self.model_label = "SmolLM2-135M-Instruct (demo)"
        self.dataset = ""
        self.config = TrainConfig()
        self.data_problems = ""
        # (token lengths of the training examples, their trained tokens) under the selected
        # model's tokenizer, from the Data page's statistics: "Will it fit?" estimates the
        # widest pass of the real data instead of batch_size × max_seq_length
        self.data_lengths: tuple[list[int], int] | None = None

    def select_model(self, spec: str, label: str = "") -> None:
        self._set(self.config.replace(model=spec), model_label=label or spec, announce=("model",))

    def select_dataset(self, path: str) -> None:
        self._set(self.config.replace(data=path), announce=("data",))

    def update_config(self, **settings: Any) -> TrainConfig:
        """Change settings by their flat names (validated: a UserError names a bad one)."""
        self._set(self.config.replace(**settings))
        return self.config

    def set_config(self, config: TrainConfig) -> None:
        """The whole config at once (the Train form, a loaded YAML file)."""
        self._set(config)

    def set_data_problems(self, path: str, problems: str) -> None:
        """What the Data page's check found wrong with ``path`` ("" when it is fine); kept only
        while ``path`` is the chosen dataset, so Start can refuse it with the problems named."""
        if path != self.dataset or problems == self.data_problems:
            return
        self.data_problems = problems
        self.data_problems_changed.emit(problems)

    def set_data_lengths(self, path: str, lengths: list[int], trained_tokens: int) -> None:
        """The Data page's statistics of ``path``'s training examples; kept while it is the chosen dataset."""
        if path != self.dataset:
            return
        self.data_lengths = (list(lengths), int(trained_tokens))
        self.data_lengths_changed.emit()

    def _set(self, config: TrainConfig, model_label: str = "", announce: tuple[str, ...] = ()) -> None:
        """Keep ``config``; say what changed: config_changed, then model_selected / dataset_selected
        when the model or dataset changed (or was chosen again: ``announce``)."""
        model_changed = config.model.model != self.model
        dataset_changed = config.data.data != self.dataset
        changed = config != self.config
        self.config, self.model, self.dataset = config, config.model.model, config.data.data
        if model_label or model_changed:
            self.model_label = model_label or self.model  # typed into the form: its spec is its name
        if dataset_changed and self.data_problems:  # the check was of the dataset before
            self.data_problems = ""
            self.data_problems_changed.emit("")
        if (dataset_changed or model_changed) and self.data_lengths is not None:  # another dataset or tokenizer
            self.data_lengths = None
            self.data_lengths_changed.emit()
        if changed:
            self.config_changed.emit(config)
        if model_changed or "model" in announce:
            self.model_selected.emit(self.model)
        if dataset_changed or "data" in announce:
            self.dataset_selected.emit(self.dataset)
