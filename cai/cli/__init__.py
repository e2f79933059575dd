"""The `cai` command line: one subcommand group per module, all thin over `cai/`.

Every command takes `--db`; commands that report take `--json`. Errors the user can fix
(bad input, unknown names) print one clear line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

# Each module defines `register(subparsers)`, adding its commands with `set_defaults(func=...)`.
COMMAND_MODULES = [
    "cai.cli.data",  # init, constitution, prompts, prefs
    "cai.cli.models",  # models, generate
    "cai.cli.runs",  # run, runs, chains
    "cai.cli.evals",  # eval
    "cai.cli.users",  # users
    "cai.cli.arena",  # ratings, arena
    "cai.cli.experiments",  # experiment
]


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, LookupError, FileNotFoundError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
