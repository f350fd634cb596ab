"""Every export names the base the adapter was really trained on: for a base imported from
a GGUF, that file's path and sha256 and "dequantised from Q8_0", with the Hub id (for the
demo) in a field of its own; PEFT's base_model_name_or_path is that file, not the Hub id."""

from __future__ import annotations

import hashlib
import json

import pytest

import mlx_lora  # noqa: F401
from mlx_lora.export import export_run, provenance
from mlx_lora.export.formats.base import DEMO_REPO
from tests.core.test_chat_helpers import make_run


@pytest.fixture(scope="module")
def gguf_base(tiny_model, tmp_path_factory):
    """The tiny model written as a Q8_0 GGUF (our GGUF writer) and imported back: a base
    whose weights were dequantised from a quantised file, like the demo's."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from mlx_lora.export.fused import load_float32
    from mlx_lora.export.gguf_export import write_gguf
    from mlx_lora.models.gguf import import_gguf

    folder = tmp_path_factory.mktemp("gguf-base")
    config = json.loads((tiny_model / "config.json").read_text())
    path = folder / "tiny-q8_0.gguf"
    write_gguf(load_float32(tiny_model), config, load_tokenizer(tiny_model), tiny_model, path, quantize=8,
               eos_ids={2}, name="tiny")
    return path, import_gguf(path, folder / "imported")


def test_the_record_names_the_file_its_hash_and_its_quantisation(gguf_base):
    path, imported = gguf_base
    record = provenance.trained_base(str(imported), imported, None, {"model": {"quantize_bits": 0}})
    assert record["path"] == str(path.resolve()) and record["file"] == "tiny-q8_0.gguf"
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["quantization"].startswith("dequantised from Q8_0 (")
    assert record["load"] == f"AutoModelForCausalLM.from_pretrained({str(path.parent.resolve())!r}, " \
                             "gguf_file='tiny-q8_0.gguf')"
    assert provenance.base_for_peft(record) == str(path.resolve())
    plain = provenance.trained_base("org/model", imported.parent, "org/model")
    assert "file" not in plain and provenance.base_for_peft(plain) == "org/model"


def test_the_demo_is_its_q4_1_file_with_the_hub_id_beside_it(demo_model):
    from mlx_lora.export.formats.base import hub_id
    from mlx_lora.models.demo import demo_gguf_path

    record = provenance.trained_base("demo", demo_model, hub_id("demo"))
    assert record["hub_id"] == DEMO_REPO and record["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert record["path"] == str(demo_gguf_path().resolve())
    assert record["quantization"].startswith("dequantised from Q4_1 (")
    assert len(record["sha256"]) == 64
    card = "\n".join(provenance.describe(record))
    assert DEMO_REPO in card and "not the same weights" in card and record["sha256"] in card


def test_peft_export_records_the_real_base_and_keeps_the_hub_id_apart(gguf_base, tmp_path):
    path, imported = gguf_base
    run = make_run(imported, tmp_path / "run")
    out = tmp_path / "peft"
    result = export_run(run, out, "peft", prompts=("Hello", "Ahoy, matey?"), torch_python=None)
    assert result.passed
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(path.resolve())  # the file trained on, not a Hub id
    assert config["base_model_hub_id"] is None  # a local file: no Hub id claimed
    trained_on = config["base_model_trained_on"]
    assert trained_on["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert trained_on["quantization"].startswith("dequantised from Q8_0")
    assert json.loads((out / "verification.json").read_text())["base_model_trained_on"] == trained_on
    card = (out / "README.md").read_text()
    assert "## Base model" in card and trained_on["sha256"] in card
    assert "gguf_file='tiny-q8_0.gguf'" in card  # the usage snippet rebuilds that base
