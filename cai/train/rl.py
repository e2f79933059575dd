"""RL-CAI: TRL's RLOOTrainer (default) or GRPOTrainer with the preference model as the reward.

TRL 1.16 has no PPO; both trainers sample `num_generations` completions per prompt, score them with
`PMReward` and keep the policy near the reference (the starting policy) with a KL penalty `beta`.
The reward function also records the Goodhart watch on every generation step's samples: one
`goodhart` row per (run_id, step) with metrics = cai.evals.goodhart.stats(...).to_dict() and samples =
the first SAMPLES_KEPT {prompt, completion, reward}; the run's result names the algorithm.

What TRL is given to train on is what the PM scores: each completion is cut after the token that
completes the next "\n\nHuman:" turn marker (`StopAtTurn`, as TRL cuts after EOS), so a policy that runs
on into an invented human turn gets no reward, KL or gradient for the tokens after it. Each logged step's
KL to the reference and the penalised reward (reward - beta * KL, the quantity RLOO optimises) are stored
on its Goodhart row and in the result's `curve`. The prompts are the red-team set, optionally mixed with a
helpful set at a given share (`mix_prompts`). A resumed run (cai.train.rl_resume) draws the same prompts
in the same order as an uninterrupted one and replaces, not appends, the rows of the steps it redoes.
"""

from __future__ import annotations

import random
from typing import Any

from cai import store
from cai.backends.base import HUMAN_STOP, cut_at_stop
from cai.evals import goodhart
from cai.train.reward import _load_pm, pm_text, score_texts
from cai.transcript import parse_hh, to_hh

ALGORITHMS = ("rloo", "grpo")
SAMPLES_KEPT = 8  # completions stored per Goodhart row, for reading them in the UI


