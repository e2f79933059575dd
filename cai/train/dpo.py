"""DPO directly on AI preference labels: the offline alternative to RL against a preference model.

Soft labels enter one of two ways (DPOConfig.soft). `soft`: each pair's own p is the target of the
cross-entropy, -p log sigma(beta*D) - (1-p) log sigma(-beta*D) with D the pair's DPO margin
(log-ratio of chosen minus that of rejected), so a pair at p = 0.6 pulls less than one at 0.95 (TRL's
sigmoid loss reads no per-pair label, and its label_smoothing is ignored by that loss). `threshold`:
hard labels (p = 1), keeping only pairs with p >= the threshold; ties (p = 0.5) have no side and are left
out. `SoftDPOTrainer` keeps TRL's forward passes and metrics and replaces only the loss, from the policy's
and the reference's log-probs of those passes. A prompt too long for max_length is cut
from the left (its first BOS kept) instead of the pair being dropped (cai.train.lengths).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from cai.train import lengths

SOFT_MODES = ("soft", "threshold")


def soft_dpo_loss(delta: torch.Tensor, p: torch.Tensor, beta: float) -> torch.Tensor:
    """Per pair: -p log sigma(beta*delta) - (1-p) log sigma(-beta*delta)."""
    return -(p * F.logsigmoid(beta * delta) + (1 - p) * F.logsigmoid(-beta * delta))


def train_pairs(
    pairs: list[dict[str, Any]], mode: str, threshold: float
) -> tuple[list[dict[str, Any]], dict]:
    """(pairs to train on, each with the p its loss uses; what was left out) for a soft-label mode."""
    if mode == "soft":
        return pairs, {"ties_left_out": 0, "below_threshold": 0}
    if mode == "threshold":
        ties = [x for x in pairs if float(x["p"]) == 0.5]
        kept = [{**x, "p": 1.0} for x in pairs if float(x["p"]) > 0.5 and float(x["p"]) >= threshold]
        return kept, {"ties_left_out": len(ties), "below_threshold": len(pairs) - len(kept) - len(ties)}
    raise ValueError(f"soft must be one of {', '.join(SOFT_MODES)}, got {mode!r}")


def dpo_rows(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL's preference columns: the conversation as prompt, each response as its continuation; plus p."""
    return [
        {
            "prompt": p["prompt"],
            "chosen": " " + p["chosen"].strip(),
            "rejected": " " + p["rejected"].strip(),
            "p": float(p["p"]),
        }
        for p in pairs
    ]


@dataclass
class SoftDPOCollator(DataCollatorForPreference):
    """TRL's preference collator, also passing each pair's label `p` through."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call([{k: v for k, v in e.items() if k != "p"} for e in examples])
        out["p"] = torch.tensor([float(e["p"]) for e in examples], dtype=torch.float)
        return out


class SoftDPOTrainer(DPOTrainer):
    """DPOTrainer whose loss is `soft_dpo_loss` with each pair's p (for the sigmoid loss of reverse-KL DPO,
    no ld_alpha and no WPO weighting: the configuration `run_stage` makes).

    TRL's `_compute_loss` runs as is (its forward passes, metrics and logs); forward hooks on the policy
    and the reference record the log-probs of those same passes, and the loss returned is ours."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.loss_types != ["sigmoid"] or self.ld_alpha is not None:
            raise ValueError("SoftDPOTrainer needs loss_type ['sigmoid'] and no ld_alpha")
        if self.f_divergence_type != "reverse_kl" or self.use_weighting:
            raise ValueError("SoftDPOTrainer needs reverse_kl and no use_weighting")

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if "p" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "p"]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # type: ignore[no-untyped-def]
        """TRL's tokenization, then each prompt cut from the left so prompt + the longer response fit
        max_length (TRL drops a pair whose prompt fills it); counted in `self.lengths`."""
        max_length = args.max_length
        if max_length is None:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        with lengths.tokenize_whole(args):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        bos = getattr(self._tokenizer, "bos_token_id", None)
        counts = {"truncated": 0, "completion_cut": 0}

        def fit(example: dict[str, Any]) -> dict[str, Any]:
            prompt, longest = (
                example["prompt_ids"],
                max(len(example["chosen_ids"]), len(example["rejected_ids"])),
            )
            if len(prompt) + longest <= max_length:
                return {"prompt_ids": prompt}
            keeps_bos = bos is not None and bool(prompt) and prompt[0] == bos
            room = max(max_length - longest, min(len(prompt), 2 if keeps_bos else 1))
            return {"prompt_ids": lengths.cut(prompt, room, bos)}

        for p, c, r in zip(
            dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True
        ):
            longest = max(len(c), len(r))
            if len(p) + longest > max_length:
                counts["truncated"] += 1
                # the collator cuts the end of a response that still does not fit (its prompt at 1-2 tokens)
                counts["completion_cut"] += len(fit({"prompt_ids": p, "chosen_ids": c, "rejected_ids": r})[
                    "prompt_ids"]) + longest > max_length  # fmt: skip
        dataset = dataset.map(fit)
        if dataset_name == "train":
            n = len(dataset)
            self.lengths = lengths.Lengths(
                "pairs", n, n, counts["truncated"], counts["completion_cut"], max_length
            )
        return dataset

    def compute_ref_log_probs(self, model, inputs):  # type: ignore[no-untyped-def]
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "p"})

    def _compute_loss(self, model, inputs, return_outputs):  # type: ignore[no-untyped-def]
        p = inputs.pop("p")
        # In call order: the policy's forward, then the reference's (through ref_model, or through the
        # policy with its adapters off under LoRA) unless TRL precomputed the reference log-probs.
        seen: list[Any] = []
        modules = [self.model] if self.ref_model is None else [self.model, self.ref_model]
        hooks = [m.register_forward_hook(lambda _m, _a, out: seen.append(out)) for m in modules]
        try:
            result = super()._compute_loss(model, inputs, return_outputs)
        finally:
            for h in hooks:
                h.remove()
        seq_len = inputs["completion_mask"].size(1) - 1
        chosen, rejected = seen[0].log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)  # summed as TRL does
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = seen[1].log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)
        delta = (chosen - ref_chosen) - (rejected - ref_rejected)
        loss = soft_dpo_loss(delta, p.to(delta.dtype), self.beta).mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * seen[0].aux_loss
        return (loss, result[1]) if return_outputs else loss


