"""Fuzzing for a bounded time: the JSONL validator (in process) and the GGUF and
safetensors readers (in a child process: MLX's C++ GGUF reader segfaulted on 28 of 60
randomly corrupted files before mlx_lora.models.gguf.check_gguf walked the file first).
Nothing may fail other than with our UserError."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlx_lora.data.validate import validate_file
from mlx_lora.errors import UserError
from tests.core.test_train_helpers import persona_records

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = 200

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["messages", "role", "content", "prompt", "completion", "text", "tools", "tool_calls",
                         "name", "x"]) | st.text(max_size=8), children, max_size=4),
    max_leaves=20)
roles = st.sampled_from(["system", "user", "assistant", "tool", "bot", "", "USER"])
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": st.one_of(st.text(max_size=30), json_values)}),
                    max_size=5).map(lambda m: {"messages": m})
good_line = json.dumps(persona_records(1)[0]).encode()
lines = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    messages.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=80),
    st.integers(0, len(good_line)).map(lambda n: good_line[:n]),
    st.just(good_line),
)


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(lines, max_size=12), st.sampled_from([b"\n", b"\r\n"]))
def test_the_jsonl_validator_names_a_line_for_every_problem_and_never_crashes(tmp_path, body, newline):
    path = tmp_path / "fuzz.jsonl"
    data = newline.join(body)
    path.write_bytes(data)
    try:
        report = validate_file(path)
    except UserError:
        return
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    for problem in report.problems:
        assert 0 <= problem.line <= n_lines and problem.reason
    assert report.count + len({p.line for p in report.problems if p.line}) <= max(n_lines, 0) + 1


def test_the_gguf_and_safetensors_readers_fail_only_with_user_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tests.reliability.fuzz_readers", str(tmp_path / "fuzz"),
                             str(EXAMPLES)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.returncode, result.stderr[-4000:])  # -11 would be a segfault
    counts = json.loads(result.stdout.splitlines()[-1])
    for reader in ("gguf", "safetensors"):
        assert sum(counts[reader].values()) >= EXAMPLES * 0.9, counts
        assert counts[reader].get("refused", 0) > 0, counts
    print(counts)
