"""How robust the top spot is: the fewest votes whose removal dethrones the top model (drop-k)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from cai.evals.ratings.battles import RatingParams, _bt_newton, _encode, _unique_counts, validate_battles
from cai.evals.ratings.ties import _rk_fit


@dataclass(frozen=True)
class DropK:
    """The fewest votes found whose removal dethrones the top model (an upper bound on the minimum).

    `k` is None when no removal order tried dethroned it; `removed` are row positions in the battles.
    """

    top: str
    k: int | None
    challenger: str | None
    removed: list[int]
    method: str = "influence-greedy"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _top_holds(theta: np.ndarray, top: int) -> bool:
    others = np.delete(theta, top)
    return bool(theta[top] > others.max() + 1e-9)


def drop_k(
    df: pd.DataFrame, method: str = "bt", params: RatingParams = RatingParams(), challengers: int = 3
) -> DropK:
    """Smallest number of votes whose removal changes the top model, by an influence-ordered greedy.

    For each challenger (the `challengers` next-best models), the votes are ordered by their
    first-order influence on (top - challenger) (one Hessian solve of the BT fit), and the shortest
    prefix of that order whose removal leaves the top model not strictly first is found by exact refits
    (doubling, then bisection). Every reported k is verified by a refit, so it is an upper bound on the
    true minimum (arXiv 2508.11847 reports such bounds for LMArena). `method` is "bt" or "rk".
    """
    if method not in ("bt", "rk"):
        raise ValueError(f"drop-k needs method 'bt' or 'rk', got {method!r}")
    matchups, outcomes, models = _encode(validate_battles(df))
    m = len(models)
    pairs, ys, counts = _unique_counts(matchups, outcomes)
    key = {(int(a), int(b), float(y)): u for u, (a, b, y) in enumerate(zip(pairs[:, 0], pairs[:, 1], ys, strict=True))}
    row_of = np.array([key[(int(a), int(b), float(y))] for (a, b), y in zip(matchups, outcomes, strict=True)])

    def fit(w: np.ndarray) -> np.ndarray:
        if method == "bt":
            return _bt_newton(pairs, ys, w[None], m, params.reg)[0]
        return _rk_fit(pairs, ys, w, m, params.reg)[:m]

    theta = fit(counts)
    order_all = np.argsort(-theta, kind="stable")
    top = int(order_all[0])
    if m < 2 or not _top_holds(theta, top):
        return DropK(models[top], 0 if m >= 2 else None, None, [], method=f"{method}, influence-greedy")
    inc = np.zeros((len(pairs), m))
    inc[np.arange(len(pairs)), pairs[:, 0]] = 1.0
    inc[np.arange(len(pairs)), pairs[:, 1]] = -1.0
    prob = 1.0 / (1.0 + np.exp(-(inc @ theta)))
    hess = (inc * (prob * (1 - prob) * counts)[:, None]).T @ inc + 2 * params.reg * np.eye(m) + np.full((m, m), 1.0 / m)
    best: DropK | None = None
    for c in order_all[1 : 1 + challengers]:
        e = np.zeros(m)
        e[top], e[c] = 1.0, -1.0
        # Removing one vote of row u moves theta by about -H^-1 * (y_u - p_u) * inc_u.
        infl = -(inc @ np.linalg.solve(hess, e)) * (ys - prob)
        seq: list[int] = []
        for u in np.argsort(infl, kind="stable"):
            if infl[u] >= 0:
                break
            seq += [int(u)] * int(counts[u])
        seq_arr = np.array(seq, dtype=np.int64)

        def flips(k: int, seq_arr: np.ndarray = seq_arr) -> bool:
            w = counts - np.bincount(seq_arr[:k], minlength=len(counts))
            return not _top_holds(fit(w), top)

        k_hi = 1
        while k_hi < len(seq_arr) and not flips(k_hi):
            k_hi *= 2
        k_hi = min(k_hi, len(seq_arr))
        if k_hi == 0 or not flips(k_hi):
            continue
        lo = k_hi // 2  # flips(lo) is False (or lo == 0)
        while k_hi - lo > 1:
            mid = (lo + k_hi) // 2
            lo, k_hi = (lo, mid) if flips(mid) else (mid, k_hi)
        if best is None or k_hi < (best.k or 0):
            # The removed votes: the first rows of the battles table in each unique row, in order.
            taken: list[int] = []
            need = np.bincount(seq_arr[:k_hi], minlength=len(counts))
            for u in np.flatnonzero(need):
                taken += np.flatnonzero(row_of == u)[: need[u]].tolist()
            best = DropK(models[top], k_hi, models[int(c)], sorted(taken), method=f"{method}, influence-greedy")
    return best or DropK(models[top], None, None, [], method=f"{method}, influence-greedy")


def drop_k_by_dimension(df: pd.DataFrame, method: str = "bt") -> dict[str, DropK]:
    """`drop_k` separately per value of the `dimension` column, each over its own votes (so `removed` are
    row positions within that dimension's battles)."""
    if "dimension" not in df.columns:
        return {"all": drop_k(df.reset_index(drop=True), method)}
    return {str(dim): drop_k(part.reset_index(drop=True), method) for dim, part in df.groupby("dimension", sort=True)}
