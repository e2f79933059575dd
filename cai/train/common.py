"""What the four trainers (SFT, preference model, RLOO/GRPO, DPO) share: data, arguments, the epilogue.

Each stage is a TRL trainer between two shared pieces: `start` names the model the run makes and links
the run to the model it starts from; `finish` (also `RunContext.finish`) trains, resuming from the
run's last complete checkpoint, saves (rank 0 writes under accelerate) and registers the model with its
lineage. Between them: CPU-safe training arguments and a callback that reports progress (and so
honours cancel) through the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from sqlite_utils import Database
from transformers import TrainerCallback

from cai import models, store
from cai.files import inside, safe_name
from cai.store import folders

if TYPE_CHECKING:
    from cai.run_context import RunContext

RUN_STAMP = "run.json"  # beside a run's checkpoints: who wrote them (`owner`)
MODEL_STAMP = "workbench.json"  # in a model folder: the database and run that saved it
FINAL_STATE = "final_state.json"  # the trainer state at the end of training, kept after checkpoints go


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
    """The run's own folder (checkpoints, worker log), keyed by the database (cai.store.folders)."""
    path = folders.run_folder(db, run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def owner(db: Database, run_id: int) -> dict[str, Any]:
    """What a run's checkpoints and model folder are stamped with: the database's uuid, the run, and a
    hash of the run's config as stored when it was created."""
    raw = db.execute("select config from runs where id = ?", [run_id]).fetchone()
    config = store.dumps(store.loads(raw[0] if raw else None, {}))
    return {
        "database": folders.identity(db)["uuid"],
        "run_id": run_id,
        "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
    }


def claim_run_dir(db: Database, run_id: int) -> Path:
    """The run's folder, stamped `run.json` with `owner`; refuses checkpoints another database or
    another run config wrote there (a resume would otherwise continue someone else's training)."""
    path = run_dir(db, run_id)
    mine, stamp = owner(db, run_id), path / RUN_STAMP
    ckpts = sorted(p.name for p in path.glob("checkpoint-*"))
    if stamp.is_file():
        try:
            theirs = json.loads(stamp.read_text())
        except (OSError, ValueError):
            theirs = {}
        if theirs != mine and ckpts:
            what = (
                "another database" if theirs.get("database") != mine["database"]
                else f"run {theirs.get('run_id')}" if theirs.get("run_id") != run_id
                else "another config of this run"
            )
            raise ValueError(
                f"{path}: its checkpoints ({', '.join(ckpts)}) were written by {what}, not by run {run_id} "
                f"of this database; refusing to resume from them (move the folder away to train afresh)"
            )
    elif ckpts and run_id > int(folders.identity(db)["legacy_runs_upto"]):
        raise ValueError(
            f"{path}: holds checkpoints ({', '.join(ckpts)}) with no {RUN_STAMP} saying who wrote them; "
            "refusing to resume from them (move the folder away to train afresh)"
        )
    write_atomic(stamp, mine)
    return path


def write_atomic(path: Path, value: Any) -> None:
    """JSON to `path` through a rename, so a reader (another rank, a later resume) never sees it half
    written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(value, sort_keys=True))
    os.replace(tmp, path)


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

    from cai import loadclock

    with loadclock.timed():
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
        from cai.run_context import RunCancelled

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


def unreadable(ckpt: Path) -> str | None:
    """Why a checkpoint folder does not read back whole (None when it does): trainer_state.json (written
    last) must parse, safetensors files must hold every byte their header names, and torch's .pt/.pth/.bin
    files (zip archives) must have their directory, which is written at their very end."""
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        int(state["global_step"])
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError, KeyError, TypeError):
        return "trainer_state.json is cut short or unreadable"
    for f in sorted(ckpt.iterdir()):
        if f.suffix == ".safetensors" and not _whole_safetensors(f):
            return f"{f.name} is cut short"
        if f.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(f):
            return f"{f.name} is cut short"
    return None


def _whole_safetensors(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size >= 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def last_checkpoint(out_dir: Path, log: Any = None) -> str | None:
    """The newest checkpoint that reads back whole (`unreadable`), else None.

    A worker killed while saving (SIGKILL to the process group, a lost machine) leaves a checkpoint
    folder cut short, e.g. without trainer_state.json or with it empty; such a folder is passed over
    (and named through `log`) for the one before it (save_total_limit keeps two), and is left in place:
    under accelerate every rank looks at once, and a later save of that step completes it."""
    if not out_dir.is_dir():
        return None
    found = [p for p in out_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[1].isdigit()]
    for ckpt in sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True):
        why = unreadable(ckpt)
        if why is None:
            return str(ckpt)
        if log:
            log(f"passed over {ckpt.name}: {why}", level="warning")
    return None


def train(trainer: Any, log: Any = None) -> None:
    """Train, continuing from the run's last whole checkpoint when a resumed run left one.

    A checkpoint of the final step (a run killed after its last save, before its model was registered)
    is loaded as it is: the Trainer, resumed there, would train one step past max_steps. Any error on
    the way back into a checkpoint names it."""
    from transformers import TrainerState

    ckpt = last_checkpoint(Path(trainer.args.output_dir), log)
    if ckpt is None:
        trainer.train()
        return
    state = TrainerState.load_from_json(str(Path(ckpt) / "trainer_state.json"))
    sharded = getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False)
    if state.max_steps and state.global_step >= state.max_steps and not sharded:
        try:
            trainer._load_from_checkpoint(ckpt)
        except Exception as exc:
            raise ValueError(f"{ckpt}: cannot load it ({type(exc).__name__}: {exc})") from exc
        trainer.state = state
        if log:
            log(f"{Path(ckpt).name} is the final step ({state.global_step}): saving it, no more training")
        return
    loaded = ResumeWatch()
    trainer.add_callback(loaded)
    try:
        trainer.train(resume_from_checkpoint=ckpt)
    except Exception as exc:
        if loaded.stepped:
            raise
        raise ValueError(f"resuming from {ckpt}: {type(exc).__name__}: {exc}") from exc
    finally:
        trainer.remove_callback(loaded)


class ResumeWatch(TrainerCallback):
    """Notes the first step after a resume: errors before it come from the checkpoint being loaded."""

    stepped = False

    def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.stepped = True


def save_model(trainer: Any, tokenizer: Any, db: Database, name: str, run_id: int | None = None) -> str:
    """Save the trained model (LoRA adapters merged) and tokenizer in the database's models folder.

    The folder is stamped with the database and run (`MODEL_STAMP`); one another database or run
    saved is never overwritten. Under accelerate rank 0 writes and every rank waits for it, so none
    goes on (to register, or to score with the new model) before the folder is complete."""
    path = output_dir(db, name)
    if run_id is not None:
        check_model_dir(db, path, run_id)
        if trainer.is_world_process_zero():
            path.mkdir(parents=True, exist_ok=True)
            write_atomic(path / MODEL_STAMP, stamp_of_model(db, run_id))
    saved = _save(trainer, tokenizer, path)
    trainer.accelerator.wait_for_everyone()
    return saved


def stamp_of_model(db: Database, run_id: int) -> dict[str, Any]:
    return {"database": folders.identity(db)["uuid"], "run_id": run_id}


def check_model_dir(db: Database, path: Path, run_id: int) -> None:
    """Refuse a model folder that holds files another database or run saved there."""
    if not path.is_dir() or not any(path.iterdir()):
        return
    try:
        theirs = json.loads((path / MODEL_STAMP).read_text())
    except (OSError, ValueError):
        theirs = None
    if theirs != stamp_of_model(db, run_id):
        raise ValueError(
            f"model folder {path} already holds another model (not saved by run {run_id} of this "
            "database); choose another name"
        )


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
    """<stem>.models/<name> beside the database, for a safe name only, checked to resolve inside it."""
    return inside(folders.models_root(db), safe_name("model name", name))


def check_name(db: Database, name: str, run_id: int) -> dict[str, Any] | None:
    """The model this run already registered under `name` (a resumed run), else None; error if taken.

    Also refuses a name that is not safe as a folder name, or whose folder holds another database's
    or run's model, before any training time is spent."""
    path = output_dir(db, name)
    row = models.get_model(db, name)
    if row is None:
        check_model_dir(db, path, run_id)
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
    """The shared prologue: the new model's name (default `<kind>-<run id>`; refused if another run
    took it or it is no safe folder name, before any training time is spent), the run's folder claimed
    (`claim_run_dir`), the seed set (before any model is built), and the run linked to the model it starts
    from (plus `run_fields`, e.g. its constitution version)."""
    from transformers import set_seed

    cfg = ctx.config
    name = cfg.name or f"{cfg.kind}-{ctx.run_id}"  # type: ignore[attr-defined]
    done = check_name(ctx.db, name, ctx.run_id)
    claim_run_dir(ctx.db, ctx.run_id)
    # Seeded before any model is built: a head the checkpoint lacks (the PM's score head) is initialised
    # at random when the model loads, before the Trainer would seed.
    set_seed(cfg.seed)  # type: ignore[attr-defined]
    parent = base_model(ctx.db, model_spec)
    ctx.db.table("runs").update(ctx.run_id, {"model_id": parent["id"], **run_fields})
    return Target(name=name, done=done, parent=parent)


@dataclass
class Trained:
    """What `finish` hands back: the registered model, the steps, the loss of its last logged step (`loss`),
    the mean over all logged steps (`mean_loss`, TRL's `train_loss` when every step is logged) and the
    trainer's log history (e.g. RL's rewards per step)."""

    model_id: int
    path: str
    steps: int
    loss: float | None
    mean_loss: float | None = None
    log_history: list[dict[str, Any]] = field(default_factory=list)


def finish(
    ctx: RunContext,
    trainer: Any,
    tokenizer: Any,
    target: Target,
    *,
    constitution_version_id: int | None,
    meta: dict[str, Any],
) -> Trained:
    """The shared epilogue: train (from the last whole checkpoint of a resumed run; nothing more when
    that is the final step), save, register the model with its lineage (parent, run, constitution
    version; `meta` plus steps, mean and last loss), log it, and remove the run's checkpoints unless the
    config keeps them. The final trainer state stays in the run folder (`FINAL_STATE`), so a run
    resumed after this point returns the same result (`trained_before`).

    Under accelerate every rank runs this; rank 0's database is the workbench's, the other ranks'
    registrations go to their private snapshots (see cai.runs), so the model is registered once."""
    if target.done:  # resumed after its model was registered: nothing to train, the same result
        return trained_before(ctx, target)
    train(trainer, ctx.log)
    out = Path(trainer.args.output_dir)
    if trainer.is_world_process_zero():
        trainer.state.save_to_json(str(out / FINAL_STATE))
    path = save_model(trainer, tokenizer, ctx.db, target.name, ctx.run_id)
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
    if trainer.is_world_process_zero():
        tidy(ctx, out)
    return Trained(model_id, path, steps, loss, mean, list(trainer.state.log_history))


def tidy(ctx: RunContext, out: Path) -> None:
    """A finished run's checkpoints go, unless its config keeps them."""
    if not getattr(ctx.config, "keep_checkpoints", False):
        remove_checkpoints(out, ctx.log)


def remove_checkpoints(out: Path, log: Any = None) -> int:
    """Delete the checkpoint folders of a finished run (weights + optimizer: gigabytes on a real model);
    returns the bytes freed."""
    ckpts = sorted(p for p in out.glob("checkpoint-*") if p.is_dir())
    freed = sum(folders.size(p) for p in ckpts)
    for p in ckpts:
        shutil.rmtree(p, ignore_errors=True)
    if ckpts and log:
        log(f"removed {len(ckpts)} checkpoints ({freed / 1e6:.1f} MB); keep_checkpoints keeps them")
    return freed


def trained_before(ctx: RunContext, target: Target) -> Trained:
    """What `finish` returned, for a resumed run that had already registered its model: the registry row
    and the final trainer state it left in its run folder."""
    from transformers import TrainerState

    from cai.run_context import world

    row = target.done or {}
    out = run_dir(ctx.db, ctx.run_id)
    if world()[0] == 0:  # killed after registering, before its checkpoints went
        tidy(ctx, out)
    state_file = out / FINAL_STATE
    history = TrainerState.load_from_json(str(state_file)).log_history if state_file.is_file() else []
    meta = row.get("meta") or {}
    return Trained(row["id"], row["path"], meta.get("steps"), meta.get("train_loss_last"),
                   meta.get("train_loss_mean"), history)


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
