"""A read-only chat transcript that grows token by token.

Tokens are inserted at the end with a text cursor (no re-render of the whole
conversation per token, which would cost O(length²) over an answer).
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QTextBlockFormat, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextBrowser, QWidget


class Transcript(QTextBrowser):
    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.setOpenLinks(False)
        self.answers: list[str] = []
        self._answering = False
        self.setPlaceholderText(f"{title}: the answers appear here.")

    def _block(self, text: str, bold: bool = False, gap: bool = False, small: bool = False) -> None:
        """A new paragraph at the end (its own block, so a heading never runs into the text before)."""
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        block = QTextBlockFormat()
        block.setTopMargin(10 if gap else 0)
        char = QTextCharFormat()
        char.setFontWeight(QFont.Weight.Bold if bold else QFont.Weight.Normal)
        if small:
            from app.theme import ThemeManager

            char.setForeground(QColor(ThemeManager.colors()["secondary"]))
            char.setFontPointSize(max(6.0, self.font().pointSizeF() * 0.85))
        if self.document().isEmpty():
            cursor.setBlockFormat(block)
            cursor.setCharFormat(char)
        else:
            cursor.insertBlock(block, char)
        cursor.insertText(text, char)
        self.setTextCursor(cursor)

    def add_user(self, text: str) -> None:
        self._block("You", bold=True, gap=not self.document().isEmpty())
        self._block(text)

    def begin_answer(self) -> None:
        self._block(self.title, bold=True, gap=True)
        self._block("")
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
            self._block(note, small=True)

    def last_answer(self) -> str:
        return self.answers[-1] if self.answers else ""

    def clear_all(self) -> None:
        self.clear()
        self.answers = []
        self._answering = False
