"""`cai eval hhh | agreement | revisions`: each creates a run, launches its worker and follows it.

Progress and log lines go to stderr while the run works; the run's result is printed at the end
(`--json`: the result object, e.g. {"accuracy": ..., "n": ...}). `cai runs cancel/resume RUN` stop
and continue an eval like any other run; `--detach` returns the run id at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from cai import runs, store
from cai.cli import add_common, emit
from cai.config import AgreementConfig, HHHConfig, RevisionScoresConfig, StageConfig


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands to the `cai` parser."""
    ev = sub.add_parser("eval", help="Evaluations: HHH, AI-vs-human agreement, per-revision PM scores.")
    esub = ev.add_subparsers(dest="eval", metavar="EVAL")
    esub.required = True

    p = esub.add_parser("hhh", help="HHH eval of a model used as a feedback model (accuracy, position bias).")
    p.add_argument("--data", required=True, help="HHH eval JSONL (fields prompt, corrects, incorrects).")
    p.add_argument("--model", default="default", help="Model to evaluate (default: default).")
    p.add_argument("--cot", action="store_true", help="Chain of thought before the answer.")
    p.add_argument(
        "--samples", type=int, default=1, help="CoT samples per comparison, averaged (default: 1)."
    )
    p.add_argument("--limit", type=int, default=None, help="Only the first N comparisons.")
    p.add_argument("--batch-size", type=int, default=8, help="Comparisons per batch (default: 8).")
    p.add_argument("--max-new-tokens", type=int, default=128, help="Token limit of the CoT (default: 128).")
    p.add_argument("--seed", type=int, default=0, help="Seed for CoT sampling (default: 0).")
    _judge_rigor(p)
    _common(p)
    p.set_defaults(func=cmd_hhh)

    p = esub.add_parser("agreement", help="Agreement of a feedback model's soft labels with human choices.")
    p.add_argument("--prefs", required=True, help="Human preference set (name).")
    p.add_argument("--feedback", default="default", help="Feedback model (default: default).")
    p.add_argument(
        "--principles", nargs="*", default=[], help="Comparison principle names (default: all enabled)."
    )
    p.add_argument(
        "--constitution", default="", help="Constitution name (default: the most recently changed)."
    )
    p.add_argument("--one-order", action="store_true", help="Score only the (chosen=A) order; no averaging.")
    p.add_argument("--limit", type=int, default=None, help="Only the first N pairs.")
    p.add_argument("--batch-size", type=int, default=8, help="Pairs per batch (default: 8).")
    p.add_argument("--bins", type=int, default=10, help="Calibration bins (default: 10).")
    p.add_argument("--seed", type=int, default=0, help="Seed for principle draws (default: 0).")
    _judge_rigor(p)
    _common(p)
    p.set_defaults(func=cmd_agreement)

    p = esub.add_parser("revisions", help="Preference-model scores of every step of an SL run's chains.")
    p.add_argument("--run", type=int, required=True, help="The SL run whose chains to score.")
    p.add_argument("--pm", required=True, help="Preference model (registered name or folder).")
    p.add_argument("--batch-size", type=int, default=8, help="Steps per batch (default: 8).")
    _common(p)
    p.set_defaults(func=cmd_revisions)


def _judge_rigor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inconsistent", choices=["average", "tie"], default="average",
                   help="Items whose two option orders disagree: keep the order average, or score them p = 0.5.")
    p.add_argument("--tie-band", type=float, default=0.01,
                   help="A p within this of 0.5 is a tie, not a preference (default: 0.01).")


