"""Check every line of a JSONL dataset before any model is loaded.

A dataset is a folder holding ``train.jsonl`` (needed), ``valid.jsonl`` and
``test.jsonl`` (optional), or a single ``.jsonl`` file that
:func:`mlx_lora.data.dataset.load_splits` splits. This module reads each file
once, in binary, decoding and parsing one line at a time (so a 50 MB line costs
one 50 MB string, never a whole-file copy), and collects every problem as
``file:line: reason``; nothing stops at the first one.

Decisions:
- Blank lines (only whitespace) are allowed and skipped; the report counts them.
  mlx-lm's own loader would fail on them, but records reach training through
  :mod:`mlx_lora.data.dataset`, which skips them too.
- A UTF-8 byte-order mark at the start of the file is accepted (editors on
  Windows write one).
- One file holds one format. The format is the one most records are written in
  (ties: the first seen); records of another format are problems, never
  silently accepted.
- ``count`` is the number of valid records of the file's format.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from mlx_lora.data.records import COMPLETION, FORMAT_KEYS, MAX_DEPTH, PROMPT, check_record
from mlx_lora.errors import UserError

UNKNOWN = "unknown"  # the format of a file with no recognisable record
SPLIT_FILES = ("train.jsonl", "valid.jsonl", "test.jsonl")
SHOWN_PROBLEMS = 50  # how many problems a message lists before "and N more"

_BOM = b"\xef\xbb\xbf"


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem with a dataset. ``line`` is 1-based; 0 means the file as a whole
    (an empty file, a missing file), and then ``str()`` leaves the line out."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        if self.line <= 0:
            return f"{self.file}: {self.reason}"
        return f"{self.file}:{self.line}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """What one JSONL file holds and what is wrong with it."""

    file: str
    format: str  # "chat" | "completion" | "text", or "unknown" when no record is recognisable
    count: int  # valid records of that format
    problems: list[Problem]
    lines: int = 0  # lines read, blank ones included
    blank_lines: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclasses.dataclass(frozen=True)
class DatasetReport:
    """The reports of the files of a dataset, and problems between them."""

    path: str
    files: list[ValidationReport]
    problems: list[Problem]  # every file's problems, then problems across files
    format: str
    count: int  # valid records in all files
    is_folder: bool
    notes: list[str] = dataclasses.field(default_factory=list)  # remarks that are not problems

    @property
    def ok(self) -> bool:
        return not self.problems

    def file_report(self, name: str) -> ValidationReport | None:
        """The report of ``train.jsonl``/``valid.jsonl``/``test.jsonl`` (by file name)."""
        return next((r for r in self.files if Path(r.file).name == name), None)


def _scan_file(path: Path, keep_records: bool) -> tuple[ValidationReport, list[dict[str, Any]]]:
    """Read a JSONL file line by line: (report, valid records of the file's format
    when ``keep_records``, in file order)."""
    name = str(path)
    if not path.exists():
        raise UserError(f"{name}: no such file")
    if not path.is_file():
        raise UserError(f"{name}: not a file")
    # (line, format or None, reasons, record): formats are compared once all are known
    entries: list[tuple[int, str | None, list[str], Any]] = []
    format_counts: dict[str, int] = {}  # insertion order = order first seen, for ties
    lines = blank = 0
    try:
        with open(path, "rb") as f:
            for lines, raw in enumerate(f, start=1):
                if lines == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                if not raw.strip():
                    blank += 1
                    continue
                try:
                    # without the line end, JSON error columns count within this line
                    text = raw.rstrip(b"\r\n").decode("utf-8")
                except UnicodeDecodeError as exc:
                    entries.append((lines, None, [f"invalid UTF-8 at byte {exc.start + 1} of the line"], None))
                    continue
                record, reason = parse_line(text)
                if reason:
                    entries.append((lines, None, [reason], None))
                    continue
                fmt, reasons = check_record(record)
                if fmt is not None:
                    format_counts[fmt] = format_counts.get(fmt, 0) + 1
                entries.append((lines, fmt, reasons, record if keep_records else None))
    except OSError as exc:
        raise UserError(f"{name}: cannot be read: {exc.strerror or exc}") from exc

    file_format = max(format_counts, key=format_counts.__getitem__) if format_counts else UNKNOWN
    problems: list[Problem] = []
    records: list[dict[str, Any]] = []
    count = 0
    for line, fmt, reasons, record in entries:
        if fmt is not None and fmt != file_format:
            # one problem for the whole record: its own flaws matter less than its format
            reasons = [_mixed_reason(fmt, file_format, format_counts)]
        if reasons:
            problems.extend(Problem(name, line, r) for r in reasons)
            continue
        count += 1
        if keep_records:
            records.append(record)
    if not entries:
        problems.append(Problem(name, 0, "empty file: no records" + (" (only blank lines)" if blank else "")))
    report = ValidationReport(name, file_format, count, problems, lines, blank)
    return report, records


def parse_line(text: str) -> tuple[Any, str | None]:
    """(the JSON value of one line, None) or (None, why it is not one). Beyond
    syntax errors, Python's parser raises RecursionError on JSON nested about
    1,000 deep and ValueError on integers of more than 4,300 digits
    (``sys.int_info.default_max_str_digits``): both are named, not tracebacks."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return None, f"nested more than {MAX_DEPTH} levels deep"
    except ValueError as exc:
        if "digits" in str(exc):
            return None, f"a number with more than {sys.get_int_max_str_digits():,} digits"
        return None, f"invalid JSON: {exc}"


