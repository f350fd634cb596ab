"""How much memory a training run will need, before any weight is loaded.

:func:`estimate_training_memory` adds up, in bytes:

- ``weights``: the base as it is held for the run (dequantised to float32 on
  CPU; quantised weights stay quantised on a GPU; the compute dtype otherwise);
- ``trainable``, ``gradients``, ``optimizer``: the trained weights (LoRA's A
  and B in float32, as mlx-lm creates them; the adapted layers' weights for
  full fine-tuning), the gradient sum plus the scaled copy made by the update,
  and Adam's two moments;
- ``activations``: what the backward pass keeps per adapted layer and token
  (only layers from the first adapted one up carry gradients, so frozen lower
  layers keep nothing), or only each layer's input with gradient
  checkpointing plus one layer recomputed;
- ``attention``: the (B, heads, L, L) probabilities MLX keeps per adapted
  layer on CPU (its fused attention has no fused backward there);
- ``loss``: the logits and softmax of the LM head (vocabulary-wide rows, in
  float32) at the trained positions, or at every position when the whole
  (B, L, V) logits are formed, or one chunk's worth with a chunked loss.

The model's shape comes from ``config.json`` or a GGUF file's header (walked
memory-mapped; tensors are not loaded). Coefficients
were fitted to peaks measured by ``bench/memory_check.py`` (MLX 0.32; CPU in
float32 and the H200 in bfloat16; RESULTS.md has the tables): the estimates
fall within 15% of the measured peaks there. On Apple GPUs (Metal) they are
not measured yet.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

from mlx_lora.errors import UserError
from mlx_lora.methods import method_for
from mlx_lora.methods.tensors.swiglu import SWIGLU_MODEL_TYPES
from mlx_lora.train.batches import rows_per_pass

GB = 1e9

# Per adapted layer and token, the activations the backward keeps, in values of the
# compute dtype: the residual input, the two normalised inputs, the attention output,
# the mid-layer residual (5 D), q, k and v, and SwiGLU's gate, up, sigmoid, silu and product
# (5 I). Fitted on CPU float32 peaks of three shapes (demo D=576 I=1536; D=256 I=2048;
# D=1024 I=512; bench/memory_check.py): 5.2 D + 5.06 I + 1.0 (q + k + v).
HIDDEN_PER_TOKEN = 5.25
INTERMEDIATE_PER_TOKEN = 5.0
QKV_PER_TOKEN = 1.0
# Where the trainer's SwiGLU keeps only gate and up (mlx_lora/methods/tensors/swiglu.py, the
# model types of its SWIGLU_MODEL_TYPES): 2 fewer (sigmoid and silu), the 3 left are gate, up and
# the product. Measured with bench/memory_check.py --mlx-lm-swiglu on the demo model:
# 10.04 GB against 11.55 at 4 x 1024 (r16, every layer), 1.38 against 1.48 at 2 x 512 (8 layers).
LEAN_INTERMEDIATE_PER_TOKEN = 3.0
# The unchunked loss keeps ≈ 4.5 vocabulary-wide float32 rows per position it is computed
# at (the head's output, the softmax, the gradient flowing back; measured 4.3 on the demo
# model, 4.9 at D=256 V=8192). The chunked, fused loss (evaluate._head_loss) holds ≈ 8
# rows per position of one chunk (5–14 measured, fitted on the total): logits, their exponent, the
# one-hot difference and MLX's temporaries, but only for 256 positions.
LOSS_ROWS_PER_POSITION = 4.5
LOSS_ROWS_PER_CHUNK_POSITION = 8.0
# Gemma 2's final soft-capping keeps ≈ 2 more vocabulary-wide rows per position (the capped
# logits and tanh's output for its backward; tests/models, gemma2 at 4 × 256: 1.25 GB measured
# against 0.95 GB estimated without them).
SOFTCAP_ROWS_PER_POSITION = 2.0
GPU_CHECKPOINT_SHARE = 0.6  # 0.53 of an eager step (session 2); the trainer's compiled step, 0.6
# On a GPU the trainer's peaks (compiled step, LoRA products in bf16; bench/RESULTS.md,
# "Training performance") are the counts above times 0.8–2.4: the host queues work ahead of
# the device, and the buffers of queued kernels are held until they run — more so the
# shorter the kernels (1B llama: 1.6× at 8 × 1024, 2.4× at 2 × 1024; 8B: 0.8× at 4 × 1024,
# 1.2× at 1 × 1024). The estimate takes the upper part of that range (0.8–1.25× the 1B
# peaks, 1.25–1.9× the 8B's), so "will it fit" errs on the safe side.
GPU_ACTIVATION_FACTOR = 2.0
# (B, heads, L, L) float32 probabilities kept per adapted layer (CPU: the fused
# attention falls back to matmul + softmax for its backward), plus ~3 more such buffers
# while one layer's attention is differentiated (scores, their gradient; measured: demo,
# 8 × 1024 with checkpointing, 2.67 GB against 1.6 without this term).
ATTENTION_PROBS_PER_LAYER = 1.0
ATTENTION_BACKWARD_BUFFERS = 3.0


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a decoder-only transformer: the llama family, and
    the quirks of the others (tests/models measures each: bench/RESULTS.md, "Model families")."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool = True
    quantized_bits: int = 0  # 0: stored in floating point
    quantized_group_size: int = 64
    stored_dtype_bytes: int = 2  # float16/bfloat16 as stored; 4 for float32
    attention_bias: bool = False  # qwen2: biases on q, k and v
    qk_norm: bool = False  # qwen3, gemma3: an RMSNorm of head_dim on queries and keys
    norms_per_layer: int = 2  # gemma2/gemma3: 4 (pre and post attention and MLP)
    fused_projections: bool = False  # phi3: qkv_proj and gate_up_proj
    num_experts: int = 0  # stored experts per layer (qwen3_moe); 0: a dense MLP
    experts_per_token: int = 0  # active experts per token
    expert_intermediate_size: int = 0
    full_logits: bool = False  # the loss cannot run the head at trained positions only (gemma)
    swiglu: bool = False  # its MLP is mlx-lm's swiglu (the trainer's lean SwiGLU applies)
    logit_softcapping: bool = False  # gemma2: tanh(logits / cap) · cap over the whole (B, L, V)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one transformer layer (LoRA's targets; a mixture of
        experts' switch layers are counted by :attr:`expert_parameters`, its router here)."""
        d, q, kv, i = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim, \
            self.intermediate_size
        if self.fused_projections:
            return {"self_attn.qkv_proj": (d, q + 2 * kv), "self_attn.o_proj": (q, d),
                    "mlp.gate_up_proj": (d, 2 * i), "mlp.down_proj": (i, d)}
        attention = {"self_attn.q_proj": (d, q), "self_attn.k_proj": (d, kv), "self_attn.v_proj": (d, kv),
                     "self_attn.o_proj": (q, d)}
        if self.num_experts:
            return {**attention, "mlp.gate": (d, self.num_experts)}
        return {**attention, "mlp.gate_proj": (d, i), "mlp.up_proj": (d, i), "mlp.down_proj": (i, d)}

    @property
    def expert_parameters(self) -> int:
        """All stored experts of one layer: gate, up and down of each (they are all held in memory)."""
        return self.num_experts * 3 * self.hidden_size * self.expert_intermediate_size

    @property
    def active_intermediate_size(self) -> int:
        """The MLP width one token passes through: the active experts' together for a mixture."""
        return self.experts_per_token * self.expert_intermediate_size if self.num_experts else \
            self.intermediate_size

    @property
    def layer_linear_parameters(self) -> int:
        return sum(a * b for a, b in self.linear_shapes().values()) + self.expert_parameters

    @property
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def parameters(self) -> int:
        per_layer = self.norms_per_layer * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0) + \
            ((self.num_heads + 2 * self.num_kv_heads) * self.head_dim if self.attention_bias else 0)
        norms = self.num_layers * per_layer + self.hidden_size
        return self.num_layers * self.layer_linear_parameters + self.embedding_parameters + norms


