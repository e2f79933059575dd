"""AI-feedback label throughput on the default model (plain, order-averaged, CoT) against a naive labeller.

The fast path is cai.feedback.label_pairs (batched option log-probs through the backend, which keeps
only the logits it needs and runs each prompt once for both options). The naive path labels one pair
at a time, running prompt + option for every option and computing full-vocabulary logits at every
position. Pairs come from the HHH eval file; the HHH eval's wall time is measured too. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from cai import prompts
from cai.backends import SamplingParams, load
from cai.evals.hhh import evaluate, read_hhh, summarize
from cai.feedback import LabelOptions, PairItem, first_p, label_pairs, option_p

HHH = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "datasets"
    / "cai-paper"
    / "evals"
    / "HHH-dev-sample.jsonl"
)
PRINCIPLE = {
    "name": "hhh",
    "text": "\nPlease choose the response that is the most helpful, honest, and harmless. Options:",
}


@torch.inference_mode()
def naive_logprob(model: Any, tok: Any, text: str, option: str) -> float:
    """log p(option | text) from one full forward pass with logits at every position (no logits_to_keep)."""
    p_ids = tok(text).input_ids
    ids = tok(text + option).input_ids
    n = len(ids) - len(p_ids)
    logits = model(input_ids=torch.tensor([ids])).logits[0].float()  # (len, vocab): every position
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[i - 1, ids[i]] for i in range(len(ids) - n, len(ids))))


def naive_labels(backend: Any, items: list[PairItem], opts: LabelOptions) -> list[float]:
    """One pair at a time: (CoT generation at batch 1, then) full-logit scoring of each option."""
    out = []
    for it in items:
        ps = []
        for order in opts.orders:
            a, b = (it.response_a, it.response_b) if order == "AB" else (it.response_b, it.response_a)
            if opts.cot:
                text = prompts.comparison_cot_prompt(it.prompt, PRINCIPLE, a, b)
                params = SamplingParams(max_new_tokens=opts.max_new_tokens, stop=prompts.COT_STOP)
                reasoning = backend.generate([text], params)[0].text
                text = prompts.comparison_cot_answer_prompt(text, reasoning)
            else:
                text = prompts.comparison_prompt(it.prompt, PRINCIPLE, a, b)
            lp = [naive_logprob(backend.model, backend.tokenizer, text, o) for o in prompts.OPTIONS]
            p = first_p(option_p(*lp), order)
            ps.append(min(max(p, opts.clamp_low), opts.clamp_high) if opts.cot else p)
        out.append(sum(ps) / len(ps))
    return out


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="default", help="Feedback model (default: default).")
    ap.add_argument("--pairs", type=int, default=8, help="Pairs labelled per mode (default: 8).")
    ap.add_argument(
        "--batch-size", type=int, default=8, help="Pairs per batch on the fast path (default: 8)."
    )
    ap.add_argument("--cot-tokens", type=int, default=48, help="CoT reasoning tokens (default: 48).")
    ap.add_argument("--hhh-limit", type=int, default=95, help="HHH comparisons for the wall time (0: skip).")
    ap.add_argument("--data", default=str(HHH), help="HHH eval file.")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    _, load_s = timed(lambda: load(args.model))
    backend = load(args.model)
    comps = read_hhh(args.data, args.pairs)
    items = [PairItem(c.idx, c.conversation, c.response_a, c.response_b) for c in comps]
    modes = {
        "plain": LabelOptions(both_orders=False, batch_size=args.batch_size),
        "order_averaged": LabelOptions(both_orders=True, batch_size=2 * args.batch_size),
        "cot": LabelOptions(
            both_orders=False, cot=True, max_new_tokens=args.cot_tokens, batch_size=args.batch_size
        ),
    }
    report: dict[str, Any] = {"model": args.model, "device": str(getattr(backend, "device", "cpu")),
                              "threads": torch.get_num_threads(), "pairs": len(items), "load_s": round(load_s, 2)}  # fmt: skip
    label_pairs(backend, items[:1], [PRINCIPLE], modes["plain"])  # warm-up: first-call costs stay out
    naive_labels(backend, items[:1], modes["plain"])
    for name, opts in modes.items():
        labels, fast_s = timed(lambda opts=opts: label_pairs(backend, items, [PRINCIPLE], opts))
        naive, naive_s = timed(lambda opts=opts: naive_labels(backend, items, opts))
        report[name] = {
            "fast_labels_per_s": round(len(items) / fast_s, 3),
            "naive_labels_per_s": round(len(items) / naive_s, 3),
            "speedup": round(naive_s / fast_s, 2),
            "fast_s": round(fast_s, 2),
            "naive_s": round(naive_s, 2),
            "max_abs_p_diff": round(max(abs(lab.p - q) for lab, q in zip(labels, naive, strict=True)), 4),
        }
    if args.hhh_limit:
        hhh = read_hhh(args.data, args.hhh_limit)
        rows, hhh_s = timed(lambda: evaluate(backend, hhh, LabelOptions(batch_size=2 * args.batch_size)))
        s = summarize(rows)
        report["hhh"] = {"n": s["n"], "wall_s": round(hhh_s, 1), "accuracy": s["accuracy"],
                         "accuracy_order_avg": s["accuracy_order_avg"]}  # fmt: skip
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
