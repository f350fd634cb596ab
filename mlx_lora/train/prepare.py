"""Load the base for training and make the method's weights trainable.

The method (LoRA, DoRA, AdaLoRA, full…) is a :class:`~mlx_lora.methods.base.Method` from
:mod:`mlx_lora.methods`; this module loads the base (quantised or dequantised as the
config and the device call for), picks the layers and target linears, and asks the
method to adapt them. A quantised base is QLoRA (one stored quantised, like the demo
model, or one quantised when loaded with ``quantize_bits``).

On CPU the base is dequantised to float32 for the run. Measured on this
project's 2-core build machine, one forward+backward of the demo model
(SmolLM2-135M, batch 4 × 128 tokens, LoRA on 8 layers): 4-bit base 124 s,
dequantised float32 10.7 s — quantised and bfloat16 matmuls on CPU do not go
through BLAS. A base quantised at load is dequantised after quantising, so the
adapter still learns against the quantised weights it will run with.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear

from mlx_lora import backend
from mlx_lora.config import AdapterConfig, TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.events import NullReporter, Progress, Reporter
from mlx_lora.methods import method_for

LINEAR_TYPES = (nn.Linear, nn.QuantizedLinear, SwitchLinear, QuantizedSwitchLinear)
QUANTIZED_TYPES = (nn.QuantizedLinear, nn.QuantizedEmbedding, QuantizedSwitchLinear)
DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


@dataclasses.dataclass
class PreparedModel:
    """A model ready to train, and what the run should say about it."""

    model: nn.Module
    tokenizer: Any
    model_path: Path
    adapter_config: dict[str, Any]  # mlx-lm's adapter_config.json
    trainable_parameters: int
    total_parameters: int
    compute_dtype: str
    notes: list[str]


def _dtype_name(dtype) -> str:
    return str(dtype).replace("mlx.core.", "")


def _quantized_bits(model: nn.Module) -> list[int]:
    return sorted({m.bits for _, m in model.named_modules() if isinstance(m, QUANTIZED_TYPES)})


def count_parameters(model: nn.Module) -> int:
    """Parameters as the model was trained (a quantised weight counts as its unquantised size)."""
    from mlx_lm.utils import get_total_parameters

    return get_total_parameters(model)


def trainable_count(model: nn.Module) -> int:
    return sum(v.size for _, v in tree_flatten(model.trainable_parameters()))


# Backends on which a quantised base's layers train through dequantise-then-matmul
# (mlx_lora/methods/tensors/qmatmul.py) instead of MLX's quantised matmul. None by default:
# on the H200 (8B, 4 x 1024, bench/gpu_qlora.py, bench/RESULTS.md "QLoRA on the GPU") it ran
# at 0.80x the bf16 LoRA speed against 0.32x for the quantised kernels, but its peak was
# 20.3 GB against their 13.7 (bf16: 21.5): the host queues the layers' dequantised copies
# ahead of the GPU, so QLoRA's memory saving is gone. QLoRA is for memory, so the kernels
# stay; the bench sets ("cuda",) to measure this path.
DEQUANTIZED_MATMUL: tuple[str, ...] = ()
# "dequantize": forward and input gradient both dense; "kernel": MLX's quantised kernel for the
# forward, dense only for the backward's dy @ W (qmatmul.py's docstring: CUDA has no fast kernel
# for that product)
DEQUANTIZED_MATMUL_FORWARD = "dequantize"
# SwiGLU's backward recomputes its sigmoid instead of keeping it and silu's output: two fewer
# (tokens x intermediate) arrays a layer (mlx_lora/methods/tensors/swiglu.py; the bench's
# False measures mlx-lm's own)
LEAN_SWIGLU = True


def single_group_fix(in_dims: int, group_size: int) -> int | None:
    """The group size to quantise a layer with `in_dims` inputs on CUDA: MLX 0.32.4's CUDA
    quantised matmul returns wrong values (relative error 1 to 6, sometimes nan) for two or more
    rows when a weight's row is one group (in_dims == group_size: 64 with group size 64), while
    the same shapes at group size 32, and every width of two or more groups, are right
    (bench/results/h200-2026-12-04-s2/qmm-check.log, measured on the H200). No released model is
    that narrow; the tiny test models are. Returns the group size to use, or None to leave the
    layer unquantised where no smaller valid group size divides it."""
    if in_dims != group_size:
        return group_size
    smaller = group_size // 2
    return smaller if smaller >= 32 and in_dims % smaller == 0 else None


def quantize_base(model: nn.Module, model_config: dict, group_size: int, bits: int, notes: list[str]) -> nn.Module:
    """mlx-lm's `quantize_model`, with the model's own predicate kept and, on CUDA, the
    single-group layers of `single_group_fix` quantised with a smaller group."""
    from mlx_lm.utils import quantize_model

    own = getattr(model, "quant_predicate", None)
    changed: list[str] = []

    def predicate(path: str, module: nn.Module):
        decision = own(path, module) if own is not None else True
        if decision is False or backend.backend_name() != "cuda":
            return decision
        size = decision.get("group_size", group_size) if isinstance(decision, dict) else group_size
        fixed = single_group_fix(module.weight.shape[-1], size)
        if fixed == size:
            return decision
        changed.append(path)
        if fixed is None:
            return False
        return {**(decision if isinstance(decision, dict) else {"bits": bits, "mode": "affine"}), "group_size": fixed}

    model, _ = quantize_model(model, model_config, group_size, bits, quant_predicate=predicate)
    if changed:
        notes.append(f"{len(changed)} layer(s) one quantisation group wide ({changed[0]}, …) were quantised with a "
                     "smaller group: MLX's CUDA quantised matmul is wrong for them")
    return model


def load_base(config: TrainConfig, reporter: Reporter = NullReporter()) -> tuple[nn.Module, Any, Path, str, list[str]]:
    """(model, tokenizer, folder, compute dtype name, notes): the base, quantised and/or
    dequantised as the config and the device call for."""
    from mlx_lm.utils import load

    from mlx_lora.models.dequant import dequantize_model

    from mlx_lora.models.local import resolve_model

    folder = resolve_model(config.model.model, reporter)
    reporter.emit(Progress("train", f"loading {folder.name}"))
    settings = config.model
    # Quantising at load: the weights stay lazy until they are quantised, then each layer is
    # evaluated on its own, so the full-precision base never sits in memory whole (an 8B base
    # in bf16 is 16 GB, in 4 bits ~4.5 GB; a 70B one 140 GB against ~40).
    lazy = bool(settings.quantize_bits)
    model, tokenizer, model_config = load(str(folder), return_config=True, lazy=lazy, trust_remote_code=False)
    notes: list[str] = []
    if config.data.chat_template != "model":
        from mlx_lora.data.template import use_chat_template

        use_chat_template(tokenizer, config.data.chat_template)
        notes.append(f"chat records rendered with the {config.data.chat_template} chat template, not the model's")
    method = method_for(config.adapter.fine_tune_type)
    if settings.quantize_bits:
        if _quantized_bits(model):
            notes.append(f"the model is already quantised ({'/'.join(map(str, _quantized_bits(model)))}-bit); "
                         "quantize_bits was not applied")
        else:
            model = quantize_base(model, model_config, settings.quantize_group_size, settings.quantize_bits, notes)
            notes.append(f"quantised the base to {settings.quantize_bits}-bit (QLoRA)")
    if lazy:
        for layer in getattr(model, "layers", []):
            mx.eval(layer.parameters())
        mx.eval(model.parameters())
    on_cpu = backend.device_kind() == "cpu"
    if settings.compute_dtype == "auto":
        dtype = backend.compute_dtype(_float_dtype(model))
    else:
        dtype = DTYPES[settings.compute_dtype]
    bits = _quantized_bits(model)
    relora = config.schedule.relora_every > 0
    if bits and (on_cpu or method.dequantize_reason or relora):
        model = dequantize_model(model, dtype)  # exact in float32, rounded once to dtype
        why = ("for CPU (quantised matmuls on CPU do not use BLAS)" if on_cpu else method.dequantize_reason
               or "for ReLoRA (its merges need full-precision base weights)")
        notes.append(f"dequantised the {'/'.join(map(str, bits))}-bit base to {_dtype_name(dtype)} {why}; "
                     "the adapter still learns against the quantised weights")
    if _float_dtype(model) != dtype:
        notes.append(f"computing in {_dtype_name(dtype)} (the model is stored in {_dtype_name(_float_dtype(model))})")
    if relora and dtype != mx.float32:
        notes.append(f"ReLoRA merges into {_dtype_name(dtype)} base weights: each merge rounds the merged update "
                     "to that precision (the saved adapter keeps it in float32)")
    model.set_dtype(dtype)
    return model, tokenizer, folder, _dtype_name(dtype), notes


def _float_dtype(model: nn.Module):
    for _, value in tree_flatten(model.parameters()):
        if mx.issubdtype(value.dtype, mx.floating):
            return value.dtype
    return mx.float32


def linear_names(layer: nn.Module) -> list[str]:
    return [name for name, module in layer.named_modules() if isinstance(module, LINEAR_TYPES)]


def _is_attention(name: str) -> bool:
    head = name.split(".")[0].lower()
    return "attn" in head or "attention" in head


def _is_mlp(name: str) -> bool:
    head = name.split(".")[0].lower()
    return any(word in head for word in ("mlp", "feed_forward", "ffn"))


def resolve_targets(layers: list[nn.Module], targets: tuple[str, ...]) -> list[str]:
    """Module names (relative to a layer, e.g. ``self_attn.q_proj``) that the targets select."""
    names: list[str] = []
    for layer in layers:
        names += [n for n in linear_names(layer) if n not in names]
    chosen: set[str] = set()
    for target in targets:
        if target == "all-linear":
            match = names
        elif target == "attention":
            match = [n for n in names if _is_attention(n)]
        elif target == "mlp":
            match = [n for n in names if _is_mlp(n)]
        elif target in ("q", "k", "v", "o"):
            match = [n for n in names if n.rsplit(".", 1)[-1] in (f"{target}_proj", f"w{target}")]
        else:
            match = [n for n in names if n == target or n.endswith("." + target)]
        if not match:
            raise UserError(f"targets (adapter.targets, --targets): {target!r} matches no linear layer of this "
                            f"model; its layers have {', '.join(names)}")
        chosen.update(match)
    return sorted(chosen)


def apply_method(model: nn.Module, adapter: AdapterConfig) -> dict[str, Any]:
    """Freeze the base and make the method's weights trainable; returns the adapter_config.json
    mlx-lm reads back (fine_tune_type, num_layers, lora_parameters)."""
    method = method_for(adapter.fine_tune_type)
    layers = model.layers
    # More layers than the model has means all of them (mlx-lm raises instead; the default 16
    # would then fail on every small model).
    num_layers = len(layers) if adapter.num_layers == -1 else min(adapter.num_layers, len(layers))
    model.freeze()
    keys = resolve_targets(layers[len(layers) - num_layers:], adapter.targets) if method.has_adapter else []
    lora_parameters = method.apply(model, adapter, num_layers, keys)
    return {"fine_tune_type": method.saves_as, "num_layers": num_layers, "lora_parameters": lora_parameters}


def enable_grad_checkpoint(layers: list[nn.Module]) -> None:
    """Recompute these layers' activations in the backward pass.

    mlx-lm's ``grad_checkpoint`` replaces ``__call__`` of the layer's class for
    every instance in the process (a chat model loaded later in the same
    process would be checkpointed too) and wraps twice when called twice; here
    the class is patched once and only layers marked ``_grad_checkpoint`` take
    the checkpointed path.

    On the H200 (1B llama, 8 × 1024, bench/gpu_memory_probe.py) the step kept 13.5 GB
    with it against 22.3 without — not one layer's worth: MLX queues the layers'
    recomputations ahead of the device. A recomputation made to wait for the gradient
    from the layer above (``mx.depends`` on the cotangent) kept the same 13.5 GB and was
    5% slower, so it was not kept.
    """
    cls = type(layers[0])
    if not cls.__dict__.get("_mlx_lora_checkpointable", False):
        original = cls.__call__

        def call(self, *args, **kwargs):
            if not self.__dict__.get("_grad_checkpoint", False):
                return original(self, *args, **kwargs)

            def inner(params, *inner_args, **inner_kwargs):
                self.update(params)
                return original(self, *inner_args, **inner_kwargs)

            return mx.checkpoint(inner)(self.trainable_parameters(), *args, **kwargs)

        cls.__call__ = call
        cls._mlx_lora_checkpointable = True
    for layer in layers:
        object.__setattr__(layer, "_grad_checkpoint", True)


def prepare_model(config: TrainConfig, reporter: Reporter = NullReporter()) -> PreparedModel:
    """Load the base and apply the method; seeds MLX first so the adapter's initialisation is the seed's."""
    model, tokenizer, folder, dtype, notes = load_base(config, reporter)
    total = count_parameters(model)
    mx.random.seed(config.run.seed)
    adapter_config = apply_method(model, config.adapter)
    if config.adapter.num_layers > len(model.layers):
        notes.append(f"num_layers {config.adapter.num_layers} is more than the model's {len(model.layers)} "
                     "layers: adapting all of them")
    trainable = trainable_count(model)
    method = method_for(config.adapter.fine_tune_type)
    if method.has_adapter:
        total += trainable
    if DEQUANTIZED_MATMUL and backend.backend_name() in DEQUANTIZED_MATMUL:
        from mlx_lora.methods.tensors.qmatmul import dequantized_matmul_layers

        if dequantized_matmul_layers(model, forward=DEQUANTIZED_MATMUL_FORWARD):
            notes.append("the quantised base multiplies through dequantised weights, one layer at a time "
                         "(faster than quantised matmuls for training on this backend)")
    if LEAN_SWIGLU:
        from mlx_lora.methods.tensors.swiglu import use_lean_swiglu

        use_lean_swiglu(model)
    if config.model.grad_checkpoint:
        enable_grad_checkpoint(model.layers)
    adapter_config["model"] = config.model.model
    adapter_config["base_model_path"] = str(folder)
    if method.has_adapter:
        adapter_config["alpha"] = config.adapter.alpha
        adapter_config["rslora"] = config.adapter.rslora
    return PreparedModel(model, tokenizer, folder, adapter_config, trainable, total, dtype, notes)


def trained_weights(model: nn.Module) -> dict[str, mx.array]:
    """What an adapter file holds: the trainable weights (lora_a, lora_b, DoRA's m; or, for full
    fine-tuning, the adapted layers' weights)."""
    return dict(tree_flatten(model.trainable_parameters()))


def is_lora_b(path: str, _value=None) -> bool:
    """LoRA+ gives these a higher learning rate (B is the matrix initialised to zero)."""
    return path.rsplit(".", 1)[-1] == "lora_b"
