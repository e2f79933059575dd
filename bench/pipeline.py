"""A whole recipe end to end: wall time per stage and in total, as JSON.

Creates a fresh workbench database (`cai init`), runs `cai pipeline run RECIPE` in a worker and reads each
stage run's start and finish times back from the database, so the figures are what the runs stored.
Prints one JSON object: the recipe, the machine's load before and after, per-stage seconds and the total.

    python bench/pipeline.py --recipe recipes/cpu-small.yaml [--set sl.limit=4] [--db DIR/bench.db]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime
from pathlib import Path

from cai import pipeline, runs, store
from cai.cli import main as cai
from cai.pipeline.runner import links


def seconds(run: dict) -> float | None:
    if not run.get("started_at") or not run.get("finished_at"):
        return None
    return round((datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds(), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/cpu-small.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--db", default=None, help="Database to create (default: a temporary folder).")
    parser.add_argument("--timeout", type=float, default=4 * 3600)
    args = parser.parse_args()
    db_path = Path(args.db or Path(tempfile.mkdtemp(prefix="cai-bench-")) / "bench.db")
    assert cai(["init", "--db", str(db_path), "--json"]) == 0
    db = store.connect(db_path)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    run_id = pipeline.create(db, args.recipe, args.sets)
    proc = runs.launch(db_path, run_id)
    final = runs.wait(db, run_id, timeout=args.timeout, poll=2.0)
    proc.wait()
    total = time.perf_counter() - t0
    stages = []
    for row in links(db, run_id):
        run = runs.get_run(db, row["run_id"])
        stages.append({"stage": row["stage"], "sweep": row["sweep"], "run_id": run["id"], "status": run["status"], "seconds": seconds(run)})
    print(json.dumps({
        "recipe": args.recipe, "sets": args.sets, "status": final["status"], "error": final["error"],
        "pipeline_run": run_id, "db": str(db_path), "cpus": os.cpu_count(), "machine": platform.processor(),
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "stages": stages, "total_seconds": round(total, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
