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
    parser.add_argument("--print-info", action="store_true",
                        help="print the version, demo model and BLAS as JSON and exit (packaging smoke test)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import mlx_lora  # (OpenBLAS preload before anything imports mlx.core)

    if args.print_info:
        return print_info()
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app import settings_store
    from app.main_window import MainWindow

    # Before huggingface_hub is imported anywhere: it reads HF_HUB_CACHE once.
    settings_store.apply_to_environment()
    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    qt_app.setApplicationName("MLX LoRA Studio")
    qt_app.setOrganizationName("MLX LoRA Studio")
    qt_app.setApplicationVersion(mlx_lora.__version__)
    clean_stale_temporaries()
    window = MainWindow(demo=args.demo)
    window.show()
    if args.quit_after_show:
        QTimer.singleShot(0, qt_app.quit)
    status = qt_app.exec()
    from app.jobs import workers

    workers.cancel_all_and_wait(3000)  # let running jobs end before the interpreter does
    return status


def clean_stale_temporaries() -> None:
    """What killed exports left in the app's exports folder (hidden ``.…tmp`` folders of
    hundreds of MB), removed at start by the engine's naming rule; logged with the MB freed.
    Reads the disk only: no MLX."""
    import logging

    from mlx_lora import atomic, paths

    cleaned = atomic.clean_stale_temporaries(paths.home() / "exports")
    if cleaned.removed:
        logging.getLogger("app").info("removed %d stale temporaries of killed exports from %s, freed %.1f MB",
                                      len(cleaned.removed), cleaned.folder, cleaned.freed_bytes / 1e6)


def print_info() -> int:
    """One JSON line of what a bundle must get right (packaging/smoke_test.py checks it);
    no window, no MLX import."""
    import json

    import mlx_lora
    from mlx_lora import backend, paths
    from mlx_lora.errors import UserError
    from mlx_lora.models import demo

    try:
        gguf, demo_error = str(demo.demo_gguf_path()), None
    except UserError as exc:
        gguf, demo_error = None, str(exc)
    print(json.dumps({
        "version": mlx_lora.__version__,
        "frozen": bool(getattr(sys, "frozen", False)),
        "demo_gguf": gguf,
        "demo_error": demo_error,
        "demo_model_dir": str(paths.models_dir() / demo.DEMO_NAME),
        "resources_dir": str(paths.resources_dir()),
        "blas": backend.blas_status().path,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
