"""AI-feedback label throughput on the default model (plain, order-averaged, CoT) against a naive labeller.

The fast path is cai.feedback.label_pairs (option log-probs through the backend, which keeps only the
logits it needs and, on CPU, runs every token that the orders and options of a comparison share once).
Two baselines: "naive" labels one pair at a time with full-vocabulary logits at every position;
"simple" runs prompt + option for each order and option (4 passes per item) with logits_to_keep.
The HHH eval (the default plan: packed tree rows on CPU) is timed against padded batches, the simple
loop and the opt-in shared-prefix tree on KV caches (HFBackend.shared_prefix) on the same items,
interleaved, in one dtype (--dtype, default float32), with accuracies that must match. Prints JSON.

    python bench/feedback.py --pairs 4 --hhh-limit 12 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cai import prompts
from cai.backends import SamplingParams, load
from cai.backends.precision import pick_dtype
from cai.evals.hhh import evaluate, item_row, read_hhh, summarize
from cai.evals.hhh import queries as hhh_queries
from cai.feedback import LabelOptions, PairItem, Reading, first_p, label_pairs, option_p

HHH = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "datasets"
    / "cai-paper"
    / "evals"
    / "HHH-dev-sample.jsonl"
)
FEWEST_BATCHES = 10**9  # HFBackend.pass_slots that makes every pass free: the budgets alone cut batches
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


@torch.inference_mode()
def simple_logprob(model: Any, backend: Any, text: str, option: str) -> float:
    """log p(option | text): one pass of prompt + option, logits kept only at the option's positions."""
    rule = backend.option_tokens(text, option)
    ids = torch.tensor([rule.ids])
    logits = model(input_ids=ids, logits_to_keep=rule.n_option + 1).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[k, t] for k, t in enumerate(rule.ids[-rule.n_option :])))


def simple_hhh(backend: Any, items: list[Any]) -> list[dict[str, Any]]:
    """The HHH rows the simple one-at-a-time loop gives: 2 orders x 2 options = 4 passes per item."""
    out = []
    for it in items:
        readings = []
        for order in ("AB", "BA"):
            text = it.text(order == "BA", False)
            lp = [simple_logprob(backend.model, backend, text, o) for o in prompts.OPTIONS]
            pa = option_p(*lp)
            readings.append(Reading(0, order, "hhh", 0, lp, pa, first_p(pa, order)))
        out.append(item_row(it, readings))
    return out


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


def timed_cpu(fn: Any) -> tuple[Any, float, float]:
    """Value, wall seconds, and CPU seconds of this process (steadier than wall time on a shared machine)."""
    c0, t0 = time.process_time(), time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0, time.process_time() - c0


