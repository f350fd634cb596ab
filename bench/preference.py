"""Preference tuning on the demo model: plain LoRA (sft) vs DPO vs ORPO on the same pairs.

    .venv/bin/python bench/preference.py --iters 20

Each objective trains a LoRA adapter on resources/datasets/pirate-preference (sft
learns prompt + chosen; dpo and orpo see both answers) with the same settings, one
after the other in this process. Then every final adapter is scored on the 10
validation pairs with the same two yardsticks: the chosen answers' loss per token
(what sft minimises) and DPO's reward margin/accuracy against the base at β=0.1
(does the adapter prefer the pirate answer more than the base does?). Last, the
cost of one training step of each objective on the same 2 pairs, interleaved
(sft, dpo, orpo, sft, …) so that the machine's load drifts alike for all three.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mlx_lora  # noqa: F401  (BLAS preload before mlx.core)


def score(config, run_dir: Path) -> dict[str, float]:
    """Chosen-answer loss per token and DPO margin/accuracy (β=0.1) of the run's final adapter."""
    import mlx.core as mx
    from mlx_lm.tuner.utils import load_adapters

    from mlx_lora.data.dataset import load_splits
    from mlx_lora.train.batches import encode_records
    from mlx_lora.train.evaluate import MaskedLoss, dataset_loss
    from mlx_lora.train.prepare import load_base
    from mlx_lora.train.preference_loss import PreferenceLoss, encode_pairs, evaluate_pairs

    model, tokenizer, _, _, _ = load_base(config)
    load_adapters(model, str(run_dir))
    valid = load_splits(config.data.data).valid
    length = config.data.max_seq_length
    chosen = encode_records(tokenizer, valid, True, length, "truncate").examples
    masked = MaskedLoss()
    masked.check(model, mx.array([chosen[0].tokens]))
    nll, _ = dataset_loss(model, masked, chosen, 2, -1, seed=0)
    pairs = encode_pairs(tokenizer, valid, length, "truncate").examples
    dpo = PreferenceLoss("dpo", beta=0.1)
    dpo.check(model, mx.array([chosen[0].tokens]))
    _, metrics = evaluate_pairs(model, dpo, pairs, 2, -1, seed=0)
    return {"chosen_nll": nll, **metrics}


def step_costs(objectives: list[str], repeats: int) -> dict[str, list[float]]:
    """Seconds per forward+backward of each objective on the same batch of 2 pairs (sft: their
    2 chosen chats), LoRA as in the runs, interleaved ``repeats`` times after one warm-up."""
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_lora.config import TrainConfig
    from mlx_lora.data.dataset import load_splits
    from mlx_lora.paths import sample_datasets_dir
    from mlx_lora.train.batches import make_batch
    from mlx_lora.train.prepare import prepare_model
    from mlx_lora.train.objectives import SupervisedObjective
    from mlx_lora.train.preference_loss import PreferenceLoss, encode_pairs, make_pair_batch

    data = sample_datasets_dir() / "pirate-preference"
    config = TrainConfig().replace(model="demo", data=str(data), num_layers=8, rank=8)
    prepared = prepare_model(config)
    model = prepared.model
    pairs = encode_pairs(prepared.tokenizer, load_splits(data).train[:2], 256, "truncate").examples
    batches = {"sft": make_batch([p.chosen for p in pairs], [0, 1]), "dpo": make_pair_batch(pairs, [0, 1])}
    batches["orpo"] = batches["dpo"]
    losses = {"sft": SupervisedObjective().make_loss(), "dpo": PreferenceLoss("dpo"), "orpo": PreferenceLoss("orpo")}
    steps = {}
    for name in objectives:
        losses[name].check(model, mx.array(batches[name][0][:1]))
        steps[name] = nn.value_and_grad(model, losses[name])
    times: dict[str, list[float]] = {name: [] for name in objectives}
    for repeat in range(repeats + 1):
        for name in objectives:
            start = time.perf_counter()
            (loss, _), grads = steps[name](model, *map(mx.array, batches[name]))
            mx.eval(loss, grads)
            if repeat:  # the first round is warm-up
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    from mlx_lora.config import TrainConfig
    from mlx_lora.events import RecordingReporter
    from mlx_lora.paths import sample_datasets_dir
    from mlx_lora.train import EvalReport, RunFinished, StepReport, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--objectives", nargs="+", default=["sft", "dpo", "orpo"])
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the interleaved step-cost measure")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-preference-"))
    rows = []
    for objective in args.objectives:
        recorder = RecordingReporter()
        config = TrainConfig().replace(
            model="demo", data=str(sample_datasets_dir() / "pirate-preference"), objective=objective,
            iters=args.iters, batch_size=2, max_seq_length=256, learning_rate=args.learning_rate,
            lr_schedule="constant", num_layers=8, rank=8, steps_per_report=1, steps_per_eval=args.iters,
            val_batches=-1, save_every=args.iters, run_dir=str(out / objective))
        start = time.perf_counter()
        train(config, recorder)
        wall = time.perf_counter() - start
        steps = recorder.of(StepReport)
        per_step = (steps[-1].elapsed_s - steps[0].elapsed_s) / max(len(steps) - 1, 1)
        evals = recorder.of(EvalReport)
        finished = recorder.of(RunFinished)[-1]
        size = (out / objective / "adapters.safetensors").stat().st_size
        rows.append((objective, evals[0].val_loss, evals[-1].val_loss, per_step, wall, steps[-1].peak_memory_gb,
                     size, score(config, out / objective), finished.elapsed_s))
    print(f"\n{args.iters} steps, batch 2 pairs (sft: 2 chosen chats), max length 256, rank 8 on the last 8 layers, "
          f"lr {args.learning_rate:g} constant; demo model in fp32 on CPU. Runs in {out}\n")
    print("| objective | own val loss: start → end | s/step | × sft | run wall (s) | peak GB | adapter (KiB) "
          "| chosen loss/token | DPO margin (β 0.1) | DPO accuracy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base_step = rows[0][3]
    for objective, v0, v1, per_step, wall, peak, size, s, _ in rows:
        print(f"| {objective} | {v0:.3f} → {v1:.3f} | {per_step:.2f} | {per_step / base_step:.2f}× | {wall:.0f} "
              f"| {peak:.2f} | {size / 1024:.0f} | {s['chosen_nll']:.3f} | {s['reward_margin']:+.3f} "
              f"| {s['reward_accuracy']:.0%} |")
    times = step_costs(args.objectives, args.repeats)
    first = args.objectives[0]
    print(f"\nOne forward+backward on the same 2 pairs, {args.repeats} interleaved rounds (median s):\n")
    print("| objective | median s | min s | × " + first + " (median) |")
    print("|---|---|---|---|")
    for name, values in times.items():
        median = sorted(values)[len(values) // 2]
        base = sorted(times[first])[len(times[first]) // 2]
        print(f"| {name} | {median:.2f} | {min(values):.2f} | {median / base:.2f}× |")


if __name__ == "__main__":
    main()
