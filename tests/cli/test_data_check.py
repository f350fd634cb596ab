"""``mlx-lora data check``: run in-process; each kind of bad file is named with the
right line, exit 0 when clean and 2 when not, never a traceback."""

from __future__ import annotations

import json

import pytest

from mlx_lora.cli.main import main
from mlx_lora.paths import sample_datasets_dir

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Arr! Ahoy."}]}


def jl(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def turns(*pairs) -> bytes:
    return jl({"messages": [{"role": r, "content": c} for r, c in pairs]})


# kind: (bad line placed on line 2 of a chat file, words the reason must contain)
BAD = {
    "invalid json": (b'{"messages": [{"role": "user",}\n', "invalid JSON"),
    "invalid utf-8": (b'{"text": "\xff\xfe"}\n', "invalid UTF-8"),
    "not an object": (b"42\n", "expected a JSON object, got a number"),
    "mixed formats": (jl({"prompt": "a", "completion": "b"}), "a completion record"),
    "unknown role": (turns(("human", "hi"), ("assistant", "ok")), "unknown role 'human'"),
    "messages not a list": (jl({"messages": {"role": "user"}}), "'messages' must be a list"),
    "content not a string": (turns(("user", {"text": "hi"}), ("assistant", "ok")), "'content' must be a string"),
    "no final assistant turn": (turns(("user", "hi")), "must end with an 'assistant' turn"),
    "empty content": (turns(("user", "hi"), ("assistant", "")), "empty content"),
    "missing keys": (jl({"input": "hi", "output": "ok"}), "missing keys"),
}


def check(capsys, *args) -> tuple[int, str, str]:
    code = main(["data", "check", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", list(BAD))
def test_each_bad_file_is_named_at_the_right_line(tmp_path, capsys, kind):
    bad, reason = BAD[kind]
    path = tmp_path / "train.jsonl"
    path.write_bytes(jl(GOOD) + bad + jl(GOOD))

    code, out, err = check(capsys, path)

    assert code == 2
    problem_lines = [ln for ln in out.splitlines() if ln.startswith(f"{path}:2: ")]
    assert len(problem_lines) == 1 and reason in problem_lines[0], out
    assert f"{path}: 1 problem" in out
    assert "Traceback" not in out + err


def test_an_empty_file_and_blank_lines(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    code, out, _ = check(capsys, empty)
    assert code == 2 and f"{empty}: empty file" in out

    blanks = tmp_path / "blanks.jsonl"
    blanks.write_bytes(jl(GOOD) + b"\n\n" + jl(GOOD))
    code, out, _ = check(capsys, blanks)
    assert code == 0
    assert "2 chat records, 2 blank lines skipped" in out and out.rstrip().endswith(": OK")


def test_many_problems_show_fifty_then_a_count(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jl(GOOD) + b"{\n" * 75)
    code, out, _ = check(capsys, path)
    assert code == 2
    assert sum(ln.startswith(f"{path}:") and "invalid JSON" in ln for ln in out.splitlines()) == 50
    assert "and 25 more problems" in out
    assert f"{path}: 75 problems" in out


def test_json_output(tmp_path, capsys):
    path = tmp_path / "train.jsonl"
    path.write_bytes(jl(GOOD) + b"oops\n")
    code, out, _ = check(capsys, path, "--json")
    report = json.loads(out)
    assert code == 2
    assert report["ok"] is False and report["format"] == "chat" and report["count"] == 1
    assert report["problems"] == [f"{path}:2: invalid JSON: Expecting value (column 1)"]


def test_a_missing_path_is_one_error_line(tmp_path, capsys):
    code, out, err = check(capsys, tmp_path / "nothing-here")
    assert code == 2
    assert err.strip() == f"error: {tmp_path / 'nothing-here'}: no such file or folder"
    assert "Traceback" not in err


def test_with_a_model_token_statistics_are_printed(tmp_path, capsys, demo_model):
    (tmp_path / "train.jsonl").write_bytes(jl(GOOD) * 3)
    (tmp_path / "valid.jsonl").write_bytes(jl(GOOD))
    code, out, _ = check(capsys, tmp_path, "--model", demo_model, "--max-seq-length", "8")
    assert code == 0
    assert "train.jsonl: 3 examples" in out
    assert "warning: 3 examples longer than 8 tokens" in out
    assert "warning: 2 examples repeating an earlier one exactly" in out
    assert "warning: 1 valid.jsonl example also in train.jsonl" in out

    code, out, _ = check(capsys, tmp_path, "--model", demo_model, "--json")
    tokens = json.loads(out)["tokens"]
    train = tokens["files"]["train.jsonl"]
    assert train["examples"] == 3 and len(train["lengths"]) == 3
    assert train["trained_tokens"] == 3 * 6  # "Arr! Ahoy." is 5 tokens, then <|im_end|>
    assert tokens["valid_in_train"] == 1


@pytest.mark.parametrize("name", ["pirate", "haiku"])
def test_the_sample_datasets_are_clean(capsys, demo_model, name):
    folder = sample_datasets_dir() / name
    code, out, _ = check(capsys, folder, "--model", demo_model, "--json")
    report = json.loads(out)
    assert code == 0, report["problems"]
    assert report["notes"] == []
    train = report["tokens"]["files"]["train.jsonl"]
    assert 80 <= train["examples"] <= 150
    assert train["missing_eos"] == 0 and train["duplicates"] == 0 and train["over_max_length"] == 0
    assert report["tokens"]["valid_in_train"] == 0
    assert 10 <= report["tokens"]["files"]["valid.jsonl"]["examples"] <= 20
    for f in folder.glob("*.jsonl"):
        assert f.stat().st_size < 200_000


def test_a_model_with_a_broken_tokenizer_is_one_error_line(tmp_path, capsys, tiny_model):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    (broken / "tokenizer.json").write_text("{ not json")
    data = tmp_path / "d.jsonl"
    data.write_bytes(jl(GOOD))
    code, out, err = check(capsys, data, "--model", broken)
    assert code == 2
    assert err.startswith(f"error: {broken}: cannot load the tokenizer")
    assert "Traceback" not in err
