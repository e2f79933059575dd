"""A pipeline run: ordinary stage runs, one after another, each wired to the outputs of those before it.

The pipeline is a run (kind "pipeline") whose config holds the checked recipe with every reference it
resolved pinned (the constitution version). Each stage run is created when its turn comes, from the
recipe and the stored results of the stages before it, and linked in `pipeline_runs` in the same
transaction, so a pipeline killed at any point resumes without doubling a stage run: done stage runs are
skipped, a stopped one is resumed, a running one (its own worker, under accelerate) is waited for.

With a sweep, the plan (recipe.plan) has one stage run per (stage, swept values it depends on); each is linked
with its values (`pipeline_runs.sweep`), and takes the outputs of the stages before it at the same values
(the main line's for a key they do not depend on). The first link of a stage is its main-line run.
Models the recipe names under `serve:` get one shared vLLM engine each (cai.engines), started here before
the stages that use them, so every stage run (in this process or under accelerate) reaches the same server.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlite_utils import Database

from cai import runs, store
from cai.experiments import db_file, forward_cancel
from cai.pipeline import recipe as R

STOPPED = ("failed", "cancelled", "interrupted")


def pin(db: Database, recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe with "newest" references resolved: the constitution becomes NAME@N."""
    from cai.constitution import resolve_version

    name, version = R._constitution(recipe.get("constitution", ""))
    cv = resolve_version(db, name, version)
    return {**recipe, "constitution": f"{cv['name']}@{cv['version']}"}


def links(db: Database, run_id: int) -> list[dict[str, Any]]:
    return list(db["pipeline_runs"].rows_where("pipeline_run_id = ?", [run_id], order_by="position"))


def output(stage: str, run: dict[str, Any]) -> Any:
    """What a finished stage run hands on (its run id, its model's name, its preference set's name)."""
    what = R.OUTPUTS.get(stage)
    if what is None:
        return None
    if what == "run":
        return run["id"]
    value = (run["result"] or {}).get(what)
    if not value:
        raise RuntimeError(f"{stage} run {run['id']} stored no {what} in its result")
    return value


def child(db: Database, pipeline_id: int, recipe: dict[str, Any], stage: str, position: int,
          outputs: dict[str, Any], point: dict[str, Any] | None = None) -> int:
    """The stage run of `stage` at the sweep values `point`, created and linked once (a reused run is linked
    as it is)."""
    sweep = R.sweep_id(point or {})
    for row in links(db, pipeline_id):
        if row["stage"] == stage and row["sweep"] == sweep:
            return int(row["run_id"])
    section = recipe["stages"][stage]
    with db.atomic():
        if "reuse" in section:
            run = runs.get_run(db, section["reuse"])
            if run["kind"] != R.STAGES[stage]:
                raise runs.RunError(f"stages.{stage}.reuse: run {run['id']} is a {run['kind']} run, "
                                    f"not {R.STAGES[stage]}")
            run_id = run["id"]
        else:
            config = R.config(R.at(recipe, point or {}), stage, outputs)
            from cai.refs import missing_references

            missing = missing_references(db, config)
            if missing:
                raise runs.RunError(f"stages.{stage}: " + "; ".join(missing))
            run_id = runs.create_run(db, config, **runs.resolve_links(db, config), parent=pipeline_id)
        db.table("pipeline_runs").insert({"pipeline_run_id": pipeline_id, "stage": stage, "run_id": run_id,
                                          "position": position, "reused": int("reuse" in section),
                                          "sweep": sweep})
    return int(run_id)


def execute_child(db: Database, ctx: Any, run_id: int) -> dict[str, Any]:
    """Run (or resume, or wait for) one stage run to its end; a cancel of the pipeline is passed on."""
    run = runs.get_run(db, run_id)
    if run["status"] in STOPPED:
        runs.prepare_resume(db, run_id)
        run = runs.get_run(db, run_id)
    path = db_file(db)
    stop = threading.Event()
    watcher = threading.Thread(target=forward_cancel, args=(path, ctx.run_id, run_id, stop), daemon=True)
    watcher.start()
    try:
        if run["status"] == "queued":
            config = run["config"]
            if int(config.get("processes") or 1) > 1 or config.get("accelerate_config"):
                runs.launch(path, run_id)  # under accelerate: its own worker processes
            else:
                return runs.execute(db, run_id)
        while (run := runs.get_run(db, run_id))["status"] in runs.ACTIVE:
            time.sleep(0.5)
        return run
    finally:
        stop.set()
        watcher.join()


