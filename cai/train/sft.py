"""SFT on an SL run: TRL's SFTTrainer on (prompt, final revision) plus helpfulness samples.

The data is the chain run's prompt/completion rows (loss on the completion only); training is full or
LoRA (merged on save), resumes from the run's last checkpoint, and the result is registered as a new
model whose lineage names its parent, the chain run and that run's constitution version.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from cai import runs, sl
from cai.train import common
from cai.transcript import parse_hh


def conversational(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """prompt/completion text rows as TRL's conversational form, for chat models (their template applies)."""
    return [
        {
            "prompt": parse_hh(r["prompt"])[:-1],
            "completion": [{"role": "assistant", "content": r["completion"].strip()}],
        }
        for r in rows
    ]


def chain_run(db: Database, run_id: int) -> dict[str, Any]:
    """The SL run to learn from; a clear error when it is not one or holds no chains."""
    run = runs.get_run(db, run_id)
    if run["kind"] != "sl":
        raise ValueError(f"chains: run {run_id} is a {run['kind']!r} run, not an 'sl' run")
    return run


def run_stage(ctx: Any) -> dict[str, Any]:
    """Stage "sft": train on the chain run's final revisions, save, register with lineage."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    cfg, db = ctx.config, ctx.db
    source = chain_run(db, cfg.chains)
    if source["status"] != "done":
        ctx.log(
            f"run {cfg.chains} is {source['status']}: training on the chains it has stored", level="warning"
        )
    rows, skipped = sl.sft_records(db, cfg.chains)
    if not rows:
        raise ValueError(f"chains: run {cfg.chains} has no chains with a non-empty final response")
    if skipped:
        ctx.log(f"left out {skipped} chains whose final response is empty", level="warning")
    name = cfg.name or f"sft-{ctx.run_id}"
    done = common.check_name(db, name, ctx.run_id)
    if done:  # a resumed run that had already registered its model
        return {"model": name, "model_id": done["id"], "rows": len(rows), "skipped_empty": skipped}
    parent = common.base_model(db, cfg.model or source["config"]["model"])
    db.table("runs").update(
        ctx.run_id, {"model_id": parent["id"], "constitution_version_id": source["constitution_version_id"]}
    )

    tokenizer = AutoTokenizer.from_pretrained(parent["folder"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    import torch

    model = AutoModelForCausalLM.from_pretrained(parent["folder"], dtype=torch.float32)
    data = conversational(rows) if parent["chat"] else rows
    out_dir = common.run_dir(db, ctx.run_id)
    args = SFTConfig(
        output_dir=str(out_dir),
        **common.training_args(
            cfg,
            max_length=cfg.max_length,
            completion_only_loss=True,
            gradient_checkpointing=False,
            save_strategy="steps",
        ),
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(data),
        processing_class=tokenizer,
        peft_config=common.lora_config(cfg, "CAUSAL_LM") if cfg.lora else None,
        callbacks=[common.ProgressCallback(ctx)],
    )
    ctx.log(
        f"SFT of {parent['name']} on {len(rows)} rows of run {cfg.chains} ({'LoRA' if cfg.lora else 'full'})"
    )
    common.train(trainer, out_dir)
    path = common.save_model(trainer, tokenizer, db, name)
    meta = {
        "chains_run": cfg.chains,
        "rows": len(rows),
        "lora": cfg.lora,
        "final_loss": common.last_loss(trainer),
        "steps": trainer.state.global_step,
    }
    model_id = common.register(
        db,
        name,
        path,
        parent=parent,
        run_id=ctx.run_id,
        constitution_version_id=source["constitution_version_id"],
        meta=meta,
    )
    ctx.log(f"registered model {name} (id {model_id}) at {path}")
    return {"model": name, "model_id": model_id, "path": path, "skipped_empty": skipped, **meta}
