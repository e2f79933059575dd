"""Which two models an arena battle shows: every pair equally, or the pairs whose order is least certain."""

from __future__ import annotations

import math
import random

import pandas as pd

from cai.evals.ratings.battles import RatingParams, bradley_terry

PAIRINGS = ("uniform", "uncertain")


def pair_weights(model_names: list[str], votes: pd.DataFrame, policy: str) -> dict[tuple[str, str], float]:
    """Sampling weight of each unordered pair: equal, or larger where the pair's order is least certain.

    "uncertain": with BT win probability p (clipped to [0.02, 0.98]), d = logit(p) and n direct votes,
    the chance the order is wrong is about erfc(z / sqrt 2) for z = |d| sqrt((n + 1) p (1 - p)),
    shrunk by sqrt(n + 1) so unplayed pairs come first; a floor of 0.05 keeps every pair possible.
    """
    pairs = [(a, b) for i, a in enumerate(model_names) for b in model_names[i + 1 :]]
    if policy == "uniform" or votes.empty:
        return {p: 1.0 for p in pairs}
    if policy != "uncertain":
        raise ValueError(f"pairing {policy!r} is not one of {', '.join(PAIRINGS)}")
    known = votes[votes["model_a"].isin(model_names) & votes["model_b"].isin(model_names)]
    strength = bradley_terry(known, RatingParams(scale=1.0, base=math.e, init=0.0)) if len(known) else {}
    counts = {p: 0 for p in pairs}
    for a, b in zip(known["model_a"], known["model_b"], strict=True):
        counts[tuple(sorted((a, b)))] = counts.get(tuple(sorted((a, b))), 0) + 1  # type: ignore[index]
    out = {}
    for a, b in pairs:
        # Clip: an undefeated pair's MLE runs off to infinity, which must read as certain, not unknown.
        p = min(max(1.0 / (1.0 + math.exp(-(strength.get(a, 0.0) - strength.get(b, 0.0)))), 0.02), 0.98)
        d = math.log(p / (1 - p))
        n = counts.get(tuple(sorted((a, b))), 0)  # type: ignore[arg-type]
        z = abs(d) * math.sqrt((n + 1) * p * (1 - p))
        out[(a, b)] = 0.05 + math.erfc(z / math.sqrt(2)) / math.sqrt(n + 1)
    return out


def pick_pair(weights: dict[tuple[str, str], float], rng: random.Random) -> tuple[str, str]:
    """A pair drawn by weight, then placed A/B by a fair coin."""
    pairs = sorted(weights)
    a, b = rng.choices(pairs, weights=[weights[p] for p in pairs], k=1)[0]
    return (a, b) if rng.random() < 0.5 else (b, a)
