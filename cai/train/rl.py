"""RL-CAI: TRL's RLOOTrainer (default) or GRPOTrainer with the preference model as the reward.

TRL 1.16 has no PPO; both trainers sample `num_generations` completions per prompt, score them with
`PMReward` and keep the policy near the reference (the starting policy) with a KL penalty `beta`.
The reward function also records the Goodhart watch on every generation step's samples: one
`goodhart` row per (run_id, step) with metrics = cai.evals.goodhart.stats(...).to_dict() and samples =
the first SAMPLES_KEPT {prompt, completion, reward}; the run's result names the algorithm.
"""

from __future__ import annotations

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


def prompt_rows(texts: list[str], chat: bool) -> list[dict[str, Any]]:
    """The trainer's prompt column: HH text for base models, chat messages for chat models."""
    if chat:
        return [{"prompt": [m for m in parse_hh(t) if m["content"] or m["role"] == "user"]} for t in texts]
    return [{"prompt": t} for t in texts]


def trainer_class(algorithm: str) -> tuple[type, type]:
    """(Config, Trainer) of TRL for the algorithm."""
    if algorithm == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOConfig, RLOOTrainer
    if algorithm == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, GRPOTrainer
    raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")


def run_stage(ctx: Any) -> dict[str, Any]:
    """Stage "rl": RLOO/GRPO on the prompt set against the PM; saves and registers the new policy."""
    from cai import data, models
    from cai.backends import model_path
    from cai.train import common

    cfg, db = ctx.config, ctx.db
    if not (cfg.policy and cfg.reward_model and cfg.prompts):
        raise ValueError("rl needs a policy, a reward_model and a prompts set")
    target = common.start(ctx, cfg.policy)
    pm_row = models.ensure_model(db, cfg.reward_model)
    texts = [r["text"] for r in data.list_prompts(db, cfg.prompts, limit=cfg.limit)]
    if not texts:
        raise ValueError(f"prompt set {cfg.prompts!r} has no prompts")
    ctx.log(
        f"{cfg.algorithm.upper()} on {len(texts)} prompts, beta {cfg.beta}, {cfg.num_generations} per prompt"
    )
    if target.done is not None:  # resumed after its model was registered: the same result
        return result(ctx, target, common.trained_before(ctx, target))
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
    return result(ctx, target, ctx.finish(
        trainer, tok, target, constitution_version_id=pm_row["constitution_version_id"], meta=meta
    ))


def result(ctx: Any, target: Any, trained: Any) -> dict[str, Any]:
    """The run's result from its registered model and trainer log (the same for a resumed run)."""
    cfg, db = ctx.config, ctx.db
    rewards = [h["reward"] for h in trained.log_history if "reward" in h]
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
        "reward_first": rewards[0] if rewards else None,
        "reward_last": rewards[-1] if rewards else None,
        "goodhart_last": watch[-1] if watch else None,
    }
