"""Backups and integrity checks of a live workbench database.

The web app, run workers and raters write to one SQLite file in WAL mode, so a file copy can catch
it mid-transaction. `backup()` goes through SQLite's online backup API instead: the copy is one
consistent snapshot even while others write, and it includes what still sits in the WAL.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database


@dataclass
class BackupResult:
    path: str
    bytes: int
    pages: int
    tables: dict[str, int]


@dataclass
class CheckResult:
    ok: bool
    integrity: list[str]
    foreign_keys: list[dict[str, Any]] = field(default_factory=list)


def backup(db: Database, dest: str | os.PathLike[str], *, overwrite: bool = False) -> BackupResult:
    """Copy the open database to `dest` with SQLite's online backup API.

    The copy is written to a temporary file beside `dest` and renamed into place, so an interrupted
    backup never leaves a half-written file under the final name. An existing `dest` is replaced
    only with `overwrite`.
    """
    target = Path(dest).expanduser()
    if target.is_dir():
        raise ValueError(f"{target}: is a folder; name the backup file, e.g. {target / 'workbench-backup.db'}")
    if target.exists() and not overwrite:
        raise ValueError(f"{target}: exists already (pass --overwrite to replace it)")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target.parent}: no such folder")
    source = db.conn
    if _same_file(source, target):
        raise ValueError(f"{target}: is the database itself")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    try:
        copy = sqlite3.connect(tmp_name)
        try:
            # Small steps so writers are not held off for the whole copy; SQLite restarts the copy
            # of pages another connection changes while it runs.
            source.backup(copy, pages=256)
            copy.execute("PRAGMA journal_mode = DELETE")  # a self-contained single file
            pages = int(copy.execute("PRAGMA page_count").fetchone()[0])
            tables = {
                name: int(copy.execute(f'select count(*) from "{name}"').fetchone()[0])
                for (name,) in copy.execute(
                    # plain tables only: not SQLite's own, nor full-text indexes and their shadows
                    "select name from sqlite_master where type = 'table' and name not glob 'sqlite_*' "
                    "and name not glob '*_fts' and name not glob '*_fts_*' order by name"
                )
            }
        finally:
            copy.close()
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return BackupResult(path=str(target), bytes=target.stat().st_size, pages=pages, tables=tables)


def check(db: Database) -> CheckResult:
    """`PRAGMA integrity_check` plus `PRAGMA foreign_key_check`; ok only when both find nothing."""
    integrity = [str(row[0]) for row in db.execute("PRAGMA integrity_check").fetchall()]
    problems = [
        {"table": table, "rowid": rowid, "parent": parent, "fk_index": fk}
        for table, rowid, parent, fk in db.execute("PRAGMA foreign_key_check").fetchall()
    ]
    return CheckResult(ok=integrity == ["ok"] and not problems, integrity=integrity, foreign_keys=problems)


def _same_file(conn: sqlite3.Connection, target: Path) -> bool:
    row = conn.execute("PRAGMA database_list").fetchone()
    main_file = row[2] if row else ""
    return bool(main_file) and target.exists() and os.path.samefile(main_file, target)
