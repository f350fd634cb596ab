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

from typing import Mapping

from mlx_lora.errors import UserError
from mlx_lora.methods.base import Method, StepHook, StepHooks
from mlx_lora.registry import discover

# tensors/ is a subpackage: the MLX code, imported only when a model is adapted
METHODS: Mapping[str, Method] = discover(__name__, __path__, "METHOD", Method)
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
