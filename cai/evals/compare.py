"""The automatic tournament between models (the paper's Figure 2 without crowdworkers), as pure functions.

Every pair of models is judged on every prompt of a dimension (harmlessness on red-team prompts, helpfulness
on helpful prompts) by a judge that gives P(first answer better): the trained PM through its score difference
(P = sigmoid(score_a - score_b), the Bradley-Terry reading of a reward model), or a feedback model through the
AI-feedback labeller (both orders, a comparison principle). A judgement becomes a battle row (a P within the tie
band of 0.5 is a tie), and the battles are rated per dimension and judge with the Bradley-Terry code of
cai.evals.ratings, with bootstrap intervals. The stage (cai.stages.compare) stores answers, judgements and
ratings; the report (cai.pipeline.report.fig2) rebuilds its differences from the stored judgements.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cai.evals import ratings
from cai.feedback import option_p

METHOD = "bt"


def pm_p(score_a: float, score_b: float) -> float:
    """P(answer a better) from a preference model's two scores: sigmoid(score_a - score_b)."""
    return option_p(score_a, score_b)


def winner(p: float, band: float) -> str:
    """A judgement as a battle outcome: a P within `band` of 0.5 is a tie."""
    if p > 0.5 + band:
        return "model_a"
    if p < 0.5 - band:
        return "model_b"
    return "tie"


def model_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair once, the earlier model first (the judge's both orders cancel the position)."""
    return list(itertools.combinations(models, 2))


def principle_sha256(texts: Iterable[str]) -> str:
    """The hash of the exact principle texts a judgement read (sorted, joined by a blank line)."""
    return hashlib.sha256("\n\n".join(sorted(texts)).encode()).hexdigest()


def battles(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Judgement rows (model_a, model_b, winner, dimension, judge) as a battles table in FastChat's format."""
    cols = ["model_a", "model_b", "winner", "dimension", "judge", "prompt_id"]
    return pd.DataFrame([{c: r[c] for c in cols} for r in rows], columns=cols)


def rate_battles(df: pd.DataFrame, n_boot: int, seed: int) -> list[ratings.Rating]:
    """Bradley-Terry ratings with percentile intervals from `n_boot` bootstrap resamples of the battles."""
    return ratings.rate(df[["model_a", "model_b", "winner"]], METHOD, rounds=n_boot, seed=seed)


def rating_rows(judgements: Sequence[Mapping[str, Any]], roles: Mapping[str, str], n_boot: int,
                seed: int) -> list[dict[str, Any]]:
    """One compare_ratings row per (judge, dimension, model): the ratings of the stored judgements."""
    df = battles(judgements)
    out = []
    for (judge, dimension), part in df.groupby(["judge", "dimension"], sort=True):
        for r in rate_battles(part, n_boot, seed):
            out.append({"judge": judge, "dimension": dimension, "model": r.model, "role": roles.get(r.model, r.model),
                        "method": METHOD, "rating": round(r.rating, 4),
                        "ci_low": None if r.ci_low is None else round(r.ci_low, 4),
                        "ci_high": None if r.ci_high is None else round(r.ci_high, 4), "n": r.n, "note": r.note})
    return out


def rating_difference(judgements: Sequence[Mapping[str, Any]], better: str, worse: str, n_boot: int,
                      seed: int, level: float = 0.95) -> dict[str, Any]:
    """rating(better) - rating(worse) of one judge's judgements on one dimension, with a percentile interval
    from bootstrap resamples of the battles (the same resamples for both models: a paired interval)."""
    df = battles(judgements)
    if df.empty or better not in set(df.model_a) | set(df.model_b) or worse not in set(df.model_a) | set(df.model_b):
        return {"delta": None, "ci": [None, None], "n": len(df)}
    point = ratings.point_ratings(df[["model_a", "model_b", "winner"]], METHOD)
    delta = round(point[better] - point[worse], 4)
    lo = hi = None
    if n_boot:
        boot = ratings.bootstrap(df[["model_a", "model_b", "winner"]], METHOD, rounds=n_boot, seed=seed)
        diffs = (boot[better] - boot[worse]).to_numpy()
        q = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
        lo, hi = round(float(q[0]), 4), round(float(q[1]), 4)
    return {"delta": delta, "ci": [lo, hi], "n": len(df)}


def order_agreement(auto: Mapping[str, float], human: Mapping[str, float]) -> dict[str, Any]:
    """How often two ratings order a pair of models alike, over the pairs both rate (a tie in either: not
    counted), and Spearman's rank correlation over the models both rate."""
    common = sorted(set(auto) & set(human))
    pairs = [(a, b) for a, b in itertools.combinations(common, 2)
             if auto[a] != auto[b] and human[a] != human[b]]
    agree = sum((auto[a] > auto[b]) == (human[a] > human[b]) for a, b in pairs)
    spearman = None
    if len(common) >= 2:
        s = pd.Series([auto[m] for m in common]).rank().corr(pd.Series([human[m] for m in common]).rank())
        spearman = None if pd.isna(s) else round(float(s), 4)
    return {"models": common, "pairs": len(pairs), "agree": agree,
            "pairwise_agreement": round(agree / len(pairs), 4) if pairs else None, "spearman": spearman}
