"""`cai eval hhh` (default settings, whole process) against the simple one-item-at-a-time scorer, interleaved.

Each round runs, one after the other, each in a fresh process:
- `ours`: `cai eval hhh --data HHH --limit N --tie-band 0 --json` on a fresh database; wall time of the
  whole command (CLI start, the run's worker start, imports, model load, scoring, storing rows);
- `simple`: this script with `--simple`: imports, loads the same model in float32 and scores each item in
  both orders, one prompt + option per forward pass (4 passes per item, logits only at the option's
  positions); wall time of the whole process and of its scoring alone.
Both runs use the same torch thread count (`CAI_THREADS`, picked once by the workers' rule). Accuracy
(file order and order-averaged, `--tie-band 0`: a strict p > 0.5) must be equal. Once, `--phases` splits
our path in one process: imports, model load, tokenization and plan, forward passes.
Medians over the rounds and the load average before and after each run are reported. Prints JSON:

    python bench/hhh_speed.py --limit 40 --rounds 2 > bench/hhh_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HHH = ROOT.parent / "shared" / "datasets" / "cai-paper" / "evals" / "HHH-dev-sample.jsonl"


def simple(model: str, data: str, limit: int) -> dict[str, Any]:
    """The simple scorer in this process: rows and summary as `cai eval hhh --tie-band 0` computes them."""
    t0 = time.perf_counter()
    import torch

    from cai import prompts
    from cai.backends import load
    from cai.evals.hhh import item_row, read_hhh, summarize
    from cai.feedback import Reading, first_p, option_p

    t_import = time.perf_counter()
    backend = load(model, dtype=torch.float32)
    t_load = time.perf_counter()
    c0 = time.process_time()
    items = read_hhh(data, limit)
    rows = []
    with torch.inference_mode():
        for it in items:
            readings = []
            for order in ("AB", "BA"):
                text = it.text(order == "BA", False)
                lps = []
                for option in prompts.OPTIONS:
                    rule = backend.option_tokens(text, option)
                    logits = backend.model(
                        input_ids=torch.tensor([rule.ids]), logits_to_keep=rule.n_option + 1
                    ).logits[0, :-1]
                    logp = torch.log_softmax(logits.float(), dim=-1)
                    lps.append(float(sum(logp[k, t] for k, t in enumerate(rule.ids[-rule.n_option :]))))
                pa = option_p(*lps)
                readings.append(Reading(0, order, "hhh", 0, lps, pa, first_p(pa, order)))
            rows.append(item_row(it, readings, band=0.0))
    t_score = time.perf_counter()
    return {
        "import_s": t_import - t0,
        "load_s": t_load - t_import,
        "score_s": t_score - t_load,
        "score_cpu_s": time.process_time() - c0,
        "summary": summarize(rows, 0.0),
        "p_plain": [r["p_plain"] for r in rows],
        "threads": torch.get_num_threads(),
    }


def phases(model: str, data: str, limit: int, batch: int) -> dict[str, Any]:
    """Our default scoring path in one process, split: imports, load, tokenization + plan, forward passes."""
    t0 = time.perf_counter()
    import torch

    from cai import prompts
    from cai.backends import load, packed, prefix
    from cai.backends.hf import attn_tokens
    from cai.evals.hhh import read_hhh

    t_import = time.perf_counter()
    backend = load(model, purpose="score")
    t_load = time.perf_counter()
    items = read_hhh(data, limit)
    plan_s = forward_s = 0.0
    tokens = slots = 0
    passes = 0
    cost = attn_tokens(backend.model)
    for start in range(0, len(items), batch):
        texts = [it.text(sw, False) for it in items[start : start + batch] for sw in (False, True)]
        a = time.perf_counter()
        seqs = backend._sequences(texts, [list(prompts.OPTIONS)] * len(texts))
        rows = packed.rows(packed.units(prefix.build(seqs), cost), cost, backend.pass_slots)
        b = time.perf_counter()
        for row in rows:
            backend._score_row(row)
        forward_s += time.perf_counter() - b
        plan_s += b - a
        tokens += sum(len(ids) for _, ids, _ in seqs)
        slots += packed.tokens_run(rows)
        passes += len(rows)
    return {
        "import_s": round(t_import - t0, 2),
        "load_s": round(t_load - t_import, 2),
        "tokenize_and_plan_s": round(plan_s, 2),
        "forward_s": round(forward_s, 2),
        "score_plan": backend.score_plan,
        "dtype": str(backend.model.dtype),
        "threads": torch.get_num_threads(),
        "forward_passes": passes,
        "sequence_tokens": tokens,  # prompt + option, per option: what one pass per option would run
        "tokens_run": slots,
        "attn_tokens": round(cost),
    }


def sub(args: list[str], threads: int) -> tuple[float, str, tuple[float, float]]:
    env = {**os.environ, "CAI_THREADS": str(threads), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false",
           # a loaded machine can starve the worker's heartbeat thread past the 30 s default (import time)
           "CAI_HEARTBEAT_TIMEOUT_S": os.environ.get("CAI_HEARTBEAT_TIMEOUT_S", "600")}  # fmt: skip
    before = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return wall, out.stdout, (before, os.getloadavg()[0])


def ours(data: str, limit: int, threads: int, model: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", "from cai.cli import main; raise SystemExit(main())", "eval", "hhh",
               "--data", data, "--limit", str(limit), "--tie-band", "0", "--json", "--db", f"{tmp}/w.db"]  # fmt: skip
        if model:
            cmd += ["--model", model]
        wall, stdout, load = sub(cmd, threads)
        result = json.loads(stdout)
        import sqlite3

        db = sqlite3.connect(f"{tmp}/w.db")
        p_plain = [r[0] for r in db.execute("select p_plain from hhh_results order by idx")]
        db.close()
    return {"wall_s": wall, "load_avg": load, "summary": result, "p_plain": p_plain}


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 2)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="Model (default: the HHH default, as `cai eval hhh`).")
    ap.add_argument("--data", default=str(HHH), help="HHH eval file.")
    ap.add_argument("--limit", type=int, default=40, help="Comparisons (default 40).")
    ap.add_argument("--rounds", type=int, default=2, help="Interleaved rounds (default 2); medians reported.")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both (default: the workers' rule).")
    ap.add_argument("--simple", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--phases", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from cai.backends.builtin import FEEDBACK_DEFAULT

    model = args.model or FEEDBACK_DEFAULT
    if args.simple or args.phases:
        import torch

        torch.set_num_threads(int(os.environ.get("CAI_THREADS", "1")))
        out = simple(model, args.data, args.limit) if args.simple else phases(model, args.data, args.limit, 8)
        print(json.dumps(out))
        return out
    from cai.backends.precision import choose_threads

    threads = args.threads or choose_threads(os.cpu_count() or 1, os.getloadavg()[0], 1)[0]
    me = [sys.executable, str(Path(__file__).resolve()), "--data", args.data, "--limit", str(args.limit),
          "--model", model]  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "simple": []}
    for r in range(args.rounds):
        runs["ours"].append(ours(args.data, args.limit, threads, args.model))
        print(f"round {r + 1} ours: {runs['ours'][-1]['wall_s']:.1f}s", file=sys.stderr, flush=True)
        wall, stdout, load = sub([*me, "--simple"], threads)
        runs["simple"].append({"wall_s": wall, "load_avg": load, **json.loads(stdout)})
        print(f"round {r + 1} simple: {wall:.1f}s", file=sys.stderr, flush=True)
    wall, stdout, load = sub([*me, "--phases"], threads)
    split = {**json.loads(stdout), "wall_s": round(wall, 2), "load_avg": load}
    ours_wall = [x["wall_s"] for x in runs["ours"]]
    simple_wall = [x["wall_s"] for x in runs["simple"]]
    simple_score = [x["score_s"] for x in runs["simple"]]
    acc = {k: [(x["summary"]["accuracy"], x["summary"]["accuracy_order_avg"]) for x in v] for k, v in runs.items()}
    p_diff = max(abs(a - b) for x in runs["ours"] for y in runs["simple"]
                 for a, b in zip(x["p_plain"], y["p_plain"], strict=True))  # fmt: skip
    in_process = split["load_s"] + split["tokenize_and_plan_s"] + split["forward_s"] + split["import_s"]
    report = {
        "model": model,
        "n": args.limit,
        "rounds": args.rounds,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "ours_whole_process_s": [round(x, 1) for x in ours_wall],
        "simple_whole_process_s": [round(x, 1) for x in simple_wall],
        "simple_scoring_s": [round(x, 1) for x in simple_score],
        "load_avg_before_after": {k: [[round(a, 1), round(b, 1)] for a, b in (x["load_avg"] for x in v)]
                                  for k, v in runs.items()},  # fmt: skip
        "ratio_ours_whole_process_vs_simple_scoring": round(median(ours_wall) / median(simple_score), 3),
        "ratio_ours_whole_process_vs_simple_whole_process": round(median(ours_wall) / median(simple_wall), 3),
        "ratio_ours_forward_vs_simple_scoring": round(split["forward_s"] / median(simple_score), 3),
        "accuracy_file_order_and_order_avg": acc,
        "equal_accuracy": len({a for v in acc.values() for a in v}) == 1,
        "max_abs_p_plain_diff": p_diff,
        "ours_phases": {**split, "share_of_whole_process": {
            k: round(split[k] / median(ours_wall), 3) for k in ("import_s", "load_s", "tokenize_and_plan_s", "forward_s")},
            "rest_s_cli_worker_db": round(median(ours_wall) - in_process, 2)},  # fmt: skip
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