def _common(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--detach", action="store_true", help="Print the run id at once; the worker keeps going.")


def cmd_hhh(args: argparse.Namespace) -> int:
    config = HHHConfig(
        data=args.data,
        model=args.model,
        cot=args.cot,
        samples=args.samples,
        limit=args.limit,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        inconsistent=args.inconsistent,
        tie_band=args.tie_band,
    )
    from cai.evals.hhh import read_hhh

    read_hhh(config.data, config.limit)  # a bad file fails here, naming its line, before any run exists
    return start(args, config, _hhh_text)


def cmd_agreement(args: argparse.Namespace) -> int:
    config = AgreementConfig(
        prefs=args.prefs,
        feedback_model=args.feedback,
        constitution=args.constitution,
        principles=",".join(args.principles),
        both_orders=not args.one_order,
        limit=args.limit,
        batch_size=args.batch_size,
        bins=args.bins,
        seed=args.seed,
        inconsistent=args.inconsistent,
        tie_band=args.tie_band,
    )
    return start(args, config, _agreement_text)


def cmd_revisions(args: argparse.Namespace) -> int:
    config = RevisionScoresConfig(run=args.run, pm=args.pm, batch_size=args.batch_size)
    return start(args, config, lambda r: json.dumps(r, indent=2))


def start(args: argparse.Namespace, config: StageConfig, text: Any) -> int:
    db = store.connect(args.db)
    run_id, _proc = runs.start(db, store.db_path(args.db), config)
    if args.detach:
        emit(args, {"id": run_id, "kind": config.kind, "status": "queued"}, lambda d: str(d["id"]))
        return 0
    run = follow(db, run_id)
    if run["status"] != "done":
        print(
            f"run {run_id} {run['status']}" + (f": {run['error']}" if run["error"] else ""), file=sys.stderr
        )
        if run["status"] == "cancelled":
            print(f"continue it with: cai runs resume {run_id}", file=sys.stderr)
        return 1
    emit(args, {**run["result"], "run_id": run_id}, text)
    return 0


def follow(db: Any, run_id: int, poll: float = 0.5) -> dict[str, Any]:
    """Print progress and log lines to stderr until the run leaves queued/running; returns its row."""
    from cai.cli.runs import progress_line

    last_log, last_line = 0, ""
    try:
        while True:
            run = runs.get_run(db, run_id)
            for row in db["run_logs"].rows_where("run_id = ? and id > ?", [run_id, last_log], order_by="id"):
                print(f"[{row['level']}] {row['line']}", file=sys.stderr)
                last_log = row["id"]
            line = progress_line(run)
            if line != last_line:
                print(line, file=sys.stderr)
                last_line = line
            if run["status"] not in runs.ACTIVE:
                return run
            time.sleep(poll)
    except KeyboardInterrupt:
        print(f"run {run_id} goes on in the background: cai runs show {run_id}", file=sys.stderr)
        raise


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _hhh_text(r: dict[str, Any]) -> str:
    pos = r["position"]
    return "\n".join(
        [
            f"HHH eval of {r['model']}{' (CoT)' if r['cot'] else ''}: n = {r['n']}",
            f"accuracy (file order)   {_pct(r['accuracy'])}",
            f"accuracy (order avg.)   {_pct(r['accuracy_order_avg'])}",
            f"correct shown as (A)    {_pct(pos['both_orders']['correct_shown_A'])}",
            f"correct shown as (B)    {_pct(pos['both_orders']['correct_shown_B'])}",
            f"position consistency    {_pct(r['consistency']['rate'])} of {r['consistency']['n']}",
            f"run {r['run_id']}",
        ]
    )


def _agreement_text(r: dict[str, Any]) -> str:
    lines = [
        f"agreement of {r['feedback_model']} with {r['prefs']}: {_pct(r['agreement'])} on {r['n']} pairs",
        f"ties (p within {r['tie_band']} of 0.5): {r['ties']}; agreement on the rest {_pct(r['agreement_decisive'])}",
        f"Cohen's kappa (AI vs human, by position) {r['kappa']}",
        f"position consistency {_pct(r['consistency']['rate'])} of {r['consistency']['n']} pairs read in both orders",
        f"mean p(chosen) {r['mean_p_chosen']}, ECE {r['ece']}",
        f"chosen shown as (A) {_pct(r['position']['chosen_shown_A'])}, as (B) {_pct(r['position']['chosen_shown_B'])}",
    ]
    cons = r["consistency"]["per_principle"]
    lines += [f"  {k}: {_pct(v['agreement'])} of {v['n']}, consistent {_pct(cons.get(k, {}).get('rate'))}"
              for k, v in r["per_principle"].items()]
    return "\n".join(lines + [f"run {r['run_id']}"])
