"""Rater quality in the arena: agreement between raters, gold pairs, suspicious-rater flags, exclusions.

Two raters judge "the same pair" when both voted on the first turn of battles in one campaign that
started from the same seeded prompt between the same two models (answers are sampled, so this is
the closest a live arena gets to a shared item); their label is the winning model's name or "tie".
Gold pairs (a prompt with a known-better and a worse answer) are served as one-turn battles at a
campaign's gold rate and never count as model votes. The math is in cai.evals.raters.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import pandas as pd
from sqlite_utils import Database

from cai import store, users
from cai.arena.campaigns import ArenaError, get_campaign
from cai.evals import raters as R
from cai.transcript import as_prompt


def _user_id(db: Database, name: str) -> int:
    user = users.get_user(db, name)
    if not user:
        raise ArenaError(f"no user named {name!r}")
    return int(user["id"])


def exclude_rater(db: Database, name: str, campaign: str | None = None, reason: str = "", by: str = "") -> None:
    """Leave a rater's votes (in one campaign, or all) out of ratings; they stay in the database."""
    uid = _user_id(db, name)
    camp_id = get_campaign(db, campaign)["id"] if campaign else None
    if _exclusion_ids(db, uid, camp_id):
        return
    db.table("rater_exclusions").insert({"user_id": uid, "campaign_id": camp_id, "reason": reason.strip(),
                                         "created_by": by, "created_at": store.now()})


def include_rater(db: Database, name: str, campaign: str | None = None) -> int:
    """Undo `exclude_rater` for that scope; returns how many exclusions were removed."""
    uid = _user_id(db, name)
    camp_id = get_campaign(db, campaign)["id"] if campaign else None
    ids = _exclusion_ids(db, uid, camp_id)
    for i in ids:
        db.table("rater_exclusions").delete(i)
    return len(ids)


def _exclusion_ids(db: Database, uid: int, camp_id: int | None) -> list[int]:
    where = "user_id = ? and campaign_id is ?"
    return [r["id"] for r in db.table("rater_exclusions").rows_where(where, [uid, camp_id], select="id")]


def exclusions(db: Database) -> list[dict[str, Any]]:
    sql = """select u.name as rater, c.name as campaign, x.reason, x.created_by, x.created_at
             from rater_exclusions x join users u on u.id = x.user_id left join campaigns c on c.id = x.campaign_id
             order by x.id"""
    cur = db.execute(sql)
    return [dict(zip([d[0] for d in cur.description], row, strict=True)) for row in cur.fetchall()]


# -- gold pairs -------------------------------------------------------------------------------------


def add_gold_pairs(db: Database, campaign: str, pairs: list[dict[str, Any]], rate: float | None = None) -> int:
    """Add gold pairs (prompt, better, worse) to a campaign and optionally set its gold rate."""
    camp = get_campaign(db, campaign)
    rows = []
    for i, p in enumerate(pairs, 1):
        missing = [k for k in ("prompt", "better", "worse") if not str(p.get(k) or "").strip()]
        if missing:
            raise ValueError(f"gold pair {i}: missing {', '.join(missing)}")
        rows.append({"campaign_id": camp["id"], "prompt": as_prompt(str(p["prompt"])),
                     "better": str(p["better"]).strip(), "worse": str(p["worse"]).strip(), "created_at": store.now()})
    if rate is not None:
        set_gold_rate(db, campaign, rate)
    db.table("gold_pairs").insert_all(rows)
    return len(rows)


def set_gold_rate(db: Database, campaign: str, rate: float) -> None:
    """The share of new battles that are gold pairs (0 to 0.5: most battles must rate models)."""
    if not 0.0 <= rate <= 0.5:
        raise ValueError(f"gold rate must be between 0 and 0.5, got {rate}")
    db.table("campaigns").update(get_campaign(db, campaign)["id"], {"gold_rate": rate})


def maybe_gold_battle(db: Database, camp: dict[str, Any], user_id: int, rng: random.Random) -> int | None:
    """With probability gold_rate, a one-turn battle on the gold pair this rater has seen least."""
    rate = float(db.table("campaigns").get(camp["id"]).get("gold_rate") or 0.0)
    if rate <= 0 or rng.random() >= rate:
        return None
    sql = """select g.id, (select count(*) from battles b where b.gold_id = g.id and b.user_id = ?) as seen
             from gold_pairs g where g.campaign_id = ? order by seen, g.id"""
    rows = db.execute(sql, [user_id, camp["id"]]).fetchall()
    if not rows:
        return None
    gold = db.table("gold_pairs").get(int(rng.choice([r[0] for r in rows if r[1] == rows[0][1]])))
    better = rng.choice("ab")
    a, b = (gold["better"], gold["worse"]) if better == "a" else (gold["worse"], gold["better"])
    now = store.now()
    battle_id = int(db.table("battles").insert({
        "campaign_id": camp["id"], "user_id": user_id, "model_a": camp["model_ids"][0], "model_b": camp["model_ids"][1],
        "dimension": camp["dimension"], "status": "open", "created_at": now, "seed": rng.randrange(2**31),
        "gold_id": gold["id"], "gold_better": better}).last_pk or 0)
    db.table("battle_turns").insert({"battle_id": battle_id, "turn": 1, "prompt": gold["prompt"], "response_a": a,
                                     "response_b": b, "shown_at": now, "created_at": now})
    return battle_id


