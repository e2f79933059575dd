"""Agreement of AI soft labels with human choices: accuracy, calibration, per-principle accuracy, position bias.

A feedback model labels each human pair (one comparison principle drawn per pair, seeded, from the
chosen ones; both option orders), and the label p(chosen better) is compared with the human's choice.

Stored for the UI: per pair, a row in `agreement_pairs` (run_id, pair_id, principle, p_chosen = the
order-averaged p(human-chosen better), p_first = p(chosen) with chosen shown as (A), p_second = with
chosen shown as (B) or null with one order, meta = raw readings); per run, `runs.result` =
{"n", "agreement", "mean_p_chosen", "ece", "calibration": [{"lo", "hi", "n", "mean_p", "frequency"}],
"per_principle": {name: {"n", "agreement"}}, "position": {"chosen_shown_A", "chosen_shown_B",
"mean_p_option_A"}, "prefs", "feedback_model"}. Agreement gives ties (p within `tie_band` of 0.5)
half credit, and reports them (`ties`, `agreement_decisive` over the rest). Judge rigor (see
cai.evals.consistency): per pair `consistent` (both orders give one verdict), `consistency` =
{"n", "rate", "per_principle"}, and `kappa` = Cohen's kappa of the AI's pick against the human's pick
by position, one per scored order (so the human side is not constant).

The headline (issue 28) is `order_averaged` = {"agreement", "ci_low", "ci_high", "n"}: each pair's credit averaged
over its scored orders, then over pairs, with a 95% Wilson interval over the n pairs. A judge that always picks
(A) scores exactly 50% there, whatever its p values. `judge_warning` reads consistency and kappa: when the judge
follows position (consistency under 50%) or is at chance (kappa <= 0.1), the page says so before any number.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from cai.evals import consistency as C
from cai.evals.consistency import credit, mean


def calibration(ps: list[float], bins: int = 10) -> tuple[list[dict[str, Any]], float | None]:
    """Calibration bins and expected calibration error of p(chosen better) against human choices.

    Each pair counts twice, as (p, outcome 1) for the chosen response and (1 - p, outcome 0) for the
    rejected one, so the bins cover [0, 1] and a model that always says 0.5 is perfectly calibrated.
    ECE = sum over bins of (n_bin / N) * |frequency - mean predicted p|.
    """
    points = [(p, 1.0) for p in ps] + [(1.0 - p, 0.0) for p in ps]
    out, ece = [], 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in points if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if not inside:
            out.append({"lo": lo, "hi": hi, "n": 0, "mean_p": None, "frequency": None})
            continue
        mean_p = sum(p for p, _ in inside) / len(inside)
        freq = sum(y for _, y in inside) / len(inside)
        ece += len(inside) / len(points) * abs(freq - mean_p)
        out.append(
            {"lo": lo, "hi": hi, "n": len(inside), "mean_p": round(mean_p, 4), "frequency": round(freq, 4)}
        )
    return out, (round(ece, 4) if points else None)


POSITION_CONSISTENCY_BELOW = 0.5  # fewer pairs than this give one verdict in both orders: the judge reads position
KAPPA_CHANCE = 0.1  # Cohen's kappa at or under this: no better than chance ("slight" at best, Landis & Koch)


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion (successes may be fractional: half-credit ties); None for n = 0."""
    if n == 0:
        return None, None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def order_averaged(rows: list[dict[str, Any]], band: float = C.TIE_BAND) -> dict[str, Any]:
    """Agreement averaged over each pair's scored orders, then over pairs, with its Wilson interval."""
    per_pair = []
    for r in rows:
        credits = [credit(p, band) for p in (r.get("p_first"), r.get("p_second")) if p is not None]
        per_pair.append(sum(credits) / len(credits) if credits else credit(r["p_chosen"], band))
    lo, hi = wilson(sum(per_pair), len(per_pair))
    return {"agreement": mean(per_pair), "ci_low": lo, "ci_high": hi, "n": len(per_pair)}


