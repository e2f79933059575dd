"""SL chain throughput: chains per minute and generated tokens/s at several batch sizes, and naively.

Runs the chain engine (cai.sl.run_chains) on the sample red-team prompts and the default constitution,
for each batch size and number of revisions, then the same chains built one prompt at a time
(each chain finished before the next starts) for the speed-up ratio; prints one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cai import sl, store
from cai.backends import SamplingParams, load
from cai.constitution import seed_default
from cai.data import list_prompts, seed_samples


def measure(backend: Any, prompts: list[str], cv: dict[str, Any], opts: sl.ChainOptions, naive: bool) -> dict[str, Any]:
    """Build one chain per prompt (all batched, or one prompt at a time); timings and token counts."""
    items = [sl.ChainItem(i, p) for i, p in enumerate(prompts)]
    exemplars = [e for e in cv["exemplars"] if e["kind"] == "critique"]
    t0 = time.perf_counter()
    if naive:
        chains = [c for it in items for c in sl.run_chains(backend, [it], cv["principles"], exemplars, opts)]
    else:
        chains = sl.run_chains(backend, items, cv["principles"], exemplars, opts)
    seconds = time.perf_counter() - t0
    tokens = sum(s.completion_tokens for c in chains for s in c.steps)
    return {
        "mode": "naive" if naive else "batched",
        "batch": 1 if naive else opts.batch_size,
        "revisions": opts.revisions,
        "prompts": len(prompts),
        "seconds": round(seconds, 2),
        "generated_tokens": tokens,
        "chains_per_min": round(60 * len(chains) / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="Policy model spec (default: the bundled Gemma 3 270M).")
    parser.add_argument("--batches", default="1,8,32", help="Comma-separated batch sizes.")
    parser.add_argument("--revisions", default="1,4", help="Comma-separated numbers of revision rounds.")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="Token limit per step (small: short run).")
    parser.add_argument("--few-shot", type=int, default=0, help="Critique exemplars per request (long prompts).")
    parser.add_argument("--min-prompts", type=int, default=4,
                        help="Chains per measurement: max(batch size, this); the naive run uses this many.")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0 = torch's default). On a shared, busy machine 1 thread can be "
                             "several times faster than 2 (OpenMP threads spin against other processes).")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        db = store.connect(Path(tmp) / "bench.db")
        cv = seed_default(db)
        seed_samples(db)
        pool = [p["text"] for p in list_prompts(db, "sample-red-team")]
        backend = load(args.model)
        batches = [int(b) for b in args.batches.split(",")]
        rounds = [int(n) for n in args.revisions.split(",")]
        backend.generate(pool[:1], SamplingParams(max_new_tokens=2))  # warm-up
        results = []
        for n in rounds:
            for b in batches:
                prompts = list(itertools.islice(itertools.cycle(pool), max(b, args.min_prompts)))
                opts = sl.ChainOptions(revisions=n, few_shot=args.few_shot, batch_size=b,
                                       max_new_tokens=args.max_new_tokens)
                results.append(measure(backend, prompts, cv, opts, naive=False))
                print(json.dumps(results[-1]), file=sys.stderr)
            opts = sl.ChainOptions(revisions=n, few_shot=args.few_shot, batch_size=1, max_new_tokens=args.max_new_tokens)
            results.append(measure(backend, pool[: args.min_prompts], cv, opts, naive=True))
            print(json.dumps(results[-1]), file=sys.stderr)
    speedup = {}
    for n in rounds:
        naive = next(r for r in results if r["mode"] == "naive" and r["revisions"] == n)
        speedup[f"N={n}"] = {
            f"batch {r['batch']}": round(r["chains_per_min"] / naive["chains_per_min"], 2)
            for r in results if r["mode"] == "batched" and r["revisions"] == n
        }
    report = {
        "model": args.model,
        "device": getattr(backend, "device", "cpu"),
        "max_new_tokens": args.max_new_tokens,
        "few_shot": args.few_shot,
        "threads": args.threads or "default",
        "results": results,
        "speedup_vs_naive_chains_per_min": speedup,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
