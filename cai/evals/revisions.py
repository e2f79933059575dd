"""Preference-model scores per revision of SL chains (the paper's Figure 5: score vs number of revisions).

Every response step of an SL run's chains (the initial response and each revision; critiques are not
responses) is scored by a preference model in batches and the score stored on the step, tagged with
the scoring run, so a resumed run skips what it scored and a new run with another PM rescores all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlite_utils import Database

from cai import runs

_STEPS = (
    "select s.id, c.prompt, s.output, s.round, s.pm_run_id from chain_steps s join chains c on c.id = s.chain_id "
    "where c.run_id = ? and s.kind in ('initial', 'revision') order by s.id"
)


@dataclass(frozen=True)
class RevisionScore:
    revision: int  # 0 = the initial response, k = after k revisions
    mean: float
    n: int


def mean_by_revision(rows: Iterable[Mapping[str, Any]]) -> list[RevisionScore]:
    """Mean PM score per revision index over steps with a score (rows: `round`, `pm_score`), by index."""
    sums: dict[int, list[float]] = {}
    for r in rows:
        if r["pm_score"] is not None:
            sums.setdefault(int(r["round"]), []).append(float(r["pm_score"]))
    return [RevisionScore(k, round(sum(v) / len(v), 6), len(v)) for k, v in sorted(sums.items())]


def revision_scores(db: Database, chain_run: int) -> list[RevisionScore]:
    """The stored per-revision means of an SL run's chains (for the UI and the CLI)."""
    rows = db.execute(
        "select s.round, s.pm_score from chain_steps s join chains c on c.id = s.chain_id "
        "where c.run_id = ? and s.kind in ('initial', 'revision')",
        [chain_run],
    ).fetchall()
    return mean_by_revision({"round": r, "pm_score": p} for r, p in rows)


def score_fn() -> Any:
    """The RL stage's scorer: score(pm_spec, prompts, responses, db=..., batch_size=...) -> list[float]."""
    from cai.train.reward import score

    return score


def run_stage(ctx: Any) -> dict[str, Any]:
    """Stage "revision-scores": score each response step of run `config.run` with `config.pm`, batch by batch."""
    cfg, db = ctx.config, ctx.db
    source = runs.get_run(db, cfg.run)
    if source["kind"] != "sl":
        raise ValueError(f"run: run {cfg.run} is a {source['kind']!r} run, not an 'sl' run")
    steps = [dict(zip(("id", "prompt", "output", "round", "pm_run_id"), r, strict=True))
             for r in db.execute(_STEPS, [cfg.run]).fetchall()]
    if not steps:
        raise ValueError(f"run: run {cfg.run} has no chain steps to score")
    todo = [s for s in steps if s["pm_run_id"] != ctx.run_id]
    done, total = len(steps) - len(todo), len(steps)
    ctx.begin(done, total)
    ctx.log(f"scoring {len(todo)} of {total} response steps of run {cfg.run} with {cfg.pm}")
    score = score_fn()
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start : start + cfg.batch_size]
        values = score(cfg.pm, [s["prompt"] for s in batch], [s["output"] for s in batch], db=db,
                       batch_size=cfg.batch_size)
        with db.atomic():
            for s, v in zip(batch, values, strict=True):
                db.table("chain_steps").update(s["id"], {"pm_score": float(v), "pm_run_id": ctx.run_id})
        done += len(batch)
        ctx.progress(done, total)
    by_revision = revision_scores(db, cfg.run)
    ctx.log("mean score by revision: " + ", ".join(f"{r.revision}: {r.mean:.4f} (n={r.n})" for r in by_revision))
    return {"run": cfg.run, "pm": cfg.pm, "steps": total, "by_revision": [asdict(r) for r in by_revision]}
