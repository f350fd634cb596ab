"""The main window: pages and titles, shortcuts, remembered geometry and page,
theme switching, the status bar's lazily loaded device facts, the About box,
and a start that does not import MLX."""

from __future__ import annotations

import os
import subprocess
import sys

from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication, QMessageBox

import mlx_lora
from app.main_window import PAGE_NAMES, MainWindow


def make_window(qtbot) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def test_every_page_has_a_title_and_an_icon(qtbot):
    window = make_window(qtbot)
    for k, name in enumerate(PAGE_NAMES):
        window.show_page(k)
        assert window.page_title.text() == name
        assert window.page_subtitle.text()
        assert not window.sidebar.item(k).icon().isNull()


def test_ctrl_number_switches_pages(qtbot):
    window = make_window(qtbot)
    window.show_page(0)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    qtbot.keyClick(window, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page_name() == "Train"
    qtbot.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page_name() == "Data"
    shortcuts = {a.text(): a.shortcut().toString() for a in window.actions()}
    assert shortcuts["Quit"] == "Ctrl+Q" and shortcuts["Settings…"] == "Ctrl+,"
    assert [shortcuts[name] for name in PAGE_NAMES] == [f"Ctrl+{k}" for k in range(1, 7)]


def test_geometry_and_last_page_are_remembered(qtbot):
    window = make_window(qtbot)
    window.resize(1000, 700)  # the offscreen screen (800 px wide) clamps the width on restore
    window.show_page(4)
    window.close()
    assert not window.settings.value("geometry").isEmpty()
    again = make_window(qtbot)
    assert again.current_page_name() == "Export"
    assert again.height() == 700
    again.show_page(0)
    again.close()


def test_dark_and_light_appearance(qtbot):
    window = make_window(qtbot)
    window.set_appearance("dark")
    dark = QApplication.instance().palette().color(QPalette.ColorRole.Window).lightness()
    assert dark < 80
    assert "#1c1c1e" in QApplication.instance().styleSheet()
    window.set_appearance("light")
    assert QApplication.instance().palette().color(QPalette.ColorRole.Window).lightness() > 200
    window.set_appearance("system")


def test_status_bar_shows_the_device_once_mlx_is_loaded(qtbot):
    window = make_window(qtbot)
    qtbot.waitUntil(lambda: window.backend_label.text().startswith("MLX on"), timeout=30_000)
    from app.widgets.common import memory_text
    from mlx_lora.backend import total_memory_bytes

    # one formatter for memory across the app: the status bar, the fit estimate and the tiles
    assert window.memory_label.text() == f"{memory_text(total_memory_bytes())} memory"
    assert "GiB" not in window.memory_label.text()


def test_memory_is_shown_one_way():
    from app.widgets.common import memory_text

    assert (memory_text(1.25e9), memory_text(25.3e9), memory_text(850e6), memory_text(0)) == \
        ("1.25 GB", "25.3 GB", "850 MB", "—")


def test_about_box_shows_the_version(qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: shown.append(text))
    window = make_window(qtbot)
    window.show_about()
    assert mlx_lora.__version__ in shown[0]


def test_window_creation_does_not_import_mlx():
    code = ("import sys, mlx_lora\n"
            "from PySide6.QtWidgets import QApplication\n"
            "app = QApplication([])\n"
            "from app.main_window import MainWindow\n"
            "w = MainWindow(); w.show(); app.processEvents()\n"
            "print('mlx.core' in sys.modules, 'pyqtgraph' in sys.modules)\n"
            "w.close()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_demo_start_preselects_the_demo_model_and_the_pirate_set(qtbot):
    """`make run` (--demo) opens the set the README and `make demo` use."""
    window = MainWindow(demo=True)
    qtbot.addWidget(window)
    state = window.context.state
    assert state.model == "demo"
    assert os.path.basename(state.dataset.rstrip("/")) == "pirate"


def test_the_last_runs_outcome_is_cleared_when_the_next_run_starts(qtbot):
    window = make_window(qtbot)
    training = window.context.training
    training.run_ended.emit("failed", "the dataset has no valid examples")
    assert window.training_label.text() == "Training failed"
    training.running_changed.emit(True)
    assert window.training_label.text() == "Training: starting…"
    assert window.statusBar().currentMessage() == ""


def test_the_help_menu_links_the_documentation(qtbot, monkeypatch):
    from PySide6.QtGui import QDesktopServices

    window = make_window(qtbot)
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url))
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    assert "Documentation" in [a.text() for a in help_menu.actions()]
    window.documentation_action.trigger()
    assert opened and opened[0].toLocalFile().endswith("README.md") and os.path.isfile(opened[0].toLocalFile())


def test_train_tiles_show_their_whole_value_and_the_settings_need_no_sideways_scrolling(qtbot):
    """With the app's style sheet (large bold tile values): "14 min 03 s" is never cut to
    "14 min 03", and at the default window size the whole settings form fits its column."""
    window = make_window(qtbot)
    window.resize(1280, 820)
    window.show_page(2)
    page = window.train_page
    tile = page.tiles["elapsed"]
    tile.set_value("14 min 03 s")
    tile.value.ensurePolished()
    needed = tile.value.fontMetrics().horizontalAdvance("14 min 03 s")
    qtbot.waitUntil(lambda: tile.width() > 0, timeout=2000)
    qtbot.waitUntil(lambda: tile.value.width() >= needed, timeout=2000)
    card = page.form.parentWidget()  # form → settings card → viewport → scroll area
    scroll = card.parentWidget().parentWidget()
    qtbot.waitUntil(lambda: scroll.viewport().width() > 0, timeout=2000)
    assert scroll.viewport().width() >= card.minimumSizeHint().width()
    for key, text in (("step", "3,000 / 3,000"), ("loss", "2.055"), ("val", "2.153"), ("speed", "12,345"),
                      ("memory", "10.25 GB"), ("eta", "12 min 40 s")):  # a long run's values
        page.tiles[key].set_value(text)
    run = page.tiles["step"].parentWidget()
    qtbot.waitUntil(lambda: run.width() >= run.minimumSizeHint().width(), timeout=2000)  # nothing squeezed
    assert tile.value.width() >= needed
