"""Runs: every training run with its settings and curves (coming)."""

from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.widgets.common import ComingSoon

TITLE = "Runs"
SUBTITLE = "Every training run, its settings and its loss curves."


class RunsPage(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(ComingSoon("Run history", [
            "list past runs with their model, dataset, steps and best validation loss",
            "compare loss curves of several runs",
            "resume a stopped run, or open a checkpoint in Chat or Export",
        ], "Runs are kept in the app's runs folder (see Settings)."))
