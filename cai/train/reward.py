"""The preference model: TRL's RewardTrainer with a soft-target loss on AI labels mixed with human pairs.

Only `compute_loss` (and the collator, so the soft label `p` reaches it) and the length handling differ
from TRL; the loss is the cross-entropy of the Bradley-Terry probability sigma(r_chosen - r_rejected)
against p, with hard (p rounded; ties, p = 0.5, left out) and margin (TRL's margin = logit p) variants for
ablation. A pair longer than max_length is cut from the left (cai.train.lengths), not dropped as TRL
would. The paper trains on every comparison: all pairs of both sets by default, `human_ratio` an optional
cap. `score` reads a trained PM.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from cai import loadclock
from cai.train import lengths

LOSSES = ("soft", "hard", "margin")
MAX_MARGIN = 5.0  # |logit p| cap for the margin variant: p = 1 would give an infinite margin


# ----------------------------------------------------------------------------- the loss
def soft_preference_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """-[p log sigma(r_c - r_r) + (1 - p) log sigma(r_r - r_c)], averaged over the batch."""
    delta = r_chosen - r_rejected
    return -(p * nn.functional.logsigmoid(delta) + (1 - p) * nn.functional.logsigmoid(-delta)).mean()


def margin_of(p: float) -> float:
    """The margin variant's target reward gap: logit(p), capped at MAX_MARGIN."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return max(-MAX_MARGIN, min(MAX_MARGIN, math.log(p / (1 - p))))


def preference_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, p: torch.Tensor, kind: str = "soft"
) -> torch.Tensor:
    """The PM loss of each variant: soft (target p), hard (target round(p); a tie, p = 0.5, has no side and
    is left out), margin (TRL's, margin = logit p)."""
    if kind == "soft":
        return soft_preference_loss(r_chosen, r_rejected, p)
    if kind == "hard":
        delta = r_chosen - r_rejected
        target, counted = (p > 0.5).to(delta.dtype), (p != 0.5).to(delta.dtype)
        per_pair = -(target * nn.functional.logsigmoid(delta) + (1 - target) * nn.functional.logsigmoid(-delta))
        return (per_pair * counted).sum() / counted.sum().clamp(min=1.0)
    if kind == "margin":
        margin = torch.tensor([margin_of(float(x)) for x in p], dtype=r_chosen.dtype, device=r_chosen.device)
        return -nn.functional.logsigmoid(r_chosen - r_rejected - margin).mean()
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")


