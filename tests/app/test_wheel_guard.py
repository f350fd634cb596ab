"""The mouse wheel scrolls a settings page instead of changing the spin box under the pointer."""

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QDoubleSpinBox, QScrollArea, QVBoxLayout, QWidget

from app.widgets import wheel_guard


def wheel(widget, steps: int = -1) -> None:
    center = QPointF(widget.rect().center())
    event = QWheelEvent(center, QPointF(widget.mapToGlobal(QPoint(5, 5))), QPoint(), QPoint(0, 120 * steps),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def make_page(qtbot):
    wheel_guard.install()
    area = QScrollArea()
    page = QWidget()
    layout = QVBoxLayout(page)
    boxes = []
    for _ in range(40):
        box = QDoubleSpinBox()
        box.setRange(0, 1000)
        box.setValue(16.0)
        layout.addWidget(box)
        boxes.append(box)
    area.setWidget(page)
    area.resize(300, 200)
    qtbot.addWidget(area)
    area.show()
    qtbot.waitExposed(area)
    return area, boxes


def test_an_unfocused_spin_box_ignores_the_wheel_and_the_page_scrolls(qtbot):
    area, boxes = make_page(qtbot)
    before = area.verticalScrollBar().value()
    wheel(boxes[2])
    assert boxes[2].value() == 16.0
    assert area.verticalScrollBar().value() > before


def test_a_focused_spin_box_takes_the_wheel(qtbot):
    area, boxes = make_page(qtbot)
    boxes[1].setFocus()
    qtbot.waitUntil(boxes[1].hasFocus)
    wheel(boxes[1], steps=1)
    assert boxes[1].value() == 17.0
