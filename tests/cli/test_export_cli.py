"""``mlx-lora export``: the folder's path on stdout and the check on stderr, or JSON
events for the app; a failed check or a bad flag is one error line and status 2."""

from __future__ import annotations

import json

import mlx_lora  # noqa: F401
from mlx_lora.cli.main import main
from tests.core.test_chat_helpers import tiny_run  # noqa: F401


def test_export_prints_the_folder_and_the_check(tiny_run, tmp_path, capsys):
    out = tmp_path / "adapter"
    rc = main(["export", "--run", str(tiny_run / "best"), "--out", str(out), "--format", "adapter"])

    stdout, stderr = capsys.readouterr()
    assert rc == 0
    assert stdout == f"{out}\n"
    assert "mlx-lm adapter (loaded on a fresh base): passed — top-1 agreement 100.00%" in stderr
    assert (out / "adapters.safetensors").is_file() and (out / "verification.json").is_file()


def test_json_events_are_one_object_per_line(tiny_run, tmp_path, capsys):
    rc = main(["export", "--run", str(tiny_run), "--out", str(tmp_path / "peft"), "--format", "peft",
               "--json-events"])

    stdout, _ = capsys.readouterr()
    events = [json.loads(line) for line in stdout.splitlines()]
    assert rc == 0
    kinds = [e["event"] for e in events]
    assert kinds[0] == "progress" and kinds[-1] == "export_finished"
    assert "export_verified" in kinds
    assert events[-1]["passed"] is True and events[-1]["format"] == "peft"


def test_bad_flags_and_failed_checks_are_errors(tiny_run, tmp_path, capsys):
    assert main(["export", "--run", str(tiny_run), "--out", str(tmp_path / "x"), "--format", "peft",
                 "--quantize", "4"]) == 2
    assert "does not apply to the peft format" in capsys.readouterr().err
    assert main(["export", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "y")]) == 2
    assert "no such adapter" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
