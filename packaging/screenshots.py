"""Save a PNG of every page of the app, in light and in dark.

    QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/screenshots.py docs/screenshots/

Runs offline in a temporary home folder: the Data page shows a small generated
chat dataset (with one broken line) through the demo model's tokenizer, and the
Train page a replay of a short run's events (no training happens).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _dataset(folder: Path) -> Path:
    lines = []
    for k in range(60):
        question = f"Translate to French: I have {k} cats" + " and a small garden" * (k % 7)
        lines.append(json.dumps({"messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": f"J'ai {k} chats" + " et un petit jardin" * (k % 7) + "."}]}))
    lines.insert(4, '{"messages": [{"role": "user", "content": "unfinished"')
    path = folder / "french.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _replay_run(controller) -> None:
    """Feed the Train page the events of a 120-step run, as the trainer would print them."""
    dispatch = controller.supervisor._dispatch
    dispatch({"event": "run_started", "run_dir": "runs/2026-11-29-demo", "total_steps": 200})
    for step in range(1, 121):
        loss = 2.6 * math.exp(-step / 45) + 0.9 + 0.12 * math.sin(step * 1.7) * math.exp(-step / 150)
        lr = 2e-4 * min(1.0, step / 20) * (0.5 * (1 + math.cos(math.pi * step / 200)))
        dispatch({"event": "step_report", "step": step, "total_steps": 200, "loss": loss, "learning_rate": lr,
                  "tokens_per_second": 1840.0, "peak_memory_gb": 1.42, "elapsed_s": step * 0.9,
                  "eta_s": (200 - step) * 0.9})
        if step % 20 == 0:
            dispatch({"event": "eval_report", "step": step, "val_loss": 2.5 * math.exp(-step / 50) + 1.05})
            dispatch({"event": "checkpoint_saved", "step": step, "path": f"runs/2026-11-29-demo/checkpoint-{step}"})


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out = Path(argv[0]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    home = Path(tempfile.mkdtemp(prefix="mlx-lora-screens-"))
    os.environ["MLX_LORA_HOME"] = str(home / "home")

    import mlx_lora  # noqa: F401  (BLAS preload first)
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from app.main_window import PAGE_NAMES, MainWindow

    app = QApplication([])
    app.setApplicationName("MLX LoRA Studio")
    window = MainWindow()
    window.resize(1280, 820)
    window.show()
    window.context.state.select_model("demo", "SmolLM2-135M-Instruct (demo)")

    data = window.context.data
    window.data_page.open(str(_dataset(home)))
    print("checking the dataset (the demo model is imported on first use: about a minute)…", file=sys.stderr)
    for _ in range(1800):  # up to 3 min for the check, the demo import, the tokenizer and the stats
        QTest.qWait(100)
        if data.report is not None and window.data_page._spans and not data.is_busy():
            break

    window.data_page.problem_list.setCurrentRow(0)
    _replay_run(window.context.training)
    window.train_page.set_config_path(str(home / "config.yaml"))
    window.context.system.load_facts()
    for _ in range(300):
        QTest.qWait(100)
        if window.context.system.facts:
            break

    for scheme in ("light", "dark"):
        window.set_appearance(scheme)
        for k, name in enumerate(PAGE_NAMES):
            window.show_page(k)
            QTest.qWait(150)
            path = out / f"{k + 1}-{name.lower()}-{scheme}.png"
            window.grab().save(str(path))
            print(path)
    window.set_appearance("system")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
