"""Which engine packages may import which: read from the source (every import statement,
at the top of a module or inside a function), so a lazy import cannot hide an arrow.

    config, methods  <-  run_folder  <-  adapters  <-  chat, export, train  <-  cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "mlx_lora"


def imported_modules(path: Path) -> set[str]:
    """Every ``mlx_lora…`` module a file imports (``from mlx_lora import x`` counts as mlx_lora.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "mlx_lora" or name.startswith("mlx_lora.")}


def arrows(package: str, forbidden: tuple[str, ...]) -> list[str]:
    files = [ENGINE / f"{package}.py"] if (ENGINE / f"{package}.py").is_file() else sorted(
        (ENGINE / package).rglob("*.py"))
    assert files, package
    return [f"{path.relative_to(ENGINE.parent)} imports {name}" for path in files
            for name in sorted(imported_modules(path))
            if any(name == f"mlx_lora.{f}" or name.startswith(f"mlx_lora.{f}.") for f in forbidden)]


@pytest.mark.parametrize("package, forbidden", [
    ("chat", ("train", "export", "cli")),
    ("adapters", ("chat", "export", "train", "cli", "run_history")),
    ("run_folder", ("adapters", "chat", "export", "train", "cli", "run_history")),
    ("run_history", ("adapters", "chat", "export", "train", "cli")),
    ("config", ("run_folder", "run_history", "adapters", "chat", "export", "train", "cli")),
    ("methods", ("run_folder", "run_history", "adapters", "chat", "export", "train", "cli", "data", "models")),
])
def test_no_module_imports_upward(package, forbidden):
    assert arrows(package, forbidden) == []


def test_the_check_sees_a_lazy_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from mlx_lora.train.adalora import AdaLoRALinear\n")
    assert "mlx_lora.train.adalora" in imported_modules(module)
