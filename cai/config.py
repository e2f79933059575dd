"""The base of every stage's config (the classes live in cai/stages/<kind>.py): help text on every field,
validated on creation, coerced from form and CLI strings.

The CLI builds its flags and the dashboard builds its forms from these classes (`fields_help`), and a run
stores `asdict(config)` so it can be shown, compared and resumed. Field metadata says what a field names
in the store (`ref`: a table of named things, or "runs:<kind>"), whether a stage cannot start without it
(`required`: the one line that says how to get one) and which model a run is about (`subject`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


# What a form or command calls a constitution, a model, ... (field metadata `ref`): a table of named things,
# or "runs:<kind>" (a run id of that kind).
PROMPT_SETS, MODELS, CONSTITUTIONS, PREFS = "prompt_sets", "models", "constitutions", "prefs"


# Fields that mean the same in several stages, made once (each call makes a new dataclass field).
def processes_field() -> Any:
    return _f(1, "Training processes under `accelerate launch` (one per GPU; on CPU, gloo ranks).", min=1)


def keep_checkpoints_field() -> Any:
    return _f(False, "Keep the run's checkpoints (weights + optimizer) once its model is registered.")


def accelerate_field() -> Any:
    return _f("", "An accelerate config file (multi-node, DeepSpeed ZeRO-3, FSDP; examples in accelerate/).")


def constitution_field(help: str = "Constitution name; empty = the most recently changed one.") -> Any:
    return _f("", help, ref=CONSTITUTIONS)


def constitution_version_field(help: str = "Constitution version; empty = the newest.") -> Any:
    return _f(None, help, min=1)


def tie_band_field() -> Any:
    return _f(0.01, "Tie band: a p within this of 0.5 counts as a tie, not a preference (and orders agree on it).",
              min=0.0, max=0.49)


def inconsistent_field() -> Any:
    return _f("average",
              "Pairs whose two option orders disagree: 'average' keeps the order average, 'tie' sets p = 0.5.",
              choices=("average", "tie"))


class ConfigError(ValueError):
    """A config value is invalid; the message names the field."""


# Upper bounds of numeric fields by name (the same name means the same thing in every stage, and in a
# campaign): the one place that says how large a value a form or command may ask for. A field's own `max`
# metadata wins; a field with neither is held to what SQLite stores (a signed 64-bit integer). Floats must
# also be finite. Checked when a config or campaign is made, so nothing is created that fails later.
INT64 = 2**63 - 1
UPPER: dict[str, float] = {
    "batch_size": 4096, "beta": 100.0, "bins": 1000, "candidates": 1000, "constitution_version": 1_000_000,
    "cot_samples": 64,
    "cot_temperature": 10.0, "ensemble": 1000, "epochs": 1000.0, "few_shot": 64, "helpful_samples": 100,
    "keep": 10_000, "learning_rate": 1.0, "limit": 10_000_000, "lora_r": 1024, "max_length": 1_048_576,
    "max_new_tokens": 65_536, "max_steps": 10_000_000, "max_turns": 100, "n_boot": 100_000,
    "num_generations": 256, "num_principles": 10_000, "offset": 10_000_000, "pair_limit": 10_000_000, "processes": 1024, "sample_pairs": 100_000, "samples": 1000,
    "save_steps": 10_000_000, "seed": 2**32 - 1, "sft_max_steps": 10_000_000, "temperature": 10.0,
    "test_pairs": 100_000, "vote_cap": 1_000_000, "max_message_chars": 100_000,
}


def check_number(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> None:
    """ConfigError unless `value` is a finite number in [lo, hi] (hi defaults to UPPER[name], then INT64)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: {value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number, got {value}")
    hi = hi if hi is not None else UPPER.get(name, INT64)
    if lo is not None and value < lo:
        raise ConfigError(f"{name}: must be >= {lo}, got {value}")
    if value > hi or value < -INT64:
        raise ConfigError(f"{name}: must be <= {hi}, got {value}")


@dataclass
class StageConfig:
    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name}: {value!r} is not one of {', '.join(map(str, choices))}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                check_number(f.name, value, f.metadata.get("min"), f.metadata.get("max"))
            if f.metadata.get("slug") and value:
                from cai.files import safe_name

                try:
                    safe_name(f.name, value)
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
        accelerate_config = getattr(self, "accelerate_config", "")
        if accelerate_config and not Path(accelerate_config).expanduser().is_file():
            raise ConfigError(f"accelerate_config: no such file: {accelerate_config}")
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; override in stages that need them."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown field(s) for {cls.kind}: {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce(k, v, hints[k]) for k, v in data.items()})


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Form and CLI values arrive as strings or floats: coerce to the field's type, clearly."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if isinstance(hint, types.UnionType) else hint
    if value is None or (optional and value == ""):
        if not optional and value is None:
            raise ConfigError(f"{name}: a value is required")
        return None
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a valid {base.__name__}") from None
    return value


