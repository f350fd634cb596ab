"""The method registry (mlx_lora.methods): every fine_tune_type is one module, found by
looking, and the config, the memory estimate, the PEFT export and training all read it."""

from __future__ import annotations

import dataclasses

import pytest
from mlx.utils import tree_flatten

from mlx_lora.config import AdapterConfig, TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.methods import METHODS, Method, method_for, saved_types
from mlx_lora.train.memory import read_model_shape
from mlx_lora.train.prepare import prepare_model


def test_the_registry_finds_every_method_module_and_the_config_offers_them():
    assert list(METHODS)[:1] == ["lora"] and {"dora", "adalora", "full"} <= set(METHODS)  # (and any new one)
    field = next(f for f in dataclasses.fields(AdapterConfig) if f.name == "fine_tune_type")
    assert field.metadata["choices"] == tuple(METHODS)
    for method in METHODS.values():
        assert isinstance(method, Method) and method.label and method.help
        assert f"{method.name}: {method.help}" in field.metadata["help"]
    assert {"lora", "dora", "full"} <= set(saved_types()) and "adalora" not in saved_types()  # saved as LoRA


def test_an_unknown_method_is_a_named_error():
    with pytest.raises(UserError, match=rf"fine_tune_type .*'vera'.*{', '.join(METHODS)}"):
        method_for("vera")
    with pytest.raises(UserError, match="fine_tune_type"):
        TrainConfig().replace(fine_tune_type="vera")


def test_a_method_without_an_adapter_refuses_what_needs_one():
    with pytest.raises(UserError, match="quantize_bits.*full fine-tuning trains every weight"):
        TrainConfig().replace(fine_tune_type="full", quantize_bits=4)
    with pytest.raises(UserError, match="objective.*has no adapter"):
        TrainConfig().replace(fine_tune_type="full", objective="dpo")
    with pytest.raises(UserError, match="not an adapter"):
        method_for("full").peft_config()
    assert method_for("dora").peft_config() == {"use_dora": True}


@pytest.mark.parametrize("name", ["lora", "dora", "adalora"])
def test_the_memory_estimate_counts_what_the_method_trains(tiny_model, name):
    """Method.adapter_values (the estimate's term) against the weights apply() really made."""
    config = TrainConfig().replace(model=str(tiny_model), fine_tune_type=name, rank=4, adalora_target_rank=2,
                                   num_layers=-1, targets=("attention",), iters=100)
    prepared = prepare_model(config)
    shape = read_model_shape(str(tiny_model))
    targeted = {k: v for k, v in shape.linear_shapes().items() if k.startswith("self_attn.")}
    method = METHODS[name]
    trained = sum(v.size for _, v in tree_flatten(prepared.model.trainable_parameters()))
    assert trained == shape.num_layers * method.adapter_values(config.adapter, targeted)
    assert method.trainable_bytes(config.adapter, targeted, shape.num_layers, 0, 2) == trained * 4


def test_each_method_adds_its_own_hooks(tiny_model):
    def hook_names(**settings):
        config = TrainConfig().replace(model=str(tiny_model), rank=4, adalora_target_rank=2, iters=100, **settings)
        prepared = prepare_model(config)
        return [type(h).__name__ for h in method_for(config.adapter.fine_tune_type).hooks(
            config, prepared.model, None, 100, lambda event: None)]

    assert hook_names() == []
    assert hook_names(fine_tune_type="adalora") == ["AdaLoRAHook"]
    assert hook_names(relora_every=10) == ["ReLoRAHook"]
    assert hook_names(fine_tune_type="dora") == []
