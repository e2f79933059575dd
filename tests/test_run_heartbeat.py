"""Worker heartbeat: a killed worker shows as interrupted with its last-seen time; a live one stays running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from cai import runs, store
from cai.stages import SLConfig
from tests.helpers import BUDGET_S, seed


def _row(run_id: int, **kw):
    base = {"id": run_id, "kind": "sl", "status": "running", "pid": os.getpid(), "host": socket.gethostname(),
            "error": None, "heartbeat_at": store.now()}
    return {**base, **kw}


def test_liveness_uses_the_heartbeat_where_the_pid_cannot_tell():
    now = datetime.now(UTC)
    old = (now - timedelta(seconds=runs.HEARTBEAT_TIMEOUT_S + 1)).isoformat(timespec="milliseconds")
    fresh = (now - timedelta(seconds=1)).isoformat(timespec="milliseconds")
    # Another host: its pid means nothing here, the heartbeat decides.
    assert runs.liveness(_row(1, host="elsewhere", pid=999_999_999, heartbeat_at=fresh), now)["status"] == "running"
    gone = runs.liveness(_row(1, host="elsewhere", pid=999_999_999, heartbeat_at=old), now)
    assert (gone["status"], gone["last_seen"]) == ("interrupted", old)
    assert gone["error"] == f"no heartbeat for {runs.HEARTBEAT_TIMEOUT_S + 1:.0f} s; last seen {old}"
    # This host, pid alive (this test) but silent: hung or pid reused, so interrupted as well.
    assert runs.liveness(_row(1, heartbeat_at=old), now)["status"] == "interrupted"
    assert runs.liveness(_row(1, heartbeat_at=fresh), now)["status"] == "running"
    # Finished runs are never touched.
    assert runs.liveness(_row(1, status="done", heartbeat_at=old), now)["status"] == "done"


def test_resume_refuses_while_the_heartbeat_is_recent(db):
    seed(db, n_prompts=1)
    run_id = runs.create_run(db, SLConfig(prompts="red", model="tiny"))
    db["runs"].update(run_id, {"status": "running", "pid": 999_999_999, "host": "elsewhere",
                               "heartbeat_at": store.now()})
    with pytest.raises(runs.RunError, match="is running; only failed, cancelled or interrupted runs resume"):
        runs.prepare_resume(db, run_id)
    old = (datetime.now(UTC) - timedelta(seconds=runs.HEARTBEAT_TIMEOUT_S + 5)).isoformat()
    db["runs"].update(run_id, {"heartbeat_at": old})
    runs.prepare_resume(db, run_id)
    assert runs.get_run(db, run_id)["status"] == "queued"


def test_heartbeat_thread_refreshes_the_row(db, db_path):
    seed(db, n_prompts=1)
    run_id = runs.create_run(db, SLConfig(prompts="red", model="tiny"))
    stop = runs.start_heartbeat(db, run_id, every=0.05)
    try:
        deadline = time.monotonic() + BUDGET_S  # a loaded machine may starve the thread for a while
        while db["runs"].get(run_id)["heartbeat_at"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        first = db["runs"].get(run_id)["heartbeat_at"]
        while db["runs"].get(run_id)["heartbeat_at"] == first:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        stop()


def _cai(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", 
                          "import sys; from cai.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.timeout(240)
def test_kill_9_of_a_real_worker_shows_interrupted_in_runs_list(db, db_path):
    """`cai run sl --detach` starts a real worker (tiny model); after kill -9, `cai runs list --json` says
    interrupted, with the last heartbeat, well within the heartbeat timeout."""
    seed(db, n_prompts=40)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "CAI_HEARTBEAT_S": "0.2", "CAI_HEARTBEAT_TIMEOUT_S": "3"}
    out = _cai("run", "sl", "--db", str(db_path), "--prompts", "red", "--model", "tiny", "--constitution",
               "test", "--revisions", "1", "--batch-size", "1", "--max-new-tokens", "16", "--detach", "--json",
               env=env)
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["id"]
    deadline = time.monotonic() + 180
    while True:
        run = db["runs"].get(run_id)
        if run["status"] == "running" and run["heartbeat_at"] and db["chains"].count_where("run_id = ?", [run_id]):
            break
        assert run["status"] in runs.ACTIVE, runs.worker_log(db_path, run_id).read_text()
        assert time.monotonic() < deadline, "the worker never got going"
        time.sleep(0.05)
    listed = json.loads(_cai("runs", "list", "--db", str(db_path), "--json", env=env).stdout)
    assert listed[0]["status"] == "running"
    os.kill(run["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    while True:
        listed = json.loads(_cai("runs", "list", "--db", str(db_path), "--json", env=env).stdout)
        if listed[0]["status"] == "interrupted":
            break
        assert time.monotonic() - killed_at < 3, "still running after the heartbeat timeout"
        time.sleep(0.1)
    row = listed[0]
    assert row["id"] == run_id and row["last_seen"] == db["runs"].get(run_id)["heartbeat_at"]
    assert row["error"].endswith(f"; last seen {row['last_seen']}")
