"""Run history for the app's Runs page and anyone else who lists past runs: summaries,
curves, deleting a run.

Everything is read through :class:`mlx_lora.run_folder.RunFolder` from a run's
``config.yaml`` and ``metrics.jsonl``, without MLX, so listing a hundred runs takes
milliseconds and never loads a model. A folder whose files are missing or torn (a kill
mid-write), or whose config an older version wrote, is listed with what can be read —
never skipped silently and never an error.

    runs = list_runs()  # newest first: RunSummary(name, status, best_val_loss, …, evaluation)
    curves = load_run_curves(runs[0].path)  # {"step": [...], "loss": [...], "val_step": [...], "val_loss": [...]}
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from mlx_lora import paths
from mlx_lora.errors import UserError
from mlx_lora.run_folder import CONFIG_FILE, METRICS_FILE, RunFolder

TRASH_DIR = ".trash"


@dataclasses.dataclass(frozen=True)
class RunSummary:
    path: Path
    name: str
    model: str
    dataset: str
    method: str  # lora, dora or full (with "q" prefix for a quantised base: "qlora"), "+ dpo"/"+ orpo" appended
    status: str  # finished | stopped | failed | incomplete
    steps_done: int
    total_steps: int
    best_val_loss: float | None
    last_train_loss: float | None
    tokens: int  # trained tokens (those that carried the loss)
    duration_s: float
    created: float  # seconds since the epoch
    checkpoints: tuple[str, ...] = ()  # adapters to chat with or export: "final", "best", "step-N"
    baseline_val_loss: float | None = None  # the untrained model's (step 0): best_val_loss counts trained steps only
    evaluation: "EvalHeadline | None" = None  # the latest ``mlx-lora eval --generate``, if any


@dataclasses.dataclass(frozen=True)
class EvalHeadline:
    """The headline numbers of a run's saved generation evaluation (mlx_lora.evaluation), base
    and tuned: mean ROUGE-L, token F1 and exact match over the examples, the references' loss per
    token (None when none could be scored)."""

    split: str
    examples: int
    base_rouge_l: float
    tuned_rouge_l: float
    base_token_f1: float
    tuned_token_f1: float
    base_exact_match: float
    tuned_exact_match: float
    base_loss: float | None
    tuned_loss: float | None

    @classmethod
    def of(cls, data: dict | None) -> "EvalHeadline | None":
        """From the saved JSON (RunFolder.read_generation_eval); None when it is not a whole one."""
        try:
            base, tuned = data["base"], data["tuned"]
            number = lambda v: None if v is None else float(v)  # noqa: E731
            return cls(str(data["split"]), len(data["examples"]), float(base["rouge_l"]), float(tuned["rouge_l"]),
                       float(base["token_f1"]), float(tuned["token_f1"]), float(base["exact_match"]),
                       float(tuned["exact_match"]), number(base.get("loss")), number(tuned.get("loss")))
        except (KeyError, TypeError, ValueError):
            return None


def run_config_path(run_dir: str | Path) -> Path:
    """Where the run's exact config is (``mlx-lora train --config`` reads it)."""
    folder = RunFolder(run_dir)
    if not folder.config_path.is_file():
        raise UserError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")
    return folder.config_path


def adapter_choices(run_dir: str | Path) -> tuple[str, ...]:
    """The adapters a run holds: "final" (the run's latest adapter), "best", then "step-N" newest first."""
    return RunFolder(run_dir).adapter_choices()


def _dataset_name(data: str) -> str:
    path = Path(data) if data else None
    if path is None:
        return ""
    return path.stem if path.suffix == ".jsonl" else path.name


