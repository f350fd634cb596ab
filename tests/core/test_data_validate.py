"""Line-by-line validation of JSONL datasets: every kind of problem is named with its
file and line, all problems are collected, big files stay fast."""

from __future__ import annotations

import json

import pytest

from mlx_lora.data.validate import (
    Problem,
    raise_if_invalid,
    validate_dataset,
    validate_file,
)
from mlx_lora.errors import UserError

GOOD_CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
GOOD_COMPLETION = {"prompt": "2+2=", "completion": "4"}
GOOD_TEXT = {"text": "Once upon a time."}


def line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def chat(*messages, **extra) -> bytes:
    return line({"messages": list(messages), **extra})


def msg(role, content) -> dict:
    return {"role": role, "content": content}


# (what goes on line 3 of a chat file, words the reason must contain)
BAD_LINES = {
    "invalid json": (b'{"messages": [}\n', "invalid JSON"),
    "invalid utf-8": (b'{"text": "caf\xe9"}\n', "invalid UTF-8"),
    "not an object": (b'["user", "assistant"]\n', "expected a JSON object, got a list"),
    "a string": (b'"hello"\n', "expected a JSON object, got a string"),
    "mixed format": (line(GOOD_COMPLETION), "a completion record"),
    "unknown role": (chat(msg("user", "hi"), msg("bot", "hey"), msg("assistant", "ok")), "unknown role 'bot'"),
    "messages not a list": (line({"messages": "hi there"}), "'messages' must be a list, got a string"),
    "messages empty": (line({"messages": []}), "'messages' is empty"),
    "content not a string": (chat(msg("user", ["hi"]), msg("assistant", "ok")), "'content' must be a string, got a list"),
    "content a number": (chat(msg("user", "hi"), msg("assistant", 42)), "'content' must be a string, got a number"),
    "ends with user": (chat(msg("user", "hi"), msg("assistant", "ok"), msg("user", "bye")), "ends with a 'user' turn"),
    "empty content": (chat(msg("user", ""), msg("assistant", "ok")), "messages[0]: empty content"),
    "whitespace content": (chat(msg("user", "hi"), msg("assistant", "  \n")), "messages[1]: empty content"),
    "null content": (chat(msg("user", None), msg("assistant", "ok")), "messages[0]: empty content"),
    "missing content": (chat({"role": "user"}, msg("assistant", "ok")), "missing key 'content'"),
    "missing role": (chat({"content": "hi"}, msg("assistant", "ok")), "missing key 'role'"),
    "message not an object": (chat("hi", msg("assistant", "ok")), "messages[0] must be an object"),
    "missing keys": (line({"question": "a", "answer": "b"}), "missing keys"),
    "tools not a list": (chat(msg("user", "hi"), msg("assistant", "ok"), tools={"name": "x"}), "'tools' must be a list"),
    "bad tool_calls": (chat(msg("user", "hi"), {"role": "assistant", "tool_calls": [{"name": "f"}]}), "tool_calls[0]"),
    # hostile lines that were tracebacks (RecursionError, ValueError) or passed and crashed later
    "nested 100,000 deep": (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "nested more than"),
    "nested 500 deep": (b'{"messages": [{"role": "user", "content": "hi", "x": ' + b"[" * 500 + b"]" * 500
                        + b'}, {"role": "assistant", "content": "ok"}]}\n', "nested more than"),
    "5,000-digit number": (b'{"messages": [], "n": ' + b"9" * 5000 + b"}\n", "a number with more than"),
    "lone surrogate": (b'{"messages": [{"role": "user", "content": "hi \\ud800"}, '
                       b'{"role": "assistant", "content": "ok"}]}\n', "messages[0].content: a lone surrogate"),
    "lone surrogate in a key": (b'{"messages": [{"role": "user", "content": "hi"}, '
                                b'{"role": "assistant", "content": "ok"}], "\\udfff": 1}\n', "a lone surrogate"),
}


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_each_kind_of_problem_is_named_with_file_and_line(tmp_path, kind):
    bad, reason = BAD_LINES[kind]
    path = tmp_path / "train.jsonl"
    path.write_bytes(line(GOOD_CHAT) + line(GOOD_CHAT) + bad + line(GOOD_CHAT))

    report = validate_file(path)

    assert not report.ok
    assert [p.line for p in report.problems] == [3], report.problems
    assert reason in report.problems[0].reason
    assert str(report.problems[0]).startswith(f"{path}:3: ")
    assert report.format == "chat"
    assert report.count == 3


