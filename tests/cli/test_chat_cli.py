"""``mlx-lora chat``: one-shot answers, base-vs-tuned, the interactive loop with its
history and commands, Ctrl-C stopping one answer, errors."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import mlx_lora  # noqa: F401
from mlx_lora.chat import ChatSession, ChatSettings, load_chat_model
from mlx_lora.cli.main import main
from tests.core.test_chat_helpers import tiny_run, user  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


def greedy(run, text: str, max_tokens: int, use_adapter: bool = True) -> str:
    chat = load_chat_model(adapter=run)
    return ChatSession(chat.model, chat.tokenizer).answer(
        user(text), ChatSettings(temperature=0.0, max_tokens=max_tokens), use_adapter=use_adapter).text


def test_one_shot_prompt_prints_the_tuned_answer(tiny_run, capsys):
    rc = main(["chat", "--adapter", str(tiny_run), "--prompt", "Hi", "--temperature", "0", "--max-tokens", "6"])

    out, err = capsys.readouterr()
    assert rc == 0
    assert out == greedy(tiny_run, "Hi", 6) + "\n"
    assert "tiny-run" in err and "6 tokens" in err and "tokens/s (stopped at --max-tokens)" in err


def test_compare_prints_base_then_tuned(tiny_run, capsys):
    rc = main(["chat", "--adapter", str(tiny_run), "--prompt", "Hi", "--temperature", "0", "--max-tokens", "5",
               "--compare"])

    out, _ = capsys.readouterr()
    assert rc == 0
    assert out == f"[base] {greedy(tiny_run, 'Hi', 5, use_adapter=False)}\n\n[tuned] {greedy(tiny_run, 'Hi', 5)}\n"


def test_interactive_keeps_history_and_obeys_commands(tiny_run, capsys, monkeypatch):
    seen: list[int] = []
    stream = ChatSession.stream

    def spy(self, messages, *args, **kwargs):
        seen.append(len(messages))
        return stream(self, messages, *args, **kwargs)

    monkeypatch.setattr(ChatSession, "stream", spy)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hi\n\nAnd then?\n/reset\nHello\n/exit\nnever read\n"))

    rc = main(["chat", "--adapter", str(tiny_run), "--max-tokens", "3", "--system", "Be a pirate."])

    _, err = capsys.readouterr()
    assert rc == 0
    assert seen == [1, 3, 1]  # the second turn sees the first exchange; /reset forgets it
    assert "(conversation cleared)" in err


def test_end_of_input_leaves_quietly(tiny_run, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["chat", "--adapter", str(tiny_run)]) == 0


def test_ctrl_c_stops_the_answer_not_the_chat(tiny_run):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_lora.cli.main", "chat", "--adapter", str(tiny_run), "--max-tokens", "100000",
         "--temperature", "1.0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        proc.stdin.write(b"Tell me everything.\n")
        proc.stdin.flush()
        assert proc.stdout.read(len("> ")) == b"> "
        first = proc.stdout.read(1)  # the answer has started streaming
        assert first
        proc.send_signal(signal.SIGINT)
        proc.stdin.write(b"/exit\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert b"(stopped)" in err and b"tokens/s" in err
    assert out.rstrip().endswith(b">")  # back at the prompt after the stopped answer


def test_errors_are_one_line_and_status_2(tiny_run, tmp_path, capsys):
    assert main(["chat", "--model", str(tiny_run.parent), "--compare", "--prompt", "x"]) == 2
    assert "--compare needs --adapter" in capsys.readouterr().err
    assert main(["chat", "--adapter", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    assert "no such adapter" in capsys.readouterr().err
    assert main(["chat", "--adapter", str(tiny_run), "--temperature", "-1", "--prompt", "x"]) == 2
    assert "temperature" in capsys.readouterr().err


@pytest.mark.demo
def test_demo_model_one_shot(demo_model, capsys):
    assert main(["chat", "--model", "demo", "--prompt", "What is the capital of France?", "--temperature", "0",
                 "--max-tokens", "30"]) == 0
    assert "Paris" in capsys.readouterr().out
