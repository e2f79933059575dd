"""Elo, Bradley-Terry and bootstrap intervals as pure functions over a battles DataFrame.

The input is FastChat's battle format (`model_a`, `model_b`, `winner` in {model_a, model_b, tie,
tie (bothbad)}, optionally `dimension`), so the workbench's own votes and published arena data rate
alike; BT is a Newton fit on unique (pair, outcome) counts, which also makes bootstrapping cheap.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cai.files import DataError, parse_json, read_bytes, read_text

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
_OUTCOME = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "tie (bothbad)": 0.5}


@dataclass(frozen=True)
class RatingParams:
    """The rating scale: rating = init + scale * log_base(strength); K is the online Elo step."""

    k: float = 4.0
    scale: float = 400.0
    base: float = 10.0
    init: float = 1000.0
    reg: float = 1e-6  # BT L2 penalty (natural-log units): keeps undefeated models finite

    def __post_init__(self) -> None:
        if self.scale <= 0 or self.base <= 1 or self.k <= 0 or self.reg < 0:
            raise ValueError("ratings: need scale > 0, base > 1, k > 0 and reg >= 0")


@dataclass(frozen=True)
class Rating:
    """One model's rating with its bootstrap interval (None without bootstrap) and vote count."""

    model: str
    rating: float
    ci_low: float | None
    ci_high: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_battles(df: pd.DataFrame, source: str = "votes") -> pd.DataFrame:
    """The battles with the three required columns checked; errors name the source and row."""
    missing = [c for c in ("model_a", "model_b", "winner") if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {', '.join(missing)}")
    for col in ("model_a", "model_b", "winner"):
        bad_type = ~df[col].map(lambda v: isinstance(v, str)).astype(bool)
        if bad_type.any():
            i = int(np.flatnonzero(bad_type.to_numpy())[0])
            value = df[col].iloc[i]
            value = value.item() if hasattr(value, "item") else value  # numpy scalar -> plain Python
            raise ValueError(f"{source}: row {i + 1}: {col} must be a string, got {value!r}")
    bad = ~df["winner"].isin(WINNERS)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"{source}: row {i + 1}: winner {df['winner'].iloc[i]!r} is not one of {', '.join(WINNERS)}"
        )
    same = (df["model_a"] == df["model_b"]).to_numpy()
    if same.any():
        i = int(np.flatnonzero(same)[0])
        raise ValueError(f"{source}: row {i + 1}: a model cannot battle itself ({df['model_a'].iloc[i]!r})")
    return df


