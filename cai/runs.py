"""Pipeline runs: a row in the database, executed by a worker process.

The CLI and the web app only create a run row and start `python -m cai.runs RUN_ID`; the worker
loads the stage, reports progress and log lines through the database, and checks for cancel
requests between batches. Stages key what they write so that a resumed run skips finished work.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from cai import store
from cai.config import STAGES, StageConfig

# kind -> "module:function"; each function takes a RunContext and returns a JSON-able summary.
RUNNERS: dict[str, str] = {
    "sl": "cai.sl:run_stage",
    "sft": "cai.train.sft:run_stage",
    "pairs": "cai.feedback:run_pairs",
    "label": "cai.feedback:run_labels",
    "pm": "cai.train.reward:run_stage",
    "rl": "cai.train.rl:run_stage",
    "dpo": "cai.train.dpo:run_stage",
    "hhh": "cai.evals.hhh:run_stage",
    "agreement": "cai.evals.agreement:run_stage",
    "revision-scores": "cai.evals.revisions:run_stage",
}
ACTIVE = ("queued", "running")


class RunCancelled(Exception):
    """Raised inside a stage when its run's cancel flag is set."""


class RunError(ValueError):
    """A run cannot be created, resumed or cancelled as asked."""


@dataclass
class RunContext:
    """What a stage gets from its run: config, database, progress, log and cancel checks."""

    db: Database
    run_id: int
    config: StageConfig
    started: float = field(default_factory=time.monotonic)
    tokens: int = 0
    _done_at_start: int | None = None

    def log(self, line: str, level: str = "info") -> None:
        self.db.table("run_logs").insert(
            {"run_id": self.run_id, "ts": store.now(), "level": level, "line": line}
        )

    def check_cancel(self) -> None:
        row = self.db.execute("select cancel_requested from runs where id = ?", [self.run_id]).fetchone()
        if row and row[0]:
            raise RunCancelled(f"run {self.run_id} cancelled")

    def begin(self, done: int, total: int) -> None:
        """Record where this execution starts (a resumed run starts with `done` items already stored)."""
        self._done_at_start = done
        self.started = time.monotonic()
        self.db.table("runs").update(self.run_id, {"done": done, "total": total, "eta_s": None})
        self.check_cancel()

    def progress(self, done: int, total: int, tokens: int = 0) -> None:
        """Record progress (items done of total, tokens generated since the last call); checks cancel."""
        if self._done_at_start is None:
            self._done_at_start = done - 1 if done > 0 else 0
        self.tokens += tokens
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done_now = done - self._done_at_start
        rate = done_now / elapsed if done_now > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else None
        self.db.table("runs").update(
            self.run_id,
            {"done": done, "total": total, "tokens_per_s": round(self.tokens / elapsed, 2), "eta_s": eta},
        )
        self.check_cancel()


def create_run(
    db: Database,
    config: StageConfig,
    *,
    model_id: int | None = None,
    constitution_version_id: int | None = None,
) -> int:
    """Insert a queued run for `config`; returns its id."""
    if config.kind not in RUNNERS:
        raise RunError(f"unknown run kind {config.kind!r}")
    row = {
        "kind": config.kind,
        "status": "queued",
        "config": store.dumps(config.to_dict()),
        "constitution_version_id": constitution_version_id,
        "model_id": model_id,
        "seed": getattr(config, "seed", None),
        "done": 0,
        "total": 0,
        "cancel_requested": 0,
        "created_at": store.now(),
    }
    return int(db.table("runs").insert(row).last_pk or 0)


def resolve_links(db: Database, config: StageConfig) -> dict[str, int | None]:
    """The model and constitution version a run is about, as registry ids (None where not named).

    Only models the registry knows (or builtins, or local folders) are linked here; any other name
    is left for the worker's backend to resolve, so a typo fails there with the loader's message.
    """
    from cai import models

    links: dict[str, int | None] = {"model_id": None, "constitution_version_id": None}
    name = next((getattr(config, f) for f in _MODEL_FIELDS if getattr(config, f, "")), "")
    if name and (models.get_model(db, name) or name in models.BUILTIN or os.path.isdir(name)):
        links["model_id"] = models.ensure_model(db, name)["id"]
    if hasattr(config, "constitution"):
        from cai.constitution import resolve_version

        cv = resolve_version(db, config.constitution, getattr(config, "constitution_version", None))
        links["constitution_version_id"] = cv["id"]
    return links


_MODEL_FIELDS = ("model", "policy", "feedback_model")


def start(
    db: Database, db_path: str | os.PathLike[str], config: StageConfig
) -> tuple[int, subprocess.Popen[bytes]]:
    """Create a run for `config` (linked to its model and constitution version) and launch its worker."""
    run_id = create_run(db, config, **resolve_links(db, config))
    return run_id, launch(db_path, run_id)


def resume(db: Database, db_path: str | os.PathLike[str], run_id: int) -> subprocess.Popen[bytes]:
    """Queue a stopped run again and launch a fresh worker; the stage skips what is stored."""
    prepare_resume(db, run_id)
    return launch(db_path, run_id)


