"""`cai db`: back up a running workbench database, and check its integrity.

Thin over `cai.store.maintenance`. `backup` is safe while the web app and workers are writing;
`check` exits with status 1 when SQLite reports a problem, so it can guard a cron job.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from cai import store
from cai.cli import add_common, emit
from cai.store import maintenance


def cmd_backup(args: argparse.Namespace) -> int:
    result = maintenance.backup(store.connect(args.db, create=False), args.path, overwrite=args.overwrite)
    rows = sum(result.tables.values())
    emit(args, asdict(result),
         lambda r: f"backed up to {r['path']}: {r['bytes']:,} bytes, {len(r['tables'])} tables, {rows:,} rows")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    result = maintenance.check(store.connect(args.db, create=False))

    def text(r: dict) -> str:
        if r["ok"]:
            return "ok: integrity check and foreign-key check found nothing"
        lines = [f"integrity: {line}" for line in r["integrity"] if line != "ok"]
        lines += [f"foreign key: {p['table']} row {p['rowid']} points at a missing {p['parent']} row"
                  for p in r["foreign_keys"]]
        return "\n".join(lines)

    emit(args, asdict(result), text)
    return 0 if result.ok else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `cai db ...` to the `cai` parser."""
    p = sub.add_parser("db", help="Back up or check the workbench database.")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION")
    dsub.required = True

    b = dsub.add_parser(
        "backup",
        help="Copy the database with SQLite's online backup API (consistent while the app and runs write).",
    )
    b.add_argument("path", help="The backup file to write (a single self-contained SQLite file).")
    b.add_argument("--overwrite", action="store_true", help="Replace PATH if it exists.")
    add_common(b)
    b.set_defaults(func=cmd_backup)

    c = dsub.add_parser(
        "check", help="Run SQLite's integrity check and foreign-key check; exit status 1 on any problem."
    )
    add_common(c)
    c.set_defaults(func=cmd_check)
