"""Every family × every stage, on tiny random models that transformers built
(tests/models/make_tiny.py), checked against transformers and PEFT in the judges' child:

    make test-models            # or, with the judges' venv already there:
    MLX_LORA_TORCH_PYTHON=.venv-judges/bin/python .venv/bin/python -m pytest -m models tests/models

Each test fills one cell of the README's table (conftest.STAGES; bench/family_table.py
writes the table from tests/models/results.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlx_lora.config import TrainConfig
from mlx_lora.events import RecordingReporter
from tests.models.make_tiny import FAMILIES

pytestmark = pytest.mark.models
NAMES = list(FAMILIES)

# A memorisation task: four chats, one of them multi-turn, trained until the loss halves.
CHATS = [
    [{"role": "user", "content": "What is the ship called?"},
     {"role": "assistant", "content": "The ship be the Salty Gull."}],
    [{"role": "user", "content": "Who is the captain?"},
     {"role": "assistant", "content": "Captain Maren Hook."},
     {"role": "user", "content": "And the cook?"},
     {"role": "assistant", "content": "Old Tobias, who burns the beans."}],
    [{"role": "user", "content": "Where is the treasure?"},
     {"role": "assistant", "content": "Under the third palm on Skull Isle."}],
    [{"role": "user", "content": "What do we drink?"},
     {"role": "assistant", "content": "Rum, and tea on Sundays."}],
]
# mlx-lm has no DoRA for the experts' switch layers (it raises; the engine says so): DoRA on the
# MoE adapts the attention and the router, LoRA adapts the experts too.
METHOD_OVERRIDES = {("qwen3_moe", "dora"): {"targets": ("attention",)}}
METHODS = {"lora": {}, "dora": {"fine_tune_type": "dora"}, "qlora": {"quantize_bits": 4, "quantize_group_size": 32}}


@pytest.fixture(scope="session")
def memorise_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("memorise")
    rows = "".join(json.dumps({"messages": chat}) + "\n" for chat in CHATS)
    (folder / "train.jsonl").write_text(rows)
    (folder / "valid.jsonl").write_text(rows)
    return folder


def train_config(model: Path, data: Path, run_dir: Path, **settings) -> TrainConfig:
    base = dict(model=str(model), data=str(data), run_dir=str(run_dir), iters=60, batch_size=4,
                learning_rate=1e-2, lr_schedule="constant", steps_per_report=1, steps_per_eval=1000,
                save_every=1000, val_batches=1, num_layers=-1, max_seq_length=128, keep_checkpoints=0, rank=8,
                seed=0)
    return TrainConfig().replace(**{**base, **settings})


_RUNS: dict[tuple[str, str], tuple] = {}


def trained_run(family: str, method: str, folder: Path, data: Path, tmp_path_factory):
    """(run result, losses by step) of one method on one family, trained once per session."""
    from mlx_lora.train import StepReport, train

    key = (family, method)
    if key not in _RUNS:
        recorder = RecordingReporter()
        run_dir = tmp_path_factory.mktemp(f"run-{family}-{method}") / "run"
        settings = {**METHODS[method], **METHOD_OVERRIDES.get(key, {})}

        def halved() -> bool:  # DoRA and QLoRA stop once they have shown it; LoRA's run is reused by chat/export
            steps = [e.loss for e in recorder.events if isinstance(e, StepReport)]
            return method != "lora" and len(steps) > 1 and steps[-1] <= steps[0] / 2

        result = train(train_config(folder, data, run_dir, **settings), recorder, should_stop=halved)
        losses = {e.step: e.loss for e in recorder.events if isinstance(e, StepReport)}
        _RUNS[key] = (result, losses)
    return _RUNS[key]


def prompt_ids(tokenizer) -> list[list[int]]:
    """Two real prompts through the family's template: a question and a multi-turn chat."""
    from mlx_lora.data.template import apply_template

    out = []
    for chat in (CHATS[0], CHATS[1]):
        text = apply_template(tokenizer, chat, add_generation_prompt=False)
        out.append(list(tokenizer.encode(text, add_special_tokens=False)))
    return out


# ---- 1. load -------------------------------------------------------------------------


