"""The app starts offscreen, shows its main window and quits cleanly."""

import subprocess
import sys


def test_main_window_has_pages(qtbot):
    from app.main_window import PAGE_NAMES, MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.pages.count() == len(PAGE_NAMES)
    assert "MLX LoRA Studio" in window.windowTitle()


def test_app_process_starts_and_quits():
    result = subprocess.run(
        [sys.executable, "-m", "app.main", "--quit-after-show"],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert result.returncode == 0, result.stderr
