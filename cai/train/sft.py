"""SFT on an SL run: TRL's SFTTrainer on (prompt, final revision) plus helpfulness samples.

The data is the chain run's prompt/completion rows (loss on the completion only); training is full or
LoRA (merged on save), resumes from the run's last checkpoint, and the result is registered as a new
model whose lineage names its parent, the chain run and that run's constitution version. A row longer than
max_length is cut from the left (its first BOS kept), so the final revision is trained and the start of
the conversation goes; TRL would cut the revision's end, or drop a row whose prompt fills max_length.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database
from trl import SFTTrainer

from cai import sl
from cai.run_context import get_run
from cai.train import common, lengths
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


class CountingSFTTrainer(SFTTrainer):
    """SFTTrainer that cuts long rows from the left and counts them (`self.lengths`, the training set's)."""

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):  # type: ignore[no-untyped-def]
        max_length = args.max_length
        if max_length is None or packing:
            return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        given = len(dataset)
        with lengths.tokenize_whole(args):
            dataset = super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        tok = getattr(processing_class, "tokenizer", processing_class)
        bos = tok.bos_token_id
        counts = {"truncated": 0, "completion_cut": 0}
        has_labels = "labels" in dataset.column_names
        for ids, labels in zip(dataset["input_ids"], dataset["labels"] if has_labels else dataset["input_ids"], strict=True):
            if len(ids) > max_length:
                counts["truncated"] += 1
                kept = lengths.take(labels, lengths.keep_end(len(ids), max_length, bool(ids) and ids[0] == bos))
                counts["completion_cut"] += sum(x != -100 for x in kept) < sum(x != -100 for x in labels)

        def fit(example: dict[str, Any]) -> dict[str, Any]:
            ids = example["input_ids"]
            kept = lengths.keep_end(len(ids), max_length, bos is not None and bool(ids) and ids[0] == bos)
            return {k: lengths.take(example[k], kept) for k in ("input_ids", "labels") if k in example}

        dataset = dataset.map(fit)
        if has_labels:
            dataset = dataset.filter(lambda e: any(x != -100 for x in e["labels"]))
        if dataset_name == "train":
            self.lengths = lengths.Lengths(
                "rows", given, len(dataset), counts["truncated"], counts["completion_cut"], max_length
            )
        return dataset


def chain_run(db: Database, run_id: int) -> dict[str, Any]:
    """The SL run to learn from; a clear error when it is not one or holds no chains."""
    run = get_run(db, run_id)
    if run["kind"] != "sl":
        raise ValueError(f"chains: run {run_id} is a {run['kind']!r} run, not an 'sl' run")
    return run


def run_stage(ctx: Any) -> dict[str, Any]:
    """Stage "sft": train on the chain run's final revisions, save, register with lineage."""
    from trl import SFTConfig

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
    trainer = CountingSFTTrainer(
        model=model, args=args, **common.trainer_inputs(ctx, data, tokenizer, "CAUSAL_LM")
    )
    counts = trainer.lengths.as_dict()
    ctx.log(
        f"SFT of {parent['name']} on {counts['trained']} rows of run {cfg.chains} ({'LoRA' if cfg.lora else 'full'})"
    )
    ctx.log(f"training data: {lengths.summary(counts)}")
    lengths.refuse_empty(trainer.lengths)
    meta = {"chains_run": cfg.chains, "rows": counts["trained"], "data": counts, "lora": cfg.lora}
    trained = common.finish(ctx, 
        trainer, tokenizer, target, constitution_version_id=source["constitution_version_id"], meta=meta
    )
    return {
        "model": target.name,
        "model_id": trained.model_id,
        "path": trained.path,
        "skipped_empty": skipped,
        **meta,
        "train_loss_mean": trained.mean_loss,
        "train_loss_last": trained.loss,
        "steps": trained.steps,
    }