def vllm_args(vllm: str) -> dict[str, Any]:
    """TRL's vLLM generation: "" off, "colocate", or a `trl vllm-serve` URL (server mode)."""
    if not vllm:
        return {}
    if vllm == "colocate":
        return {"use_vllm": True, "vllm_mode": "colocate"}
    if not vllm.startswith(("http://", "https://")):
        raise ValueError(f"vllm: give 'colocate' or the URL of a `trl vllm-serve` server, got {vllm!r}")
    return {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": vllm.rstrip("/")}


def as_text(value: Any) -> str:
    """A prompt or completion as plain text: conversational ones (lists of messages) become HH text."""
    if isinstance(value, list):
        return (
            to_hh(value, open_assistant=True)
            if value and value[-1]["role"] == "user"
            else value[-1]["content"]
        )
    return str(value)


class PMReward:
    """A TRL reward function: the preference model's score of (prompt, completion cut at "Human:").

    Every call stores the Goodhart statistics of its completions as the row of the current step.
    """

    __name__ = "preference_model"

    def __init__(
        self, model: Any, tokenizer: Any, db: Any = None, run_id: int | None = None, batch_size: int = 8
    ):
        self.model, self.tokenizer, self.db, self.run_id, self.batch_size = (
            model,
            tokenizer,
            db,
            run_id,
            batch_size,
        )

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        texts = [cut_at_stop(as_text(c), (HUMAN_STOP,))[0].strip() for c in completions]
        convs = [as_text(p) for p in prompts]
        rewards = score_texts(
            self.model, self.tokenizer, [pm_text(p, t) for p, t in zip(convs, texts, strict=True)]
        )
        state = kwargs.get("trainer_state")
        if self.db is not None and self.run_id is not None:
            self.record(state.global_step if state else 0, convs, texts, rewards)
        return rewards

    def record(self, step: int, prompts: list[str], texts: list[str], rewards: list[float]) -> None:
        samples = [
            {"prompt": p, "completion": t, "reward": round(r, 4)}
            for p, t, r in list(zip(prompts, texts, rewards, strict=True))[:SAMPLES_KEPT]
        ]
        row = {
            "run_id": self.run_id,
            "step": step,
            "metrics": store.dumps(goodhart.stats(texts, rewards).to_dict()),
            "samples": store.dumps(samples),
            "created_at": store.now(),
        }
        existing = list(
            self.db["goodhart"].rows_where("run_id = ? and step = ?", [self.run_id, step], select="id")
        )
        if existing:
            self.db["goodhart"].update(existing[0]["id"], row)
        else:
            self.db["goodhart"].insert(row)


def cut_ids_at_turn(tokenizer: Any, ids: list[int], marker: str = HUMAN_STOP) -> list[int]:
    """The completion's tokens up to the one that completes `marker` (kept, as TRL keeps the EOS that
    ends a completion); all of them when the text has no marker. The shortest such prefix is found by
    bisection, since the decoded text of a prefix only grows."""
    if marker not in tokenizer.decode(ids, skip_special_tokens=True):
        return list(ids)
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if marker in tokenizer.decode(ids[:mid], skip_special_tokens=True):
            hi = mid
        else:
            lo = mid + 1
    return list(ids[:lo])


class StopAtTurn:
    """A trainer mixin: every generated completion ends at the next human turn (see `cut_ids_at_turn`);
    TRL pads and masks after it, so the reward, the KL to the reference and the gradient all see the
    text the PM scored."""

    def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any:
        out = super()._generate_single_turn(*args, **kwargs)  # type: ignore[misc]
        tok = self._tokenizer  # type: ignore[attr-defined]
        return [cut_ids_at_turn(tok, ids) for ids in out]


def mix_prompts(red: list[str], helpful: list[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """(red-team, helpful) prompts to train on, so helpful ones are `share` of the whole (rounded) while
    using as many prompts as the sets allow; the subsampled set is drawn with `seed`, in its order."""
    if not helpful or share <= 0:
        return red, []
    if share >= 1:
        return [], helpful
    n_help = min(len(helpful), round(len(red) * share / (1 - share)))
    n_red = len(red) if n_help < len(helpful) else min(len(red), round(len(helpful) * (1 - share) / share))
    rng = random.Random(f"rl-mix:{seed}")

    def pick(texts: list[str], n: int) -> list[str]:
        return texts if n >= len(texts) else [texts[i] for i in sorted(rng.sample(range(len(texts)), n))]

    return pick(red, n_red), pick(helpful, n_help)


def curve(log_history: list[dict[str, Any]], beta: float, algorithm: str) -> list[dict[str, Any]]:
    """Per logged step: the raw mean reward, TRL's KL to the reference (mean per completion token) and the
    penalised reward. RLOO subtracts beta x the completion's summed KL from its reward, whose mean over
    the step's completions is kl x mean completion length; GRPO adds beta x the per-token KL to its loss."""
    out = []
    for h in log_history:
        if "reward" not in h:
            continue
        kl = h.get("kl", 0.0) if beta else 0.0
        kl_seq = kl * h.get("completions/mean_length", 0.0) if algorithm == "rloo" else kl
        out.append({"step": h["step"], "reward": round(h["reward"], 6), "kl": round(kl, 6),
                    "kl_completion": round(kl_seq, 6), "reward_minus_kl": round(h["reward"] - beta * kl_seq, 6)})
    return out


def prompt_rows(texts: list[str], chat: bool) -> list[dict[str, Any]]:
    """The trainer's prompt column: HH text for base models, chat messages for chat models."""
    if chat:
        return [{"prompt": [m for m in parse_hh(t) if m["content"] or m["role"] == "user"]} for t in texts]
    return [{"prompt": t} for t in texts]


def trainer_class(algorithm: str) -> tuple[type, type]:
    """(Config, Trainer) of TRL for the algorithm; the trainer stops at the human turn (`StopAtTurn`) and
    draws its prompts in an order that a resume repeats (`rl_resume.EpochSampled`)."""
    from cai.train.rl_resume import EpochSampled

    if algorithm == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOConfig, type("RLOOTrainer", (StopAtTurn, EpochSampled, RLOOTrainer), {})
    if algorithm == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, type("GRPOTrainer", (StopAtTurn, EpochSampled, GRPOTrainer), {})
    raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")


def run_stage(ctx: Any) -> dict[str, Any]:
    """Stage "rl": RLOO/GRPO on the prompt set(s) against the PM; saves and registers the new policy."""
    from pathlib import Path

    from cai import data, models
    from cai.backends import model_path
    from cai.train import common, rl_resume

    cfg, db = ctx.config, ctx.db
    if not (cfg.policy and cfg.reward_model and cfg.prompts):
        raise ValueError("rl needs a policy, a reward_model and a prompts set")
    target = common.start(ctx, cfg.policy)
    pm_row = models.ensure_model(db, cfg.reward_model)
    red = [r["text"] for r in data.list_prompts(db, cfg.prompts, limit=cfg.limit)]
    if not red:
        raise ValueError(f"prompt set {cfg.prompts!r} has no prompts")
    helpful = [r["text"] for r in data.list_prompts(db, cfg.helpful_prompts, limit=cfg.limit)] if cfg.helpful_prompts else []
    if cfg.helpful_prompts and not helpful:
        raise ValueError(f"prompt set {cfg.helpful_prompts!r} has no prompts")
    red, helpful = mix_prompts(red, helpful, cfg.helpful_share, cfg.seed)
    texts = red + helpful
    mix = f" ({len(red)} from {cfg.prompts}, {len(helpful)} from {cfg.helpful_prompts})" if cfg.helpful_prompts else ""
    ctx.log(
        f"{cfg.algorithm.upper()} on {len(texts)} prompts{mix}, beta {cfg.beta}, {cfg.num_generations} per prompt"
    )
    used = {"prompts_used": {cfg.prompts: len(red), **({cfg.helpful_prompts: len(helpful)} if cfg.helpful_prompts else {})}}
    if target.done is not None:  # resumed after its model was registered: the same result
        return result(ctx, target, common.trained_before(ctx, target), used)
    resumed = rl_resume.checkpoint_step(common.last_checkpoint(Path(common.run_dir(db, ctx.run_id))))
    if resumed is not None:
        rows, lines = rl_resume.forget_redone_steps(db, ctx.run_id, resumed)
        ctx.log(f"resuming from step {resumed}: the steps after it are trained again "
                f"({rows} Goodhart rows and {lines} step log lines of the interrupted attempt replaced)")
    pm_model, pm_tok = _load_pm(model_path(cfg.reward_model, db))
    reward = PMReward(pm_model, pm_tok, db, ctx.run_id)
    config_cls, trainer_cls = trainer_class(cfg.algorithm)
    args = config_cls(
        beta=cfg.beta,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        gradient_checkpointing=False,
        **common.training_args(ctx, per_device_train_batch_size=cfg.batch_size * cfg.num_generations),
        **vllm_args(cfg.vllm),
    )
    model, tok = common.causal_lm(target.parent["folder"])
    rows = prompt_rows(texts, bool(target.parent["chat"]))
    trainer = trainer_cls(
        model=model, reward_funcs=[reward], args=args, **common.trainer_inputs(ctx, rows, tok, "CAUSAL_LM")
    )
    meta = {
        "kind": "policy",
        "algorithm": cfg.algorithm,
        "reward_model": cfg.reward_model,
        "reward_model_id": pm_row["id"],
        "beta": cfg.beta,
        "lora": cfg.lora,
    }
    return result(ctx, target, common.finish(ctx, 
        trainer, tok, target, constitution_version_id=pm_row["constitution_version_id"], meta=meta
    ), used)


def result(ctx: Any, target: Any, trained: Any, used: dict[str, Any]) -> dict[str, Any]:
    """The run's result from its registered model and trainer log (the same for a resumed run): the reward,
    KL and penalised reward per logged step (also put on the Goodhart rows), and the last Goodhart row."""
    cfg, db = ctx.config, ctx.db
    steps = curve(trained.log_history, cfg.beta, cfg.algorithm)
    record_kl(db, ctx.run_id, steps)
    watch = [
        store.loads(r["metrics"])
        for r in db["goodhart"].rows_where("run_id = ?", [ctx.run_id], order_by="step")
    ]
    return {
        "model": target.name,
        "model_id": trained.model_id,
        "path": trained.path,
        "algorithm": cfg.algorithm,
        "steps": trained.steps,
        "reward_first": steps[0]["reward"] if steps else None,
        "reward_last": steps[-1]["reward"] if steps else None,
        "curve": steps,
        "goodhart_last": watch[-1] if watch else None,
        **used,
    }


def record_kl(db: Any, run_id: int, steps: list[dict[str, Any]]) -> None:
    """Put each logged step's KL and penalised reward on the Goodhart row of its samples (drawn at the
    global step before it)."""
    with db.atomic():
        for point in steps:
            for r in db["goodhart"].rows_where("run_id = ? and step = ?", [run_id, point["step"] - 1]):
                metrics = {**store.loads(r["metrics"]), **{k: point[k] for k in ("kl", "kl_completion", "reward_minus_kl")}}
                db["goodhart"].update(r["id"], {"metrics": store.dumps(metrics)})
