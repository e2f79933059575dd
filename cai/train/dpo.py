"""DPO directly on AI preference labels: the offline alternative to RL against a preference model.

Soft labels enter one of two ways (DPOConfig.soft). `label_smoothing`: TRL's sigmoid loss with
label_smoothing eps = mean(1 - p) over the set, i.e. -(1-eps) log sigma(beta*delta) - eps log sigma(-beta*delta),
the cross-entropy to a soft target 1 - eps (conservative DPO; TRL takes one eps per run, so the set's
mean p stands for every pair). `threshold`: hard labels, keeping only pairs with p >= the threshold.
"""

from __future__ import annotations

from typing import Any

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
    from trl import DPOConfig, DPOTrainer

    from cai.train import common

    cfg, db = ctx.config, ctx.db
    if not (cfg.policy and cfg.prefs):
        raise ValueError("dpo needs a policy and a prefs set")
    target = common.start(ctx, cfg.policy)
    pairs, eps = soft_handling(common.load_pairs(db, cfg.prefs), cfg.soft, cfg.threshold)
    if not pairs:
        raise ValueError(f"no pairs of {cfg.prefs!r} have p >= {cfg.threshold}; lower the threshold")
    ctx.log(f"DPO on {len(pairs)} pairs, soft labels by {cfg.soft} (label_smoothing {eps}), beta {cfg.beta}")
    args = DPOConfig(
        beta=cfg.beta,
        label_smoothing=eps,
        loss_type=["sigmoid"],
        max_length=cfg.max_length,
        **common.training_args(ctx),
    )
    model, tok = common.causal_lm(target.parent["folder"])
    trainer = DPOTrainer(
        model=model, args=args, **common.trainer_inputs(ctx, dpo_rows(pairs), tok, "CAUSAL_LM")
    )
    meta = {
        "kind": "policy",
        "algorithm": "dpo",
        "prefs": cfg.prefs,
        "soft": cfg.soft,
        "label_smoothing": eps,
    }
    trained = ctx.finish(
        trainer, tok, target, constitution_version_id=common.constitution_of(db, cfg.prefs), meta=meta
    )
    return {
        "model": target.name,
        "model_id": trained.model_id,
        "path": trained.path,
        "algorithm": "dpo",
        "pairs": len(pairs),
        "label_smoothing": eps,
        "steps": trained.steps,
        "train_loss": trained.loss,
    }
