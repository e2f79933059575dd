"""`cai users`: add, list, remove users, change their password or role, lift a sign-in lockout.

Thin over `cai.users`; a password comes from --password, then $CAI_PASSWORD, then a prompt on a
terminal, and otherwise is generated and printed once (never stored in clear anywhere).
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys

from cai import store, users
from cai.cli import add_common, emit, table


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password to set and whether it was generated (so it must be printed)."""
    if args.password:
        return args.password, False
    if os.environ.get("CAI_PASSWORD"):
        return os.environ["CAI_PASSWORD"], False
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat: "):
            raise users.UserError("the two passwords differ")
        return first, False
    return secrets.token_urlsafe(12), True


def cmd_add(args: argparse.Namespace) -> int:
    password, generated = _password(args)
    user_id = users.add_user(store.connect(args.db), args.name, args.role, password)
    data = {"id": user_id, "name": args.name, "role": args.role}
    if generated:
        data["password"] = password
    emit(args, data, lambda d: f"added {d['role']} {d['name']!r}" + (f"; password: {password}" if generated else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = users.list_users(store.connect(args.db))
    emit(args, rows, lambda r: table(r, ["id", "name", "role", "created_at"]))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    users.remove_user(store.connect(args.db), args.name)
    emit(args, {"removed": args.name}, lambda d: f"removed {d['removed']!r}")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    password, generated = _password(args)
    users.set_password(store.connect(args.db), args.name, password)
    data = {"name": args.name, **({"password": password} if generated else {})}
    emit(args, data, lambda d: f"password of {d['name']!r} changed" + (f": {password}" if generated else ""))
    return 0


def cmd_role(args: argparse.Namespace) -> int:
    users.set_role(store.connect(args.db), args.name, args.role)
    emit(args, {"name": args.name, "role": args.role}, lambda d: f"{d['name']!r} is now {d['role']}")
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    n = users.unlock(store.connect(args.db), args.name)
    emit(args, {"name": args.name, "failures_cleared": n},
         lambda d: f"unlocked {d['name']!r} ({d['failures_cleared']} recent failed sign-ins no longer count)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `cai users ...` to the `cai` parser."""
    p = sub.add_parser("users", help="Manage web-app users and roles (admin, viewer, rater).")
    usub = p.add_subparsers(dest="users_command", metavar="ACTION")
    usub.required = True

    a = usub.add_parser("add", help="Add a user.")
    a.add_argument("name", help="Login name.")
    a.add_argument("--role", required=True, choices=users.ROLES, help="admin: edit and launch; viewer: browse; rater: arena only.")
    a.add_argument("--password", default=None, help="Password (else $CAI_PASSWORD, a prompt, or a generated one printed once).")
    add_common(a)
    a.set_defaults(func=cmd_add)

    ls = usub.add_parser("list", help="List users and their roles.")
    add_common(ls)
    ls.set_defaults(func=cmd_list)

    rm = usub.add_parser("remove", help="Remove a user.")
    rm.add_argument("name", help="Login name.")
    add_common(rm)
    rm.set_defaults(func=cmd_remove)

    pw = usub.add_parser("passwd", help="Set a user's password.")
    pw.add_argument("name", help="Login name.")
    pw.add_argument("--password", default=None, help="New password (else $CAI_PASSWORD, a prompt, or generated).")
    add_common(pw)
    pw.set_defaults(func=cmd_passwd)

    ro = usub.add_parser("role", help="Change a user's role.")
    ro.add_argument("name", help="Login name.")
    ro.add_argument("role", choices=users.ROLES, help="The new role.")
    add_common(ro)
    ro.set_defaults(func=cmd_role)

    un = usub.add_parser("unlock", help="Lift a name's sign-in lockout and slowdown (its failed attempts stay logged).")
    un.add_argument("name", help="Login name (it need not exist: guessed names are locked too).")
    add_common(un)
    un.set_defaults(func=cmd_unlock)