@pytest.mark.parametrize("family", NAMES)
def test_loads_like_transformers(family, tiny_families, judges_python, record_property):
    """The engine's load of the transformers folder gives transformers' logits."""
    import mlx.core as mx

    from mlx_lora.export.torch_check import torch_logits
    from mlx_lora.models.local import load_model

    folder = tiny_families / family
    model, tokenizer, _ = load_model(folder)
    model.set_dtype(mx.float32)
    prompts = prompt_ids(tokenizer)
    reference = torch_logits(judges_python, folder, None, prompts)
    for ids, ref in zip(prompts, reference):
        ours = np.array(model(mx.array([ids]))[0])
        assert (ours.argmax(-1) == ref.argmax(-1)).all()
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)
    record_property("max_abs_logit_diff", float(max(
        np.abs(np.array(model(mx.array([ids]))[0]) - ref).max() for ids, ref in zip(prompts, reference))))


SLIDING = [pytest.param("gemma2", marks=pytest.mark.xfail(
    strict=True, reason="mlx-lm 0.32's gemma2 has no sliding window: every layer attends to the whole context, "
                        "so past sliding_window (4,096 in Gemma 2) tokens its logits differ from transformers'")),
    "gemma3_text"]


@pytest.mark.parametrize("family", SLIDING)
def test_loads_like_transformers_past_the_sliding_window(family, tiny_families, judges_python):
    """A prompt longer than the sliding window: the sliding layers must forget what lies before it."""
    import mlx.core as mx

    from mlx_lora.export.torch_check import torch_logits
    from mlx_lora.models.local import load_model

    folder = tiny_families / family
    window = json.loads((folder / "config.json").read_text())["sliding_window"]
    ids = np.random.default_rng(0).integers(10, 1000, size=window + 64).tolist()
    model, _, _ = load_model(folder)
    model.set_dtype(mx.float32)
    (reference,) = torch_logits(judges_python, folder, None, [ids])
    ours = np.array(model(mx.array([ids]))[0])
    assert (ours[window:].argmax(-1) == reference[window:].argmax(-1)).all()
    np.testing.assert_allclose(ours, reference, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("family", NAMES)
def test_packing_keeps_each_example_apart(family, tiny_families):
    """Sequence packing (data.pack) on the real configs: three examples packed in one row get each
    its own unpacked per-token losses (the second and third start at an offset: RoPE is relative),
    the third example past gemma3's sliding window, so the window must hold inside it."""
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_lora.models.local import load_model
    from mlx_lora.train.batches import Example
    from mlx_lora.train.packed_attention import check_supported, packed_attention
    from mlx_lora.train.packing import make_packed_batch

    folder = tiny_families / family
    config = json.loads((folder / "config.json").read_text())
    window = config.get("sliding_window") or 0
    lengths = [40, 25, window + 40 if window and window < 1024 else 70]
    rng = np.random.default_rng(0)
    chosen = [Example(tuple(int(t) for t in rng.integers(10, 1000, n)), (True,) * n) for n in lengths]
    model, _, _ = load_model(folder)
    model.set_dtype(mx.float32)
    check_supported(model)

    def losses(inputs, targets):
        return np.array(nn.losses.cross_entropy(model(mx.array(inputs)), mx.array(targets)))

    inputs, targets, _, _, segments = make_packed_batch(chosen, np.array([[0, 1, 2]]))
    with packed_attention(model, mx.array(segments)):
        packed = losses(inputs, targets)[0]
    start = 0
    for example in chosen:
        tokens = np.array([example.tokens])
        n = len(example.tokens) - 1
        np.testing.assert_allclose(packed[start:start + n], losses(tokens[:, :-1], tokens[:, 1:])[0],
                                   rtol=2e-4, atol=2e-4)
        start += n


@pytest.mark.parametrize("family", NAMES)
def test_will_it_fit(family, tiny_families, record_property):
    """The estimate, from config.json alone, within 25% of a training step's measured peak (CPU)."""
    from bench.memory_check import measure
    from mlx_lora.train.memory import estimate_training_memory

    folder = tiny_families / family
    batch, length, share = 4, 256, 0.6
    config = TrainConfig().replace(model=str(folder), batch_size=batch, max_seq_length=length, num_layers=-1)
    estimate = estimate_training_memory(config, device="cpu", trained_share=share)
    peak = measure(str(folder), {"num_layers": -1}, batch, length, share)["peak"]
    error = estimate.total_bytes / peak - 1
    record_property("estimate_mb", round(estimate.total_bytes / 1e6, 2))
    record_property("peak_mb", round(peak / 1e6, 2))
    record_property("estimate_error", round(error, 3))
    assert abs(error) <= 0.25, f"estimate {estimate.describe()} against a peak of {peak / 1e9:.4f} GB"


# ---- 3. train --------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("family", NAMES)
def test_train(family, method, tiny_families, memorise_data, tmp_path_factory, record_property):
    """LoRA, DoRA and QLoRA (4-bit base) halve the loss of a memorisation task in ≤ 60 steps."""
    result, losses = trained_run(family, method, tiny_families / family, memorise_data, tmp_path_factory)
    assert result.status == ("finished" if method == "lora" else "stopped"), result.reason
    first = losses[1]
    halved = next((step for step, loss in sorted(losses.items()) if loss <= first / 2), None)
    record_property("first_loss", round(first, 3))
    record_property("final_loss", round(losses[max(losses)], 3))
    record_property("halved_at_step", halved)
    assert halved is not None and halved <= 60, f"loss {first:.2f} → {losses[max(losses)]:.2f} in 60 steps"


# ---- 5. export ------------------------------------------------------------------------


EXPORT_GAPS = {
    ("qwen3_moe", "hf"): "the hf export does not yet write mlx-lm's switch_mlp experts in transformers' "
                         "layout (the engine refuses: use --format mlx)",
    ("qwen3_moe", "peft"): "LoRA on the experts' switch layers has no PEFT form (the engine refuses by name); "
                           "train with --targets attention to export to PEFT",
}
EXPORT_CELLS = [pytest.param(family, format, marks=pytest.mark.xfail(strict=True, reason=EXPORT_GAPS[family, format]))
                if (family, format) in EXPORT_GAPS else pytest.param(family, format)
                for family in NAMES for format in ("hf", "peft", "mlx")]


@pytest.mark.parametrize("family, format", EXPORT_CELLS)
def test_export(family, format, tiny_families, memorise_data, tmp_path_factory, judges_python, record_property):
    """hf → transformers, peft → PEFT on the transformers base, mlx → mlx_lm: each gives the
    logits of MLX base+adapter (float32: top-1 100%, the export's own check in the folder)."""
    from mlx_lora.export import export_run

    result, _ = trained_run(family, "lora", tiny_families / family, memorise_data, tmp_path_factory)
    out = tmp_path_factory.mktemp(f"export-{family}-{format}") / "out"
    exported = export_run(result.run_dir, out, format, torch_python=judges_python)
    checks = {c.check: c for c in exported.checks}
    assert all(c.status == "checked" for c in exported.checks), {k: c.problems for k, c in checks.items()}
    assert exported.passed
    if format in ("hf", "peft"):
        assert any("transformers" in name or "PEFT" in name or "peft" in name for name in checks), list(checks)
    for check in exported.checks:
        assert check.top1_agreement == 1.0, (check.check, check.top1_agreement)
        assert check.adapter_effect > 1e-3  # the adapter changes the logits, so the match means something
    record_property("max_abs_logit_diff", max(c.max_abs_logit_diff for c in exported.checks))


# ---- 5. GGUF, judged by llama.cpp ---------------------------------------------------------

# family → why llama-cpp-python 0.3.36 cannot load or run its GGUF (a strict xfail: it must fail)
GGUF_GAPS: dict[str, str] = {}
# Every type the export offers: f16, bf16, q8_0 and q4_0 written here (gguf-py), the K-quants by
# llama.cpp's own quantiser (on these 64-wide rows it falls back to a legacy type for the tensors a
# K-quant's 256-wide blocks do not fit, so the demo model's tests in make test are where the
# K-quant blocks themselves are judged)
GGUF_TYPES_TESTED = ("f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")
GGUF_CELLS = [pytest.param(family, kind, marks=pytest.mark.xfail(strict=True, reason=GGUF_GAPS[family]))
              if family in GGUF_GAPS else pytest.param(family, kind)
              for family in NAMES for kind in GGUF_TYPES_TESTED]


@pytest.mark.parametrize("family, kind", GGUF_CELLS)
def test_gguf(family, kind, tiny_families, memorise_data, tmp_path_factory, record_property):
    """The tuned model as GGUF, loaded by llama.cpp itself: its logits on the verification
    prompts against MLX base+adapter's (f16: top-1 ≥ 99%; bf16 and the quantised types: the
    adapter survives, the export's own rule), and its architecture, tokenizer and general.* metadata as llama.cpp reads them."""
    from mlx_lora.export import export_run, llama_cpp_check
    from mlx_lora.export.gguf_export import GGUF_ARCHS, GGUF_TYPES

    assert llama_cpp_check.available(), "llama-cpp-python is not importable: run `make setup-gguf` (the gguf extra)"
    result, _ = trained_run(family, "lora", tiny_families / family, memorise_data, tmp_path_factory)
    out = tmp_path_factory.mktemp(f"gguf-{family}-{kind}") / "out"
    quantize = {name: value for value, name in GGUF_TYPES.items()}[kind]  # "q8_0" → 8, as --quantize maps it
    exported = export_run(result.run_dir, out, "gguf", quantize=quantize, torch_python=None)
    [llama] = [c for c in exported.checks if c.check == f"GGUF {kind} (loaded by llama.cpp)"]
    assert llama.status == "checked" and exported.passed, {c.check: c.problems for c in exported.checks}
    assert llama.adapter_effect > 1e-3  # the adapter changes the logits, so the match means something
    if kind in ("f16", "bf16", "q8_0", "q4_0"):
        # our own GGUF importer reads every family's file back too (models/gguf.py), held to the
        # same rule (the K-quants: llama.cpp's judgement only)
        [back] = [c for c in exported.checks if c.check == f"GGUF {kind} (read back with mlx.core.load)"]
        assert back.status == "checked", back
    if kind == "f16":
        assert llama.top1_agreement >= 0.99, llama.top1_agreement
    record_property("top1_agreement", round(llama.top1_agreement, 4))
    record_property("mean_abs_logit_diff", round(llama.mean_abs_logit_diff, 4))
    record_property("adapter_effect", round(llama.adapter_effect, 4))
    if llama.adapter_effect_kept is not None:
        record_property("adapter_effect_kept", round(llama.adapter_effect_kept, 4))
    if llama.mean_kl is not None:
        record_property("mean_kl", round(llama.mean_kl, 6))

    import gguf

    [path] = out.glob(f"*-{kind}.gguf")
    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()
              if not name.startswith("tokenizer.ggml.t")}  # not the 49k tokens and their types
    config = json.loads((tiny_families / family / "config.json").read_text())
    assert fields["general.architecture"] == GGUF_ARCHS[config["model_type"]]
    assert fields["general.type"] == "model" and fields["general.finetune"] and fields["general.size_label"]
    spm = FAMILIES[family]["tokenizer"] == "sentencepiece"
    assert fields["tokenizer.ggml.model"] == ("llama" if spm else "gpt2")
    assert ("tokenizer.ggml.add_space_prefix" in fields) == spm
    tokenised_alike = any(n.startswith("llama.cpp tokenises the") for n in exported.notes)
    record_property("llama_cpp_tokenises_alike", tokenised_alike)


