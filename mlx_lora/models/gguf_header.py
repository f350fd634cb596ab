"""A GGUF file's header read and checked before MLX's C reader sees the file.

:func:`read_gguf_header` walks the header, metadata and tensor table with every
length, count, type and offset checked against the file size (MLX's reader
trusts them and segfaulted on 28 of 60 random corruptions of a small file), and
returns a :class:`GGUFHeader`: the metadata (arrays as :class:`GGUFArray`, their
type and length, not their items) and each tensor's type and dimensions.

:func:`check_gguf_model` then checks that the header describes a model the
importer can build: head counts, widths and the block count are whole numbers
within config.json's bounds (:data:`mlx_lora.models.local.CONFIG_BOUNDS`), the
token list is a list of strings, token types are integers for every token,
special token ids are token ids, quantised tensors have two dimensions or more,
and every tensor the architecture needs is there with the shape the metadata
implies. A file that passes the walk but not this (a head count of 0, no token
list) was a traceback or an "internal error" in the import, or an imported
folder that failed in mlx-lm; now it is ``FILE: reason``.
"""

from __future__ import annotations

import dataclasses
import mmap
import struct

import numpy as np
from pathlib import Path

from mlx_lora.errors import UserError

# GGUF value types (gguf.GGUFValueType) -> struct format; 8 = string, 9 = array
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
GGUF_STRING = 8
GGUF_INTEGERS = frozenset({0, 1, 2, 3, 4, 5, 10, 11})
_GGUF_MAX_DIMS = 4  # GGML_MAX_DIMS
# GGML tensor types that are not quantised (F32, F16, I8, I16, I32, I64, F64, BF16)
_PLAIN_TYPES = frozenset({0, 1, 24, 25, 26, 27, 28, 30})


@dataclasses.dataclass(frozen=True)
class GGUFArray:
    """A metadata array as the walk sees it: its item type and length (the items are
    not read; ``len()`` works, so the token list's length is the vocabulary size)."""

    item_type: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclasses.dataclass(frozen=True)
class GGUFTensor:
    kind: int  # GGML type
    dims: tuple[int, ...]  # GGUF order: dims[0] is the row length (a weight's input features)
    offset: int = 0  # where its data starts, in bytes from the start of the file
    nbytes: int = 0  # how many bytes of data it has


@dataclasses.dataclass(frozen=True)
class GGUFHeader:
    metadata: dict
    tensors: dict[str, GGUFTensor]

    @property
    def tensor_types(self) -> dict[str, int]:
        return {name: t.kind for name, t in self.tensors.items()}


class _Cursor:
    """Bounds-checked little-endian reads over a GGUF file's bytes."""

    def __init__(self, data, bad) -> None:
        self.data, self.pos, self.bad = data, 0, bad  # data: an mmap (slices are bytes copies)

    def skip(self, n: int) -> int:
        if n < 0 or self.pos + n > len(self.data):
            raise self.bad(f"it is cut short (needs {n:,} bytes at byte {self.pos:,} of {len(self.data):,})")
        self.pos += n
        return self.pos - n

    def take(self, n: int) -> bytes:
        start = self.skip(n)
        return self.data[start:self.pos]

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.unpack("<Q"))
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise self.bad(f"a string at byte {self.pos - len(raw):,} is not UTF-8") from None

    def count(self, min_item_bytes: int) -> int:
        """An element count that the rest of the file could hold."""
        n = self.unpack("<Q")
        if n * min_item_bytes > len(self.data) - self.pos:
            raise self.bad(f"a count of {n:,} at byte {self.pos - 8:,} does not fit in the file")
        return n


def check_gguf(path: str | Path) -> None:
    """Walk a GGUF file's header, metadata and tensor table with every length, count, type
    and offset checked against the file, before ``mx.load`` (whose C reader trusts them) sees
    it. Raises :class:`UserError` naming the file. Reads the header only (memory-mapped)."""
    read_gguf_header(path)


