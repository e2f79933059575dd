"""Arena benchmark: vote round-trip latency under 20 concurrent raters, and Bradley-Terry bootstrap time.

Prints JSON. Raters are gradio_client sessions against the real rater page (scripted models, so the
figure is the vote path: HTTP, queue, transaction); ratings are 10,000 synthetic votes over 20 models.
Usage: python bench/arena.py [--raters 20] [--turns 5] [--votes 10000] [--models 20] [--rounds 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def vote_latency(raters: int, turns: int) -> dict[str, float]:
    from bench import rater_page

    path = Path(tempfile.mkdtemp()) / "bench.db"
    answers = {"m-one": " A short answer.", "m-two": " A short answer.", "m-three": " A short answer."}
    times: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(raters)
    with rater_page.serve(path, answers, "bench", max_turns=turns, raters=raters) as url:

        def rater(i: int) -> None:
            client = rater_page.rater(url, f"r{i}", "bench")
            barrier.wait()
            for t in range(turns):
                client.predict(f"question {t}", api_name="/send")
                start = time.perf_counter()
                client.predict("A is better", "", api_name="/vote")
                with lock:
                    times.append(time.perf_counter() - start)

        wall = time.perf_counter()
        errors = rater_page.run_threads(raters, rater)
        wall = time.perf_counter() - wall
    assert not errors, errors[0]
    from cai import store

    db = store.connect(path)
    stored = db["votes"].count
    db.close()
    ms = sorted(1000 * x for x in times)
    return {
        "raters": raters,
        "votes": len(ms),
        "votes_stored": stored,
        "vote_p50_ms": round(statistics.median(ms), 1),
        "vote_p95_ms": round(ms[max(0, int(round(0.95 * len(ms))) - 1)], 1),
        "wall_s": round(wall, 2),
    }


def bt_bootstrap(n_votes: int, n_models: int, rounds: int) -> dict[str, float]:
    from cai.evals import ratings

    rng = np.random.default_rng(0)
    a = rng.integers(0, n_models, n_votes)
    b = (a + rng.integers(1, n_models, n_votes)) % n_models
    skill = rng.normal(0, 1, n_models)
    p = 1 / (1 + np.exp(-(skill[a] - skill[b])))
    u = rng.random(n_votes)
    winner = np.where(u < 0.1, "tie", np.where(u < 0.1 + 0.9 * p, "model_a", "model_b"))
    df = pd.DataFrame({"model_a": [f"m{i:02d}" for i in a], "model_b": [f"m{i:02d}" for i in b], "winner": winner})
    start = time.perf_counter()
    table = ratings.rate(df, "bt", rounds=rounds, seed=0)
    seconds = time.perf_counter() - start
    return {"votes": n_votes, "models": n_models, "rounds": rounds, "bt_bootstrap_s": round(seconds, 3),
            "widest_ci": round(max(r.ci_high - r.ci_low for r in table), 1)}  # type: ignore[operator]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raters", type=int, default=20)
    parser.add_argument("--turns", type=int, default=5, help="Votes per rater (one battle of this many turns).")
    parser.add_argument("--votes", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1000)
    args = parser.parse_args()
    out = {"bradley_terry": bt_bootstrap(args.votes, args.models, args.rounds),
           "vote_round_trip": vote_latency(args.raters, args.turns)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
