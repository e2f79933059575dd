"""`cai eval hhh | agreement | revisions`: each creates a run, launches its worker and follows it.

Progress and log lines go to stderr while the run works; the run's result is printed at the end
(`--json`: the result object, e.g. {"accuracy": ..., "n": ...}). `cai runs cancel/resume RUN` stop
and continue an eval like any other run; `--detach` returns the run id at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cai import runs, store
from cai.cli import emit
from cai.cli.runs import add_stage_parser, follow, stage_config
from cai.stages import REGISTRY, HHHConfig

# `cai eval NAME` -> (stage kind, help): the same parser as `cai run KIND` (one door, the same flags).
EVALS = {
    "hhh": ("hhh", "HHH eval of a model used as a feedback model (accuracy, position bias)."),
    "agreement": ("agreement", "Agreement of a feedback model's soft labels with human choices."),
    "revisions": ("revision-scores", "Preference-model scores of every step of an SL run's chains."),
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands to the `cai` parser."""
    ev = sub.add_parser("eval", help="Evaluations: HHH, AI-vs-human agreement, per-revision PM scores.")
    esub = ev.add_subparsers(dest="eval", metavar="EVAL")
    esub.required = True
    for name, (kind, what) in EVALS.items():
        p = add_stage_parser(esub, name, REGISTRY[kind], help=what)
        p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    config = stage_config(args)
    if isinstance(config, HHHConfig):
        from cai.evals.hhh import read_hhh

        read_hhh(config.data, config.limit)  # a bad file fails here, naming its line, before any run exists
    text = {"hhh": _hhh_text, "agreement": _agreement_text}.get(config.kind, lambda r: json.dumps(r, indent=2))
    db = store.connect(args.db)
    run_id, _proc = runs.start(db, store.db_path(args.db), config)
    if args.detach:
        emit(args, {"id": run_id, "kind": config.kind, "status": "queued"}, lambda d: str(d["id"]))
        return 0
    run = follow(args, db, run_id)
    if run is None:
        return 130
    if run["status"] != "done":
        print(
            f"run {run_id} {run['status']}" + (f": {run['error']}" if run["error"] else ""), file=sys.stderr
        )
        if run["status"] == "cancelled":
            print(f"continue it with: cai runs resume {run_id}", file=sys.stderr)
        return 1
    emit(args, {**run["result"], "run_id": run_id}, text)
    return 0


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
    from cai.evals.agreement import judge_warning

    warning, oa = judge_warning(r), r.get("order_averaged")
    lines = [f"WARNING: {warning}"] if warning else []  # first: the number below means nothing then
    if oa:
        lines.append(f"agreement of {r['feedback_model']} with {r['prefs']}, both option orders averaged: "
                     f"{_pct(oa['agreement'])} (95% CI {_pct(oa['ci_low'])}-{_pct(oa['ci_high'])}, n = {oa['n']} pairs)")
    lines += [
        f"agreement of the order-averaged p(chosen): {_pct(r['agreement'])} on {r['n']} pairs",
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
