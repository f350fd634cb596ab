"""Chat: talk to the base model and the fine-tuned one side by side (coming)."""

from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.widgets.common import ComingSoon

TITLE = "Chat"
SUBTITLE = "Try the fine-tuned model beside the base model."


class ChatPage(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(ComingSoon("Chat with your fine-tune", [
            "chat with any checkpoint of a run, beside the base model, with the same prompt",
            "use the model's own chat template and stop tokens, as training did",
            "set temperature, top-p and the maximum reply length",
        ], "Meanwhile: mlx-lora chat --model MODEL --adapter RUN_DIR in a terminal, once the engine has it."))
