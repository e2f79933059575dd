"""Invite codes: single-use, expiring codes that each make one rater account, optionally bound to a campaign.

Only a code's hash is stored, so a code is shown once, when it is made; redeeming checks the code, makes the
user and spends the code in one write transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlite_utils import Database

from cai import store, users
from cai.arena import ArenaError, get_campaign


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


def redeem_invite(db: Database, code: str, name: str, password: str) -> dict[str, Any]:
    """Create a rater account from an unused code; the code is spent in the same transaction."""
    with store.immediate(db):
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
