"""The studio's layers (docs/ARCHITECTURE.md), read from the source: every import
statement, at the top of a module or inside a function, so a lazy import cannot hide an
arrow. Imports under ``if TYPE_CHECKING:`` are for type checkers only and do not count.

A module may import its own layer's packages or lower ones, never a higher one, and the
package graph has no cycle. The app sits above the whole engine, which never imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "mlx_lora"

# Lowest first; the drawing in docs/ARCHITECTURE.md. A package or module of mlx_lora is
# named by its first component (``train`` for mlx_lora/train/…, ``config`` for config.py).
LAYERS: list[tuple[str, ...]] = [
    ("errors", "events", "atomic", "paths", "backend", "presets", "tree_paths", "config_fields",
     "registry", "chat_templates"),
    ("run_events", "methods"),
    ("config",),
    ("run_folder", "data", "models", "rewards"),
    ("adapters", "run_history"),
    ("chat",),
    ("train", "export", "evaluation"),
    ("demo_training", "cli"),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}

# Above the engine: the app's own layers (app/jobs never imports a controller or a page…)
APP_LAYERS: list[tuple[str, ...]] = [
    ("theme", "settings_store", "jobs"),
    ("widgets", "controllers", "settings_dialog"),
    ("pages",),
    ("main_window", "main"),
]
APP_RANK = {name: rank for rank, names in enumerate(APP_LAYERS) for name in names}


def imported_modules(path: Path, prefix: str = "mlx_lora") -> set[str]:
    """Every ``prefix…`` module a file imports (``from mlx_lora import x`` counts as mlx_lora.x)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(sub) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for branch in node.body for sub in ast.walk(branch)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == prefix or name.startswith(prefix + ".")}


def unit(module: str) -> str | None:
    """The layered unit of a dotted module name (None: the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def package_graph(root: Path, prefix: str, known: dict[str, int]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        source = unit(".".join(rel.parts))
        if source in (None, "__init__"):
            continue
        for name in imported_modules(path, prefix):
            target = unit(name)
            if target in known and target != source:
                graph.setdefault(source, set()).add(target)
    return graph


def upward(graph: dict[str, set[str]], rank: dict[str, int]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if rank[b] > rank[a])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_every_engine_module_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in ENGINE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert units - set(RANK) == set(), "add the new module to LAYERS and to docs/ARCHITECTURE.md"


def test_no_engine_arrow_runs_back_up_and_there_is_no_cycle():
    graph = package_graph(ENGINE, "mlx_lora", RANK)
    assert upward(graph, RANK) == []
    assert cycles(graph) == []


def test_the_engine_never_imports_the_app_or_qt():
    arrows = [f"{path.relative_to(ROOT)} imports {name}" for path in sorted(ENGINE.rglob("*.py"))
              for prefix in ("app", "PySide6", "pyqtgraph") for name in imported_modules(path, prefix)]
    assert arrows == []


def test_no_app_arrow_runs_back_up_and_there_is_no_cycle():
    graph = package_graph(ROOT / "app", "app", APP_RANK)
    assert upward(graph, APP_RANK) == []
    assert cycles(graph) == []


@pytest.mark.parametrize("package, forbidden", [
    ("chat", ("train", "export", "cli")),
    ("adapters", ("chat", "export", "train", "cli", "run_history")),
    ("run_folder", ("adapters", "chat", "export", "train", "cli", "run_history")),
    ("run_history", ("adapters", "chat", "export", "train", "cli")),
    ("config", ("run_folder", "run_history", "adapters", "chat", "export", "train", "cli")),
    ("methods", ("config", "run_folder", "run_history", "adapters", "chat", "export", "train", "cli", "data",
                 "models")),
])
def test_no_module_imports_upward(package, forbidden):
    files = [ENGINE / f"{package}.py"] if (ENGINE / f"{package}.py").is_file() else sorted(
        (ENGINE / package).rglob("*.py"))
    assert files, package
    assert [f"{path.relative_to(ROOT)} imports {name}" for path in files for name in sorted(imported_modules(path))
            if any(name == f"mlx_lora.{f}" or name.startswith(f"mlx_lora.{f}.") for f in forbidden)] == []


def test_the_check_sees_a_lazy_import_an_upward_arrow_and_a_cycle(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mlx_lora.cli\n"
                      "def f():\n    from mlx_lora.train.prepare import prepare_model\n")
    assert imported_modules(module) == {"mlx_lora.train.prepare", "mlx_lora.train.prepare.prepare_model"}
    assert upward({"config": {"train"}}, RANK) == ["config -> train"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
