"""Who a login session belongs to: a user's id and session epoch (bumped when their sessions must end)."""

from __future__ import annotations

from sqlite_utils import Database


def session_key(db: Database, name: str) -> tuple[int, int] | None:
    """(user id, session epoch) of the user `name`, or None; `cai.users.session_user` checks it later."""
    rows = list(db["users"].rows_where("name = ?", [name], limit=1, select="id, session_epoch"))
    return (int(rows[0]["id"]), int(rows[0]["session_epoch"] or 0)) if rows else None
