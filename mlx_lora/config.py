"""The one training configuration: a tree of dataclasses that the YAML file, the
CLI flags and the app's form are all views of.

Each section (``model``, ``data``, ``adapter``, ``preference``, ``grpo``, ``optimizer``,
``schedule``, ``evaluation``, ``run``) is a frozen dataclass whose fields carry their help
text, choices and bounds in ``field.metadata``; ``__post_init__`` checks every
field against that metadata (and coerces YAML's loose scalars, e.g. ``"1e-4"``)
and raises :class:`~mlx_lora.errors.UserError` naming the setting. A setting
has one spelling everywhere: the YAML key, the dataclass field and the flag
minus its dashes (``learning_rate`` ↔ ``--learning-rate``), so field names are
unique across the whole tree. Where mlx-lm's ``mlx_lm.lora`` has the same
concept we use its name (``iters``, ``batch_size``, ``num_layers``,
``steps_per_eval``, ``save_every``, ``grad_checkpoint``, ``mask_prompt``…).

YAML is written nested by section; it is read nested or flat (mlx-lm's style),
because every key names exactly one field. The command-line flags are generated
from the same fields (:mod:`mlx_lora.cli.config_flags`); the app's form too
(``app/widgets/config_form.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

from mlx_lora.chat_templates import CHAT_TEMPLATE_LABELS, CHAT_TEMPLATE_NAMES
from mlx_lora.config_fields import Section, field_type, setting
from mlx_lora.errors import UserError
from mlx_lora.methods import DEFAULT_METHOD, METHODS, method_for

TARGET_PRESETS = ("all-linear", "attention", "mlp", "q", "k", "v", "o")


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    """The base model and how it is held in memory."""

    section_name = "model"
    model: str = setting("demo", "The base model: 'demo' (the embedded SmolLM2-135M-Instruct), a local "
                                 "model folder, a .gguf file or a Hugging Face repo id (org/name).")
    quantize_bits: int = setting(0, "Quantise the base to this many bits when it is loaded (QLoRA); 0 keeps "
                                    "the model as stored (an already-quantised model keeps its quantisation).",
                                 choices=(0, 4, 8), label="quantise base",
                                 choice_labels={0: "off", 4: "4-bit", 8: "8-bit"})
    quantize_group_size: int = setting(64, "Group size of the quantisation (with quantize_bits).",
                                       choices=(32, 64, 128), advanced=True)
    compute_dtype: str = setting("auto", "The dtype of the computation. auto: float32 on CPU (a quantised base "
                                         "is dequantised for the run, because quantised and bfloat16 matmuls on "
                                         "CPU do not use BLAS), the model's own dtype on a GPU.",
                                 choices=("auto", "float32", "bfloat16", "float16"), advanced=True)
    grad_checkpoint: bool = setting(False, "Recompute each layer's activations in the backward pass: less "
                                           "memory, about a third more time.")


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    """The dataset and how its examples become batches."""

    section_name = "data"
    data: str = setting("", "The dataset: a folder with train.jsonl (and optionally valid.jsonl, test.jsonl) "
                            "or a single .jsonl file.")
    valid_ratio: float = setting(0.1, "Share of train.jsonl split off for validation when there is no "
                                      "valid.jsonl.", min=0.0, max=0.5, advanced=True)
    test_ratio: float = setting(0.0, "Share of train.jsonl split off for testing when there is no test.jsonl.",
                                min=0.0, max=0.5, advanced=True)
    batch_size: int = setting(4, "Examples per batch (per micro-batch with grad_accumulation_steps).",
                              min=1, max=1024)
    max_seq_length: int = setting(2048, "Longest example in tokens; longer ones follow too_long.",
                                  min=8, max=1_048_576, label="max sequence length")
    max_batch_tokens: int = setting(4096, "Cap on one forward pass's padded size (examples × its longest "
                                          "example, in tokens): a batch that would pass it runs as several "
                                          "smaller passes whose gradients add up to the same step, so the peak "
                                          "memory follows this cap instead of batch_size × max_seq_length while "
                                          "the training is unchanged. 0: no cap.", min=0, max=1 << 30,
                                    advanced=True)
    too_long: str = setting("truncate", "What to do with an example longer than max_seq_length: truncate its "
                                        "end (the run reports how many) or drop it.",
                            choices=("truncate", "drop"), advanced=True)
    pack: bool = setting(False, "Sequence packing: lay several examples end to end in each row of max_seq_length "
                                "tokens, attention confined to each example, so a batch carries almost no padding. "
                                "batch_size then counts rows, not examples (a step holds as many examples as fill "
                                "them). sft only; bench/RESULTS.md (\"Sequence packing\") has when it pays.",
                         advanced=True)
    chat_template: str = setting("model", "The chat template chat records are rendered with, in training, the "
                                          "data preview and chat: the model's own, or a named family's for a "
                                          "model whose template is missing or wrong (chatml, llama3, gemma, "
                                          "mistral, phi3).", choices=CHAT_TEMPLATE_NAMES,
                                 choice_labels=CHAT_TEMPLATE_LABELS, label="chat template", advanced=True)
    mask_prompt: bool = setting(True, "Take the loss on the assistant's turns only (every one of them, with "
                                      "its end-of-turn token), not on the system and user text.")

    def check(self) -> None:
        if self.valid_ratio + self.test_ratio >= 1:
            self.fail("test_ratio", "valid_ratio + test_ratio must be less than 1")


@dataclasses.dataclass(frozen=True)
class AdapterConfig(Section):
    """What is trained: LoRA, DoRA, AdaLoRA or all weights, and where."""

    section_name = "adapter"
    fine_tune_type: str = setting(DEFAULT_METHOD, "; ".join(f"{m.name}: {m.help}" for m in METHODS.values()) + ".",
                                  choices=tuple(METHODS), label="fine-tune type")
    num_layers: int = setting(16, "How many of the last transformer layers to adapt; -1 for all.", min=-1)
    targets: tuple[str, ...] = setting(("all-linear",), "Which linear layers get adapters: all-linear, "
                                                        "attention (q/k/v/o), mlp, q, k, v, o, or module names "
                                                        "such as self_attn.q_proj or down_proj.",
                                       presets=TARGET_PRESETS)
    rank: int = setting(8, "LoRA rank r: size of the low-rank update.", min=1, max=4096)
    alpha: float = setting(16.0, "LoRA alpha: the update is scaled by alpha/rank (alpha/sqrt(rank) with "
                                 "rslora).", min=0.0, min_exclusive=True, max=100_000.0)
    rslora: bool = setting(False, "Rank-stabilised LoRA: scale by alpha/sqrt(rank), so higher ranks keep "
                                  "learning.", advanced=True)
    dropout: float = setting(0.0, "Dropout on the adapter's input.", min=0.0, max=0.9, advanced=True)
    lora_plus_ratio: float = setting(1.0, "LoRA+: the B matrices learn this many times faster than the A "
                                          "matrices (1 = plain LoRA; the LoRA+ paper suggests 16).",
                                     min=1.0, max=1000.0, advanced=True)
    # AdaLoRA (Zhang et al. 2023; mlx_lora/methods/adalora.py): ``rank`` is each matrix's initial rank.
    adalora_target_rank: int = setting(4, "AdaLoRA: the average rank per adapted matrix after pruning; the "
                                          "total rank budget is this × the number of adapted matrices.",
                                       min=1, max=4096, advanced=True)
    adalora_tinit: int = setting(10, "AdaLoRA: steps trained at the initial rank before pruning starts.",
                                 min=0, advanced=True)
    adalora_tfinal: int = setting(30, "AdaLoRA: the last steps, trained at the final budget with the ranks "
                                      "fixed.", min=0, advanced=True)
    adalora_delta_t: int = setting(5, "AdaLoRA: prune every this many steps while the budget falls.", min=1,
                                   advanced=True)
    adalora_orth_reg: float = setting(0.5, "AdaLoRA: weight of the orthogonality regulariser on A and B.",
                                      min=0.0, max=1000.0, advanced=True)

    def check(self) -> None:
        if self.fine_tune_type in METHODS:  # (not: the choices check names it)
            METHODS[self.fine_tune_type].check_adapter(self)
        if self.num_layers == 0:
            self.fail("num_layers", "must be -1 (all layers) or at least 1")
        if not self.targets:
            self.fail("targets", "name at least one target")


@dataclasses.dataclass(frozen=True)
class PreferenceConfig(Section):
    """What the run optimises: plain supervised fine-tuning, or a preference objective on
    pairs of answers (see mlx_lora.train.preference_loss)."""

    section_name = "preference"
    objective: str = setting("sft", "sft: learn the replies (supervised fine-tuning); dpo: Direct Preference "
                                    "Optimization on prompt/chosen/rejected pairs, against the base with the "
                                    "adapter switched off; orpo: odds-ratio preference optimisation (the chosen "
                                    "answer's loss plus a preference term, no reference); grpo: reinforcement "
                                    "learning on prompt records, sampling a group of answers per prompt and "
                                    "scoring them with reward functions (the grpo settings).",
                             choices=("sft", "dpo", "orpo", "grpo"))
    beta: float = setting(0.1, "DPO's beta: how far the tuned model may move from the reference; lower lets it "
                               "move further (typical 0.05-0.5). Not Adam's beta1/beta2.",
                          min=0.0, min_exclusive=True, max=100.0, advanced=True)
    orpo_lambda: float = setting(0.1, "ORPO's lambda: the weight of the odds-ratio (preference) term next to the "
                                      "chosen answer's loss (the ORPO paper uses 0.1).",
                                 min=0.0, min_exclusive=True, max=100.0, advanced=True)


BUILTIN_REWARDS = ("exact_match", "format", "length")


@dataclasses.dataclass(frozen=True)
class GRPOConfig(Section):
    """Group Relative Policy Optimization (objective grpo; mlx_lora.train.grpo): what is
    sampled per prompt, how the answers are scored, and how far the policy may move."""

    section_name = "grpo"
    group_size: int = setting(4, "GRPO: answers sampled per prompt; each is scored against the others of its "
                                 "group (at least 2).", min=2, max=256, advanced=True)
    grpo_beta: float = setting(0.04, "GRPO: weight of the KL term that holds the policy near the reference (the "
                                     "base with the adapter switched off); 0 drops it.", min=0.0, max=100.0,
                               label="KL beta", advanced=True)
    clip_epsilon: float = setting(0.2, "GRPO: the policy/old probability ratio is clipped to 1 ± this.",
                                  min=0.0, min_exclusive=True, max=10.0, advanced=True)
    policy_updates: int = setting(1, "GRPO: optimiser steps taken on each batch of sampled answers before new "
                                     "ones are sampled (1: always on-policy; more reuses the samples, with the "
                                     "clipped ratio keeping the steps close).", min=1, max=64, advanced=True)
    max_completion_tokens: int = setting(16, "GRPO: the longest answer sampled, in tokens.", min=1, max=65_536, advanced=True)
    temperature: float = setting(0.8, "GRPO: the sampling temperature of the answers (0 would make a group's "
                                      "answers identical, so it must be above 0).", min=0.0, min_exclusive=True,
                                 max=10.0, advanced=True)
    advantage_normalization: str = setting("std", "GRPO: std: the advantage is (reward - group mean) / group std "
                                                  "(the GRPO paper); none: reward - group mean, with the loss "
                                                  "summed over a fixed max_completion_tokens per answer "
                                                  "(Dr. GRPO, no length or difficulty bias).",
                                           choices=("std", "none"), advanced=True)
    rewards: tuple[str, ...] = setting(("exact_match", "format"), "GRPO: the reward functions, added up: "
                                       "exact_match (the answer's final number or word equals the record's "
                                       "'answer'), format (the answer matches reward_pattern), length (minus the "
                                       "answer's share of max_completion_tokens); 'name:weight' scales one "
                                       "(format:0.5). reward_file adds your own.", presets=BUILTIN_REWARDS)
    reward_pattern: str = setting(r"^\s*-?\d+(\.\d+)?\s*$", "GRPO: the regular expression the format reward "
                                                             "checks the whole answer against (1 if it matches, "
                                                             "else 0).", advanced=True)
    reward_file: str = setting("", "GRPO: a Python file of yours with def reward(prompt, completion, **row) -> "
                                   "float, run in a separate process (the one place your code runs); its "
                                   "reward is added to the others as 'user'.")
    reward_timeout: float = setting(5.0, "GRPO: seconds one call of reward_file's function may take before the "
                                         "run stops with a named error.", min=0.0, min_exclusive=True,
                                    max=3600.0, advanced=True)

    def check(self) -> None:
        for entry in self.rewards:
            name, _, weight = entry.partition(":")
            if name not in BUILTIN_REWARDS:
                self.fail("rewards", f"unknown reward {name!r}; the built-in ones are {', '.join(BUILTIN_REWARDS)} "
                                     "(your own goes in reward_file)")
            if weight:
                try:
                    float(weight)
                except ValueError:
                    self.fail("rewards", f"{entry!r}: the weight after ':' must be a number")
        try:
            re.compile(self.reward_pattern)
        except re.error as exc:
            self.fail("reward_pattern", f"not a regular expression: {exc}")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(Section):
    """The optimiser and what it does to each gradient."""

    section_name = "optimizer"
    optimizer: str = setting("adam", "adam, or adamw (Adam with decoupled weight decay).",
                             choices=("adam", "adamw"))
    learning_rate: float = setting(1e-4, "Peak learning rate (after warm-up).", min=0.0, min_exclusive=True,
                                   max=1e6)
    weight_decay: float = setting(0.0, "Decoupled weight decay (adamw only).", min=0.0, max=1.0, advanced=True)
    state_bits: int = setting(32, "Adam's two moments in 32 bits, or in 8 (blockwise, with a scale per 64 "
                                  "values: 0.28x the optimiser's memory; full fine-tuning and large ranks gain "
                                  "most; bench/RESULTS.md has the losses).", choices=(32, 8),
                              label="Optimiser state bits", advanced=True)
    beta1: float = setting(0.9, "Adam's first-moment decay.", min=0.0, max=0.9999, advanced=True)
    beta2: float = setting(0.999, "Adam's second-moment decay.", min=0.0, max=0.99999, advanced=True)
    max_grad_norm: float = setting(1.0, "Clip the gradient's global norm to this; 0 turns clipping off.",
                                   min=0.0, advanced=True)
    grad_accumulation_steps: int = setting(1, "Micro-batches whose gradients are summed into one optimiser "
                                              "step (a larger effective batch in the same memory).",
                                           min=1, max=1024, advanced=True)

    def check(self) -> None:
        if self.weight_decay > 0 and self.optimizer != "adamw":
            self.fail("weight_decay", "weight decay needs --optimizer adamw")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(Section):
    """How long to train and how the learning rate moves."""

    section_name = "schedule"
    iters: int = setting(100, "Optimiser steps to train for (ignored when epochs is set).", min=1,
                         max=10_000_000)
    epochs: int = setting(0, "Passes over the training set; when above 0 it sets the number of steps "
                             "instead of iters.", min=0, max=100_000)
    lr_schedule: str = setting("cosine", "How the learning rate moves after warm-up: constant, linear decay or "
                                         "cosine decay (to learning_rate × min_lr_ratio).",
                               choices=("constant", "linear", "cosine"), label="learning-rate schedule")
    warmup_steps: int = setting(0, "Steps of linear warm-up from 0 to the learning rate.", min=0)
    min_lr_ratio: float = setting(0.0, "The learning rate a decay ends at, as a share of the peak.",
                                  min=0.0, max=1.0, advanced=True)
    # ReLoRA (Lialin et al. 2023; mlx_lora/methods/tensors/relora.py)
    relora_every: int = setting(0, "ReLoRA: every this many steps merge the LoRA adapter into the base "
                                   "weights and restart it (new adapter, optimiser reset, learning rate "
                                   "re-warmed); 0 turns ReLoRA off.", min=0, advanced=True)
    relora_warmup: int = setting(5, "ReLoRA: steps of linear learning-rate warm-up after each merge.", min=0,
                                 advanced=True)

    def check(self) -> None:
        if self.relora_every and self.relora_warmup >= self.relora_every:
            self.fail("relora_warmup", f"must be less than relora_every ({self.relora_every})")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig(Section):
    """Validation loss, the best checkpoint and early stopping."""

    section_name = "evaluation"
    steps_per_eval: int = setting(50, "Compute the validation loss every this many steps (and at the end).",
                                  min=1)
    val_batches: int = setting(25, "Validation batches per evaluation; -1 uses the whole validation set.",
                               min=-1, advanced=True)
    early_stopping_patience: int = setting(0, "Stop when the validation loss has not improved for this many "
                                              "evaluations in a row; 0 never stops early.", min=0)
    early_stopping_min_delta: float = setting(0.0, "How much the validation loss must fall to count as an "
                                                   "improvement.", min=0.0, advanced=True)

    def check(self) -> None:
        if self.val_batches == 0:
            self.fail("val_batches", "must be -1 (all) or at least 1")


@dataclasses.dataclass(frozen=True)
class RunConfig(Section):
    """Where the run is written, how often, and its seed."""

    section_name = "run"
    run_dir: str = setting("", "The run folder; empty: <app runs folder>/<time>-<model>-<dataset>.")
    resume: str = setting("", "A run folder to continue exactly where its last checkpoint left off.", hidden=True)
    seed: int = setting(0, "Seed of the adapter's initialisation, the data order, the split and dropout.",
                        min=0, max=2**31 - 1, advanced=True)
    steps_per_report: int = setting(10, "Report the training loss every this many steps.", min=1, advanced=True)
    save_every: int = setting(50, "Save a checkpoint every this many steps (and at the end).", min=1)
    keep_checkpoints: int = setting(3, "How many of the latest checkpoints to keep; 0 keeps them all. The best "
                                       "one is kept apart in best/.", min=0, advanced=True)
    hostfile: str = setting("", "Train on several machines: an mlx.launch hostfile (JSON) naming them; the "
                                "first host is rank 0 and writes the run. Empty: this machine only.", advanced=True)
    gpus: int = setting(0, "Train on this many GPUs of this machine: one process per GPU (data-parallel, "
                           "gradients averaged, MLX's NCCL backend through mlx.launch), the run the same as on "
                           "one GPU with the same batch_size. 0 or 1: one process.", min=0, max=1024, advanced=True)
    memory_limit_gb: float = setting(0.0, "The most memory the run may hold (GB): a step that needs more is "
                                          "dropped and the run stops with a checkpoint and how far to lower "
                                          "max_batch_tokens. 0: 85% of the device's own figure (Metal's "
                                          "recommended working set, the GPU's memory, or RAM).", min=0,
                                     label="Memory limit (GB)", advanced=True)

    def check(self) -> None:
        if self.gpus > 1 and self.hostfile:
            self.fail("gpus", "use either gpus (the GPUs of this machine) or hostfile (several machines), not both")


SECTIONS: dict[str, type[Section]] = {
    "model": ModelConfig,
    "data": DataConfig,
    "adapter": AdapterConfig,
    "preference": PreferenceConfig,
    "grpo": GRPOConfig,
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
    "evaluation": EvaluationConfig,
    "run": RunConfig,
}

# Settings a resumed run may change: they change how long it runs and how it is
# watched, not what the steps already taken mean.
RESUMABLE_CHANGES = frozenset({
    "iters", "epochs", "steps_per_report", "steps_per_eval", "val_batches", "save_every",
    "keep_checkpoints", "early_stopping_patience", "early_stopping_min_delta", "run_dir", "resume",
    "hostfile", "gpus",  # the global batch is the same on any number of machines or GPUs
    # how the same batch is cut into passes, and the memory guard (the steps mean the same)
    "max_batch_tokens", "memory_limit_gb",
})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``TrainConfig()`` is a valid default run on the demo model
    (once ``data`` is set)."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    adapter: AdapterConfig = dataclasses.field(default_factory=AdapterConfig)
    preference: PreferenceConfig = dataclasses.field(default_factory=PreferenceConfig)
    grpo: GRPOConfig = dataclasses.field(default_factory=GRPOConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        method_for(self.adapter.fine_tune_type).check(self)
        if self.preference.objective == "grpo" and self.adapter.fine_tune_type not in ("lora", "dora"):
            raise UserError("objective (preference.objective, --objective): GRPO's reference model is the base with "
                            "the adapter switched off, so it needs --fine-tune-type lora or dora, not "
                            f"{self.adapter.fine_tune_type}")
        if self.preference.objective == "grpo" and not (self.grpo.rewards or self.grpo.reward_file):
            raise UserError("rewards (grpo.rewards, --rewards): GRPO needs at least one reward: a built-in one "
                            f"({', '.join(BUILTIN_REWARDS)}) or your own in --reward-file")
        if self.data.pack and self.preference.objective != "sft":
            raise UserError(f"pack (data.pack, --pack): sequence packing is for the sft objective; "
                            f"{self.preference.objective} scores whole answers per example, so run it with --no-pack")
        if self.schedule.relora_every and self.preference.objective in ("dpo", "grpo"):
            raise UserError("relora_every (schedule.relora_every, --relora-every): DPO's reference model is the base "
                            "with the adapter switched off, and ReLoRA merges the adapter into the base, which "
                            "would move the reference; use --objective orpo with ReLoRA, or plain LoRA with DPO")

    # -- views -------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested by section, tuples as lists: the YAML form."""
        return {name: {k: list(v) if isinstance(v, tuple) else v
                       for k, v in dataclasses.asdict(getattr(self, name)).items()}
                for name in SECTIONS}

    def flat(self) -> dict[str, Any]:
        return {k: v for section in self.to_dict().values() for k, v in section.items()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        from mlx_lora.atomic import write_text

        write_text(path, self.to_yaml())

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        return cls().replace(**flatten_settings(data, source=source))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_yaml(path), source=str(path))

    def replace(self, **settings: Any) -> "TrainConfig":
        """A copy with settings changed by their (flat) names, validated."""
        unknown = [k for k in settings if k not in FIELD_SECTION]
        if unknown:
            raise UserError(_unknown_message(unknown[0], "setting"))
        sections = {}
        for name, cls in SECTIONS.items():
            changes = {k: v for k, v in settings.items() if FIELD_SECTION[k] == name}
            sections[name] = dataclasses.replace(getattr(self, name), **changes) if changes else getattr(self, name)
        return TrainConfig(**sections)

    def with_absolute_paths(self, base: str | Path | None = None) -> "TrainConfig":
        """A copy whose local paths (``data``, ``hostfile``, ``run_dir``, ``resume``, and ``model`` where it names a file or
        folder that exists, not 'demo' or a Hub id) are absolute, resolved against ``base`` (the
        current folder by default), so the run's config.yaml still works from another folder
        (``mlx-lora eval --run R``, ``--resume R``)."""
        base = Path(base) if base is not None else Path.cwd()

        def absolute(value: str) -> str:
            # abspath, not resolve(): a symlink the user named stays the name they chose
            return os.path.abspath(base / Path(value).expanduser())

        changes: dict[str, Any] = {}
        flat = self.flat()
        for name in ("data", "hostfile", "run_dir", "resume"):
            value = flat[name]
            if value and absolute(value) != value:
                changes[name] = absolute(value)
        model = self.model.model
        if model and model != "demo" and (base / Path(model).expanduser()).exists() and absolute(model) != model:
            changes["model"] = absolute(model)
        return self.replace(**changes) if changes else self

    def differences(self, other: "TrainConfig") -> list[str]:
        mine, theirs = self.flat(), other.flat()
        return [k for k in mine if mine[k] != theirs[k]]


