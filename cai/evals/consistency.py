"""Judge consistency: do a feedback model's two option orders pick the same response, and does it agree
with humans beyond chance?

A reading p (probability that a given response is better) is a verdict for that response above
0.5 + band, against it below 0.5 - band, and a tie inside the band; the two orders of a pair are
consistent when their verdicts are equal. Pure functions over floats and row dicts; the stages store
the per-pair flag (`consistent` columns) and these summaries.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

TIE_BAND = 0.01  # |p - 0.5| <= 0.01 is a tie: e.g. the tiny model's p = 0.5003 is no preference
INCONSISTENT = ("average", "tie")  # what a pair whose orders disagree gets: the order average, or p = 0.5


def verdict(p: float, band: float = TIE_BAND) -> str:
    """'yes' (the response is better), 'no', or 'tie' within `band` of 0.5."""
    if band < 0 or band >= 0.5:
        raise ValueError(f"tie band must be in [0, 0.5), got {band}")
    return "yes" if p > 0.5 + band else "no" if p < 0.5 - band else "tie"


def credit(p: float, band: float = TIE_BAND) -> float:
    """Agreement credit of p(the right response is better): 1, 0.5 for a tie (within the band), or 0."""
    return {"yes": 1.0, "tie": 0.5, "no": 0.0}[verdict(p, band)]


def mean(xs: list[float]) -> float | None:
    """The mean to 4 places (None for no values): how eval summaries report a rate."""
    return round(sum(xs) / len(xs), 4) if xs else None


def consistent(p_one: float | None, p_other: float | None, band: float = TIE_BAND) -> bool | None:
    """Whether two orders' readings of the same p (same response, options swapped) give one verdict;
    None when an order was not read."""
    if p_one is None or p_other is None:
        return None
    return verdict(p_one, band) == verdict(p_other, band)


def resolve(p_avg: float, is_consistent: bool | None, policy: str = "average") -> float:
    """The label a pair keeps: its order average, or 0.5 under policy 'tie' when its orders disagree."""
    if policy not in INCONSISTENT:
        raise ValueError(f"inconsistent must be one of {', '.join(INCONSISTENT)}, got {policy!r}")
    return 0.5 if policy == "tie" and is_consistent is False else p_avg


def rate(flags: Iterable[bool | None]) -> dict[str, Any]:
    """{"n": pairs read in both orders, "rate": the share of them that are consistent (None if n = 0)}."""
    seen = [f for f in flags if f is not None]
    return {"n": len(seen), "rate": round(sum(seen) / len(seen), 4) if seen else None}


def by_group(pairs: Iterable[tuple[str, bool | None]]) -> dict[str, dict[str, Any]]:
    """`rate` per group name (principle, feedback model), sorted by name."""
    groups: dict[str, list[bool | None]] = defaultdict(list)
    for name, flag in pairs:
        groups[name].append(flag)
    return {k: rate(v) for k, v in sorted(groups.items())}


def readings_consistency(readings: Sequence[Any], band: float = TIE_BAND) -> tuple[bool | None, dict[str, bool | None]]:
    """A label's consistency from its readings (each with .order 'AB'/'BA', .principle, .p = p(first
    better)): over all readings (each order's mean p), and per principle."""

    def flag(rs: Sequence[Any]) -> bool | None:
        ab = [r.p for r in rs if r.order == "AB"]
        ba = [r.p for r in rs if r.order == "BA"]
        if not ab or not ba:
            return None
        return consistent(sum(ab) / len(ab), sum(ba) / len(ba), band)

    names = list(dict.fromkeys(r.principle for r in readings))
    return flag(readings), {n: flag([r for r in readings if r.principle == n]) for n in names}


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' categorical labels: (p_o - p_e) / (1 - p_e); None if undefined."""
    if len(a) != len(b):
        raise ValueError(f"kappa needs two label lists of one length, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if p_e >= 1.0:
        return None
    return round((p_o - p_e) / (1.0 - p_e), 4)


def position_labels(rows: Sequence[dict[str, Any]], band: float = TIE_BAND) -> tuple[list[str], list[str]]:
    """Human and AI picks by position, one per scored order of each agreement row (p_first: the human's
    choice shown as A; p_second: as B), so the human side varies and kappa is defined."""
    human: list[str] = []
    ai: list[str] = []
    for r in rows:
        for p, shown in ((r.get("p_first"), "A"), (r.get("p_second"), "B")):
            if p is None:
                continue
            other = "B" if shown == "A" else "A"
            human.append(shown)
            ai.append({"yes": shown, "no": other, "tie": "tie"}[verdict(p, band)])
    return human, ai
