"""Save a PNG of every page of the app, in light and in dark.

    QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/screenshots.py docs/screenshots/

Runs offline in a temporary home folder, with the real engine: the Data page shows
a small generated chat dataset (with one broken line) through the demo model's
tokenizer; the Train page a real short run of the demo model on the pirate sample
(through the training supervisor, as a user would start it); a second, shorter run
gives the Runs page two curves to compare; the Chat page the tuned model beside the
base on one question; the Export page a verified mlx-lm adapter export; the Runs
page's Evaluation tab base vs tuned answers to 8 held-out questions (saved as
``6-runs-evaluation-light.png``/``-dark``). About four minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
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


def _wait(predicate, seconds: float) -> None:
    from PySide6.QtTest import QTest

    for _ in range(int(seconds * 10)):
        if predicate():
            return
        QTest.qWait(100)
    raise TimeoutError("timed out waiting for the app")


def _train(window, run_dir: Path, **settings) -> None:
    """Start a real run from the Train page's form and wait for it to end."""
    page, training = window.train_page, window.context.training
    page.preset_box.setCurrentText("Quick test")
    page.set_config(page.config().replace(run_dir=str(run_dir), **settings))
    page.preset_box.setCurrentText("Custom")
    ended = []
    training.run_ended.connect(lambda outcome, message: ended.append(outcome))
    page.start_button.click()
    _wait(lambda: ended, 900)
    if ended[0] != "finished":
        raise RuntimeError(page.log_view.toPlainText()[-3000:])


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
    from mlx_lora import paths
    from mlx_lora.export import PROMPTS

    ctx = window.context
    ctx.export.export_options = {"prompts": PROMPTS[:4], "torch_python": None}
    ctx.state.select_dataset(str(paths.sample_datasets_dir() / "pirate"))
    runs = paths.runs_dir()
    # the demo's settings (mlx_lora.demo_training): 30 steps of batch 4 move the 135M model's answers
    tiny = dict(batch_size=4, max_seq_length=256, num_layers=16, steps_per_report=1, val_batches=2,
                lr_schedule="cosine", warmup_steps=2)
    print("training two short runs of the demo model on the pirate sample…", file=sys.stderr)
    window.show_page(2)
    _train(window, runs / "20261129-101500-demo-pirate-lr3e-4", iters=12, steps_per_eval=6, save_every=12,
           learning_rate=3e-4, **tiny)
    _train(window, runs / "20261129-103000-demo-pirate", iters=30, steps_per_eval=6, save_every=10,
           learning_rate=1e-3, **tiny)
    run_dir = runs / "20261129-103000-demo-pirate"

    print("chatting with the tuned model…", file=sys.stderr)
    chat = window.chat_page
    chat.select_run(str(run_dir))
    window.show_page(3)
    _wait(lambda: chat.picker.pending is None, 30)
    loaded, answered = [], []
    ctx.chat.model_loaded.connect(loaded.append)
    ctx.chat.answer_finished.connect(answered.append)
    chat.load_button.click()
    _wait(lambda: loaded, 300)
    from mlx_lora.demo_training import first_valid_prompt

    chat.temperature.setValue(0.0)
    chat.repetition_penalty.setValue(1.2)
    chat.max_tokens.setValue(60)
    chat.input.setPlainText(first_valid_prompt())  # a held-out question of the pirate sample
    chat.send_button.click()
    _wait(lambda: answered, 600)

    print("exporting the adapter (verified)…", file=sys.stderr)
    export = window.export_page
    export.select_run(str(run_dir))
    window.show_page(4)
    _wait(lambda: export.picker.pending is None, 30)
    export.format_box.setCurrentIndex(export.format_box.findData("adapter"))
    exported = []
    ctx.export.export_finished.connect(exported.append)
    export.export_button.click()
    _wait(lambda: exported, 600)
    window.show_page(5)
    _wait(lambda: window.runs_page.table.rowCount() >= 2, 30)
    window.runs_page.select_rows(list(range(window.runs_page.table.rowCount())))
    QTest.qWait(500)
    window.show_page(2)
    window.context.system.load_facts()
    for _ in range(300):
        QTest.qWait(100)
        if window.context.system.facts:
            break

    fitted = []  # "Will it fit" re-estimates with the Train page's settings when its page shows
    ctx.models.fit_estimated.connect(fitted.append)
    window.show_page(0)
    _wait(lambda: fitted, 60)

    for scheme in ("light", "dark"):
        window.set_appearance(scheme)
        for k, name in enumerate(PAGE_NAMES):
            window.show_page(k)
            QTest.qWait(150)
            path = out / f"{k + 1}-{name.lower()}-{scheme}.png"
            window.grab().save(str(path))
            print(path)
    print("evaluating the tuned model (base vs tuned answers)…", file=sys.stderr)
    runs_page = window.runs_page
    window.show_page(5)
    row = next(r for r in range(runs_page.table.rowCount())
               if runs_page.table.item(r, 0).text() == run_dir.name)
    runs_page.select_rows([row])
    runs_page.evaluation.limit.setValue(8)
    runs_page.evaluation.max_tokens.setValue(40)
    evaluated = []
    ctx.runs.evaluation.evaluation_finished.connect(evaluated.append)
    runs_page.evaluate_button.click()
    _wait(lambda: evaluated, 900)
    QTest.qWait(500)
    for scheme in ("light", "dark"):
        window.set_appearance(scheme)
        QTest.qWait(150)
        path = out / f"6-runs-evaluation-{scheme}.png"
        window.grab().save(str(path))
        print(path)
    window.set_appearance("system")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
