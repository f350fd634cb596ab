"""GGUF exports judged by llama.cpp itself (llama-cpp-python, the ``gguf`` extra): the
f16 file's logits and greedy continuation against base+adapter, the K-quants made by
llama.cpp's quantiser, a lost adapter caught by llama.cpp's check, a crash in llama.cpp
a UserError; and the hand-offs (Ollama's Modelfile, LM Studio's folder layout), checked
without those apps.

Nothing here is skipped: without llama-cpp-python the llama.cpp tests FAIL, saying how
to install it (`make setup-gguf`, which `make test` runs)."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

import mlx_lora  # noqa: F401
from mlx_lora.adapters import strip_adapters
from mlx_lora.errors import UserError
from mlx_lora.export import export_run, handoff, llama_cpp_check
from mlx_lora.export.exporter import ExportVerificationFailed
from mlx_lora.export.formats.gguf import MIN_EFFECT_KEPT
from tests.core.test_chat_helpers import make_run, tiny_run  # noqa: F401

LLAMA_CHECK = "(loaded by llama.cpp)"


pytestmark = pytest.mark.llama_cpp  # every test here is judged by llama.cpp

@pytest.fixture(scope="module")
def llama_cpp():
    if not llama_cpp_check.available():
        pytest.fail("llama-cpp-python is not importable: these tests need the gguf extra — run `make setup-gguf` "
                    "(pip install -e '.[gguf]'; it builds llama.cpp, ~5 min on 2 cores) or put it on PYTHONPATH")


@pytest.fixture(scope="module")
def f16_export(tiny_run, tmp_path_factory, llama_cpp):
    out = tmp_path_factory.mktemp("gguf-llama") / "f16"
    return out, export_run(tiny_run, out, "gguf")


@pytest.fixture(scope="module")
def wide_run(demo_model, tmp_path_factory):
    """A tiny llama whose rows are 256 wide: llama.cpp's K-quants need rows of 256
    (narrower rows fall back to other types)."""
    from tests.tiny import make_tiny_model

    base = make_tiny_model(tmp_path_factory.mktemp("wide") / "wide-llama", demo_model, hidden_size=256,
                           intermediate_size=512, head_dim=64)
    return make_run(base, tmp_path_factory.mktemp("wide-runs") / "wide-run")


def _check(result, suffix: str):
    [check] = [c for c in result.checks if c.check.endswith(suffix)]
    return check


def test_f16_export_is_loaded_by_llama_cpp_and_matches_base_plus_adapter(f16_export):
    out, result = f16_export
    check = _check(result, LLAMA_CHECK)
    assert check.status == "checked" and check.passed, check.problems
    assert check.top1_agreement >= 0.99 and check.positions > 500
    assert check.max_abs_logit_diff <= 0.25
    assert check.mean_abs_logit_diff < 0.05 * check.adapter_effect  # llama.cpp runs the tuned model, not the base
    summary = json.loads((out / "verification.json").read_text())
    assert [c["check"] for c in summary["checks"]] == ["GGUF f16 (read back with mlx.core.load)",
                                                      "GGUF f16 (loaded by llama.cpp)"]
    [greedy] = [n for n in summary["notes"] if n.startswith("llama.cpp's greedy continuation")]
    assert greedy.endswith("the same as base+adapter's for its first 24 of 24 tokens"), greedy
    assert "llama.cpp tokenises the 32 verification chats exactly as the tokenizer does" in summary["notes"]
    # the quality report: llama.cpp's f16 file is the tuned model, on the prompts and on the run's validation set
    assert check.adapter_effect_kept > 0.98 and check.adapter_effect_kept_se < 0.02
    assert check.adapter_top1_changes_kept > 0.95 and check.mean_kl < 0.01 * check.adapter_kl
    assert check.val_tokens > 100 and abs(check.val_loss - check.val_loss_tuned) < 0.01
    assert abs(check.val_loss - check.val_loss_base) > 10 * abs(check.val_loss - check.val_loss_tuned)
    llama = summary["checks"][1]
    assert llama["val_loss"] == check.val_loss and llama["adapter_effect_kept"] == check.adapter_effect_kept
    [line] = [n for n in summary["notes"] if n.startswith("validation loss (")]
    assert f"{check.val_loss:.4f}" in line
    card = (out / "README.md").read_text()
    assert "| check | mean KL | adapter KL | effect kept |" in card and f"{check.adapter_effect_kept:.1%}" in card


@pytest.mark.parametrize("kind, tensor_type", [("q6_k", "Q6_K"), ("q5_k_m", "Q5_K"), ("q4_k_m", "Q4_K")])
def test_k_quants_come_from_llama_cpp_and_keep_the_adapter(wide_run, tmp_path, llama_cpp, kind, tensor_type):
    import gguf

    result = export_run(wide_run, tmp_path / kind, "gguf", quantize=kind)

    [path] = (tmp_path / kind).glob(f"*-{kind}.gguf")
    reader = gguf.GGUFReader(str(path))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == tensor_type or types["blk.0.ffn_down.weight"] == tensor_type, types
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert [c.check for c in result.checks] == [f"GGUF {kind} (loaded by llama.cpp)"]  # mlx cannot read K-quants
    check = result.checks[0]
    assert check.passed and check.status == "checked"
    # the rule that refuses (formats/gguf.py): the adapter's effect kept, two standard errors included
    assert check.adapter_effect_kept - 2 * check.adapter_effect_kept_se >= MIN_EFFECT_KEPT
    assert check.val_loss is not None and check.mean_kl > 0


def test_q4_0_that_keeps_the_adapter_is_written_with_a_warning_not_refused(wide_run, tmp_path, llama_cpp):
    result = export_run(wide_run, tmp_path / "q4", "gguf", quantize=4)  # top-1 ≈ 65 % here (README)

    check = _check(result, LLAMA_CHECK)
    assert result.passed and check.top1_agreement < 0.9
    assert check.adapter_effect_kept - 2 * check.adapter_effect_kept_se >= MIN_EFFECT_KEPT
    [warning] = [n for n in result.notes if n.startswith("warning: the q4_0 file agrees")]
    assert f"{check.top1_agreement:.1%}" in warning


def test_llama_cpp_catches_an_export_that_lost_its_adapter(wide_run, tmp_path, llama_cpp):
    with pytest.raises(ExportVerificationFailed, match=r"loaded by llama.cpp.*the adapter was lost") as failed:
        export_run(wide_run, tmp_path / "lost", "gguf", quantize="q6_k", fuse=strip_adapters)
    assert not (tmp_path / "lost").exists()
    [check] = failed.value.checks
    assert abs(check.adapter_effect_kept) < 0.1 and check.adapter_top1_changes_kept < 0.1


def test_imatrix_from_the_runs_data_reaches_llama_cpps_quantiser(wide_run, tmp_path, llama_cpp):
    plain = export_run(wide_run, tmp_path / "plain", "gguf", quantize="q4_k_m")
    weighted = export_run(wide_run, tmp_path / "imatrix", "gguf", quantize="q4_k_m", imatrix=True)

    [note] = [n for n in weighted.notes if n.startswith("quantised with an importance matrix")]
    assert "of 14 weights from the run's training data" in note  # 7 linears × 2 layers
    [a], [b] = (tmp_path / "plain").glob("*.gguf"), (tmp_path / "imatrix").glob("*.gguf")
    assert a.read_bytes() != b.read_bytes()  # the same types, rounded otherwise
    assert weighted.passed and weighted.checks[0].adapter_effect_kept > 0.5
    with pytest.raises(UserError, match="--imatrix applies to llama.cpp's K-quants"):
        export_run(wide_run, tmp_path / "q8", "gguf", quantize=8, imatrix=True)


def test_a_crash_inside_llama_cpp_is_a_user_error_not_a_dead_process(tmp_path, llama_cpp):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(UserError, match="llama.cpp could not load bad.gguf"):
        llama_cpp_check.llama_cpp_logits(bad, [[1, 2, 3]])


def test_without_llama_cpp_the_export_says_so_and_k_quants_are_refused(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(llama_cpp_check, "available", lambda: False)
    with pytest.raises(UserError, match=r"install the gguf extra"):
        export_run(tiny_run, tmp_path / "k", "gguf", quantize="q4_k_m")
    assert not (tmp_path / "k").exists()

    export_run(tiny_run, tmp_path / "f16", "gguf")
    summary = json.loads((tmp_path / "f16" / "verification.json").read_text())
    [llama] = [c for c in summary["checks"] if c["check"].endswith(LLAMA_CHECK)]
    assert llama["status"] == "not run"
    assert llama["problems"][0].startswith("not checked by llama.cpp: install the gguf extra")


def test_modelfile_beside_the_gguf_has_ollamas_template_system_and_stops(f16_export):
    out, result = f16_export
    text = (out / "Modelfile").read_text()
    [gguf_file] = out.glob("*.gguf")
    assert f"FROM ./{gguf_file.name}\n" in text and "Modelfile" in result.files
    assert 'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>' in text
    assert "<|im_start|>assistant\n\"\"\"" in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER num_ctx 2048" in text


def test_lmstudio_layout_is_written_only_where_asked_and_never_over_another_model(f16_export, tmp_path, monkeypatch):
    out, _ = f16_export
    home = tmp_path / "lmstudio-home"
    models = tmp_path / "elsewhere" / "models"
    home.mkdir()
    (home / "settings.json").write_text(json.dumps({"downloadsFolder": str(models)}))
    monkeypatch.setenv(handoff.LMSTUDIO_HOME_ENV, str(home))

    where = handoff.send_to_lmstudio(out, "me", "pirate model")
    assert where == (models / "me" / "pirate-model").resolve()
    [gguf_file] = out.glob("*.gguf")
    assert (where / gguf_file.name).read_bytes() == gguf_file.read_bytes()
    assert {p.name for p in where.iterdir()} == {gguf_file.name, "verification.json", "README.md"}
    handoff.send_to_lmstudio(out, "me", "pirate model")  # our own earlier hand-off: replaced

    theirs = models / "me" / "theirs"
    theirs.mkdir(parents=True)
    (theirs / "other.gguf").write_bytes(b"someone else's model")
    with pytest.raises(UserError, match="not an earlier export"):
        handoff.send_to_lmstudio(out, "me", "theirs")
    assert (theirs / "other.gguf").read_bytes() == b"someone else's model"


def test_ollama_create_runs_a_stand_in_ollama_with_the_modelfile(f16_export, tmp_path, monkeypatch):
    out, _ = f16_export
    log = tmp_path / "ollama-args.json"
    stand_in = tmp_path / "bin" / "ollama"
    stand_in.parent.mkdir()
    stand_in.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        "text = open(sys.argv[sys.argv.index('-f') + 1]).read()\n"
                        "gguf = text.split('FROM ./')[1].split()[0]\n"
                        f"json.dump({{'argv': sys.argv[1:], 'gguf_exists': os.path.isfile(gguf)}}, open({str(log)!r}, 'w'))\n")
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)

    monkeypatch.setenv("PATH", str(tmp_path / "no-ollama"))
    command, ran = handoff.ollama_create(out, "pirate")
    assert not ran and command == f"cd {out} && ollama create pirate -f Modelfile"

    monkeypatch.setenv("PATH", f"{stand_in.parent}{os.pathsep}{os.environ['PATH']}")
    command, ran = handoff.ollama_create(out, "pirate")
    assert ran and json.loads(log.read_text()) == {"argv": ["create", "pirate", "-f", "Modelfile"], "gguf_exists": True}


def test_cli_hands_off_to_lmstudio_and_refuses_it_for_a_non_gguf_format(f16_export, tiny_run, tmp_path, monkeypatch,
                                                                         capsys):
    from mlx_lora.cli.main import main

    assert main(["export", "--run", str(tiny_run), "--out", str(tmp_path / "peft"), "--format", "peft",
                 "--to", "lmstudio"]) == 2
    assert "--to lmstudio hands on a GGUF file or an MLX folder: add --format gguf (or mlx)" in capsys.readouterr().err
    assert not (tmp_path / "peft").exists()

    monkeypatch.setenv(handoff.LMSTUDIO_HOME_ENV, str(tmp_path / "lms"))
    assert main(["export", "--run", str(tiny_run), "--out", str(tmp_path / "gguf"), "--format", "gguf",
                 "--quantize", "q8_0", "--to", "lmstudio", "--name", "pirate"]) == 0
    [copied] = (tmp_path / "lms" / "models" / "mlx-lora-studio" / "pirate").glob("*-q8_0.gguf")
    assert copied.read_bytes() == next((tmp_path / "gguf").glob("*.gguf")).read_bytes()
    assert f"LM Studio: {copied.parent}" in capsys.readouterr().err
