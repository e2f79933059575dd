"""Invite codes: single-use, expiring codes that each make one rater account, optionally bound to a campaign.

Only a code's hash is stored, so a code is shown once, when it is made; redeeming checks the code, makes the
user and spends the code in one write transaction. Wrong codes are rate-limited per client address.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlite_utils import Database

from cai import store, users
from cai.arena.campaigns import ArenaError, get_campaign

log = logging.getLogger(__name__)


def _hash_code(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


INVITE_DAYS = 7.0  # how long an invite code stays valid unless its maker says otherwise


def create_invites(
    db: Database, n: int = 1, *, campaign: str | None = None, note: str = "", created_by: str | None = None,
    expires_days: float = INVITE_DAYS,
) -> list[str]:
    """`n` fresh single-use codes, valid for `expires_days`; only their hashes are stored, so show them now or
    never. A code made for a campaign makes a rater who may rate only that campaign."""
    if not 1 <= n <= 1000:
        raise ArenaError(f"invite count must be 1..1000, got {n}")
    if not 0 < expires_days <= 365:
        raise ArenaError(f"invite expiry must be more than 0 and at most 365 days, got {expires_days}")
    campaign_id = get_campaign(db, campaign)["id"] if campaign else None
    expires = (datetime.now(UTC) + timedelta(days=expires_days)).isoformat(timespec="milliseconds")
    codes = [secrets.token_urlsafe(9) for _ in range(n)]
    db.table("invites").insert_all(
        {"code_hash": _hash_code(c), "campaign_id": campaign_id, "role": "rater", "note": note,
         "created_by": created_by, "created_at": store.now(), "expires_at": expires}
        for c in codes
    )
    return codes


# Wrong codes are limited per client address (in the sign-in attempt log, name INVITE): past INVITE_FAILURES
# in INVITE_WINDOW_S seconds an address is refused until the oldest of them ages out.
INVITE = "(invite code)"
INVITE_FAILURES = 10
INVITE_WINDOW_S = 900.0


def redeem_invite(db: Database, code: str, name: str, password: str, address: str | None = None, *,
                  now: float | None = None) -> dict[str, Any]:
    """Create a rater account from an unused code; the code is spent in the same transaction. Wrong codes are
    rate-limited per client address: the check, the redemption and the attempt's log row are one write
    transaction, so concurrent guesses count each other."""
    now = time.time() if now is None else now
    address = address or "unknown"
    error: ArenaError | None = None
    with store.immediate(db):
        recent = [r[0] for r in db.execute(
            "select at_unix from login_attempts where name = ? and address = ? and reason = 'invite-wrong'"
            " and at_unix > ?", [INVITE, address, now - INVITE_WINDOW_S]).fetchall()]
        wait = users.lockout_wait(recent, INVITE_FAILURES, INVITE_WINDOW_S, now)
        if wait > 0:
            error, reason = ArenaError(f"too many wrong invite codes: try again in {int(wait) + 1} s"), "invite-locked"
        else:
            try:
                user, reason = _redeem(db, code, name, password), "invite-ok"
            except ArenaError as exc:
                error, reason = exc, ("invite-wrong" if "not valid" in str(exc) else "invite-refused")
        db.table("login_attempts").insert({"name": INVITE, "address": address, "ok": int(error is None),
                                           "reason": reason, "at": store.now(), "at_unix": now})
    if error is not None:
        log.warning("invite %s: address=%s", reason, address)
        raise error
    return user


def _redeem(db: Database, code: str, name: str, password: str) -> dict[str, Any]:
    rows = list(db.table("invites").rows_where("code_hash = ?", [_hash_code(code or "")], limit=1))
    if not rows or rows[0]["used_by"] is not None:
        raise ArenaError("that invite code is not valid or has already been used")
    if rows[0]["expires_at"] and rows[0]["expires_at"] <= store.now():
        raise ArenaError("that invite code has expired: ask for a new one")
    if rows[0]["campaign_id"] is not None and get_campaign(db, int(rows[0]["campaign_id"]))["status"] != "active":
        raise ArenaError("the campaign this invite code was made for has been closed")
    try:
        user_id = users.add_user(db, name, rows[0]["role"] or "rater", password)
    except users.UserError as exc:
        raise ArenaError(str(exc)) from None
    db.table("invites").update(rows[0]["id"], {"used_by": user_id, "used_at": store.now()})
    return {"id": user_id, "name": name, "role": rows[0]["role"] or "rater"}
