"""Rater quality: agreement with the other raters, inter-rater reliability, gold accuracy, suspicious raters.

Pure functions over a votes table with `item` (what several raters can judge alike: see
cai.arena.rater_votes), `rater` and `label` (the winning model's name, or "tie"). Thresholds are module
constants, stated in every flag's text so an admin sees why a rater was flagged.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

ALWAYS_A_SHARE = 0.9  # flag a rater who picks position A in at least 90% of decisive votes...
ALWAYS_A_MIN_VOTES = 10  # ...over at least 10 decisive votes (a fair rater: P(>= 9 of 10 A) = 1.1%)
TOO_FAST_SECONDS = 3.0  # flag a rater whose median time from answers shown to vote is under 3 s...
TOO_FAST_MIN_VOTES = 5  # ...over at least 5 timed votes (two answers cannot be read that fast)


def majority_agreement(votes: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per rater: on items others also judged, how often the rater's label equals the others' majority.

    Leave-one-out (the rater's own vote is not part of the majority); an item whose other votes tie
    between labels has no majority and is skipped. {"rater": {"shared": n, "agreement": rate | None}}.
    """
    out: dict[str, dict[str, Any]] = {}
    by_item = {k: list(zip(g["rater"], g["label"], strict=True)) for k, g in votes.groupby("item", sort=False)}
    for rater in sorted(votes["rater"].unique()):
        hits = shared = 0
        for rows in by_item.values():
            mine = [lab for r, lab in rows if r == rater]
            others = Counter(lab for r, lab in rows if r != rater)
            if not mine or not others:
                continue
            top = others.most_common(2)
            if len(top) > 1 and top[0][1] == top[1][1]:
                continue
            for lab in mine:
                shared += 1
                hits += lab == top[0][0]
        out[str(rater)] = {"shared": shared, "agreement": round(hits / shared, 4) if shared else None}
    return out


def krippendorff_alpha(votes: pd.DataFrame) -> dict[str, Any]:
    """Krippendorff's alpha (nominal) over items judged by more than one rater; handles any number of
    raters per item. alpha = 1 - (n - 1) * D_o / sum_{c != k} n_c n_k, from the coincidence matrix
    o_ck = sum over items of (pairs of values c, k from different votes) / (m_item - 1)."""
    coincide: Counter[tuple[str, str]] = Counter()
    items = 0
    for _, g in votes.groupby("item", sort=False):
        labels = list(g["label"])
        m = len(labels)
        if m < 2:
            continue
        items += 1
        for i in range(m):
            for j in range(m):
                if i != j:
                    coincide[(labels[i], labels[j])] += 1.0 / (m - 1)  # type: ignore[assignment]
    n_c: Counter[str] = Counter()
    for (c, _), v in coincide.items():
        n_c[c] += v  # type: ignore[assignment]
    n = sum(n_c.values())
    observed = sum(v for (c, k), v in coincide.items() if c != k)
    expected = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k)
    alpha = None if items == 0 or expected == 0 else round(1.0 - (n - 1) * observed / expected, 4)
    return {"alpha": alpha, "items": items, "votes": int(round(n))}


def gold_accuracy(votes: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per rater, accuracy on gold votes (columns rater, correct: 1 right, 0 wrong, 0.5 tie)."""
    out = {}
    for rater, g in votes.groupby("rater", sort=True):
        out[str(rater)] = {"gold": len(g), "gold_accuracy": round(float(g["correct"].mean()), 4) if len(g) else None}
    return out


def flags(votes: pd.DataFrame) -> dict[str, list[str]]:
    """Suspicious-rater flags from columns rater, winner (model_a/model_b/tie...) and seconds (from both
    answers shown to the vote; may be missing), each with its threshold in the text."""
    out: dict[str, list[str]] = {}
    for rater, g in votes.groupby("rater", sort=True):
        found = []
        decisive = g[g["winner"].isin(["model_a", "model_b"])]
        if len(decisive) >= ALWAYS_A_MIN_VOTES:
            share = float((decisive["winner"] == "model_a").mean())
            if share >= ALWAYS_A_SHARE:
                found.append(f"always A: {share:.0%} of {len(decisive)} decisive votes for position A "
                             f"(flag at >= {ALWAYS_A_SHARE:.0%} of >= {ALWAYS_A_MIN_VOTES})")
        timed = g["seconds"].dropna() if "seconds" in g else pd.Series(dtype=float)
        if len(timed) >= TOO_FAST_MIN_VOTES:
            median = float(timed.median())
            if median < TOO_FAST_SECONDS:
                found.append(f"too fast: median {median:.1f} s from answers shown to vote over {len(timed)} votes "
                             f"(flag under {TOO_FAST_SECONDS:g} s over >= {TOO_FAST_MIN_VOTES})")
        out[str(rater)] = found
    return out