def worker_log(db_path: str | os.PathLike[str], run_id: int) -> Path:
    """Where a worker's own stdout/stderr go (crashes before the run row can record them)."""
    return Path(db_path).resolve().parent / "runs" / str(run_id) / "worker.log"


def get_run(db: Database, run_id: int) -> dict[str, Any]:
    try:
        run = dict(db.table("runs").get(run_id))
    except Exception:
        raise RunError(f"no run with id {run_id}") from None
    run["config"] = store.loads(run["config"], {})
    run["result"] = store.loads(run["result"])
    if run["status"] in ACTIVE and run["pid"] and not _alive(run["pid"]):
        run["status"] = "interrupted"  # its worker died (killed, machine restarted): resume it
    return run


def list_runs(db: Database, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    where, args = ("kind = ?", [kind]) if kind else (None, [])
    ids = [
        r["id"]
        for r in db.table("runs").rows_where(where, args, order_by="id desc", limit=limit, select="id")
    ]
    return [get_run(db, i) for i in ids]


def logs(db: Database, run_id: int, tail: int = 50) -> list[dict[str, Any]]:
    rows = db.table("run_logs").rows_where("run_id = ?", [run_id], order_by="id desc", limit=tail)
    return list(reversed(list(rows)))


def request_cancel(db: Database, run_id: int) -> None:
    run = get_run(db, run_id)
    if run["status"] not in ACTIVE:
        raise RunError(f"run {run_id} is {run['status']}; only queued or running runs can be cancelled")
    db.table("runs").update(run_id, {"cancel_requested": 1})
    if run["status"] == "queued" and not run["pid"]:
        db.table("runs").update(run_id, {"status": "cancelled", "finished_at": store.now()})


def prepare_resume(db: Database, run_id: int) -> None:
    """Mark a stopped run queued again; its stage skips what is already stored."""
    run = get_run(db, run_id)
    if run["status"] not in ("failed", "cancelled", "interrupted"):
        raise RunError(f"run {run_id} is {run['status']}; only failed, cancelled or interrupted runs resume")
    db.table("runs").update(run_id, {"status": "queued", "cancel_requested": 0, "error": None, "pid": None})
    db.table("run_logs").insert({"run_id": run_id, "ts": store.now(), "level": "info", "line": "resumed"})


def launch(db_path: str | os.PathLike[str], run_id: int) -> subprocess.Popen[bytes]:
    """Start the worker process for a run; returns at once. Its pid is stored so a dead worker shows."""
    cmd = [sys.executable, "-m", "cai.runs", str(run_id), "--db", str(db_path)]
    log_path = worker_log(db_path, run_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    db = store.connect(db_path)
    try:
        db.table("runs").update(run_id, {"pid": proc.pid})
    finally:
        db.close()
    return proc


def runner(kind: str) -> Callable[[RunContext], Any]:
    module, func = RUNNERS[kind].split(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def set_threads(db: Database, ctx: RunContext) -> None:
    """Size torch's thread pool for this worker (see `precision.choose_threads`); say so in the worker log."""
    import torch

    from cai.backends.precision import choose_threads

    running = db.execute("select count(*) from runs where status = 'running'").fetchone()[0]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n, why = choose_threads(cpus, os.getloadavg()[0], running, os.environ.get("CAI_THREADS"))
    torch.set_num_threads(n)
    print(f"run {ctx.run_id}: torch threads {n} ({why})", file=sys.stderr)  # the worker log


def execute(db: Database, run_id: int) -> dict[str, Any]:
    """Run a queued run to the end in this process; the worker's body. Returns the final row."""
    run = get_run(db, run_id)
    if run["status"] != "queued":
        raise RunError(f"run {run_id} is {run['status']}, not queued")
    config = STAGES[run["kind"]].from_dict(run["config"])
    db.table("runs").update(run_id, {"status": "running", "pid": os.getpid(), "started_at": store.now()})
    ctx = RunContext(db=db, run_id=run_id, config=config)
    try:
        set_threads(db, ctx)
        ctx.check_cancel()
        result = runner(run["kind"])(ctx)
        status, error = "done", None
    except RunCancelled:
        result, status, error = None, "cancelled", None
        ctx.log("cancelled")
    except Exception as exc:  # the run records any failure; the worker itself never hides it
        result, status, error = None, "failed", f"{type(exc).__name__}: {exc}"
        ctx.log(traceback.format_exc(), level="error")
    db.table("runs").update(
        run_id,
        {"status": status, "error": error, "result": store.dumps(result), "finished_at": store.now()},
    )
    return get_run(db, run_id)


def wait(db: Database, run_id: int, timeout: float = 600.0, poll: float = 0.2) -> dict[str, Any]:
    """Block until a run leaves the queued/running states (for the CLI's --wait and tests)."""
    deadline = time.monotonic() + timeout
    while True:
        run = get_run(db, run_id)
        if run["status"] not in ACTIVE:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {run['status']} after {timeout:.0f} s")
        time.sleep(poll)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this very process counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cai.runs", description="Execute one queued run (worker)."
    )
    parser.add_argument("run_id", type=int)
    parser.add_argument("--db", default=None, help="Workbench database path.")
    args = parser.parse_args(argv)
    run = execute(store.connect(args.db), args.run_id)
    return 0 if run["status"] in ("done", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
