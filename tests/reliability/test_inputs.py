"""Bad datasets are named by file and line before any model is loaded; over-length
examples are reported before training and never reach a batch with too_long=drop; every
trained example ends with the end-of-turn token.

(The validator's own suite is tests/core/test_data_validate.py: each kind of problem with
file:line, 100k lines, a 50 MB line. Here each bad input goes through ``mlx-lora train``,
with the model loader replaced by one that fails the test if it is ever called.)"""

from __future__ import annotations

import json
import time

import pytest

from mlx_lora.cli.main import main
from mlx_lora.events import RecordingReporter
from mlx_lora.train import RunStarted, StepReport, train
from tests.core.test_train_helpers import persona_records, tiny_config

GOOD = json.dumps(persona_records(1)[0]).encode() + b"\n"


def chat(*messages) -> bytes:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages]}).encode() + b"\n"


# name -> (file bytes, the line named, words of the reason)
BAD_INPUTS = {
    "bad json": (GOOD * 3 + b'{"messages": [\n', 4, "invalid JSON"),
    "bad utf-8": (GOOD + b'{"messages": "caf\xe9"}\n', 2, "invalid UTF-8"),
    "wrong type": (GOOD * 2 + b'{"messages": [{"role": "user", "content": 7}, '
                   b'{"role": "assistant", "content": "x"}]}\n', 3, "'content' must be a string"),
    "unknown role": (GOOD + chat(("user", "hi"), ("wizard", "poof")), 2, "unknown role 'wizard'"),
    "no assistant turn": (GOOD + chat(("user", "hi")), 2, "'user' turn"),
    "mixed formats": (GOOD * 3 + b'{"prompt": "2+2=", "completion": "4"}\n', 4, "a completion record"),
    "empty file": (b"", 0, "empty file"),
    "nested 100,000 deep": (GOOD + b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", 2, "nested more than"),
    "5,000-digit number": (GOOD + b'{"text": ' + b"1" * 5000 + b"}\n", 2, "a number with more than"),
    "lone surrogate": (GOOD * 2 + chat(("user", "hi \ud800"), ("assistant", "ok")),
                       3, "a lone surrogate"),
    "50 MB line": (GOOD + b'{"text": "' + b"x" * 50_000_000 + b"\n", 2, "invalid JSON"),
    "100k lines, one bad near the end": (GOOD * 99_990 + chat(("user", "hi"), ("robot", "beep")) + GOOD * 9,
                                         99_991, "unknown role 'robot'"),
}


@pytest.fixture
def no_model_load(monkeypatch):
    import mlx_lora.train.loop as loop

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded for an invalid dataset")

    monkeypatch.setattr(loop, "prepare_model", refuse)


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_a_bad_dataset_is_named_by_line_before_the_model_loads(kind, tiny_model, tmp_path, capsys, no_model_load):
    data, line, words = BAD_INPUTS[kind]
    path = tmp_path / "train.jsonl"
    path.write_bytes(data)
    started = time.perf_counter()
    status = main(["train", "--model", str(tiny_model), "--data", str(path), "--run-dir", str(tmp_path / "run"),
                   "--json-events"])
    seconds = time.perf_counter() - started
    captured = capsys.readouterr()
    assert status == 2
    where = f"{path}:{line}: " if line else f"{path}: "
    assert where in captured.err and words in captured.err, captured.err[:2000]
    assert len(captured.err) < 5000  # a 50 MB line is not echoed back
    events = [json.loads(text) for text in captured.out.splitlines()]
    assert [e.get("message") for e in events if e["event"] == "progress"] == ["checking the dataset"]
    assert events[-1]["event"] == "run_failed" and where in events[-1]["reason"]
    assert not (tmp_path / "run").exists()  # no run folder for a run that never started
    print(f"{kind}: refused in {seconds:.2f} s")  # measured, not asserted (see bench/)


def long_records(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Tell me a long story, number {i}."},
                          {"role": "assistant", "content": "Arr! " + "The sea be wide and deep. " * 40}]}
            for i in range(n)]


@pytest.mark.parametrize("too_long", ["drop", "truncate"])
def test_over_length_examples_are_reported_before_training_and_never_exceed_the_limit(
        too_long, tiny_model, tmp_path, monkeypatch):
    import mlx_lora.train.objectives as objectives  # the sft objective's batches

    records = persona_records(20) + long_records(4)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (data / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in persona_records(2) + long_records(1)))
    widths = []
    real_make_batch = objectives.make_batch

    def spy(examples, indices):
        batch = real_make_batch(examples, indices)
        widths.append(batch[0].shape[1] + 1)  # inputs are the tokens minus the last
        return batch

    monkeypatch.setattr(objectives, "make_batch", spy)
    recorder = RecordingReporter()
    limit = 96
    result = train(tiny_config(tiny_model, data, tmp_path / "run", iters=12, max_seq_length=limit,
                               too_long=too_long), recorder)
    assert result.status == "finished"
    started = recorder.of(RunStarted)[0]
    assert recorder.events.index(started) < recorder.events.index(recorder.of(StepReport)[0])
    if too_long == "drop":
        assert (started.dropped_examples, started.truncated_examples, started.train_examples) == (4, 0, 20)
        assert any("4 training example(s) were left out" in note for note in started.notes)
    else:
        assert (started.dropped_examples, started.truncated_examples, started.train_examples) == (0, 4, 24)
        assert any("4 training example(s) longer than max_seq_length" in note for note in started.notes)
    assert len(widths) == 12 * 1 and max(widths) <= limit, widths


def test_every_trained_example_ends_with_the_end_of_turn_token(demo_model):
    """Chat, completion and text records of every sample dataset, through the demo model's template."""
    from pathlib import Path

    from mlx_lm.tokenizer_utils import load as load_tokenizer

    import mlx_lora
    from mlx_lora.data.dataset import load_splits
    from mlx_lora.train.batches import encode_records

    tokenizer = load_tokenizer(demo_model)
    end_ids = set(tokenizer.eos_token_ids)
    samples = Path(mlx_lora.__file__).resolve().parents[1] / "resources" / "datasets"
    folders = sorted(p for p in samples.iterdir() if p.is_dir())
    assert folders
    checked = 0
    extra = [{"prompt": "2+2=", "completion": "4"}, {"text": "Once upon a time."}]
    for records in [load_splits(f).train for f in folders] + [[extra[0]], [extra[1]]]:
        encoded = encode_records(tokenizer, records, True, 4096, "truncate")
        assert encoded.truncated == 0
        for example in encoded.examples:
            last_trained = max(i for i, trained in enumerate(example.trained) if trained)
            assert example.tokens[last_trained] in end_ids, tokenizer.decode(example.tokens[-8:])
            checked += 1
    assert checked > 50
