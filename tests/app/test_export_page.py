"""The Export page with a stand-in export job (the real engine runs in
test_whole_flow): run and formats offered, progress, the verification figures with
a clear pass or fail, push settings passed on (private by default), reveal."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtGui import QDesktopServices

from app.controllers import export as export_module
from app.controllers.export import ExportController
from app.controllers.runs import RunsController
from app.pages.export_page import ExportPage
from mlx_lora.events import Progress
from mlx_lora.export import ExportResult, ExportVerificationFailed, ExportVerified
from tests.core.test_runs import EVENTS, make_run


def check(passed: bool) -> ExportVerified:
    return ExportVerified(check="mlx-lm adapter (loaded on a fresh base)", passed=passed, prompts=2, positions=40,
                          top1_agreement=1.0 if passed else 0.5, max_abs_logit_diff=0.0 if passed else 3.2,
                          mean_abs_logit_diff=0.0 if passed else 1.1, adapter_effect=0.8, distance_from_base=0.8,
                          adapter_top1_changes=0.1, thresholds={}, problems=() if passed else ("agreement 50%",))


@pytest.fixture
def page(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_LORA_HOME", str(tmp_path / "home"))
    from mlx_lora import paths

    make_run(paths.runs_dir(), "run-a", EVENTS + [{"event": "run_finished", "step": 2}])
    calls = []

    def fake_export(reporter, should_stop, adapter_dir, out_dir, fmt, quantize, push, private, options):
        calls.append(dict(adapter_dir=adapter_dir, out_dir=out_dir, fmt=fmt, quantize=quantize, push=push,
                          private=private))
        reporter.emit(Progress("export", "loading the base", 0, 3))
        passed = fmt != "gguf"  # the stand-in fails its check for gguf
        reporter.emit(check(passed))
        if not passed:
            raise ExportVerificationFailed(Path(out_dir), [check(False)])
        Path(out_dir).mkdir(parents=True)
        reporter.emit(Progress("export", "done", 3, 3))
        return ExportResult(Path(out_dir), fmt, quantize, ("README.md", "adapters.safetensors"), (check(True),),
                            None, ("a note",))

    monkeypatch.setattr(export_module, "_export", fake_export)
    runs = RunsController()
    page = ExportPage(ExportController(), runs)
    qtbot.addWidget(page)
    page.resize(1000, 700)
    with qtbot.waitSignal(runs.runs_listed, timeout=5000):
        page.show()
    page.calls = calls
    return page


def test_a_passing_export_shows_its_figures_and_can_be_revealed(qtbot, page, monkeypatch):
    assert "run-a" in page.run_box.currentText() and page.adapter_box.currentText() == "final"
    page.format_box.setCurrentIndex(page.format_box.findData("mlx"))
    assert [page.quantize_box.itemData(k) for k in range(page.quantize_box.count())] == [None, 4, 8]
    page.format_box.setCurrentIndex(page.format_box.findData("peft"))
    assert not page.quantize_box.isEnabled()
    with qtbot.waitSignal(page.controller.export_finished, timeout=5000):
        page.export_button.click()
    call = page.calls[0]
    assert call["fmt"] == "peft" and call["push"] is None and call["adapter_dir"].endswith("run-a")
    assert Path(call["out_dir"]).name == "run-a-peft"
    assert "✓" in page.verdict.text() and "100.0%" in page.verdict.text()
    assert page.checks_table.item(0, 1).text() == "passed" and page.checks_table.item(0, 2).text() == "100.0%"
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    page.reveal_button.click()
    assert opened == [call["out_dir"]]


def test_a_failed_check_says_so_with_the_figures(qtbot, page):
    page.format_box.setCurrentIndex(page.format_box.findData("gguf"))
    page.quantize_box.setCurrentIndex(page.quantize_box.findData(4))
    with qtbot.waitSignal(page.controller.failed, timeout=5000):
        page.export_button.click()
    assert page.calls[0]["quantize"] == 4
    assert "✗" in page.verdict.text() and "nothing was written" in page.verdict.text()
    assert page.checks_table.item(0, 1).text() == "FAILED" and page.checks_table.item(0, 3).text() == "3.2"
    assert not page.reveal_button.isEnabled()


def test_push_is_private_unless_public_is_ticked(qtbot, page):
    page.push_box.setChecked(True)
    assert not page.export_button.isEnabled()  # no repo name yet
    page.repo_edit.setText("me/pirate-adapter")
    with qtbot.waitSignal(page.controller.export_finished, timeout=5000):
        page.export_button.click()
    assert page.calls[0]["push"] == "me/pirate-adapter" and page.calls[0]["private"] is True


def test_the_format_combo_offers_every_registered_format_with_its_quantisations(page):
    from mlx_lora.export.formats import FORMATS

    assert [page.format_box.itemData(k) for k in range(page.format_box.count())] == list(FORMATS)
    for name, fmt in FORMATS.items():
        index = page.format_box.findData(name)
        assert page.format_box.itemText(index) == fmt.label
        page.format_box.setCurrentIndex(index)
        offered = [(page.quantize_box.itemText(k), page.quantize_box.itemData(k))
                   for k in range(page.quantize_box.count())]
        assert offered == [(fmt.quantize_label(bits), bits) for bits in fmt.quantize]
        assert page.quantize_box.isEnabled() == (len(fmt.quantize) > 1)
