"""What the RL-stage trainers (preference model, RLOO/GRPO, DPO) share: data, arguments, saving, lineage.

Each stage is a TRL trainer plus these helpers: pairs read from a preference set, CPU-safe training
arguments, a callback that reports progress (and so honours cancel) through the run, resume from the
run's last checkpoint, and a saved, registered model whose row names its parent, run and constitution.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from sqlite_utils import Database
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from cai import models, store
from cai.files import inside, safe_name


def load_pairs(db: Database, name: str) -> list[dict[str, Any]]:
    """The pairs of a preference set (prompt, chosen, rejected, p), each tagged with the set's source."""
    from cai import data

    source = data.get_pref_set(db, name)["source"]
    out = [
        {
            "prompt": r["prompt"],
            "chosen": r["chosen"],
            "rejected": r["rejected"],
            "p": float(r["p"]),
            "_source": source,
        }
        for r in data.list_pairs(db, name)
    ]
    if not out:
        raise ValueError(f"preference set {name!r} has no pairs")
    return out


def base_model(db: Database, spec: str) -> dict[str, Any]:
    """The registry row of the model to start from, plus `folder`: its local weights for TRL."""
    from cai.backends import model_path

    row = models.ensure_model(db, spec)
    return {**row, "folder": model_path(spec, db)}


def run_dir(db: Database, run_id: int) -> Path:
    path = store.data_dir(db) / "runs" / str(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def device_args() -> dict[str, Any]:
    """bf16 on a GPU that has it; fp32 and `use_cpu` elsewhere (TRL configs default to bf16 and fail on CPU)."""
    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported(), "use_cpu": False}
    return {"bf16": False, "fp16": False, "use_cpu": True}


def training_args(cfg: Any, **extra: Any) -> dict[str, Any]:
    """The Trainer arguments every RL-stage trainer takes from its config."""
    args = {
        "per_device_train_batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "max_steps": cfg.max_steps,
        "seed": cfg.seed,
        "logging_steps": 1,
        "save_steps": getattr(cfg, "save_steps", 50),
        "save_total_limit": 2,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "lr_scheduler_type": "constant",
        "disable_tqdm": True,
        **device_args(),
    }
    if hasattr(cfg, "epochs"):
        args["num_train_epochs"] = cfg.epochs
    args.update(extra)
    return args


def lora_config(cfg: Any, task_type: str) -> Any:
    from peft import LoraConfig

    r = getattr(cfg, "lora_r", 16)
    return LoraConfig(
        task_type=task_type, r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear"
    )


class ProgressCallback(TrainerCallback):
    """Steps as run progress (which also raises RunCancelled on a cancel request); logs as log lines."""

    def __init__(self, ctx: Any, on_log: Any = None) -> None:
        self.ctx = ctx
        self.on_log_hook = on_log

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        from cai.runs import RunCancelled

        try:
            self.ctx.progress(state.global_step, state.max_steps)
            cancelled = False
        except RunCancelled:
            cancelled = True
        # Under accelerate only rank 0 sees the real cancel flag: every rank must stop at the same step.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([int(cancelled)])
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            cancelled = bool(flag.item())
        if cancelled:
            raise RunCancelled(f"run {self.ctx.run_id} cancelled")

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        if logs:
            short = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in logs.items()}
            self.ctx.log(f"step {state.global_step}: {json.dumps(short)}")


def train(trainer: Any, out_dir: Path) -> None:
    """Train, continuing from the run's last checkpoint when a resumed run left one."""
    last = get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None
    trainer.train(resume_from_checkpoint=last)


def save_model(trainer: Any, tokenizer: Any, db: Database, name: str) -> str:
    """Save the trained model (LoRA adapters merged) and tokenizer under data_dir/models/<name>."""
    path = output_dir(db, name)
    model = trainer.model
    if getattr(trainer.args, "world_size", 1) > 1 and not hasattr(model, "merge_and_unload"):
        # Several processes: the trainer gathers sharded weights (ZeRO-3, FSDP) and rank 0 alone writes.
        trainer.save_model(str(path))
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(path))
        return str(path)
    if not trainer.is_world_process_zero():
        return str(path)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return str(path)


def output_dir(db: Database, name: str) -> Path:
    """data_dir/models/<name>, for a safe name only, and checked to resolve inside the models folder."""
    return inside(store.data_dir(db) / "models", safe_name("model name", name))


def check_name(db: Database, name: str, run_id: int) -> dict[str, Any] | None:
    """The model this run already registered under `name` (a resumed run), else None; error if taken.

    Also refuses a name that is not safe as a folder name, before any training time is spent."""
    output_dir(db, name)
    row = models.get_model(db, name)
    if row is None:
        return None
    if row["run_id"] != run_id:
        raise ValueError(
            f"a model named {name!r} already exists (from run {row['run_id']}); choose another name"
        )
    return row


def register(
    db: Database,
    name: str,
    path: str,
    *,
    parent: dict[str, Any],
    run_id: int,
    constitution_version_id: int | None,
    meta: dict[str, Any],
) -> int:
    """Register the new model with its lineage (parent model, run, constitution version)."""
    return models.register_model(
        db,
        name,
        path,
        chat=bool(parent.get("chat")),
        parent_id=parent["id"],
        run_id=run_id,
        constitution_version_id=constitution_version_id,
        meta=meta,
    )


def constitution_of(db: Database, pref_set: str) -> int | None:
    """The constitution version behind an AI preference set (through the run that labelled it)."""
    if not pref_set:
        return None
    rows = list(db["pref_sets"].rows_where("name = ?", [pref_set], limit=1))
    if not rows or not rows[0]["run_id"]:
        return None
    run = db["runs"].get(rows[0]["run_id"]) if db["runs"].count_where("id = ?", [rows[0]["run_id"]]) else None
    return run["constitution_version_id"] if run else None


def update_meta(db: Database, model_id: int, **values: Any) -> None:
    row = models.get_model_by_id(db, model_id)
    db["models"].update(model_id, {"meta": store.dumps({**row["meta"], **values})})


def last_loss(trainer: Any) -> float | None:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return round(losses[-1], 5) if losses else None
