"""The reward process: ``python -I child.py FILE``. Loads FILE's ``reward`` and answers one
JSON line per call on stdout: ``{"value": x}`` or ``{"error": "ValueError: …"}``. Standard
library only, so it starts fast and imports nothing of the trainer; the user's prints go
to stderr so they cannot break the protocol."""

import importlib.util
import json
import math
import os
import sys
import traceback


def main() -> None:
    path = sys.argv[1]
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout = sys.stderr

    def send(obj):
        protocol.write(json.dumps(obj) + "\n")
        protocol.flush()

    sys.path.insert(0, os.path.dirname(path))
    try:
        spec = importlib.util.spec_from_file_location("user_reward", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        function = getattr(module, "reward", None)
        if not callable(function):
            send({"error": "defines no function reward(prompt, completion, **row)"})
            return
    except BaseException as exc:  # noqa: BLE001 - any failure of the user's file is reported
        where = traceback.extract_tb(exc.__traceback__)[-1]
        send({"error": f"failed to load: {type(exc).__name__}: {exc} (line {where.lineno})"})
        return
    send({"ready": True})
    for line in sys.stdin:
        call = json.loads(line)
        try:
            value = function(call["prompt"], call["completion"], **call["row"])
        except BaseException as exc:  # noqa: BLE001
            send({"error": f"{type(exc).__name__}: {exc}"})
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            send({"value": None, "type": type(value).__name__})
        elif not math.isfinite(value):
            send({"nonfinite": str(value)})
        else:
            send({"value": value})


if __name__ == "__main__":
    main()