# -- the report -------------------------------------------------------------------------------------

_RATER_SQL = """
select u.name as rater, v.winner, ma.name as model_a, mb.name as model_b, b.prompt_id, v.turn, b.gold_id,
       b.gold_better, t.shown_at, v.created_at, c.name as campaign
from votes v join battles b on b.id = v.battle_id join campaigns c on c.id = b.campaign_id
join users u on u.id = v.user_id join models ma on ma.id = b.model_a join models mb on mb.id = b.model_b
join battle_turns t on t.battle_id = v.battle_id and t.turn = v.turn
"""


def _seconds(shown: str | None, voted: str | None) -> float | None:
    if not shown or not voted:
        return None
    return (datetime.fromisoformat(voted) - datetime.fromisoformat(shown)).total_seconds()


def rater_votes(db: Database, campaign: str | None = None) -> pd.DataFrame:
    """Every vote with its rater, shared-item key (None when not shareable), label, gold correctness
    (None off gold) and seconds from answers shown to vote."""
    sql, args = _RATER_SQL, []
    if campaign:
        sql += " where c.name = ?"
        args.append(campaign)
    cur = db.execute(sql + " order by v.id", args)
    df = pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])
    if df.empty:
        return pd.DataFrame(columns=["rater", "winner", "item", "label", "correct", "seconds"])

    def item(r: pd.Series) -> str | None:
        if pd.notna(r["gold_id"]) or pd.isna(r["prompt_id"]) or r["turn"] != 1:
            return None
        return f"{r['campaign']}|prompt {int(r['prompt_id'])}|{'/'.join(sorted((r['model_a'], r['model_b'])))}"

    def label(r: pd.Series) -> str:
        return {"model_a": r["model_a"], "model_b": r["model_b"]}.get(r["winner"], "tie")

    def correct(r: pd.Series) -> float | None:
        if pd.isna(r["gold_id"]):
            return None
        side = {"model_a": "a", "model_b": "b"}.get(r["winner"])
        return 0.5 if side is None else float(side == r["gold_better"])

    df["item"] = df.apply(item, axis=1)
    df["label"] = df.apply(label, axis=1)
    df["correct"] = df.apply(correct, axis=1)
    df["seconds"] = [_seconds(s, v) for s, v in zip(df["shown_at"], df["created_at"], strict=True)]
    return df


def rater_report(db: Database, campaign: str | None = None) -> dict[str, Any]:
    """Per rater: votes, agreement with the others' majority on shared items, gold accuracy, share of
    position A, median seconds, flags and exclusion; and Krippendorff's alpha over shared items."""
    df = rater_votes(db, campaign)
    shared = df[df["item"].notna()]
    model_votes = df[df["gold_id"].isna()] if "gold_id" in df else df
    majority = R.majority_agreement(shared) if len(shared) else {}
    gold = R.gold_accuracy(df[df["correct"].notna()]) if len(df) else {}
    flagged = R.flags(model_votes) if len(model_votes) else {}
    excluded = {(x["rater"], x["campaign"]) for x in exclusions(db)}
    rows = []
    for rater, g in df.groupby("rater", sort=True):
        mv = g[g["gold_id"].isna()]
        decisive = mv[mv["winner"].isin(["model_a", "model_b"])]
        timed = mv["seconds"].dropna()
        rows.append({
            "rater": rater, "votes": len(mv),
            "shared": majority.get(rater, {}).get("shared", 0),
            "agree_majority": majority.get(rater, {}).get("agreement"),
            "gold": gold.get(rater, {}).get("gold", 0), "gold_accuracy": gold.get(rater, {}).get("gold_accuracy"),
            "share_A": round(float((decisive["winner"] == "model_a").mean()), 4) if len(decisive) else None,
            "median_seconds": round(float(timed.median()), 1) if len(timed) else None,
            "flags": flagged.get(rater, []),
            "excluded": (rater, None) in excluded or (rater, campaign) in excluded,
        })
    return {"campaign": campaign, "raters": rows, "agreement": R.krippendorff_alpha(shared),
            "thresholds": {"always_A_share": R.ALWAYS_A_SHARE, "always_A_min_votes": R.ALWAYS_A_MIN_VOTES,
                           "too_fast_seconds": R.TOO_FAST_SECONDS, "too_fast_min_votes": R.TOO_FAST_MIN_VOTES}}
