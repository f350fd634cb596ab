"""The device the suite runs on, the OpenBLAS preload (active here, and a single-target
build refused on a CPU it cannot run on), and float32 kept float32 on a GPU."""

import os
import subprocess
import sys

import pytest

from mlx_lora import backend

# `make test-gpu` sets this: a suite meant for the GPU must not pass by running on the CPU.
EXPECTED = os.environ.get("MLX_LORA_EXPECT_BACKEND", "cpu")


def test_the_suite_runs_on_the_device_it_was_meant_for():
    assert backend.device_kind() == EXPECTED


@pytest.mark.skipif(EXPECTED != "cpu", reason="OpenBLAS serves the CPU backend; a GPU run computes on the GPU")
def test_openblas_is_active_and_fast_enough_to_matter():
    status = backend.blas_status()
    assert status.name == "OpenBLAS", status.detail
    report = backend.doctor_report(measure=False)
    assert report["blas"].startswith("OpenBLAS")
    assert report["compute dtype"] == "float32"


def test_the_compute_dtype_follows_the_device():
    import mlx.core as mx

    # CPU: float32 (quantised and bf16 matmuls skip BLAS); a GPU: the model's own dtype
    expected = mx.float32 if EXPECTED == "cpu" else mx.bfloat16
    assert backend.compute_dtype(mx.bfloat16) == expected
    assert backend.compute_dtype(mx.float32) == mx.float32


def test_float32_matmuls_are_not_tf32():
    import mlx.core as mx

    assert os.environ["MLX_ENABLE_TF32"] == "0"  # set by mlx_lora before mlx.core loads
    a = mx.random.normal((256, 256), key=mx.random.key(0))
    exact = (a.astype(mx.float64) @ a.astype(mx.float64)) if EXPECTED == "cpu" else None
    got = a @ a
    if exact is not None:
        assert mx.abs(got - exact.astype(mx.float32)).max().item() < 1e-3
    # TF32 keeps 10 mantissa bits: a product of 1 + 2^-12 is exact in float32, lost in TF32
    x = mx.full((1, 8), 1 + 2 ** -12)
    y = mx.ones((8, 1))
    assert (x @ y).item() == pytest.approx(8 * (1 + 2 ** -12), abs=1e-6)


def test_preload_can_be_turned_off():
    code = "import mlx_lora; from mlx_lora.backend import blas_status; print(blas_status().name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "MLX_LORA_NO_OPENBLAS": "1"}, check=True)
    assert out.stdout.strip() == "reference"


class _FakeLib:
    def __init__(self, config: bytes, core: bytes) -> None:
        self.openblas_get_config = lambda: config
        self.openblas_get_corename = lambda: core


def test_single_target_build_is_refused_without_its_cpu_flag(monkeypatch):
    monkeypatch.setattr(backend, "_cpu_flags", lambda: {"sse4_2", "avx", "avx2"})
    monkeypatch.setattr(backend, "_openblas_config", lambda lib: "OpenBLAS 0.3.31 NO_AFFINITY SKYLAKEX")
    lib = _FakeLib(b"", b"SKYLAKEX")
    assert "avx512f" in backend._unsupported_by_cpu(lib)
    monkeypatch.setattr(backend, "_cpu_flags", lambda: {"avx2", "avx512f"})
    assert backend._unsupported_by_cpu(lib) is None


def test_dynamic_arch_build_is_always_accepted(monkeypatch):
    monkeypatch.setattr(backend, "_cpu_flags", lambda: {"sse2"})
    monkeypatch.setattr(backend, "_openblas_config", lambda lib: "OpenBLAS 0.3.21 DYNAMIC_ARCH Haswell")
    assert backend._unsupported_by_cpu(_FakeLib(b"", b"HASWELL")) is None