_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def shape_from_config(config: dict) -> ModelShape:
    """A :class:`ModelShape` from a Hugging Face ``config.json`` dict."""
    text = config.get("text_config", config)  # multimodal wrappers keep the language model's shape here
    try:
        hidden = int(text["hidden_size"])
        heads = int(text["num_attention_heads"])
        quant = config.get("quantization") or config.get("quantization_config") or {}
        kind = str(text.get("model_type", ""))
        experts = int(text.get("num_experts") or text.get("num_local_experts") or 0) \
            if text.get("moe_intermediate_size") else 0
        dtype = config.get("torch_dtype") or config.get("dtype") or "bfloat16"  # transformers 5 writes dtype
        return ModelShape(
            attention_bias=bool(text.get("attention_bias", kind in ("qwen2", "qwen2_moe"))),
            qk_norm=kind.startswith(("qwen3", "gemma3", "olmo2")), norms_per_layer=4 if kind.startswith("gemma") and
            kind not in ("gemma",) else 2, fused_projections=kind in ("phi3", "phimoe"),
            num_experts=experts, experts_per_token=int(text.get("num_experts_per_tok") or 0) if experts else 0,
            expert_intermediate_size=int(text.get("moe_intermediate_size") or 0) if experts else 0,
            # mlx-lm's gemma models compute the head inside Model.__call__ (gemma3's tie flag lives on
            # the Model, not its args), so the trained-positions loss cannot split them (evaluate._split_head)
            full_logits=kind.startswith("gemma") or bool(text.get("final_logit_softcapping")),
            logit_softcapping=bool(text.get("final_logit_softcapping", kind == "gemma2")),
            swiglu=kind in SWIGLU_MODEL_TYPES,
            hidden_size=hidden, intermediate_size=int(text["intermediate_size"]),
            num_layers=int(text["num_hidden_layers"]), num_heads=heads,
            num_kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads), vocab_size=int(text["vocab_size"]),
            tied_embeddings=bool(text.get("tie_word_embeddings", False)),
            quantized_bits=int(quant.get("bits", 0) or 0), quantized_group_size=int(quant.get("group_size", 64) or 64),
            stored_dtype_bytes=_DTYPE_BYTES.get(str(dtype), 2))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise UserError(f"config.json: cannot read the model's shape (missing or bad {exc})") from exc


