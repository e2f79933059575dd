"""Blind pairwise battles: turns, votes and identity-leak flags.

Everything a rater can receive goes through functions here that never return a model identity before the
battle ends (`_reveal` is the one door); votes are single transactions guarded by the unique (battle, turn)
index, and are accepted only on a turn whose answers were fully shown. Gold pairs (rater checks) come from
cai.arena.raters, the pairing math from cai.evals.ratings.pairing.
"""

from __future__ import annotations

import random
import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database

from cai import models, store
from cai.arena.campaigns import (
    CHOICES,
    MAKER_TERMS,
    ArenaError,
    _require_active,
    bound_campaign,
    get_campaign,
)
from cai.arena.raters import maybe_gold_battle
from cai.arena.votes import votes_frame
from cai.evals import ratings
from cai.transcript import ASSISTANT, HUMAN, as_prompt, parse_hh


@dataclass(frozen=True)
class TurnJob:
    """What both models must answer for one turn: server-side only (it holds the model ids)."""

    battle_id: int
    turn: int
    prompt: str
    model_ids: tuple[int, int]
    models: tuple[dict[str, Any], dict[str, Any]]  # registry rows (path, backend), for loading
    max_new_tokens: int
    temperature: float
    seed: int


def _user_votes(db: Database, campaign_id: int, user_id: int) -> int:
    sql = "select count(*) from votes v join battles b on b.id = v.battle_id where b.campaign_id = ? and v.user_id = ?"
    return int(db.execute(sql, [campaign_id, user_id]).fetchone()[0])


def start_battle(db: Database, campaign: str, user_id: int, *, seed: int | None = None) -> dict[str, Any]:
    """Open a battle for the rater: draw a pair by the campaign's policy and place it A/B at random."""
    camp = get_campaign(db, campaign)
    if camp["status"] != "active":
        raise ArenaError(f"campaign {campaign!r} is closed")
    if bound_campaign(db, user_id) not in (None, camp["id"]):
        raise ArenaError("your invite was for another campaign: choose that one")
    if camp["vote_cap"] and _user_votes(db, camp["id"], user_id) >= camp["vote_cap"]:
        raise ArenaError(f"you have cast all {camp['vote_cap']} votes this campaign allows. Thank you!")
    seed = secrets.randbelow(2**31) if seed is None else seed
    rng = random.Random(seed)
    gold = maybe_gold_battle(db, camp, user_id, rng)
    if gold is not None:
        return battle_view(db, gold, user_id)
    weights = ratings.pair_weights(camp["models"], votes_frame(db, campaign=campaign), camp["pairing"])
    name_a, name_b = ratings.pick_pair(weights, rng)
    ids = dict(zip(camp["models"], camp["model_ids"], strict=True))
    prompt_id = _pick_prompt(db, camp, rng) if camp["prompt_set"] else None
    battle = {
        "campaign_id": camp["id"], "user_id": user_id, "model_a": ids[name_a], "model_b": ids[name_b],
        "dimension": camp["dimension"], "status": "open", "created_at": store.now(), "prompt_id": prompt_id,
        "seed": seed,
    }
    battle_id = int(db.table("battles").insert(battle).last_pk or 0)
    return battle_view(db, battle_id, user_id)


def _pick_prompt(db: Database, camp: dict[str, Any], rng: random.Random) -> int:
    """The seeded prompt used least in this campaign so far (ties broken at random)."""
    sql = """select p.id, (select count(*) from battles b where b.campaign_id = ? and b.prompt_id = p.id) as used
             from prompts p join prompt_sets s on s.id = p.set_id where s.name = ? order by used, p.id"""
    rows = db.execute(sql, [camp["id"], camp["prompt_set"]]).fetchall()
    if not rows:
        raise ArenaError(f"the campaign's prompt set {camp['prompt_set']!r} is empty")
    least = [r[0] for r in rows if r[1] == rows[0][1]]
    return int(rng.choice(least))


