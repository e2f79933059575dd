"""Arena benchmark: vote round-trip latency under 20 concurrent raters, and Bradley-Terry bootstrap time.

Prints JSON. Raters are gradio_client sessions against the real rater page (scripted models, so the
figure is the vote path: HTTP, queue, transaction); ratings are 10,000 synthetic votes over 20 models.
Usage: python bench/arena.py [--raters 20] [--turns 5] [--votes 10000] [--models 20] [--rounds 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
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
    from gradio_client import Client

    from cai import arena, models, store, users
    from cai.arena_models import BackendPool
    from cai.backends.base import ScriptedBackend
    from ui.arena import build_page

    tmp = tempfile.mkdtemp()
    path = Path(tmp) / "bench.db"
    db = store.connect(path)
    for n in ("m-one", "m-two", "m-three"):
        models.register_model(db, n, "tiny")
    arena.create_campaign(db, "bench", ["m-one", "m-two", "m-three"], "helpfulness", max_turns=turns)
    for i in range(raters):
        users.add_user(db, f"r{i}", "rater", "password1")
    pool = BackendPool(loader=lambda row: ScriptedBackend(respond=lambda p: " A short answer."))
    page = build_page(path, pool)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page.queue(default_concurrency_limit=32).launch(server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    times: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(raters)

    def rater(i: int) -> None:
        client = Client(url, verbose=False)
        client.predict(f"r{i}", "password1", api_name="/sign_in")
        client.predict("bench", api_name="/start")
        barrier.wait()
        for t in range(turns):
            client.predict(f"question {t}", api_name="/send")
            start = time.perf_counter()
            client.predict("A is better", "", api_name="/vote")
            with lock:
                times.append(time.perf_counter() - start)

    threads = [threading.Thread(target=rater, args=(i,)) for i in range(raters)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    page.close()
    stored = db["votes"].count
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
