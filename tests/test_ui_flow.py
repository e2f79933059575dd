"""Issue #28, forms and flow (items 8-14) without a browser: role-filtered pickers, the only choice
preselected, chat streaming with a loading notice, the arena's vote race / end warning / panels, invite
links, the HHH upload and its sample file, and what a setting costs on this machine."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cai import arena, models, users
from cai.backend_pool import BackendPool
from cai.backends.base import ScriptedBackend
from ui import arena as ui_arena
from ui.common import AppContext

NAMES = ["quokka-7b", "wombat-3b"]


@pytest.fixture
def arena_setup(db, db_path):
    for n in NAMES:
        models.register_model(db, n, "tiny")
    users.add_user(db, "rita", "rater", "password1")
    arena.create_campaign(db, "help", NAMES, "helpfulness", max_turns=2)
    return db, AppContext(db_path)


def scripted(answers: dict[str, str]) -> BackendPool:
    return BackendPool(loader=lambda row: ScriptedBackend(respond=lambda p, n=row["name"]: answers[n]))


def signed_in(ctx: AppContext) -> dict:
    return ui_arena.sign_in(ctx, {}, "rita", "password1", SimpleNamespace(client=SimpleNamespace(host="10.0.0.1")))


# -- item 11: the arena ---------------------------------------------------------------------------------


def test_the_finished_answers_never_clear_a_choice_and_the_choice_is_off_while_answering(arena_setup):
    """The race: the stream's last update reset the radio to empty as it enabled the vote button, so a choice
    made while the last words arrived was wiped and the vote refused ("choose one of ...")."""
    db, ctx = arena_setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    ident = ui_arena.page_user(ctx)
    state = ui_arena.start(ctx, ident, signed_in(ctx), "help")[0]
    out = list(ui_arena.send(ctx, pool, ident, state, "Capital of France?"))
    first, last = out[0][4], out[-1][4]
    assert (first.value, first.interactive) == (None, False)  # cleared and disabled when the turn starts
    assert last.constructor_args == {"interactive": True}  # enabled, no value: what the rater picks stays
    status = ui_arena.vote(ctx, ident, state, "A is better", "")[0]
    assert status.startswith("Vote recorded: A is better")
    assert "Both models continue from answer A" in status


def test_panels_show_what_each_model_sees_once_the_conversation_goes_on(arena_setup):
    db, ctx = arena_setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    ident = ui_arena.page_user(ctx)
    state = ui_arena.start(ctx, ident, signed_in(ctx), "help")[0]
    list(ui_arena.send(ctx, pool, ident, state, "Capital of France?"))
    battle = next(db["battles"].rows)
    name_a = models.get_model_by_id(db, battle["model_a"])["name"]
    answer = {"quokka-7b": "Paris.", "wombat-3b": "Rome."}
    own_a, own_b = answer[name_a], answer[({*NAMES} - {name_a}).pop()]
    view = arena.battle_view(db, battle["id"], battle["user_id"])
    assert (view["chat_a"][1]["content"], view["chat_b"][1]["content"]) == (own_a, own_b)  # before a vote: own
    ui_arena.vote(ctx, ident, state, "A is better", "")
    out = list(ui_arena.send(ctx, pool, ident, state, "And Spain?"))
    chat_b = out[0][1]  # the first update of turn 2: panel B already shows the answer B was given as its own
    assert [m["content"] for m in chat_b[:2]] == ["Capital of France?", own_a]
    view = arena.battle_view(db, battle["id"], battle["user_id"])
    assert [m["content"] for m in view["chat_b"]] == ["Capital of France?", own_a, "And Spain?", own_b]
    assert [m["content"] for m in view["chat_a"]] == ["Capital of France?", own_a, "And Spain?", own_a]
    turn2 = list(db["battle_turns"].rows_where("turn = 2"))[0]
    assert turn2["prompt"] == f"\n\nHuman: Capital of France?\n\nAssistant: {own_a}\n\nHuman: And Spain?\n\nAssistant:"


def test_ending_a_battle_with_an_unvoted_turn_asks_first(arena_setup):
    db, ctx = arena_setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    ident = ui_arena.page_user(ctx)
    state = ui_arena.start(ctx, ident, signed_in(ctx), "help")[0]
    list(ui_arena.send(ctx, pool, ident, state, "hi"))
    state, status, *_, end_btn = ui_arena.end(ctx, ident, state)
    assert status.startswith("⚠️ **Turn 1 has no vote yet.**") and end_btn.value == "End without voting"
    assert next(db["battles"].rows)["status"] == "open"
    state, status, reveal, *_, end_btn = ui_arena.end(ctx, ident, state)
    assert status.startswith("**Battle over.**") and "Model A was" in reveal
    assert next(db["battles"].rows)["status"] == "ended" and db["votes"].count == 0
    # a voted battle ends on the first press
    state = ui_arena.start(ctx, ident, state, "help")[0]
    list(ui_arena.send(ctx, pool, ident, state, "hi"))
    ui_arena.vote(ctx, ident, state, "Tie", "")
    status = ui_arena.end(ctx, ident, state)[1]
    assert status.startswith("**Battle over.**")
