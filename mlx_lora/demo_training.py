"""``make demo`` / ``mlx-lora demo``: a short fine-tune of the embedded demo model on the
pirate sample dataset, one question answered before and after, and the tuned
model exported as a fused MLX folder (verified against base+adapter).

About 30 steps of LoRA on the demo model (SmolLM2-135M-Instruct); on a 2-core
CPU it takes a couple of minutes. The question is a held-out one from the
dataset's validation file, so the change in the answer is the adapter's doing,
not memorisation of a training example. Both answers are greedy (temperature
0), so the comparison is repeatable.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from mlx_lora import paths
from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.events import NullReporter, Reporter, never_stop

DEFAULT_STEPS = 30
DATASET = "pirate"


@dataclasses.dataclass(frozen=True)
class DemoResult:
    prompt: str
    before: str
    after: str
    run: object  # mlx_lora.train.RunResult
    baseline_val_loss: float | None  # the untrained model's validation loss
    final_val_loss: float | None
    export: object = None  # mlx_lora.export.ExportResult (None with export=False or a failed run)


def demo_config(iters: int = DEFAULT_STEPS, run_dir: str | Path | None = None) -> TrainConfig:
    """The demo's settings: strong enough to move a 135M model in 30 steps of batch 4."""
    return TrainConfig().replace(
        model="demo", data=str(paths.sample_datasets_dir() / DATASET), iters=iters, batch_size=4,
        num_layers=16, rank=8, alpha=16, learning_rate=1e-3, lr_schedule="cosine", warmup_steps=3,
        max_seq_length=256, steps_per_report=5, steps_per_eval=max(iters // 2, 1), val_batches=2,
        save_every=iters, run_dir=str(run_dir or ""),
    )


def first_valid_prompt() -> str:
    path = paths.sample_datasets_dir() / DATASET / "valid.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: the sample dataset is missing; reinstall the app")
    record = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    return next(m["content"] for m in record["messages"] if m["role"] == "user")


def run_demo(reporter: Reporter = NullReporter(), should_stop: Callable[[], bool] = never_stop,
             iters: int = DEFAULT_STEPS, prompt: str | None = None, run_dir: str | Path | None = None,
             max_tokens: int = 60, export: bool = True) -> DemoResult:
    """Train, answer ``prompt`` with the base and with the tuned model, then export
    the fused model next to the run folder (``<run>-export``)."""
    from mlx_lora.chat import ChatSession, ChatSettings, load_chat_model
    from mlx_lora.train import EvalReport, train
    from mlx_lora.events import FanOutReporter, RecordingReporter

    prompt = prompt or first_valid_prompt()
    recorder = RecordingReporter()
    result = train(demo_config(iters, run_dir), FanOutReporter(reporter, recorder), should_stop)
    evals = recorder.of(EvalReport)
    chat_model = load_chat_model("demo", adapter=result.run_dir)
    session = ChatSession(chat_model.model, chat_model.tokenizer)
    settings = ChatSettings(temperature=0.0, max_tokens=max_tokens, seed=0)
    messages = [{"role": "user", "content": prompt}]
    before = session.answer(messages, settings, should_stop, use_adapter=False).text
    after = session.answer(messages, settings, should_stop, use_adapter=True).text
    exported = None
    if export and result.status == "finished":
        from mlx_lora.export import export_run

        del session, chat_model  # export_run loads its own copies
        run_path = Path(result.run_dir)
        exported = export_run(run_path, run_path.parent / f"{run_path.name}-export", "mlx",
                              reporter=reporter, should_stop=should_stop)
    return DemoResult(prompt, before.strip(), after.strip(), result,
                      evals[0].val_loss if evals and evals[0].step == 0 else None,
                      evals[-1].val_loss if evals and evals[-1].step > 0 else None, exported)
