"""``mlx-lora-studio``: starts the Qt application and shows the main window.

MLX is imported lazily (only when a page needs the engine) so the window shows fast.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlx-lora-studio")
    parser.add_argument("--demo", action="store_true", help="preselect the demo model and a sample dataset")
    parser.add_argument("--quit-after-show", action="store_true",
                        help="show the window, then quit (a start-up smoke test)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import mlx_lora  # noqa: F401  (OpenBLAS preload before anything imports mlx.core)
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    qt_app.setApplicationName("MLX LoRA Studio")
    qt_app.setOrganizationName("MLX LoRA Studio")
    window = MainWindow(demo=args.demo)
    window.show()
    if args.quit_after_show:
        QTimer.singleShot(0, qt_app.quit)
    return qt_app.exec()


if __name__ == "__main__":
    sys.exit(main())
