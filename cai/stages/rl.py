"""Stage "rl": RLOO/GRPO against the preference model (the trainer: cai.train.rl)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cai.config import (
    MODELS,
    PROMPT_SETS,
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
    prompts: str = _f("", "Prompt set to sample from.", ref=PROMPT_SETS, required='choose a prompt set')
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
    keep_checkpoints: bool = keep_checkpoints_field()
    processes: int = processes_field()
    accelerate_config: str = accelerate_field()
    vllm: str = _f(
        "",
        "Generate with vLLM (GPUs): colocate (in each training process), or the URL of a "
        "`trl vllm-serve` server (server mode); empty = transformers.",
    )


# The trainer stays in cai.train.rl, beside its TRL config.
run = engine_runner("cai.train.rl:run_stage")


STAGE = Stage("rl", RLConfig, "RL (RLOO / GRPO)", "RL against the preference model (RLOO/GRPO)", run)
