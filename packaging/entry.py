"""The bundle's one executable: the desktop app, the ``mlx-lora`` CLI, or the app's
training child, depending on how it is called.

- ``MLX-LoRA-Studio [--demo] [--print-info] ...`` starts the desktop app (``app.main``).
- ``mlx-lora ...`` (a link to the same executable, made by ``packaging/build.sh``) is the CLI.
- ``MLX-LoRA-Studio -m mlx_lora.cli.main train ...``: the app runs training in a child
  process as ``sys.executable -m mlx_lora.cli.main`` (app/jobs/training_supervisor.py). In a
  bundle ``sys.executable`` is this executable, which has no interpreter flags, so the
  ``-m`` form is emulated here for the project's own modules.

Bundling one executable instead of two keeps a single copy of Python and the
libraries (PyInstaller's EXEs in one COLLECT would share them too, but each would
need its own Analysis, doubling the build time).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

# Modules the bundle can run with ``-m`` (anything else is refused, as a typo would be).
RUNNABLE_MODULES = ("mlx_lora.cli.main", "app.main")
CLI_NAMES = ("mlx-lora", "mlx-lora.exe")


def main() -> int:
    argv = sys.argv
    if len(argv) >= 3 and argv[1] == "-m":
        module = argv[2]
        if module not in RUNNABLE_MODULES:
            print(f"error: this bundle can only run {', '.join(RUNNABLE_MODULES)} with -m", file=sys.stderr)
            return 2
        sys.argv = [module, *argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)  # exits through sys.exit
        return 0
    if Path(argv[0]).name in CLI_NAMES:
        from mlx_lora.cli.main import main as cli_main

        return cli_main(argv[1:])
    from app.main import main as app_main

    return app_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
