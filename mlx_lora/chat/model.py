"""One base model in memory, prepared the way a run trained on it, with adapters on top.

:func:`load_chat_model` loads a base (``demo``, a folder, a GGUF file, a Hub id —
or, when only an adapter is named, the base its run's config.yaml names),
prepares it as the trainer did — quantised on load when the run set
``quantize_bits``, and in the compute dtype (``auto``: float32 on the CPU,
where a quantised base is dequantised because quantised matmuls there do not
use BLAS: 4.0 → 8.8 tokens/s on the demo model, measured on this 2-core build
machine) — and puts the adapter on it. :class:`ChatModel` then switches,
combines and disables adapters without reloading the base.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mlx_lora import adapters as adapters_mod
from mlx_lora.adapters import AdapterFiles, InstalledAdapter
from mlx_lora.errors import UserError
from mlx_lora.events import NullReporter, Reporter

COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")


def is_quantized(model) -> bool:
    import mlx.nn as nn

    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def resolve_compute_dtype(compute_dtype: str) -> str:
    """``auto`` → float32 on the CPU, the model's own dtype ("model") on a GPU."""
    import mlx.core as mx

    if compute_dtype not in COMPUTE_DTYPES:
        raise UserError(f"compute dtype must be one of {', '.join(COMPUTE_DTYPES)}, not {compute_dtype!r}")
    if compute_dtype == "auto":
        return "float32" if mx.default_device().type == mx.DeviceType.cpu else "model"
    return compute_dtype


def prepare_base(model, *, quantize_bits: int = 0, quantize_group_size: int = 64,
                 compute_dtype: str = "auto") -> list[str]:
    """Bring a freshly loaded base into the state a run trained against. Returns notes."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lora.models.dequant import dequantize_model

    notes = []
    if quantize_bits and not is_quantized(model):
        # the trainer's QLoRA base: every layer whose input size the group size divides
        nn.quantize(model, quantize_group_size, quantize_bits,
                    class_predicate=lambda _, m: hasattr(m, "to_quantized")
                    and m.weight.shape[-1] % quantize_group_size == 0)
        notes.append(f"quantised the base to {quantize_bits} bits (group {quantize_group_size}) as the run did")
    dtype = resolve_compute_dtype(compute_dtype)
    if dtype == "float32":
        if is_quantized(model):
            dequantize_model(model, mx.float32)  # exact (models/dequant.py), not via float16
            notes.append("dequantised the base to float32 for the CPU")
        model.set_dtype(mx.float32)
    elif dtype != "model":
        model.set_dtype(getattr(mx, dtype))
    mx.eval(model.parameters())
    return notes


def run_base_settings(files: AdapterFiles | None) -> dict[str, Any]:
    """quantize_bits / quantize_group_size from the adapter's run config (0 / 64 when unknown)."""
    config = files.run_config() if files is not None else None
    if config is None:
        return {"quantize_bits": 0, "quantize_group_size": 64}
    return {"quantize_bits": config.model.quantize_bits, "quantize_group_size": config.model.quantize_group_size}


@dataclass
class ChatModel:
    """A base model and tokenizer in memory, with the adapter (if any) on it."""

    model: Any
    tokenizer: Any
    config: dict
    base_dir: Path
    base_spec: str
    notes: list[str] = field(default_factory=list)

    @property
    def adapter(self) -> InstalledAdapter | None:
        return adapters_mod.installed_adapter(self.model)

    def use_adapter(self, adapter: AdapterFiles | str | Path) -> InstalledAdapter:
        """Switch to another adapter or checkpoint; the base stays loaded."""
        return adapters_mod.apply_adapter(self.model, adapter)

    def combine_adapters(self, parts: list[tuple[AdapterFiles | str | Path, float]]) -> InstalledAdapter:
        return adapters_mod.combine_adapters(self.model, parts)

    def remove_adapter(self) -> None:
        adapters_mod.strip_adapters(self.model)

    @contextmanager
    def adapter_disabled(self) -> Iterator[None]:
        with adapters_mod.adapter_disabled(self.model):
            yield


def load_chat_model(
    model: str | Path | None = None,
    adapter: str | Path | AdapterFiles | None = None,
    compute_dtype: str = "auto",
    reporter: Reporter = NullReporter(),
) -> ChatModel:
    """Load a base (and an adapter on it). With only an adapter, its run's base is loaded."""
    from mlx_lora.models.local import load_model, resolve_model

    files = None
    if adapter is not None:
        files = adapter if isinstance(adapter, AdapterFiles) else adapters_mod.resolve_adapter(adapter)
    notes = []
    if model is None:
        model = files.base_model() if files is not None else "demo"
        if model is None:
            raise UserError(f"{files.weights.parent}: the run does not say which base model it trained on; "
                            "name it with --model")
    elif files is not None and files.base_model() not in (None, str(model)):
        notes.append(f"the adapter's run trained on {files.base_model()}, this base is {model}")
    folder = resolve_model(model, reporter)
    loaded, tokenizer, config = load_model(folder, reporter=reporter)
    notes += prepare_base(loaded, compute_dtype=compute_dtype, **run_base_settings(files))
    chat_model = ChatModel(loaded, tokenizer, config, Path(folder), str(model), notes)
    if files is not None:
        chat_model.use_adapter(files)
    return chat_model