def run(ctx: Any) -> dict[str, Any]:
    """The pipeline worker's body: every stage of the recipe in order, then a summary of the stage runs."""
    db = ctx.db
    if not ctx.config.spec:  # created through a generic entry point (`cai run pipeline`, a form): pin now
        from cai.pipeline import resolve

        spec, digest = resolve(db, ctx.config.recipe, ctx.config.set_list())
        ctx.config.spec, ctx.config.recipe_sha256 = store.dumps(spec), digest
        db.table("runs").update(ctx.run_id, {"config": store.dumps(ctx.config.to_dict())})
    recipe = store.loads(ctx.config.spec)
    steps = R.plan(recipe)
    done = [k for k in steps if _status(db, ctx.run_id, *k) == "done"]
    ctx.begin(len(done), len(steps))
    outputs: dict[tuple[str, str], Any] = {}
    serve = recipe.get("serve", [])
    for role in (r for r in serve if r in ("policy", "feedback")):
        _engine(ctx, recipe[role])
    for position, (stage, point) in enumerate(steps):
        given = {s: outputs[(s, R.sweep_id(R.project(recipe, s, point)))] for s in R.STAGES
                 if (s, R.sweep_id(R.project(recipe, s, point))) in outputs}
        run_id = child(db, ctx.run_id, recipe, stage, position, given, point)
        run = runs.get_run(db, run_id)
        label = stage + (f" [{values_text(point)}]" if point else "")
        if run["status"] != "done":
            ctx.log(f"{label}: run {run_id} ({R.STAGES[stage]})")
            run = execute_child(db, ctx, run_id)
            ctx.check_cancel()  # the pipeline was cancelled: so was its running stage run
            if run["status"] != "done":
                raise RuntimeError(f"{label} run {run_id} is {run['status']}: {run['error'] or 'see its log'}")
            done.append((stage, point))
            ctx.progress(len(done), len(steps))
        outputs[(stage, R.sweep_id(point))] = output(stage, run)
        main = {s: v for (s, sweep), v in outputs.items() if sweep == R.sweep_id(R.project(recipe, s, {}))}
        _engine_counts(ctx, recipe, serve, main)
        on_main = R.sweep_id(point) == R.sweep_id(R.project(recipe, stage, {}))
        if stage in serve and on_main and main.get(stage) and position < len(steps) - 1:
            _engine(ctx, main[stage])  # a trained model that later stages use (its main-line run)
    ctx.log(f"pipeline done: {len(steps)} stage runs")
    rows = links(db, ctx.run_id)
    result = {"recipe": recipe["name"], "stages": main_line(rows),
              "outputs": {s: v for (s, sweep), v in outputs.items() if v is not None and sweep == R.sweep_id(
                  R.project(recipe, s, {}))}}
    if recipe.get("sweep"):
        result["sweeps"] = [{"stage": r["stage"], "sweep": store.loads(r["sweep"]), "run_id": r["run_id"]}
                            for r in rows if r["sweep"]]
    return result


def main_line(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Stage -> its main-line run id: the first run linked for it (the plan puts the main line first)."""
    out: dict[str, int] = {}
    for row in rows:
        out.setdefault(row["stage"], row["run_id"])
    return out


def values_text(point: dict[str, Any]) -> str:
    """{"sl.principles": 4} -> "sl.principles=4" (how show and the log name a stage run's sweep values)."""
    return ", ".join(f"{k}={v}" for k, v in point.items())


def _engine(ctx: Any, model: str) -> None:
    """Start (or find) the shared vLLM engine of a model the recipe serves; the log says which path its
    callers take (served, or in process and why). The engines this worker starts stop when it exits."""
    from cai import engines

    ctx.log(f"serve {model}: starting or finding its shared vLLM engine")
    ctx.log(engines.route(db=ctx.db, spec=model, start=True).line)


def _engine_counts(ctx: Any, recipe: dict[str, Any], serve: list[str], outputs: dict[str, Any]) -> None:
    """After each stage: what every served model's engine has answered so far, from its own /metrics."""
    from cai import engines

    for model in dict.fromkeys(recipe[r] if r in ("policy", "feedback") else outputs.get(r) for r in serve):
        line = engines.engine_line(ctx.db, model) if model else ""
        if line:
            ctx.log(line)


def _status(db: Database, pipeline_id: int, stage: str, point: dict[str, Any] | None = None) -> str | None:
    sweep = R.sweep_id(point or {})
    for row in links(db, pipeline_id):
        if row["stage"] == stage and row["sweep"] == sweep:
            return str(runs.get_run(db, row["run_id"])["status"])
    return None


def show(db: Database, run_id: int) -> dict[str, Any]:
    """A pipeline: its status, its recipe and each stage with its run's status and progress (or "not started")."""
    pipeline = runs.get_run(db, run_id)
    if pipeline["kind"] != "pipeline":
        raise runs.RunError(f"run {run_id} is a {pipeline['kind']} run, not a pipeline")
    recipe = store.loads(pipeline["config"]["spec"])
    linked = {(row["stage"], row["sweep"]): row for row in links(db, run_id)}
    stages = []
    for stage, point in R.plan(recipe):
        row = linked.get((stage, R.sweep_id(point)))
        values = {"sweep": point} if recipe.get("sweep") else {}
        if row is None:
            stages.append({"stage": stage, "kind": R.STAGES[stage], "run_id": None, "status": "not started",
                           "done": 0, "total": 0, "reused": False, **values})
            continue
        child_run = runs.get_run(db, row["run_id"])
        stages.append({"stage": stage, "kind": R.STAGES[stage], "run_id": child_run["id"],
                       "status": child_run["status"], "done": child_run["done"] or 0,
                       "total": child_run["total"] or 0, "reused": bool(row["reused"]),
                       "output": output(stage, child_run) if child_run["status"] == "done" else None, **values})
    out = {"id": run_id, "name": recipe["name"], "status": pipeline["status"], "error": pipeline["error"],
           "recipe_sha256": pipeline["config"].get("recipe_sha256", ""), "recipe": recipe, "stages": stages}
    if recipe.get("sweep"):
        out["sweep"] = recipe["sweep"]
    return out
