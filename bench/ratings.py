"""Ratings benchmark: drop-k robustness (and Rao-Kupper / style-control fits) on synthetic votes.

Prints JSON: for each method, the seconds to find drop-k on N votes and what it found, verified by a
refit without the removed votes. Votes: M models with evenly spaced strengths, 20% ties, random sides.
Usage: python bench/ratings.py [--votes 10000] [--models 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cai.evals import ratings as R  # noqa: E402


def synthetic(votes: int, n_models: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = [f"m{i:02d}" for i in range(n_models)]
    strength = np.linspace(0.0, 1.0, n_models)
    a = rng.integers(0, n_models, votes)
    b = (a + rng.integers(1, n_models, votes)) % n_models
    p_a = 1.0 / (1.0 + np.exp(-(strength[a] - strength[b])))
    u = rng.random(votes)
    winner = np.where(u < 0.8 * p_a, "model_a", np.where(u < 0.8, "model_b", "tie"))
    tokens_a, tokens_b = rng.integers(20, 400, votes), rng.integers(20, 400, votes)
    zeros = np.zeros(votes, dtype=int)
    return pd.DataFrame({"model_a": [names[i] for i in a], "model_b": [names[i] for i in b], "winner": winner,
                         "tokens_a": tokens_a, "tokens_b": tokens_b, "headers_a": zeros, "headers_b": zeros,
                         "lists_a": zeros, "lists_b": zeros, "bold_a": zeros, "bold_b": zeros})


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t0, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--votes", type=int, default=10_000)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    df = synthetic(args.votes, args.models, args.seed)
    out: dict[str, object] = {"votes": args.votes, "models": args.models}
    _, out["bt_fit_s"] = timed(R.bradley_terry, df)
    rk, out["rk_fit_s"] = timed(R.rao_kupper_fit, df)
    out["rk_theta"] = round(rk.theta, 4)
    _, out["style_fit_s"] = timed(R.style_controlled_fit, df)
    for method in ("bt", "rk"):
        found, secs = timed(R.drop_k, df, method)
        kept = df.drop(index=found.removed)
        after = R.point_ratings(kept, method)
        out[f"drop_k_{method}"] = {
            "seconds": secs,
            "k": found.k,
            "top": found.top,
            "challenger": found.challenger,
            "method": found.method,
            "verified_top_after": max(after, key=lambda m: (after[m], m)),
            "gap_after": round(after[found.top] - max(v for m, v in after.items() if m != found.top), 4),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