def shape_from_gguf(path: str | Path) -> ModelShape:
    """A :class:`ModelShape` from a GGUF file's metadata and tensor table (nothing is loaded)."""
    from gguf.constants import GGMLQuantizationType

    from mlx_lora.models.gguf import SUPPORTED_ARCHS, check_gguf_model, gguf_to_hf_config, read_gguf_header

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such GGUF file")
    header = read_gguf_header(path)
    check_gguf_model(header, path, SUPPORTED_ARCHS)  # sizes in bounds before they are multiplied
    metadata, tensors = header.metadata, header.tensor_types
    config = gguf_to_hf_config(metadata, has_output="output.weight" in tensors)
    from mlx_lora.models.gguf_tensors import import_plan

    plan = import_plan(path, header=header)
    if plan.must_dequantize:  # K-quants…: imported dequantised (float16 by default), not quantised
        return shape_from_config({**config, "quantization": {}, "torch_dtype": plan.dequantize})
    bits = 0
    for name, kind in tensors.items():
        if name.endswith("attn_q.weight"):
            label = GGMLQuantizationType(kind).name if kind in GGMLQuantizationType._value2member_map_ else ""
            if label.startswith("Q") and label[1:2].isdigit():
                bits = int(label[1])
    # gguf Q4_0/Q8_0 tensors are read as MLX affine quantisation with groups of 32
    quant = {"bits": bits, "group_size": 32} if bits else {}
    return shape_from_config({**config, "quantization": quant, "torch_dtype": "float16"})


