"""What the four trainers (SFT, preference model, RLOO/GRPO, DPO) share: data, arguments, the epilogue.

Each stage is a TRL trainer between two shared pieces: `start` names the model the run makes and links
the run to the model it starts from; `finish` (also `RunContext.finish`) trains, resuming from the
run's last complete checkpoint, saves (rank 0 writes under accelerate) and registers the model with its
lineage. Between them: CPU-safe training arguments and a callback that reports progress (and so
honours cancel) through the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from sqlite_utils import Database
from transformers import TrainerCallback

from cai import models, store
from cai.files import inside, safe_name

if TYPE_CHECKING:
    from cai.runs import RunContext


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


def training_args(ctx: RunContext, **extra: Any) -> dict[str, Any]:
    """The Trainer arguments every trainer takes from its run: checkpoints in the run's folder, the
    config's batch size, rate, steps and seed, CPU-safe precision; `extra` adds or overrides."""
    cfg = ctx.config
    args = {
        "output_dir": str(run_dir(ctx.db, ctx.run_id)),
        "per_device_train_batch_size": cfg.batch_size,  # type: ignore[attr-defined]
        "learning_rate": cfg.learning_rate,  # type: ignore[attr-defined]
        "max_steps": cfg.max_steps,  # type: ignore[attr-defined]
        "seed": cfg.seed,  # type: ignore[attr-defined]
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


def causal_lm(folder: str) -> tuple[Any, Any]:
    """(model, tokenizer) to train: fp32 weights (mixed precision, where used, comes from the arguments)
    and a pad token (EOS when the tokenizer has none, as TRL's trainers would set it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), tokenizer


def trainer_inputs(
    ctx: RunContext, rows: list[dict[str, Any]], tokenizer: Any, task_type: str
) -> dict[str, Any]:
    """The TRL trainer arguments every stage passes alike: its rows as a Dataset, the tokenizer, LoRA
    when the config asks for it, and the callback that reports progress and honours cancel."""
    from datasets import Dataset

    cfg = ctx.config
    return {
        "train_dataset": Dataset.from_list(rows),
        "processing_class": tokenizer,
        "peft_config": lora_config(cfg, task_type) if cfg.lora else None,  # type: ignore[attr-defined]
        "callbacks": [ProgressCallback(ctx)],
    }


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


def last_checkpoint(out_dir: Path) -> str | None:
    """The newest checkpoint that was written to the end, else None.

    A worker killed while saving (SIGKILL to the process group, a lost machine) leaves a checkpoint
    folder without trainer_state.json, which the Trainer writes last and cannot resume without; such a
    folder is passed over for the one before it (save_total_limit keeps two), and is left in place:
    under accelerate every rank looks at once, and a later save of that step completes it."""
    if not out_dir.is_dir():
        return None
    complete = [p for p in out_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    steps = {p: int(p.name.split("-")[1]) for p in complete if p.name.split("-")[1].isdigit()}
    return str(max(steps, key=steps.__getitem__)) if steps else None


def train(trainer: Any) -> None:
    """Train, continuing from the run's last complete checkpoint when a resumed run left one."""
    trainer.train(resume_from_checkpoint=last_checkpoint(Path(trainer.args.output_dir)))


def save_model(trainer: Any, tokenizer: Any, db: Database, name: str) -> str:
    """Save the trained model (LoRA adapters merged) and tokenizer under data_dir/models/<name>.

    Under accelerate rank 0 writes and every rank waits for it, so none goes on (to register, or to
    score with the new model) before the folder is complete."""
    path = _save(trainer, tokenizer, output_dir(db, name))
    trainer.accelerator.wait_for_everyone()
    return path


def _save(trainer: Any, tokenizer: Any, path: Path) -> str:
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


@dataclass
class Target:
    """The model a training run makes: its name, its registry row when a resumed run had already
    registered it (then there is nothing to train), and the registry row of the model it starts from
    (plus `folder`, its local weights)."""

    name: str
    done: dict[str, Any] | None
    parent: dict[str, Any]


def start(ctx: RunContext, model_spec: str, **run_fields: Any) -> Target:
    """The shared prologue: the seed set (before any model is built), the new model's name (default `<kind>-<run id>`; refused if another run
    took it or it is no safe folder name, before any training time is spent), and the run linked to
    the model it starts from (plus `run_fields`, e.g. its constitution version)."""
    from transformers import set_seed

    cfg = ctx.config
    # Seeded before any model is built: a head the checkpoint lacks (the PM's score head) is initialised
    # at random when the model loads, before the Trainer would seed.
    set_seed(cfg.seed)  # type: ignore[attr-defined]
    name = cfg.name or f"{cfg.kind}-{ctx.run_id}"  # type: ignore[attr-defined]
    done = check_name(ctx.db, name, ctx.run_id)
    parent = base_model(ctx.db, model_spec)
    ctx.db.table("runs").update(ctx.run_id, {"model_id": parent["id"], **run_fields})
    return Target(name=name, done=done, parent=parent)


@dataclass
class Trained:
    """What `finish` hands back: the registered model, the steps, and the loss of its last logged step
    (`loss`) and the mean over all logged steps (`mean_loss`, TRL's `train_loss` when every step is logged)."""

    model_id: int
    path: str
    steps: int
    loss: float | None
    mean_loss: float | None = None


def finish(
    ctx: RunContext,
    trainer: Any,
    tokenizer: Any,
    target: Target,
    *,
    constitution_version_id: int | None,
    meta: dict[str, Any],
) -> Trained:
    """The shared epilogue: train (from the last complete checkpoint of a resumed run), save, register
    the model with its lineage (parent, run, constitution version; `meta` plus steps, mean and last loss)
    and log it.

    Under accelerate every rank runs this; rank 0's database is the workbench's, the other ranks'
    registrations go to their private snapshots (see cai.runs), so the model is registered once."""
    train(trainer)
    path = save_model(trainer, tokenizer, ctx.db, target.name)
    steps, loss, mean = trainer.state.global_step, last_loss(trainer), mean_loss(trainer)
    model_id = register(
        ctx.db,
        target.name,
        path,
        parent=target.parent,
        run_id=ctx.run_id,
        constitution_version_id=constitution_version_id,
        meta={**meta, "steps": steps, "train_loss_mean": mean, "train_loss_last": loss},
    )
    ctx.log(f"registered model {target.name} (id {model_id}) at {path}")
    return Trained(model_id=model_id, path=path, steps=steps, loss=loss, mean_loss=mean)


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
    run = (
        db.table("runs").get(rows[0]["run_id"])
        if db["runs"].count_where("id = ?", [rows[0]["run_id"]])
        else None
    )
    return run["constitution_version_id"] if run else None


def update_meta(db: Database, model_id: int, **values: Any) -> None:
    row = models.get_model_by_id(db, model_id)
    db.table("models").update(model_id, {"meta": store.dumps({**row["meta"], **values})})


def last_loss(trainer: Any) -> float | None:
    """The loss of the last logged step (not the run's: see `mean_loss`)."""
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return round(losses[-1], 5) if losses else None


def mean_loss(trainer: Any) -> float | None:
    """The mean loss over every logged step (logging_steps=1, so every step; the checkpoint's log history
    carries the steps before a resume, so a resumed run's mean is the whole run's)."""
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return round(sum(losses) / len(losses), 5) if losses else None
