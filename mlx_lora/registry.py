"""Registries filled by looking: every module of a package that sets a named attribute to
an instance of the registry's type is an entry, in the order of its ``order`` (then its
``name``). The export formats (:mod:`mlx_lora.export.formats`, ``FORMAT``) and the
fine-tuning methods (:mod:`mlx_lora.methods`, ``METHOD``) are found this way, so adding
one is adding a module. Subpackages are not searched (a package keeps code there that
entries import lazily, such as :mod:`mlx_lora.methods.tensors`)."""

from __future__ import annotations

import importlib
import pkgutil
from types import MappingProxyType
from typing import Iterable, Mapping, TypeVar

T = TypeVar("T")


def discover(package: str, path: Iterable[str], attribute: str, kind: type[T]) -> Mapping[str, T]:
    """``{entry.name: entry}`` (read-only) of the modules of ``package`` (its ``__path__``) that
    set ``attribute``; raises TypeError for an entry of another type or two with one name."""
    found: list = []
    for module_info in pkgutil.iter_modules(path):
        if module_info.ispkg:
            continue
        module = importlib.import_module(f"{package}.{module_info.name}")
        entry = getattr(module, attribute, None)
        if entry is None:
            continue  # a helper module (base), not an entry
        if not isinstance(entry, kind):
            raise TypeError(f"{module.__name__}.{attribute} is {type(entry).__name__}, not a {kind.__name__}")
        found.append(entry)
    names = [entry.name for entry in found]
    if len(set(names)) != len(names):
        raise TypeError(f"two {kind.__name__}s share a name: {sorted(names)}")
    return MappingProxyType({e.name: e for e in sorted(found, key=lambda e: (e.order, e.name))})