def read_gguf_header(path: str | Path, values: bool = False) -> GGUFHeader:
    """The metadata and tensor table of a GGUF file, checked as :func:`check_gguf` says.
    ``gguf.GGUFReader`` took 17 s on the demo file on the loaded build machine (it maps
    every array into numpy); this takes 0.3 s. Metadata arrays are :class:`GGUFArray`
    (type and length) unless ``values``: then lists of strings or numpy arrays."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    sizes = {t.value: GGML_QUANT_SIZES[t] for t in GGMLQuantizationType if t in GGML_QUANT_SIZES}

    def bad(why: str) -> UserError:
        return UserError(f"{path}: not a valid GGUF file ({why}); it may be an incomplete download")

    def skip_value(cur: _Cursor, kind: int, depth: int = 0):
        if kind in _GGUF_SCALARS:
            return cur.unpack(_GGUF_SCALARS[kind])
        if kind == GGUF_STRING:
            return cur.string()
        if kind == 9 and depth == 0:
            item = cur.unpack("<I")
            if item not in _GGUF_SCALARS and item != GGUF_STRING:
                raise bad(f"an array of value type {item}")
            width = struct.calcsize(_GGUF_SCALARS[item]) if item in _GGUF_SCALARS else 8
            n = cur.count(width)
            if item in _GGUF_SCALARS:
                raw = cur.take(n * width)
                if values:
                    return np.frombuffer(raw, dtype=np.dtype(_GGUF_SCALARS[item])).copy()
            else:
                strings = [cur.string() for _ in range(n)]
                if values:
                    return strings
            return GGUFArray(item, n)
        raise bad(f"unknown metadata value type {kind}")

    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            cur = _Cursor(data, bad)
            if bytes(cur.take(4)) != b"GGUF":
                raise bad("bad magic number")
            version = cur.unpack("<I")
            if version not in (2, 3):
                raise bad(f"version {version}; versions 2 and 3 are read")
            n_tensors = cur.unpack("<Q")
            n_kv = cur.count(8 + 4)  # each entry: a key length and a value type at least
            alignment = 32
            metadata: dict = {}
            for _ in range(n_kv):
                key = cur.string()
                value = metadata[key] = skip_value(cur, cur.unpack("<I"))
                if key == "general.alignment":
                    if type(value) is not int or value <= 0 or value & (value - 1):
                        raise bad(f"general.alignment {value!r} is not a power of two")
                    alignment = value
            if n_tensors * (8 + 4 + 4 + 8) > len(data) - cur.pos:
                raise bad(f"{n_tensors:,} tensors do not fit in the file")
            extents = []
            seen: set[str] = set()
            tensors: dict[str, GGUFTensor] = {}
            for _ in range(n_tensors):
                name = cur.string()
                if name in seen:
                    raise bad(f"tensor {name[:80]!r} appears twice")
                seen.add(name)
                n_dims = cur.unpack("<I")
                if not 1 <= n_dims <= _GGUF_MAX_DIMS:
                    raise bad(f"tensor {name[:80]!r} has {n_dims} dimensions")
                dims = tuple(cur.unpack("<Q") for _ in range(n_dims))
                kind = cur.unpack("<I")
                offset = cur.unpack("<Q")
                if kind not in sizes:
                    raise bad(f"tensor {name[:80]!r} has an unknown type {kind}")
                block, block_bytes = sizes[kind]
                if any(d == 0 for d in dims) or dims[0] % block:
                    raise bad(f"tensor {name[:80]!r} has a bad shape {list(dims)}")
                elements = 1
                for d in dims:
                    elements *= d
                if offset % alignment:
                    raise bad(f"tensor {name[:80]!r} is not aligned")
                extents.append((name, kind, dims, offset, elements // block * block_bytes))
            start = -(-cur.pos // alignment) * alignment
            for name, kind, dims, offset, nbytes in extents:
                if start + offset + nbytes > len(data):
                    raise bad(f"tensor {name[:80]!r} ends past the end of the file: the file is cut short")
                tensors[name] = GGUFTensor(kind, dims, start + offset, nbytes)
    except (OSError, ValueError) as exc:  # ValueError: mmap of an empty file
        raise UserError(f"{path}: cannot be read as a GGUF file: {exc}") from exc
    return GGUFHeader(metadata, tensors)


# architecture metadata key -> the config.json key whose bound applies (local.CONFIG_BOUNDS)
_SIZES = {
    "block_count": "num_hidden_layers",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "rope.dimension_count": "head_dim",
    "attention.key_length": "head_dim",  # after the rotary width: a head's own width where the file says it
    "context_length": "max_position_embeddings",
    "vocab_size": "vocab_size",
    "expert_count": "num_experts",
    "expert_feed_forward_length": "moe_intermediate_size",
}
# architecture metadata key -> the config.json key whose limit applies (local.CONFIG_POSITIVE)
_POSITIVE = {"attention.layer_norm_rms_epsilon": "rms_norm_eps", "rope.freq_base": "rope_theta"}
_REQUIRED_SIZES = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count")


def _shown(value) -> str:
    if isinstance(value, GGUFArray):
        return f"a list of {value.length:,}"
    return f"{type(value).__name__} {value!r}"[:60]


def check_gguf_model(header: GGUFHeader, path: str | Path, architectures: frozenset[str] | set[str]) -> dict:
    """Check that the header describes a model of one of ``architectures`` that the
    importer can build (see the module docstring). Returns the sizes it found
    (config.json names: ``num_hidden_layers``, ``hidden_size``, ``head_dim`` …);
    raises :class:`UserError` ``FILE: reason``."""
    from mlx_lora.models.local import CONFIG_BOUNDS, CONFIG_POSITIVE, check_config, check_positive

    metadata, tensors = header.metadata, header.tensors

    def bad(why: str) -> UserError:
        return UserError(f"{path}: {why}")

    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or arch not in architectures:
        raise bad(f"GGUF architecture {str(arch)[:40]!r} is not supported yet "
                  f"(supported: {', '.join(sorted(architectures))})")
    sizes: dict[str, int] = {}
    for key, hf_key in _SIZES.items():
        value = metadata.get(f"{arch}.{key}")
        if value is None:
            if key in _REQUIRED_SIZES:
                raise bad(f"no {arch}.{key} in the metadata")
            continue
        bound = CONFIG_BOUNDS[hf_key]
        if type(value) is not int or not 1 <= value <= bound:
            raise bad(f"{arch}.{key} must be a whole number from 1 to {bound:,}, got {_shown(value)}")
        sizes[hf_key] = value
    for key, hf_key in _POSITIVE.items():
        value = metadata.get(f"{arch}.{key}")
        if value is not None:
            check_positive(str(path), f"{arch}.{key}", value, CONFIG_POSITIVE[hf_key])
    heads, hidden = sizes["num_attention_heads"], sizes["hidden_size"]
    sizes.setdefault("num_key_value_heads", heads)
    sizes.setdefault("head_dim", hidden // heads)

    tokens = metadata.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise bad("no tokenizer.ggml.tokens (the token list) in the metadata")
    if not isinstance(tokens, GGUFArray) or tokens.item_type != GGUF_STRING or not tokens.length:
        raise bad(f"tokenizer.ggml.tokens must be a list of strings, got {_shown(tokens)}")
    vocab = sizes.setdefault("vocab_size", tokens.length)
    if tokens.length > vocab:
        raise bad(f"{tokens.length:,} tokens for a vocabulary of {vocab:,} ({arch}.vocab_size)")
    check_config(sizes, path)  # the same bounds and divisibility as a config.json (kv heads, …)
    types = metadata.get("tokenizer.ggml.token_type")
    if types is not None:
        if not isinstance(types, GGUFArray) or types.item_type not in GGUF_INTEGERS:
            raise bad(f"tokenizer.ggml.token_type must be a list of integers, got {_shown(types)}")
        if types.length != tokens.length:
            raise bad(f"tokenizer.ggml.token_type has {types.length:,} entries for {tokens.length:,} tokens")
    merges = metadata.get("tokenizer.ggml.merges")
    if merges is not None and not (isinstance(merges, GGUFArray) and merges.item_type == GGUF_STRING):
        raise bad(f"tokenizer.ggml.merges must be a list of strings, got {_shown(merges)}")
    for name in ("bos", "eos", "padding", "unknown"):
        value = metadata.get(f"tokenizer.ggml.{name}_token_id")
        if value is not None and (type(value) is not int or not 0 <= value < vocab):
            raise bad(f"tokenizer.ggml.{name}_token_id {str(value)[:30]} is not a token id "
                      f"(the vocabulary has {vocab:,})")

    for name, tensor in tensors.items():
        if tensor.kind not in _PLAIN_TYPES and len(tensor.dims) < 2:
            raise bad(f"tensor {name[:80]} is quantised but has 1 dimension; quantised weights are matrices")
    _check_tensor_shapes(tensors, sizes, arch, bad)
    return sizes


def _check_tensor_shapes(tensors: dict[str, GGUFTensor], sizes: dict[str, int], arch: str, bad) -> None:
    hidden, ffn, layers = sizes["hidden_size"], sizes["intermediate_size"], sizes["num_hidden_layers"]
    q_rows = sizes["num_attention_heads"] * sizes["head_dim"]
    kv_rows = sizes["num_key_value_heads"] * sizes["head_dim"]
    vocab = sizes["vocab_size"]
    expected = {"token_embd.weight": (hidden, vocab), "output_norm.weight": (hidden,)}
    if "output.weight" in tensors:
        expected["output.weight"] = (hidden, vocab)
    for i in range(layers):
        block = {"attn_q.weight": (hidden, q_rows), "attn_k.weight": (hidden, kv_rows),
                 "attn_v.weight": (hidden, kv_rows), "attn_output.weight": (q_rows, hidden),
                 "ffn_gate.weight": (hidden, ffn), "ffn_up.weight": (hidden, ffn), "ffn_down.weight": (ffn, hidden),
                 "attn_norm.weight": (hidden,), "ffn_norm.weight": (hidden,)}
        if arch == "qwen2":  # mlx-lm's qwen2 has q/k/v biases
            block.update({"attn_q.bias": (q_rows,), "attn_k.bias": (kv_rows,), "attn_v.bias": (kv_rows,)})
        if arch == "qwen3moe":  # a router and stacked experts instead of one MLP
            experts, width = sizes.get("num_experts", 0), sizes.get("moe_intermediate_size", 0)
            for dense in ("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"):
                del block[dense]
            block.update({"ffn_gate_inp.weight": (hidden, experts), "ffn_gate_exps.weight": (hidden, width, experts),
                          "ffn_up_exps.weight": (hidden, width, experts),
                          "ffn_down_exps.weight": (width, hidden, experts)})
        if arch in ("gemma2", "gemma3"):  # the norms after attention and after the MLP
            block.update({"post_attention_norm.weight": (hidden,), "post_ffw_norm.weight": (hidden,)})
        if arch in ("qwen3", "gemma3"):  # the per-head RMSNorm of queries and keys
            block.update({"attn_q_norm.weight": (sizes["head_dim"],), "attn_k_norm.weight": (sizes["head_dim"],)})
        if arch == "phi3":  # q/k/v fused in attn_qkv, gate and up in ffn_up
            for fused in ("attn_q.weight", "attn_k.weight", "attn_v.weight", "ffn_gate.weight"):
                del block[fused]
            block.update({"attn_qkv.weight": (hidden, q_rows + 2 * kv_rows), "ffn_up.weight": (hidden, 2 * ffn)})
        expected.update({f"blk.{i}.{name}": shape for name, shape in block.items()})
    if arch == "phi3" and "rope_factors_long.weight" in tensors:
        raise bad("Phi-3's long-context rope factors (rope_factors_long) are not imported yet: "
                  "use the model's safetensors from the Hub")
    for name, shape in expected.items():
        if name not in tensors:
            raise bad(f"tensor {name} is missing (the metadata says {layers} blocks of width {hidden})")
        if tensors[name].dims != shape:
            raise bad(f"tensor {name} has shape {list(tensors[name].dims)}; the metadata needs {list(shape)}")
    for name in tensors:
        parts = name.split(".")
        if parts[0] == "blk" and not (len(parts) > 2 and parts[1].isdecimal() and int(parts[1]) < layers):
            raise bad(f"tensor {name[:80]} belongs to no block (the metadata says {layers} blocks)")
