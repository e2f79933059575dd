"""Descriptive statistics of preference labels: human-by-AI choice counts per scored order, and what an
AI-labelled set says on its own (which response won, how sure, per principle).

Pure functions over the row dicts `cai.queries.labels` returns; no I/O.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def _pick(p_chosen: float, chosen: str, other: str) -> str:
    return chosen if p_chosen > 0.5 else other if p_chosen < 0.5 else "tie"


def confusion(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Human choice by AI choice, one count per scored order: chosen shown as (A) the human 'says A', as (B) 'B'.

    `rows` carry p_first (p of the human's choice when shown as (A)) and p_second (shown as (B)); None = that
    order was not scored. p = 0.5 exactly is a tie.
    """
    counts = {("A", "A"): 0, ("A", "B"): 0, ("A", "tie"): 0, ("B", "A"): 0, ("B", "B"): 0, ("B", "tie"): 0}
    for r in rows:
        if r["p_first"] is not None:
            counts[("A", _pick(r["p_first"], "A", "B"))] += 1
        if r["p_second"] is not None:
            counts[("B", _pick(r["p_second"], "B", "A"))] += 1
    return pd.DataFrame(
        [{"human \\ AI": f"human chose {h}", **{f"AI chose {a}": counts[(h, a)] for a in ("A", "B", "tie")}}
         for h in ("A", "B")]
    )


def ai_summary(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """What an AI-labelled set says without human labels: which response won, how sure, per principle.

    `pairs` as `cai.queries.labels.ai_pairs` gives them (p, p_first, principles). Returns n, labels (counts of
    first/second better and ties by p_first), mean_p, confident (p >= 0.9) and per_principle {n, mean_p}.
    """
    firsts = [r["p_first"] for r in pairs if r["p_first"] is not None]
    dist = {"first response better": sum(p > 0.5 for p in firsts), "second response better": sum(p < 0.5 for p in firsts),
            "tie (p = 0.5)": sum(p == 0.5 for p in firsts)}
    per: dict[str, list[float]] = {}
    for r in pairs:
        for name in dict.fromkeys(r["principles"]):
            per.setdefault(name, []).append(r["p"])
    ps = [r["p"] for r in pairs]
    return {
        "n": len(pairs), "labels": dist, "mean_p": sum(ps) / len(ps) if ps else None,
        "confident": sum(p >= 0.9 for p in ps),
        "per_principle": {k: {"n": len(v), "mean_p": sum(v) / len(v)} for k, v in sorted(per.items())},
    }
