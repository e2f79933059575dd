"""Style control (LMArena's): Bradley-Terry with each answer's style differences (length, headers, lists,
bold) as covariates, so a model is not rated up for formatting alone."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cai.evals.ratings.battles import RatingParams, _encode, _to_scale, validate_battles

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