def _mixed_reason(fmt: str, file_format: str, counts: dict[str, int]) -> str:
    if fmt == PROMPT and file_format == COMPLETION:
        return "missing key 'completion'"  # a completion record missing its half, as before prompt records
    total = sum(counts.values())
    return (f"a {fmt} record (expected {FORMAT_KEYS[file_format]}) in a file of {file_format} records "
            f"({counts[file_format]} of {total} records are {file_format}); one file holds one format")


def validate_file(path: str | Path) -> ValidationReport:
    """Check every line of one JSONL file."""
    return _scan_file(Path(path), keep_records=False)[0]


def dataset_files(path: Path) -> tuple[list[Path], list[Problem], list[str]]:
    """The JSONL files of a dataset: (files to read, problems, notes)."""
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if not path.is_dir():
        return [path], [], []
    present = [path / name for name in SPLIT_FILES if (path / name).is_file()]
    others = sorted(p.name for p in path.glob("*.jsonl") if p.name not in SPLIT_FILES)
    notes = [f"{path}: ignored {', '.join(others)} (only {', '.join(SPLIT_FILES)} are read)"] if others else []
    problems = []
    if not (path / "train.jsonl").is_file():
        problems.append(Problem(str(path / "train.jsonl"), 0,
                                "missing: a dataset folder needs train.jsonl (and may have valid.jsonl, test.jsonl)"))
    elif not (path / "valid.jsonl").is_file():
        notes.append(f"{path}: no valid.jsonl; the validation examples will be split off train.jsonl")
    return present, problems, notes


def _combine(path: Path, reports: list[ValidationReport], problems: list[Problem],
             notes: list[str]) -> DatasetReport:
    all_problems = [p for r in reports for p in r.problems] + problems
    formats = [r.format for r in reports if r.format != UNKNOWN]
    dataset_format = formats[0] if formats else UNKNOWN
    for r in reports:
        if r.format not in (UNKNOWN, dataset_format):
            all_problems.append(Problem(r.file, 0, f"holds {r.format} records but {reports[0].file} holds "
                                        f"{dataset_format} records; all files of a dataset use one format"))
    return DatasetReport(str(path), reports, all_problems, dataset_format,
                         sum(r.count for r in reports), path.is_dir(), notes)


def validate_dataset(path: str | Path) -> DatasetReport:
    """Check a dataset folder (train/valid/test.jsonl) or a single JSONL file."""
    path = Path(path)
    files, problems, notes = dataset_files(path)
    return _combine(path, [validate_file(f) for f in files], problems, notes)


def scan_dataset(path: str | Path) -> tuple[DatasetReport, dict[str, list[dict[str, Any]]]]:
    """Validate and keep the records in one pass: (report, {file name: records})."""
    path = Path(path)
    files, problems, notes = dataset_files(path)
    reports, records = [], {}
    for f in files:
        report, kept = _scan_file(f, keep_records=True)
        reports.append(report)
        records[f.name] = kept
    return _combine(path, reports, problems, notes), records


def format_problems(problems: list[Problem], shown: int = SHOWN_PROBLEMS) -> list[str]:
    """The first ``shown`` problems as lines, then "and N more problems" if any."""
    lines = [str(p) for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"and {len(problems) - shown} more problem{'s' if len(problems) - shown > 1 else ''}")
    return lines


def raise_if_invalid(report: ValidationReport | DatasetReport) -> None:
    """Raise a :class:`UserError` listing the first 50 problems (and how many more)."""
    if report.ok:
        return
    path = report.path if isinstance(report, DatasetReport) else report.file
    n = len(report.problems)
    body = "\n  ".join(format_problems(report.problems))
    raise UserError(f"{path}: {n} problem{'s' if n > 1 else ''} in the dataset:\n  {body}")
