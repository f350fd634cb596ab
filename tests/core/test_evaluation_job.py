"""The generation evaluation job on the demo model with a tiny trained run: base and
tuned answers scored, the reference losses, the saved results and the run history's
headline, progress events, and a cancel that leaves nothing written."""

from __future__ import annotations

import json
import shutil

import pytest

from mlx_lora.errors import Cancelled, UserError
from mlx_lora.evaluation import GenerationSettings, evaluate_generation, read_generation_eval
from mlx_lora.evaluation.job import eval_item
from mlx_lora.evaluation.results import EvaluationProgress, GenerationEval, format_result
from mlx_lora.events import RecordingReporter
from mlx_lora.run_folder import GENERATION_EVAL_FILE, RunFolder
from mlx_lora.run_history import summarize_run
from mlx_lora.train import train
from tests.core.test_train_helpers import tiny_config, write_dataset

SETTINGS = GenerationSettings(limit=3, max_tokens=6)


def tiny_demo_run(base, folder, test: int = 3):
    """Four steps of LoRA on the demo model over the persona chats ("Arr! 3+4 be 7, matey.")."""
    data = write_dataset(folder / "data", train=8, valid=2, test=test)
    config = tiny_config(base, data, folder / "run", iters=4, steps_per_eval=100, save_every=100, num_layers=2,
                         learning_rate=1e-3)
    assert train(config).status == "finished"
    return folder / "run"


@pytest.fixture(scope="module")
def demo_run(demo_model, tmp_path_factory):
    return tiny_demo_run(demo_model, tmp_path_factory.mktemp("evaluation"))


@pytest.fixture(scope="module")
def evaluated(demo_run):
    recorder = RecordingReporter()
    return evaluate_generation(demo_run, SETTINGS, recorder), recorder


def test_base_and_tuned_answers_are_scored_and_saved(demo_run, evaluated):
    result, recorder = evaluated
    assert result.split == "test" and result.split_note.startswith("3 of 3 test examples")
    assert len(result.examples) == 3 and {e.index for e in result.examples} == {0, 1, 2}
    for example in result.examples:
        assert example.reference.startswith("Arr!") and example.prompt.startswith("What is")
        for answer in (example.base, example.tuned):
            assert 1 <= answer.generated_tokens <= 6 and answer.finish_reason in ("stop", "length")
            assert 0 <= answer.rouge_l <= 1 and answer.loss > 0 and answer.loss_tokens > 5
    # four steps toward the references made them likelier: the tuned loss is lower on each
    assert all(e.tuned.loss < e.base.loss for e in result.examples)
    assert result.tuned.loss < result.base.loss
    # the summary is the mean of the examples; the loss is token-weighted
    assert result.base.rouge_l == pytest.approx(sum(e.base.rouge_l for e in result.examples) / 3)
    tokens = sum(e.tuned.loss_tokens for e in result.examples)
    assert result.tuned.loss == pytest.approx(sum(e.tuned.loss * e.tuned.loss_tokens for e in result.examples) / tokens)
    # best and worst by tuned − base
    deltas = [e.delta for e in result.ranked()]
    assert deltas == sorted(deltas, reverse=True) and result.best(1)[0].delta == deltas[0]
    assert result.worst(1)[0].delta == deltas[-1]
    # saved whole in the run folder; read back equal; shown in the history
    saved = demo_run / GENERATION_EVAL_FILE
    assert json.loads(saved.read_text())["split"] == "test"
    assert read_generation_eval(demo_run) == result
    headline = summarize_run(demo_run).evaluation
    assert headline.examples == 3 and headline.tuned_loss == pytest.approx(result.tuned.loss)
    assert headline.base_rouge_l == pytest.approx(result.base.rouge_l)
    assert not [p.name for p in demo_run.iterdir() if ".tmp" in p.name]
    # progress says what it is doing, in order
    messages = [e.message for e in recorder.of(EvaluationProgress)]
    assert messages[0] == "loading the model" and messages[-1] == "saving the results"
    assert messages.index("generating 3/3 (base)") < messages.index("generating 1/3 (tuned)")
    assert "scoring 2/3 (tuned)" in messages
    text = format_result(result)
    assert "ROUGE-L" in text and "reference loss/token" in text and "worst" in text


