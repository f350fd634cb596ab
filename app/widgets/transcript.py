"""A read-only chat transcript that grows token by token.

Tokens are inserted at the end with a text cursor (no re-render of the whole
conversation per token, which would cost O(length²) over an answer).
"""

from __future__ import annotations

import html

from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QTextBrowser, QWidget


class Transcript(QTextBrowser):
    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.setOpenLinks(False)
        self.answers: list[str] = []
        self._answering = False
        self.setPlaceholderText(f"{title}: the answers appear here.")

    def _insert_html(self, markup: str) -> None:
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertHtml(markup)
        self.setTextCursor(cursor)

    def add_user(self, text: str) -> None:
        start = "" if self.document().isEmpty() else "<br>"
        self._insert_html(f"{start}<p><b>You</b><br>{html.escape(text).replace(chr(10), '<br>')}</p>")

    def begin_answer(self) -> None:
        self._insert_html(f"<p><b>{html.escape(self.title)}</b><br></p>")
        self.answers.append("")
        self._answering = True

    def append_text(self, text: str) -> None:
        if not self._answering or not text:
            return
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)
        self.setTextCursor(cursor)
        self.answers[-1] += text
        self.ensureCursorVisible()

    def end_answer(self, note: str = "") -> None:
        if not self._answering:
            return
        self._answering = False
        if note:
            self._insert_html(f"<br><span style='color:gray; font-size:small'>{html.escape(note)}</span>")

    def last_answer(self) -> str:
        return self.answers[-1] if self.answers else ""

    def clear_all(self) -> None:
        self.clear()
        self.answers = []
        self._answering = False
