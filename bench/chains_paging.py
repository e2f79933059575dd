"""Chains-tab paging at scale: fill a temporary database with N chains and time the tab's queries.

Prints one JSON object (milliseconds per query, median of 5) so a regression in the indexes or the
page query (e.g. a filter that stops using its index) shows as a number, not a feeling.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from cai import store
from ui.chains import ChainFilter, chain_detail, chain_page

WORDS = "the a harmful helpful answer question please cannot sorry bomb recipe friend law safe advice".split()


def fill(db, n: int, rounds: int, seed: int = 0) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    principles = [f"principle-{i}" for i in range(16)]
    db["runs"].insert_all({"id": r, "kind": "sl", "status": "done", "config": "{}"} for r in (1, 2, 3, 4))
    db["models"].insert_all({"id": m, "name": f"model-{m}", "path": "tiny"} for m in (1, 2))

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    batch = 5000
    for start in range(0, n, batch):
        chains, steps = [], []
        for cid in range(start + 1, min(n, start + batch) + 1):
            chains.append({
                "id": cid, "run_id": 1 + cid % 4, "prompt_id": cid, "sample": 0, "model_id": 1 + cid % 2,
                "constitution_version_id": None, "mode": "critique",
                "prompt": f"\n\nHuman: {text(20)} #{cid}\n\nAssistant:", "final": text(40),
                "n_revisions": rounds, "flags": "[]", "created_at": store.now(),
            })
            kinds = ["initial"] + [k for _ in range(rounds) for k in ("critique", "revision")]
            for idx, kind in enumerate(kinds):
                rnd = (idx + 1) // 2
                steps.append({
                    "chain_id": cid, "idx": idx, "kind": kind, "round": rnd,
                    "principle": rng.choice(principles) if rnd else "", "sent": "", "output": text(30),
                })
        with db.atomic():
            db["chains"].insert_all(chains, batch_size=1000)
            db["chain_steps"].insert_all(steps, batch_size=1000)


def timed(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chains", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = store.connect(Path(tmp) / "bench.db")
        t0 = time.perf_counter()
        fill(db, args.chains, args.rounds)
        fill_s = time.perf_counter() - t0
        last = chain_page(db, ChainFilter(), 1).pages
        out = {
            "chains": args.chains,
            "steps": db["chain_steps"].count,
            "fill_s": round(fill_s, 1),
            "ms": {
                "first_page": timed(lambda: chain_page(db, ChainFilter(), 1)),
                "last_page": timed(lambda: chain_page(db, ChainFilter(), last)),
                "run_filter_page_100": timed(lambda: chain_page(db, ChainFilter(run_id=2), 100)),
                "model_filter": timed(lambda: chain_page(db, ChainFilter(model_id=1), 1)),
                "principle_filter": timed(lambda: chain_page(db, ChainFilter(principle="principle-3"), 1)),
                "text_search": timed(lambda: chain_page(db, ChainFilter(text="bomb recipe"), 1)),
                "text_search_rare": timed(lambda: chain_page(db, ChainFilter(text="#77777"), 1)),
                "open_chain": timed(lambda: chain_detail(db, args.chains // 2)),
            },
        }
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
