"""Stage "revision-scores": preference-model scores of every response step of an SL run (cai.evals.revisions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cai.config import MODELS, StageConfig, _f
from cai.stages.base import Stage

if TYPE_CHECKING:
    from cai.run_context import RunContext


@dataclass
class RevisionScoresConfig(StageConfig):
    kind: ClassVar[str] = "revision-scores"
    run: int = _f(0, "SL run whose chain steps to score.", min=1, ref="runs:sl", required='choose the SL run whose steps to score')
    pm: str = _f("", "Preference model that scores each step.", ref=MODELS, required='name a preference model')
    batch_size: int = _f(8, "Steps per batch.", min=1)


def run(ctx: RunContext) -> dict[str, Any]:
    """Score each response step of run `config.run` with `config.pm`, batch by batch; resumes past scored steps."""
    from dataclasses import asdict

    from cai.evals import revisions
    from cai.run_context import get_run

    cfg, db = ctx.config, ctx.db
    assert isinstance(cfg, RevisionScoresConfig)
    source = get_run(db, cfg.run)
    if source["kind"] != "sl":
        raise ValueError(f"run: run {cfg.run} is a {source['kind']!r} run, not an 'sl' run")
    steps = revisions.response_steps(db, cfg.run)
    if not steps:
        raise ValueError(f"run: run {cfg.run} has no chain steps to score")
    todo = [s for s in steps if s["pm_run_id"] != ctx.run_id]
    done, total = len(steps) - len(todo), len(steps)
    ctx.begin(done, total)
    ctx.log(f"scoring {len(todo)} of {total} response steps of run {cfg.run} with {cfg.pm}")
    score = revisions.score_fn()
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start : start + cfg.batch_size]
        values = score(cfg.pm, [s["prompt"] for s in batch], [s["output"] for s in batch], db=db,
                       batch_size=cfg.batch_size)
        with db.atomic():
            for s, v in zip(batch, values, strict=True):
                db.table("chain_steps").update(s["id"], {"pm_score": float(v), "pm_run_id": ctx.run_id})
        done += len(batch)
        ctx.progress(done, total)
    by_revision = revisions.revision_scores(db, cfg.run)  # red-team chains only (Figure 5)
    helpful = revisions.revision_scores(db, cfg.run, revisions.HELPFUL_MODES)
    ctx.log("mean score by revision, red-team chains: "
            + (", ".join(f"{r.revision}: {r.mean:.4f} (n={r.n})" for r in by_revision) or "none"))
    if helpful:
        ctx.log("helpful chains (not in Figure 5): "
                + ", ".join(f"{r.revision}: {r.mean:.4f} (n={r.n})" for r in helpful))
    return {"run": cfg.run, "pm": cfg.pm, "steps": total, "by_revision": [asdict(r) for r in by_revision],
            "helpful": [asdict(r) for r in helpful]}


STAGE = Stage("revision-scores", RevisionScoresConfig, "PM scores per revision",
              "preference-model scores of every step of an SL run's chains", run)
