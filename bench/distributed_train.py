"""One process against two (mlx.launch, ring backend on 127.0.0.1) on the same global batches.

    python bench/distributed_train.py [--iters 12] [--batch-size 8] [--port 45500]

The demo model (SmolLM2-135M, fp32 on CPU) on the pirate sample set, LoRA rank 8 on the last
16 layers, batch 8 (4 per rank with two), max length 256, Adam 1e-4, no validation. Both runs
go through the CLI (``mlx-lora train``; the second with ``--hostfile`` listing 127.0.0.1 twice),
alternated one after the other. Prints the loss of every step in both, the largest difference
between the two adapters, and the time: wall clock of the whole command (start-up, model load,
launch) and the training time the run reports (``elapsed_s`` of its last step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def run(args: list[str], port: int) -> tuple[list[dict], float]:
    env = {**os.environ, "MLX_LORA_RING_PORT": str(port), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mlx_lora.cli.main", "train", *args, "--json-events"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    return [json.loads(line) for line in done.stdout.splitlines()], wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--port", type=int, default=45500)
    args = parser.parse_args()

    import mlx_lora  # noqa: F401  (its BLAS preload comes before mlx.core)
    import mlx.core as mx
    import numpy as np

    from mlx_lora.models.demo import demo_model_path

    work = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    hostfile = work / "hosts.json"
    hostfile.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2))
    common = ["--model", str(demo_model_path()), "--data", str(REPO / "resources" / "datasets" / "pirate"),
              "--iters", str(args.iters), "--batch-size", str(args.batch_size), "--max-seq-length", "256",
              "--rank", "8", "--num-layers", "16", "--learning-rate", "1e-4", "--steps-per-report", "1",
              "--steps-per-eval", "100000", "--valid-ratio", "0", "--save-every", "100000"]
    results = {}
    for name, extra in (("1 process", []), ("2 processes", ["--hostfile", str(hostfile)])):
        events, wall = run([*common, "--run-dir", str(work / name.replace(" ", "-")), *extra], args.port)
        steps = [e for e in events if e["event"] == "step_report"]
        started = next(e for e in events if e["event"] == "run_started")
        results[name] = dict(losses=[e["loss"] for e in steps], wall=wall, train_s=steps[-1]["elapsed_s"],
                             world=started["world_size"],
                             adapter=mx.load(str(work / name.replace(" ", "-") / "adapters.safetensors")))
    one, two = results["1 process"], results["2 processes"]
    print(f"demo model, pirate set, batch {args.batch_size}, {args.iters} steps; world sizes "
          f"{one['world']} and {two['world']}")
    print("step  loss (1 process)  loss (2 processes)")
    for step, (a, b) in enumerate(zip(one["losses"], two["losses"]), 1):
        print(f"{step:>4}  {a:.6f}          {b:.6f}")
    diff = max(float(np.abs(np.array(one["adapter"][k]) - np.array(two["adapter"][k])).max()) for k in one["adapter"])
    scale = max(float(np.abs(np.array(v)).max()) for v in one["adapter"].values())
    print(f"largest |difference| between the adapters: {diff:.2e} (largest weight {scale:.3f})")
    print(f"largest relative loss difference: "
          f"{max(abs(a - b) / abs(a) for a, b in zip(one['losses'], two['losses'])):.2e}")
    print(f"| measure | 1 process | 2 processes | 2 / 1 |\n|---|---|---|---|")
    print(f"| training time, {args.iters} steps (s) | {one['train_s']:.1f} | {two['train_s']:.1f} | "
          f"{two['train_s'] / one['train_s']:.2f}× |")
    print(f"| whole command (s) | {one['wall']:.1f} | {two['wall']:.1f} | {two['wall'] / one['wall']:.2f}× |")


if __name__ == "__main__":
    main()
