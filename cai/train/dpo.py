"""DPO directly on AI preference labels: the offline alternative to RL against a preference model.

Soft labels enter one of two ways (DPOConfig.soft). `label_smoothing`: TRL's sigmoid loss with
label_smoothing eps = mean(1 - p) over the set, i.e. -(1-eps) log sigma(beta*delta) - eps log sigma(-beta*delta),
the cross-entropy to a soft target 1 - eps (conservative DPO; TRL takes one eps per run, so the set's
mean p stands for every pair). `threshold`: hard labels, keeping only pairs with p >= the threshold.
"""

from __future__ import annotations

from typing import Any

import torch

SOFT_MODES = ("label_smoothing", "threshold")


def soft_handling(
    pairs: list[dict[str, Any]], mode: str, threshold: float
) -> tuple[list[dict[str, Any]], float]:
    """(pairs to train on, TRL label_smoothing) for a soft-label mode (see the module docstring)."""
    if mode == "label_smoothing":
        eps = sum(1.0 - float(p["p"]) for p in pairs) / len(pairs) if pairs else 0.0
        return pairs, round(min(max(eps, 0.0), 0.5), 6)
    if mode == "threshold":
        return [p for p in pairs if float(p["p"]) >= threshold], 0.0
    raise ValueError(f"soft must be one of {', '.join(SOFT_MODES)}, got {mode!r}")


def dpo_rows(pairs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """TRL's preference columns: the conversation as prompt, each response as its continuation."""
    return [
        {"prompt": p["prompt"], "chosen": " " + p["chosen"].strip(), "rejected": " " + p["rejected"].strip()}
        for p in pairs
    ]


def run_stage(ctx: Any) -> dict[str, Any]:
    """Stage "dpo": DPO of the policy on an AI preference set; saves and registers the new policy."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from cai.train import common

    cfg, db = ctx.config, ctx.db
    if not (cfg.policy and cfg.prefs):
        raise ValueError("dpo needs a policy and a prefs set")
    name = cfg.name or f"dpo-{ctx.run_id}"
    done = common.check_name(db, name, ctx.run_id)
    base = common.base_model(db, cfg.policy)
    db["runs"].update(ctx.run_id, {"model_id": base["id"]})
    pairs, eps = soft_handling(common.load_pairs(db, cfg.prefs), cfg.soft, cfg.threshold)
    if not pairs:
        raise ValueError(f"no pairs of {cfg.prefs!r} have p >= {cfg.threshold}; lower the threshold")
    ctx.log(f"DPO on {len(pairs)} pairs, soft labels by {cfg.soft} (label_smoothing {eps}), beta {cfg.beta}")
    if done is not None:
        return {"model": name, "model_id": done["id"], "path": done["path"], "algorithm": "dpo"}
    out_dir = common.run_dir(db, ctx.run_id)
    args = DPOConfig(
        output_dir=str(out_dir),
        beta=cfg.beta,
        label_smoothing=eps,
        loss_type=["sigmoid"],
        max_length=cfg.max_length,
        **common.training_args(cfg),
    )
    tok = AutoTokenizer.from_pretrained(base["folder"])
    model = AutoModelForCausalLM.from_pretrained(base["folder"], dtype=torch.float32)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(dpo_rows(pairs)),
        processing_class=tok,
        peft_config=common.lora_config(cfg, task_type="CAUSAL_LM") if cfg.lora else None,
        callbacks=[common.ProgressCallback(ctx)],
    )
    common.train(trainer, out_dir)
    path = common.save_model(trainer, tok, db, name)
    model_id = common.register(
        db,
        name,
        path,
        parent=base,
        run_id=ctx.run_id,
        constitution_version_id=common.constitution_of(db, cfg.prefs),
        meta={
            "kind": "policy",
            "algorithm": "dpo",
            "prefs": cfg.prefs,
            "soft": cfg.soft,
            "label_smoothing": eps,
        },
    )
    return {
        "model": name,
        "model_id": model_id,
        "path": path,
        "algorithm": "dpo",
        "pairs": len(pairs),
        "label_smoothing": eps,
        "steps": trainer.state.global_step,
        "train_loss": common.last_loss(trainer),
    }
