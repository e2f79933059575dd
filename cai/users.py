"""Workbench users and roles: admins edit and launch, viewers browse, raters see only the arena.

Passwords are stored as salted scrypt hashes (`scrypt$n$r$p$salt$hash`, hex), compared in constant
time; nothing here ever returns a hash to a caller that lists or looks up users.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from typing import Any

from sqlite_utils import Database

from cai import store

ROLES = ("admin", "viewer", "rater")
# scrypt cost: ~16 MiB and ~50 ms per check, fine for a login, slow for a guesser.
_N, _R, _P = 2**14, 8, 1
MIN_PASSWORD = 8


class UserError(ValueError):
    """A user name, role or password is invalid, or the user does not exist."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, digest = stored.split("$")
    except (AttributeError, ValueError):
        return False
    if algo != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(got.hex(), digest)


def _check(name: str, role: str | None = None, password: str | None = None) -> None:
    if not name or not name.strip() or name != name.strip():
        raise UserError(f"user name {name!r}: must be non-empty with no surrounding spaces")
    if role is not None and role not in ROLES:
        raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if password is not None and len(password) < MIN_PASSWORD:
        raise UserError(f"password for {name!r}: at least {MIN_PASSWORD} characters")


def add_user(db: Database, name: str, role: str, password: str) -> int:
    _check(name, role, password)
    if db.table("users").count_where("name = ?", [name]):
        raise UserError(f"a user named {name!r} already exists")
    row = {"name": name, "role": role, "password_hash": hash_password(password), "created_at": store.now()}
    return int(db.table("users").insert(row).last_pk or 0)


def _row(db: Database, name: str) -> dict[str, Any]:
    rows = list(db.table("users").rows_where("name = ?", [name], limit=1))
    if not rows:
        raise UserError(f"no user named {name!r}")
    return rows[0]


def get_user(db: Database, name: str) -> dict[str, Any] | None:
    rows = list(db.table("users").rows_where("name = ?", [name], limit=1, select="id, name, role, created_at"))
    return rows[0] if rows else None


def list_users(db: Database) -> list[dict[str, Any]]:
    return list(db.table("users").rows_where(order_by="id", select="id, name, role, created_at"))


def set_password(db: Database, name: str, password: str) -> None:
    _check(name, password=password)
    db.table("users").update(_row(db, name)["id"], {"password_hash": hash_password(password)})


def set_role(db: Database, name: str, role: str) -> None:
    _check(name, role=role)
    db.table("users").update(_row(db, name)["id"], {"role": role})


def remove_user(db: Database, name: str) -> None:
    db.table("users").delete(_row(db, name)["id"])


def authenticate(db: Database, name: str, password: str) -> dict[str, Any] | None:
    """The user (id, name, role) when the password matches, else None."""
    rows = list(db.table("users").rows_where("name = ?", [name], limit=1))
    if not rows or not verify_password(password, rows[0]["password_hash"] or ""):
        return None
    return {k: rows[0][k] for k in ("id", "name", "role", "created_at")}


def role_of(db: Database, name: str | None) -> str | None:
    user = get_user(db, name) if name else None
    return user["role"] if user else None


def ensure_admin(db: Database, password: str | None = None, name: str = "admin") -> str | None:
    """With no users at all, create an admin; returns its password (generated if not given), else None."""
    if db.table("users").count:
        return None
    password = password or secrets.token_urlsafe(12)
    add_user(db, name, "admin", password)
    return password