def run_stage(ctx: Any) -> dict[str, Any]:
    """Stage "dpo": DPO of the policy on an AI preference set; saves and registers the new policy."""
    from trl import DPOConfig

    from cai.train import common

    cfg, db = ctx.config, ctx.db
    if not (cfg.policy and cfg.prefs):
        raise ValueError("dpo needs a policy and a prefs set")
    target = common.start(ctx, cfg.policy)
    pairs, left_out = train_pairs(common.load_pairs(db, cfg.prefs), cfg.soft, cfg.threshold)
    if not pairs:
        raise ValueError(
            f"no pairs of {cfg.prefs!r} have p >= {cfg.threshold} (ties left out); lower the threshold"
        )
    mean_p = round(sum(float(p["p"]) for p in pairs) / len(pairs), 6)
    ctx.log(
        f"DPO on {len(pairs)} pairs, labels {cfg.soft} (mean p {mean_p}), beta {cfg.beta}"
        + (f"; left out {left_out['ties_left_out']} ties and {left_out['below_threshold']} pairs below"
           f" {cfg.threshold}" if cfg.soft == "threshold" else "")
    )  # fmt: skip
    summary = {"algorithm": "dpo", "soft": cfg.soft, "mean_p": mean_p, **left_out}
    args = DPOConfig(
        beta=cfg.beta,
        loss_type=["sigmoid"],
        max_length=cfg.max_length,
        **common.training_args(ctx),
    )
    model, tok = common.causal_lm(target.parent["folder"])
    inputs = common.trainer_inputs(ctx, dpo_rows(pairs), tok, "CAUSAL_LM")
    collator = SoftDPOCollator(pad_token_id=tok.pad_token_id, max_length=cfg.max_length)
    trainer = SoftDPOTrainer(model=model, args=args, data_collator=collator, **inputs)
    rows = trainer.lengths.as_dict()
    ctx.log(f"training data: {lengths.summary(rows)}")
    lengths.refuse_empty(trainer.lengths)
    meta = {"kind": "policy", **summary, "prefs": cfg.prefs, "data": rows}
    trained = common.finish(ctx, 
        trainer, tok, target, constitution_version_id=common.constitution_of(db, cfg.prefs), meta=meta
    )
    return {
        "model": target.name,
        "model_id": trained.model_id,
        "path": trained.path,
        **summary,
        "pairs": rows["trained"],
        "data": rows,
        "steps": trained.steps,
        "train_loss_mean": trained.mean_loss,
        "train_loss_last": trained.loss,
    }
