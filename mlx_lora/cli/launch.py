"""``mlx-lora train --hostfile FILE`` (several machines) and ``--gpus N`` (the GPUs of this
machine): one run on several processes, through ``mlx.launch``.

This process does not train. It checks the hostfile, then runs

    mlx.launch --hostfile FILE -- python -m mlx_lora.cli.main train <every setting> --json-events
    mlx.launch --hosts 127.0.0.1 -n N --backend nccl -- python -m mlx_lora.cli.main train …

(with ``--gpus N`` mlx.launch gives rank r ``CUDA_VISIBLE_DEVICES=r``: one GPU each)
(the settings as flags, not ``--config``, so the other machines need no copy of a
config file) and reads rank 0's JSON events: it prints them as progress lines,
or passes them on unchanged with ``--json-events`` (the app's supervisor reads
them as from a one-machine run), and its exit status follows the run's last
event (``mlx.launch`` itself exits 0 whatever its ranks did).

Why not simply exec ``mlx.launch``: a SIGTERM kills it at once, leaving its
ranks orphaned with no reader for their output. Here SIGTERM and the first
Ctrl-C send the line ``stop`` to the launcher's stdin, which it copies to every
rank's stdin (local ranks by pipe, remote ones through ssh);
:func:`watch_stdin_for_stop` turns it into the rank's stop request, and the
collective stop (:mod:`mlx_lora.train.distributed`) makes all ranks stop at the
same step, with one checkpoint written by rank 0. A second signal kills the
launcher's whole process group (its own session) at once, and if this process
is killed outright, the launcher sees its lifeline pipe close and does the same
(:func:`_launcher_main`), so no rank outlives the run.

The ring backend's first port is ``--starting-port`` of mlx.launch (default
32323, one more per rank); ``MLX_LORA_RING_PORT`` sets it (the tests pick free ports).
NCCL's rendezvous port is mlx.launch's ``--nccl-port`` (12345), ``MLX_LORA_NCCL_PORT``
sets it. ``MLX_LORA_GPUS_BACKEND=ring`` runs ``--gpus N`` as N CPU processes instead (how
the tests exercise it on a machine without GPUs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, TextIO

from mlx_lora.cli.reporting import ProgressPrinter
from mlx_lora.cli.config_flags import config_flags
from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.events import Event, EventDecodeError
from mlx_lora.run_events import RUN_STATUS


def check_hostfile(path: str) -> int:
    """The number of hosts in an mlx.launch hostfile, or a UserError naming the problem."""
    from mlx._distributed_utils.common import Hostfile

    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"hostfile (run.hostfile, --hostfile): {file} does not exist")
    try:
        hostfile = Hostfile.from_file(str(file))
    except ValueError as exc:
        cause = exc.__cause__ or exc
        raise UserError(f"{file}: not an mlx.launch hostfile ({cause}); expected JSON like "
                        '[{"ssh": "mac-1.local", "ips": ["192.168.1.10"]}, ...]') from exc
    if not hostfile.hosts:
        raise UserError(f"{file}: the hostfile lists no hosts")
    if hostfile.backend in ("", "ring"):
        for host in hostfile.hosts:
            if not host.ips:
                raise UserError(f"{file}: host {host.rank} ({host.ssh_hostname}) has no \"ips\"; the ring backend "
                                "connects the machines by IP address")
    return len(hostfile.hosts)


def check_gpus(gpus: int) -> str:
    """The backend that runs ``--gpus N`` (nccl, or the tests' ring), or a UserError before anything starts."""
    backend = os.environ.get("MLX_LORA_GPUS_BACKEND", "nccl")
    if backend == "nccl":
        import mlx.core as mx

        if not mx.cuda.is_available():
            raise UserError(f"gpus (run.gpus, --gpus): {gpus} GPUs need MLX's CUDA backend, which this machine "
                            "does not have (install the cuda extra on a Linux machine with NVIDIA GPUs: "
                            "pip install 'mlx-lora-studio[cuda]'); on a Mac or for several machines use --hostfile")
    return backend


def launch_command(config: TrainConfig, watch_fd: int) -> list[str]:
    """mlx.launch's argv, run by :func:`_launcher_main` (which also watches ``watch_fd``)."""
    if config.run.hostfile:
        where = ["--hostfile", str(Path(config.run.hostfile).expanduser())]
    else:
        where = ["--hosts", "127.0.0.1", "-n", str(config.run.gpus), "--backend", check_gpus(config.run.gpus)]
        if os.environ.get("MLX_LORA_NCCL_PORT"):
            where += ["--nccl-port", os.environ["MLX_LORA_NCCL_PORT"]]
    port = os.environ.get("MLX_LORA_RING_PORT")
    return [sys.executable, "-m", "mlx_lora.cli.launch", str(watch_fd), *where,
            "--env", "MLX_LORA_LAUNCHED=1", *(["--starting-port", port] if port else []),
            "--", sys.executable, "-m", "mlx_lora.cli.main", "train", *config_flags(config), "--json-events"]


def run_launched(config: TrainConfig, json_events: bool, out: TextIO) -> int:
    """Run ``config`` on the hostfile's machines or this machine's GPUs; see the module docstring.
    Returns the exit status."""
    if config.run.hostfile:
        check_hostfile(config.run.hostfile)
    else:
        check_gpus(config.run.gpus)
    # the launcher's lifeline: it holds the read end; when this process ends, even by SIGKILL
    # (the app's last resort), the read sees EOF and the launcher ends its whole session
    lifeline, keep_alive = os.pipe()
    launcher = subprocess.Popen(launch_command(config, lifeline), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                start_new_session=True, pass_fds=(lifeline,), text=True, bufsize=1)
    os.close(lifeline)
    signals = []

    def on_signal(signum, frame) -> None:
        signals.append(signum)
        if len(signals) == 1:
            print("stopping every machine after this step (Ctrl-C again to end them now)…", file=sys.stderr,
                  flush=True)
            try:
                launcher.stdin.write("stop\n")
                launcher.stdin.flush()
            except OSError:
                pass
        else:
            os.killpg(launcher.pid, signal.SIGKILL)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    printer = ProgressPrinter(out)
    status = None  # the run's, from its last terminal event
    try:
        for line in launcher.stdout:
            data = _parse(line)
            if data is None:
                if line.strip():
                    print(line.rstrip("\n"), file=sys.stderr, flush=True)
                continue
            status = _STATUS.get(data["event"], status)
            if json_events:
                out.write(line if line.endswith("\n") else line + "\n")
                out.flush()
                continue
            try:
                printer.emit(Event.from_dict(data))
            except EventDecodeError:  # an event from another version of the engine: show it raw
                print(json.dumps(data), file=printer.stream, flush=True)
        code = launcher.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(keep_alive)
    if status in ("finished", "stopped"):
        return 0
    return 1 if status == "failed" or code == 0 else code


# by kind, so that a terminal event is counted even where a rank's other engine version
# wrote fields this one cannot read
_STATUS = {cls.kind: status for cls, status in RUN_STATUS.items()}


def _parse(line: str) -> dict | None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def watch_stdin_for_stop(request_stop: Callable[[], None]) -> None:
    """In a rank: a line ``stop`` on stdin (from :func:`run_launched`, through mlx.launch) asks the
    run to stop, like SIGTERM does in a one-machine run."""

    def watch() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                request_stop()

    threading.Thread(target=watch, name="stop-on-stdin", daemon=True).start()


def _launcher_main(argv: list[str]) -> None:
    """``python -m mlx_lora.cli.launch LIFELINE_FD <mlx.launch arguments>``: mlx.launch (which ships
    as a console script only, no ``python -m`` form) in its own session, ended with every local rank
    and ssh connection (remote ranks then get SIGHUP) when the lifeline pipe closes."""
    lifeline = int(argv[0])

    def watch() -> None:
        while os.read(lifeline, 1):
            pass
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()
    sys.argv = ["mlx.launch", *argv[1:]]
    from mlx._distributed_utils.launch import main

    main()


if __name__ == "__main__":
    _launcher_main(sys.argv[1:])
