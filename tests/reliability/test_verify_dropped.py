"""issue 16.8: the export check tells "fused" from "dropped". The adapter's effect and the
export's error are the same statistic on the same positions (mean and max |Δlogit| over
every vocabulary entry at every real position); an export passes only when its error is at
most half the adapter's effect, and an adapter whose effect is within the export's own
rounding is "too small to verify", never "passed". An export with the adapter dropped
fails at every run length."""

from __future__ import annotations

import pytest

from mlx_lora.adapters.attach import strip_adapters
from mlx_lora.export import ExportVerificationFailed, ExportVerified, export_run
from mlx_lora.export.verify import PROMPTS, THRESHOLDS, TOO_SMALL, compare_logits
from mlx_lora.events import RecordingReporter
from mlx_lora.train.loop import train
from tests.core.test_train_helpers import tiny_config


def _logits(seed: int, shape=(2, 6, 50)):
    import mlx.core as mx

    return mx.random.normal(shape, key=mx.random.key(seed)) * 3  # (B, L, V)


def _check(effect_scale: float, error_scale: float, kind: str = "float16", dropped: bool = False) -> ExportVerified:
    base = _logits(0)
    tuned = base + effect_scale * _logits(1)
    export = (base if dropped else tuned) + error_scale * _logits(2)  # the export's own rounding
    prompts = [[1] * 6, [1] * 6]
    return compare_logits(lambda batch: (tuned, base), lambda batch: export, prompts, "synthetic", THRESHOLDS[kind],
                          batch_size=2)


def test_a_weak_adapter_within_the_exports_rounding_is_too_small_to_verify():
    # the case: an effect below what float16 storage changes the logits by
    check = _check(effect_scale=0.002, error_scale=0.004)
    assert not check.passed
    assert check.status == TOO_SMALL == "the adapter's effect is too small to verify"
    assert "within the export's own rounding" in check.problems[0]
    dropped = _check(effect_scale=0.002, error_scale=0.004, dropped=True)  # the same figures either way
    assert dropped.status == TOO_SMALL and not dropped.passed


def test_the_same_statistic_on_the_same_positions():
    check = _check(effect_scale=0.5, error_scale=0.001)
    assert check.passed and check.status == "checked"
    # the adapter's effect in both of the error's statistics: mean and max |Δlogit|
    assert check.mean_abs_logit_diff < 0.5 * check.adapter_effect
    assert check.max_abs_logit_diff < check.adapter_max_effect
    dropped = _check(effect_scale=0.5, error_scale=0.001, dropped=True)
    assert not dropped.passed and dropped.status == "checked"
    assert dropped.mean_abs_logit_diff == pytest.approx(dropped.adapter_effect, rel=0.05)
    assert dropped.max_abs_logit_diff == pytest.approx(dropped.adapter_max_effect, rel=0.1)
    assert "the adapter was lost" in dropped.problems[-1]


def test_an_exact_export_of_a_weak_adapter_still_passes():
    check = _check(effect_scale=0.002, error_scale=1e-7, kind="exact")  # float32: no rounding to hide in
    assert check.passed and check.status == "checked"


def test_the_cli_prints_error_and_effect_side_by_side(capsys):
    from mlx_lora.cli.export import _Printer

    _Printer(False).emit(_check(effect_scale=0.5, error_scale=0.001))
    _Printer(False).emit(_check(effect_scale=0.002, error_scale=0.004))
    err = capsys.readouterr().err.splitlines()
    assert "max |Δlogit|" in err[0] and "(the adapter's:" in err[0].split("max |Δlogit|")[1].split(",")[0]
    assert "mean" in err[0] and err[0].count("the adapter's:") == 2
    assert "synthetic: the adapter's effect is too small to verify" in err[1]


@pytest.fixture(scope="module")
def run_of_50_steps(tiny_model, dataset, tmp_path_factory):
    """One run, a checkpoint every 2 steps: its step-2, step-10 and step-50 are the run lengths."""
    run = tmp_path_factory.mktemp("verify") / "run"
    result = train(tiny_config(tiny_model, dataset, run, iters=50, learning_rate=1e-3, save_every=2,
                               batch_size=1, max_seq_length=64, val_batches=1, steps_per_eval=50,
                               keep_checkpoints=0))
    assert result.status == "finished"
    return run


@pytest.mark.parametrize("steps", [2, 10, 50])
def test_a_dropped_adapter_fails_at_every_run_length(steps, run_of_50_steps, tmp_path):
    checkpoint = run_of_50_steps / "checkpoints" / f"step-{steps}"
    prompts = PROMPTS[:8]

    reporter = RecordingReporter()
    with pytest.raises(ExportVerificationFailed):
        export_run(checkpoint, tmp_path / "dropped", "mlx", reporter=reporter, fuse=strip_adapters,
                   prompts=prompts, torch_python=None)
    [dropped] = reporter.of(ExportVerified)
    assert not dropped.passed
    assert not (tmp_path / "dropped").exists()

    reporter = RecordingReporter()
    try:
        export_run(checkpoint, tmp_path / "fused", "mlx", reporter=reporter, prompts=prompts, torch_python=None)
    except ExportVerificationFailed:
        pass
    [fused] = reporter.of(ExportVerified)
    # the real fuse: passed, or honestly too small to tell — never "lost"
    assert fused.passed or fused.status == TOO_SMALL, fused.problems
    assert fused.mean_abs_logit_diff < dropped.mean_abs_logit_diff
