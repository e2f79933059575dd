"""Runs as the app lists them: the runs of one stage to pick from, and what a finished run made.

`cai.runs` owns a run's life (create, start, cancel, resume); this module only reads, plus `add_log` for
a line a person writes into a run's log (who cancelled it).
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from cai import runs, store


def runs_of_kind(db: Database, kind: str, limit: int = 200) -> list[dict[str, Any]]:
    """Runs of one stage kind, newest first: id, status (after the liveness rule, as every view shows it),
    created_at."""
    rows = list(db.query("select id, status, created_at from runs where kind = ? order by id desc limit ?",
                         [kind, limit]))
    for r in rows:
        if r["status"] in runs.ACTIVE:
            r["status"] = runs.get_run(db, r["id"])["status"]
    return rows


def run_outputs(db: Database, run_id: int) -> dict[str, Any]:
    """What a run wrote: chains and response pairs (counts), preference sets and models (names)."""
    def count(table: str) -> int:
        return int(db.execute(f"select count(*) from {table} where run_id = ?", [run_id]).fetchone()[0])

    def names(table: str) -> list[str]:
        return [r[0] for r in db.execute(f"select name from {table} where run_id = ? order by id", [run_id])]

    return {"chains": count("chains"), "response_pairs": count("response_pairs"),
            "pref_sets": names("pref_sets"), "models": names("models")}


def add_log(db: Database, run_id: int, line: str, level: str = "info") -> None:
    """Append one line to a run's log, as the worker's `RunContext.log` does."""
    db.table("run_logs").insert({"run_id": int(run_id), "ts": store.now(), "level": level, "line": line})
