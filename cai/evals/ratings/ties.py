"""Ties as their own outcome: the Rao-Kupper model (LMArena's parametrisation), fitted by Newton steps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cai.evals.ratings.battles import RatingParams, _encode, _to_scale, _unique_counts, validate_battles


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


def rao_kupper(df: pd.DataFrame, params: RatingParams = RatingParams()) -> dict[str, float]:
    """Rao-Kupper ratings on the Elo scale (mean rating = params.init)."""
    fit = rao_kupper_fit(df, params)
    return dict(zip(fit.models, _to_scale(fit.beta, params).tolist(), strict=True))
