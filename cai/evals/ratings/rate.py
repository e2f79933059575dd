"""Ratings as a table: point ratings by method, percentile intervals from bootstrap resamples, ranks,
the per-dimension split and the paper's Figure 2.

An interval is only reported where it means something: a model with fewer than `INTERVAL_MIN_VOTES` votes, or
whose bootstrap ratings did not vary (nothing to resample: every resample is the same votes), gets none, and
`Rating.note` says why ("not enough votes: n = 1"), so no table or plot shows an interval of zero width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from cai.evals.ratings.battles import (
    RatingParams,
    _bt_newton,
    _elo_batch,
    _encode,
    _to_scale,
    _unique_counts,
    bradley_terry,
    elo,
    validate_battles,
)
from cai.evals.ratings.style import style_controlled, style_controlled_fit
from cai.evals.ratings.ties import _rk_fit, rao_kupper

METHODS = ("elo", "bt", "rk")
PROVISIONAL_BELOW = 30  # votes: fewer, and a rating is flagged provisional (LMArena marks such scores)
INTERVAL_MIN_VOTES = 10  # votes: fewer, and no interval (a bootstrap of a few votes has a handful of resamples)


@dataclass(frozen=True)
class Rating:
    """One model's rating with its bootstrap interval (None without bootstrap) and vote count.

    `provisional`: fewer votes than the threshold. `note`: why there is no interval although one was asked
    for ("not enough votes: n = 1", "no variation to resample"), else None. With style control, `rating` is the controlled
    rating and `rating_raw` the plain one, with both ranks and `rank_change` = rank_raw - rank
    (positive: the model moves up once style is accounted for).
    """

    model: str
    rating: float
    ci_low: float | None
    ci_high: float | None
    n: int
    provisional: bool = False
    note: str | None = None
    rating_raw: float | None = None
    rank: int | None = None
    rank_raw: int | None = None
    rank_change: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.rating_raw is None:
            for k in ("rating_raw", "rank", "rank_raw", "rank_change"):
                d.pop(k)
        return d


def bootstrap(
    df: pd.DataFrame,
    method: str = "bt",
    rounds: int = 100,
    seed: int = 0,
    params: RatingParams = RatingParams(),
    style_control: bool = False,
) -> pd.DataFrame:
    """Ratings of `rounds` resamples (rows drawn with replacement): a (rounds x models) DataFrame."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if rounds < 1:
        raise ValueError(f"bootstrap rounds must be >= 1, got {rounds}")
    matchups, outcomes, models = _encode(validate_battles(df))
    rng = np.random.default_rng(seed)
    n = len(df)
    if style_control:
        idx = rng.integers(0, n, size=(rounds, n))
        out = []
        for r in range(rounds):
            fit = style_controlled_fit(df.iloc[idx[r]].reset_index(drop=True), params)
            got = dict(zip(fit.models, _to_scale(fit.beta, params), strict=True))
            out.append([got.get(m, np.nan) for m in models])
        return pd.DataFrame(out, columns=models)
    if method == "elo":
        idx = rng.integers(0, n, size=(rounds, n))
        ratings = _elo_batch(matchups[idx], outcomes[idx], len(models), params)
    else:
        # Resampling rows with replacement is a multinomial draw over the unique (pair, outcome) rows.
        pairs, ys, counts = _unique_counts(matchups, outcomes)
        weights = rng.multinomial(n, counts / n, size=rounds).astype(np.float64)
        if method == "bt":
            theta = _bt_newton(pairs, ys, weights, len(models), params.reg)
        else:
            theta = np.stack([_rk_fit(pairs, ys, w, len(models), params.reg)[: len(models)] for w in weights])
        ratings = params.init + params.scale * theta / np.log(params.base)
    return pd.DataFrame(ratings, columns=models)