# ---- 4. chat ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", NAMES)
def test_chat_stops_on_end_of_turn(family, tiny_families, memorise_data, tmp_path_factory, record_property):
    """The memorised answer streams and ends on the family's end-of-turn token ("stop"), not at max_tokens."""
    from mlx_lora.chat import ChatSession, ChatSettings, load_chat_model

    result, _ = trained_run(family, "lora", tiny_families / family, memorise_data, tmp_path_factory)
    chat = load_chat_model(adapter=result.run_dir, compute_dtype="float32")
    session = ChatSession(chat.model, chat.tokenizer)
    end_of_turn = session.tokenizer.convert_tokens_to_ids(FAMILIES[family]["eos"])
    assert end_of_turn in session.stop_ids
    question, answer = CHATS[0]
    deltas = list(session.stream([question], ChatSettings(temperature=0.0, max_tokens=40, seed=0)))
    text = "".join(d.text for d in deltas)
    record_property("answer", text)
    assert deltas[-1].finished and deltas[-1].finish_reason == "stop", text
    assert text.strip() == answer["content"]
    assert FAMILIES[family]["eos"] not in text


# ---- 2. the data preview ------------------------------------------------------------------


@pytest.mark.parametrize("family", NAMES)
def test_preview_marks_assistant_turns(family, tiny_families):
    """On a multi-turn chat through the family's template, every assistant turn (and the
    end-of-turn token that closes it) is trained and everything else is masked."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from mlx_lora.data.render import encode_example, example_spans

    tokenizer = load_tokenizer(tiny_families / family)
    example = encode_example(tokenizer, {"messages": CHATS[1]})
    spans = example_spans(tokenizer, example)
    trained = [s.text for s in spans if s.trained]
    masked = "".join(s.text for s in spans if not s.trained)
    answers = [m["content"] for m in CHATS[1] if m["role"] == "assistant"]
    assert len(trained) == len(answers)  # one trained run per assistant turn
    for run, answer in zip(trained, answers):
        assert answer in run and FAMILIES[family]["eos"] in run, (run, answer)
    for message in CHATS[1]:
        if message["role"] == "user":
            assert message["content"] in masked
    assert not example.appended_eos and example.missing_eos_turns == 0


# ---- 6. an adapter trained elsewhere ----------------------------------------------------------

# Runs in the judges' interpreter: a PEFT LoRA on the transformers model, saved as PEFT saves it,
# and PEFT's logits for the prompts. B is random (init_lora_weights=False), so the adapter matters.
_PEFT_CHILD = r"""
import json, sys
import numpy as np, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
args = json.load(open(sys.argv[1]))
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(args["base"], dtype=torch.float32)
config = LoraConfig(r=4, lora_alpha=8, target_modules=args["targets"], layers_to_transform=args["layers"],
                    init_lora_weights=False, task_type="CAUSAL_LM")
