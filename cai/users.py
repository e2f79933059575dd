"""Workbench users and roles: admins edit and launch, viewers browse, raters see only the arena.

Passwords are stored as salted scrypt hashes (`scrypt$n$r$p$salt$hash`, hex), compared in constant
time; nothing here ever returns a hash to a caller that lists or looks up users. Sign-ins go through
`attempt_login`: every attempt is logged, failures lock a name or a client address out for a while
(`LoginPolicy`), an unknown name costs one scrypt like a known one, and a user's `session_epoch` goes
up with each password change, so sessions opened before it end (`session_user`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from cai import store

ROLES = ("admin", "viewer", "rater")
# scrypt cost: ~16 MiB and ~50 ms per check, fine for a login, slow for a guesser.
_N, _R, _P = 2**14, 8, 1
MIN_PASSWORD = 8
log = logging.getLogger(__name__)


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
    """A new password; the user's open sessions end (their epoch no longer matches)."""
    _check(name, password=password)
    row = _row(db, name)
    epoch = int(row.get("session_epoch") or 0) + 1
    db.table("users").update(row["id"], {"password_hash": hash_password(password), "session_epoch": epoch})


def set_role(db: Database, name: str, role: str) -> None:
    _check(name, role=role)
    db.table("users").update(_row(db, name)["id"], {"role": role})


def remove_user(db: Database, name: str) -> None:
    db.table("users").delete(_row(db, name)["id"])


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    """A hash that no password matches, checked for unknown names so they cost what known ones do."""
    if not _DUMMY:
        _DUMMY.append(hash_password(secrets.token_hex(16)))
    return _DUMMY[0]


def authenticate(db: Database, name: str, password: str) -> dict[str, Any] | None:
    """The user (id, name, role, session_epoch) when the password matches, else None.

    An unknown name is checked against a dummy hash, so timing does not tell which names exist."""
    rows = list(db.table("users").rows_where("name = ?", [name], limit=1))
    stored = (rows[0]["password_hash"] or "") if rows else _dummy_hash()
    if not verify_password(password, stored) or not rows:
        return None
    return {k: rows[0].get(k) for k in ("id", "name", "role", "created_at", "session_epoch")}


def session_user(db: Database, user_id: int, epoch: int) -> dict[str, Any] | None:
    """The user (id, name, role) of a session opened at `epoch`, or None once the user is gone or has
    changed password since."""
    rows = list(db.table("users").rows_where("id = ?", [user_id], limit=1, select="id, name, role, session_epoch"))
    if not rows or int(rows[0]["session_epoch"] or 0) != int(epoch or 0):
        return None
    return {k: rows[0][k] for k in ("id", "name", "role")}


# -- sign-in throttling ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginPolicy:
    """Lockout thresholds: after `per_name` failed attempts for one name, or `per_address` from one client
    address, within `window_s` seconds, further attempts are refused (without checking the password)
    until the oldest of those failures is `window_s` old."""

    per_name: int = 5
    per_address: int = 20
    window_s: float = 900.0


@dataclass(frozen=True)
class LoginResult:
    user: dict[str, Any] | None
    message: str  # "" on success; else one line safe to show (never says whether the name exists)
    retry_after: float = 0.0


def lockout_wait(failure_times: list[float], limit: int, window_s: float, now: float) -> float:
    """Seconds until fewer than `limit` of these failures fall inside the window (0: not locked)."""
    recent = sorted(t for t in failure_times if now - t < window_s)
    if limit <= 0 or len(recent) < limit:
        return 0.0
    return max(recent[len(recent) - limit] + window_s - now, 0.0)


def _failures(db: Database, column: str, value: str, since: float) -> list[float]:
    sql = f"select at_unix from login_attempts where {column} = ? and ok = 0 and at_unix > ?"
    return [r[0] for r in db.execute(sql, [value, since]).fetchall()]


def attempt_login(
    db: Database, name: str, password: str, address: str | None, *, policy: LoginPolicy = LoginPolicy(),
    now: float | None = None,
) -> LoginResult:
    """Check a sign-in under the lockout policy, and log the attempt (table `login_attempts` and the log)."""
    now = time.time() if now is None else now
    address = address or "unknown"
    wait = max(
        lockout_wait(_failures(db, "name", name, now - policy.window_s), policy.per_name, policy.window_s, now),
        lockout_wait(_failures(db, "address", address, now - policy.window_s), policy.per_address,
                     policy.window_s, now),
    )
    if wait > 0:
        result = LoginResult(None, f"Too many failed sign-ins: try again in {int(wait) + 1} s.", wait)
        reason = "locked"
    else:
        user = authenticate(db, name, password)
        result = LoginResult(user, "" if user else "Wrong name or password.")
        reason = "ok" if user else "wrong"
    with db.conn:
        db.table("login_attempts").insert(
            {"name": name[:200], "address": address, "ok": int(result.user is not None), "reason": reason,
             "at": store.now(), "at_unix": now}
        )
    log.log(logging.INFO if reason == "ok" else logging.WARNING, "sign-in %s: name=%r address=%s", reason,
            name[:200], address)
    return result


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
