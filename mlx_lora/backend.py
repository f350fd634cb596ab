"""Which compute device MLX runs on, and the Linux CPU speed fix.

The ``mlx[cpu]`` wheel for Linux links a reference BLAS: an fp32 matmul runs at
about 4.5 GFLOP/s on this project's 2-core build machine. Loading an OpenBLAS
with ``RTLD_GLOBAL`` *before* ``mlx.core`` is imported makes the dynamic linker
resolve MLX's ``cblas_sgemm`` to OpenBLAS: 170 GFLOP/s on the same machine
(bench/blas_speedup.py, bench/RESULTS.md). Nothing else in MLX changes.

Order of preference: the system's ``libopenblas.so.0`` (Debian/Ubuntu
``libopenblas0-pthread``), then the one in the ``cmeel-openblas`` wheel (which
needs the system's ``libgfortran.so.5``). Where neither loads we warn once and
carry on with the slow BLAS. In a PyInstaller bundle (``sys.frozen``) the OpenBLAS
shipped in the bundle comes first (packaging/mlx_lora_studio.spec puts it there).

This module must not import ``mlx.core`` at import time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SYSTEM_CANDIDATES = (
    "libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
)


@dataclass(frozen=True)
class BlasStatus:
    """What :func:`preload_blas` did. ``path`` is None when no OpenBLAS was loaded."""

    name: str
    path: str | None
    detail: str


_status: BlasStatus | None = None


def _cmeel_candidates() -> list[str]:
    purelib = Path(sysconfig.get_paths()["purelib"])
    out = []
    for root in {purelib, *[Path(p) for p in sys.path if p.endswith("site-packages")]}:
        lib = root / "cmeel.prefix" / "lib" / "libopenblas.so.0"
        if lib.exists():
            out.append(str(lib))
    return out


def _bundled_candidates() -> list[str]:
    """In a frozen bundle: its own ``libopenblas.so.0``, after loading the
    ``libgfortran.so.5``/``libquadmath.so.0`` shipped beside it by absolute path, so
    the dynamic linker reuses those (matched by soname) instead of needing the
    system's — a onedir bundle does not put its folder on the library search path."""
    if not getattr(sys, "frozen", False):
        return []
    root = Path(getattr(sys, "_MEIPASS", Path(sys.executable).resolve().parent))
    blas = root / "libopenblas.so.0"
    if not blas.exists():
        return []
    for dependency in ("libquadmath.so.0", "libgfortran.so.5"):  # the order they need each other
        if (root / dependency).exists():
            try:
                ctypes.CDLL(str(root / dependency))
            except OSError as exc:
                log.debug("bundled %s did not load: %s", dependency, exc)
    return [str(blas)]


def _openblas_config(lib: ctypes.CDLL) -> str:
    try:
        fn = lib.openblas_get_config
        fn.restype = ctypes.c_char_p
        return fn().decode(errors="replace").strip()
    except (AttributeError, OSError):
        return ""


# Cores of single-target OpenBLAS builds and the CPU flag their kernels need. The
# cmeel-openblas 0.3.31 wheel is built for SKYLAKEX only (no DYNAMIC_ARCH): on a CPU
# without AVX-512 its sgemm would die with SIGILL, so it is refused there.
_CORE_NEEDS = {
    "SKYLAKEX": "avx512f", "COOPERLAKE": "avx512f", "SAPPHIRERAPIDS": "avx512f",
    "HASWELL": "avx2", "ZEN": "avx2",
}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _unsupported_by_cpu(lib: ctypes.CDLL) -> str | None:
    """Why this OpenBLAS build cannot run on this CPU, or None when it can."""
    config = _openblas_config(lib)
    if not config or "DYNAMIC_ARCH" in config:
        return None
    try:
        fn = lib.openblas_get_corename
        fn.restype = ctypes.c_char_p
        core = fn().decode(errors="replace").strip().upper()
    except (AttributeError, OSError):
        return None
    needed = _CORE_NEEDS.get(core)
    flags = _cpu_flags()
    if needed and flags and needed not in flags:
        return f"built only for {core} CPUs, and this CPU lacks {needed}"
    return None


