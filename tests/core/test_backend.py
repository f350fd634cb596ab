"""The OpenBLAS preload: it is active here, and a single-target build is refused on a CPU it cannot run on."""

import subprocess
import sys

from mlx_lora import backend


def test_openblas_is_active_and_fast_enough_to_matter():
    status = backend.blas_status()
    assert status.name == "OpenBLAS", status.detail
    report = backend.doctor_report(measure=False)
    assert report["blas"].startswith("OpenBLAS")
    assert report["compute dtype"] == "float32"


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
