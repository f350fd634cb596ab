"""issue 16.1: ``export --out`` replaces only an earlier export of ours, never the home
folder, the base model, a run folder, a folder inside one or a folder of someone else's;
refused with one error line (exit 2) before any model loads. The same rule for the app's
Export page (one function: mlx_lora/export/destination.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlx_lora.cli.main import main
from tests.core.test_chat_helpers import tiny_run  # noqa: F401  (fixture)
from tests.reliability.runcheck import snapshot


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_model_load(monkeypatch):
    """A refusal must come before any model loads."""
    import mlx_lora.chat.model

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the destination was checked")

    monkeypatch.setattr(mlx_lora.chat.model, "load_chat_model", refuse)


def _refused(capsys, run: Path, out: Path, *, fmt: str = "adapter") -> str:
    rc = main(["export", "--run", str(run), "--out", str(out), "--format", fmt])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"error: {out.resolve()}: ") and "Traceback" not in err
    assert "choose a new folder to export to" in err  # what to do
    return err


def test_the_home_folder_and_documents_in_it_are_refused(tiny_run, tmp_path, monkeypatch, capsys, no_model_load):
    home = tmp_path / "home"
    documents = home / "Documents"
    documents.mkdir(parents=True)
    (documents / "thesis.txt").write_text("four years of work")
    (home / ".bashrc").write_text("export PATH=…")
    monkeypatch.setenv("HOME", str(home))
    before = _files(home)

    assert "not an earlier export" in _refused(capsys, tiny_run, documents)
    assert "this is your home folder" in _refused(capsys, tiny_run, home)
    assert "contains your home folder" in _refused(capsys, tiny_run, tmp_path)
    assert _files(home) == before


def test_the_base_model_and_folders_inside_it_are_refused(tiny_run, tiny_model, capsys, no_model_load):
    before = _files(tiny_model)

    assert "this is the base model" in _refused(capsys, tiny_run, tiny_model, fmt="mlx")
    assert "lies inside the base model" in _refused(capsys, tiny_run, tiny_model / "exported")
    assert "contains the base model" in _refused(capsys, tiny_run, tiny_model.parent)
    assert _files(tiny_model) == before and not (tiny_model / "exported").exists()


def test_run_folders_and_folders_inside_them_are_refused(tiny_run, tmp_path, capsys, no_model_load):
    before = snapshot(tiny_run)
    other_run = tmp_path / "other-run"
    other_run.mkdir()
    (other_run / "metrics.jsonl").write_text('{"event": "run_started", "step": 0}\n')

    assert "this is the adapter's run folder" in _refused(capsys, tiny_run, tiny_run)
    assert "lies inside the adapter's run folder" in _refused(capsys, tiny_run / "best", tiny_run / "exports" / "x")
    assert "this is the adapter's folder" in _refused(capsys, tiny_run / "best", tiny_run / "best")
    assert "is a run folder" in _refused(capsys, tiny_run, other_run)  # anyone's run, not only this one's
    assert "lies inside the run folder" in _refused(capsys, tiny_run, other_run / "export")
    assert snapshot(tiny_run) == before and not (tiny_run / "exports").exists()


def test_a_foreign_folder_or_a_file_is_refused(tiny_run, tmp_path, capsys, no_model_load):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    fake = tmp_path / "fake-export"  # a verification.json that is not ours
    fake.mkdir()
    (fake / "verification.json").write_text(json.dumps({"format": "adapter", "created_by": "someone else"}))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes")

    assert "would delete its 1 entry" in _refused(capsys, tiny_run, foreign)
    assert "not an earlier export" in _refused(capsys, tiny_run, fake)
    assert "this is a file, not a folder" in _refused(capsys, tiny_run, a_file)
    assert (foreign / "cat.jpg").read_bytes() == b"\xff\xd8 a cat" and a_file.read_text() == "notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake-export", "notes.txt", "photos"]  # nothing beside


def test_an_earlier_export_is_replaced_whole(tiny_run, tmp_path, capsys):
    out = tmp_path / "exports" / "adapter"
    assert main(["export", "--run", str(tiny_run / "best"), "--out", str(out), "--format", "adapter"]) == 0
    (out / "left-from-before.txt").write_text("the old export's file")
    empty = tmp_path / "exports" / "empty"
    empty.mkdir()

    assert main(["export", "--run", str(tiny_run), "--out", str(out), "--format", "adapter"]) == 0
    assert main(["export", "--run", str(tiny_run), "--out", str(empty), "--format", "adapter"]) == 0  # nothing to lose

    capsys.readouterr()
    assert not (out / "left-from-before.txt").exists()  # replaced whole, not merged
    assert json.loads((out / "verification.json").read_text())["adapter"] == str(tiny_run)
    assert sorted(p.name for p in out.parent.iterdir()) == ["adapter", "empty"]  # no temporary, no .old


def test_the_engine_refuses_too(tiny_run, tiny_model, no_model_load):
    from mlx_lora.errors import UserError
    from mlx_lora.export import export_run

    with pytest.raises(UserError, match="this is the base model"):
        export_run(tiny_run, tiny_model, "mlx", torch_python=None)


def test_the_export_page_shows_the_same_refusal(tiny_run, tmp_path, monkeypatch, no_model_load):
    from app.controllers.export import ExportController

    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    (home / "Documents" / "thesis.txt").write_text("four years of work")
    monkeypatch.setenv("HOME", str(home))
    controller = ExportController({"torch_python": None})
    failures: list[str] = []
    controller.failed.connect(failures.append)

    controller.export(str(tiny_run), str(home / "Documents"), "adapter")

    assert not controller.is_busy()  # refused before a worker started
    assert len(failures) == 1 and failures[0].startswith(f"{(home / 'Documents').resolve()}: the folder exists "
                                                         "and is not an earlier export")
    assert (home / "Documents" / "thesis.txt").read_text() == "four years of work"
