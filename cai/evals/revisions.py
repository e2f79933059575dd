"""Preference-model scores per revision of SL chains (the paper's Figure 5: score vs number of revisions).

Every response step of an SL run's chains (the initial response and each revision; critiques are not
responses) is scored by a preference model in batches and the score stored on the step, tagged with
the scoring run, so a resumed run skips what it scored and a new run with another PM rescores all.
The paper's Figure 5 is over the red-team chains (modes critique and direct): the means per revision
are taken per prompt set, never over helpful-mode chains, whose one response would otherwise land in
revision 0; the helpful chains' mean is reported beside it, each point with its n.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

_STEPS = (
    "select s.id, c.prompt, s.output, s.round, s.pm_run_id from chain_steps s join chains c on c.id = s.chain_id "
    "where c.run_id = ? and s.kind in ('initial', 'revision') order by s.id"
)


RED_TEAM_MODES = ("critique", "direct")  # the chains of the paper's Figure 5
HELPFUL_MODES = ("helpful",)


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


def revision_scores(
    db: Database, chain_run: int, modes: tuple[str, ...] = RED_TEAM_MODES
) -> list[RevisionScore]:
    """The stored per-revision means of an SL run's chains of the given modes (default: the red-team
    chains, as in the paper's Figure 5; `HELPFUL_MODES` for the helpful chains)."""
    marks = ", ".join("?" for _ in modes)
    rows = db.execute(
        "select s.round, s.pm_score from chain_steps s join chains c on c.id = s.chain_id "
        f"where c.run_id = ? and c.mode in ({marks}) and s.kind in ('initial', 'revision')",
        [chain_run, *modes],
    ).fetchall()
    return mean_by_revision({"round": r, "pm_score": p} for r, p in rows)


def response_steps(db: Database, chain_run: int) -> list[dict[str, Any]]:
    """The response steps (initial and revisions) of an SL run's chains: id, prompt, output, round, pm_run_id."""
    return [dict(zip(("id", "prompt", "output", "round", "pm_run_id"), r, strict=True))
            for r in db.execute(_STEPS, [chain_run]).fetchall()]


def score_fn() -> Any:
    """The RL stage's scorer: score(pm_spec, prompts, responses, db=..., batch_size=...) -> list[float]."""
    from cai.train.reward import score

    return score
