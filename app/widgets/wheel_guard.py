"""Spin boxes and combo boxes take the mouse wheel only when they have the focus.

Qt's default lets a wheel turned to scroll a settings page change whichever spin box
passes under the pointer (seen: Alpha 16 → 9.6 and the preset silently "Custom").
One filter on the application covers every page and dialog: a wheel event over an
unfocused spin box or combo box goes to its parent instead (so the page scrolls), and
those widgets stop taking focus from the wheel itself (click or Tab focuses them).
"""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt
from PySide6.QtWidgets import QAbstractSpinBox, QApplication, QComboBox, QWidget

_GUARDED = (QAbstractSpinBox, QComboBox)


class WheelGuard(QObject):
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Wheel and isinstance(watched, _GUARDED):
            if watched.focusPolicy() == Qt.FocusPolicy.WheelFocus:
                watched.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            if not watched.hasFocus():
                # up the parents until one takes it (a scroll area's viewport scrolls): a sent
                # event does not travel up by itself as one from the window system does
                parent = watched.parentWidget()
                while isinstance(parent, QWidget):
                    event.setAccepted(True)
                    QCoreApplication.sendEvent(parent, event)
                    if event.isAccepted():
                        break
                    parent = parent.parentWidget()
                return True
        return False


def install(app: QApplication | None = None) -> WheelGuard:
    """Install the guard on the application once (later calls return the same one)."""
    app = app or QApplication.instance()
    guard = getattr(app, "_wheel_guard", None)
    if guard is None:
        guard = WheelGuard(app)
        app.installEventFilter(guard)
        app._wheel_guard = guard  # keep it alive with the application
    return guard
