"""The adapter library that chat, export and training share: below all three, above the
run folder.

- :mod:`~mlx_lora.adapters.files`: an adapter on disk — :func:`resolve_adapter` (a run
  folder, ``best/``, ``checkpoints/step-N/``, a bare adapter folder or file →
  :class:`AdapterFiles`), its adapter_config.json, its run's config, its weights;
- :mod:`~mlx_lora.adapters.attach`: an adapter on a model in memory — attach, switch,
  switch off, strip, combine, and the tensor checks that refuse one that does not fit;
- the adapter layer classes (``CastLoRALinear``, ``AdaLoRALinear``) are the methods'
  (:mod:`mlx_lora.methods.tensors.layers`), one layer below.

Importing the package (files and attach) does not import MLX.

    files = resolve_adapter("runs/my-run/best")
    apply_adapter(model, files)
    with adapter_disabled(model):
        ...  # the base
"""

from mlx_lora.adapters.attach import (
    ADAPTER_LEAVES,
    InstalledAdapter,
    adapter_disabled,
    adapter_layers,
    apply_adapter,
    check_adapter_tensors,
    combine_adapters,
    installed_adapter,
    strip_adapters,
)
from mlx_lora.adapters.files import AdapterFiles, load_adapter_weights, resolve_adapter

__all__ = [
    "ADAPTER_LEAVES", "AdapterFiles", "InstalledAdapter", "adapter_disabled", "adapter_layers", "apply_adapter",
    "check_adapter_tensors", "combine_adapters", "installed_adapter", "load_adapter_weights", "resolve_adapter",
    "strip_adapters",
]
