"""An RL run resumed from a checkpoint trains on what an uninterrupted run would have, and keeps one row per step.

TRL's RepeatSampler shuffles with a generator seeded once, so each epoch's order is the next draw from it;
a resumed run built a fresh sampler and drew the first epoch's order again for whatever epoch it resumed in
(prompts trained twice, others skipped). `EpochSampled` gives the sampler a `set_epoch` (which the Trainer
calls at the start of every epoch) that replays the draws up to that epoch, so epoch e has the same order
in any run. The torch RNG (sampling) comes back from the checkpoint through the Trainer. The steps after the
checkpoint are trained again, so `forget_redone_steps` removes what the killed attempt logged for them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlite_utils import Database

_STEP_LINE = re.compile(r"^step (\d+): ")  # the ProgressCallback's per-step log line


def epoch_sampler(sampler: Any) -> Any:
    """The TRL RepeatSampler `sampler`, made to replay its shuffles per epoch (see the module docstring)."""
    import torch

    def set_epoch(epoch: int) -> None:
        if not sampler.shuffle or sampler.seed is None:
            return
        sampler.generator.manual_seed(sampler.seed)
        for _ in range(epoch):  # each earlier epoch drew one permutation
            torch.randperm(sampler.num_samples, generator=sampler.generator)

    sampler.set_epoch = set_epoch
    return sampler


class EpochSampled:
    """A TRL RLOO/GRPO trainer mixin: its train sampler replays each epoch's shuffle (`epoch_sampler`)."""

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        return epoch_sampler(super()._get_train_sampler(*args, **kwargs))  # type: ignore[misc]


def checkpoint_step(checkpoint: str | None) -> int | None:
    return int(Path(checkpoint).name.split("-")[1]) if checkpoint else None


def forget_redone_steps(db: Database, run_id: int, step: int) -> tuple[int, int]:
    """Delete the Goodhart rows and per-step log lines of the steps after checkpoint `step`, which the
    resumed run trains again (a Goodhart row's step is the global step its samples were drawn at, so
    the row of the first redone step is `step`). Returns (rows, lines) deleted."""
    with db.atomic():
        rows = db.execute("delete from goodhart where run_id = ? and step >= ?", [run_id, step]).rowcount
        lines = [r["id"] for r in db["run_logs"].rows_where("run_id = ? and line like 'step %'", [run_id],
                                                              select="id, line")
                 if (m := _STEP_LINE.match(r["line"])) and int(m.group(1)) > step]
        if lines:
            db.execute(f"delete from run_logs where id in ({', '.join('?' for _ in lines)})", lines)
    return rows, len(lines)
