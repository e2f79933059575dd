"""Arena votes as data: the FastChat battle frame (with provenance), TRL preference pairs, campaign progress."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlite_utils import Database

from cai.arena.campaigns import get_campaign
from cai.evals import ratings

_VOTES_SQL = """
select v.id as vote_id, c.name as campaign, b.dimension, ma.name as model_a, mb.name as model_b, v.winner,
       v.battle_id, v.turn, u.name as user, v.comment, v.created_at, t.prompt, t.response_a, t.response_b,
       exists(select 1 from leak_flags f where f.battle_id = v.battle_id and f.turn = v.turn) as leak
from votes v join battles b on b.id = v.battle_id join campaigns c on c.id = b.campaign_id
join models ma on ma.id = b.model_a join models mb on mb.id = b.model_b
left join users u on u.id = v.user_id
join battle_turns t on t.battle_id = v.battle_id and t.turn = v.turn
"""


def votes_frame(
    db: Database, *, campaign: str | None = None, dimension: str | None = None, exclude_leaks: bool = True,
    exclude_raters: bool = True,
) -> pd.DataFrame:
    """All votes in FastChat's battle format (plus provenance columns), oldest first; votes on gold
    pairs are never model votes, and excluded raters' votes are left out unless asked for."""
    clauses, args = ["b.gold_id is null"], []
    if exclude_raters:
        clauses.append("not exists (select 1 from rater_exclusions x where x.user_id = v.user_id "
                       "and (x.campaign_id is null or x.campaign_id = b.campaign_id))")
    if campaign:
        clauses.append("c.name = ?")
        args.append(campaign)
    if dimension:
        clauses.append("b.dimension = ?")
        args.append(dimension)
    sql = _VOTES_SQL + (" where " + " and ".join(clauses) if clauses else "") + " order by v.id"
    cur = db.execute(sql, args)
    df = pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])
    df["leak"] = df["leak"].astype(bool)
    return df[~df["leak"]].reset_index(drop=True) if exclude_leaks else df


def preference_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """Decisive votes as TRL preference rows: prompt (HH transcript), chosen and rejected responses."""
    decisive = df[df["winner"].isin(["model_a", "model_b"])]
    a_won = decisive["winner"] == "model_a"
    out = pd.DataFrame(
        {
            "prompt": decisive["prompt"],
            "chosen": " " + decisive["response_a"].where(a_won, decisive["response_b"]).str.strip(),
            "rejected": " " + decisive["response_b"].where(a_won, decisive["response_a"]).str.strip(),
            "dimension": decisive["dimension"],
            "campaign": decisive["campaign"],
            "model_chosen": decisive["model_a"].where(a_won, decisive["model_b"]),
            "model_rejected": decisive["model_b"].where(a_won, decisive["model_a"]),
            "comment": decisive["comment"],
        }
    )
    return out.reset_index(drop=True)


def campaign_progress(db: Database, name: str) -> dict[str, Any]:
    """Votes, raters, battles, votes by outcome and votes per (unordered) model pair."""
    camp = get_campaign(db, name)
    df = votes_frame(db, campaign=name, exclude_leaks=False, exclude_raters=False)
    pairs: dict[tuple[str, str], int] = {}
    for a, b in zip(df["model_a"], df["model_b"], strict=True):
        key = tuple(sorted((a, b)))
        pairs[key] = pairs.get(key, 0) + 1  # type: ignore[index]
    return {
        "campaign": camp["name"],
        "dimension": camp["dimension"],
        "status": camp["status"],
        "models": camp["models"],
        "battles": db.table("battles").count_where("campaign_id = ?", [camp["id"]]),
        "votes": len(df),
        "raters": int(df["user"].nunique()) if len(df) else 0,
        "leaky_votes": int(df["leak"].sum()) if len(df) else 0,
        "by_winner": {w: int((df["winner"] == w).sum()) for w in ratings.WINNERS},
        "pairs": [{"model_a": a, "model_b": b, "votes": n} for (a, b), n in sorted(pairs.items())],
    }
