"""The README's family table and bench/RESULTS.md's per-family numbers, from the matrix's own results.

    .venv/bin/python bench/family_table.py [--results tests/models/results.json]

``make test-models`` runs tests/models, whose conftest writes tests/models/results.json
(family → cell → outcome and measured numbers); this rewrites the block between
``<!-- family-table -->`` and ``<!-- /family-table -->`` in README.md and between
``<!-- family-results -->`` and ``<!-- /family-results -->`` (and ``gguf-results``) in bench/RESULTS.md. Nothing
here is written by hand: a cell the matrix did not run shows as "–".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GGUF_KINDS = ("f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")  # tests/models' GGUF_TYPES_TESTED
# the table's columns: (heading, cells that must all pass); the stage numbers
COLUMNS = [
    ("1 load", ["load"]), ("1 will it fit", ["fit"]), ("1 past the sliding window", ["sliding-window"]), ("2 preview", ["preview"]),
    ("3 LoRA", ["train-lora"]), ("3 DoRA", ["train-dora"]), ("3 QLoRA", ["train-qlora"]),
    ("4 chat", ["chat"]), ("5 hf", ["export-hf"]), ("5 peft", ["export-peft"]), ("5 mlx", ["export-mlx"]),
    ("5 GGUF, all 7 types (llama.cpp)", [f"gguf-{kind}" for kind in GGUF_KINDS]),
    ("6 PEFT import", ["import-peft"]),
]
MARK = {"passed": "✓", "failed": "✗", "xfailed": "✗ (known)", "xpassed": "✓", "skipped": "–"}


def cell(results: dict, names: list[str]) -> str:
    outcomes = [results.get(name, {}).get("outcome") for name in names]
    if any(o is None for o in outcomes):
        return "–"
    if all(o in ("passed", "xpassed") for o in outcomes):
        return "✓"
    return next(MARK.get(o, "✗") for o in outcomes if o not in ("passed", "xpassed"))


def family_table(results: dict) -> str:
    from tests.models.make_tiny import FAMILIES

    lines = ["| family (model_type) | " + " | ".join(h for h, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    notes = []
    for family in FAMILIES:
        cells = results.get(family, {})
        lines.append(f"| {family} ({FAMILIES[family]['model_type']}) | "
                     + " | ".join(cell(cells, names) for _, names in COLUMNS) + " |")
        notes += [f"- {family}, {name}: {entry['reason']}" for name, entry in sorted(cells.items())
                  if entry.get("outcome") == "xfailed" and entry.get("reason")]
    return "\n".join(lines + ([""] + notes if notes else []))


def numbers_table(results: dict) -> str:
    from tests.models.make_tiny import FAMILIES

    lines = ["| family | estimate (MB) | measured peak (MB) | estimate error | LoRA loss step 1 → 60 | "
             "halved at step |", "|---|---|---|---|---|---|"]
    for family in FAMILIES:
        fit, lora = results.get(family, {}).get("fit", {}), results.get(family, {}).get("train-lora", {})
        error = f"{fit['estimate_error']:+.1%}" if "estimate_error" in fit else "–"
        loss = f"{lora['first_loss']:.2f} → {lora['final_loss']:.2f}" if "first_loss" in lora else "–"
        lines.append(f"| {family} | {fit.get('estimate_mb', '–')} | {fit.get('peak_mb', '–')} | {error} | {loss} | "
                     f"{lora.get('halved_at_step', '–')} |")
    return "\n".join(lines)


def gguf_table(results: dict) -> str:
    """llama.cpp's top-1 agreement with base+adapter, and the adapter's effect kept, per family and type."""
    from tests.models.make_tiny import FAMILIES

    lines = ["| family | " + " | ".join(GGUF_KINDS) + " |", "|---|" + "---|" * len(GGUF_KINDS)]
    for family in FAMILIES:
        row = []
        for kind in GGUF_KINDS:
            entry = results.get(family, {}).get(f"gguf-{kind}", {})
            if entry.get("outcome") not in ("passed", "xpassed") or "top1_agreement" not in entry:
                row.append(MARK.get(entry.get("outcome"), "–") if entry else "–")
                continue
            kept = entry.get("adapter_effect_kept")
            row.append(f"{entry['top1_agreement']:.1%}" + (f" · {kept:.0%}" if kept is not None else ""))
        lines.append(f"| {family} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def replace_block(path: Path, tag: str, body: str) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = f"<!-- {tag} -->", f"<!-- /{tag} -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path}: no {start} … {end} block to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{head}{start}\n{body}\n{end}{tail}", encoding="utf-8")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=REPO / "tests" / "models" / "results.json")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    replace_block(REPO / "README.md", "family-table", family_table(results))
    replace_block(REPO / "bench" / "RESULTS.md", "family-results", numbers_table(results))
    replace_block(REPO / "bench" / "RESULTS.md", "gguf-results", gguf_table(results))


if __name__ == "__main__":
    main()
