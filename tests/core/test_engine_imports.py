"""The engine never imports the app or Qt: every mlx_lora module, imported in a fresh
interpreter, leaves PySide6 and app out of sys.modules (napari enforces the same rule)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import importlib, json, pkgutil, sys
import mlx_lora
names = sorted(m.name for m in pkgutil.walk_packages(mlx_lora.__path__, "mlx_lora."))
for name in names:
    importlib.import_module(name)
found = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "shiboken6", "app", "pyqtgraph"))
print(json.dumps({"modules": names, "found": found}))
"""


def test_importing_every_engine_module_imports_no_qt_and_no_app():
    import json

    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["modules"]) > 60 and "mlx_lora.methods.lora" in result["modules"]
    assert result["found"] == []


def test_the_probe_sees_a_qt_import(tmp_path):
    """The check fails when a module does import Qt (here, a stand-in package that does)."""
    package = tmp_path / "mlx_lora_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    # A stand-in PySide6 first on the path: the probe needs no Qt installed (the GPU machine has none)
    (tmp_path / "PySide6").mkdir()
    (tmp_path / "PySide6" / "__init__.py").write_text("")
    (package / "bad.py").write_text("import PySide6\nimport app\n")
    probe = PROBE.replace("import mlx_lora\n", "import mlx_lora_probe as mlx_lora\n").replace(
        '"mlx_lora."', '"mlx_lora_probe."')
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH")])),
                               "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "app" in json_found(done.stdout) and "PySide6" in json_found(done.stdout)


def json_found(stdout: str) -> list[str]:
    import json

    return [name.split(".")[0] for name in json.loads(stdout.strip().splitlines()[-1])["found"]]