def _battle(db: Database, battle_id: int, user_id: int) -> dict[str, Any]:
    rows = list(db.table("battles").rows_where("id = ?", [battle_id], limit=1))
    if not rows or rows[0]["user_id"] != user_id:
        raise ArenaError("no such battle for this rater")
    return rows[0]


def _turns(db: Database, battle_id: int) -> list[dict[str, Any]]:
    return list(db.table("battle_turns").rows_where("battle_id = ?", [battle_id], order_by="turn"))


def battle_view(db: Database, battle_id: int, user_id: int) -> dict[str, Any]:
    """Everything the rater may see of a battle: the two conversations, and names only once ended.

    Each panel is the conversation its model sees: once a later turn exists, an earlier turn shows the
    preferred answer the conversation continued from, in both panels (the models' prompts hold that answer)."""
    b = _battle(db, battle_id, user_id)
    camp = get_campaign(db, int(b["campaign_id"]))
    turns = _turns(db, battle_id)
    voted = {r["turn"]: r["winner"] for r in db.table("votes").rows_where("battle_id = ?", [battle_id])}
    chat_a: list[dict[str, str]] = []
    chat_b: list[dict[str, str]] = []
    for i, t in enumerate(turns):
        if not t["shown_at"]:
            continue
        human = parse_hh(t["prompt"])[-2]["content"]
        own_a, own_b = t["response_a"], t["response_b"]
        if i + 1 < len(turns) and t["continued_with"] in ("a", "b"):
            # The conversation went on from the preferred answer: both models saw it as their earlier reply,
            # so both panels show it (what each model actually sees), not the answer each gave at the time.
            own_a = own_b = t["response_a"] if t["continued_with"] == "a" else t["response_b"]
        chat_a += [{"role": "user", "content": human}, {"role": "assistant", "content": own_a}]
        chat_b += [{"role": "user", "content": human}, {"role": "assistant", "content": own_b}]
    seeded = None
    if b["prompt_id"] and not turns:
        seeded = parse_hh(db.table("prompts").get(b["prompt_id"])["text"])[-2]["content"]
    shown = [t["turn"] for t in turns if t["shown_at"]]
    view = {
        "battle_id": battle_id,
        "campaign": camp["name"],
        "dimension": b["dimension"],
        "instructions": camp["instructions"],
        "status": b["status"],
        "turns": len(shown),
        "max_turns": camp["max_turns"],
        "awaiting_vote": bool(shown) and shown[-1] not in voted,
        "seeded_prompt": seeded,
        "chat_a": chat_a,
        "chat_b": chat_b,
        "votes": [voted[k] for k in sorted(voted)],
    }
    if b["status"] == "ended":
        view["reveal"] = _reveal(db, b)
    return view


def _reveal(db: Database, b: dict[str, Any]) -> dict[str, str]:
    if b.get("gold_id"):  # a gold pair (cai.arena.raters): written answers, not models
        better, worse = "the known-better answer (a quality check)", "the known-worse answer (a quality check)"
        return {"model_a": better if b["gold_better"] == "a" else worse,
                "model_b": better if b["gold_better"] == "b" else worse}
    return {
        "model_a": models.get_model_by_id(db, b["model_a"])["name"],
        "model_b": models.get_model_by_id(db, b["model_b"])["name"],
    }


STALE_TURN_S = 900.0
MAX_MESSAGE_CHARS = 4000  # a campaign's default cap on one rater message (a few pages of text)


def message_too_long(message: str, cap: int) -> str | None:
    """The refusal for a message over the campaign's cap, or None."""
    if len(message) <= cap:
        return None
    return f"your message is {len(message):,} characters long; this campaign takes at most {cap:,}: shorten it"  # an unanswered turn this old was left by a server that stopped; it may be retried