def test_completion_and_text_fields_must_be_non_empty_strings(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(line(GOOD_COMPLETION) + line({"prompt": "a", "completion": ""})
                     + line({"prompt": 3, "completion": "b"}) + line({"prompt": "only"}))
    report = validate_file(path)
    assert [(p.line, p.reason) for p in report.problems] == [
        (2, "'completion' is empty"),
        (3, "'prompt' must be a string, got a number"),
        (4, "missing key 'completion'"),
    ]
    text = tmp_path / "t.jsonl"
    text.write_bytes(line(GOOD_TEXT) + line({"text": None}))
    assert [str(p) for p in validate_file(text).problems] == [f"{text}:2: 'text' must be a string, got null"]


def test_the_format_is_the_majority_and_the_minority_is_flagged(tmp_path):
    path = tmp_path / "mixed.jsonl"
    # the first record is chat, but most are completion records
    path.write_bytes(line(GOOD_CHAT) + line(GOOD_COMPLETION) * 3 + line(GOOD_TEXT))
    report = validate_file(path)
    assert report.format == "completion"
    assert report.count == 3
    assert [p.line for p in report.problems] == [1, 5]
    assert "a chat record" in report.problems[0].reason and "3 of 5" in report.problems[0].reason
    assert "a text record" in report.problems[1].reason


def test_a_tie_goes_to_the_first_format_seen(tmp_path):
    path = tmp_path / "tie.jsonl"
    path.write_bytes(line(GOOD_TEXT) + line(GOOD_COMPLETION))
    report = validate_file(path)
    assert report.format == "text"
    assert [p.line for p in report.problems] == [2]


def test_blank_lines_are_skipped_and_counted_and_line_numbers_stay_physical(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b"\n" + line(GOOD_CHAT) + b"   \r\n\n" + b"{oops\n")
    report = validate_file(path)
    assert report.blank_lines == 3
    assert report.count == 1
    assert [p.line for p in report.problems] == [5]


def test_a_byte_order_mark_and_crlf_line_ends_are_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD_CHAT).encode() + b"\r\n" + line(GOOD_CHAT))
    report = validate_file(path)
    assert report.ok, report.problems
    assert report.count == 2


