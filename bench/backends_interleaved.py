"""hf vs a running server, and our `generate` vs plain `model.generate`, interleaved round by round.

bench/backends.py measures one backend after the other; on a shared machine the load moves in
between. Here every round runs each contender once, on fresh prompts (a server's prefix cache holds
none of them), and reports wall and CPU seconds per contender (CPU: this process only, so a server's
work is not in it). Prints JSON.

    python bench/backends_interleaved.py --endpoint http://127.0.0.1:8000/v1 --rounds 3
    python bench/backends_interleaved.py --rounds 2            # generation parity only (no server)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backends import comparison_prompts, gen_prompts, plain_generate_tokens_per_s  # noqa: E402

from cai import backends  # noqa: E402
from cai.backends import SamplingParams  # noqa: E402

OPTIONS = [" (A)", " (B)"]


def timed(fn: Any) -> tuple[Any, float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--endpoint", action="append", default=[], help="A running server for the same model.")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--comparisons", type=int, default=16, help="Comparisons scored per contender and round.")
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default=None, help="hf dtype (default: the rule's)."
    )
    args = ap.parse_args(argv)
    options: dict[str, Any] = {"cache": False, "batch_size": max(args.batches)}
    if args.dtype:
        import torch

        options["dtype"] = getattr(torch, args.dtype)
    hf = backends.load(args.model, backend="hf", **options)
    served = None
    if args.endpoint:
        from cai.backends.served import ServedBackend

        served = ServedBackend(args.endpoint, tokenizer=backends.model_path(args.model))
    report: dict[str, Any] = {"model": args.model, "dtype": hf.dtype_choice.dtype, "rounds": args.rounds}
    params = SamplingParams(max_new_tokens=args.max_new_tokens, stop=())
    hf.generate(gen_prompts(2), SamplingParams(max_new_tokens=4, stop=()))  # warm-up
    gen: dict[str, dict[str, list[float]]] = {}
    score: dict[str, dict[str, list[float]]] = {}
    n = args.comparisons
    pool = comparison_prompts(n * 3 * args.rounds + 4)
    if served is not None:
        served.option_logprobs(pool[-2:], [OPTIONS] * 2)  # warm-up, on prompts not measured
        hf.option_logprobs(pool[-4:-2], [OPTIONS] * 2)
    for r in range(args.rounds):
        for b in args.batches:
            prompts = gen_prompts(b)
            out, wall, cpu = timed(lambda prompts=prompts: hf.generate(prompts, params))
            tokens = sum(c.completion_tokens for c in out)
            row = gen.setdefault(f"ours_b{b}", {"tok_per_s": [], "cpu_s": []})
            row["tok_per_s"].append(round(tokens / wall, 2))
            row["cpu_s"].append(round(cpu, 2))
            plain, wall, cpu = timed(
                lambda prompts=prompts: plain_generate_tokens_per_s(hf, prompts, args.max_new_tokens)
            )
            row = gen.setdefault(f"plain_b{b}", {"tok_per_s": [], "cpu_s": []})
            row["tok_per_s"].append(plain)
            row["cpu_s"].append(round(cpu, 2))
            print(
                f"round {r} b{b}: ours {gen[f'ours_b{b}']['tok_per_s'][-1]} plain {plain} tok/s",
                file=sys.stderr,
                flush=True,
            )
        contenders: dict[str, Any] = {"hf": lambda ps: hf.option_logprobs(ps, [OPTIONS] * len(ps))}
        if served is not None:
            contenders["served"] = lambda ps: served.option_logprobs(ps, [OPTIONS] * len(ps))

            def one_per_request(ps: list[str]) -> Any:
                assert served is not None
                served.score_prompts, keep = 1, served.score_prompts
                try:
                    return served.option_logprobs(ps, [OPTIONS] * len(ps))
                finally:
                    served.score_prompts = keep

            contenders["served_one_request_per_logprob"] = one_per_request
        for k, (name, fn) in enumerate(contenders.items()):
            start = (r * 3 + k) * n
            ps = pool[start : start + n]
            _, wall, cpu = timed(lambda fn=fn, ps=ps: fn(ps))
            row = score.setdefault(name, {"comparisons_per_s": [], "cpu_s": []})
            row["comparisons_per_s"].append(round(n / wall, 3))
            row["cpu_s"].append(round(cpu, 2))
            print(f"round {r} score {name}: {n / wall:.3f} comparisons/s", file=sys.stderr, flush=True)
    report["generate"] = gen
    report["generate_vs_plain"] = {
        str(b): round(max(gen[f"ours_b{b}"]["tok_per_s"]) / max(gen[f"plain_b{b}"]["tok_per_s"]), 2)
        for b in args.batches
    }
    report["score"] = score
    if "served" in score:
        best = {k: max(v["comparisons_per_s"]) for k, v in score.items()}
        report["served_vs_hf_scoring"] = round(best["served"] / best["hf"], 2)
        report["batched_vs_one_request_per_logprob"] = round(
            best["served"] / best["served_one_request_per_logprob"], 2
        )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
