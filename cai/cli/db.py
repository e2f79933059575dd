"""`cai db`: back up a running workbench database, and check its integrity.

Thin over `cai.store.maintenance`. `backup` is safe while the web app and workers are writing;
`check` exits with status 1 when SQLite reports a problem, so it can guard a cron job.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from cai import store
from cai.cli import add_common, emit
from cai.store import folders, maintenance


def cmd_backup(args: argparse.Namespace) -> int:
    result = maintenance.backup(store.connect(args.db, create=False), args.path, overwrite=args.overwrite)
    rows = sum(result.tables.values())
    emit(args, asdict(result),
         lambda r: f"backed up to {r['path']}: {r['bytes']:,} bytes, {len(r['tables'])} tables, {rows:,} rows")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    db = store.connect(args.db, create=False)
    result = maintenance.check(db)

    def text(r: dict) -> str:
        if r["ok"]:
            lines = ["ok: integrity check and foreign-key check found nothing"]
        else:
            lines = [f"integrity: {line}" for line in r["integrity"] if line != "ok"]
            lines += [f"foreign key: {p['table']} row {p['rowid']} points at a missing {p['parent']} row"
                      for p in r["foreign_keys"]]
        return "\n".join([*lines, disk_line(r["disk"])])

    emit(args, {**asdict(result), "disk": folders.usage(db)}, text)
    return 0 if result.ok else 1


def disk_line(d: dict) -> str:
    ckpt = d["runs_with_checkpoints"]
    held = f", checkpoints {d['checkpoint_bytes'] / 1e6:,.1f} MB in run(s) {', '.join(map(str, ckpt))}" if ckpt else ""
    return (f"disk: {d['run_folders']} run folders {d['run_bytes'] / 1e6:,.1f} MB{held} ({d['runs_folder']}); "
            f"{d['model_folders']} trained models {d['model_bytes'] / 1e6:,.1f} MB ({d['models_folder']})")


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
        "check", help="Run SQLite's integrity check and foreign-key check (exit status 1 on any problem); report the "
        "disk the database's runs and trained models use."
    )
    add_common(c)
    c.set_defaults(func=cmd_check)
