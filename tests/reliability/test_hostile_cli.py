"""Hostile model folders through the CLI: ``data check --model``, ``train`` and
``chat`` (and ``models import-gguf`` for GGUF files) each exit 2 with one line
``error: FILE: reason`` — no traceback, no "internal error", and nothing
allocated in proportion to a hostile number first.

Kinds of hostility: chat templates that run forever or fill the memory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlx_lora.cli.main import main
from mlx_lora.paths import sample_datasets_dir

PIRATE = sample_datasets_dir() / "pirate"


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one ``error:`` line and no traceback."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out and "internal error" not in err + out
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1, (code, err[-2000:])
    return errors[0]


def every_command(folder: Path, tmp_path: Path) -> dict[str, list]:
    """The commands that load a model folder, each pointed at ``folder``."""
    return {
        "data check": ["data", "check", PIRATE, "--model", folder],
        "train": ["train", "--model", folder, "--data", PIRATE, "--iters", 1, "--run-dir", tmp_path / "run"],
        "chat": ["chat", "--model", folder, "--prompt", "Hi", "--max-tokens", 2],
    }


def model_with_template(tiny_model: Path, folder: Path, template: str) -> Path:
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


TEMPLATES = {
    "nested ranges": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
                     "{% for m in messages %}{{ m.content }}{% endfor %}",
    "a gigabyte": "{{ 'a' * 10**9 }}{% for m in messages %}{{ m.content }}{% endfor %}",
}


@pytest.mark.parametrize("template", list(TEMPLATES))
@pytest.mark.parametrize("command", ["data check", "train", "chat"])
def test_an_expensive_chat_template_is_one_named_error(template, command, tiny_model, tmp_path, capsys):
    folder = model_with_template(tiny_model, tmp_path / "model", TEMPLATES[template])
    line = one_line_error(capsys, every_command(folder, tmp_path)[command])
    assert f"{folder / 'tokenizer_config.json'}: chat template: too expensive" in line
    assert not (tmp_path / "run" / "checkpoints").exists()
