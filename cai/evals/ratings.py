"""Elo, Bradley-Terry and bootstrap intervals as pure functions over a battles DataFrame.

The input is FastChat's battle format (`model_a`, `model_b`, `winner` in {model_a, model_b, tie,
tie (bothbad)}, optionally `dimension`), so the workbench's own votes and published arena data rate
alike; BT is a Newton fit on unique (pair, outcome) counts, which also makes bootstrapping cheap.
"""

from __future__ import annotations

import io
import json
import re
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


METHODS = ("elo", "bt", "rk")
PROVISIONAL_BELOW = 30  # votes: fewer, and a rating is flagged provisional (LMArena marks such scores)


@dataclass(frozen=True)
class Rating:
    """One model's rating with its bootstrap interval (None without bootstrap) and vote count.

    `provisional`: fewer votes than the threshold. With style control, `rating` is the controlled
    rating and `rating_raw` the plain one, with both ranks and `rank_change` = rank_raw - rank
    (positive: the model moves up once style is accounted for).
    """

    model: str
    rating: float
    ci_low: float | None
    ci_high: float | None
    n: int
    provisional: bool = False
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
) -> list[Rating]:
    """Ratings sorted best first, with percentile intervals from `rounds` bootstrap resamples.

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
    out = [
        Rating(
            model=str(m),
            rating=float(r),
            ci_low=None if lo is None else float(lo[m]),
            ci_high=None if hi is None else float(hi[m]),
            n=int(counts[m]),
            provisional=bool(counts[m] < provisional_below),
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


def drop_k_by_dimension(df: pd.DataFrame, method: str = "bt") -> dict[str, DropK]:
    """`drop_k` separately per value of the `dimension` column, each over its own votes (so `removed` are
    row positions within that dimension's battles)."""
    if "dimension" not in df.columns:
        return {"all": drop_k(df.reset_index(drop=True), method)}
    return {str(dim): drop_k(part.reset_index(drop=True), method) for dim, part in df.groupby("dimension", sort=True)}


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
    return _battles(pd.DataFrame.from_records(records), str(p))


def _battles(df: pd.DataFrame, source: str) -> pd.DataFrame:
    if "winner" in df.columns:  # arena-human-preference-140k spells the both-bad tie "both_bad"
        df["winner"] = df["winner"].replace({"both_bad": "tie (bothbad)"})
    return validate_battles(df, source)


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


# ----------------------------------------------------------------------------- ties: Rao-Kupper
@dataclass(frozen=True)
class TieModel:
    """Rao-Kupper fit: strengths (natural log units, mean zero) and the tie parameter theta >= 1.

    P(i beats j) = s(d - eta), P(j beats i) = s(-d - eta), P(tie) = the rest, d = beta_i - beta_j,
    eta = log(theta), s the logistic function (LMArena's parametrisation of Rao & Kupper 1967).
    """

    models: list[str]
    beta: np.ndarray
    theta: float


def _rk_grad(x: np.ndarray, pairs: np.ndarray, ys: np.ndarray, w: np.ndarray, m: int, reg: float) -> np.ndarray:
    """Gradient of the weighted Rao-Kupper log-likelihood in x = (beta_1..beta_m, eta)."""
    beta, eta = x[:m], x[m]
    d = beta[pairs[:, 0]] - beta[pairs[:, 1]]
    s1 = 1.0 / (1.0 + np.exp(-(d - eta)))
    s2 = 1.0 / (1.0 + np.exp(-(-d - eta)))
    tie = np.clip(1.0 - s1 - s2, 1e-300, None)
    ds1, ds2 = s1 * (1 - s1), s2 * (1 - s2)
    win, loss, draw = ys == 1.0, ys == 0.0, ys == 0.5
    g_d = np.where(win, 1 - s1, 0.0) - np.where(loss, 1 - s2, 0.0) + np.where(draw, (ds2 - ds1) / tie, 0.0)
    g_e = -np.where(win, 1 - s1, 0.0) - np.where(loss, 1 - s2, 0.0) + np.where(draw, (ds1 + ds2) / tie, 0.0)
    grad = np.zeros(m + 1)
    np.add.at(grad, pairs[:, 0], w * g_d)
    np.add.at(grad, pairs[:, 1], -w * g_d)
    grad[:m] -= 2 * reg * beta
    grad[m] = float(np.sum(w * g_e))
    return grad


def _rk_loglik(x: np.ndarray, pairs: np.ndarray, ys: np.ndarray, w: np.ndarray, m: int, reg: float) -> float:
    beta, eta = x[:m], x[m]
    d = beta[pairs[:, 0]] - beta[pairs[:, 1]]
    s1 = 1.0 / (1.0 + np.exp(-(d - eta)))
    s2 = 1.0 / (1.0 + np.exp(-(-d - eta)))
    p = np.where(ys == 1.0, s1, np.where(ys == 0.0, s2, 1.0 - s1 - s2))
    return float(np.sum(w * np.log(np.clip(p, 1e-300, None))) - reg * float(beta @ beta))


def _rk_fit(pairs: np.ndarray, ys: np.ndarray, w: np.ndarray, m: int, reg: float, tol: float = 1e-10) -> np.ndarray:
    """Maximum likelihood (beta, eta): Newton on a central-difference Hessian of the exact gradient,
    halving the step until the likelihood rises; the mean of beta is pinned at zero, eta kept >= 0."""
    x = np.zeros(m + 1)
    x[m] = 0.5 if np.any((ys == 0.5) & (w > 0)) else 0.0
    pin = np.zeros((m + 1, m + 1))
    pin[:m, :m] = 1.0 / m
    h = 1e-5
    for _ in range(100):
        g = _rk_grad(x, pairs, ys, w, m, reg)
        hess = np.empty((m + 1, m + 1))
        for k in range(m + 1):
            e = np.zeros(m + 1)
            e[k] = h
            hess[:, k] = -(_rk_grad(x + e, pairs, ys, w, m, reg) - _rk_grad(x - e, pairs, ys, w, m, reg)) / (2 * h)
        hess = (hess + hess.T) / 2 + pin + 1e-9 * np.eye(m + 1)
        free = m + 1
        if x[m] <= 0.0 and g[m] <= 0.0:  # eta at its bound and pushing out: step in beta alone
            free = m
        step = np.zeros(m + 1)
        step[:free] = np.clip(np.linalg.solve(hess[:free, :free], g[:free]), -5.0, 5.0)
        f0, t = _rk_loglik(x, pairs, ys, w, m, reg), 1.0
        while t > 1e-6:
            new = x + t * step
            new[m] = max(new[m], 0.0)
            new[:m] -= new[:m].mean()
            if _rk_loglik(new, pairs, ys, w, m, reg) >= f0 - 1e-12:
                break
            t /= 2
        done = np.abs(new - x).max() < tol
        x = new
        if done:
            break
    return x


def rao_kupper_fit(df: pd.DataFrame, params: RatingParams = RatingParams()) -> TieModel:
    """The Rao-Kupper model of the battles: ties are their own outcome, not half a win each."""
    matchups, outcomes, models = _encode(validate_battles(df))
    pairs, ys, counts = _unique_counts(matchups, outcomes)
    x = _rk_fit(pairs, ys, counts, len(models), params.reg)
    return TieModel(models, x[: len(models)], float(np.exp(x[len(models)])))


def _to_scale(beta: np.ndarray, params: RatingParams) -> np.ndarray:
    return params.init + params.scale * beta / np.log(params.base)


def rao_kupper(df: pd.DataFrame, params: RatingParams = RatingParams()) -> dict[str, float]:
    """Rao-Kupper ratings on the Elo scale (mean rating = params.init)."""
    fit = rao_kupper_fit(df, params)
    return dict(zip(fit.models, _to_scale(fit.beta, params).tolist(), strict=True))


# ----------------------------------------------------------------------------- style control
STYLE_FEATURES = ("tokens", "headers", "lists", "bold")
_HEADER = re.compile(r"^#{1,6}\s", re.MULTILINE)
_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


def style_counts(text: str) -> dict[str, int]:
    """Style of one answer: whitespace tokens, markdown headers, list items and bold spans."""
    return {
        "tokens": len(text.split()),
        "headers": len(_HEADER.findall(text)),
        "lists": len(_LIST.findall(text)),
        "bold": len(_BOLD.findall(text)),
    }


def style_matrix(df: pd.DataFrame) -> np.ndarray:
    """(N, 4) normalised differences (a - b) / (a + b) of each style feature (0 where both are 0).

    Reads columns `<feature>_a`, `<feature>_b` (tokens_a, headers_b, ...); errors name what is missing.
    """
    missing = [f"{f}_{s}" for f in STYLE_FEATURES for s in "ab" if f"{f}_{s}" not in df.columns]
    if missing:
        raise ValueError(f"style control needs style counts per answer; missing column(s) {', '.join(missing)}")
    cols = []
    for f in STYLE_FEATURES:
        a = df[f"{f}_a"].to_numpy(dtype=np.float64)
        b = df[f"{f}_b"].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            cols.append(np.where(a + b > 0, (a - b) / (a + b), 0.0))
    return np.column_stack(cols)


def _meta_count(meta: Any, key: str) -> float:
    value = (meta or {}).get(key, 0) if isinstance(meta, dict) else 0
    return float(sum(value.values())) if isinstance(value, dict) else float(value or 0)


def with_style(df: pd.DataFrame) -> pd.DataFrame:
    """The battles with `<feature>_a/_b` style columns: kept if present, else read from an
    arena-human-preference-140k `conv_metadata` (sum_assistant_a_tokens, header_count_a, list_count_a,
    bold_count_a, dicts summed), else counted from `response_a`/`response_b` text."""
    if all(f"{f}_{s}" in df.columns for f in STYLE_FEATURES for s in "ab"):
        return df
    out = df.copy()
    if "conv_metadata" in df.columns:
        meta = df["conv_metadata"].map(lambda x: json.loads(x) if isinstance(x, str) else x)
        keys = {"tokens": "sum_assistant_{}_tokens", "headers": "header_count_{}", "lists": "list_count_{}",
                "bold": "bold_count_{}"}
        for f, k in keys.items():
            for side in "ab":
                key = k.format(side)
                out[f"{f}_{side}"] = [_meta_count(m, key) for m in meta]
        return out
    if "response_a" in df.columns and "response_b" in df.columns:
        for side in "ab":
            counts = pd.DataFrame([style_counts(str(t or "")) for t in df[f"response_{side}"]], index=df.index)
            for f in STYLE_FEATURES:
                out[f"{f}_{side}"] = counts[f] if len(df) else []
        return out
    raise ValueError(
        "style control needs each answer's style: columns tokens_a/_b, headers_a/_b, lists_a/_b, bold_a/_b, "
        "a conv_metadata column, or response_a/response_b texts"
    )


def _logistic_newton(x: np.ndarray, y: np.ndarray, w: np.ndarray, m: int, reg: float, tol: float = 1e-9) -> np.ndarray:
    """Weighted logistic MLE of P(y = 1) = s(x @ coef) with soft y; the first m coefficients (the
    models) are pinned to mean zero and carry the L2 penalty, the rest (covariates) are free."""
    k = x.shape[1]
    coef = np.zeros(k)
    pen = np.zeros(k)
    pen[:m] = 2 * reg
    pin = np.zeros((k, k))
    pin[:m, :m] = 1.0 / m
    for _ in range(200):
        prob = 1.0 / (1.0 + np.exp(-np.clip(x @ coef, -50, 50)))
        grad = x.T @ ((y - prob) * w) - pen * coef
        hess = (x * (prob * (1 - prob) * w)[:, None]).T @ x + np.diag(pen) + 1e-9 * np.eye(k) + pin
        step = np.clip(np.linalg.solve(hess, grad), -5.0, 5.0)
        coef = coef + step
        coef[:m] -= coef[:m].mean()
        if np.abs(step).max() < tol:
            break
    return coef


@dataclass(frozen=True)
class StyleFit:
    """BT with style covariates: model strengths (log units) and one coefficient per style feature
    (per unit of the RMS-scaled normalised difference; features with no variation get 0)."""

    models: list[str]
    beta: np.ndarray
    coef: dict[str, float]


def style_controlled_fit(df: pd.DataFrame, params: RatingParams = RatingParams()) -> StyleFit:
    """Bradley-Terry with the style differences as covariates (LMArena's style control).

    Each feature column is divided by its root mean square, not centred: a difference (a - b) must
    flip sign when the sides swap, so centring would turn side into a covariate.
    """
    df = with_style(validate_battles(df))
    matchups, outcomes, models = _encode(df)
    m = len(models)
    feats = style_matrix(df)
    rms = np.sqrt((feats**2).mean(axis=0))
    used = rms > 0
    z = feats[:, used] / rms[used]
    inc = np.zeros((len(df), m))
    inc[np.arange(len(df)), matchups[:, 0]] = 1.0
    inc[np.arange(len(df)), matchups[:, 1]] = -1.0
    coef = _logistic_newton(np.hstack([inc, z]), outcomes, np.ones(len(df)), m, params.reg)
    gamma = dict.fromkeys(STYLE_FEATURES, 0.0)
    for name, c in zip([f for f, u in zip(STYLE_FEATURES, used, strict=True) if u], coef[m:], strict=True):
        gamma[name] = float(c)
    return StyleFit(models, coef[:m], gamma)


def style_controlled(df: pd.DataFrame, params: RatingParams = RatingParams()) -> dict[str, float]:
    """Style-controlled BT ratings on the Elo scale."""
    fit = style_controlled_fit(df, params)
    return dict(zip(fit.models, _to_scale(fit.beta, params).tolist(), strict=True))


def ranks(ratings_: dict[str, float]) -> dict[str, int]:
    """Competition ranks (1 = best; equal ratings, to 1e-9, share a rank)."""
    values = sorted(ratings_.values(), reverse=True)
    return {m: 1 + sum(v > r + 1e-9 for v in values) for m, r in ratings_.items()}


# ----------------------------------------------------------------------------- drop-k robustness
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
