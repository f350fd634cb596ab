"""The family matrix's fixtures: the tiny models of :mod:`tests.models.make_tiny`, built once
per generator version in a child process run with the judges' interpreter
(``$MLX_LORA_TORCH_PYTHON``: torch and transformers never enter the test process), and the
matrix's results written to ``tests/models/results.json`` for ``bench/family_table.py``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RESULTS = HERE / "results.json"
CACHE = Path(os.environ.get("MLX_LORA_TINY_FAMILIES", Path(tempfile.gettempdir()) / "mlx-lora-tiny-families"))

# test function → the stage it fills in the README's table
STAGES = {
    "test_loads_like_transformers": "load",
    "test_will_it_fit": "fit",
    "test_loads_like_transformers_past_the_sliding_window": "sliding-window",
    "test_train": "train",
    "test_export": "export",
    "test_chat_stops_on_end_of_turn": "chat",
    "test_preview_marks_assistant_turns": "preview",
    "test_peft_adapter_from_elsewhere": "import-peft",
    "test_gguf": "gguf",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).parent == HERE:
            item.add_marker(pytest.mark.models)


@pytest.fixture(scope="session")
def judges_python() -> str:
    python = os.environ.get("MLX_LORA_TORCH_PYTHON")
    if not python or not Path(python).exists():
        pytest.fail("MLX_LORA_TORCH_PYTHON must name a Python with torch, transformers, peft and sentencepiece: "
                    "run `make test-models`, which creates .venv-judges")
    return python


def generator_hash(python: str) -> str:
    digest = hashlib.sha256((HERE / "make_tiny.py").read_bytes())
    digest.update(python.encode())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def tiny_families(judges_python, demo_model) -> Path:
    """The folder of every family's tiny model, built once per version of make_tiny.py."""
    target = CACHE / generator_hash(judges_python)
    if (target / "families.json").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="building-", dir=CACHE))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([judges_python, str(HERE / "make_tiny.py"), str(work), str(demo_model),
                           str(REPO / "resources" / "datasets")], capture_output=True, text=True, env=env,
                          timeout=900)
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        pytest.fail("make_tiny.py failed:\n" + done.stderr[-3000:])
    try:
        work.rename(target)  # whole or not at all
    except OSError:  # another session built it first
        shutil.rmtree(work, ignore_errors=True)
    return target


_outcomes: dict[str, dict[str, dict]] = {}


def pytest_runtest_logreport(report):
    name = report.nodeid.split("::")[-1]
    function, _, params = name.partition("[")
    stage = STAGES.get(function)
    if stage is None or not params:
        return
    if report.when == "call" or report.outcome != "passed":
        parts = params.rstrip("]").split("-")
        family, variant = parts[0], "-".join(parts[1:])
        cell = stage + (f"-{variant}" if variant else "")
        outcome = "xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome
        if hasattr(report, "wasxfail") and report.passed:
            outcome = "xpassed"
        entry = {"outcome": outcome, **{k: v for k, v in report.user_properties}}
        if hasattr(report, "wasxfail"):
            entry["reason"] = report.wasxfail
        previous = _outcomes.setdefault(family, {}).get(cell)
        if previous is None or previous["outcome"] == "passed":  # a teardown error overrides a pass
            _outcomes[family][cell] = entry
            _write_results()  # after every cell: a run cut short keeps what it measured


def _write_results() -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for family, cells in _outcomes.items():
        results.setdefault(family, {}).update(cells)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(results.items())), indent=1, sort_keys=True) + "\n")
    tmp.replace(RESULTS)
