"""The user's reward: ``def reward(prompt, completion, **row) -> float`` from a Python file
they named, run in a child process (:mod:`mlx_lora.rewards.child`), one call at a time,
each with a time limit.

This is the one place where code of the user's runs. It is loaded from the path the user
gave and nowhere else (no search path, no module name), in a separate Python process: it
cannot touch the training process's memory, and a call that hangs is ended by killing that
process. Calls and answers are JSON lines over the child's stdin/stdout (the user's own
prints go to stderr). A call that raises, returns NaN or a non-number, or runs past
``timeout`` seconds stops the run with a :class:`~mlx_lora.errors.UserError` that names the
file and the record.
"""

from __future__ import annotations

import json
import math
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlx_lora.errors import UserError

STARTUP_TIMEOUT_S = 30.0  # loading the file (its imports) gets longer than one call


class UserReward:
    def __init__(self, path: str | Path, timeout: float) -> None:
        self.path = Path(path).expanduser().resolve()
        self.timeout = timeout
        if not self.path.is_file():
            raise UserError(f"reward_file (grpo.reward_file, --reward-file): {path}: no such file")
        if self.path.suffix != ".py":
            raise UserError(f"reward_file (grpo.reward_file, --reward-file): {path}: not a Python file (.py)")
        self.process: subprocess.Popen | None = None
        self._start()

    # -- the child ---------------------------------------------------------------
    def _start(self) -> None:
        child = Path(__file__).with_name("child.py")
        # -I: no PYTHON* variables, no user site, no script folder on the path; the child adds
        # only the reward file's own folder (for its helper modules)
        self.process = subprocess.Popen([sys.executable, "-I", str(child), str(self.path)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, encoding="utf-8", errors="replace")
        reply = self._read(STARTUP_TIMEOUT_S, "loading the file")
        if not reply.get("ready"):
            self.close()
            raise UserError(f"{self.path}: {reply.get('error', 'could not be loaded')}")

    def _read(self, timeout: float, doing: str) -> dict[str, Any]:
        process = self.process
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise UserError(f"{self.path}: reward() took longer than {timeout:g} s {doing} and was stopped; "
                                "make it faster, or raise --reward-timeout")
            ready, _, _ = select.select([process.stdout], [], [], left)
            if not ready:
                continue
            line = process.stdout.readline()
            if not line:  # the child ended (os._exit, a crash, killed)
                code = process.wait()
                err = (process.stderr.read() or "").strip().splitlines()[-3:]
                self.process = None
                raise UserError(f"{self.path}: the reward process ended (exit code {code}) {doing}"
                                + (f": {' / '.join(err)}" if err else ""))
            return json.loads(line)

    def __call__(self, prompt: Any, completion: str, row: dict[str, Any], where: str) -> float:
        if self.process is None:
            self._start()
        message = json.dumps({"prompt": prompt, "completion": completion, "row": row}, ensure_ascii=False)
        try:
            self.process.stdin.write(message + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the read below reports how the child ended
        reply = self._read(self.timeout, f"on {where}")
        if "error" in reply:
            raise UserError(f"{self.path}: reward() raised {reply['error']} on {where}")
        if "nonfinite" in reply:
            raise UserError(f"{self.path}: reward() returned {reply['nonfinite']} on {where}; it must return a "
                            "finite number")
        value = reply.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{self.path}: reward() returned {reply.get('type', type(value).__name__)} on {where}; "
                            "it must return a number")
        if not math.isfinite(value):
            raise UserError(f"{self.path}: reward() returned {value} on {where}; it must return a finite number")
        return float(value)

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            try:
                stream.close()
            except OSError:
                pass

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
