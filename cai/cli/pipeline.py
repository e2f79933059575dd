"""`cai pipeline run|show|list`: a whole recipe as one run of linked stage runs, thin over cai.pipeline."""

from __future__ import annotations

import argparse
from typing import Any

from cai import pipeline, runs, store
from cai.cli import add_common, emit, table
from cai.cli.runs import follow, row_id
from cai.pipeline.runner import show


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands to the `cai` parser."""
    pipe = sub.add_parser("pipeline", help="Run a whole recipe (SL -> SFT -> pairs -> labels -> PM -> RL -> evals).")
    psub = pipe.add_subparsers(dest="action", metavar="ACTION")
    psub.required = True
    p = psub.add_parser(
        "run",
        help="Create a pipeline from a recipe, start it and, by default, wait for it.",
        description="Check the recipe (every stage section against its stage's config), pin what it resolves "
        "(the constitution version), create the pipeline run and start its worker. Cancel and resume it "
        "like any run: `cai runs cancel|resume ID`.",
    )
    p.add_argument("recipe", help="A recipe YAML file, or a shipped recipe's name (smoke, cpu-small, paper).")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a recipe value, e.g. --set sl.revisions=2 --set policy=tiny (repeatable).")
    p.add_argument("--detach", action="store_true", help="Return the pipeline's run id at once; the worker keeps going.")
    p.add_argument("--check", action="store_true", help="Only check the recipe and print it resolved; run nothing.")
    add_common(p)
    p.set_defaults(func=cmd_run)
    p = psub.add_parser("show", help="A pipeline: its stages, each stage run's status and what it handed on.")
    p.add_argument("id", type=row_id, help="The pipeline's run id.")
    add_common(p)
    p.set_defaults(func=cmd_show)
    p = psub.add_parser("report", help="The paper's figures on this pipeline's stage runs, each with a verdict.")
    p.add_argument("id", type=row_id, help="The pipeline's run id.")
    p.add_argument("--out", default=None, help="Also write a self-contained HTML report to this file.")
    add_common(p)
    p.set_defaults(func=cmd_report)
    p = psub.add_parser("list", help="Pipelines, newest first.")
    add_common(p)
    p.set_defaults(func=cmd_list)


def cmd_run(args: argparse.Namespace) -> int:
    db = store.connect(args.db)
    if args.check:
        recipe, digest = pipeline.resolve(db, args.recipe, args.sets)
        emit(args, {"recipe": recipe, "recipe_sha256": digest}, lambda d: pipeline.dump(d["recipe"]).rstrip())
        return 0
    run_id = pipeline.create(db, args.recipe, args.sets)
    runs.launch(store.db_path(args.db), run_id)
    rc = 0
    if not args.detach:
        quiet = argparse.Namespace(**{**vars(args), "json": False})
        run = follow(quiet, db, run_id)
        rc = 130 if run is None else 0 if run["status"] == "done" else 1
    emit(args, show(db, run_id), render)
    return rc


def cmd_show(args: argparse.Namespace) -> int:
    emit(args, show(store.connect(args.db), args.id), render)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cai.pipeline import report

    data = report.build(store.connect(args.db), args.id)
    if args.out:
        Path(args.out).expanduser().write_text(report.html(data), encoding="utf-8")
    emit(args, data, report.text)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    db = store.connect(args.db)
    rows = [{"id": r["id"], "recipe": store.loads(r["config"]["spec"] or "{}").get("name", r["config"]["recipe"]),
             "status": r["status"], "done": r["done"], "total": r["total"], "created": r["created_at"]}
            for r in runs.list_runs(db, kind="pipeline")]
    emit(args, rows, lambda rs: table(rs, ["id", "recipe", "status", "done", "total", "created"]))
    return 0


def render(d: dict[str, Any]) -> str:
    lines = [f"pipeline {d['id']} ({d['name']}) {d['status']}"]
    if d["error"]:
        lines.append(f"error: {d['error']}")
    from cai.pipeline.runner import values_text

    rows = [{**s, "output": "" if s.get("output") is None else s["output"], "reused": "yes" if s["reused"] else "",
             "sweep": values_text(s.get("sweep") or {})} for s in d["stages"]]
    sweep = ["sweep"] if d.get("sweep") else []  # a swept stage runs once per value: which values this run has
    lines.append(table(rows, ["stage", *sweep, "kind", "run_id", "status", "done", "total", "output", "reused"]))
    return "\n".join(lines)