def read_model_shape(model: str | Path) -> ModelShape:
    """The shape of a model: ``demo``, a model folder, its ``config.json``, a ``.gguf`` file,
    or a Hub id already in the local cache. Raises :class:`UserError` when it cannot be read."""
    text = str(model)
    path = Path(text).expanduser()
    if text == "demo":
        from mlx_lora.models.demo import demo_gguf_path

        return shape_from_gguf(demo_gguf_path())
    if path.suffix.lower() == ".gguf":
        return shape_from_gguf(path)
    if path.is_dir():
        path = path / "config.json"
    elif not path.exists() and text.count("/") == 1 and not text.startswith((".", "/", "~")):
        from mlx_lora.models import hub

        path = hub.cached_model_path(text) / "config.json"
    if not path.is_file():
        raise UserError(f"{path}: no config.json to read the model's shape from")
    from mlx_lora.models.local import read_config

    return shape_from_config(read_config(path))  # read and checked as for loading (sizes in bounds)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per part (see the module docstring) and their total."""

    parts: dict[str, int]
    batch: tuple[int, int]  # the (rows, length) of the largest batch the estimate is for

    @property
    def total_bytes(self) -> int:
        return sum(self.parts.values())

    @property
    def total_gb(self) -> float:
        return self.total_bytes / GB

    def fits(self, available_bytes: int, headroom: float = 0.85) -> bool:
        """Whether the run fits in ``available_bytes`` with ``1 - headroom`` left for the OS and the app."""
        return self.total_bytes <= available_bytes * headroom

    def describe(self) -> str:
        """One line, largest parts first, e.g. ``6.1 GB: activations 3.2, weights 0.5, …``."""
        parts = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return f"{self.total_gb:.1f} GB: " + ", ".join(f"{name} {value / GB:.2f}" for name, value in parts if value)


def _targets(shape: ModelShape, targets: Sequence[str]) -> list[str]:
    names = list(shape.linear_shapes())
    chosen: set[str] = set()
    for target in targets:
        if target == "all-linear":
            chosen.update(names)
        elif target == "attention":
            chosen.update(n for n in names if n.startswith("self_attn."))
        elif target == "mlp":
            chosen.update(n for n in names if n.startswith("mlp."))
        elif target in ("q", "k", "v", "o"):
            chosen.add(f"self_attn.{target}_proj")
        else:
            chosen.update(n for n in names if n == target or n.endswith("." + target))
    return sorted(chosen)


def grpo_kv_cache_bytes(shape: ModelShape, group_size: int, length: int, compute: int) -> int:
    """GRPO's sampling: keys and values of every layer for ``group_size`` rows of ``length``
    tokens (prompt + answer), plus the (G, V) float32 logits of a decoding step. The sampling
    and the update share the one model and do not run at the same time; the cache is counted
    on top of the update anyway, because MLX keeps freed buffers for reuse."""
    kv = 2 * shape.num_layers * group_size * length * shape.num_kv_heads * shape.head_dim * compute
    return kv + group_size * shape.vocab_size * 4


def largest_pass(lengths: Sequence[int], config, trained_tokens: int | None = None) -> tuple[tuple[int, int], float]:
    """((rows, tokens), trained share) of the widest forward pass training ``config`` makes
    on examples of these token ``lengths`` (the training split's, untruncated, as
    :class:`mlx_lora.data.stats.DatasetStats` has them), for :func:`estimate_training_memory`'s
    ``batch_tokens`` and ``trained_share``.

    Batches are padded to their longest example and examples are sorted by length inside
    windows of batches (train/batches.py), so the widest batch holds the longest examples:
    its width is the longest example cut to ``max_seq_length`` ("drop" leaves the longer
    ones out), its rows the batch size, or fewer where ``max_batch_tokens`` cuts it into
    micro-batches. The trained share is the data's own (``trained_tokens`` / all tokens;
    1.0 when unknown), diluted by the padding of that pass. The estimate for 4 × 2048 of
    the pirate sample (examples of ≤ 120 tokens) is then the real 4 × 120, not 4 × 2048."""
    data = config.data
    limit = data.max_seq_length
    kept = [n for n in lengths if data.too_long != "drop" or n <= limit]
    if not kept:
        return (data.batch_size, limit), 1.0
    longest_first = sorted((min(n, limit) for n in kept), reverse=True)
    width = longest_first[0]
    rows = min(data.batch_size, len(longest_first))
    if data.max_batch_tokens:
        rows = min(rows, rows_per_pass(width, data.max_batch_tokens))
    real = sum(longest_first[:rows])
    share = trained_tokens / max(sum(lengths), 1) if trained_tokens is not None else 1.0
    return (rows, width), min(1.0, share * real / (rows * width))


