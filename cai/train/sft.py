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
    target = common.start(
        ctx, cfg.model or source["config"]["model"], constitution_version_id=source["constitution_version_id"]
    )
    parent = target.parent
    model, tokenizer = common.causal_lm(parent["folder"])
    data = conversational(rows) if parent["chat"] else rows
    args = SFTConfig(
        **common.training_args(
            ctx,
            max_length=cfg.max_length,
            completion_only_loss=True,
            gradient_checkpointing=False,
            save_strategy="steps",
        ),
    )
    trainer = SFTTrainer(model=model, args=args, **common.trainer_inputs(ctx, data, tokenizer, "CAUSAL_LM"))
    ctx.log(
        f"SFT of {parent['name']} on {len(rows)} rows of run {cfg.chains} ({'LoRA' if cfg.lora else 'full'})"
    )
    meta = {"chains_run": cfg.chains, "rows": len(rows), "lora": cfg.lora}
    trained = ctx.finish(
        trainer, tokenizer, target, constitution_version_id=source["constitution_version_id"], meta=meta
    )
    return {
        "model": target.name,
        "model_id": trained.model_id,
        "path": trained.path,
        "skipped_empty": skipped,
        **meta,
        "final_loss": trained.loss,
        "steps": trained.steps,
    }