def summarize_run(run_dir: str | Path) -> RunSummary:
    folder = RunFolder(run_dir)
    run_dir = Path(run_dir)
    # The raw mapping, not the validated config: a summary shows what can be read of any run,
    # including one whose config.yaml is torn or from an older version.
    config = folder.raw_config()
    events = folder.metrics()
    section = lambda name: config.get(name) if isinstance(config.get(name), dict) else {}  # noqa: E731
    model = str(section("model").get("model", "") or "")
    method = str(section("adapter").get("fine_tune_type", "") or "")
    if method == "lora" and int(section("model").get("quantize_bits", 0) or 0):
        method = "qlora"
    if method == "lora" and int(section("schedule").get("relora_every", 0) or 0):
        method = "relora"
    objective = str(section("preference").get("objective", "") or "")
    if method and objective in ("dpo", "orpo"):  # their losses are per pair: not comparable with sft's
        method += f" + {objective}"
    started = next((e for e in events if e.get("event") == "run_started"), {})
    steps = [e for e in events if e.get("event") == "step_report"]
    evals = [e for e in events if e.get("event") == "eval_report" and e.get("step", 0) > 0]
    terminal = folder.terminal_event(events)
    total = int(started.get("total_steps") or section("schedule").get("iters", 0) or 0)
    if steps:
        total = int(steps[-1].get("total_steps") or total)
    losses = [float(e["val_loss"]) for e in evals if isinstance(e.get("val_loss"), (int, float))]
    duration = float(steps[-1].get("elapsed_s", 0.0)) if steps else 0.0
    if terminal is not None and isinstance(terminal.get("elapsed_s"), (int, float)):
        duration = float(terminal["elapsed_s"])
    try:
        created = folder.config_path.stat().st_mtime
    except OSError:
        created = run_dir.stat().st_mtime if run_dir.exists() else 0.0
    return RunSummary(
        path=run_dir,
        name=run_dir.name,
        model=model or str(started.get("model", "")),
        dataset=_dataset_name(str(section("data").get("data", "") or "")),
        method=method or str(started.get("fine_tune_type", "")),
        status=folder.status(events),
        steps_done=max([int(e.get("step", 0)) for e in events] or [0]),
        total_steps=total,
        best_val_loss=min(losses) if losses else None,
        last_train_loss=float(steps[-1]["loss"]) if steps and "loss" in steps[-1] else None,
        tokens=int(steps[-1].get("trained_tokens", 0)) if steps else 0,
        duration_s=duration,
        created=created,
        checkpoints=folder.adapter_choices(),
        baseline_val_loss=next((float(e["val_loss"]) for e in events if e.get("event") == "eval_report"
                                and e.get("step", 0) == 0 and isinstance(e.get("val_loss"), (int, float))), None),
        evaluation=EvalHeadline.of(folder.read_generation_eval()),
    )


def list_runs(runs_dir: str | Path | None = None) -> list[RunSummary]:
    """Every run folder in ``runs_dir`` (default: the app's runs folder), newest first."""
    root = Path(runs_dir) if runs_dir is not None else paths.runs_dir()
    if not root.is_dir():
        return []
    runs = [summarize_run(p) for p in root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and RunFolder(p).is_run()]
    return sorted(runs, key=lambda r: (r.created, r.name), reverse=True)


def load_run_curves(run_dir: str | Path) -> dict[str, list[float]]:
    """The run's curves from metrics.jsonl: training loss and learning rate by step, and the
    validation loss by step (step 0, the untrained baseline, included when it was measured), and
    for DPO/ORPO runs the validation reward margin and accuracy by step."""
    curves: dict[str, list[float]] = {"step": [], "loss": [], "learning_rate": [], "val_step": [], "val_loss": [],
                                      "reward_step": [], "reward_margin": [], "reward_accuracy": []}
    for event in RunFolder(run_dir).metrics():
        kind = event.get("event")
        if kind == "step_report" and "loss" in event:
            curves["step"].append(int(event.get("step", 0)))
            curves["loss"].append(float(event["loss"]))
            curves["learning_rate"].append(float(event.get("learning_rate", float("nan"))))
        elif kind == "eval_report" and "val_loss" in event:
            curves["val_step"].append(int(event.get("step", 0)))
            curves["val_loss"].append(float(event["val_loss"]))
            if event.get("reward_margin") is not None:
                curves["reward_step"].append(int(event.get("step", 0)))
                curves["reward_margin"].append(float(event["reward_margin"]))
                curves["reward_accuracy"].append(float(event.get("reward_accuracy") or 0.0))
    return curves


def delete_run(run_dir: str | Path, trash: bool = True) -> Path | None:
    """Delete a run folder: moved into ``<runs folder>/.trash/`` (the default; returns where it
    went) or removed for good. Asking the person first is the caller's job."""
    run_dir = Path(run_dir)
    if not RunFolder(run_dir).is_run():
        raise UserError(f"{run_dir}: not a run folder (no {CONFIG_FILE} or {METRICS_FILE}); not deleting it")
    with RunFolder(run_dir).lock("deleting"):  # never a run that is training (a UserError with its pid)
        if not trash:
            shutil.rmtree(run_dir)
            return None
        bin_dir = run_dir.parent / TRASH_DIR
        bin_dir.mkdir(exist_ok=True)
        target = bin_dir / f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 2
        while target.exists():
            target = target.with_name(f"{target.name}-{n}")
            n += 1
        run_dir.rename(target)
        return target
