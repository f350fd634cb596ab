"""issue 16.6: a full disk during an export. Free space is checked before anything is
written (the export's size is known); a write that fails anyway (OSError ENOSPC, MLX's
``RuntimeError: [write] Unable to write``) is a named error, exit 2, an ``export_failed``
event with --json-events, and nothing half-written left. Faults are injected, no disk is
filled."""

from __future__ import annotations

import errno
import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from mlx_lora.cli.main import main
from tests.core.test_chat_helpers import tiny_run  # noqa: F401  (fixture)

Usage = namedtuple("Usage", "total used free")


def _export(capsys, run: Path, out: Path, fmt: str) -> tuple[int, list[dict], str]:
    rc = main(["export", "--run", str(run), "--out", str(out), "--format", fmt, "--json-events"])
    captured = capsys.readouterr()
    return rc, [json.loads(line) for line in captured.out.splitlines()], captured.err


def _nothing_left(folder: Path, out: Path) -> None:
    assert not out.exists()
    assert list(folder.iterdir()) == []  # no temporary, no .gguf-check-, no partial file


def test_too_little_free_space_is_refused_before_writing(tiny_run, tmp_path, monkeypatch, capsys):
    import mlx_lora.chat.model
    import mlx_lora.export.exporter as exporter

    seen = []

    def tiny_disk(path):
        seen.append(Path(path))
        return Usage(10**9, 10**9 - 4096, 4096)  # 4 KB free

    monkeypatch.setattr(exporter.shutil, "disk_usage", tiny_disk)
    monkeypatch.setattr(mlx_lora.chat.model, "load_chat_model",
                        lambda *a, **k: pytest.fail("the model was loaded before the space check"))
    folder = tmp_path / "exports"
    folder.mkdir()

    for fmt in ("mlx", "adapter", "gguf"):
        rc, events, err = _export(capsys, tiny_run, folder / fmt, fmt)
        assert rc == 2 and "Traceback" not in err
        assert "not enough free space" in err and "4.1 kB free" in err and "free some space" in err
        assert events[-1]["event"] == "export_failed" and "not enough free space" in events[-1]["reason"]
        _nothing_left(folder, folder / fmt)
    assert seen and all(p == folder for p in seen)


@pytest.mark.parametrize("fmt, fault", [
    ("mlx", "mlx"),  # mx.save_safetensors: RuntimeError "[write] Unable to write"
    ("adapter", "enospc"),  # shutil.copy: OSError(ENOSPC)
    ("peft", "enospc-json"),  # verification.json, the last file: OSError(ENOSPC) from write_text
])
def test_a_write_that_fails_is_a_named_error_and_leaves_nothing(tiny_run, tmp_path, monkeypatch, capsys, fmt, fault):
    import mlx.core as mx

    if fault == "mlx":
        real = mx.save_safetensors

        def save_half(file, arrays, metadata=None):
            with open(file, "wb") if isinstance(file, str) else file as fh:
                fh.write(b"\0" * 100)  # a short file, as a full disk leaves it
            raise RuntimeError("[write] Unable to write 1048576 bytes to file.")

        monkeypatch.setattr(mx, "save_safetensors", save_half)
        assert real is not save_half
    elif fault == "enospc":
        import mlx_lora.export.formats.adapter as adapter_format

        def copy_half(src, dst, *a, **k):
            Path(dst).write_bytes(Path(src).read_bytes()[:100])
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))

        monkeypatch.setattr(adapter_format.shutil, "copy", copy_half)
    else:
        real_write_text = Path.write_text

        def write_half(self, data, *a, **k):
            if self.name == "verification.json":
                real_write_text(self, data[:10], *a, **k)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write_text(self, data, *a, **k)

        monkeypatch.setattr(Path, "write_text", write_half)
    folder = tmp_path / "exports"
    folder.mkdir()

    rc, events, err = _export(capsys, tiny_run, folder / fmt, fmt)

    monkeypatch.undo()
    assert rc == 2, err
    assert "Traceback" not in err and "internal error" not in err
    assert f"error: {folder / fmt}: the export could not be written: the disk is full" in err
    assert "nothing of it was kept" in err and "free some space" in err
    assert events[-1]["event"] == "export_failed" and "the disk is full" in events[-1]["reason"]
    assert not [e for e in events if e["event"] == "export_finished"]
    _nothing_left(folder, folder / fmt)


def test_the_space_an_export_needs_is_estimated_from_the_base(tiny_run, tiny_model):
    from mlx_lora.adapters import resolve_adapter
    from mlx_lora.export.exporter import estimated_bytes
    from mlx_lora.export.formats import format_for

    files = resolve_adapter(tiny_run)
    weights = sum(p.stat().st_size for p in tiny_model.glob("*.safetensors"))
    assert estimated_bytes(format_for("mlx"), files, tiny_model, None) >= weights
    assert estimated_bytes(format_for("gguf"), files, tiny_model, None) >= 2 * weights // 2  # + its read-back
    assert estimated_bytes(format_for("adapter"), files, tiny_model, None) >= files.weights.stat().st_size
    assert shutil.disk_usage(tiny_model).free > estimated_bytes(format_for("gguf"), files, tiny_model, None)