def fields_help(cls: type[StageConfig]) -> list[dict[str, Any]]:
    """Name, readable label, type, default, help and constraints of each field: what a form or a parser needs."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        label = FIELD_LABELS.get(f.name, f.name.replace("_", " ").capitalize())
        out.append({"name": f.name, "label": label, "type": hints[f.name], "default": default, **f.metadata})
    return out


# What a form shows for each field name (the same name means the same thing in every stage).
FIELD_LABELS: dict[str, str] = {
    "ai_prefs": "AI preference set", "algorithm": "RL algorithm", "batch_size": "Batch size",
    "beta": "KL / DPO beta", "bins": "Calibration bins", "both_orders": "Score both option orders",
    "chains": "SL run to train on", "clamp_high": "Clamp high", "clamp_low": "Clamp low",
    "constitution": "Constitution", "constitution_version": "Constitution version", "cot": "Chain of thought",
    "cot_samples": "Chain-of-thought samples", "cot_temperature": "Chain-of-thought temperature",
    "data": "HHH eval file", "direct": "Direct revision (no critique)", "ensemble": "Principles per pair",
    "epochs": "Epochs", "feedback_model": "Feedback model", "few_shot": "Few-shot exemplars",
    "heldout_prefs": "Held-out preference set", "helpful_prompts": "Helpful prompt set",
    "helpful_samples": "Samples per helpful prompt", "human_prefs": "Human preference set",
    "human_ratio": "Share of human pairs", "learning_rate": "Learning rate", "limit": "Only the first N",
    "lora": "LoRA adapters", "lora_r": "LoRA rank", "loss": "Loss", "max_length": "Max sequence length (tokens)",
    "max_new_tokens": "Max new tokens per generation", "max_steps": "Max optimizer steps", "model": "Model",
    "name": "Name of the result", "num_generations": "Completions per prompt", "pairs": "Response pairs run",
    "pm": "Preference model", "policy": "Policy model", "prefs": "Preference set",
    "principles": "Comparison principles", "prompts": "Red-team prompt set", "revisions": "Revision rounds",
    "reward_model": "Reward (preference) model", "run": "SL run", "samples": "Samples per comparison",
    "save_steps": "Checkpoint every N steps", "seed": "Seed", "soft": "How soft labels enter",
    "threshold": "Keep pairs with p at least", "temperature": "Temperature",
}


def refs(cls: type[StageConfig] | StageConfig) -> dict[str, str]:
    """Field name -> what its value names in the store (from the fields' `ref` metadata)."""
    return {f.name: f.metadata["ref"] for f in dataclasses.fields(cls) if f.metadata.get("ref")}


def required(cls: type[StageConfig] | StageConfig) -> dict[str, str]:
    """Field name -> the one line that says how to get a value, for fields a stage cannot start without."""
    return {f.name: f.metadata["required"] for f in dataclasses.fields(cls) if f.metadata.get("required")}


def subject_model(config: StageConfig) -> str:
    """The model a run is about (its row's model_id): the first non-empty field marked `subject`."""
    return next((getattr(config, f.name) for f in dataclasses.fields(config)
                 if f.metadata.get("subject") and getattr(config, f.name)), "")


class FromConfig:
    """A mixin for an engine's options dataclass: `from_config(config, **overrides)` takes the values of the
    stage config's fields that the options also have (same name, same meaning), then `overrides`."""

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> Self:
        return cls(**{**options_of(cls, config), **overrides})


def options_of(cls: type, config: Any) -> dict[str, Any]:
    """The values of `config`'s fields that an engine's options dataclass `cls` also has (same name, same
    meaning): how an engine takes a stage config without copying it field by field."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if hasattr(config, f.name)}