def preload_blas() -> BlasStatus:
    """Load an OpenBLAS globally so MLX's CPU matmuls use it (Linux only).

    Idempotent; returns what was done. Set ``MLX_LORA_NO_OPENBLAS=1`` to skip
    (the benchmark uses it to measure the difference).
    """
    global _status
    if _status is not None:
        return _status
    if sys.platform != "linux":
        _status = BlasStatus("platform", None, "Accelerate (macOS) / not needed")
        return _status
    if os.environ.get("MLX_LORA_NO_OPENBLAS") == "1":
        _status = BlasStatus("reference", None, "disabled by MLX_LORA_NO_OPENBLAS=1")
        return _status
    if "mlx.core" in sys.modules:
        log.warning("mlx.core was imported before mlx_lora: OpenBLAS preload is too late")
    errors = []
    for candidate in (*_bundled_candidates(), *_SYSTEM_CANDIDATES, *_cmeel_candidates()):
        try:
            # Load privately first: its symbols must not reach MLX unless its kernels suit this CPU.
            probe = ctypes.CDLL(candidate, mode=ctypes.RTLD_LOCAL)
        except OSError as exc:
            errors.append(f"{candidate}: {exc}")
            continue
        reason = _unsupported_by_cpu(probe)
        if reason:
            errors.append(f"{candidate}: {reason}")
            continue
        lib = ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)  # promotes the loaded library
        _status = BlasStatus("OpenBLAS", candidate, _openblas_config(lib))
        return _status
    log.warning(
        "No OpenBLAS could be loaded, so MLX's CPU matmuls use the slow reference BLAS "
        "(about 30x slower). On Debian/Ubuntu: sudo apt install libopenblas0-pthread. "
        "Tried: %s",
        "; ".join(errors) or "nothing found",
    )
    _status = BlasStatus("reference", None, "no OpenBLAS found (see the warning)")
    return _status


def blas_status() -> BlasStatus:
    return preload_blas()


def device_kind() -> str:
    """'gpu' (Metal or CUDA) or 'cpu': the device MLX computes on by default."""
    import mlx.core as mx

    return "gpu" if mx.default_device() == mx.gpu else "cpu"


def backend_name() -> str:
    """'metal', 'cuda' or 'cpu'."""
    import mlx.core as mx

    if mx.default_device() != mx.gpu:
        return "cpu"
    if mx.metal.is_available():
        return "metal"
    return "cuda"


def compute_dtype(model_dtype=None):
    """The dtype to train and generate in: fp32 on CPU (bf16/fp16 and quantised
    matmuls do not use BLAS there and are slow), the model's own dtype on a GPU."""
    import mlx.core as mx

    if device_kind() == "cpu":
        return mx.float32
    return model_dtype if model_dtype is not None else mx.bfloat16


def total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def matmul_gflops(size: int = 512, repeats: int = 5) -> float:
    """A quick fp32 matmul speed probe, in GFLOP/s."""
    import time

    import mlx.core as mx

    a = mx.random.normal((size, size))
    b = mx.random.normal((size, size))
    mx.eval(a @ b)
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    elapsed = (time.perf_counter() - start) / repeats
    return 2 * size**3 / elapsed / 1e9


def doctor_report(measure: bool = True) -> dict:
    """Everything `mlx-lora doctor` prints, as a dict."""
    import importlib.metadata as md

    import mlx.core as mx

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    from mlx_lora import __version__

    blas = blas_status()
    report = {
        "mlx-lora-studio": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "device": str(mx.default_device()),
        "backend": backend_name(),
        "compute dtype": str(compute_dtype()).replace("mlx.core.", ""),
        "blas": blas.name + (f" ({blas.path})" if blas.path else ""),
        "blas detail": blas.detail,
        "memory": f"{total_memory_bytes() / 1e9:.1f} GB",  # decimal GB, as the app and the estimates show it
        "mlx": version("mlx"),
        "mlx-lm": version("mlx-lm"),
        "huggingface_hub": version("huggingface_hub"),
        "PySide6": version("PySide6-Essentials"),
    }
    if measure:
        report["fp32 matmul"] = f"{matmul_gflops():.0f} GFLOP/s (512x512)"
    return report