def point_ratings(df: pd.DataFrame, method: str = "bt", params: RatingParams = RatingParams()) -> dict[str, float]:
    """Point ratings by method: online Elo, Bradley-Terry or Rao-Kupper."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return {"elo": elo, "bt": bradley_terry, "rk": rao_kupper}[method](df, params)


def rate(
    df: pd.DataFrame,
    method: str = "bt",
    rounds: int = 0,
    seed: int = 0,
    params: RatingParams = RatingParams(),
    level: float = 0.95,
    style_control: bool = False,
    provisional_below: int = PROVISIONAL_BELOW,
    min_votes: int = INTERVAL_MIN_VOTES,
) -> list[Rating]:
    """Ratings sorted best first, with percentile intervals from `rounds` bootstrap resamples.

    A model with fewer than `min_votes` votes, or whose resampled ratings all agree, gets no interval
    and a `note` saying why.

    With `style_control`, `rating` (and its interval) is style-controlled BT and `rating_raw` the
    `method`'s plain rating; the ranks compare the two.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if len(df) == 0:
        return []
    raw = point_ratings(df, method, params)
    point = style_controlled(df, params) if style_control else raw
    counts = pd.concat([df["model_a"], df["model_b"]]).value_counts()
    lo = hi = None
    if rounds:
        boot = bootstrap(df, method, rounds, seed, params, style_control=style_control)
        lo = boot.quantile((1 - level) / 2)
        hi = boot.quantile(1 - (1 - level) / 2)
    rank, rank_raw = ranks(point), ranks(raw)

    def interval(m: str) -> tuple[float | None, float | None, str | None]:
        if lo is None or hi is None:
            return None, None, None
        if counts[m] < min_votes:
            return None, None, f"not enough votes: n = {int(counts[m])} (an interval needs {min_votes})"
        low, high = float(lo[m]), float(hi[m])
        if not np.isfinite(low) or not np.isfinite(high) or high - low < 1e-9:
            return None, None, "no interval: the resamples did not vary (nothing to resample)"
        return low, high, None

    iv = {m: interval(m) for m in point}
    out = [
        Rating(
            model=str(m),
            rating=float(r),
            ci_low=iv[m][0],
            ci_high=iv[m][1],
            n=int(counts[m]),
            provisional=bool(counts[m] < provisional_below),
            note=iv[m][2],
            rating_raw=float(raw[m]) if style_control else None,
            rank=rank[m] if style_control else None,
            rank_raw=rank_raw[m] if style_control else None,
            rank_change=rank_raw[m] - rank[m] if style_control else None,
        )
        for m, r in point.items()
    ]
    return sorted(out, key=lambda x: (-x.rating, x.model))


def rate_by_dimension(df: pd.DataFrame, **kwargs: Any) -> dict[str, list[Rating]]:
    """`rate` separately per value of the `dimension` column (helpfulness, harmlessness, ...)."""
    if "dimension" not in df.columns:
        return {"all": rate(df, **kwargs)}
    return {str(dim): rate(part, **kwargs) for dim, part in df.groupby("dimension", sort=True)}


def ranks(ratings_: dict[str, float]) -> dict[str, int]:
    """Competition ranks (1 = best; equal ratings, to 1e-9, share a rank)."""
    values = sorted(ratings_.values(), reverse=True)
    return {m: 1 + sum(v > r + 1e-9 for v in values) for m, r in ratings_.items()}


def figure2(helpful: list[Rating], harmless: list[Rating], title: str = "Harmlessness vs helpfulness"):  # type: ignore[no-untyped-def]
    """The paper's Figure 2: each model's harmlessness rating against its helpfulness rating."""
    import plotly.graph_objects as go

    hx = {r.model: r for r in helpful}
    hy = {r.model: r for r in harmless}
    models = sorted(set(hx) & set(hy))

    def bars(table: dict[str, Rating], up: bool) -> list[float] | None:
        if not any(table[m].ci_low is not None for m in models):
            return None
        return [  # a model without an interval (too few votes) gets no bar, not a zero-width one
            float("nan") if table[m].ci_low is None or table[m].ci_high is None
            else (table[m].ci_high - table[m].rating) if up else (table[m].rating - table[m].ci_low)
            for m in models
        ]

    fig = go.Figure(
        go.Scatter(
            x=[hx[m].rating for m in models],
            y=[hy[m].rating for m in models],
            mode="markers+text",
            text=models,
            textposition="top center",
            error_x=dict(type="data", symmetric=False, array=bars(hx, True), arrayminus=bars(hx, False)),
            error_y=dict(type="data", symmetric=False, array=bars(hy, True), arrayminus=bars(hy, False)),
        )
    )
    fig.update_layout(title=title, xaxis_title="Helpfulness rating", yaxis_title="Harmlessness rating")
    return fig
