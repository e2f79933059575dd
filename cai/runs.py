"""Pipeline runs: a row in the database, executed by a worker process.

The CLI and the web app only create a run row and start `python -m cai.runs RUN_ID`; the worker
loads the stage, reports progress and log lines through the database, and checks for cancel
requests between batches. Stages key what they write so that a resumed run skips finished work.
A training run with `processes` > 1 or an `accelerate_config` starts its worker under
`accelerate launch`: every rank runs the stage, but only rank 0 opens the workbench database; the
other ranks work on a private snapshot of it (same reads, writes thrown away), so each row is
written once.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from cai import loadclock, store
from cai.backends.base import Cancelled
from cai.config import StageConfig, subject_model
from cai.run_context import (
    ACTIVE,
    HEARTBEAT_S,
    HEARTBEAT_TIMEOUT_S,
    SCRIPTED,
    RunCancelled,
    RunContext,
    RunError,
    cancel_requested,
    get_run,
    liveness,
    pid_alive,
    record_steps,
    scripted,
    shown,
    step_eta,
    world,
)
from cai.stages import REGISTRY

# The worker's interface; the run's context and the reads of its row live below the stages (cai.run_context)
# and are re-exported here, where the CLI, the app and the tests read runs.
__all__ = [
    "ACTIVE",
    "HEARTBEAT_S",
    "HEARTBEAT_TIMEOUT_S",
    "RunCancelled",
    "RunContext",
    "RunError",
    "SCRIPTED",
    "cancel_requested",
    "create_run",
    "execute",
    "get_run",
    "input_changes",
    "launch",
    "list_runs",
    "live_runs",
    "liveness",
    "pid_alive",
    "logs",
    "main",
    "prepare_resume",
    "rank_snapshot",
    "record_steps",
    "request_cancel",
    "resolve_links",
    "resume",
    "scripted",
    "set_threads",
    "shown",
    "start",
    "start_heartbeat",
    "step_eta",
    "sweep_rank_snapshots",
    "wait",
    "worker_command",
    "worker_log",
    "world",
]



def create_run(
    db: Database,
    config: StageConfig,
    *,
    model_id: int | None = None,
    constitution_version_id: int | None = None,
    parent: int | None = None,
) -> int:
    """Insert a queued run for `config`; returns its id. What the run resolves (the newest constitution
    version, model paths, torch threads) and fingerprints of its inputs are pinned in the stored config
    (`cai.run_pins`), so a resume reads the same things or refuses. A stage run of a pipeline or an
    experiment (`parent`) takes the parent's torch threads, so all its stages train alike."""
    from cai import run_pins

    if config.kind not in REGISTRY:
        raise RunError(f"unknown run kind {config.kind!r}")
    inherited = None
    if parent is not None:
        given = get_run(db, parent)["pinned"]
        if given.get("threads"):
            inherited = (int(given["threads"]), f"run {parent}'s ({given.get('threads_why') or 'pinned'})")
    config, pins = run_pins.pin(db, config, len(live_runs(db, "running")), inherited)
    row = {
        "kind": config.kind,
        "status": "queued",
        "config": store.dumps({**config.to_dict(), run_pins.PINS: pins}),
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
    name = subject_model(config)
    if name and (models.get_model(db, name) or name in models.BUILTIN or os.path.isdir(name)):
        links["model_id"] = models.ensure_model(db, name)["id"]
    if hasattr(config, "constitution"):
        from cai.constitution import resolve_version

        cv = resolve_version(db, config.constitution, getattr(config, "constitution_version", None))
        links["constitution_version_id"] = cv["id"]
    return links



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
    """Where a worker's own stdout/stderr go (crashes before the run row can record them): its run folder."""
    from cai.store import folders

    db = store.connect(db_path)
    try:
        return folders.run_folder(db, run_id) / "worker.log"
    finally:
        db.close()


def live_runs(db: Database, *statuses: str) -> list[dict[str, Any]]:
    """Runs whose status, after the liveness rule (`liveness`), is one of `statuses` (default: queued or
    running), oldest first: what Home lists as active and what thread sizing counts. Only rows marked active
    are read, so this stays cheap on a large database."""
    wanted = statuses or ACTIVE
    marks = ", ".join("?" * len(ACTIVE))
    ids = [r[0] for r in db.execute(f"select id from runs where status in ({marks}) order by id", list(ACTIVE))]
    return [r for r in (get_run(db, i) for i in ids) if r["status"] in wanted]


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
    """Mark a stopped run queued again; its stage skips what is already stored.

    Refused when an input changed since the run was created (`run_pins.check`). The change to queued is one
    conditional update on the row exactly as it was read (status, pid, heartbeat), so of two callers racing
    to resume the same run one wins and the other gets a RunError, never a second worker."""
    raw = db.execute("select status, pid, heartbeat_at from runs where id = ?", [run_id]).fetchone()
    run = get_run(db, run_id)  # read after `raw`: whatever it judges, the update below needs `raw` unchanged
    if run["status"] not in ("failed", "cancelled", "interrupted"):
        raise RunError(f"run {run_id} is {run['status']}; only failed, cancelled or interrupted runs resume")
    changed = input_changes(db, run)
    if changed:
        raise RunError(f"run {run_id} cannot resume: " + "; ".join(changed)
                       + ". Its stored rows came from the old input: start a new run instead")
    with db.conn:
        cur = db.execute(
            "update runs set status = 'queued', cancel_requested = 0, error = null, pid = null, heartbeat_at = null, "
            "steps_done = null, steps_total = null, phase = null, eta_s = null "  # the stopped execution's
            "where id = ? and status = ? and pid is ? and heartbeat_at is ?", [run_id, *raw])
        if cur.rowcount != 1:
            raise RunError(f"run {run_id} is being resumed by someone else")
        db.execute("insert into run_logs (run_id, ts, level, line) values (?, ?, 'info', 'resumed')",
                   [run_id, store.now()])


def input_changes(db: Database, run: dict[str, Any]) -> list[str]:
    """What changed in a run's inputs since it was created, one line each (empty for runs without pins)."""
    from cai import run_pins

    if not run.get("pinned"):
        return []
    config = REGISTRY[run["kind"]].config.from_dict(run["config"])
    return run_pins.check(db, config, run["pinned"])


def worker_command(db_path: str | os.PathLike[str], run_id: int, config: dict[str, Any]) -> list[str]:
    """`python -m cai.runs RUN_ID`, under `accelerate launch` when the run trains on several processes."""
    cmd = ["-m", "cai.runs", str(run_id), "--db", str(Path(db_path).resolve())]
    processes, accelerate_config = int(config.get("processes") or 1), config.get("accelerate_config") or ""
    if processes == 1 and not accelerate_config:
        return [sys.executable, *cmd]
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        launch += ["--config_file", str(Path(accelerate_config).expanduser().resolve())]
    if processes > 1 or not accelerate_config:
        launch += ["--num_processes", str(processes)]
    if processes > 1 and not accelerate_config:
        import torch

        launch += ["--multi_gpu"] if torch.cuda.is_available() else ["--multi_gpu", "--main_process_port", "0"]
    return launch + cmd


def launch(db_path: str | os.PathLike[str], run_id: int) -> subprocess.Popen[bytes]:
    """Start the worker process for a run; returns at once. Its pid is stored so a dead worker shows."""
    db = store.connect(db_path)
    try:
        config = store.loads(db.table("runs").get(run_id)["config"], {})
    finally:
        db.close()
    cmd = worker_command(db_path, run_id, config)
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


def rank_snapshot(db_path: str | os.PathLike[str], rank: int) -> Path:
    """A private copy of the database for a rank other than 0, beside the real one (so data_dir agrees)."""
    import sqlite3

    real = Path(store.db_path(str(db_path))).resolve()
    sweep_rank_snapshots(real)
    copy = real.parent / f".{real.name}.rank{rank}-{os.getpid()}"
    src, dst = sqlite3.connect(real), sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return copy


def sweep_rank_snapshots(real: Path) -> list[Path]:
    """Delete the snapshots (and their -wal/-shm files) that killed ranks left beside the database, i.e. those
    whose pid is gone; returns them."""
    gone = []
    for path in sorted(real.parent.glob(f".{real.name}.rank*-*")):
        m = re.fullmatch(r"rank\d+-(\d+)(?:-wal|-shm|-journal)?", path.name[len(real.name) + 2 :])
        if m and not pid_alive(int(m[1])):
            path.unlink(missing_ok=True)
            gone.append(path)
    return gone


def set_threads(db: Database, ctx: RunContext, pinned: Mapping[str, Any] | None = None) -> None:
    """Size torch's thread pool for this worker: the count pinned when the run was created (the same on every
    resume, since it changes the trained weights); runs from before the pin pick one now. The run page and
    `cai runs show` show the pinned count."""
    import torch

    from cai.backends.precision import choose_threads

    if pinned and pinned.get("threads"):
        n, why = int(pinned["threads"]), f"pinned at creation: {pinned.get('threads_why') or ''}".rstrip(": ")
    else:
        running = len(live_runs(db, "running"))
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        n, why = choose_threads(cpus, os.getloadavg()[0], running, os.environ.get("CAI_THREADS"))
    torch.set_num_threads(n)
    print(f"run {ctx.run_id}: torch threads {n} ({why})", file=sys.stderr)  # the worker log


def execute(db: Database, run_id: int) -> dict[str, Any]:
    """Run a queued run to the end in this process; the worker's body. Returns the final row."""
    run = get_run(db, run_id)
    if run["status"] != "queued":
        raise RunError(f"run {run_id} is {run['status']}, not queued")
    stage = REGISTRY[run["kind"]]
    config = stage.config.from_dict(run["config"])
    with db.conn:  # one worker per run: only the first to take the queued row runs it
        taken = db.execute("update runs set status = 'running', pid = ?, started_at = ?, host = ?, heartbeat_at = ? "
                           "where id = ? and status = 'queued'",
                           [os.getpid(), store.now(), socket.gethostname(), store.now(), run_id]).rowcount
    if taken != 1:
        raise RunError(f"run {run_id} was taken by another worker")
    ctx = RunContext(db=db, run_id=run_id, config=config)
    stop_beat = start_heartbeat(db, run_id)
    loads_before = loadclock.snapshot()

    def log_loads() -> None:  # this execution's wait for model weights: a timing, so logged (before the outcome
        spent, loads = loadclock.since(loads_before)  # line, which stays the execution's last), not in the result
        if loads:
            ctx.log(loadclock.line(spent, loads))

    try:
        changed = input_changes(db, run)
        if changed:
            raise RunError("; ".join(changed) + ". Start a new run on the changed input")
        set_threads(db, ctx, run["pinned"])
        ctx.check_cancel()
        result = stage.run(ctx)
        log_loads()
        status, error = "done", None
        if world()[1] > 1 and isinstance(result, dict):
            result["world_size"] = world()[1]
    except (RunCancelled, Cancelled):  # Cancelled: a backend cut its requests on the run's cancel flag
        result, status, error = None, "cancelled", None
        log_loads()
        ctx.log("cancelled")
    except Exception as exc:  # the run records any failure; the worker itself never hides it
        result, status, error = None, "failed", f"{type(exc).__name__}: {exc}"
        log_loads()
        ctx.log(traceback.format_exc(), level="error")
    finally:
        ctx.release()
        stop_beat()
    db.table("runs").update(
        run_id,
        {"status": status, "error": error, "result": store.dumps(result), "finished_at": store.now()},
    )
    return get_run(db, run_id)


def start_heartbeat(db: Database, run_id: int, every: float | None = None) -> Callable[[], None]:
    """Refresh the run's heartbeat_at every `every` s from a daemon thread; returns the stop function.

    The thread has its own connection (SQLite connections are per thread) and writes only heartbeat_at,
    so it never races the stage's own updates. A database in memory has no other reader: no thread.
    """
    filename = db.execute("PRAGMA database_list").fetchone()[2]
    if not filename:
        return lambda: None
    period = HEARTBEAT_S if every is None else every
    done = threading.Event()

    def beat() -> None:
        conn = Database(filename)
        conn.execute("PRAGMA busy_timeout = 30000")
        try:
            while not done.wait(period):
                try:
                    with conn.conn:
                        conn.execute("update runs set heartbeat_at = ? where id = ?", [store.now(), run_id])
                except Exception:  # a locked or busy database: try again next beat, never kill the run
                    continue
        finally:
            conn.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(timeout=5)

    return stop


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cai.runs", description="Execute one queued run (worker)."
    )
    parser.add_argument("run_id", type=int)
    parser.add_argument("--db", default=None, help="Workbench database path.")
    args = parser.parse_args(argv)
    rank, _ = world()
    if rank == 0:
        db = store.connect(args.db)
        try:
            run = execute(db, args.run_id)
        finally:
            if "cai.engines" in sys.modules:  # the engines this worker started: stopped, and their rows say so
                sys.modules["cai.engines"].stop_owned(db)
        return 0 if run["status"] in ("done", "cancelled") else 1
    # Other ranks: the same stage on a snapshot taken before rank 0 marks the run running.
    copy = rank_snapshot(args.db, rank)
    try:
        db = store.connect(copy)
        if db.table("runs").get(args.run_id)["status"] == "running":
            db.table("runs").update(args.run_id, {"status": "queued"})
        run = execute(db, args.run_id)
        db.close()
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    return 0 if run["status"] in ("done", "cancelled") else 1


if __name__ == "__main__":
    # `python -m cai.runs` runs this file as __main__, a second copy of the module: call the imported
    # cai.runs instead, so the worker and the stages share one RunCancelled (a stage's
    # `except RunCancelled` must catch what RunContext raises; under accelerate the cancel handshake
    # between ranks depends on it).
    from cai.runs import main as _main

    sys.exit(_main())
