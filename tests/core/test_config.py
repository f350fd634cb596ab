"""The training config: validation, YAML round-trip, generated flags and their precedence."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import yaml

from mlx_lora.cli.config_flags import add_config_arguments, config_flags, config_from_args
from mlx_lora.config import FIELD_SECTION, SECTIONS, TrainConfig, field_info, iter_fields
from mlx_lora.config_fields import format_number
from mlx_lora.errors import UserError
from mlx_lora.run_folder import resume_config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    return p


def test_yaml_round_trip_gives_the_same_config(tmp_path):
    config = TrainConfig().replace(model="org/name", data="d.jsonl", rank=16, alpha=32, rslora=True,
                                   targets=("q", "v", "down_proj"), learning_rate=3e-4, lr_schedule="linear",
                                   epochs=2, early_stopping_patience=3, quantize_bits=4, mask_prompt=False)
    path = tmp_path / "config.yaml"
    config.save(path)
    assert TrainConfig.from_yaml(path) == config
    assert yaml.safe_load(path.read_text())["adapter"]["targets"] == ["q", "v", "down_proj"]


def test_flat_mlx_lm_style_yaml_is_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: some/model\ndata: ./data\niters: 7\nbatch_size: 2\nlearning_rate: 1e-5\n"
                    "optimizer: adamw\n")
    config = TrainConfig.from_yaml(path)
    assert (config.model.model, config.data.data, config.schedule.iters) == ("some/model", "./data", 7)
    assert config.optimizer.learning_rate == 1e-5  # PyYAML reads "1e-5" as a string
    assert config.optimizer.optimizer == "adamw"


@pytest.mark.parametrize("settings, named", [
    ({"rank": 0}, "rank"),
    ({"learning_rate": -1}, "learning_rate"),
    ({"dropout": 1.5}, "dropout"),
    ({"lr_schedule": "exponential"}, "lr_schedule"),
    ({"batch_size": "four"}, "batch_size"),
    ({"mask_prompt": "maybe"}, "mask_prompt"),
    ({"num_layers": 0}, "num_layers"),
    ({"weight_decay": 0.1}, "weight_decay"),  # needs adamw
    ({"valid_ratio": 0.5, "test_ratio": 0.5}, "test_ratio"),
    ({"learning_rate": float("nan")}, "learning_rate"),
])
def test_invalid_values_raise_a_user_error_naming_the_setting(settings, named):
    with pytest.raises(UserError, match=rf"^{named} \(\w+\.{named}, --{named.replace('_', '-')}\)"):
        TrainConfig().replace(**settings)


def test_full_fine_tuning_of_a_quantised_base_is_refused():
    with pytest.raises(UserError, match="quantize_bits"):
        TrainConfig().replace(fine_tune_type="full", quantize_bits=4)


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("adapter:\n  rnak: 4\n")
    with pytest.raises(UserError, match="did you mean 'rank'"):
        TrainConfig.from_yaml(path)
    with pytest.raises(UserError, match="did you mean 'learning_rate'"):
        TrainConfig().replace(lerning_rate=1e-4)


def test_every_setting_has_one_unique_name_help_and_a_flag():
    names = [f.name for _, f in iter_fields()]
    assert len(names) == len(set(names)) == len(FIELD_SECTION)
    actions = {a.dest: a for a in parser()._actions}
    for name in names:
        info = field_info(name)
        assert info["help"], name
        flag = "--" + name.replace("_", "-")
        assert name in actions and actions[name].option_strings[0] == flag, name
        if info["type"] == "bool":  # --mask-prompt / --no-mask-prompt
            assert actions[name].option_strings == [flag, "--no-" + flag[2:]]


def test_mlx_lm_flag_names_are_kept():
    options = {o for a in parser()._actions for o in a.option_strings}
    for flag in ("--model", "--data", "--iters", "--batch-size", "--num-layers", "--learning-rate",
                 "--max-seq-length", "--steps-per-eval", "--steps-per-report", "--save-every",
                 "--grad-checkpoint", "--mask-prompt", "--seed", "--config", "--rank", "--alpha",
                 "--dropout", "--targets", "--run-dir", "--resume", "--epochs", "--fine-tune-type",
                 "--optimizer", "--grad-accumulation-steps", "--val-batches"):
        assert flag in options, flag


def test_metadata_carries_what_the_form_needs():
    assert field_info("lr_schedule")["choices"] == ("constant", "linear", "cosine")
    assert field_info("rank")["min"] == 1
    assert field_info("targets")["presets"][0] == "all-linear"
    assert field_info("resume")["hidden"] is True
    for section, cls in SECTIONS.items():
        for field in dataclasses.fields(cls):
            assert all(v is not None for v in field.metadata.values()), field.name


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("schedule:\n  iters: 50\n  warmup_steps: 5\nadapter:\n  rank: 4\n")
    args = parser().parse_args(["--config", str(path), "--iters", "9", "--no-mask-prompt",
                                "--targets", "q_proj,v_proj", "o"])
    config = config_from_args(args)
    assert config.schedule.iters == 9  # flag beats YAML
    assert config.schedule.warmup_steps == 5  # YAML beats default
    assert config.adapter.rank == 4
    assert config.data.mask_prompt is False
    assert config.adapter.targets == ("q_proj", "v_proj", "o")
    assert config.optimizer.learning_rate == TrainConfig().optimizer.learning_rate  # default


def test_config_flags_read_back_as_the_same_config():
    config = TrainConfig().replace(data="-odd name/data", run_dir="", targets=("q_proj", "v_proj"), rslora=True,
                                   mask_prompt=False, learning_rate=1.23456789e-5, alpha=16.0, num_layers=-1,
                                   val_batches=-1, seed=7, hostfile="hosts.json")
    every, changed = config_flags(config), config_flags(config, changed_only=True)
    # the flags read back as the same config, its local paths made absolute (as every run stores them)
    assert config_from_args(parser().parse_args(every)) == config.with_absolute_paths()
    assert config_from_args(parser().parse_args(changed)) == config.with_absolute_paths()
    assert len([f for f in every if f.startswith("--")]) == len(FIELD_SECTION)  # every setting
    assert changed == ["--data=-odd name/data", "--no-mask-prompt", "--num-layers", "-1", "--targets", "q_proj",
                       "v_proj", "--rslora", "--learning-rate", "1.23456789e-05", "--val-batches", "-1",
                       "--seed", "7", "--hostfile", "hosts.json"]
    assert config_flags(TrainConfig(), changed_only=True) == []
    assert (format_number(16.0), format_number(1e-4), format_number(2e-05), format_number(0.1 + 0.2)) == (
        "16", "0.0001", "2e-05", "0.30000000000000004")


def test_resume_takes_the_runs_config_and_refuses_changes_that_break_exactness(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig().replace(data="x.jsonl", rank=4, iters=10).save(run / "config.yaml")
    config = config_from_args(parser().parse_args(["--resume", str(run), "--iters", "20"]))
    assert (config.adapter.rank, config.schedule.iters, config.run.resume) == (4, 20, str(run))
    with pytest.raises(UserError, match="learning_rate: cannot change when resuming"):
        resume_config(run, {"learning_rate": 1.0})
    with pytest.raises(UserError, match="not a run folder"):
        resume_config(tmp_path / "nothing")
