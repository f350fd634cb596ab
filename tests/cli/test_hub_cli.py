"""``mlx-lora models search|info|download|list|rm`` end to end, in-process, against
the stand-in Hub (tests/hubserver.py)."""

from __future__ import annotations

from pathlib import Path

from mlx_lora.cli.main import main
from tests.hubserver import StandInHub


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_help_lists_the_hub_actions(capsys):
    try:
        main(["models", "--help"])
    except SystemExit as exit:
        assert exit.code == 0
    out = capsys.readouterr().out
    for action in ("search", "info", "download", "list", "rm", "demo", "import-gguf"):
        assert action in out


def test_search_prints_a_table(hub: StandInHub, capsys):
    code, out, _ = run(capsys, "models", "search", "tiny", "--sort", "likes", "--limit", "2")

    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["MODEL", "PARAMS", "SIZE"]
    assert [line.split()[0] for line in lines[1:]] == ["mlx-community/tiny-4bit", "org/gated-tiny"]
    assert "mlx" in lines[1] and "gated" in lines[2] and "llama3" in lines[2]
    assert [r for r in hub.requests if r.path == "/api/models"][-1].query["sort"] == ["likes"]


def test_search_with_no_results(hub: StandInHub, capsys):
    code, out, err = run(capsys, "models", "search", "nothing-like-this")
    assert code == 0 and out == "" and "no text-generation models" in err


def test_info_shows_what_a_download_fetches(hub: StandInHub, capsys):
    code, out, _ = run(capsys, "models", "info", "org/tiny")
    assert code == 0
    assert "apache-2.0" in out and "download:  8 files" in out and "model.safetensors" in out
    assert "pytorch_model.bin" not in out
    assert "mlx-community/tiny" in out  # the MLX hint

    code, out, _ = run(capsys, "models", "info", "org/pickle-only")
    assert code == 0 and "cannot download" in out and "pickle" in out


def test_download_prints_the_path_and_progress_on_stderr(hub: StandInHub, capsys, tmp_path):
    code, out, err = run(capsys, "models", "download", "org/tiny")

    assert code == 0
    path = Path(out.strip())
    assert path.is_relative_to(tmp_path / "hf" / "hub") and (path / "config.json").is_file()
    assert "model.safetensors" in err and "(100% of" in err.splitlines()[-1]
    assert str(path) not in err


def test_download_refusal_exits_2_with_one_error_line(hub: StandInHub, capsys):
    code, out, err = run(capsys, "models", "download", "org/pickle-only")
    assert code == 2 and out == ""
    assert err.startswith("error: org/pickle-only has only pickle weights") and "Traceback" not in err
    assert hub.file_requests() == []


def test_list_and_rm(hub: StandInHub, capsys):
    code, out, err = run(capsys, "models", "list")
    assert code == 0 and out == "" and "no models" in err

    _, downloaded, _ = run(capsys, "models", "download", "org/tiny")
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    [row] = [line for line in out.splitlines() if line.startswith("org/tiny")]
    assert " MB" in row and row.endswith(downloaded.strip())

    code, out, _ = run(capsys, "models", "rm", "org/tiny")
    assert code == 0 and out.startswith("removed org/tiny (") and "MB freed" in out
    assert not Path(downloaded.strip()).exists()

    code, out, err = run(capsys, "models", "rm", "org/tiny")
    assert code == 2 and "error: org/tiny is not in the Hugging Face cache" in err


def test_offline_download_of_an_uncached_model_exits_2(hub: StandInHub, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(capsys, "models", "download", "org/tiny")
    assert code == 2 and "HF_HUB_OFFLINE" in err
    assert hub.requests == []
