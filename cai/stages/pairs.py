"""Stage "pairs": a policy samples two responses per prompt, the input of AI labelling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cai.backends.builtin import POLICY_DEFAULT
from cai.config import MODELS, PROMPT_SETS, ConfigError, StageConfig, _f
from cai.stages.base import Stage

if TYPE_CHECKING:
    from cai.run_context import RunContext


@dataclass
class PairsConfig(StageConfig):
    kind: ClassVar[str] = "pairs"
    prompts: str = _f("", "Red-team prompt set to sample response pairs for.", ref=PROMPT_SETS, required='name a red-team prompt set (import one with `cai prompts import`)')
    model: str = _f(POLICY_DEFAULT, "Policy that samples the two responses (e.g. the SL-CAI model).", ref=MODELS, subject=True)
    limit: int | None = _f(None, "Use only the first N prompts.", min=1)
    batch_size: int = _f(8, "Prompts per batch.", min=1)
    temperature: float = _f(1.0, "Sampling temperature for the two responses.", min=0.0)
    max_new_tokens: int = _f(128, "Token limit per response.", min=1)
    seed: int = _f(0, "Sampling seed.")

    def validate(self) -> None:
        if not self.prompts:
            raise ConfigError("prompts: name a red-team prompt set")


def run(ctx: RunContext) -> dict[str, Any]:
    """The policy samples two responses per prompt; one response_pairs row per prompt."""
    from cai import data, store
    from cai.backends.base import SamplingParams, sample_seed

    cfg, db = ctx.config, ctx.db
    assert isinstance(cfg, PairsConfig)
    model = ctx.link(model=cfg.model)
    assert model is not None
    rows = data.list_prompts(db, cfg.prompts, limit=cfg.limit)
    todo = ctx.resume(rows, lambda r: r["id"], "response_pairs", "prompt_id")
    if cfg.temperature == 0:
        ctx.log("temperature 0: both responses of a pair will be the same greedy sample")

    def build(backend: Any, chunk: list[dict[str, Any]], first: int) -> int:
        # One seed per (prompt, response a/b): a pair does not depend on the batch it was sampled in.
        seeds = tuple(sample_seed(cfg.seed, "pairs", r["id"], k) for r in chunk for k in range(2))
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seeds=seeds)
        outs = backend.generate([backend.render(r["text"]) for r in chunk for _ in range(2)], params)
        records = []
        for i, r in enumerate(chunk):
            a, b = outs[2 * i], outs[2 * i + 1]
            meta = {
                "finish": [a.finish_reason, b.finish_reason],
                "tokens": [a.completion_tokens, b.completion_tokens],
                "temperature": cfg.temperature,
                "seeds": list(seeds[2 * i : 2 * i + 2]),
            }
            records.append({
                "run_id": ctx.run_id, "prompt_id": r["id"], "prompt": r["text"], "response_a": a.text.strip(),
                "response_b": b.text.strip(), "model_id": model["id"], "meta": store.dumps(meta),
                "created_at": store.now(),
            })
        db.table("response_pairs").insert_all(records)
        return sum(o.completion_tokens for o in outs)

    done = ctx.work(rows, model=cfg.model, todo=todo, build=build, batches=cfg.batch_size)
    ctx.log(f"{done} response pairs from {cfg.model}")
    return {"pairs": done, "model": cfg.model, "model_id": model["id"], "prompts": cfg.prompts}


STAGE = Stage("pairs", PairsConfig, "Response pairs (sample two answers)", "response pairs sampled from a policy", run)
