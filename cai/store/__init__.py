"""The workbench database: one SQLite file, WAL on, schema through migrations.

`connect()` is the only way in: it resolves the path (argument, then `CAI_DB`, then
`./data/workbench.db`), turns on WAL so worker processes and the web app write side by side,
and applies any pending migrations, so an older database is upgraded in place.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from cai.store.schema import migrations

DEFAULT_DB = Path("data") / "workbench.db"


def db_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The database path: explicit argument, then $CAI_DB, then ./data/workbench.db."""
    if path:
        return Path(path)
    if os.environ.get("CAI_DB"):
        return Path(os.environ["CAI_DB"])
    return DEFAULT_DB


def connect(path: str | os.PathLike[str] | None = None, *, memory: bool = False) -> Database:
    """Open (creating and migrating if needed) the workbench database."""
    if memory:
        db = Database(memory=True)
    else:
        p = db_path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        db = Database(p)
        db.enable_wal()
        # Several processes (web app, workers, raters) write at once: wait instead of failing.
        db.execute("PRAGMA busy_timeout = 30000")
    db.execute("PRAGMA foreign_keys = ON")
    migrations.apply(db)
    return db


def now() -> str:
    """UTC timestamp, ISO 8601 with seconds; sorts as text."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def loads(value: str | None, default: Any = None) -> Any:
    return default if value in (None, "") else json.loads(value)  # type: ignore[arg-type]


def data_dir(db: Database) -> Path:
    """The folder beside the database file, where runs keep models, checkpoints and exports."""
    filename = db.execute("PRAGMA database_list").fetchone()[2]
    return Path(filename).resolve().parent if filename else Path("data").resolve()