def hhh_comparison(
    backend: Any, items: list[Any], batch_size: int, rounds: int, only: list[str] | None = None
) -> dict[str, Any]:
    """`cai eval hhh`'s scoring (default settings) vs the simple loop and the prefix tree, interleaved."""
    opts = LabelOptions(batch_size=2 * batch_size)  # what run_stage passes for the config's batch_size
    default = backend.shared_prefix

    def ours() -> list[dict[str, Any]]:
        backend.shared_prefix = default
        return evaluate(backend, items, opts)

    def fewest_batches() -> list[dict[str, Any]]:  # the padded plan before padding was cut
        planned, plan = backend.pass_slots, backend.score_plan
        backend.pass_slots, backend.score_plan = FEWEST_BATCHES, "padded"
        try:
            return evaluate(backend, items, opts)
        finally:
            backend.pass_slots, backend.score_plan = planned, plan

    def padded() -> list[dict[str, Any]]:  # padded batches on a KV cache (the CPU default before packed)
        plan = backend.score_plan
        backend.score_plan = "padded"
        try:
            return evaluate(backend, items, opts)
        finally:
            backend.score_plan = plan

    def tree() -> list[dict[str, Any]]:
        backend.shared_prefix = True
        try:
            return evaluate(backend, items, opts)
        finally:
            backend.shared_prefix = default

    ways = {
        "ours": ours,
        "ours_fewest_batches": fewest_batches,
        "padded": padded,
        "simple_loop": lambda: simple_hhh(backend, items),
        "shared_prefix_tree": tree,
    }
    ways = {k: fn for k, fn in ways.items() if k == "ours" or not only or k in only}
    seconds: dict[str, list[float]] = {k: [] for k in ways}
    cpu: dict[str, list[float]] = {k: [] for k in ways}
    results: dict[str, Any] = {}
    rows_of: dict[str, list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for name, fn in ways.items():
            rows, s, c = timed_cpu(fn)
            seconds[name].append(s)
            cpu[name].append(c)
            results[name] = summarize(rows)
            rows_of[name] = rows
            print(f"hhh {name}: {s:.1f}s wall, {c:.1f}s cpu", file=sys.stderr, flush=True)
    best = {k: min(v) for k, v in seconds.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    return {
        "n": len(items),
        "rounds": rounds,
        "seconds": {k: [round(x, 1) for x in v] for k, v in seconds.items()},
        "labels_per_s": {k: round(len(items) / v, 3) for k, v in best.items()},
        "cpu_seconds": {k: [round(x, 1) for x in v] for k, v in cpu.items()},
        **{f"speedup_vs_{k}": round(best[k] / best["ours"], 2) for k in best if k != "ours"},
        **{f"cpu_speedup_vs_{k}": round(best_cpu[k] / best_cpu["ours"], 2) for k in best if k != "ours"},
        **{
            f"max_abs_logprob_diff_vs_{k}": max_logprob_diff(rows_of["ours"], rows_of[k])
            for k in best
            if k != "ours"
        },
        "accuracy": {k: r["accuracy"] for k, r in results.items()},
        "accuracy_order_avg": {k: r["accuracy_order_avg"] for k, r in results.items()},
        "equal_accuracy": len({(r["accuracy"], r["accuracy_order_avg"]) for r in results.values()}) == 1,
        "padding": padding_report(backend, items, opts.batch_size),
    }


def max_logprob_diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    """Largest difference between two runs' option log-probs for the same items (0.0: identical)."""
    return max(
        (abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(_lps(ra), _lps(rb), strict=True)),
        default=0.0,
    )


def _lps(row: dict[str, Any]) -> list[float]:
    return [float(v) for r in row["meta"]["readings"] for v in r["logprobs"]]


def padding_report(backend: Any, items: list[Any], chunk: int) -> dict[str, Any]:
    """Token slots each plan computes for these items, per `option_logprobs` call of `chunk` prompts:
    padded batches as planned now (cut where a pass costs less than the padding it saves), the fewest
    batches the budgets allow (the plan before), and the shared-prefix tree."""
    from cai.backends import batching, hf, prefix

    texts = [q.text for q in hhh_queries(items, LabelOptions())]
    opts = [list(prompts.OPTIONS)] * len(texts)
    real = sum(len(backend.encode(t)) for t in texts)
    plans = {"planned": backend.pass_slots, "fewest_batches": FEWEST_BATCHES}
    slots = dict.fromkeys(plans, 0)
    batches = dict.fromkeys(plans, 0)
    for start in range(0, len(texts), chunk):
        shapes = []
        for t in texts[start : start + chunk]:
            tails = [backend.option_tokens(t, o).n_option for o in prompts.OPTIONS]
            shapes.append((len(backend.encode(t)), len(tails), max(tails)))
        shapes.sort()
        lengths = [s[0] for s in shapes]
        for name, pass_slots in plans.items():
            cut = batching.plan(
                shapes, tokens=hf.SCORE_TOKENS, logit_rows=hf.SCORE_LOGIT_ROWS, pass_slots=pass_slots
            )
            slots[name] += batching.slots(lengths, cut)
            batches[name] += len(cut)
    tree = prefix.tokens_run(prefix.build(backend._sequences(texts, opts)))
    return {
        "prompt_tokens": real,
        "pass_slots": backend.pass_slots,
        "padded_slots": slots,
        "batches": batches,
        "padding_waste": {k: round(1 - real / v, 3) for k, v in slots.items()},
        "tree_tokens": tree,
        "tree_vs_prompt_tokens": round(tree / real, 3),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="default", help="Feedback model (default: default).")
    ap.add_argument("--pairs", type=int, default=8, help="Pairs labelled per mode (default: 8; 0 skips).")
    ap.add_argument(
        "--batch-size", type=int, default=8, help="Pairs per batch on the fast path (default: 8)."
    )
    ap.add_argument("--cot-tokens", type=int, default=48, help="CoT reasoning tokens (default: 48).")
    ap.add_argument("--hhh-limit", type=int, default=40, help="HHH comparisons timed (default 40; 0: skip).")
    ap.add_argument("--rounds", type=int, default=1, help="Interleaved rounds of the HHH timing (best kept).")
    ap.add_argument(
        "--ways",
        type=lambda s: s.split(","),
        default=None,
        help="HHH scorers timed beside ours (default: all): ours_fewest_batches,padded,simple_loop,shared_prefix_tree.",
    )
    ap.add_argument("--dtype", default="float32", help="Model dtype for every path (default: float32).")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice).")
    ap.add_argument("--data", default=str(HHH), help="HHH eval file.")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    _, load_s = timed(lambda: load(args.model, dtype=getattr(torch, args.dtype)))
    backend = load(args.model, dtype=getattr(torch, args.dtype))
    report: dict[str, Any] = {
        "model": args.model,
        "device": str(getattr(backend, "device", "cpu")),
        "dtype": backend.dtype_choice.dtype,
        "dtype_reason": backend.dtype_choice.reason,
        "default_dtype_here": asdict(pick_dtype(str(getattr(backend, "device", "cpu")), backend.path)),
        "threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
    }
    if args.hhh_limit:
        hhh = read_hhh(args.data, args.hhh_limit)
        evaluate(backend, hhh[:1], LabelOptions())  # warm-up: first-call costs stay out
        report["hhh"] = hhh_comparison(backend, hhh, args.batch_size, args.rounds, args.ways)
    if args.pairs:
        report.update(pair_modes(backend, args))
    print(json.dumps(report, indent=2))
    return report


def pair_modes(backend: Any, args: Any) -> dict[str, Any]:
    """label_pairs vs the naive labeller in the plain, order-averaged and CoT modes."""
    comps = read_hhh(args.data, args.pairs)
    items = [PairItem(c.idx, c.conversation, c.response_a, c.response_b) for c in comps]
    modes = {
        "plain": LabelOptions(both_orders=False, batch_size=args.batch_size),
        "order_averaged": LabelOptions(both_orders=True, batch_size=2 * args.batch_size),
        "cot": LabelOptions(
            both_orders=False, cot=True, max_new_tokens=args.cot_tokens, batch_size=args.batch_size
        ),
    }
    report: dict[str, Any] = {"pairs": len(items)}
    label_pairs(backend, items[:1], [PRINCIPLE], modes["plain"])  # warm-up
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
    return report


if __name__ == "__main__":
    main()