def _encode(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Matchups (N, 2) as model indices, outcomes (N,) as P(model_a wins), and the model names."""
    codes, models = pd.factorize(pd.concat([df["model_a"], df["model_b"]], ignore_index=True), sort=True)
    n = len(df)
    matchups = np.column_stack([codes[:n], codes[n:]]).astype(np.int64)
    outcomes = df["winner"].map(_OUTCOME).to_numpy(dtype=np.float64)
    return matchups, outcomes, [str(m) for m in models]


def _elo_batch(matchups: np.ndarray, outcomes: np.ndarray, n_models: int, p: RatingParams) -> np.ndarray:
    """Online Elo over R orderings at once: matchups (R, N, 2), outcomes (R, N) -> ratings (R, M)."""
    rounds = matchups.shape[0]
    ratings = np.full((rounds, n_models), p.init, dtype=np.float64)
    rows = np.arange(rounds)
    for t in range(matchups.shape[1]):
        a, b = matchups[:, t, 0], matchups[:, t, 1]
        ra, rb = ratings[rows, a], ratings[rows, b]
        ea = 1.0 / (1.0 + p.base ** ((rb - ra) / p.scale))
        delta = p.k * (outcomes[:, t] - ea)
        ratings[rows, a] = ra + delta
        ratings[rows, b] = rb - delta
    return ratings


def elo(df: pd.DataFrame, params: RatingParams = RatingParams()) -> dict[str, float]:
    """Online Elo in row order (FastChat's compute_elo): each vote moves both ratings by K*(S-E)."""
    matchups, outcomes, models = _encode(validate_battles(df))
    ratings = _elo_batch(matchups[None], outcomes[None], len(models), params)[0]
    return dict(zip(models, ratings.tolist(), strict=True))


def _unique_counts(matchups: np.ndarray, outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (a, b, outcome) rows and how often each occurs: BT only needs these counts."""
    schedule = np.column_stack([matchups, np.rint(outcomes * 2)]).astype(np.int64)
    uniq, counts = np.unique(schedule, axis=0, return_counts=True)
    return uniq[:, :2], uniq[:, 2] / 2.0, counts.astype(np.float64)


def _bt_newton(
    pairs: np.ndarray, outcomes: np.ndarray, weights: np.ndarray, n_models: int, reg: float, tol: float = 1e-9
) -> np.ndarray:
    """Bradley-Terry strengths (natural log units, mean zero) for each row of weights (R, U).

    Maximises sum w * [y log s(d) + (1-y) log s(-d)] - reg * |theta|^2 with d = theta_a - theta_b:
    a tie (y = 0.5) counts as half a win for each side. Newton steps, batched over rounds.
    """
    rounds = weights.shape[0]
    m = n_models
    inc = np.zeros((len(pairs), m))
    inc[np.arange(len(pairs)), pairs[:, 0]] = 1.0
    inc[np.arange(len(pairs)), pairs[:, 1]] = -1.0
    outer = np.einsum("ui,uj->uij", inc, inc).reshape(len(pairs), m * m)
    # The likelihood ignores a common shift: pin the mean at zero by adding 11^T/m to the Hessian.
    pin = np.full((m, m), 1.0 / m)
    theta = np.zeros((rounds, m))
    for _ in range(200):
        d = theta @ inc.T  # (R, U)
        prob = 1.0 / (1.0 + np.exp(-np.clip(d, -50, 50)))
        grad = ((outcomes - prob) * weights) @ inc - 2 * reg * theta  # ascent direction
        hess = ((prob * (1 - prob) * weights) @ outer).reshape(rounds, m, m) + (2 * reg + 1e-9) * np.eye(m) + pin
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        step = np.clip(step, -5.0, 5.0)  # damping: separable data (an undefeated model) cannot explode
        theta = theta + step
        theta -= theta.mean(axis=1, keepdims=True)
        if np.abs(step).max() < tol:
            break
    return theta


def bradley_terry(df: pd.DataFrame, params: RatingParams = RatingParams()) -> dict[str, float]:
    """Bradley-Terry maximum likelihood ratings on the Elo scale (mean rating = params.init)."""
    matchups, outcomes, models = _encode(validate_battles(df))
    pairs, ys, counts = _unique_counts(matchups, outcomes)
    theta = _bt_newton(pairs, ys, counts[None], len(models), params.reg)[0]
    ratings = params.init + params.scale * theta / np.log(params.base)
    return dict(zip(models, ratings.tolist(), strict=True))


def bootstrap(
    df: pd.DataFrame, method: str = "bt", rounds: int = 100, seed: int = 0, params: RatingParams = RatingParams()
) -> pd.DataFrame:
    """Ratings of `rounds` resamples (rows drawn with replacement): a (rounds x models) DataFrame."""
    if method not in ("elo", "bt"):
        raise ValueError(f"method must be 'elo' or 'bt', got {method!r}")
    if rounds < 1:
        raise ValueError(f"bootstrap rounds must be >= 1, got {rounds}")
    matchups, outcomes, models = _encode(validate_battles(df))
    rng = np.random.default_rng(seed)
    n = len(df)
    if method == "elo":
        idx = rng.integers(0, n, size=(rounds, n))
        ratings = _elo_batch(matchups[idx], outcomes[idx], len(models), params)
    else:
        # Resampling rows with replacement is a multinomial draw over the unique (pair, outcome) rows.
        pairs, ys, counts = _unique_counts(matchups, outcomes)
        weights = rng.multinomial(n, counts / n, size=rounds).astype(np.float64)
        theta = _bt_newton(pairs, ys, weights, len(models), params.reg)
        ratings = params.init + params.scale * theta / np.log(params.base)
    return pd.DataFrame(ratings, columns=models)


def rate(
    df: pd.DataFrame,
    method: str = "bt",
    rounds: int = 0,
    seed: int = 0,
    params: RatingParams = RatingParams(),
    level: float = 0.95,
) -> list[Rating]:
    """Ratings sorted best first, with percentile intervals from `rounds` bootstrap resamples."""
    if method not in ("elo", "bt"):
        raise ValueError(f"method must be 'elo' or 'bt', got {method!r}")
    if len(df) == 0:
        return []
    point = (elo if method == "elo" else bradley_terry)(df, params)
    counts = pd.concat([df["model_a"], df["model_b"]]).value_counts()
    lo = hi = None
    if rounds:
        boot = bootstrap(df, method, rounds, seed, params)
        lo = boot.quantile((1 - level) / 2)
        hi = boot.quantile(1 - (1 - level) / 2)
    out = [
        Rating(
            model=str(m),
            rating=float(r),
            ci_low=None if lo is None else float(lo[m]),
            ci_high=None if hi is None else float(hi[m]),
            n=int(counts[m]),
        )
        for m, r in point.items()
    ]
    return sorted(out, key=lambda x: (-x.rating, x.model))


def rate_by_dimension(df: pd.DataFrame, **kwargs: Any) -> dict[str, list[Rating]]:
    """`rate` separately per value of the `dimension` column (helpfulness, harmlessness, ...)."""
    if "dimension" not in df.columns:
        return {"all": rate(df, **kwargs)}
    return {str(dim): rate(part, **kwargs) for dim, part in df.groupby("dimension", sort=True)}


def win_rate_matrix(df: pd.DataFrame) -> pd.DataFrame:
    """P(row model beats column model) over their direct battles, ties half; NaN where none."""
    matchups, outcomes, models = _encode(validate_battles(df))
    m = len(models)
    wins = np.zeros((m, m))
    games = np.zeros((m, m))
    np.add.at(wins, (matchups[:, 0], matchups[:, 1]), outcomes)
    np.add.at(wins, (matchups[:, 1], matchups[:, 0]), 1 - outcomes)
    np.add.at(games, (matchups[:, 0], matchups[:, 1]), 1)
    np.add.at(games, (matchups[:, 1], matchups[:, 0]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_ = np.where(games > 0, wins / games, np.nan)
    return pd.DataFrame(rate_, index=models, columns=models)


def read_votes(path: str | Path) -> pd.DataFrame:
    """Battles from JSON (a list, FastChat's clean_battle files), JSONL, CSV or Parquet.

    Text files go through the workbench's one reader (cai.files): UTF-8, size limit, JSON errors by line.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        raw = read_bytes(p)
        try:
            df = pd.read_parquet(io.BytesIO(raw))
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise DataError(f"{p}: not a readable Parquet file ({type(exc).__name__})") from None
        return validate_battles(df, str(p))
    text = read_text(p)
    if suffix == ".csv":
        try:
            df = pd.read_csv(io.StringIO(text))
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"{p}: bad CSV ({str(exc).strip()})") from None
        return validate_battles(df, str(p))
    if suffix == ".json" or text.lstrip().startswith("["):
        records = parse_json(p, text)
        if not isinstance(records, list):
            raise DataError(f"{p}: expected a JSON list of battles")
        where = [f"{p}: item {i}" for i in range(len(records))]
    else:
        records, where = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                records.append(parse_json(p, line, lineno))
                where.append(f"{p}:{lineno}")
    for at, rec in zip(where, records, strict=True):
        if not isinstance(rec, dict):
            raise DataError(f"{at}: expected a JSON object (model_a, model_b, winner), got {type(rec).__name__}")
    return validate_battles(pd.DataFrame.from_records(records), str(p))


def figure2(helpful: list[Rating], harmless: list[Rating], title: str = "Harmlessness vs helpfulness"):  # type: ignore[no-untyped-def]
    """The paper's Figure 2: each model's harmlessness rating against its helpfulness rating."""
    import plotly.graph_objects as go

    hx = {r.model: r for r in helpful}
    hy = {r.model: r for r in harmless}
    models = sorted(set(hx) & set(hy))

    def bars(table: dict[str, Rating], up: bool) -> list[float] | None:
        if not models or table[models[0]].ci_low is None:
            return None
        return [
            (table[m].ci_high - table[m].rating) if up else (table[m].rating - table[m].ci_low)  # type: ignore[operator]
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
