"""Hostile or broken model files fail cleanly, and the Hub token never leaks.

A truncated safetensors file or one with an oversized or lying header is a UserError naming
the file, through mlx_lora.models.local and through ``mlx-lora train`` (never an error from
inside MLX). The rest of the hostile-repository guarantees are proven in
tests/core/test_hub.py (``..``/absolute/drive paths, pickle-only, code files never
requested) and tests/core/test_data_render.py (the chat-template sandbox)."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import uuid

import pytest

from mlx_lora.cli.main import main
from mlx_lora.errors import UserError
from mlx_lora.models.local import load_model, resolve_model
from tests.cli.test_train_cli import flags


def _header(data: bytes) -> tuple[int, dict]:
    (length,) = struct.unpack("<Q", data[:8])
    return length, json.loads(data[8:8 + length])


def _with_header(data: bytes, header: dict) -> bytes:
    length, _ = _header(data)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + length:]


def truncated(data):
    return data[: len(data) // 2]


def oversized_header(data):
    return struct.pack("<Q", 2**62) + data[8:]


def header_past_the_end(data):
    return struct.pack("<Q", len(data)) + data[8:]


def offsets_past_the_end(data):
    _, header = _header(data)
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [0, 10**12]
    return _with_header(data, header)


def shape_and_size_disagree(data):
    _, header = _header(data)
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [s * 2 for s in header[name]["shape"]]
    return _with_header(data, header)


def not_json(data):
    length, _ = _header(data)
    return data[:8] + b"{" * length + data[8 + length:]


def too_short(data):
    return data[:5]


def _with_raw_header(data: bytes, raw: bytes) -> bytes:
    length, _ = _header(data)
    return struct.pack("<Q", len(raw)) + raw + data[8 + length:]


def deeply_nested_header(data):
    return _with_raw_header(data, b'{"__metadata__": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}")


def huge_offsets(data):
    _, header = _header(data)
    name = next(k for k in header if k != "__metadata__")
    raw = json.dumps(header).encode().replace(b'"data_offsets": [0, ', b'"data_offsets": [' + b"9" * 5000 + b", ", 1)
    return _with_raw_header(data, raw)


def surrogate_metadata_key(data):
    _, header = _header(data)
    return _with_raw_header(data, json.dumps({**header, "__metadata__": {"\udc00": "x"}}).encode())


def nan_metadata(data):
    _, header = _header(data)
    return _with_raw_header(data, json.dumps({**header, "__metadata__": {"format": float("nan")}}).encode())


def surrogate_tensor_name(data):
    _, header = _header(data)
    name = next(k for k in header if k != "__metadata__")
    header["\ud800" + name] = header.pop(name)
    return _with_raw_header(data, json.dumps(header).encode())


@pytest.mark.parametrize("damage", [truncated, oversized_header, header_past_the_end, offsets_past_the_end,
                                    shape_and_size_disagree, not_json, too_short, deeply_nested_header,
                                    huge_offsets, surrogate_metadata_key, nan_metadata, surrogate_tensor_name])
def test_a_broken_safetensors_file_is_a_user_error_naming_it(damage, tiny_model, tmp_path, capsys, dataset):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    weights = model / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    for load in (resolve_model, load_model):
        with pytest.raises(UserError, match="model.safetensors: not a valid safetensors file"):
            load(model)
    assert main(["train", *flags(model, dataset, tmp_path / "run", iters=1), "--json-events"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a valid safetensors file" in err and "internal error" not in err


def test_the_hub_token_never_appears_in_logs_events_errors_or_the_run_folder(hub, dataset, tmp_path, capsys,
                                                                             monkeypatch, caplog):
    from huggingface_hub import constants

    from mlx_lora import paths

    secret = f"hf_secret_{uuid.uuid4().hex}"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setattr(constants, "HF_DEBUG", True)  # huggingface_hub logs each request as a curl line
    caplog.set_level(logging.DEBUG)
    run_dir = tmp_path / "run"
    # a run on a Hub model: downloaded with the token, trained, checkpointed
    assert main(["train", *flags("org/tiny", dataset, run_dir, iters=2, save_every=1, steps_per_eval=1),
                 "--json-events"]) == 0
    # and a run that fails on the Hub (gated repo, the token not allowed there)
    assert main(["train", *flags("org/gated-tiny", dataset, tmp_path / "run2", iters=1), "--json-events"]) == 2
    captured = capsys.readouterr()

    assert any(r.headers.get("authorization") == f"Bearer {secret}" for r in hub.requests)  # it was used
    assert '"run_finished"' in captured.out and "gated" in captured.err
    assert secret not in captured.out and secret not in captured.err
    assert caplog.records and secret not in caplog.text
    files = [p for root in (run_dir, paths.home()) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "metrics.jsonl" for p in files) and any(p.suffix == ".safetensors" for p in files)
    leaks = [p for p in files if secret.encode() in p.read_bytes()]
    assert not leaks