def test_assistant_turns_may_carry_tool_calls_and_tool_results(tmp_path):
    record = {
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "messages": [
            msg("system", "You can call tools."),
            msg("user", "Weather in Oslo?"),
            {"role": "assistant", "content": None,
             "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
            {"role": "tool", "content": '{"celsius": 3}', "name": "weather"},
            msg("assistant", "It is 3 °C in Oslo."),
        ],
    }
    path = tmp_path / "tools.jsonl"
    path.write_bytes(line(record))
    assert validate_file(path).ok


def test_an_empty_file_is_a_problem(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n\n")
    for path in (empty, blank):
        report = validate_file(path)
        assert [(p.line, p.reason.split(":")[0]) for p in report.problems] == [(0, "empty file")]
        assert str(report.problems[0]) == f"{path}: {report.problems[0].reason}"
        assert report.format == "unknown" and report.count == 0


def test_every_problem_is_collected_in_line_order(tmp_path):
    path = tmp_path / "many.jsonl"
    lines = [line(GOOD_CHAT) if i % 3 else b"{bad\n" for i in range(300)]
    path.write_bytes(b"".join(lines))
    report = validate_file(path)
    assert [p.line for p in report.problems] == list(range(1, 301, 3))
    assert report.count == 200


def test_raise_if_invalid_lists_fifty_problems_and_counts_the_rest(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(line(GOOD_TEXT) + b"nope\n" * 60)
    report = validate_file(path)
    assert len(report.problems) == 60
    with pytest.raises(UserError) as info:
        raise_if_invalid(report)
    message = str(info.value)
    assert f"{path}:2: invalid JSON" in message
    assert f"{path}:51: " in message and f"{path}:52: " not in message
    assert "and 10 more problems" in message
    raise_if_invalid(validate_file(_write(tmp_path / "ok.jsonl", line(GOOD_TEXT))))  # no error


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_a_hundred_thousand_lines_with_one_bad_line_near_the_end(tmp_path):
    path = tmp_path / "big.jsonl"
    good = line(GOOD_CHAT)
    n, bad_at = 100_000, 99_990
    path.write_bytes(good * (bad_at - 1) + chat(msg("user", "hi"), msg("robot", "beep")) + good * (n - bad_at))
    report = validate_file(path)
    assert [str(p) for p in report.problems] == [
        f"{path}:{bad_at}: messages[1]: unknown role 'robot' (expected one of system, user, assistant, tool)"
    ]
    assert report.count == n - 1 and report.lines == n


def test_a_fifty_megabyte_line_is_read_without_trouble(tmp_path):
    big = "x" * 50_000_000
    ok = _write(tmp_path / "one-line.jsonl", b'{"text": "' + big.encode() + b'"}\n' + line(GOOD_TEXT))
    report = validate_file(ok)
    assert report.ok and report.count == 2
    # the same line cut short: one short reason, not the line echoed back
    cut = _write(tmp_path / "cut.jsonl", line(GOOD_TEXT) + b'{"text": "' + big.encode() + b"\n")
    report = validate_file(cut)
    assert [p.line for p in report.problems] == [2]
    assert "invalid JSON" in report.problems[0].reason and len(report.problems[0].reason) < 200


def test_problem_str_is_file_line_reason():
    assert str(Problem("data/train.jsonl", 7, "invalid JSON")) == "data/train.jsonl:7: invalid JSON"


def test_a_folder_needs_train_jsonl(tmp_path):
    (tmp_path / "valid.jsonl").write_bytes(line(GOOD_CHAT))
    (tmp_path / "data.jsonl").write_bytes(line(GOOD_CHAT))
    report = validate_dataset(tmp_path)
    assert not report.ok
    assert any(p.file.endswith("train.jsonl") and "missing" in p.reason for p in report.problems)
    assert any("data.jsonl" in note for note in report.notes)


def test_a_folder_checks_each_file_and_that_they_share_a_format(tmp_path):
    (tmp_path / "train.jsonl").write_bytes(line(GOOD_CHAT) * 3)
    (tmp_path / "valid.jsonl").write_bytes(line(GOOD_COMPLETION) + b"{\n")
    report = validate_dataset(tmp_path)
    assert report.is_folder and report.format == "chat" and report.count == 4
    assert [str(p) for p in report.problems] == [
        f"{tmp_path / 'valid.jsonl'}:2: invalid JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{tmp_path / 'valid.jsonl'}: holds completion records but {tmp_path / 'train.jsonl'} holds chat records; "
        "all files of a dataset use one format",
    ]
    assert report.file_report("train.jsonl").count == 3


def test_a_folder_without_valid_jsonl_is_fine_with_a_note(tmp_path):
    (tmp_path / "train.jsonl").write_bytes(line(GOOD_TEXT) * 4)
    report = validate_dataset(tmp_path)
    assert report.ok and report.count == 4
    assert any("no valid.jsonl" in note for note in report.notes)


def test_a_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        validate_dataset(tmp_path / "nowhere.jsonl")
    with pytest.raises(UserError, match="no such file"):
        validate_file(tmp_path / "nowhere.jsonl")
