"""Stage "temperature": the harmlessness PM's score of a policy's answers at T = 0 and T = 1 (the paper's Fig. 10).

The policy answers each held-out red-team prompt once greedily (T = 0) and `samples` times at each temperature
above 0, each answer seeded by (seed, prompt, temperature, k) so a resumed run draws the same answers; the
preference model scores every answer, and each (prompt, temperature, k) is one `temperature_samples` row.
The pipeline report reads those rows (the mean per temperature and the paired difference per prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cai.config import MODELS, PROMPT_SETS, ConfigError, StageConfig, _f
from cai.stages.base import Stage

if TYPE_CHECKING:
    from cai.run_context import RunContext


@dataclass
class TemperatureConfig(StageConfig):
    kind: ClassVar[str] = "temperature"
    policy: str = _f("", "Policy whose answers to score (the RL-CAI model, else the SL-CAI model).", ref=MODELS,
                     required="name the policy to sample", subject=True)
    pm: str = _f("", "Harmlessness preference model that scores each answer.", ref=MODELS,
                 required="name a preference model")
    prompts: str = _f("", "Red-team prompt set to answer.", ref=PROMPT_SETS, required="choose a prompt set")
    offset: int = _f(0, "Skip the first N prompts of the set (those the earlier stages used: held out).", min=0)
    limit: int | None = _f(None, "Use only N prompts (after the offset).", min=1)
    temperatures: str = _f("0, 1", "Sampling temperatures, comma-separated (paper: 0 and 1).")
    samples: int = _f(1, "Answers per prompt at each temperature above 0 (T = 0 is greedy: one answer).", min=1)
    max_new_tokens: int = _f(64, "Token limit per answer.", min=1)
    batch_size: int = _f(8, "Answers generated and scored at once.", min=1)
    seed: int = _f(0, "Sampling seed.")

    def validate(self) -> None:
        temps = self.temperature_list()
        if len(temps) < 2 or len(set(temps)) != len(temps):
            raise ConfigError(f"temperatures: at least two different values, e.g. 0, 1; got {self.temperatures!r}")

    def temperature_list(self) -> list[float]:
        try:
            temps = [float(t) for t in self.temperatures.replace(",", " ").split()]
        except ValueError:
            raise ConfigError(f"temperatures: numbers separated by commas, got {self.temperatures!r}") from None
        if any(t < 0 for t in temps):
            raise ConfigError(f"temperatures: 0 or more, got {self.temperatures!r}")
        return temps


def plan(cfg: TemperatureConfig, prompts: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float, int]]:
    """(prompt row, temperature, k) for every answer to draw: one greedy answer, `samples` at each T > 0."""
    return [(p, t, k) for t in cfg.temperature_list() for p in prompts for k in range(1 if t == 0 else cfg.samples)]


def run(ctx: RunContext) -> dict[str, Any]:
    """Answer, score and store each planned (prompt, temperature, k) not stored yet; the mean score per temperature."""
    from cai import data, store
    from cai.backends.base import SamplingParams, sample_seed
    from cai.evals import revisions

    cfg, db = ctx.config, ctx.db
    assert isinstance(cfg, TemperatureConfig)
    ctx.link(model=cfg.policy)
    rows = data.list_prompts(db, cfg.prompts)[cfg.offset:]
    rows = rows[: cfg.limit] if cfg.limit else rows
    if not rows:
        raise ValueError(f"prompts: {cfg.prompts} has no prompts after the first {cfg.offset}")
    items = plan(cfg, rows)
    todo = ctx.resume(items, lambda it: (it[0]["id"], it[1], it[2]), "temperature_samples",
                      ("prompt_id", "temperature", "sample"))
    ctx.log(f"{len(items)} answers of {cfg.policy} to {len(rows)} prompts of {cfg.prompts} (from #{cfg.offset + 1}) "
            f"at T = {cfg.temperatures} ({len(items) - len(todo)} stored), scored by {cfg.pm}")
    score = revisions.score_fn()

    def batches(todo: list[Any]) -> list[list[Any]]:  # one temperature per backend call
        out: list[list[Any]] = []
        for it in todo:
            if out and out[-1][0][1] == it[1] and len(out[-1]) < cfg.batch_size:
                out[-1].append(it)
            else:
                out.append([it])
        return out

    def build(backend: Any, group: list[Any], first: int) -> int:
        temp = group[0][1]
        seeds = tuple(sample_seed(cfg.seed, "temperature", p["id"], t, k) for p, t, k in group)
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=temp, seeds=seeds)
        outs = backend.generate([backend.render(p["text"]) for p, _, _ in group], params)
        answers = [o.text.strip() for o in outs]
        values = score(cfg.pm, [p["text"] for p, _, _ in group], answers, db=db, batch_size=cfg.batch_size)
        db.table("temperature_samples").insert_all([
            {"run_id": ctx.run_id, "prompt_id": p["id"], "temperature": t, "sample": k, "prompt": p["text"],
             "answer": a, "pm_score": float(v), "seed": s, "created_at": store.now()}
            for (p, t, k), a, v, s in zip(group, answers, values, seeds, strict=True)])
        return sum(o.completion_tokens for o in outs)

    ctx.work(items, model=cfg.policy, todo=todo, build=build, batches=batches)
    means = {str(t): round(m, 6) for t, m in db.execute(
        "select temperature, avg(pm_score) from temperature_samples where run_id = ? group by temperature "
        "order by temperature", [ctx.run_id]).fetchall()}
    ctx.log("mean PM score by temperature: " + ", ".join(f"T={t}: {m:.4f}" for t, m in means.items()))
    return {"policy": cfg.policy, "pm": cfg.pm, "prompts": len(rows), "answers": len(items), "mean_score": means}


STAGE = Stage("temperature", TemperatureConfig, "Harmlessness at T = 0 vs T = 1",
              "PM scores of a policy's answers at each sampling temperature (the paper's Fig. 10)", run)
