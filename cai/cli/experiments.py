"""`cai experiment run|show|list`: constitution experiments, thin over cai.experiments."""

from __future__ import annotations

import argparse
from typing import Any

from cai import experiments, store
from cai.cli import add_common, emit, table
from cai.cli.runs import add_config_flags, config_values, follow
from cai.stages import ExperimentConfig


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands to the `cai` parser."""
    exp = sub.add_parser("experiment", help="Compare constitution versions end to end (paired runs, deltas).")
    esub = exp.add_subparsers(dest="action", metavar="ACTION")
    esub.required = True
    p = esub.add_parser(
        "run",
        help="Run the same stages under each version, on paired prompts and seeds.",
        description="Create an experiment (one ordinary run per version and stage), start it and, by default, "
        "wait for it; then print the paired deltas with bootstrap CIs.",
    )
    add_config_flags(p, ExperimentConfig)
    for action in p._actions:
        if action.dest == "cfg_versions":
            action.nargs = "+"
            action.metavar = "NAME@N"
    add_common(p)
    p.add_argument("--detach", action="store_true", help="Return the experiment id at once; the worker keeps going.")
    p.set_defaults(func=cmd_run)
    p = esub.add_parser("show", help="An experiment: its runs, per-version means and paired deltas.")
    p.add_argument("id", type=int, help="Experiment id.")
    p.add_argument("--paired", action="store_true", help="Also the side-by-side revisions per prompt.")
    add_common(p)
    p.set_defaults(func=cmd_show)
    p = esub.add_parser("list", help="Experiments, newest first.")
    add_common(p)
    p.set_defaults(func=cmd_list)


def cmd_run(args: argparse.Namespace) -> int:
    values = config_values(args)
    if isinstance(values.get("versions"), list):
        values["versions"] = " ".join(values["versions"])
    cfg = ExperimentConfig.from_dict(values)
    db = store.connect(args.db)
    exp_id, run_id = experiments.start(db, store.db_path(args.db), cfg)
    if not args.detach:
        quiet = argparse.Namespace(**{**vars(args), "json": False})
        rc = follow_quietly(quiet, db, run_id)
        if rc:
            emit(args, experiments.show(db, exp_id), render)
            return rc
    emit(args, experiments.show(db, exp_id), render)
    return 0


def follow_quietly(args: argparse.Namespace, db: Any, run_id: int) -> int:
    """Follow the orchestrating run's progress on stderr (its final row is not printed); the exit code."""
    run = follow(args, db, run_id)
    return 130 if run is None else 0 if run["status"] == "done" else 1


def cmd_show(args: argparse.Namespace) -> int:
    db = store.connect(args.db)
    data = experiments.show(db, args.id)
    if args.paired:
        data["paired"] = experiments.paired(db, args.id)
    emit(args, data, render)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    db = store.connect(args.db)
    emit(args, experiments.list_experiments(db),
         lambda rows: table(rows, ["id", "run_id", "versions", "prompts", "model", "stages", "status", "done", "total"]))
    return 0


def render(d: dict[str, Any]) -> str:
    lines = [f"experiment {d['id']} (run {d['run_id']}) {d['status']}: {d['config']['versions']} "
             f"on {d['config']['prompts']} with {d['config']['model']}"]
    if d["error"]:
        lines.append(f"error: {d['error']}")
    lines.append(table(d["runs"], ["version", "stage", "run_id", "status", "done", "total"]))
    if d["deltas"]:
        lines.append(f"\ndeltas vs {d['deltas'][0]['baseline']} ({d['confidence']:.0%} bootstrap CI):")
        rows = [{**r, "ci": "" if r["lo"] is None else f"[{r['lo']:+.4f}, {r['hi']:+.4f}]",
                 "noise": {True: "within noise", False: "outside noise", None: ""}[r["within_noise"]]}
                for r in d["deltas"]]
        lines.append(table(rows, ["metric", "principle", "version", "delta", "ci", "n", "noise"]))
    return "\n".join(lines)
