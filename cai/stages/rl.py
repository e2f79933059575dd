"""Stage "rl": RLOO/GRPO against the preference model (the trainer: cai.train.rl)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cai.config import (
    MODELS,
    PROMPT_SETS,
    ConfigError,
    StageConfig,
    _f,
    accelerate_field,
    keep_checkpoints_field,
    processes_field,
)
from cai.stages.base import Stage, engine_runner


@dataclass
class RLConfig(StageConfig):
    kind: ClassVar[str] = "rl"
    policy: str = _f("", "Policy to tune (e.g. the SL-CAI model); also the KL reference.", ref=MODELS, required='name the policy to tune', subject=True)
    reward_model: str = _f("", "Preference model used as the reward.", ref=MODELS, required='name a preference model (train one first)')
    prompts: str = _f("", "Red-team prompt set to sample from.", ref=PROMPT_SETS, required='choose a prompt set')
    helpful_prompts: str = _f(
        "", "Helpful prompt set mixed in (optional; the paper's RL uses red-team and helpfulness prompts).", ref=PROMPT_SETS
    )
    helpful_share: float = _f(0.5, "Share of the training prompts taken from helpful_prompts (as many prompts as the sets allow at that share).",
                              min=0.0, max=1.0)
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
    limit: int | None = _f(None, "Use only the first N prompts of each set.", min=1)
    save_steps: int = _f(50, "Checkpoint every N steps (a resumed run continues from the last, in the same prompt order).", min=1)
    seed: int = _f(0, "Seed.")
    keep_checkpoints: bool = keep_checkpoints_field()
    processes: int = processes_field()
    accelerate_config: str = accelerate_field()
    vllm: str = _f(
        "",
        "Generate with vLLM (GPUs): colocate (in each training process), or the URL of a "
        "`trl vllm-serve` server (server mode); empty = transformers.",
    )

    def validate(self) -> None:
        if self.helpful_prompts and self.helpful_prompts == self.prompts:
            raise ConfigError("helpful_prompts: must be a different prompt set from prompts")


# The trainer stays in cai.train.rl, beside its TRL config.
run = engine_runner("cai.train.rl:run_stage")


STAGE = Stage("rl", RLConfig, "RL (RLOO / GRPO)", "RL against the preference model (RLOO/GRPO)", run)