def judge_warning(s: dict[str, Any]) -> str | None:
    """What the page must say before the agreement number when the judge reads position or is at chance."""
    cons = s.get("consistency") or {}
    rate, kappa, picks = cons.get("rate"), s.get("kappa"), s.get("picks") or {}
    picked = ""
    decisive = picks.get("A", 0) + picks.get("B", 0)
    if decisive:
        side = "A" if picks.get("A", 0) >= picks.get("B", 0) else "B"
        picked = f"the AI picked ({side}) in {picks[side]} of {picks.get('orders', decisive)} scored orders; "
    facts = (f"{picked}position consistency {'—' if rate is None else f'{rate:.1%}'} of {cons.get('n', 0)} pairs, "
             f"Cohen's kappa {'—' if kappa is None else f'{kappa:.3f}'}")
    if rate is not None and rate < POSITION_CONSISTENCY_BELOW:
        return f"Judge follows position: agreement is not meaningful ({facts})."
    if kappa is not None and cons.get("n") and kappa <= KAPPA_CHANCE:
        return f"Judge agrees with humans no better than chance: agreement is not meaningful ({facts})."
    return None


def summarize(rows: list[dict[str, Any]], bins: int = 10, band: float = C.TIE_BAND) -> dict[str, Any]:
    """The run's result from its per-pair rows (see the module docstring for the shape)."""
    ps = [r["p_chosen"] for r in rows]
    cal, ece = calibration(ps, bins)
    by: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by[r["principle"]].append(credit(r["p_chosen"], band))
    firsts = [credit(r["p_first"], band) for r in rows if r["p_first"] is not None]
    seconds = [credit(r["p_second"], band) for r in rows if r["p_second"] is not None]
    option_a = [r["p_first"] for r in rows if r["p_first"] is not None]
    option_a += [1.0 - r["p_second"] for r in rows if r["p_second"] is not None]
    flags = [C.consistent(r["p_first"], r["p_second"], band) for r in rows]
    decisive = [credit(p, band) for p in ps if C.verdict(p, band) != "tie"]
    human, ai = C.position_labels(rows, band)
    return {
        "n": len(rows),
        "agreement": mean([credit(p, band) for p in ps]),
        "tie_band": band,
        "ties": len(ps) - len(decisive),
        "agreement_decisive": mean(decisive),
        "kappa": C.cohen_kappa(human, ai),
        "order_averaged": order_averaged(rows, band),
        "picks": {"A": ai.count("A"), "B": ai.count("B"), "tie": ai.count("tie"), "orders": len(ai)},
        "consistency": {
            **C.rate(flags),
            "per_principle": C.by_group((r["principle"], f) for r, f in zip(rows, flags, strict=True)),
        },
        "mean_p_chosen": mean(ps),
        "ece": ece,
        "calibration": cal,
        "per_principle": {k: {"n": len(v), "agreement": mean(v)} for k, v in sorted(by.items())},
        "position": {
            "chosen_shown_A": mean(firsts),
            "chosen_shown_B": mean(seconds),
            "mean_p_option_A": mean(option_a),
        },
    }


def pair_row(pair_id: int, label: Any, band: float = C.TIE_BAND, inconsistent: str = "average") -> dict[str, Any]:
    """One agreement_pairs row from a label of (chosen, rejected); `inconsistent` = "tie" sets
    p_chosen = 0.5 when the two orders disagree."""
    first = [r.p for r in label.readings if r.order == "AB"]
    second = [r.p for r in label.readings if r.order == "BA"]
    p_first = sum(first) / len(first) if first else None
    p_second = sum(second) / len(second) if second else None
    flag = C.consistent(p_first, p_second, band)
    return {
        "pair_id": pair_id,
        "principle": label.readings[0].principle,
        "p_chosen": C.resolve(label.p, flag, inconsistent),
        "p_first": p_first,
        "p_second": p_second,
        "consistent": None if flag is None else int(flag),
        "meta": label.meta(),
    }
