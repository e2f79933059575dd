"""Stage "dpo": DPO on AI preference labels (the trainer: cai.train.dpo)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cai.config import (
    MODELS,
    PREFS,
    StageConfig,
    _f,
    accelerate_field,
    keep_checkpoints_field,
    processes_field,
)
from cai.stages.base import Stage, engine_runner


@dataclass
class DPOStageConfig(StageConfig):
    kind: ClassVar[str] = "dpo"
    policy: str = _f("", "Policy to tune; also the reference.", ref=MODELS, required='name the policy to tune', subject=True)
    prefs: str = _f("", "Preference set (AI labels) to learn from.", ref=PREFS, required='choose an AI preference set (run AI labels first)')
    name: str = _f("", "Name for the new policy; empty = dpo-<run id>.", slug=True)
    soft: str = _f(
        "soft",
        "How AI labels enter: soft (each pair's p is its target: -p log sigma(beta*D) - (1-p) log sigma(-beta*D))"
        " or threshold (hard labels; pairs with p below the threshold, and ties at p = 0.5, left out).",
        choices=("soft", "threshold"),
    )
    threshold: float = _f(0.6, "With soft=threshold: keep pairs whose p >= this (a tie, p = 0.5, never).", min=0.5, max=1.0)
    beta: float = _f(0.1, "DPO beta.", min=0.0)
    max_steps: int = _f(100, "Optimizer steps.", min=1)
    batch_size: int = _f(4, "Per-device batch size.", min=1)
    learning_rate: float = _f(5e-7, "Learning rate.", min=0.0)
    max_length: int = _f(
        512,
        "Tokens of prompt + response; a longer prompt is cut from the left (its first BOS kept), so the end of"
        " the conversation and both responses are trained; cut pairs are counted in the result.",
        min=8,
    )
    lora: bool = _f(False, "Train LoRA adapters.")
    seed: int = _f(0, "Seed.")
    keep_checkpoints: bool = keep_checkpoints_field()
    processes: int = processes_field()
    accelerate_config: str = accelerate_field()


# The trainer stays in cai.train.dpo, beside its TRL config.
run = engine_runner("cai.train.dpo:run_stage")


STAGE = Stage("dpo", DPOStageConfig, "DPO on AI labels", "DPO on AI preference labels", run)
