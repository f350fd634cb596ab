"""Export: fuse the adapter, save to MLX/safetensors or GGUF, upload (coming)."""

from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.widgets.common import ComingSoon

TITLE = "Export"
SUBTITLE = "Save the fine-tuned model for other tools."


class ExportPage(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(ComingSoon("Export a fine-tuned model", [
            "save the adapter alone, or fuse it into the base model (dequantised when the base is quantised)",
            "write a GGUF file for llama.cpp, Ollama and LM Studio",
            "check every export against base + adapter before you ship it",
            "upload to the Hugging Face Hub",
        ]))
