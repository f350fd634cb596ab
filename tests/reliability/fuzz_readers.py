"""Hypothesis fuzzing of the native-code file readers, run as a child process by
test_fuzz.py (a segfault in MLX's C++ readers must fail one test, not end the test session):

    python -m tests.reliability.fuzz_readers OUT_DIR EXAMPLES

Prints one JSON line: {"gguf": {...outcome counts}, "safetensors": {...}, "gguf import": {...},
"safetensors header": {...}}. Any exception other than UserError fails (traceback on stderr,
exit status 1).

- gguf, safetensors: byte-level damage to a small good file (cuts, pokes, random u64s);
- gguf import: a whole tiny llama GGUF (tests/reliability/ggufs.py) whose metadata values are
  replaced by other types and values (0, negative, huge, text, lists, missing) and whose
  tensors change type, shape or go missing, written by the gguf package, then imported:
  refused by name, or imported into a folder that mlx-lm loads;
- safetensors header: headers built from parts — real and unknown dtypes, shapes and offsets
  from negative to 5,000 digits, floats and text where numbers go, names and metadata with
  lone surrogates, NaN, nesting up to 100,000 deep — checked, and what passes must load."""

from __future__ import annotations

import collections
import copy
import json
import shutil
import struct
import sys
from pathlib import Path

from datetime import timedelta

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import mlx_lora  # noqa: F401  (BLAS preload before mlx.core)
from mlx_lora.errors import UserError

SETTINGS = dict(deadline=timedelta(seconds=10), database=None, derandomize=True,
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


# ---- structured GGUF: the tiny model with metadata and tensors changed -------------------

_METADATA_VALUES = st.one_of(
    st.none(),  # the key is removed
    st.integers(0, 2**32 - 1).map(lambda v: (v, "UINT32")),
    st.sampled_from([0, 1, 2, 3, 4, 8, 16, 64, 1000, 10**7]).map(lambda v: (v, "UINT32")),
    st.integers(-(2**31), -1).map(lambda v: (v, "INT32")),
    st.integers(2**32, 2**64 - 1).map(lambda v: (v, "UINT64")),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: (v, "FLOAT32")),
    st.text(min_size=1, max_size=8).map(lambda v: (v, "STRING")),
    st.booleans().map(lambda v: (v, "BOOL")),
    st.lists(st.integers(-5, 100), min_size=1, max_size=10).map(lambda v: (v, "ARRAY", "INT32")),
    st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=10).map(lambda v: (v, "ARRAY", "STRING")),
)


def _gguf_edits():
    from tests.reliability.ggufs import tiny_spec

    spec = tiny_spec()
    keys = sorted(spec.metadata) + ["llama.vocab_size", "general.alignment", "tokenizer.ggml.padding_token_id"]
    tensor_changes = st.sampled_from(["drop", "F32", "F16", "Q8_0", "Q4_0", "transpose", "flatten"])
    return st.tuples(st.lists(st.tuples(st.sampled_from(keys), _METADATA_VALUES), max_size=3),
                     st.lists(st.tuples(st.sampled_from(sorted(spec.tensors)), tensor_changes), max_size=2))


def _edited_spec(base, edits):
    spec = copy.deepcopy(base)
    metadata_edits, tensor_edits = edits
    for key, value in metadata_edits:
        if value is None:
            spec.metadata.pop(key, None)
        else:
            spec.metadata[key] = value
    for name, change in tensor_edits:
        if name not in spec.tensors:
            continue
        array, kind = spec.tensors[name]
        if change == "drop":
            del spec.tensors[name]
        elif change == "transpose":
            spec.tensors[name] = (array.T.copy(), kind)
        elif change == "flatten":
            spec.tensors[name] = (array.reshape(-1), kind)
        else:
            spec.tensors[name] = (array, change)
    return spec


# ---- structured safetensors headers -------------------------------------------------------

_BIG = "__BIG_NUMBER__"  # replaced by 4,000-6,000 digits after json.dumps (which refuses them)
_NUMBERS = st.one_of(st.integers(-10, 300), st.integers(-(2**70), 2**70), st.just(_BIG),
                     st.floats(allow_nan=True), st.text(max_size=3), st.none())
_NAMES = st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010) | st.characters(max_codepoint=0x7F),
                 min_size=1, max_size=6)
_TENSOR = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I8", "U8", "F64", "BOOL", "F4", "Q4", "", "f32"]),
    "shape": st.lists(_NUMBERS, max_size=3) | _NUMBERS,
    "data_offsets": st.lists(_NUMBERS, min_size=2, max_size=2) | st.lists(st.integers(0, 64), max_size=3),
})
_METADATA = st.none() | st.integers() | st.dictionaries(
    _NAMES, st.text(max_size=4) | st.floats(allow_nan=True) | st.integers() | st.lists(st.integers(), max_size=2),
    max_size=3)


@st.composite
def _safetensors_files(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # nested: past Python's parser, or just under it
        depth = draw(st.sampled_from([50, 900, 5000, 100_000]))
        raw = b'{"__metadata__": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    else:
        header: dict = {name: draw(_TENSOR) for name in draw(st.lists(_NAMES, max_size=3, unique=True))}
        if draw(st.booleans()):
            # offsets that fit: a real tensor among the others, so some files are sound
            header["ok"] = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
        if draw(st.booleans()):
            header["__metadata__"] = draw(_METADATA)
        raw = json.dumps(header).replace(f'"{_BIG}"', "9" * draw(st.integers(4000, 6000))).encode()
    data = draw(st.binary(min_size=0, max_size=64)) + bytes(16)
    return struct.pack("<Q", len(raw)) + raw + data


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

    import mlx.core as mx

    from tests.reliability.ggufs import tiny_spec, write_gguf

    base = tiny_spec()
    counts["gguf import"] = collections.Counter()

    @settings(max_examples=examples, **SETTINGS)
    @given(_gguf_edits())
    def gguf_import(edits) -> None:
        from mlx_lm import load

        from mlx_lora.models.gguf import import_gguf

        path, target = out / "edited.gguf", out / "imported"
        shutil.rmtree(target, ignore_errors=True)
        try:
            write_gguf(_edited_spec(base, edits), path)
        except Exception:  # a value the gguf package cannot write as that type (e.g. a 64-bit value as UINT32)
            reject()
        try:
            import_gguf(path, target)
        except UserError:
            counts["gguf import"]["refused"] += 1
            return
        model, tokenizer = load(str(target))  # what imports must load
        mx.eval(model(mx.array([[0, 1]])))
        counts["gguf import"]["read"] += 1

    counts["safetensors header"] = collections.Counter()

    @settings(max_examples=examples, **SETTINGS)
    @given(_safetensors_files())
    def safetensors_header(data: bytes) -> None:
        from mlx_lora.models.local import check_safetensors

        path = out / "header.safetensors"
        path.write_bytes(data)
        try:
            check_safetensors(path)
        except UserError:
            counts["safetensors header"]["refused"] += 1
            return
        mx.eval(list(mx.load(str(path)).values()))  # what passes the check must load
        counts["safetensors header"]["read"] += 1

    gguf_reader()
    safetensors_reader()
    gguf_import()
    safetensors_header()
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({name: dict(c) for name, c in counts.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
