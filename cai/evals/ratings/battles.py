"""Battles and the two classic ratings over them: FastChat's battle format checked and read from files,
online Elo, and Bradley-Terry as a Newton fit on unique (pair, outcome) counts (which makes bootstrapping cheap),
with a weak Gaussian prior (`PRIOR_REG`) so a handful of votes cannot give a gap of thousands of points.

A battle row is (`model_a`, `model_b`, `winner` in {model_a, model_b, tie, tie (bothbad)}, optionally
`dimension`), so the workbench's own votes and published arena data rate alike.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cai.files import DataError, iter_jsonl, parse_json, read_bytes, read_text

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
PRIOR_REG = 0.005
_OUTCOME = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "tie (bothbad)": 0.5}


@dataclass(frozen=True)
class RatingParams:
    """The rating scale: rating = init + scale * log_base(strength); K is the online Elo step."""

    k: float = 4.0
    scale: float = 400.0
    base: float = 10.0
    init: float = 1000.0
    # The Bradley-Terry (and Rao-Kupper, style) prior: an L2 penalty reg * |theta|^2 in natural-log units, i.e. a
    # Gaussian prior of sd 1 / sqrt(2 reg) = 10 (1737 rating points) on each model. Weak: on 4,000 battles among
    # 8 models 260 points apart the ratings stay within 0.007 points of the unpenalised fit (arena-rank's); strong
    # enough that one vote gives 1340.0 vs 660.0, not 1988.7 vs 11.3 (issue 28).
    reg: float = PRIOR_REG

    def __post_init__(self) -> None:
        if self.scale <= 0 or self.base <= 1 or self.k <= 0 or self.reg < 0:
            raise ValueError("ratings: need scale > 0, base > 1, k > 0 and reg >= 0")


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


def _to_scale(beta: np.ndarray, params: RatingParams) -> np.ndarray:
    return params.init + params.scale * beta / np.log(params.base)


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


_RECORD = "a JSON object (model_a, model_b, winner)"


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
        return _battles(df, str(p))
    text = read_text(p)
    if suffix == ".csv":
        try:
            df = pd.read_csv(io.StringIO(text))
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"{p}: bad CSV ({str(exc).strip()})") from None
        return _battles(df, str(p))
    if suffix == ".json" or text.lstrip().startswith("["):
        records = parse_json(p, text)
        if not isinstance(records, list):
            raise DataError(f"{p}: expected a JSON list of battles")
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise DataError(f"{p}: item {i}: expected {_RECORD}, got {type(rec).__name__}")
    else:
        records = [rec for _, rec in iter_jsonl(p, text, _RECORD)]
    return _battles(pd.DataFrame.from_records(records), str(p))


def _battles(df: pd.DataFrame, source: str) -> pd.DataFrame:
    if "winner" in df.columns:  # arena-human-preference-140k spells the both-bad tie "both_bad"
        df["winner"] = df["winner"].replace({"both_bad": "tie (bothbad)"})
    return validate_battles(df, source)
