"""The workbench database: one SQLite file, WAL on, schema through migrations.

`connect()` is the only way in: it resolves the path (argument, then `CAI_DB`, then
`./data/workbench.db`), turns on WAL so worker processes and the web app write side by side,
and applies any pending migrations, so an older database is upgraded in place.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from cai.store.schema import migrations

DEFAULT_DB = Path("data") / "workbench.db"


class StoreError(ValueError):
    """The database path does not name a usable workbench database; the message says why."""


def db_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The database path: explicit argument, then $CAI_DB, then ./data/workbench.db; `~` expanded.

    ':memory:' is refused: the workers and the web app need one file they all open.
    """
    raw = path or os.environ.get("CAI_DB") or DEFAULT_DB
    if str(raw).strip() == ":memory:":
        raise StoreError("--db :memory: is not supported: runs and the web app share one database file")
    return Path(raw).expanduser()


def check_path(p: Path) -> None:
    """Refuse what SQLite would fail on later with a raw error: a folder, a device, a non-database file."""
    if p.is_dir():
        raise StoreError(f"{p}: is a folder; --db needs a database file")
    if p.exists() and not p.is_file():
        raise StoreError(f"{p}: not a regular file; --db needs a database file")
    # Never open() the file here to sniff its header: closing any descriptor of a SQLite file drops the
    # POSIX locks of every connection this process holds on it. SQLite's own first read checks it instead.


def require_existing(path: str | os.PathLike[str] | None = None) -> Path:
    """The database path, which must name an existing file: commands that check, back up or read a database
    never create one (a typo in --db would otherwise "pass" on a new empty database)."""
    p = db_path(path)
    check_path(p)
    if p.parent.exists() and not p.parent.is_dir():
        raise StoreError(f"{p}: its folder {p.parent} is a file")
    if not p.exists():
        raise StoreError(f"{p}: no such workbench database (`cai init --db {p}` creates one)")
    return p


class WorkbenchDatabase(Database):
    """sqlite-utils' Database whose `atomic()` takes the write lock when it begins (BEGIN IMMEDIATE).

    A deferred BEGIN reads under a snapshot; if another process (a worker's heartbeat, a rater's vote) commits
    before this transaction's first write, SQLite refuses that write at once with "database is locked", without
    waiting (the busy timeout does not apply to a stale snapshot). Many blocks read before they write (sqlite-utils'
    `update` reads the row first), so every outer transaction here starts immediate; nested ones stay savepoints."""

    @contextmanager
    def atomic(self) -> Iterator[Database]:
        if self.conn.in_transaction:
            with super().atomic():
                yield self
            return
        with immediate(self):
            yield self


def connect(path: str | os.PathLike[str] | None = None, *, memory: bool = False, create: bool = True) -> Database:
    """Open (creating and migrating if needed) the workbench database; with `create=False` a missing file is
    a StoreError."""
    if memory:
        db = WorkbenchDatabase(memory=True)
    else:
        p = require_existing(path) if not create else db_path(path)
        check_path(p)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(f"{p}: its folder {p.parent} is a file") from None
        db = WorkbenchDatabase(p)
        try:
            db.execute("PRAGMA schema_version").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise StoreError(f"{p}: not a SQLite database (it is another kind of file)") from None
        db.enable_wal()
        # Several processes (web app, workers, raters) write at once: wait instead of failing.
        db.execute("PRAGMA busy_timeout = 30000")
    db.execute("PRAGMA foreign_keys = ON")
    migrations.apply(db)
    return db


def now() -> str:
    """UTC timestamp, ISO 8601 with seconds; sorts as text."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@contextmanager
def immediate(db: Database) -> Iterator[None]:
    """One write transaction, taking the write lock up front so check-then-write cannot interleave."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.rollback()
        raise
    db.commit()


def by_name(db: Database, table: str, name: str, what: str) -> dict[str, Any]:
    """The row of `table` called `name`; a miss raises LookupError naming the ones that exist."""
    rows = list(db.table(table).rows_where("name = ?", [name], limit=1))
    if not rows:
        known = ", ".join(r["name"] for r in db.table(table).rows_where(select="name")) or "none"
        raise LookupError(f"no {what} named {name!r} (known: {known})")
    return rows[0]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def loads(value: str | None, default: Any = None) -> Any:
    return default if value in (None, "") else json.loads(value)  # type: ignore[arg-type]


def data_dir(db: Database) -> Path:
    """The folder beside the database file, where runs keep models, checkpoints and exports."""
    filename = db.execute("PRAGMA database_list").fetchone()[2]
    return Path(filename).resolve().parent if filename else Path("data").resolve()
