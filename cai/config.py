"""One dataclass per pipeline stage: every field has help text and is validated on creation.

The CLI builds its flags and the dashboard builds its forms from these classes
(`fields_help`), and a run stores `asdict(config)` so it can be shown, compared and resumed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


PROCESSES_HELP = "Training processes under `accelerate launch` (one per GPU; on CPU, gloo ranks)."
ACCELERATE_HELP = "An accelerate config file (multi-node, DeepSpeed ZeRO-3, FSDP; examples in accelerate/)."


class ConfigError(ValueError):
    """A config value is invalid; the message names the field."""


@dataclass
class StageConfig:
    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name}: {value!r} is not one of {', '.join(map(str, choices))}")
            lo, hi = f.metadata.get("min"), f.metadata.get("max")
            if value is not None and lo is not None and value < lo:
                raise ConfigError(f"{f.name}: must be >= {lo}, got {value}")
            if value is not None and hi is not None and value > hi:
                raise ConfigError(f"{f.name}: must be <= {hi}, got {value}")
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


# ----------------------------------------------------------------------------- SL stage
@dataclass
class SLConfig(StageConfig):
    kind: ClassVar[str] = "sl"
    prompts: str = _f("", "Red-team prompt set (name) to critique and revise.")
    model: str = _f("default", "Policy model: a registered name, 'default', 'tiny', a path or a hub id.")
    constitution: str = _f("", "Constitution name; empty = the most recently changed one.")
    constitution_version: int | None = _f(None, "Constitution version; empty = the newest.", min=1)
    revisions: int = _f(4, "Critique -> revision rounds per prompt (paper: 4).", min=0, max=8)
    direct: bool = _f(False, "Direct revision: skip the critique step (the paper's ablation).")
    few_shot: int = _f(2, "Few-shot critique/revision exemplars prepended to each request.", min=0)
    limit: int | None = _f(None, "Use only the first N prompts.", min=1)
    batch_size: int = _f(8, "Prompts sent to the model at once.", min=1)
    max_new_tokens: int = _f(128, "Token limit for each response, critique and revision.", min=1)
    temperature: float = _f(0.0, "Sampling temperature; 0 = greedy.", min=0.0)
    seed: int = _f(0, "Seed for principle draws and sampling.")
    helpful_prompts: str = _f("", "Helpful prompt set whose responses join the SFT data (optional).")
    helpful_samples: int = _f(2, "Responses per helpful prompt.", min=1)

    def validate(self) -> None:
        if not self.prompts:
            raise ConfigError("prompts: name a red-team prompt set")


@dataclass
class SFTConfig(StageConfig):
    kind: ClassVar[str] = "sft"
    chains: int = _f(0, "The SL run whose final revisions (and helpful samples) to train on.", min=1)
    model: str = _f("", "Model to fine-tune; empty = the policy of the chain run.")
    name: str = _f("", "Name for the new model; empty = sft-<run id>.", slug=True)
    lora: bool = _f(False, "Train LoRA adapters instead of all weights.")
    lora_r: int = _f(16, "LoRA rank.", min=1)
    epochs: float = _f(1.0, "Passes over the data (paper: 1).", min=0.0)
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1 = use epochs).")
    learning_rate: float = _f(2e-5, "Learning rate (constant).", min=0.0)
    batch_size: int = _f(4, "Per-device batch size.", min=1)
    max_length: int = _f(512, "Truncate prompt + completion to this many tokens.", min=8)
    save_steps: int = _f(50, "Checkpoint every N steps (resume continues from the last).", min=1)
    seed: int = _f(0, "Training seed.")
    processes: int = _f(1, PROCESSES_HELP, min=1)
    accelerate_config: str = _f("", ACCELERATE_HELP)


# ----------------------------------------------------------------------------- RL stage
@dataclass
class PairsConfig(StageConfig):
    kind: ClassVar[str] = "pairs"
    prompts: str = _f("", "Red-team prompt set to sample response pairs for.")
    model: str = _f("default", "Policy that samples the two responses (e.g. the SL-CAI model).")
    limit: int | None = _f(None, "Use only the first N prompts.", min=1)
    batch_size: int = _f(8, "Prompts per batch.", min=1)
    temperature: float = _f(1.0, "Sampling temperature for the two responses.", min=0.0)
    max_new_tokens: int = _f(128, "Token limit per response.", min=1)
    seed: int = _f(0, "Sampling seed.")

    def validate(self) -> None:
        if not self.prompts:
            raise ConfigError("prompts: name a red-team prompt set")


@dataclass
class LabelConfig(StageConfig):
    kind: ClassVar[str] = "label"
    pairs: int = _f(0, "The pairs run whose response pairs to label.", min=1)
    feedback_model: str = _f("default", "Feedback model that reads the comparison prompt.")
    constitution: str = _f("", "Constitution name; empty = the most recently changed one.")
    constitution_version: int | None = _f(None, "Constitution version; empty = the newest.", min=1)
    ensemble: int = _f(1, "Comparison principles per pair (their p are averaged).", min=1)
    both_orders: bool = _f(True, "Score (A, B) and (B, A) and average: cancels position bias.")
    few_shot: int = _f(0, "Few-shot comparison exemplars prepended.", min=0)
    cot: bool = _f(False, "Chain of thought: the model reasons first; p is clamped.")
    cot_samples: int = _f(1, "CoT samples per pair, averaged.", min=1)
    cot_temperature: float = _f(
        1.0, "Sampling temperature of CoT reasoning when cot_samples > 1 (one sample: greedy).", min=0.0
    )
    clamp_low: float = _f(0.4, "Lower clamp for CoT labels.", min=0.0, max=1.0)
    clamp_high: float = _f(0.6, "Upper clamp for CoT labels.", min=0.0, max=1.0)
    batch_size: int = _f(8, "Pairs per batch.", min=1)
    max_new_tokens: int = _f(128, "Token limit for CoT reasoning.", min=1)
    seed: int = _f(0, "Seed for principle draws and CoT sampling.")
    name: str = _f("", "Name of the AI preference set written; empty = labels-<run id>.")
    tie_band: float = _f(
        0.01, "Tie band: a p within this of 0.5 counts as a tie, not a preference (and orders agree on it).",
        min=0.0, max=0.49,
    )
    inconsistent: str = _f(
        "average", "Pairs whose two option orders disagree: 'average' keeps the order average, 'tie' sets p = 0.5.",
        choices=("average", "tie"),
    )

    def validate(self) -> None:
        if self.clamp_low > self.clamp_high:
            raise ConfigError("clamp_low must be <= clamp_high")


@dataclass
class PMConfig(StageConfig):
    kind: ClassVar[str] = "pm"
    ai_prefs: str = _f("", "AI-labelled preference set (harmlessness).")
    human_prefs: str = _f("", "Human preference set mixed in (helpfulness); optional.")
    human_ratio: float = _f(0.5, "Fraction of training pairs drawn from the human set.", min=0.0, max=1.0)
    heldout_prefs: str = _f("", "Human preference set for held-out accuracy; empty = a split of human_prefs.")
    model: str = _f("default", "Base model of the preference model.")
    name: str = _f("", "Name for the new preference model; empty = pm-<run id>.", slug=True)
    loss: str = _f("soft", "soft (cross-entropy to p), hard (p rounded) or margin.", choices=("soft", "hard", "margin"))
    lora: bool = _f(False, "Train LoRA adapters (task SEQ_CLS) instead of all weights.")
    epochs: float = _f(1.0, "Passes over the data.", min=0.0)
    max_steps: int = _f(-1, "Stop after this many steps (-1 = use epochs).")
    learning_rate: float = _f(1e-5, "Learning rate.", min=0.0)
    batch_size: int = _f(4, "Per-device batch size.", min=1)
    max_length: int = _f(512, "Truncate each sequence to this many tokens.", min=8)
    seed: int = _f(0, "Seed for mixing, splitting and training.")
    processes: int = _f(1, PROCESSES_HELP, min=1)
    accelerate_config: str = _f("", ACCELERATE_HELP)

    def validate(self) -> None:
        if not self.ai_prefs and not self.human_prefs:
            raise ConfigError("ai_prefs: name an AI-labelled preference set (or human_prefs)")


@dataclass
class RLConfig(StageConfig):
    kind: ClassVar[str] = "rl"
    policy: str = _f("", "Policy to tune (e.g. the SL-CAI model); also the KL reference.")
    reward_model: str = _f("", "Preference model used as the reward.")
    prompts: str = _f("", "Prompt set to sample from.")
    algorithm: str = _f("rloo", "TRL trainer: rloo or grpo (TRL 1.16 has no PPO).", choices=("rloo", "grpo"))
    name: str = _f("", "Name for the new policy; empty = rl-<run id>.", slug=True)
    beta: float = _f(0.05, "KL penalty coefficient to the reference policy.", min=0.0)
    num_generations: int = _f(4, "Completions per prompt (the RLOO/GRPO group).", min=2)
    max_steps: int = _f(100, "Optimizer steps.", min=1)
    batch_size: int = _f(4, "Prompts per device per step (times num_generations completions).", min=1)
    max_new_tokens: int = _f(64, "Completion length.", min=1)
    temperature: float = _f(1.0, "Sampling temperature of the policy's completions.", min=0.0)
    learning_rate: float = _f(1e-6, "Learning rate.", min=0.0)
    lora: bool = _f(False, "Train LoRA adapters.")
    limit: int | None = _f(None, "Use only the first N prompts.", min=1)
    seed: int = _f(0, "Seed.")
    processes: int = _f(1, PROCESSES_HELP, min=1)
    accelerate_config: str = _f("", ACCELERATE_HELP)
    vllm: str = _f(
        "",
        "Generate with vLLM (GPUs): colocate (in each training process), or the URL of a "
        "`trl vllm-serve` server (server mode); empty = transformers.",
    )


@dataclass
class DPOConfig(StageConfig):
    kind: ClassVar[str] = "dpo"
    policy: str = _f("", "Policy to tune; also the reference.")
    prefs: str = _f("", "Preference set (AI labels) to learn from.")
    name: str = _f("", "Name for the new policy; empty = dpo-<run id>.", slug=True)
    soft: str = _f(
        "label_smoothing",
        "How soft labels enter: label_smoothing (TRL's sigmoid loss with label_smoothing = the set's mean 1-p,"
        " i.e. a soft target) or threshold (hard labels; drop pairs with p below the threshold).",
        choices=("label_smoothing", "threshold"),
    )
    threshold: float = _f(0.6, "With soft=threshold: keep pairs whose p >= this.", min=0.5, max=1.0)
    beta: float = _f(0.1, "DPO beta.", min=0.0)
    max_steps: int = _f(100, "Optimizer steps.", min=1)
    batch_size: int = _f(4, "Per-device batch size.", min=1)
    learning_rate: float = _f(5e-7, "Learning rate.", min=0.0)
    max_length: int = _f(512, "Truncate prompt + response to this many tokens.", min=8)
    lora: bool = _f(False, "Train LoRA adapters.")
    seed: int = _f(0, "Seed.")
    processes: int = _f(1, PROCESSES_HELP, min=1)
    accelerate_config: str = _f("", ACCELERATE_HELP)


# ----------------------------------------------------------------------------- evals
@dataclass
class HHHConfig(StageConfig):
    kind: ClassVar[str] = "hhh"
    data: str = _f("", "HHH eval file (JSONL with prompt, corrects, incorrects).")
    model: str = _f("default", "Model evaluated as a feedback model.")
    cot: bool = _f(False, "Chain of thought before the answer.")
    samples: int = _f(1, "CoT samples per comparison, averaged.", min=1)
    cot_temperature: float = _f(
        1.0, "Sampling temperature of CoT reasoning when samples > 1 (one sample: greedy).", min=0.0
    )
    clamp_low: float = _f(0.0, "Lower clamp for CoT readings (0 = none: the paper clamps labels, not this eval).", min=0.0, max=1.0)
    clamp_high: float = _f(1.0, "Upper clamp for CoT readings (1 = none).", min=0.0, max=1.0)
    limit: int | None = _f(None, "Use only the first N comparisons.", min=1)
    batch_size: int = _f(8, "Comparisons per batch.", min=1)
    max_new_tokens: int = _f(128, "Token limit for CoT reasoning.", min=1)
    seed: int = _f(0, "Seed for CoT sampling.")
    tie_band: float = _f(
        0.01, "Tie band: a p within this of 0.5 counts as a tie, not a preference (and orders agree on it).",
        min=0.0, max=0.49,
    )
    inconsistent: str = _f(
        "average", "Pairs whose two option orders disagree: 'average' keeps the order average, 'tie' sets p = 0.5.",
        choices=("average", "tie"),
    )


@dataclass
class AgreementConfig(StageConfig):
    kind: ClassVar[str] = "agreement"
    prefs: str = _f("", "Human preference set to compare with.")
    feedback_model: str = _f("default", "Feedback model that labels the human pairs.")
    constitution: str = _f("", "Constitution name; empty = the most recently changed one.")
    constitution_version: int | None = _f(None, "Constitution version; empty = the newest.", min=1)
    principles: str = _f("", "Comma-separated comparison principle names; empty = all enabled.")
    both_orders: bool = _f(True, "Score both option orders and average.")
    limit: int | None = _f(None, "Use only the first N pairs.", min=1)
    batch_size: int = _f(8, "Pairs per batch.", min=1)
    bins: int = _f(10, "Calibration bins.", min=2)
    seed: int = _f(0, "Seed for principle draws.")
    tie_band: float = _f(
        0.01, "Tie band: a p within this of 0.5 counts as a tie, not a preference (and orders agree on it).",
        min=0.0, max=0.49,
    )
    inconsistent: str = _f(
        "average", "Pairs whose two option orders disagree: 'average' keeps the order average, 'tie' sets p = 0.5.",
        choices=("average", "tie"),
    )


@dataclass
class RevisionScoresConfig(StageConfig):
    kind: ClassVar[str] = "revision-scores"
    run: int = _f(0, "SL run whose chain steps to score.", min=1)
    pm: str = _f("", "Preference model that scores each step.")
    batch_size: int = _f(8, "Steps per batch.", min=1)


# ----------------------------------------------------------------------------- experiments
EXPERIMENT_STAGES = ("sl", "scores", "sft", "label", "agreement")


@dataclass
class ExperimentConfig(StageConfig):
    """Two or more constitution versions through the same stages, on paired prompts and seeds (cai.experiments)."""

    kind: ClassVar[str] = "experiment"
    versions: str = _f("", "Constitution versions to compare, NAME@N separated by spaces or commas; the first is the baseline.")
    prompts: str = _f("", "Red-team prompt set, the same for every version.")
    model: str = _f("default", "Policy model of the SL chains.")
    stages: str = _f("sl", "Comma-separated stages: sl, scores (PM score per revision), sft, label, agreement.")
    seed: int = _f(0, "Seed of every run (principle draws and sampling): the same for every version.")
    limit: int | None = _f(None, "Use only the first N prompts.", min=1)
    revisions: int = _f(4, "Critique -> revision rounds per prompt.", min=0, max=8)
    few_shot: int = _f(2, "Few-shot critique/revision exemplars.", min=0)
    batch_size: int = _f(8, "Prompts (or pairs) sent to a model at once.", min=1)
    max_new_tokens: int = _f(128, "Token limit for each response, critique and revision.", min=1)
    temperature: float = _f(0.0, "Sampling temperature of the chains; 0 = greedy.", min=0.0)
    pm: str = _f("", "Preference model that scores the revisions (stage scores).")
    sft_max_steps: int = _f(-1, "SFT steps per version (-1 = one epoch) (stage sft).")
    sft_lora: bool = _f(False, "SFT with LoRA adapters (stage sft).")
    pairs: int | None = _f(None, "Pairs run whose response pairs each version labels (stage label).", min=1)
    prefs: str = _f("", "Human preference set for label agreement (stage agreement).")
    pair_limit: int | None = _f(None, "Use only the first N human pairs (stage agreement).", min=1)
    feedback_model: str = _f("", "Feedback model of the label and agreement stages; empty = model.")
    n_boot: int = _f(1000, "Bootstrap resamples for each delta's confidence interval.", min=100)
    confidence: float = _f(0.95, "Confidence level of the intervals.", min=0.5, max=0.999)

    def validate(self) -> None:
        from cai.experiments import parse_versions  # the NAME@N grammar lives with the engine

        if len(parse_versions(self.versions)) < 2:
            raise ConfigError("versions: name at least two constitution versions, e.g. default@1 default@2")
        if not self.prompts:
            raise ConfigError("prompts: name a red-team prompt set")
        stages = self.stage_list()
        unknown = [s for s in stages if s not in EXPERIMENT_STAGES]
        if unknown:
            raise ConfigError(f"stages: unknown {', '.join(unknown)} (known: {', '.join(EXPERIMENT_STAGES)})")
        if any(s in stages for s in ("scores", "sft")) and "sl" not in stages:
            raise ConfigError("stages: scores and sft need sl")
        for stage, value, what in (("scores", self.pm, "pm"), ("label", self.pairs, "pairs"),
                                   ("agreement", self.prefs, "prefs")):
            if stage in stages and not value:
                raise ConfigError(f"{what}: stage {stage} needs it")

    def stage_list(self) -> list[str]:
        return [s.strip() for s in self.stages.replace(" ", ",").split(",") if s.strip()]


@dataclass
class DiscoverConfig(StageConfig):
    """Principle discovery from preferences (cai.discover, the Inverse CAI method)."""

    kind: ClassVar[str] = "discover"
    prefs: str = _f("", "Preference set (human or arena votes) whose choices the principles should explain.")
    feedback_model: str = _f("default", "Model that proposes principles and labels the held-out pairs.")
    constitution: str = _f("", "Constitution the draft version extends; empty = the most recently changed one.")
    constitution_version: int | None = _f(None, "Version to extend; empty = the newest.", min=1)
    sample_pairs: int = _f(16, "Pairs (seeded sample) the feedback model proposes a principle for.", min=1)
    candidates: int = _f(5, "Most-supported candidates (after merging near-duplicates) to test.", min=1)
    test_pairs: int = _f(32, "Held-out pairs (disjoint from the sample) each candidate is tested on.", min=1)
    keep: int = _f(3, "Best-agreeing candidates written into the draft constitution version.", min=0)
    merge_threshold: float = _f(0.6, "Word-overlap (Jaccard) at which two proposals are merged.", min=0.0, max=1.0)
    max_new_tokens: int = _f(40, "Token limit of each proposal.", min=1)
    batch_size: int = _f(8, "Pairs per model call.", min=1)
    seed: int = _f(0, "Seed of the sample/held-out split and the labels.")

    def validate(self) -> None:
        if not self.prefs:
            raise ConfigError("prefs: name a preference set")


STAGES: dict[str, type[StageConfig]] = {
    c.kind: c
    for c in (
        SLConfig,
        SFTConfig,
        PairsConfig,
        LabelConfig,
        PMConfig,
        RLConfig,
        DPOConfig,
        HHHConfig,
        AgreementConfig,
        RevisionScoresConfig,
        ExperimentConfig,
        DiscoverConfig,
    )
}
