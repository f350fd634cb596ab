"""The export formats' registry: each module of mlx_lora/export/formats is one whole
format — name, label, description, library, tags, usage, quantisations with their
labels, stages — found without being listed anywhere, and offered by the CLI's
--format and --quantize and written into the model card (the app's combo:
tests/app/test_export_page.py). A format cannot be half-registered."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import mlx_lora  # noqa: F401
from mlx_lora.errors import UserError
from mlx_lora.export import formats
from mlx_lora.export.card import model_card
from mlx_lora.export.formats import DEFAULT_FORMAT, FORMATS, ExportFormat, format_for

HELPER_MODULES = {"base"}  # what a format is; every other module of the package is a format


def export_arguments() -> dict:
    """The CLI's ``mlx-lora export`` arguments by their option string."""
    import argparse

    from mlx_lora.cli.main import build_parser

    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {opt: action for action in sub.choices["export"]._actions for opt in action.option_strings}


def test_every_module_of_the_package_is_a_registered_format():
    modules = {m.name for m in pkgutil.iter_modules(formats.__path__)} - HELPER_MODULES
    for name in modules:
        module = importlib.import_module(f"{formats.__name__}.{name}")
        assert isinstance(getattr(module, "FORMAT", None), ExportFormat), f"{name}.py sets no FORMAT"
    assert {FORMATS[name].__module__.rsplit(".", 1)[-1] for name in FORMATS} == modules
    today = ["mlx", "hf", "gguf", "peft", "adapter"]
    assert [name for name in FORMATS if name in today] == today  # in their order: the CLI's and the app's
    orders = [fmt.order for fmt in FORMATS.values()]
    assert orders == sorted(set(orders)), "each format needs an order of its own"
    assert DEFAULT_FORMAT in FORMATS


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_is_whole_and_offered_by_the_cli_and_the_model_card(name):
    fmt = format_for(name)
    assert fmt.name == name
    for text in (fmt.label, fmt.description, fmt.library):
        assert isinstance(text, str) and text.strip()
    assert name in fmt.tags and isinstance(fmt.fused, bool)
    assert fmt.stages(None) >= 1 and fmt.stages("/a/python/with/torch") >= fmt.stages(None)

    assert None in fmt.quantize  # every format can be exported as trained
    labels = [fmt.quantize_label(bits) for bits in fmt.quantize]
    assert all(label.strip() for label in labels) and len(set(labels)) == len(labels)

    usage = fmt.usage(repo="me/tuned", base="org/base", files=["README.md", "tuned-q8_0.gguf"])
    assert usage.startswith("```") and usage.endswith("```")
    assert "me/tuned" in usage or "tuned-q8_0.gguf" in usage

    arguments = export_arguments()
    assert name in arguments["--format"].choices and fmt.description in arguments["--format"].help
    for bits in filter(None, fmt.quantize):
        assert bits in arguments["--quantize"].choices and fmt.quantize_label(bits) in arguments["--quantize"].help

    card = model_card(fmt=fmt, base_model="org/base", adapter_config={}, run_config={}, run_dir=None, checks=[],
                      files=["README.md"], quantize=None, repo="me/tuned", notes=[])
    assert f"library_name: {fmt.library}" in card and f"This is {fmt.description}, made with" in card
    assert fmt.usage(repo="me/tuned", base="org/base", files=["README.md"]) in card
    assert all(f"- {tag}" in card for tag in ("mlx-lora-studio", *fmt.tags))


def test_an_unknown_format_names_the_choices():
    with pytest.raises(UserError, match="unknown export format 'onnx': choose one of mlx, hf, gguf, gguf-adapter, peft, adapter"):
        format_for("onnx")


def test_quantisation_labels_are_those_the_app_showed():
    assert [FORMATS["mlx"].quantize_label(b) for b in FORMATS["mlx"].quantize] == \
        ["no (as trained)", "4-bit", "8-bit"]
    assert [FORMATS["gguf"].quantize_label(b) for b in FORMATS["gguf"].quantize] == \
        ["no (as trained)", "bf16", "q8_0 (8-bit)", "q6_k", "q5_k_m", "q4_k_m", "q4_0 (4-bit)"]
