"""The real thing, when it is there: load an export with transformers (and PEFT) on
torch's CPU and get its logits for the verification prompts.

torch, transformers and peft are not dependencies of the app (torch's CPU wheel
alone is 183 MiB for CPython 3.11); the always-on checks need none of them. This
check runs when a Python that has all three is found: ``$MLX_LORA_TORCH_PYTHON``,
else this interpreter if it can import them. It runs in a child process, so torch
and its own BLAS/OpenMP never share a process with MLX and the OpenBLAS we preload,
and the app's memory is untouched. The child only reads safetensors with
``trust_remote_code`` off.
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

ENV_PYTHON = "MLX_LORA_TORCH_PYTHON"
TIMEOUT_S = 1800

# Runs in the child: argv[1] is a JSON file with base, peft (or null), prompts, out.
_CHILD = r"""
import json, sys
import numpy as np
import torch
from transformers import AutoModelForCausalLM

args = json.load(open(sys.argv[1]))
torch.set_num_threads(max(1, torch.get_num_threads()))
model = AutoModelForCausalLM.from_pretrained(args["base"], dtype=torch.float32, trust_remote_code=False,
                                             use_safetensors=True)
if args["peft"]:
    from peft import PeftModel
    model = PeftModel.from_pretrained(model, args["peft"])
model.eval()
arrays = {}
with torch.no_grad():
    for i, ids in enumerate(args["prompts"]):
        arrays[f"p{i}"] = model(torch.tensor([ids])).logits[0].float().numpy()
np.savez(args["out"], **arrays)
"""


def torch_python() -> str | None:
    """An interpreter with torch, transformers and peft, or None."""
    configured = os.environ.get(ENV_PYTHON)
    if configured:
        return configured
    if all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers", "peft")):
        return sys.executable
    return None


def torch_logits(python: str, base: Path, peft: Path | None, prompts: list[list[int]]) -> list[Any]:
    """Logits (L, V) per prompt from transformers(+PEFT) in a child process."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="mlx-lora-torch-") as tmp:
        args = {"base": str(base), "peft": str(peft) if peft else None, "prompts": prompts,
                "out": str(Path(tmp) / "logits.npz")}
        (Path(tmp) / "args.json").write_text(json.dumps(args))
        (Path(tmp) / "child.py").write_text(_CHILD)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        env["HF_HUB_OFFLINE"] = "1"  # everything is local; never the network
        try:
            done = subprocess.run([python, str(Path(tmp) / "child.py"), str(Path(tmp) / "args.json")],
                                  capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UserError(f"the transformers/PEFT check could not run with {python}: {exc}") from exc
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-6:])
            raise UserError(f"transformers/PEFT could not load the export ({python}):\n{tail}")
        with np.load(args["out"]) as data:
            return [data[f"p{i}"] for i in range(len(prompts))]