model = get_peft_model(model, config)
with torch.no_grad():
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.normal_(0.0, 0.1)
model.eval()
model.save_pretrained(args["out"])
with torch.no_grad():
    np.savez(args["logits"], **{f"p{i}": model(torch.tensor([ids])).logits[0].numpy()
                                for i, ids in enumerate(args["prompts"])})
"""
PEFT_TARGETS = {"phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
                "qwen3_moe": ["q_proj", "k_proj", "v_proj", "o_proj"]}  # transformers 5 fuses the experts


@pytest.mark.parametrize("family", NAMES)
def test_peft_adapter_from_elsewhere(family, tiny_families, judges_python, tmp_path, record_property):
    """A PEFT adapter made by peft on the transformers model: chat takes it and gives PEFT's
    logits; the fused mlx export of it passes its check."""
    import os
    import subprocess

    import mlx.core as mx
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from mlx_lora.chat import load_chat_model
    from mlx_lora.export import export_run

    folder = tiny_families / family
    prompts = prompt_ids(load_tokenizer(folder))
    targets = PEFT_TARGETS.get(family, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                        "down_proj"])
    # llama3: only the first layer, so the import must leave the second one alone
    args = {"base": str(folder), "out": str(tmp_path / "peft"), "logits": str(tmp_path / "peft.npz"),
            "prompts": prompts, "targets": targets, "layers": [0] if family == "llama3" else None}
    (tmp_path / "args.json").write_text(json.dumps(args))
    (tmp_path / "child.py").write_text(_PEFT_CHILD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([judges_python, str(tmp_path / "child.py"), str(tmp_path / "args.json")],
                          capture_output=True, text=True, env={**env, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(args["logits"]) as data:
        reference = [data[f"p{i}"] for i in range(len(prompts))]

    chat = load_chat_model(adapter=tmp_path / "peft", compute_dtype="float32")
    worst = 0.0
    for ids, ref in zip(prompts, reference):
        ours = np.array(chat.model(mx.array([ids]))[0])
        assert (ours.argmax(-1) == ref.argmax(-1)).all()
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)
        worst = max(worst, float(np.abs(ours - ref).max()))
    record_property("max_abs_logit_diff", worst)
    exported = export_run(tmp_path / "peft", tmp_path / "fused", "mlx", torch_python=None)
    assert exported.passed and all(c.status == "checked" for c in exported.checks)


def test_a_target_phi3_does_not_have_is_refused_with_its_real_names(tiny_families, memorise_data, tmp_path):
    """Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj: q_proj names nothing there."""
    from mlx_lora.errors import UserError
    from mlx_lora.train import train

    config = train_config(tiny_families / "phi3", memorise_data, tmp_path / "run", iters=1, targets=("q_proj",))
    with pytest.raises(UserError, match=r"'q_proj' matches no linear layer of this model; its layers have "
                                        r".*mlp\.gate_up_proj.*self_attn\.qkv_proj"):
        train(config)
