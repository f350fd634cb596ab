"""The CLI's modules import each other in one direction only (no cycle, counting the imports
inside functions too): a command module may use :mod:`mlx_lora.cli.reporting` and the
launcher, never the other way round."""

from __future__ import annotations

import ast
from pathlib import Path

import mlx_lora.cli

CLI = Path(mlx_lora.cli.__file__).parent


def cli_import_graph() -> dict[str, set[str]]:
    modules = {f"mlx_lora.cli.{path.stem}": path for path in CLI.glob("*.py") if path.stem != "__init__"}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[name] = {other for other in imported if other in modules and other != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done, path = set(), []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for other in sorted(graph[node]):
            cycle = visit(other)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    return next((cycle for node in sorted(graph) if (cycle := visit(node))), None)


def test_the_cli_modules_import_each_other_without_a_cycle():
    graph = cli_import_graph()
    assert "mlx_lora.cli.reporting" in graph["mlx_lora.cli.launch"]  # the graph sees real imports
    assert "mlx_lora.cli.launch" in graph["mlx_lora.cli.train"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # and would see a loop
