"""The export check on a dropped vs a fused adapter at several run lengths (issue 16.8):
the dropped export's mean |Δlogit| error equals the adapter's effect, the real fuse's is
rounding. Tiny random model, mlx format, 8 prompts.

    PYTHONPATH=. python bench/verify_dropped.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("MLX_LORA_HOME", tempfile.mkdtemp())

import mlx_lora  # noqa: E402,F401  (BLAS preload)
from mlx_lora.adapters.attach import strip_adapters  # noqa: E402
from mlx_lora.events import RecordingReporter  # noqa: E402
from mlx_lora.export import ExportVerificationFailed, ExportVerified, export_run  # noqa: E402
from mlx_lora.export.verify import PROMPTS  # noqa: E402
from mlx_lora.models.demo import demo_model_path  # noqa: E402
from mlx_lora.train.loop import train  # noqa: E402
from tests.core.test_train_helpers import tiny_config, write_dataset  # noqa: E402
from tests.tiny import make_tiny_model  # noqa: E402


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    model = make_tiny_model(tmp / "tiny", demo_model_path())
    data = write_dataset(tmp / "data", train=24, valid=4, test=2)
    for steps in (2, 10, 50):
        run = tmp / f"run{steps}"
        train(tiny_config(model, data, run, iters=steps, learning_rate=1e-3, save_every=steps, steps_per_eval=steps))
        for name, options in (("dropped", {"fuse": strip_adapters}), ("fused", {})):
            reporter = RecordingReporter()
            try:
                export_run(run, tmp / f"{name}{steps}", "mlx", reporter=reporter, prompts=PROMPTS[:8],
                           torch_python=None, **options)
            except ExportVerificationFailed:
                pass
            [c] = reporter.of(ExportVerified)
            print(f"steps {steps:>2} {name:>7}: passed={c.passed} status={c.status!r} mean error "
                  f"{c.mean_abs_logit_diff:.3g} (effect {c.adapter_effect:.3g}), max error "
                  f"{c.max_abs_logit_diff:.3g} (effect {c.adapter_max_effect:.3g})")


if __name__ == "__main__":
    main()
