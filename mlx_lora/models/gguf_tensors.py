"""Which GGUF tensors MLX can hold, what an import will cost, and the exact read of the rest.

``mx.load`` reads F32, F16, Q4_0, Q4_1 and Q8_0 tensors as they are (the Q types as MLX
affine quantisation, group 32, with the file's own float16 ``d``/``m`` as scales and
biases: lossless). Every other type it turns into float16 silently: K-quants (Q4_K_M
files hold Q4_K, Q6_K and, for rows not a multiple of 256, Q5_0/Q8_0), Q5_0/Q5_1 are
refused outright, and BF16 is rounded to float16. MLX cannot hold those quantisations, so
such a file is dequantised whole on import: each tensor is read from the memory-mapped
file and dequantised in float32 by gguf-py (``gguf.quants.dequantize``, llama.cpp's own
formulas in numpy: the reference transformers uses too), then rounded once to the stored
dtype. :func:`import_plan` says which way a file goes and how much memory the imported
model will take, from the header alone, before anything is loaded.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from mlx_lora.errors import UserError
from mlx_lora.models.gguf_header import GGUFHeader, read_gguf_header

__all__ = ["MLX_TYPES", "ImportPlan", "import_plan", "read_dequantized", "type_name"]

# GGML type -> bits per weight as MLX holds it (group 32: weight bits + float16 scale and bias)
MLX_TYPES = {0: 32.0, 1: 16.0, 2: 4 + 1.0, 3: 4 + 1.0, 8: 8 + 1.0}  # F32, F16, Q4_0, Q4_1, Q8_0
_QUANTISED_MLX = frozenset({2, 3, 8})
_BF16 = 30
_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


def type_name(kind: int) -> str:
    from gguf.constants import GGMLQuantizationType

    try:
        return GGMLQuantizationType(kind).name
    except ValueError:
        return f"type {kind}"


@dataclasses.dataclass(frozen=True)
class ImportPlan:
    """How a GGUF file will be imported, from its header."""

    path: Path
    types: dict[str, int]  # GGML type name -> tensor count
    dequantize: str | None  # the dtype the weights are written in; None: kept as in the file
    must_dequantize: bool  # the file holds types MLX cannot (K-quants, Q5_*, BF16…)
    model_bytes: int  # the imported model's weights, in memory and on disk

    @property
    def summary(self) -> str:
        """One sentence for the CLI and the models page, said before the import starts."""
        kinds = ", ".join(f"{name} ×{n}" for name, n in sorted(self.types.items(), key=lambda kv: -kv[1]))
        size = _human(self.model_bytes)
        if self.must_dequantize:
            exotic = sorted(name for name in self.types if name not in _MLX_NAMES)
            return (f"{self.path.name} holds {', '.join(exotic)} tensors, which MLX cannot hold: it is "
                    f"dequantised to {self.dequantize} on import and will take {size} of memory "
                    f"(and of disk) [{kinds}]")
        if self.dequantize:
            return f"{self.path.name}: dequantised to {self.dequantize} on import; it will take {size} of memory"
        return f"{self.path.name}: kept as in the file [{kinds}]; it will take {size} of memory"


_MLX_NAMES = frozenset({"F32", "F16", "Q4_0", "Q4_1", "Q8_0"})


def _human(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _elements(dims: tuple[int, ...]) -> int:
    count = 1
    for d in dims:
        count *= d
    return count


def import_plan(path: str | Path, dequantize: str | None = None, header: GGUFHeader | None = None) -> ImportPlan:
    """The plan for importing ``path`` (``dequantize`` as :func:`~mlx_lora.models.gguf.import_gguf`
    takes it). A file MLX cannot hold is dequantised to ``dequantize`` or, by default, to
    float16 (bfloat16 for a BF16 file): one rounding after the exact float32 value."""
    path = Path(path)
    header = header or read_gguf_header(path)
    kinds = [t.kind for t in header.tensors.values()]
    must = any(k not in MLX_TYPES for k in kinds)
    if dequantize is not None and dequantize not in _DTYPE_BYTES:
        raise UserError(f"dequantize must be float16, bfloat16 or float32, not {dequantize!r}")
    dtype = dequantize
    if must and dtype is None:
        dtype = "bfloat16" if set(kinds) - set(MLX_TYPES) == {_BF16} else "float16"
    total = 0
    for t in header.tensors.values():
        n = _elements(t.dims)
        if dtype is not None:
            total += n * _DTYPE_BYTES[dtype]
        else:
            total += int(n * MLX_TYPES[t.kind]) // 8
    return ImportPlan(path, dict(Counter(type_name(k) for k in kinds)), dtype, must, total)


def read_dequantized(path: str | Path, header: GGUFHeader, dtype: str) -> dict:
    """Every tensor of ``path`` as an mx.array of ``dtype`` (shape: GGUF dims reversed, as
    ``mx.load`` gives them), dequantised in float32 by gguf-py first. One tensor at a time:
    the float32 copy of one tensor is the only extra memory."""
    import mlx.core as mx
    import numpy as np
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    target = getattr(mx, dtype)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    try:
        for name, t in header.tensors.items():
            shape = tuple(reversed(t.dims))  # (rows…, row length)
            raw = data[t.offset:t.offset + t.nbytes]
            if t.kind == 0:
                values = raw.view(np.float32).reshape(shape)
            elif t.kind == 1:
                values = raw.view(np.float16).reshape(shape).astype(np.float32)
            else:
                qtype = GGMLQuantizationType(t.kind)
                block, block_bytes = GGML_QUANT_SIZES[qtype]
                rows = raw.reshape(*shape[:-1], shape[-1] // block * block_bytes)
                try:
                    values = dequantize(rows, qtype)  # float32, (rows…, row length)
                except NotImplementedError:
                    raise UserError(f"{path}: tensor {name} is {qtype.name}, which cannot be dequantised "
                                    "here (gguf-py has no dequantisation for it)") from None
            array = mx.array(np.ascontiguousarray(values, dtype=np.float32))
            array = array if target == mx.float32 else array.astype(target)
            mx.eval(array)
            out[name] = array
    finally:
        del data
    return out