def pair_credit(r_chosen: torch.Tensor, r_rejected: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Accuracy credit of each pair: 1 when the PM prefers the chosen response, 0 when the rejected, 1/2 for
    an exact tie of the scores or a pair labelled a tie (p = 0.5: either answer is half right)."""
    credit = (r_chosen > r_rejected).to(torch.float) + 0.5 * (r_chosen == r_rejected).to(torch.float)
    return torch.where(p == 0.5, torch.full_like(credit, 0.5), credit)


@dataclass
class SoftPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator, also passing each pair's soft label `p` through."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call([{k: v for k, v in e.items() if k != "p"} for e in examples])
        out["p"] = torch.tensor([float(e["p"]) for e in examples], dtype=torch.float)
        return out


class SoftRewardTrainer(RewardTrainer):
    """RewardTrainer whose loss reads the soft label `p` of each pair (see `preference_loss`)."""

    def __init__(self, *args: Any, loss_kind: str = "soft", **kwargs: Any) -> None:
        if loss_kind not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss_kind!r}")
        self.loss_kind = loss_kind
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "p"]  # type: ignore[assignment]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # type: ignore[no-untyped-def]
        """TRL's tokenization (EOS added), then each text cut from the left to max_length instead of the pair
        being dropped; what was cut is counted in `self.lengths` (the training set's)."""
        max_length = args.max_length
        if max_length is None:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        with lengths.tokenize_whole(args):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        bos = processing_class.bos_token_id
        truncated = response_cut = 0
        for c, r in zip(dataset["chosen_ids"], dataset["rejected_ids"], strict=True):
            longest = max(len(c), len(r))
            if longest > max_length:
                truncated += 1
                shared = next((i for i, (a, b) in enumerate(zip(c, r, strict=False)) if a != b), min(len(c), len(r)))
                response_cut += longest - max_length > shared - (1 if c and c[0] == bos else 0)
        dataset = dataset.map(
            lambda e: {k: lengths.cut(e[k], max_length, bos) for k in ("chosen_ids", "rejected_ids")}
        )
        if dataset_name == "train":
            self.lengths = lengths.Lengths("pairs", len(dataset), len(dataset), truncated, response_cut, max_length)
        return dataset

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
        mode = "train" if self.model.training else "eval"
        p = inputs.pop("p")
        outputs = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        )
        r_chosen, r_rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
        loss = preference_loss(r_chosen, r_rejected, p.to(r_chosen.dtype), self.loss_kind)
        if self.args.center_rewards_coefficient is not None:
            loss += self.args.center_rewards_coefficient * torch.mean((r_chosen + r_rejected) ** 2)
        with torch.no_grad():
            self._metrics[mode]["accuracy"].append(pair_credit(r_chosen, r_rejected, p).mean().item())
            self._metrics[mode]["margin"].append((r_chosen - r_rejected).mean().item())
            self._metrics[mode]["mean_reward"].append(outputs.logits.mean().item())
        return (loss, outputs) if return_outputs else loss


# ----------------------------------------------------------------------------- data
def pm_text(prompt: str, response: str) -> str:
    """What the PM reads: the conversation and the response, exactly as in training."""
    return prompt + " " + response.strip()


def mix(
    ai: list[dict[str, Any]], human: list[dict[str, Any]], human_ratio: float | None, seed: int
) -> list[dict[str, Any]]:
    """Every pair of both sets (human_ratio None, the paper's choice), or as many as the two sets allow with a
    `human_ratio` share of human pairs (the larger set subsampled); shuffled (seeded)."""
    rng = random.Random(seed)
    if human_ratio is None:
        n_ai, n_h = len(ai), len(human)
    elif not human or human_ratio == 0:
        n_ai, n_h = len(ai), 0
    elif not ai or human_ratio == 1:
        n_ai, n_h = 0, len(human)
    else:
        total = min(len(ai) / (1 - human_ratio), len(human) / human_ratio)
        n_h = round(total * human_ratio)
        n_ai = min(len(ai), round(total) - n_h)
    picked = rng.sample(ai, n_ai) + rng.sample(human, n_h)
    rng.shuffle(picked)
    return picked


def split_heldout(pairs: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out): a seeded `fraction` of the pairs (at least one when there are two or more)."""
    idx = list(range(len(pairs)))
    random.Random(seed).shuffle(idx)
    n = max(1, round(len(pairs) * fraction)) if len(pairs) > 1 else 0
    held = set(idx[:n])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


def to_rows(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs as the trainer's rows: full texts (no `prompt` column, so TRL adds EOS like `score` does)."""
    return [
        {
            "chosen": pm_text(x["prompt"], x["chosen"]),
            "rejected": pm_text(x["prompt"], x["rejected"]),
            "p": x["p"],
        }
        for x in pairs
    ]


def pad_id(tok: Any) -> int:
    """The id the sequence-classification head treats as padding (pad, else EOS; 0 is a valid id)."""
    return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


# ----------------------------------------------------------------------------- scoring
@lru_cache(maxsize=2)
def _load_pm(path: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with loadclock.timed():
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def score(
    pm_spec: str, prompts: list[str], responses: list[str], db: Any = None, batch_size: int = 8
) -> list[float]:
    """The PM's reward for each (prompt, response), batched; higher = preferred."""
    from cai.backends import model_path

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    model, tok = _load_pm(model_path(pm_spec, db))
    return score_texts(
        model, tok, [pm_text(p, r) for p, r in zip(prompts, responses, strict=True)], batch_size
    )


def score_texts(model: Any, tok: Any, texts: list[str], batch_size: int = 8) -> list[float]:
    """Rewards of full texts (EOS appended as in training), right-padded batches."""
    out: list[float] = []
    eos = tok.eos_token or ""
    for i in range(0, len(texts), batch_size):
        chunk = [t if t.endswith(eos) else t + eos for t in texts[i : i + batch_size]]
        enc = tok(chunk, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=True)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        with torch.inference_mode():
            out += model(**enc).logits[:, 0].float().tolist()
    return out


def accuracy(pm_spec: str, pairs: list[dict[str, Any]], db: Any = None, batch_size: int = 8) -> float | None:
    """Share of pairs whose chosen response the PM scores higher, half credit for ties (`pair_credit`;
    None for no pairs)."""
    if not pairs:
        return None
    prompts = [p["prompt"] for p in pairs]
    chosen = score(pm_spec, prompts, [p["chosen"] for p in pairs], db, batch_size)
    rejected = score(pm_spec, prompts, [p["rejected"] for p in pairs], db, batch_size)
    p = torch.tensor([float(x["p"]) for x in pairs])
    return float(pair_credit(torch.tensor(chosen), torch.tensor(rejected), p).mean().item())


# ----------------------------------------------------------------------------- the stage
def heldout_of(db: Any, cfg: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """(human pairs left for training, held-out pairs, what the held-out set is, for the log and result)."""
    from cai import data
    from cai.train import common

    human = common.load_pairs(db, cfg.human_prefs) if cfg.human_prefs else []
    if cfg.heldout_prefs:
        source = data.get_pref_set(db, cfg.heldout_prefs)["source"]
        return human, common.load_pairs(db, cfg.heldout_prefs), f"{source} pairs of set {cfg.heldout_prefs}"
    human, heldout = split_heldout(human, 0.2, cfg.seed)
    source = data.get_pref_set(db, cfg.human_prefs)["source"] if cfg.human_prefs else ""
    if not cfg.human_prefs:
        return human, heldout, "pairs (no held-out set: name heldout_prefs or human_prefs)"
    return human, heldout, f"{source} pairs split from set {cfg.human_prefs}"


def run_stage(ctx: Any) -> dict[str, Any]:
    """Stage "pm": mix, train (resuming from the last checkpoint), save, register, report held-out accuracy."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cai.train import common

    cfg, db = ctx.config, ctx.db
    ai = common.load_pairs(db, cfg.ai_prefs) if cfg.ai_prefs else []
    human, heldout, heldout_name = heldout_of(db, cfg)
    train = mix(ai, human, cfg.human_ratio if ai else None, cfg.seed)
    if not train:
        raise ValueError("no training pairs: the preference sets are empty")
    n_ai = sum(1 for x in train if x["_source"] == "ai")
    mixing = {
        "human_ratio": cfg.human_ratio,
        "ai_pairs": n_ai,
        "human_pairs": len(train) - n_ai,
        "ai_unused": len(ai) - n_ai,
        "human_unused": len(human) - (len(train) - n_ai),
    }
    ctx.log(
        f"mixing: {n_ai} of {len(ai)} AI pairs and {len(train) - n_ai} of {len(human)} human pairs"
        + (" (all pairs)" if cfg.human_ratio is None else f" (human share capped at {cfg.human_ratio})")
        + f"; {len(heldout)} held out ({heldout_name})"
    )
    target = common.start(ctx, cfg.model)
    if target.done is None:
        args = RewardConfig(max_length=cfg.max_length, disable_dropout=True, **common.training_args(ctx))
        with loadclock.timed():
            tok = AutoTokenizer.from_pretrained(target.parent["folder"])
            model = AutoModelForSequenceClassification.from_pretrained(
                target.parent["folder"], num_labels=1, dtype=torch.float32
            )
        trainer = SoftRewardTrainer(
            model=model,
            args=args,
            data_collator=SoftPreferenceCollator(pad_token_id=pad_id(tok)),
            loss_kind=cfg.loss,
            **common.trainer_inputs(ctx, to_rows(train), tok, "SEQ_CLS"),
        )
        rows = trainer.lengths.as_dict()
        ctx.log(f"training data: {lengths.summary(rows)}")
        lengths.refuse_empty(trainer.lengths)
        meta = {"kind": "preference-model", "loss": cfg.loss, "lora": cfg.lora, "data": rows, **mixing}
        trained = common.finish(ctx, 
            trainer, tok, target, constitution_version_id=common.constitution_of(db, cfg.ai_prefs), meta=meta
        )
        _load_pm.cache_clear()
        path, model_id = trained.path, trained.model_id
        steps, loss_mean, loss_last = trained.steps, trained.mean_loss, trained.loss
    else:  # resumed after its model was registered: the same result as the run that registered it
        trained = common.trained_before(ctx, target)
        path, model_id, rows = trained.path, trained.model_id, target.done["meta"].get("data")
        steps, loss_mean, loss_last = trained.steps, trained.mean_loss, trained.loss
    acc = accuracy(path, heldout, batch_size=cfg.batch_size)
    common.update_meta(db, model_id, heldout_accuracy=acc, heldout_pairs=len(heldout), heldout_set=heldout_name)
    ctx.log(f"held-out accuracy {acc if acc is None else round(acc, 4)} on {len(heldout)} {heldout_name}")
    return {
        "model": target.name,
        "model_id": model_id,
        "path": path,
        "train_pairs": rows["trained"] if rows else None,
        **mixing,
        "data": rows,
        "heldout_pairs": len(heldout),
        "heldout_set": heldout_name,
        "heldout_accuracy": acc,
        "steps": steps,
        "train_loss_mean": loss_mean,
        "train_loss_last": loss_last,
        "loss": cfg.loss,
    }