def _age_s(stamp: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()


def begin_turn(db: Database, battle_id: int, user_id: int, message: str) -> TurnJob:
    """Record that a turn is under way and return what both models must answer."""
    with store.immediate(db):
        return _begin_turn(db, battle_id, user_id, message)


def _begin_turn(db: Database, battle_id: int, user_id: int, message: str) -> TurnJob:
    b = _battle(db, battle_id, user_id)
    camp = get_campaign(db, int(b["campaign_id"]))
    if b["status"] != "open":
        raise ArenaError("this battle has ended; start a new one")
    _require_active(camp)
    turns = _turns(db, battle_id)
    if turns and not turns[-1]["shown_at"] and not turns[-1]["error"]:
        if _age_s(turns[-1]["created_at"]) < STALE_TURN_S:
            raise ArenaError("the models are still answering your last message: wait for both answers, then vote")
        db.table("battle_turns").delete(turns[-1]["id"])  # left behind by a server that stopped mid-answer
        turns = turns[:-1]
    voted = {r["turn"] for r in db.table("votes").rows_where("battle_id = ?", [battle_id])}
    if turns and turns[-1]["turn"] not in voted:
        raise ArenaError("vote on the last answers before sending another message")
    if len(turns) >= camp["max_turns"]:
        raise ArenaError(f"this battle has reached its {camp['max_turns']} turns; end it to see the models")
    message = (message or "").strip()
    too_long = message_too_long(message, int(camp.get("max_message_chars") or MAX_MESSAGE_CHARS))
    if too_long:
        raise ArenaError(too_long)
    if b["prompt_id"] and not turns:
        prompt = as_prompt(db.table("prompts").get(b["prompt_id"])["text"])
    elif not message:
        raise ArenaError("type a message first")
    elif not turns:
        prompt = f"{HUMAN} {message}{ASSISTANT}"
    else:
        last = turns[-1]
        chosen = last["response_a"] if last["continued_with"] == "a" else last["response_b"]
        prompt = f"{last['prompt']} {chosen.strip()}{HUMAN} {message}{ASSISTANT}"
    turn = len(turns) + 1
    try:
        db.table("battle_turns").insert(
            {"battle_id": battle_id, "turn": turn, "prompt": prompt, "created_at": store.now()}
        )
    except sqlite3.IntegrityError:
        raise ArenaError("this turn is already under way") from None
    rows = (models.get_model_by_id(db, b["model_a"]), models.get_model_by_id(db, b["model_b"]))
    return TurnJob(
        battle_id, turn, prompt, (int(b["model_a"]), int(b["model_b"])), rows,
        int(camp["max_new_tokens"]), float(camp["temperature"]), int(b["seed"] or 0) * 1000 + turn,
    )


def finish_turn(
    db: Database, job: TurnJob, text_a: str, text_b: str, *, seconds: tuple[float, float] = (0.0, 0.0),
    error: str | None = None,
) -> dict[str, Any]:
    """Store both answers; mark them shown (votable) unless a side failed; flag identity leaks."""
    row_id = next(db.table("battle_turns").pks_and_rows_where("battle_id = ? and turn = ?", [job.battle_id, job.turn]))[0]
    update = {"response_a": text_a, "response_b": text_b, "seconds_a": seconds[0], "seconds_b": seconds[1]}
    if error:
        update["error"] = error
        db.table("battle_turns").update(row_id, update)
        db.table("battles").update(job.battle_id, {"status": "ended", "ended_at": store.now()})
        return {"leaks": {}, "shown": False}
    terms = leak_terms_for(db, job.model_ids)
    leaks = {}
    for side, text, mid in (("a", text_a, job.model_ids[0]), ("b", text_b, job.model_ids[1])):
        found = find_leaks(text, terms)
        if found:
            leaks[side] = found
            db.table("leak_flags").insert(
                {"battle_id": job.battle_id, "turn": job.turn, "side": side, "model_id": mid,
                 "terms": store.dumps(found), "created_at": store.now()},
                replace=True,
            )
    update["shown_at"] = store.now()
    db.table("battle_turns").update(row_id, update)
    return {"leaks": leaks, "shown": True}


def abandon_turn(db: Database, job: TurnJob) -> bool:
    """Undo a turn whose answers never reached the rater (the page closed mid-stream, the server stopped):
    its row goes, so the rater can send again. A turn already shown is kept. True if one was removed."""
    with store.immediate(db):
        cur = db.execute(
            "delete from battle_turns where battle_id = ? and turn = ? and shown_at is null and error is null",
            [job.battle_id, job.turn],
        )
    return cur.rowcount > 0


def cast_vote(
    db: Database, battle_id: int, user_id: int, turn: int, choice: str, comment: str = ""
) -> dict[str, Any]:
    """One vote on a shown turn, in one transaction; the conversation continues from the preferred side."""
    if choice not in CHOICES:
        raise ArenaError(f"a vote is one of {', '.join(CHOICES)}, got {choice!r}")
    winner = CHOICES[choice]
    with store.immediate(db):
        b = _battle(db, battle_id, user_id)
        camp = get_campaign(db, int(b["campaign_id"]))
        if b["status"] != "open":
            raise ArenaError("this battle has ended")
        _require_active(camp)
        rows = list(db.table("battle_turns").rows_where("battle_id = ? and turn = ?", [battle_id, turn], limit=1))
        if not rows or not rows[0]["shown_at"]:
            raise ArenaError(f"turn {turn} has not been shown to you, so it cannot be voted on")
        if db.table("votes").count_where("battle_id = ? and turn = ?", [battle_id, turn]):
            raise ArenaError(f"you have already voted on turn {turn}")
        used = _user_votes(db, camp["id"], user_id)
        if camp["vote_cap"] and used >= camp["vote_cap"]:
            raise ArenaError(f"you have cast all {camp['vote_cap']} votes this campaign allows")
        db.table("votes").insert(
            {"battle_id": battle_id, "turn": turn, "user_id": user_id, "winner": winner,
             "comment": (comment or "").strip()[:2000], "created_at": store.now()}
        )
        side = {"model_a": "a", "model_b": "b"}.get(winner) or random.Random(int(b["seed"] or 0) + turn).choice("ab")
        db.table("battle_turns").update(rows[0]["id"], {"continued_with": side})
        used += 1
        capped = bool(camp["vote_cap"]) and used >= camp["vote_cap"]
        last = turn >= camp["max_turns"] or bool(b.get("gold_id"))  # a gold pair is one turn
        if capped or last:
            db.table("battles").update(battle_id, {"status": "ended", "ended_at": store.now()})
    left = max(camp["vote_cap"] - used, 0) if camp["vote_cap"] else None
    return {"turn": turn, "winner": winner, "continued_with": side, "ended": capped or last, "votes_left": left}


def end_battle(db: Database, battle_id: int, user_id: int) -> dict[str, str]:
    """End the battle (if still open) and reveal which model was A and which was B."""
    b = _battle(db, battle_id, user_id)
    if b["status"] == "open":
        db.table("battles").update(battle_id, {"status": "ended", "ended_at": store.now()})
    return _reveal(db, b)


# -- identity leaks --------------------------------------------------------------------------------


def leak_terms_for(db: Database, model_ids: tuple[int, ...] | list[int]) -> list[str]:
    """Words that would reveal a model: its registry name, the parts of its hub id, and maker names."""
    terms = set(MAKER_TERMS)
    for mid in model_ids:
        row = models.get_model_by_id(db, mid)
        terms.add(row["name"])
        if row["path"] not in models.BUILTIN and "/" in row["path"] and not row["path"].startswith((".", "/", "~")):
            terms.update(row["path"].split("/"))
    return sorted(t for t in terms if len(t) >= 3 and t not in models.BUILTIN)


def find_leaks(text: str, terms: list[str]) -> list[str]:
    """The terms that occur in `text` as whole words, case-insensitively."""
    return sorted(
        t for t in terms if re.search(rf"(?<![\w-]){re.escape(t)}(?![\w-])", text or "", flags=re.IGNORECASE)
    )
