"""Smoke test of the built bundle (`make package-test`): starts the bundled app and
CLI the way a user and the app itself do, in a private home folder, offscreen and
offline, and checks what they report.

    .venv/bin/python packaging/smoke_test.py [--bundle dist/MLX-LoRA-Studio] [--quick]

Checks, in order (each prints one line; the first failure stops with exit status 1):
 1. ``--print-info``: version = mlx_lora/__init__.py's, frozen, resources and the demo
    GGUF inside the bundle, OpenBLAS loaded from the bundle (Linux).
 2. ``mlx-lora --version`` and ``<exe> -m mlx_lora.cli.main --version`` (the form the app
    uses for its training child) print the same version.
 3. ``--quit-after-show``: the main window shows and the app exits 0; start time measured.
 4. ``mlx-lora doctor --json``: mlx.core loads inside the bundle, with the bundled OpenBLAS.
 5. (not with --quick) the demo model is imported from the bundled GGUF, answers a
    prompt, and trains 2 LoRA steps through the training-child command line.
Reports the bundle's size and start-up times at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bundle_config as cfg  # noqa: E402


class SmokeFailure(Exception):
    pass


def default_bundle() -> Path:
    if sys.platform == "darwin":
        return cfg.REPO_ROOT / "dist" / f"{cfg.APP_NAME}.app"
    return cfg.REPO_ROOT / "dist" / cfg.BUNDLE_NAME


def executable(bundle: Path) -> Path:
    if bundle.suffix == ".app":
        return bundle / "Contents" / "MacOS" / cfg.BUNDLE_NAME
    return bundle / cfg.BUNDLE_NAME


def cli_executable(bundle: Path) -> Path:
    """The ``mlx-lora`` link (Linux bundle); on macOS one is made in a temp folder."""
    return executable(bundle).parent / cfg.CLI_NAME


def isolated_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTHON", "MLX_LORA_", "HF_", "QT_", "VIRTUAL_ENV"))}
    env.update(QT_QPA_PLATFORM="offscreen", MLX_LORA_HOME=str(home / "home"), HF_HOME=str(home / "hf"),
               HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    return env


def run(argv: list[str | Path], env: dict[str, str], cwd: Path, timeout: float = 300) -> tuple[str, float]:
    """Runs argv; returns (stdout, seconds). A non-zero exit is a SmokeFailure with stderr's tail."""
    start = time.perf_counter()
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, cwd=cwd,
                            timeout=timeout)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SmokeFailure(f"{' '.join(map(str, argv[:4]))} … exited {result.returncode}:\n"
                           + result.stderr[-3000:])
    return result.stdout, elapsed


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def inside(path: str | None, bundle: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(bundle.resolve())


def smoke(bundle: Path, quick: bool) -> dict:
    exe, cli = executable(bundle), cli_executable(bundle)
    check(exe.is_file(), f"{exe} not found: build the bundle first (make package)")
    expected = cfg.version()
    report: dict = {"bundle": str(bundle), "version": expected}
    with tempfile.TemporaryDirectory(prefix="mlx-lora-smoke-") as tmp:
        tmp = Path(tmp)
        env = isolated_env(tmp)
        if not cli.exists():  # macOS: the link is made on install, not in the signed bundle
            cli = tmp / cfg.CLI_NAME
            cli.symlink_to(exe)

        out, _ = run([exe, "--print-info"], env, tmp)
        info = json.loads(out.strip().splitlines()[-1])
        check(info["version"] == expected, f"--print-info version {info['version']} != source {expected}")
        check(info["frozen"] is True, "the bundled app does not know it is frozen")
        check(inside(info["resources_dir"], bundle) and Path(info["resources_dir"], "style", "app.qss").is_file(),
              f"resources not inside the bundle: {info['resources_dir']}")
        demo_baked = info["demo_gguf"] is not None
        if demo_baked:
            check(inside(info["demo_gguf"], bundle), f"demo GGUF outside the bundle: {info['demo_gguf']}")
        else:
            check(bool(info["demo_error"]), "no demo model and no message saying why")
        if sys.platform == "linux":
            check(inside(info["blas"], bundle), f"OpenBLAS not loaded from the bundle: {info['blas']}")
        print(f"ok  --print-info: version {expected}, demo model "
              f"{'baked in' if demo_baked else 'not included: ' + info['demo_error']}, BLAS {info['blas']}")

        for argv in ([cli, "--version"], [exe, "-m", "mlx_lora.cli.main", "--version"]):
            out, _ = run(argv, env, tmp)
            check(out.strip() == f"mlx-lora {expected}", f"{argv[1:]} printed {out.strip()!r}")
        print(f"ok  mlx-lora --version and the training-child form print mlx-lora {expected}")

        starts = [run([exe, "--quit-after-show"], env, tmp, timeout=120)[1] for _ in range(3)]
        report["start_s"] = {"first": round(starts[0], 2), "median_of_3": round(statistics.median(starts), 2)}
        print(f"ok  main window shown and closed: {starts[0]:.1f} s first start, "
              f"{statistics.median(starts):.1f} s median of 3")

        out, _ = run([cli, "doctor", "--json"], env, tmp)
        doctor = json.loads(out)
        if sys.platform == "linux":
            check(str(bundle.resolve()) in doctor["blas"], f"mlx.core runs with {doctor['blas']}")
        report["doctor"] = {key: doctor.get(key) for key in ("device", "backend", "blas", "fp32 matmul")}
        print(f"ok  mlx-lora doctor: {doctor['device']}, {doctor['blas']}, {doctor.get('fp32 matmul')}")

        if not quick and demo_baked:
            out, elapsed = run([cli, "models", "demo"], env, tmp)
            check(inside(out.strip(), tmp), f"demo model imported to {out.strip()!r}")
            print(f"ok  demo model imported from the bundled GGUF in {elapsed:.1f} s")
            out, elapsed = run([cli, "chat", "--model", "demo", "--prompt", "Say hello.", "--temperature", "0",
                                "--max-tokens", "8"], env, tmp)
            check(bool(out.strip()), "the demo model gave an empty answer")
            print(f"ok  chat with the demo model ({elapsed:.1f} s): {out.strip()[:60]!r}")
            data = bundle_resource(bundle, "datasets/pirate")
            out, elapsed = run([exe, "-m", "mlx_lora.cli.main", "train", "--model", "demo", "--data", data,
                                "--iters", "2", "--batch-size", "2", "--max-seq-length", "128",
                                "--steps-per-eval", "2", "--val-batches", "1", "--run-dir", tmp / "run",
                                "--json-events"], env, tmp)
            events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            check(events and events[-1]["event"] == "run_finished", f"training ended with {events[-1:]}")
            print(f"ok  2 LoRA steps through the training-child command line in {elapsed:.1f} s")
    report["size_mb"] = round(folder_size(bundle) / 1e6)
    return report


def bundle_resource(bundle: Path, name: str) -> Path:
    root = executable(bundle).parent
    for candidate in (root / "_internal" / "resources" / name, root.parent / "Resources" / "resources" / name):
        if candidate.exists():
            return candidate
    raise SmokeFailure(f"resources/{name} not found in {bundle}")


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=default_bundle(), help="the built bundle (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="skip the demo model import, chat and training")
    args = parser.parse_args(argv)
    try:
        report = smoke(args.bundle, args.quick)
    except (SmokeFailure, subprocess.TimeoutExpired) as exc:
        print(f"FAILED {exc}", file=sys.stderr)
        return 1
    print(f"bundle {report['bundle']}: {report['size_mb']} MB, first start {report['start_s']['first']} s, "
          f"median {report['start_s']['median_of_3']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
