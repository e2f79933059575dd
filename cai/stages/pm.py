"""Stage "pm": preference model training on AI (and human) labels (the trainer: cai.train.reward)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cai.backends.builtin import FEEDBACK_DEFAULT
from cai.config import (
    MODELS,
    PREFS,
    ConfigError,
    StageConfig,
    _f,
    accelerate_field,
    keep_checkpoints_field,
    processes_field,
)
from cai.stages.base import Stage, engine_runner


@dataclass
class PMConfig(StageConfig):
    kind: ClassVar[str] = "pm"
    ai_prefs: str = _f("", "AI-labelled preference set (harmlessness).", ref=PREFS)
    human_prefs: str = _f("", "Human preference set mixed in (helpfulness); optional.", ref=PREFS)
    human_ratio: float | None = _f(
        None,
        "Empty = train on every pair of both sets (the paper's choice); a fraction caps the human share of"
        " the mix, subsampling the larger set (its unused pairs are reported).",
        min=0.0,
        max=1.0,
    )
    heldout_prefs: str = _f("", "Human preference set for held-out accuracy; empty = a split of human_prefs.", ref=PREFS)
    model: str = _f(FEEDBACK_DEFAULT, "Base model of the preference model.", ref=MODELS, subject=True)
    name: str = _f("", "Name for the new preference model; empty = pm-<run id>.", slug=True)
    loss: str = _f("soft", "soft (cross-entropy to p), hard (p rounded) or margin.", choices=("soft", "hard", "margin"))
    lora: bool = _f(False, "Train LoRA adapters (task SEQ_CLS) instead of all weights.")
    epochs: float = _f(1.0, "Passes over the data.", min=0.0)
    max_steps: int = _f(-1, "Stop after this many steps (-1 = use epochs).")
    learning_rate: float = _f(1e-5, "Learning rate.", min=0.0)
    batch_size: int = _f(4, "Per-device batch size.", min=1)
    max_length: int = _f(
        512,
        "Tokens per sequence; a longer pair is cut from the left (its first BOS kept), so the end of the"
        " conversation, where the responses differ, is trained; cut pairs are counted in the result.",
        min=8,
    )
    seed: int = _f(0, "Seed for mixing, splitting and training.")
    keep_checkpoints: bool = keep_checkpoints_field()
    processes: int = processes_field()
    accelerate_config: str = accelerate_field()

    def validate(self) -> None:
        if not self.ai_prefs and not self.human_prefs:
            raise ConfigError("ai_prefs: name an AI-labelled preference set (or human_prefs)")


# The trainer stays in cai.train.reward, beside its TRL config.
run = engine_runner("cai.train.reward:run_stage")


STAGE = Stage("pm", PMConfig, "Preference model", "preference model training", run)
