"""Workbench users and roles: admins edit and launch, viewers browse, raters see only the arena.

Passwords are stored as salted scrypt hashes (`scrypt$n$r$p$salt$hash`, hex), compared in constant
time; nothing here ever returns a hash to a caller that lists or looks up users. Sign-ins go through
`attempt_login`: every attempt is logged, failures lock a name or a client address out for a while
(`LoginPolicy`: per (name, address) pair and per address, with a slowdown per name), an unknown name costs one scrypt like a known one, and a user's `session_epoch` goes
up with each password change, so sessions opened before it end (`session_user`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from cai import store

ROLES = ("admin", "viewer", "rater")
# scrypt cost: ~16 MiB and ~50 ms per check, fine for a login, slow for a guesser.
_N, _R, _P = 2**14, 8, 1
MIN_PASSWORD = 8
MAX_NAME = 64
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


def _check_new_name(name: str) -> None:
    """A new user's name: at most MAX_NAME characters, none of them control or format characters."""
    if len(name) > MAX_NAME:
        raise UserError(f"user name {name[:20]!r}...: at most {MAX_NAME} characters, got {len(name)}")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise UserError(f"user name {name!r}: no control or invisible format characters (tab, newline, ...)")


def add_user(db: Database, name: str, role: str, password: str) -> int:
    _check(name, role, password)
    _check_new_name(name)
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
    """Lockout thresholds, over the failures of the last `window_s` seconds (since the name's last
    `cai users unlock`): `per_name` failures for one name from one client address lock that (name, address)
    pair, and `per_address` failures from one address lock the address, until the oldest of those failures
    is `window_s` old. A name is never locked for everyone (anyone could lock `admin` out): past
    `backoff_after` failures from all addresses, each further check of the name waits `backoff_s`, doubling
    with each failure up to `backoff_max_s`, after the previous one."""

    per_name: int = 5
    per_address: int = 20
    window_s: float = 900.0
    backoff_after: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0


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


def backoff_wait(failures: int, last_check: float | None, policy: LoginPolicy, now: float) -> float:
    """Seconds until a name with `failures` recent failures (from anywhere) may be checked again."""
    if last_check is None or failures < policy.backoff_after:
        return 0.0
    gap = min(policy.backoff_s * 2.0 ** min(failures - policy.backoff_after, 30), policy.backoff_max_s)
    return max(last_check + gap - now, 0.0)


# A "checking" row is written before the password is checked and counts as a failure until the check ends:
# so concurrent attempts see each other, and at most the limit is ever checked.
FAILED = ("wrong", "checking")


def _since(db: Database, name: str, policy: LoginPolicy, now: float) -> float:
    """Start of the window for `name`: `window_s` ago, or its last unlock if later."""
    row = db.execute("select max(at_unix) from login_attempts where name = ? and reason = 'unlocked'",
                     [name]).fetchone()
    return max(now - policy.window_s, row[0] or 0.0)


def _lock_wait(db: Database, name: str, address: str, policy: LoginPolicy, now: float) -> tuple[float, str]:
    since = _since(db, name, policy, now)
    failed = "reason in ('wrong', 'checking') and at_unix > ?"
    pair = [r[0] for r in db.execute(f"select at_unix from login_attempts where name = ? and address = ? and {failed}",
                                     [name, address, since]).fetchall()]
    by_address = [r[0] for r in db.execute(f"select at_unix from login_attempts where address = ? and {failed}",
                                           [address, now - policy.window_s]).fetchall()]
    wait = max(lockout_wait(pair, policy.per_name, policy.window_s, now),
               lockout_wait(by_address, policy.per_address, policy.window_s, now))
    if wait > 0:
        return wait, "locked"
    failures, last = db.execute(
        "select sum(reason in ('wrong', 'checking')), max(at_unix) from login_attempts"
        " where name = ? and reason in ('wrong', 'checking', 'ok') and at_unix > ?", [name, since]).fetchone()
    wait = backoff_wait(int(failures or 0), last, policy, now)
    return (wait, "backoff") if wait > 0 else (0.0, "")


def attempt_login(
    db: Database, name: str, password: str, address: str | None, *, policy: LoginPolicy = LoginPolicy(),
    now: float | None = None,
) -> LoginResult:
    """Check a sign-in under the lockout policy, and log the attempt (table `login_attempts` and the log).

    The lockout check and the attempt's row are one write transaction, the row saying "checking" until the
    password is checked (then "ok" or "wrong"): concurrent attempts count each other, so no more than the
    limit are ever checked."""
    now = time.time() if now is None else now
    address = address or "unknown"
    row = {"name": name[:200], "address": address, "ok": 0, "at": store.now(), "at_unix": now}
    with store.immediate(db):
        wait, why = _lock_wait(db, name[:200], address, policy, now)
        attempt = int(db.table("login_attempts").insert({**row, "reason": why or "checking"}).last_pk or 0)
    if wait > 0:
        result = LoginResult(None, f"Too many failed sign-ins: try again in {int(wait) + 1} s.", wait)
        reason = why
    else:
        user = authenticate(db, name, password)
        result = LoginResult(user, "" if user else "Wrong name or password.")
        reason = "ok" if user else "wrong"
        with db.conn:
            db.table("login_attempts").update(attempt, {"ok": int(user is not None), "reason": reason})
    log.log(logging.INFO if reason == "ok" else logging.WARNING, "sign-in %s: name=%r address=%s", reason,
            name[:200], address)
    return result


def unlock(db: Database, name: str) -> int:
    """Forget `name`'s failed sign-ins (from every address) for the lockout and the backoff; the attempts stay
    in the log, followed by an "unlocked" row. Returns how many recent failures no longer count."""
    policy, now = LoginPolicy(), time.time()
    with store.immediate(db):
        since = _since(db, name, policy, now)
        n = db.execute("select count(*) from login_attempts where name = ? and reason in ('wrong', 'checking')"
                       " and at_unix > ?", [name, since]).fetchone()[0]
        db.table("login_attempts").insert({"name": name, "address": "cli", "ok": 0, "reason": "unlocked",
                                           "at": store.now(), "at_unix": now})
    log.warning("sign-in unlocked: name=%r (%d recent failures)", name, n)
    return int(n)


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
