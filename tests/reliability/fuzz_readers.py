"""Hypothesis fuzzing of the native-code file readers, run as a child process by
test_fuzz.py (a segfault in MLX's C++ readers must fail one test, not end the test session):

    python -m tests.reliability.fuzz_readers OUT_DIR EXAMPLES

Prints one JSON line: {"gguf": {...outcome counts}, "safetensors": {...}}. Any exception
other than UserError fails (traceback on stderr, exit status 1)."""

from __future__ import annotations

import collections
import json
import shutil
import struct
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlx_lora  # noqa: F401  (BLAS preload before mlx.core)
from mlx_lora.errors import UserError

SETTINGS = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def small_gguf(path: Path) -> bytes:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "c", "<eos>"])
    writer.add_token_merges(["a b"])
    writer.add_eos_token_id(3)
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.random((4, 8), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", rng.random((8, 8)).astype(np.float16))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def small_safetensors(path: Path) -> bytes:
    import mlx.core as mx

    mx.save_safetensors(str(path), {"a": mx.arange(12, dtype=mx.float32).reshape(3, 4),
                                    "b": mx.ones((5,), dtype=mx.float16)}, metadata={"format": "mlx"})
    return path.read_bytes()


def mutations(original: bytes):
    """Truncations, byte overwrites, and random u64s over the first 512 bytes (where the
    lengths, counts and offsets live)."""
    size = len(original)
    cut = st.integers(0, size).map(lambda n: original[:n])
    poke = st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
        lambda edits: bytes(_apply(original, edits)))
    word = st.tuples(st.integers(0, min(size, 512) - 8), st.integers(0, 2**64 - 1)).map(
        lambda t: original[:t[0]] + struct.pack("<Q", t[1]) + original[t[0] + 8:])
    return st.one_of(cut, poke, word, st.binary(max_size=256))


def _apply(original: bytes, edits) -> bytearray:
    data = bytearray(original)
    for position, value in edits:
        data[position] = value
    return data


def main() -> int:
    out, examples = Path(sys.argv[1]), int(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    counts = {"gguf": collections.Counter(), "safetensors": collections.Counter()}

    gguf_bytes = small_gguf(out / "good.gguf")

    @settings(max_examples=examples, **SETTINGS)
    @given(mutations(gguf_bytes))
    def gguf_reader(data: bytes) -> None:
        from mlx_lora.models.gguf import read_gguf

        path = out / "fuzz.gguf"
        path.write_bytes(data)
        try:
            read_gguf(path)
            counts["gguf"]["read"] += 1
        except UserError:
            counts["gguf"]["refused"] += 1

    model = out / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    st_bytes = small_safetensors(out / "good.safetensors")

    @settings(max_examples=examples, **SETTINGS)
    @given(mutations(st_bytes))
    def safetensors_reader(data: bytes) -> None:
        import mlx.core as mx

        from mlx_lora.models.local import check_model_folder

        (model / "model.safetensors").write_bytes(data)
        try:
            check_model_folder(model)
        except UserError:
            counts["safetensors"]["refused"] += 1
            return
        tensors = mx.load(str(model / "model.safetensors"))  # what passes the check must load
        mx.eval(list(tensors.values()))
        counts["safetensors"]["read"] += 1

    gguf_reader()
    safetensors_reader()
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({name: dict(c) for name, c in counts.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
