"""The model card (README.md) of an export: what it is, how it was made, how well it
trained, and what the export check measured — in the Hub's format (YAML front matter).
What the export is, its library, tags and usage snippet come from its format
(:mod:`mlx_lora.export.formats`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlx_lora import __version__
from mlx_lora.run_folder import RunFolder

if TYPE_CHECKING:
    from mlx_lora.export.formats import ExportFormat

def _losses(events: list[dict[str, Any]]) -> list[str]:
    steps = [e for e in events if e.get("event") == "step_report" and "loss" in e]
    evals = [e for e in events if e.get("event") == "eval_report" and e.get("val_loss") is not None]
    if not steps and not evals:
        return ["No training metrics were found with this run."]
    lines = []
    if steps:
        lines.append(f"Training loss: {steps[0]['loss']:.3f} at step {steps[0]['step']} → "
                     f"{steps[-1]['loss']:.3f} at step {steps[-1]['step']}.")
    if evals:
        best = min(evals, key=lambda e: e["val_loss"])
        lines.append(f"Validation loss: {evals[0]['val_loss']:.3f} at step {evals[0]['step']}, best "
                     f"{best['val_loss']:.3f} at step {best['step']}, last {evals[-1]['val_loss']:.3f}.")
        lines += ["", "| step | validation loss |", "|---:|---:|"]
        lines += [f"| {e['step']} | {e['val_loss']:.4f} |" for e in evals]
    return lines


def _dataset(run_config: dict, events: list[dict[str, Any]]) -> list[str]:
    data = run_config.get("data") or {}
    started = next((e for e in events if e.get("event") == "run_started"), {})
    lines = []
    if data.get("data"):
        lines.append(f"- data: `{data['data']}`")
    for key, label in (("train_examples", "training examples"), ("valid_examples", "validation examples"),
                       ("train_tokens", "training tokens")):
        if started.get(key) is not None:
            lines.append(f"- {label}: {started[key]:,}")
    if "mask_prompt" in data:
        lines.append(f"- loss on: {'assistant turns only' if data['mask_prompt'] else 'every token'}")
    return lines or ["- not recorded with this adapter"]


def _config_rows(adapter_config: dict, run_config: dict) -> list[str]:
    lora = adapter_config.get("lora_parameters") or {}
    rows = [("fine-tune type", adapter_config.get("fine_tune_type", "lora")),
            ("layers adapted", adapter_config.get("num_layers")),
            ("rank", lora.get("rank")), ("scale (alpha / rank)", lora.get("scale")),
            ("targets", ", ".join(lora.get("keys") or []) or None), ("dropout", lora.get("dropout"))]
    optimizer, schedule = run_config.get("optimizer") or {}, run_config.get("schedule") or {}
    rows += [("learning rate", optimizer.get("learning_rate")), ("optimizer", optimizer.get("optimizer")),
             ("iterations", schedule.get("iters")), ("epochs", schedule.get("epochs") or None),
             ("batch size", (run_config.get("data") or {}).get("batch_size")),
             ("base quantisation", f"{(run_config.get('model') or {}).get('quantize_bits')} bits"
              if (run_config.get("model") or {}).get("quantize_bits") else None)]
    return ["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows if v not in (None, "")]


def _verification(checks: list[dict[str, Any]]) -> list[str]:
    lines = ["Every export is checked against the base model with the adapter on it, on 32 fixed prompts "
             "(every position's logits, float32):", "",
             "| check | result | top-1 agreement | max abs logit diff | mean abs diff | adapter effect (mean) |",
             "|---|---|---:|---:|---:|---:|"]
    for c in checks:
        if c.get("status") == "not run":
            lines.append(f"| {c['check']} | not run: {'; '.join(c.get('problems') or ())} | | | | |")
            continue
        result = "passed" if c["passed"] else c["status"] if c.get("status") not in (None, "checked") else "FAILED"
        lines.append(f"| {c['check']} | {result} | {c['top1_agreement']:.2%} | "
                     f"{c['max_abs_logit_diff']:.4g} | {c['mean_abs_logit_diff']:.4g} | {c['adapter_effect']:.4g} |")
    return lines + _quality(checks)


def _figure(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _quality(checks: list[dict[str, Any]]) -> list[str]:
    """What the export kept of the fine-tune (verify.py's quality figures; README, "GGUF")."""
    rows = [c for c in checks if c.get("status") != "not run" and c.get("adapter_effect_kept") is not None]
    if not rows:
        return []
    lines = ["", "What each check measured of the fine-tune: KL(tuned ‖ export) and KL(tuned ‖ base) in nats per "
             "position; the share of the fine-tune's shift of the (centred) logits the export keeps (± its standard "
             "error over the prompts); of the positions where the fine-tune changes the most likely token, the "
             "share where the export makes the same change; the run's validation loss through the export, "
             "base+adapter and the base.", "",
             "| check | mean KL | adapter KL | effect kept | top-1 changes kept | validation loss (export / tuned / base) |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in rows:
        kept = f"{c['adapter_effect_kept']:.1%}" + (f" ± {c['adapter_effect_kept_se']:.1%}"
                                                   if c.get("adapter_effect_kept_se") is not None else "")
        loss = (f"{c['val_loss']:.4f} / {c['val_loss_tuned']:.4f} / {c['val_loss_base']:.4f}"
                if c.get("val_loss") is not None else "")
        lines.append(f"| {c['check']} | {_figure(c.get('mean_kl'), '.4g')} | {_figure(c.get('adapter_kl'), '.4g')} | "
                     f"{kept} | {_figure(c.get('adapter_top1_changes_kept'), '.1%')} | {loss} |")
    return lines


def model_card(*, fmt: ExportFormat, base_model: str, adapter_config: dict, run_config: dict, run_dir: Path | None,
               checks: list[dict[str, Any]], files: list[str], quantize: int | str | None, repo: str | None,
               notes: list[str], trained_base: dict | None = None) -> str:
    """``trained_base``: what the adapter was trained on (:mod:`mlx_lora.export.provenance`);
    ``base_model`` stays the Hub id (the card's ``base_model`` field must be a repo id)."""
    from mlx_lora.export import provenance

    events = RunFolder(run_dir).metrics() if run_dir is not None else []
    front: dict[str, Any] = {}
    if re.fullmatch(r"[\w.-]+/[\w.-]+", base_model):  # the Hub refuses a card whose base_model is no repo id
        front["base_model"] = base_model
    front.update({"library_name": fmt.library, "tags": ["mlx-lora-studio", *fmt.tags],
                  "pipeline_tag": "text-generation"})
    usage = fmt.usage(repo=repo or "path/to/this/folder", base=base_model, files=files, trained_base=trained_base)
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# {repo.split('/')[-1] if repo else base_model.split('/')[-1] + ' (fine-tuned)'}", "",
        f"This is {fmt.description}{_quantised(quantize)}, made with MLX LoRA Studio "
        f"{__version__}.", "",
        f"- base model: `{base_model}`", f"- files: {', '.join(f'`{f}`' for f in files)}", "",
        *(["## Base model", "", *provenance.describe(trained_base), ""] if trained_base else []),
        "## Usage", "", usage, "",
        "## Training data", "", *_dataset(run_config, events), "",
        "## Training settings", "", *_config_rows(adapter_config, run_config), "",
        "## Losses", "", *_losses(events), "",
        "## Verification", "", *_verification(checks), "",
    ]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


def _quantised(quantize: int | str | None) -> str:
    if not quantize:
        return ""
    return f", quantised to {quantize} bits" if isinstance(quantize, int) else f", quantised to {quantize.upper()}"
