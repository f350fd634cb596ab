"""llama.cpp itself, through llama-cpp-python (the ``gguf`` extra): the GGUF export's
judge and its quantiser.

- :func:`llama_cpp_logits`: a GGUF loaded by llama.cpp, its logits (L, V) for each
  verification prompt and a greedy continuation of the first — what a user's
  llama.cpp, Ollama or LM Studio will compute from the file.
- :func:`quantize_gguf`: ``llama_model_quantize``, so that K-quants (Q6_K, Q5_K_M,
  Q4_K_M…) come from llama.cpp's own code, not ours; optionally with an importance
  matrix (llama.h's ``llama_model_imatrix_data`` array: plain C, no C++ map to build).

Both run in a child process: llama.cpp is C++ and a crash there (a segfault) must
fail the export with a message, not kill the app or the test run. The child is this
interpreter with this environment, so it finds llama_cpp where the parent would.

AMX: on some x86 CPUs llama.cpp's repacking of quantised weights into "extra"
buffer types segfaults at the first decode (measured here, llama-cpp-python 0.3.36 on
a Sapphire-Rapids-class CPU). The repacking is a speed-up only — the numbers are the
same — so the judge loads with ``use_extra_bufts=False`` unless
``$MLX_LORA_LLAMA_CPP_EXTRA_BUFTS=1``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlx_lora.errors import UserError

EXTRA = "gguf"  # pip install 'mlx-lora-studio[gguf]'
NOT_INSTALLED = (f"not checked by llama.cpp: install the {EXTRA} extra "
                 f"(pip install 'mlx-lora-studio[{EXTRA}]', which builds llama.cpp: about 5-25 minutes)")
ENV_EXTRA_BUFTS = "MLX_LORA_LLAMA_CPP_EXTRA_BUFTS"
ENV_THREADS = "MLX_LORA_LLAMA_CPP_THREADS"
TIMEOUT_S = 1800

# llama.cpp's file types (llama.h, enum llama_ftype) by our lower-case names.
FTYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18, "bf16": 32}

# Runs in the child: argv[1] is a JSON file of arguments; it writes args["out"].
_LOGITS = r"""
import json, sys
import numpy as np
import llama_cpp
import llama_cpp.llama_cpp as low

args = json.load(open(sys.argv[1]))
# Llama() takes no use_extra_bufts (0.3.36): set it where Llama gets its model parameters
_defaults = low.llama_model_default_params
def _params():
    params = _defaults()
    params.use_extra_bufts = args["extra_bufts"]
    return params
low.llama_model_default_params = _params
n_ctx = max(len(p) for p in args["prompts"] + args["answer"] + [t for t, _ in args["scored"]]) + args["n_predict"] + 8
llm = llama_cpp.Llama(args["model"], n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                      n_threads=args["threads"], verbose=False, seed=0, lora_path=args["lora"])
arrays = {}
for i, ids in enumerate(args["prompts"]):
    llm.reset()
    llm.eval(ids)
    arrays[f"p{i}"] = np.array(llm.scores[:len(ids)], dtype=np.float32)  # (L, V)
eos = {llm.token_eos(), *args["stop_ids"]}
def continuation(ids):
    llm.reset()
    out = []
    llm.eval(list(ids))
    for _ in range(args["n_predict"]):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if token in eos:
            break
        out.append(token)
        llm.eval([token])
    return out, llm.detokenize(out).decode("utf-8", errors="replace")
greedy, text = continuation(args["prompts"][0])
answers = [continuation(ids)[1] for ids in args["answer"]]
nll, targets = 0.0, 0  # the validation loss's sums (mlx_lora.export.val_loss: the same formula)
for ids, trained in args["scored"]:
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[:len(ids) - 1], dtype=np.float64)  # (L - 1, V): position i predicts i + 1
    top = logits.max(axis=-1, keepdims=True)
    log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))
    where = np.array(trained[1:], dtype=bool)
    nll -= float(log_probs[np.arange(len(ids) - 1), np.array(ids[1:])][where].sum())
    targets += int(where.sum())
tokens = [llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) for t in args["texts"]]
json.dump({"greedy": greedy, "text": text, "n_vocab": llm.n_vocab(), "tokens": tokens, "nll": nll,
           "targets": targets, "answers": answers,
           "metadata": {k: str(v) for k, v in llm.metadata.items() if not k.startswith("tokenizer.ggml.")}},
          open(args["out"] + ".json", "w"))
np.savez(args["out"], **arrays)
"""

_QUANTIZE = r"""
import ctypes, json, sys
import llama_cpp