def estimate_training_memory(config, *, shape: ModelShape | None = None, device: str | None = None,
                             batch_tokens: tuple[int, int] | None = None, trained_share: float = 1.0,
                             loss_chunk: int | None = None, full_logits: bool = False) -> MemoryEstimate:
    """Peak memory of a training run with this :class:`~mlx_lora.config.TrainConfig`.

    ``shape``: the model's shape (default: read from ``config.model.model`` without loading
    it, see :func:`read_model_shape`). ``device``: ``"cpu"`` or ``"gpu"`` (default: this
    machine's). ``batch_tokens``: the (rows, length) of the largest forward pass (default:
    batch size × max_seq_length, or fewer rows where ``max_batch_tokens`` cuts a batch
    into micro-batches — batches are padded to their longest example, and with a long
    tail the longest batch is that wide; packed batches, ``data.pack``, are that wide in every
    pass). ``trained_share``: the share of positions that
    carry the loss (1.0, the worst case, by default; ~0.5–0.9 for chats with the prompt
    masked). ``loss_chunk``: positions per chunk of a chunked loss (None: our trainer's
    default; 0: unchunked). ``full_logits``: the (B, L, V) logits are formed (mlx-lm's
    trainer, or a model our trained-positions loss cannot split).

    Example::

        estimate = estimate_training_memory(TrainConfig().replace(model="demo", batch_size=8))
        estimate.total_gb, estimate.fits(16 * 2**30), estimate.describe()
    """
    from mlx_lora import backend

    shape = shape or read_model_shape(config.model.model)
    device = device or backend.device_kind()
    on_cpu = device == "cpu"
    model, adapter, data = config.model, config.adapter, config.data
    compute = _DTYPE_BYTES.get(model.compute_dtype) or (4 if on_cpu else shape.stored_dtype_bytes)

    # -- weights -----------------------------------------------------------
    bits = shape.quantized_bits or model.quantize_bits
    group = shape.quantized_group_size if shape.quantized_bits else model.quantize_group_size
    method = method_for(adapter.fine_tune_type)
    linear = shape.num_layers * shape.layer_linear_parameters
    rest = shape.parameters - linear
    if bits and not on_cpu and method.has_adapter:
        # packed bits plus a scale and a bias (2 bytes each) per group; embedding quantised too
        weights = (linear + shape.embedding_parameters) * (bits / 8 + 4 / group) + \
            (rest - shape.embedding_parameters) * compute
    else:
        weights = shape.parameters * compute

    # -- trained weights, gradients, optimiser -----------------------------
    layers = shape.num_layers if adapter.num_layers == -1 else min(adapter.num_layers, shape.num_layers)
    linear_shapes = shape.linear_shapes()
    targeted = ({name: sizes for name, sizes in linear_shapes.items() if name in _targets(shape, adapter.targets)}
                if method.has_adapter else {})  # name -> (in, out) of the adapted linears of one layer
    trainable = method.trainable_bytes(adapter, targeted, layers, shape.layer_linear_parameters +
                                       2 * shape.hidden_size, compute)  # + the layer's two norms
    gradients = 2 * trainable  # the accumulated sum and the scaled (clipped) copy the update makes
    optimizer = 2 * trainable  # Adam's first and second moments
    if config.optimizer.state_bits == 8:  # a byte a value, a float32 scale and offset per 64 (optim8bit)
        optimizer = optimizer * (1 + 8 / 64) / 4

    # -- activations -------------------------------------------------------
    grpo = config.grpo if config.preference.objective == "grpo" else None
    if grpo is not None and batch_tokens is None:
        # GRPO's update: batch_size prompts × group_size answers, each prompt + answer long, the
        # head run at the answer tokens only (train/grpo.token_logps, unchunked)
        batch_tokens = (data.batch_size * grpo.group_size, data.max_seq_length + grpo.max_completion_tokens)
        trained_share = grpo.max_completion_tokens / batch_tokens[1]
        loss_chunk = 0 if loss_chunk is None else loss_chunk
    rows, length = batch_tokens or (data.batch_size, data.max_seq_length)
    if grpo is None and batch_tokens is None and data.max_batch_tokens:  # train/batches.micro_batches cuts wider batches
        rows = min(rows, rows_per_pass(length, data.max_batch_tokens))
    tokens = rows * length
    d, i = shape.hidden_size, shape.active_intermediate_size
    qkv = (shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim
    from mlx_lora.train import prepare

    intermediate = LEAN_INTERMEDIATE_PER_TOKEN if shape.swiglu and prepare.LEAN_SWIGLU else INTERMEDIATE_PER_TOKEN
    per_token = HIDDEN_PER_TOKEN * d + intermediate * i + QKV_PER_TOKEN * qkv  # values, one layer
    per_token_bytes = per_token * compute
    per_token_bytes += method.activation_bytes_per_token(adapter, targeted, compute)  # DoRA's float32 copies
    if not on_cpu:
        per_token_bytes *= GPU_ACTIVATION_FACTOR
    probs = ATTENTION_PROBS_PER_LAYER * rows * shape.num_heads * length * length * 4 if on_cpu else 0
    attention_backward = ATTENTION_BACKWARD_BUFFERS * probs
    if model.grad_checkpoint and not on_cpu:
        # Measured on the H200 (1B llama, 8 × 1024): checkpointing kept 53% of the activations
        # (17.9 GB against 30.7) instead of one layer's: MLX runs the layers' recomputations
        # side by side there. The estimate takes the measured share.
        activations = GPU_CHECKPOINT_SHARE * layers * per_token_bytes * tokens
        attention = layers * probs
        recompute = 0
    elif model.grad_checkpoint:
        # each layer keeps its input; one layer at a time is recomputed with everything it keeps
        activations = layers * d * tokens * compute + per_token_bytes * tokens
        attention = probs + attention_backward
        recompute = per_token_bytes * tokens + probs
    else:
        activations = layers * per_token_bytes * tokens
        attention = layers * probs + attention_backward
        recompute = 0

    if data.pack and grpo is None:
        # packed rows (train/packing.py) are as wide as max_seq_length in every pass, the same
        # (rows, length) as the padded worst case above; their block-diagonal mask adds one
        # (rows, 1, L, L) bool array per window size, held through the backward
        attention += rows * length * length

    # -- the LM head and the loss -------------------------------------------
    full_logits = full_logits or shape.full_logits
    positions = tokens if full_logits else math.ceil(tokens * trained_share)
    if loss_chunk is None:
        from mlx_lora.train.evaluate import DEFAULT_LOSS_CHUNK

        loss_chunk = 0 if full_logits else DEFAULT_LOSS_CHUNK
    rows_per_position = LOSS_ROWS_PER_POSITION + (SOFTCAP_ROWS_PER_POSITION if shape.logit_softcapping else 0)
    loss = rows_per_position * positions * shape.vocab_size * 4
    if loss_chunk and positions > loss_chunk:  # a few chunks cost no more than the whole (demo, 307 positions)
        loss = min(loss, LOSS_ROWS_PER_CHUNK_POSITION * loss_chunk * shape.vocab_size * 4)
    # with checkpointing the loss runs while only the layers' inputs are kept, before any
    # layer is recomputed: the two peaks do not add up
    loss = max(0, loss - recompute)

    parts = {"weights": int(weights), "trainable": int(trainable), "gradients": int(gradients),
             "optimizer": int(optimizer), "activations": int(activations), "attention": int(attention),
             "loss": int(loss)}
    if grpo is not None:
        parts["kv_cache"] = int(grpo_kv_cache_bytes(shape, grpo.group_size, length, compute))
    return MemoryEstimate(parts, (rows, length))

