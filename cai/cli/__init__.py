"""The `cai` command line: one subcommand group per module, all thin over `cai/`.

Every command takes `--db`; commands that report take `--json`. Errors the user can fix
(bad input, unknown names) print one clear line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sqlite3
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Each module defines `register(subparsers)`, adding its commands with `set_defaults(func=...)`.
COMMAND_MODULES = [
    "cai.cli.data",  # init, constitution, prompts, prefs
    "cai.cli.models",  # models, generate
    "cai.cli.serve",  # serve
    "cai.cli.runs",  # run, runs, chains
    "cai.cli.evals",  # eval
    "cai.cli.users",  # users
    "cai.cli.arena",  # ratings, arena
    "cai.cli.db",  # db backup, db check
    "cai.cli.experiments",  # experiment
    "cai.cli.pipeline",  # pipeline
]


# Commands that check, back up, read or change what a database already holds: a missing database file is an
# error for them, never created (`cai db check --db typo.db` must not print "ok" on a new empty file).
EXISTING_DB = {
    "constitution list", "constitution show", "constitution versions", "constitution diff", "constitution export",
    "prompts list", "prompts export", "prefs list", "prefs export", "models list", "models health",
    "runs list", "runs show", "runs cancel", "runs resume", "chains list", "chains show", "chains export",
    "users list", "users remove", "users passwd", "users role", "users unlock",
    "arena campaign list", "arena campaign show", "arena campaign close", "arena campaign open", "arena export",
    "arena raters", "arena exclude", "arena include", "db backup", "db check", "experiment show", "experiment list",
}


def _mark_existing_db(parser: argparse.ArgumentParser, path: str = "") -> None:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if path in EXISTING_DB:
        parser.set_defaults(existing_db=True)
    for name, child in (subs[0].choices.items() if subs else ()):
        _mark_existing_db(child, f"{path} {name}".strip())


def add_common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    parser.add_argument("--db", default=None, help="Workbench database (default: $CAI_DB or ./data/workbench.db).")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="Print machine-readable JSON.")


def emit(args: argparse.Namespace, data: Any, text: Callable[[Any], str] | None = None) -> None:
    """Print `data` as JSON with --json, else as `text(data)` (or JSON when no text form exists)."""
    if getattr(args, "json", False) or text is None:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        print(text(data))


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain aligned text table."""
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cai", description="Constitutional AI Workbench.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _mark_existing_db(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if getattr(args, "existing_db", False):
            from cai import store

            store.require_existing(args.db)
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the one top-level handler: every error is one line, never a traceback
        if os.environ.get("CAI_TRACEBACK"):
            raise
        line, status = error_line(exc)
        print(f"error: {line}", file=sys.stderr)
        return status
    return int(result or 0)


def error_line(exc: BaseException) -> tuple[str, int]:
    """One line for any error, and the exit status: 2 for input the user can fix, 1 for anything else.

    File errors name the file; errors we did not foresee name the source line they came from, so a bug
    report can point at it (CAI_TRACEBACK=1 shows the whole traceback).
    """
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}", 2
    if isinstance(exc, (ValueError, LookupError, OSError)) and not isinstance(exc, UnicodeError):
        return str(exc), 2
    if isinstance(exc, sqlite3.Error):
        return f"database error: {exc}", 2
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read", 2
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}; set CAI_TRACEBACK=1 for the traceback", 1


if __name__ == "__main__":
    sys.exit(main())
