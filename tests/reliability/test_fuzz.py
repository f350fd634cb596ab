"""Fuzzing for a bounded time: the JSONL validator (in process) and the GGUF and
safetensors readers and the GGUF import (in a child process: MLX's C++ GGUF reader
segfaulted on 28 of 60 randomly corrupted files before mlx_lora.models.gguf.check_gguf
walked the file first). Every input is a named error (our UserError) or accepted, and
what is accepted is usable: a record encodes as UTF-8 and is nested at most
MAX_DEPTH deep, a safetensors file loads, an imported GGUF loads in mlx-lm. Nothing
else, ever. The budget is fixed: EXAMPLES per property and a per-example deadline
(about 20 s in all on 2 busy cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlx_lora.data.records import MAX_DEPTH, value_problem
from mlx_lora.data.validate import scan_dataset
from mlx_lora.errors import UserError
from tests.core.test_train_helpers import persona_records

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = 200
DEADLINE = timedelta(seconds=5)  # per example; the slowest (a 150,000-deep line) takes ~50 ms

# text with lone surrogates among ordinary characters (json.dumps writes them as \\udXXX)
surrogate_text = st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010) | st.characters(max_codepoint=0x7F),
                         max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20) | surrogate_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["messages", "role", "content", "prompt", "completion", "text", "tools", "tool_calls",
                         "name", "x"]) | st.text(max_size=8), children, max_size=4),
    max_leaves=20)
roles = st.sampled_from(["system", "user", "assistant", "tool", "bot", "", "USER"])
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": st.one_of(st.text(max_size=30), json_values)}),
                    max_size=5).map(lambda m: {"messages": m})
good_line = json.dumps(persona_records(1)[0]).encode()
# hostile lines: nesting around Python's limit and far past it (balanced or not), integers
# around its 4,300-digit limit, lone and paired surrogate escapes, NaN and Infinity
nested = st.tuples(st.integers(1, 150_000), st.booleans()).map(
    lambda t: b'{"messages": ' + b"[" * t[0] + (b"]" * t[0] if t[1] else b"") + b"}")
long_numbers = st.integers(1, 6000).map(lambda n: b'{"text": ' + b"7" * n + b"}")
escapes = st.lists(st.sampled_from([r"\ud800", r"\udfff", r"\ud83d\ude00", r"\ud83d", "x", r"\u0000"]),
                   min_size=1, max_size=4).map(
    lambda parts: ('{"messages": [{"role": "user", "content": "a%s"}, {"role": "assistant", "content": "ok"}]}'
                   % "".join(parts)).encode())
odd_numbers = st.sampled_from([b'{"text": NaN}', b'{"text": "a", "n": Infinity}', b'{"text": "a", "n": -1e999}'])
lines = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    messages.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=80),
    st.integers(0, len(good_line)).map(lambda n: good_line[:n]),
    st.just(good_line),
    nested, long_numbers, escapes, odd_numbers,
)


@settings(max_examples=EXAMPLES, deadline=DEADLINE, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(st.lists(lines, max_size=12), st.sampled_from([b"\n", b"\r\n"]))
def test_the_jsonl_validator_names_a_line_for_every_problem_and_never_crashes(tmp_path, body, newline):
    path = tmp_path / "fuzz.jsonl"
    data = newline.join(body)
    path.write_bytes(data)
    try:
        report, records = scan_dataset(path)
    except UserError:
        return
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    for problem in report.problems:
        assert 0 <= problem.line <= n_lines and problem.reason
    assert report.count + len({p.line for p in report.problems if p.line}) <= max(n_lines, 0) + 1
    for record in records[path.name]:  # what is accepted can be trained on
        json.dumps(record, ensure_ascii=False).encode("utf-8")  # no lone surrogate
        assert value_problem(record) is None  # nested at most MAX_DEPTH deep
    assert MAX_DEPTH < 1000


def test_the_gguf_and_safetensors_readers_fail_only_with_user_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tests.reliability.fuzz_readers", str(tmp_path / "fuzz"),
                             str(EXAMPLES)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.returncode, result.stderr[-4000:])  # -11 would be a segfault
    counts = json.loads(result.stdout.splitlines()[-1])
    for reader in ("gguf", "safetensors", "gguf import", "safetensors header"):
        assert sum(counts[reader].values()) >= EXAMPLES * 0.9, counts
        assert counts[reader].get("refused", 0) > 0, counts
    # the structured fuzzers reach past the checks too: some of what they write is sound
    assert counts["gguf import"].get("read", 0) > 0 and counts["safetensors header"].get("read", 0) > 0, counts
    print(counts)