def test_the_base_answers_are_the_untuned_model(demo_model, demo_run, evaluated):
    """The base side is the base alone (adapter switched off), the tuned side the adapter's."""
    from mlx_lora.chat import ChatSession, ChatSettings, load_chat_model

    result, _ = evaluated
    base = load_chat_model(model=demo_model)
    session = ChatSession(base.model, base.tokenizer)
    first = result.examples[0]
    answer = session.answer([{"role": "user", "content": first.prompt}], ChatSettings(temperature=0, max_tokens=6))
    assert answer.text == first.base.text


def test_cancel_leaves_nothing_written(demo_run, evaluated, tmp_path):
    # `evaluated` saved the results this cancel must leave standing (in this process: under
    # pytest-xdist each worker has its own module fixtures)
    saved = (demo_run / GENERATION_EVAL_FILE).read_bytes()
    recorder = RecordingReporter()
    asked = []

    def stop_while_generating_tuned():
        asked.append(1)
        return any(e.side == "tuned" for e in recorder.of(EvaluationProgress))

    with pytest.raises(Cancelled):
        evaluate_generation(demo_run, GenerationSettings(limit=2, max_tokens=4), recorder,
                            stop_while_generating_tuned)
    assert (demo_run / GENERATION_EVAL_FILE).read_bytes() == saved  # the previous results stand
    assert not [p.name for p in demo_run.iterdir() if p.name.startswith(".") and ".tmp" in p.name]


def test_no_test_split_takes_a_sample_of_validation_and_says_so(demo_run, evaluated, tmp_path):
    # the same run, its config pointing at the data without test.jsonl (no second training)
    data = write_dataset(tmp_path / "data", train=8, valid=2, test=0)
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    folder = RunFolder(run)
    folder.write_config(folder.config().replace(data=str(data)))
    (run / GENERATION_EVAL_FILE).unlink()
    with pytest.raises(UserError, match="no test split"):
        evaluate_generation(run, GenerationSettings(split="test", limit=1, max_tokens=2))
    # …with the base as a judge of tuned vs base, asked in both orders
    result = evaluate_generation(run, GenerationSettings(limit=1, max_tokens=2, judge="base"), save=False)
    assert result.split == "valid" and "1 of 2 validation examples" in result.split_note
    assert "no test split" in result.split_note
    example = result.examples[0]
    assert example.judge in ("tuned", "base", "tie") and len(example.judge_replies) == 2
    assert sum(result.judge_counts.values()) == 1
    assert GenerationEval.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert "judge: preferred" in format_result(result) and "judge:     " in format_result(result)
    assert not (run / GENERATION_EVAL_FILE).exists()


def test_what_an_example_offers_as_prompt_and_reference():
    chat = {"messages": [{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Ahoy"}, {"role": "user", "content": "Bye"},
                         {"role": "assistant", "content": "Fair winds"}]}
    item = eval_item(0, chat)
    assert item.reference == "Fair winds" and [m["content"] for m in item.messages] == ["Be a pirate.", "Hi", "Ahoy",
                                                                                         "Bye"]
    item = eval_item(1, {"prompt": "2+2?", "completion": "4"})
    assert item.messages == ({"role": "user", "content": "2+2?"},) and item.reference == "4"
    item = eval_item(2, {"prompt": "Hi", "chosen": "Ahoy", "rejected": "Hello"})
    assert item.reference == "Ahoy"
    with pytest.raises(UserError, match="text format"):
        eval_item(3, {"text": "just text"})


def test_settings_are_checked_and_the_json_round_trips(evaluated):
    with pytest.raises(UserError):
        GenerationSettings(max_tokens=0)
    with pytest.raises(UserError):
        GenerationSettings(split="dev")
    result, _ = evaluated
    assert GenerationEval.from_dict(json.loads(json.dumps(result.to_dict()))) == result
