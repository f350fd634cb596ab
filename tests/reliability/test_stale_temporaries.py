"""issue 16.5: what a killed export leaves (``.NAME.XXXXXXXX.tmp`` folders and files of
mlx_lora/atomic.py, ``.gguf-check-XXXXXXXX`` scratch folders) is removed at the next
export and at app start, by our naming pattern and its writer's death or its age only,
and the amount freed is reported. Look-alikes survive, however old."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mlx_lora import atomic
from mlx_lora.cli.main import main
from tests.core.test_chat_helpers import tiny_run  # noqa: F401  (fixture)

HOURS_AGO = time.time() - 2 * 3600


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    return int(child.stdout)


def _age(path: Path, when: float = HOURS_AGO) -> None:
    for p in [*path.rglob("*"), path] if path.is_dir() and not path.is_symlink() else [path]:
        os.utime(p, (when, when), follow_symlinks=False)


def _plant(folder: Path) -> tuple[dict[str, int], list[str], Path]:
    """Stale temporaries of ours (name → bytes) and look-alikes that must survive."""
    dead, me = _dead_pid(), os.getpid()
    stale = {}

    def tmp_dir(name: str, size: int, old: bool = True) -> None:
        (folder / name).mkdir()
        (folder / name / "model.safetensors").write_bytes(b"\0" * size)
        (folder / name / "sub").mkdir()
        (folder / name / "sub" / "config.json").write_bytes(b"{}")
        if old:
            _age(folder / name)
        stale[name] = size + 2

    tmp_dir(".my-model.k3j9x_2a.tmp", 300_000)  # atomic_dir of an older version, two hours old
    tmp_dir(f".my-model.{dead}-q0w9e8r7.tmp", 200_000, old=False)  # its writer is dead: no need to wait
    tmp_dir(".gguf-check-ab12cd34", 500_000)
    tmp_dir(f".gguf-check-{dead}-zz99yy88", 100_000, old=False)
    (folder / ".adapters.safetensors.p1o2i3u4.tmp.safetensors").write_bytes(b"\1" * 4096)  # atomic_path
    _age(folder / ".adapters.safetensors.p1o2i3u4.tmp.safetensors")
    stale[".adapters.safetensors.p1o2i3u4.tmp.safetensors"] = 4096

    outside = folder.parent / f"{folder.name}-outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not ours")
    survivors = [
        ".my-model.young123.tmp",  # no pid, young: an export of an older version may still be writing it
        f".my-model.{me}-live1234.tmp",  # a live writer (this process), however old
        f".gguf-check-{me}-live5678",
        ".my-model.old",  # a folder atomic_dir parked: put back, never deleted (atomic.recover_dir)
        ".bashrc", ".my-model.tmp", "notes.tmp", "my-model.abcd1234.tmp", ".gguf-check-notes",
        ".gguf-check-ABCDEFGH", ".Model.abcd1234.tmpfile", "exports",
    ]
    for name in survivors:
        if name.startswith((".bashrc", "notes", ".Model")):
            (folder / name).write_text("user's file")
        else:
            (folder / name).mkdir()
            (folder / name / "file.bin").write_bytes(b"\2" * 1000)
    (folder / "exports" / ".inner.abcd1234.tmp").mkdir()  # not at the top: not looked at
    (folder / ".link.abcd1234.tmp").symlink_to(outside, target_is_directory=True)  # we never make links
    survivors.append(".link.abcd1234.tmp")
    for name in survivors:
        if name != ".my-model.young123.tmp":
            _age(folder / name)
    return stale, survivors, outside


def test_stale_temporaries_go_and_look_alikes_stay(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    stale, survivors, outside = _plant(folder)

    cleaned = atomic.clean_stale_temporaries(folder)

    assert sorted(cleaned.removed) == sorted(stale)
    assert cleaned.freed_bytes == sum(stale.values())
    assert sorted(p.name for p in folder.iterdir()) == sorted(survivors)
    assert (outside / "precious.txt").read_text() == "not ours"
    assert (folder / "exports" / ".inner.abcd1234.tmp").is_dir()
    assert atomic.clean_stale_temporaries(folder).removed == ()  # nothing twice


def test_our_own_temporaries_carry_our_pid(tmp_path):
    with atomic.atomic_dir(tmp_path / "out") as tmp:
        assert atomic.temporary_pid(tmp.name) == os.getpid()
        assert atomic.clean_stale_temporaries(tmp_path).removed == ()  # a live writer's: kept
    with atomic.atomic_path(tmp_path / "f.json") as tmp:
        assert atomic.temporary_pid(tmp.name) == os.getpid()
        tmp.write_text("{}")


def test_the_next_export_cleans_and_says_how_much(tiny_run, tmp_path, capsys):
    folder = tmp_path / "exports"
    folder.mkdir()
    stale, survivors, _ = _plant(folder)

    rc = main(["export", "--run", str(tiny_run), "--out", str(folder / "adapter"), "--format", "adapter",
               "--json-events"])

    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0
    [cleaned] = [e for e in events if e["event"] == "stale_temporaries_removed"]
    assert cleaned["freed_bytes"] == sum(stale.values()) and sorted(cleaned["removed"]) == sorted(stale)
    assert cleaned["folder"] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(survivors + ["adapter"])


def test_app_start_cleans_the_exports_folder(tmp_path, monkeypatch, caplog):
    from app.main import clean_stale_temporaries

    monkeypatch.setenv("MLX_LORA_HOME", str(tmp_path / "home"))
    folder = tmp_path / "home" / "exports"
    folder.mkdir(parents=True)
    stale, survivors, _ = _plant(folder)

    with caplog.at_level("INFO"):
        clean_stale_temporaries()

    assert sorted(p.name for p in folder.iterdir()) == sorted(survivors)
    assert f"freed {sum(stale.values()) / 1e6:.1f} MB" in caplog.text
