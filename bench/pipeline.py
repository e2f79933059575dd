"""A whole recipe end to end: wall time per stage and in total, and the time spent loading models, as JSON.

Creates a fresh workbench database (`cai init`), runs `cai pipeline run RECIPE` in a worker and reads each
stage run's start and finish times and its seconds loading models (`load_s`: the run's "loading models" log
lines, measured by its own model loaders, see cai/loadclock.py; 0 when it reused a model loaded by an earlier
stage in the same worker) back from the database, so the figures are what the runs stored. With `--serve` the
engines' start (seconds to a healthy server, from the `engines` table) comes before the first stage: it is in
`total_seconds` and `engine_start_s`, not in any stage's `load_s`. The machine's 1-minute load average is sampled while it
runs (a shared machine: the figures are only comparable at a similar load).

    python bench/pipeline.py --recipe recipes/cpu-small.yaml [--set sl.limit=4] [--serve] [--db DIR/bench.db]

`--serve` runs the same recipe with `--set serve=[policy,feedback]` (the stages share one served engine per
model instead of loading the weights per stage); where the recipe format has no `serve` key the JSON says
"refused" with the recipe checker's one-line reason, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cai import loadclock, pipeline, runs, store
from cai.cli import main as cai
from cai.pipeline.runner import links

SERVE = "serve=[policy,feedback]"


def seconds(run: dict[str, Any]) -> float | None:
    if not run.get("started_at") or not run.get("finished_at"):
        return None
    return round((datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds(), 1)


def stage_rows(db: Any, run_id: int) -> list[dict[str, Any]]:
    """Per stage run: status, wall seconds (started_at to finished_at), seconds loading models, the rest."""
    rows = []
    for link in links(db, run_id):
        run = runs.get_run(db, link["run_id"])
        wall = seconds(run)
        lines = [r[0] for r in db.execute("select line from run_logs where run_id = ? order by id", [run["id"]])]
        load = loadclock.logged(lines)
        rows.append({"stage": link["stage"], "sweep": link["sweep"], "kind": run["kind"], "run_id": run["id"],
                     "status": run["status"], "threads": run["pinned"].get("threads"),
                     "seconds": wall, "load_s": load,
                     "other_s": round(wall - load, 1) if wall is not None and load is not None else None})
    return rows


def engine_rows(db: Any) -> list[dict[str, Any]]:
    """The shared engines the pipeline started (with `--serve`): model, seconds to ready, starts, status."""
    if "engines" not in db.table_names():
        return []
    return [{"model": r["model"], "ready_s": r["ready_s"], "starts": r["starts"], "status": r["status"]}
            for r in db["engines"].rows_where(order_by="updated_at")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/cpu-small.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--serve", action="store_true", help=f"Share served engines: adds --set {SERVE}.")
    parser.add_argument("--db", default=None, help="Database to create (default: a temporary folder).")
    parser.add_argument("--timeout", type=float, default=4 * 3600)
    args = parser.parse_args()
    sets = args.sets + ([SERVE] if args.serve else [])
    db_path = Path(args.db or Path(tempfile.mkdtemp(prefix="cai-bench-")) / "bench.db")
    head = {"recipe": args.recipe, "sets": sets, "mode": "serve" if args.serve else "load per stage",
            "db": str(db_path), "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine()}
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the bench's JSON only
        initialised = cai(["init", "--db", str(db_path), "--json"]) == 0
    if not initialised:
        print(json.dumps({**head, "status": "failed", "error": "cai init failed"}, indent=2))
        return 1
    db = store.connect(db_path)
    try:
        run_id = pipeline.create(db, args.recipe, sets)
    except (pipeline.RecipeError, runs.RunError) as exc:  # e.g. `serve` on a branch without that recipe key
        print(json.dumps({**head, "status": "refused", "error": str(exc)}, indent=2))
        return 2
    loads = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    proc = runs.launch(db_path, run_id)
    deadline = time.monotonic() + args.timeout
    while (final := runs.get_run(db, run_id))["status"] in runs.ACTIVE and time.monotonic() < deadline:
        time.sleep(5.0)
        loads.append(os.getloadavg()[0])
    proc.wait()
    final = runs.get_run(db, run_id)
    total = time.perf_counter() - t0
    stages = stage_rows(db, run_id)
    print(json.dumps({
        **head, "status": final["status"], "error": final["error"], "pipeline_run": run_id,
        "load_avg_1m": {"before": round(loads[0], 2), "mean": round(sum(loads) / len(loads), 2),
                        "max": round(max(loads), 2), "after": round(os.getloadavg()[0], 2)},
        "stages": stages,
        "total_seconds": round(total, 1),
        "stage_seconds": round(sum(s["seconds"] or 0.0 for s in stages), 1),
        "load_s": round(sum(s["load_s"] for s in stages), 1),
        # engines start before the first stage that uses them: their seconds are in total_seconds only
        "engines": (started := engine_rows(db)),
        "engine_start_s": round(sum(e["ready_s"] or 0.0 for e in started), 1),
    }, indent=2))
    return 0 if final["status"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
