"""export_run: fused mlx/hf folders and the mlx-lm adapter, each checked against
base+adapter; a fuse that drops the adapter (or loses it in a quantised base) fails
and writes nothing; the folder is atomic; the model card tells the run's story."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import mlx_lora  # noqa: F401
from mlx_lora.adapters import strip_adapters
from mlx_lora.chat import load_chat_model
from mlx_lora.errors import Cancelled, UserError
from mlx_lora.events import Progress, RecordingReporter
from mlx_lora.export import ExportFinished, ExportVerificationFailed, ExportVerified, export_run
from mlx_lora.export.fused import fuse_adapters
from tests.core.test_chat_helpers import make_run, tiny_run  # noqa: F401

SAMPLE = [[1, 504, 3458, 314, 2722, 28, 6341, 30, 2, 198, 33, 44]]


def tuned_and_base_logits(run):
    import mlx.core as mx

    from mlx_lora.adapters import adapter_disabled

    chat = load_chat_model(adapter=run, compute_dtype="float32")
    tuned = chat.model(mx.array(SAMPLE))
    with adapter_disabled(chat.model):
        base = chat.model(mx.array(SAMPLE))
    mx.eval(tuned, base)
    return tuned, base


def mlx_lm_logits(folder):
    import mlx.core as mx
    from mlx_lm import load

    model, _ = load(str(folder))
    model.set_dtype(mx.float32)
    out = model(mx.array(SAMPLE))
    mx.eval(out)
    return out


@pytest.fixture(scope="module")
def mlx_export(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "tiny-mlx"
    reporter = RecordingReporter()
    result = export_run(tiny_run, out, "mlx", reporter=reporter)
    return out, result, reporter


def test_fused_mlx_folder_loads_with_mlx_lm_and_answers_like_base_plus_adapter(mlx_export, tiny_run):
    import mlx.core as mx

    out, result, _ = mlx_export
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "README.md",
            "verification.json"} <= names
    assert not any(n.endswith((".py", ".bin", ".pt")) for n in names)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not the temporary's 0700
    tuned, base = tuned_and_base_logits(tiny_run)
    fused = mlx_lm_logits(out)
    assert mx.abs(fused - tuned).max().item() < 1e-4
    assert mx.abs(fused - base).mean().item() > 0.1  # the adapter is in there
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2  # <|im_end|>
    config = json.loads((out / "config.json").read_text())
    assert "quantization" not in config and config["torch_dtype"] == "float32"


def test_every_export_is_verified_in_the_folder_and_the_event_stream(mlx_export):
    out, result, reporter = mlx_export
    [check] = result.checks
    assert check.passed and check.prompts == 32 and check.top1_agreement >= 0.99
    assert check.max_abs_logit_diff < 1e-3 and check.adapter_effect > 0.1
    saved = json.loads((out / "verification.json").read_text())
    assert saved["passed"] and saved["checks"][0]["top1_agreement"] == check.top1_agreement
    assert len(saved["prompts"]) == 32
    assert reporter.of(ExportVerified) == [check]
    [finished] = reporter.of(ExportFinished)
    assert finished.passed and finished.out_dir == str(out)
    progress = reporter.of(Progress)
    assert progress[-1].done == progress[-1].total and all(p.job == "export" for p in progress)


def test_model_card_has_base_data_config_losses_and_verification(mlx_export, tiny_model):
    import yaml

    out, _, _ = mlx_export
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "mlx"
    assert "base_model" not in front  # a local folder is no Hub id: the Hub would refuse the card
    assert f"- base model: `{tiny_model}`" in card
    assert "resources/datasets/pirate" in card and "training examples: 120" in card
    assert "| rank | 8 |" in card and "| scale (alpha / rank) | 20.0 |" in card
    assert "Training loss: 2.900 at step 10 → 1.900 at step 30." in card
    assert "best 2.400 at step 20" in card
    assert "| fused mlx folder (loaded with mlx-lm) | passed | 100.00% |" in card


def test_a_fuse_that_drops_the_adapter_fails_the_check_and_writes_nothing(tiny_run, tmp_path):
    out = tmp_path / "broken"
    reporter = RecordingReporter()

    with pytest.raises(ExportVerificationFailed) as info:
        export_run(tiny_run, out, "mlx", reporter=reporter, fuse=strip_adapters)

    assert "the adapter was lost (dropped by the fuse" in str(info.value)
    assert not out.exists() and not list(tmp_path.iterdir())  # no folder, no temporary left behind
    [check] = reporter.of(ExportVerified)
    assert not check.passed and check.distance_from_base < 1e-6
    assert not reporter.of(ExportFinished)


def _requantise_like_mlx_lm_1172(model) -> None:
    """mlx-lm's fuse(dequantize=False) into a 4-bit base: fused weights go back onto the
    4-bit grid (group 32), where a delta smaller than half a step rounds away."""
    import mlx.core as mx

    from mlx_lora.adapters import adapter_layers

    adapted = [name for name, _ in adapter_layers(model)]
    fuse_adapters(model)
    modules = dict(model.named_modules())
    for name in adapted:
        layer = modules[name]
        layer.weight = mx.dequantize(*mx.quantize(layer.weight, 32, 4), group_size=32, bits=4)


def test_quantised_base_is_dequantised_before_fusing(tiny_model, tmp_path):
    # QLoRA: the run quantised the tiny base to 4 bits; a small adapter, as a short run makes
    run = make_run(tiny_model, tmp_path / "qlora", quantize_bits=4, b_std=0.002)

    result = export_run(run, tmp_path / "fused", "mlx")

    assert result.passed
    config = json.loads((tmp_path / "fused" / "config.json").read_text())
    assert "quantization" not in config
    # the way mlx-lm #1172 loses it: the check catches it
    with pytest.raises(ExportVerificationFailed, match="adapter was lost"):
        export_run(run, tmp_path / "naive", "mlx", fuse=_requantise_like_mlx_lm_1172)


def test_hf_folder_is_a_plain_transformers_checkpoint(tiny_run, tiny_model, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "hf"
    result = export_run(tiny_run, out, "hf", torch_python=None)

    assert result.checks[0].passed
    assert result.checks[1].status == "not run"  # no torch here: recorded, not hidden
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == "float32" and config["model_type"] == "llama"
    assert not {"quantization", "quantization_config"} & set(config)
    with safe_open(str(out / "model.safetensors"), framework="numpy") as fh:
        assert fh.metadata()["format"] == "pt"
        names = set(fh.keys())
    with safe_open(str(tiny_model / "model.safetensors"), framework="numpy") as fh:
        assert names == set(fh.keys())  # transformers' names: exactly the base checkpoint's
    with pytest.raises(UserError, match="does not apply to the hf format .* --format mlx or gguf can be quantised"):
        export_run(tiny_run, tmp_path / "hf4", "hf", quantize=4)


def test_adapter_export_loads_with_mlx_lm(tiny_run, tiny_model, tmp_path):
    import mlx.core as mx
    from mlx_lm import load

    out = tmp_path / "adapter"
    result = export_run(tiny_run / "best", out, "adapter")

    assert result.checks[0].max_abs_logit_diff == 0.0
    model, _ = load(str(tiny_model), adapter_path=str(out))
    tuned, _ = tuned_and_base_logits(tiny_run / "best")
    assert mx.abs(model(mx.array(SAMPLE)) - tuned).max().item() < 1e-5
    assert json.loads((out / "verification.json").read_text())["adapter"].endswith("best")


def test_an_existing_folder_is_replaced_only_by_a_verified_export(tiny_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # an earlier export (its marker; anything else is refused: tests/reliability)
    (out / "verification.json").write_text(json.dumps({"format": "adapter", "created_by": "mlx-lora-studio 0"}))
    (out / "keep.txt").write_text("previous export")
    with pytest.raises(ExportVerificationFailed):
        export_run(tiny_run, out, "mlx", fuse=strip_adapters, prompts=("Hi",))
    assert (out / "keep.txt").read_text() == "previous export"
    export_run(tiny_run, out, "adapter", prompts=("Hi",))
    assert not (out / "keep.txt").exists() and (out / "adapters.safetensors").is_file()


def test_cancel_leaves_nothing(tiny_run, tmp_path):
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        export_run(tiny_run, tmp_path / "cancelled", "mlx", should_stop=should_stop)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kwargs, message", [
    (dict(format="onnx"), "unknown export format"),
    (dict(format="peft", quantize=4), "does not apply to the peft format"),
    (dict(format="mlx", quantize=3), "it takes 4 or 8"),
    (dict(format="gguf", quantize=2), "it takes bf16 or 8 or q6_k or q5_k_m or q4_k_m or 4"),
])
def test_bad_format_or_quantisation_is_a_user_error(tiny_run, tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        export_run(tiny_run, tmp_path / "x", **kwargs)


def test_exporting_into_the_run_itself_is_refused(tiny_run):
    with pytest.raises(UserError, match="this is the adapter's run folder; .* it would be deleted"):
        export_run(tiny_run / "best", tiny_run, "adapter")


def test_an_adapter_without_a_base_is_a_user_error(tiny_run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_run / "adapters.safetensors", bare)
    config = json.loads((tiny_run / "adapter_config.json").read_text())
    del config["model"]
    (bare / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="does not say which base model"):
        export_run(bare, tmp_path / "out", "mlx")
