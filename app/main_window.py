"""The main window: a sidebar of pages (Models, Data, Train, Chat, Export, Runs)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout, QLabel, QListWidget, QMainWindow, QStackedWidget, QVBoxLayout, QWidget,
)

import mlx_lora

PAGE_NAMES = ("Models", "Data", "Train", "Chat", "Export", "Runs")


class _PlaceholderPage(QWidget):
    def __init__(self, title: str) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        label = QLabel(f"<h2>{title}</h2>")
        label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(label)


class MainWindow(QMainWindow):
    def __init__(self, demo: bool = False) -> None:
        super().__init__()
        self.setWindowTitle(f"MLX LoRA Studio {mlx_lora.__version__}")
        self.resize(1200, 800)
        self.sidebar = QListWidget()
        self.sidebar.setFixedWidth(160)
        self.pages = QStackedWidget()
        for name in PAGE_NAMES:
            self.sidebar.addItem(name)
            self.pages.addWidget(_PlaceholderPage(name))
        self.sidebar.currentRowChanged.connect(self.pages.setCurrentIndex)
        self.sidebar.setCurrentRow(0)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.addWidget(self.sidebar)
        layout.addWidget(self.pages, 1)
        self.setCentralWidget(central)
