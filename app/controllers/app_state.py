"""What the user has chosen so far, shared by the pages: the model and the dataset."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class AppState(QObject):
    model_selected = Signal(str)  # a model spec: "demo", a folder, a .gguf path or org/name
    dataset_selected = Signal(str)  # a JSONL file or a dataset folder

    def __init__(self) -> None:
        super().__init__()
        self.model = "demo"  # the embedded model works offline, so it is always a valid choice
        self.model_label = "SmolLM2-135M-Instruct (demo)"
        self.dataset = ""

    def select_model(self, spec: str, label: str = "") -> None:
        self.model, self.model_label = spec, label or spec
        self.model_selected.emit(spec)

    def select_dataset(self, path: str) -> None:
        self.dataset = path
        self.dataset_selected.emit(path)