def iter_fields() -> Iterator[tuple[str, dataclasses.Field]]:
    """(section name, field) for every setting, in form order."""
    for name, cls in SECTIONS.items():
        for field in dataclasses.fields(cls):
            yield name, field


FIELD_SECTION: dict[str, str] = {}
for _section, _field in iter_fields():
    if _field.name in FIELD_SECTION or (_field.name in SECTIONS and _field.name != _section):
        raise RuntimeError(f"setting name {_field.name!r} is not unique")  # one spelling per setting
    FIELD_SECTION[_field.name] = _section


def field_info(name: str) -> dict[str, Any]:
    """What the app's form needs for one setting: section, type, default, help, choices, bounds."""
    section = FIELD_SECTION[name]
    field = next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == name)
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    return {"name": name, "section": section, "type": field_type(field).__name__, "default": default,
            "flag": "--" + name.replace("_", "-"), "choices": None, "min": None, "max": None, **field.metadata}


def _unknown_message(key: str, what: str) -> str:
    close = difflib.get_close_matches(key, list(FIELD_SECTION) + list(SECTIONS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {key!r}{hint}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping of settings")
    return data


def flatten_settings(data: dict[str, Any], *, source: str = "config") -> dict[str, Any]:
    """Settings from a nested (by section) or flat mapping, by their flat names.

    ``model``, ``data`` and ``optimizer`` are both a section and a setting: a
    mapping is the section, anything else the setting (so mlx-lm's flat
    ``model: path`` works).
    """
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            for inner, inner_value in value.items():
                if FIELD_SECTION.get(inner) != key:
                    raise UserError(f"{source}: {_unknown_message(inner, f'setting in section {key!r}')}")
                flat[inner] = inner_value
        elif key in FIELD_SECTION:
            flat[key] = value
        else:
            raise UserError(f"{source}: {_unknown_message(key, 'setting')}")
    return flat
