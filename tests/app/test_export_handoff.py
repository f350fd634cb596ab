"""The Export page's hand-offs, with the engine's real hand-off code
(:mod:`mlx_lora.export.handoff`) and a stand-in export job that writes what a GGUF or
MLX export writes: "Send to LM Studio" copies the model into a temporary LM Studio home
(never over another model), "Send to Ollama" runs a stand-in ``ollama`` on PATH that
records its arguments and checks the Modelfile's GGUF is there, or shows the exact
command when there is no ollama. Each hand-off ends in a screenshot of the page (light),
saved under docs/screenshots/ when ``MLX_LORA_SCREENSHOTS`` names that folder."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from app.controllers import export as export_module
from app.controllers.export import ExportController
from app.controllers.runs import RunsController
from app.pages.export_page import ExportPage
from mlx_lora.events import Progress
from mlx_lora.export import ExportResult, handoff
from tests.app.test_export_page import check
from tests.core.test_runs import EVENTS, make_run

GGUF = "run-a-final-q4_k_m.gguf"


def _write_export(out_dir: Path, fmt: str) -> tuple[str, ...]:
    out_dir.mkdir(parents=True)
    if fmt == "gguf":
        (out_dir / GGUF).write_bytes(b"GGUF" + bytes(range(256)) * 4)
        (out_dir / "Modelfile").write_text(f"FROM ./{GGUF}\nPARAMETER stop \"<|im_end|>\"\n")
    else:
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"weights")
        (out_dir / "tokenizer.json").write_text("{}")
    (out_dir / "README.md").write_text("# the model card\n")
    (out_dir / "verification.json").write_text(json.dumps({"created_by": "mlx-lora-studio 0.1", "format": fmt}))
    return tuple(sorted(p.name for p in out_dir.iterdir()))


@pytest.fixture
def page(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QApplication

    from app.theme import ThemeManager

    monkeypatch.setenv("MLX_LORA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(handoff.LMSTUDIO_HOME_ENV, str(tmp_path / "lmstudio"))
    from mlx_lora import paths

    make_run(paths.runs_dir(), "run-a", EVENTS + [{"event": "run_finished", "step": 2}])

    def fake_export(reporter, should_stop, adapter_dir, out_dir, fmt, quantize, push, private, options):
        files = _write_export(Path(out_dir), fmt)
        reporter.emit(check(True))
        reporter.emit(Progress("export", "done", 3, 3))
        return ExportResult(Path(out_dir), fmt, quantize, files, (check(True),), None, ())

    monkeypatch.setattr(export_module, "_export", fake_export)
    app = QApplication.instance()
    palette, sheet = app.palette(), app.styleSheet()
    ThemeManager(app, "light")
    runs = RunsController()
    page = ExportPage(ExportController(), runs)
    qtbot.addWidget(page)
    page.resize(1000, 760)
    with qtbot.waitSignal(runs.runs_listed, timeout=5000):
        page.show()
    yield page
    app.setPalette(palette)
    app.setStyleSheet(sheet)


def _export(qtbot, page, fmt: str, quantize=None) -> Path:
    page.format_box.setCurrentIndex(page.format_box.findData(fmt))
    if quantize:
        page.quantize_box.setCurrentIndex(page.quantize_box.findData(quantize))
    with qtbot.waitSignal(page.controller.export_finished, timeout=5000):
        page.export_button.click()
    return Path(page.out_dir)


def _hand_off(qtbot, page, button):
    with qtbot.waitSignal(page.controller.handed_off, timeout=10000) as blocker:
        button.click()
    qtbot.waitUntil(lambda: page.lmstudio_button.isEnabled() or page.ollama_button.isEnabled(), timeout=5000)
    return blocker.args[0]


def _screenshot(page, tmp_path, name: str) -> None:
    page.repaint()
    for folder in filter(None, (tmp_path, os.environ.get("MLX_LORA_SCREENSHOTS"))):
        assert page.grab().save(str(Path(folder) / name))


def _stand_in_ollama(folder: Path, log: Path) -> Path:
    stand_in = folder / "ollama"
    folder.mkdir()
    stand_in.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        "text = open(sys.argv[sys.argv.index('-f') + 1]).read()\n"
                        "gguf = text.split('FROM ./')[1].split()[0]\n"
                        f"json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(), 'gguf_exists': os.path.isfile(gguf)}},"
                        f" open({str(log)!r}, 'w'))\n")
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
    return stand_in


def test_a_gguf_export_goes_to_lm_studio_and_never_over_another_model(qtbot, page, tmp_path):
    assert not page.lmstudio_button.isEnabled() and not page.ollama_button.isEnabled()  # nothing exported yet
    out = _export(qtbot, page, "gguf", "q4_k_m")
    assert page.handoff_name_edit.text() == out.name and page.lmstudio_button.isEnabled()
    page.handoff_name_edit.setText("Pirate SmolLM")

    outcome = _hand_off(qtbot, page, page.lmstudio_button)
    where = tmp_path / "lmstudio" / "models" / "mlx-lora-studio" / "Pirate-SmolLM"
    assert outcome.done and Path(outcome.where) == where.resolve()
    assert (where / GGUF).read_bytes() == (out / GGUF).read_bytes()
    assert {p.name for p in where.iterdir()} == {GGUF, "README.md", "verification.json"}
    assert str(where.resolve()) in page.handoff_label.text() and "✓" in page.handoff_label.text()
    _screenshot(page, tmp_path, "5-export-lmstudio-light.png")

    theirs = tmp_path / "lmstudio" / "models" / "mlx-lora-studio" / "theirs"
    theirs.mkdir()
    (theirs / "other.gguf").write_bytes(b"someone else's model")
    page.handoff_name_edit.setText("theirs")
    with qtbot.waitSignal(page.controller.handoff_failed, timeout=10000) as failed:
        page.lmstudio_button.click()
    assert "not an earlier export" in failed.args[0] and "✗" in page.handoff_label.text()
    assert (theirs / "other.gguf").read_bytes() == b"someone else's model"


def test_an_mlx_export_goes_to_lm_studio_whole_and_not_to_ollama(qtbot, page, tmp_path):
    out = _export(qtbot, page, "mlx")
    assert page.lmstudio_button.isEnabled() and not page.ollama_button.isEnabled()
    outcome = _hand_off(qtbot, page, page.lmstudio_button)
    assert {p.name for p in Path(outcome.where).iterdir()} == {p.name for p in out.iterdir()}
    assert (Path(outcome.where) / "model.safetensors").read_bytes() == b"weights"


def test_ollama_create_runs_when_ollama_is_on_path_else_the_command_is_shown(qtbot, page, tmp_path, monkeypatch):
    out = _export(qtbot, page, "gguf", "q4_k_m")
    page.handoff_name_edit.setText("Pirate SmolLM")

    monkeypatch.setenv("PATH", str(tmp_path / "no-ollama-here"))
    outcome = _hand_off(qtbot, page, page.ollama_button)
    command = f"cd {out} && ollama create pirate-smollm -f Modelfile"
    assert not outcome.done and outcome.command == command
    assert "Ollama is not on PATH" in page.handoff_label.text()
    assert page.handoff_command.isVisible() and page.handoff_command.text() == command  # to copy whole
    _screenshot(page, tmp_path, "5-export-ollama-command-light.png")

    log = tmp_path / "ollama-args.json"
    stand_in = _stand_in_ollama(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", str(stand_in.parent))
    outcome = _hand_off(qtbot, page, page.ollama_button)
    assert outcome.done and "ollama run pirate-smollm" in page.handoff_label.text()
    assert not page.handoff_command.isVisible()
    recorded = json.loads(log.read_text())
    assert recorded == {"argv": ["create", "pirate-smollm", "-f", "Modelfile"], "cwd": str(out), "gguf_exists": True}
    _screenshot(page, tmp_path, "5-export-ollama-light.png")
