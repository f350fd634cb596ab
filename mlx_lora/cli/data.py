"""``mlx-lora data check FILE_OR_DIR``: every line of a dataset checked, each problem
printed as ``file:line: reason`` (the first 50, then how many more); exit status
0 when the data is clean, 2 when not. With ``--model``, the model's tokenizer
(never its weights) gives token statistics as well."""

from __future__ import annotations

import dataclasses
import json


def register(sub) -> None:
    p = sub.add_parser("data", help="check datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    c = dsub.add_parser("check", help="check every line of a dataset folder or JSONL file")
    c.add_argument("path", metavar="FILE_OR_DIR",
                   help="a folder with train.jsonl (valid.jsonl, test.jsonl), or one .jsonl file")
    c.add_argument("--model", help="also print token statistics with this model's tokenizer "
                                   "(demo, a folder, a .gguf file or org/name)")
    c.add_argument("--max-seq-length", type=int, default=2048,
                   help="examples longer than this many tokens are reported as truncated (default 2048)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=run_check)


def load_tokenizer(spec: str):
    """The tokenizer of a model, loaded the way mlx-lm loads it (stop tokens from
    generation_config.json included), without the weights."""
    from mlx_lm.tokenizer_utils import load
    from mlx_lm.utils import load_config

    from mlx_lora.errors import UserError
    from mlx_lora.models.local import resolve_model

    folder = resolve_model(spec)
    try:
        return load(folder, eos_token_ids=load_config(folder).get("eos_token_id"))
    except (OSError, ValueError) as exc:  # a broken tokenizer.json or config is the model's problem
        raise UserError(f"{folder}: cannot load the tokenizer: {exc}") from exc


def _token_stats(tokenizer, records: dict, max_seq_length: int) -> dict:
    from mlx_lora.data.stats import dataset_stats, train_valid_overlap

    stats = {name: dataset_stats(tokenizer, recs, max_seq_length) for name, recs in records.items()}
    result = {"files": {name: dataclasses.asdict(s) for name, s in stats.items()}}
    if "train.jsonl" in records and "valid.jsonl" in records:
        result["valid_in_train"] = len(train_valid_overlap(records["train.jsonl"], records["valid.jsonl"]))
    return result


def _n(count: int, noun: str) -> str:
    """"1 example", "3 examples"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _print_text(report, notes: list[str], tokens: dict | None) -> None:
    from mlx_lora.data.validate import format_problems

    for note in notes:
        print(f"note: {note}")
    for line in format_problems(report.problems):
        print(line)
    for r in report.files:
        blank = f", {_n(r.blank_lines, 'blank line')} skipped" if r.blank_lines else ""
        print(f"{r.file}: {_n(r.count, r.format + ' record')}{blank}")
    if tokens:
        for name, s in tokens["files"].items():
            print(f"{name}: {_n(s['examples'], 'example')}, {_n(s['total_tokens'], 'token')} "
                  f"({s['trained_tokens']} trained, {s['prompt_tokens']} prompt); length "
                  f"p50 {s['p50_length']}, p90 {s['p90_length']}, max {s['max_length']}")
            if s["over_max_length"]:
                print(f"  warning: {_n(s['over_max_length'], 'example')} longer than {s['max_seq_length']} "
                      f"tokens; {_n(s['truncated_tokens'], 'token')} would be cut"
                      + (f", and {s['no_trained_tokens_left']} would have nothing left to train on"
                         if s["no_trained_tokens_left"] else ""))
            if s["missing_eos"]:
                print(f"  warning: {_n(s['missing_eos'], 'example')} with a reply that has no end-of-turn token")
            if s["duplicates"]:
                print(f"  warning: {_n(s['duplicates'], 'example')} repeating an earlier one exactly")
        if tokens.get("valid_in_train"):
            print(f"warning: {_n(tokens['valid_in_train'], 'valid.jsonl example')} also in train.jsonl")
    print(f"{report.path}: " + ("OK" if report.ok else _n(len(report.problems), "problem")))


def run_check(args) -> int:
    from mlx_lora.data.validate import scan_dataset, validate_dataset

    tokens = None
    notes = []
    if args.model:
        report, records = scan_dataset(args.path)  # keeps the records for the statistics
        if report.ok:
            tokens = _token_stats(load_tokenizer(args.model), records, args.max_seq_length)
        else:
            notes.append("no token statistics until the problems are fixed")
    else:
        report = validate_dataset(args.path)
    notes = report.notes + notes
    if args.json:
        out = {
            "path": report.path,
            "ok": report.ok,
            "format": report.format,
            "count": report.count,
            "notes": notes,
            "problems": [str(p) for p in report.problems],
            "files": [{"file": r.file, "format": r.format, "count": r.count, "lines": r.lines,
                       "blank_lines": r.blank_lines, "problems": len(r.problems)} for r in report.files],
        }
        if tokens:
            out["tokens"] = tokens
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        _print_text(report, notes, tokens)
    return 0 if report.ok else 2