args = json.load(open(sys.argv[1]))
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = args["ftype"]
params.nthread = args["threads"]
if args["imatrix"]:
    # llama.h: a C array of {name, data, size}, ended by a NULL name; llama.cpp copies it
    import numpy as np
    with np.load(args["imatrix"]) as stored:
        columns = {name: np.ascontiguousarray(stored[name], dtype=np.float32) for name in stored.files}
    entries = (llama_cpp.llama_model_imatrix_data * (len(columns) + 1))()
    for entry, (name, values) in zip(entries, columns.items()):
        entry.name = name.encode()
        entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entry.size = values.size
    params.imatrix = entries
rc = llama_cpp.llama_model_quantize(args["src"].encode(), args["dst"].encode(), ctypes.byref(params))
sys.exit(rc)
"""


def available() -> bool:
    """Whether llama-cpp-python can be imported (looked up, not imported: that loads llama.cpp)."""
    return importlib.util.find_spec("llama_cpp") is not None


def _threads() -> int:
    """``$MLX_LORA_LLAMA_CPP_THREADS``, else up to 8. llama.cpp's threads meet at spin barriers,
    so on an oversubscribed machine fewer are faster: measured here (2 cores, load ~30), a
    135M f16 model decodes in 0.29 s a token with 1 thread and 4.9 s with 2."""
    if os.environ.get(ENV_THREADS, "").isdigit() and int(os.environ[ENV_THREADS]) > 0:
        return int(os.environ[ENV_THREADS])
    return max(1, min(8, os.cpu_count() or 1))


def _run_child(script: str, args: dict[str, Any], what: str) -> None:
    with tempfile.TemporaryDirectory(prefix="mlx-lora-llama-cpp-") as tmp:
        (Path(tmp) / "child.py").write_text(script)
        (Path(tmp) / "args.json").write_text(json.dumps(args))
        try:
            done = subprocess.run([sys.executable, str(Path(tmp) / "child.py"), str(Path(tmp) / "args.json")],
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UserError(f"llama.cpp could not {what}: {exc}") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stderr or "").strip().splitlines()[-8:])
            crashed = f" (it crashed: signal {-done.returncode})" if done.returncode < 0 else ""
            raise UserError(f"llama.cpp could not {what}{crashed}:\n{tail}")


def llama_cpp_logits(model: Path, prompts: list[list[int]], *, stop_ids: set[int] = frozenset(),
                     n_predict: int = 24, texts: list[str] = (), scored: list = (),
                     lora: Path | None = None, answer: list[list[int]] = ()) -> tuple[list[Any], dict[str, Any]]:
    """Logits (L, V) per prompt from llama.cpp, and {"greedy": ids, "text": …, "n_vocab",
    "metadata", "tokens", "nll", "targets"}: the greedy continuation of the first prompt,
    stopped at ``stop_ids``, llama.cpp's tokenisation of each of ``texts`` (special tokens
    parsed), and the summed cross-entropy of ``scored`` ((tokens, trained) pairs: see
    :mod:`mlx_lora.export.val_loss`) over its trained targets. ``lora``: a GGUF adapter
    applied to ``model`` (scale 1). ``answer``: more prompts whose greedy continuations'
    texts come back as "answers"."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="mlx-lora-llama-cpp-out-") as tmp:
        out = str(Path(tmp) / "logits.npz")
        args = {"model": str(model), "prompts": prompts, "out": out, "n_predict": n_predict,
                "stop_ids": sorted(int(i) for i in stop_ids), "threads": _threads(), "texts": list(texts),
                "extra_bufts": os.environ.get(ENV_EXTRA_BUFTS) == "1",
                "scored": [[list(map(int, t)), list(map(bool, m))] for t, m in scored],
                "lora": str(lora) if lora else None, "answer": [list(map(int, ids)) for ids in answer]}
        _run_child(_LOGITS, args, f"load {Path(model).name}")
        info = json.loads(Path(out + ".json").read_text())
        with np.load(out) as data:
            return [data[f"p{i}"] for i in range(len(prompts))], info


def quantize_gguf(src: Path, dst: Path, kind: str, imatrix: Path | None = None) -> None:
    """``src`` (an F32/F16 GGUF) quantised by llama.cpp to ``kind`` (a key of :data:`FTYPES`);
    ``imatrix``: an .npz of GGUF tensor name → importance per input column
    (:mod:`mlx_lora.export.imatrix`)."""
    if kind not in FTYPES:
        raise UserError(f"llama.cpp has no file type {kind!r} here (known: {', '.join(FTYPES)})")
    _run_child(_QUANTIZE, {"src": str(src), "dst": str(dst), "ftype": FTYPES[kind], "threads": _threads(),
                           "imatrix": str(imatrix) if imatrix else None},
               f"quantise {Path(src).name} to {kind}")
    if not Path(dst).is_file():
        raise UserError(f"llama.cpp did not write {dst} while quantising to {kind}")
