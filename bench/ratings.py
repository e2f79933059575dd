"""Ratings benchmark: drop-k robustness (and Rao-Kupper / style-control fits) on synthetic votes.

Prints JSON: for each method, the seconds to find drop-k on N votes and what it found, verified by a
refit without the removed votes. Votes: M models with evenly spaced strengths, 20% ties, random sides.
Also: how often the greedy k equals the exact minimum (brute force) on small random vote sets.
Usage: python bench/ratings.py [--votes 10000] [--models 8] [--seed 0] [--small-sets 30]
"""

from __future__ import annotations

import argparse
import itertools
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


def exact_min(df: pd.DataFrame, top: str) -> int | None:
    """The fewest removed votes that leave `top` not strictly first, by trying every subset (small sets only)."""
    for k in range(1, len(df) + 1):
        for drop in itertools.combinations(df.index, k):
            r = R.bradley_terry(df.drop(index=list(drop)))
            if top not in r or r[top] <= max((v for m, v in r.items() if m != top), default=-np.inf) + 1e-9:
                return k
    return None


def small_sets(n: int, seed: int) -> dict[str, object]:
    """Greedy drop-k against brute force on n random 9-vote, 3-model sets."""
    rng = np.random.default_rng(seed)
    equal = over = skipped = 0
    gaps = []
    for _ in range(n):
        df = synthetic(9, 3, int(rng.integers(1 << 30)))[["model_a", "model_b", "winner"]]
        found = R.drop_k(df, "bt")
        if not found.k:  # None: nothing tried dethroned it; 0: the top was already shared
            skipped += 1
            continue
        exact = exact_min(df, found.top)
        assert exact is not None and found.k >= exact, (found, exact)
        equal += found.k == exact
        over += found.k > exact
        gaps.append(found.k - exact)
    return {"sets": n, "skipped_no_single_top": skipped, "greedy_equals_exact": equal, "greedy_above_exact": over, "max_gap": max(gaps, default=0)}


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t0, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--votes", type=int, default=10_000)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small-sets", type=int, default=30)
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
    if args.small_sets:
        out["drop_k_vs_brute_force"], out["brute_force_s"] = timed(small_sets, args.small_sets, args.seed)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
