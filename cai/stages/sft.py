"""Stage "sft": supervised fine-tuning on an SL run's final revisions (the trainer: cai.train.sft)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cai.config import MODELS, StageConfig, _f, accelerate_field, keep_checkpoints_field, processes_field
from cai.stages.base import Stage, engine_runner


@dataclass
class SFTStageConfig(StageConfig):
    kind: ClassVar[str] = "sft"
    chains: int = _f(0, "The SL run whose final revisions (and helpful samples) to train on.", min=1, ref="runs:sl", required='choose the SL run to train on (launch an SL chains run first)')
    model: str = _f(
        "",
        "Model to fine-tune; empty = the policy of the chain run. The paper's choice: a pretrained (base) model "
        "fine-tuned on the revisions; name it here.",
        ref=MODELS,
        subject=True,
    )
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
    keep_checkpoints: bool = keep_checkpoints_field()
    processes: int = processes_field()
    accelerate_config: str = accelerate_field()


# The trainer stays in cai.train.sft, beside its TRL config.
run = engine_runner("cai.train.sft:run_stage")


STAGE = Stage("sft", SFTStageConfig, "SFT (train the SL-CAI model)", "supervised fine-tuning on the final revisions of an SL run", run)
