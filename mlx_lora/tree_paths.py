"""Dotted paths into nested dict/list trees (MLX's parameter and optimiser-state trees):
``"layers.0.self_attn.q_proj.lora_a"`` names ``tree["layers"][0]["self_attn"]["q_proj"]["lora_a"]``,
the names ``mlx.utils.tree_flatten`` gives. One walk for the loop's resume (set) and
AdaLoRA's regulariser (add)."""

from __future__ import annotations

from typing import Any


def _parent(tree: Any, path: str) -> tuple[Any, Any]:
    """(container, key) of the leaf a dotted path names."""
    *parents, leaf = path.split(".")
    for key in parents:
        tree = tree[int(key)] if isinstance(tree, list) else tree[key]
    return tree, int(leaf) if isinstance(tree, list) else leaf


def set_at(tree: Any, path: str, value: Any) -> None:
    """``tree[path] = value``, in place."""
    container, key = _parent(tree, path)
    container[key] = value


def add_at(tree: Any, path: str, value: Any) -> None:
    """``tree[path] += value``, in place (a new array: MLX arrays are not changed in place)."""
    container, key = _parent(tree, path)
    container[key] = container[key] + value
