"""The fine-tuning methods, one module each, found by looking: every module of this
package that sets ``METHOD`` (a :class:`~mlx_lora.methods.base.Method`) is a method, in
the order of its ``order``. Adding a method is adding a module here (plus its tests); the
config's ``fine_tune_type`` choices and help, its checks, the training loop's model
preparation and hooks, the PEFT export, the memory estimate and the CLI's help all read
:data:`METHODS`.

    from mlx_lora.methods import METHODS, method_for

    list(METHODS)                      # ['lora', 'dora', 'adalora', 'full']
    method_for("adalora").saves_as     # 'lora'

No module here imports MLX at the top (the config imports this registry); their tensor
code is :mod:`mlx_lora.methods.tensors`, a subpackage the search skips.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import MappingProxyType
from typing import Mapping

from mlx_lora.errors import UserError
from mlx_lora.methods.base import Method, StepHook, StepHooks


def _discover() -> Mapping[str, Method]:
    found: list[Method] = []
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.ispkg:
            continue  # tensors/: the MLX code, imported only when a model is adapted
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        method = getattr(module, "METHOD", None)
        if method is None:
            continue  # a helper module (base), not a method
        if not isinstance(method, Method):
            raise TypeError(f"{module.__name__}.METHOD is {type(method).__name__}, not a Method")
        found.append(method)
    names = [method.name for method in found]
    if len(set(names)) != len(names):
        raise TypeError(f"two methods share a name: {sorted(names)}")
    return MappingProxyType({m.name: m for m in sorted(found, key=lambda m: (m.order, m.name))})


METHODS: Mapping[str, Method] = _discover()
DEFAULT_METHOD = "lora"


def method_for(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"fine_tune_type (adapter.fine_tune_type, --fine-tune-type): unknown method {name!r}; "
                        f"choose one of {', '.join(METHODS)}") from None


def saved_types() -> tuple[str, ...]:
    """What a saved adapter_config.json's fine_tune_type can say."""
    return tuple(dict.fromkeys(m.saves_as for m in METHODS.values()))


__all__ = ["DEFAULT_METHOD", "METHODS", "Method", "StepHook", "StepHooks", "method_for", "saved_types"]
