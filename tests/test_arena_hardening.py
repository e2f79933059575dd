"""Arena and sign-in hardening (issues #17, #13, #16, #18): identities re-checked on every call, sessions
ended by a password change or removal, login lockout, closed campaigns, rolled-back turns, text-only model
output, incremental decoding, turn markers, invite expiry and binding, and the panel's vote controls."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import gradio as gr
import pytest

from cai import arena, models, store, users
from cai.arena import invites
from cai.backend_pool import (
    TURN_STOPS,
    BackendPool,
    IncrementalDecoder,
    TurnResult,
    complete_text,
    stream_pair,
    stream_text,
)
from cai.backends.base import SamplingParams, ScriptedBackend
from ui import arena as ui_arena
from ui.common import AppContext, chat_safe

NAMES = ["quokka-7b", "wombat-3b"]
REFUSED = "⚠️ **Not done:**"


@pytest.fixture
def setup(db, db_path):
    for n in NAMES:
        models.register_model(db, n, "tiny")
    uid = users.add_user(db, "rita", "rater", "password1")
    arena.create_campaign(db, "help", NAMES, "helpfulness", max_turns=2)
    return db, uid, AppContext(db_path)


def scripted(answers: dict[str, str]) -> BackendPool:
    return BackendPool(loader=lambda row: ScriptedBackend(respond=lambda p, n=row["name"]: answers[n]))


def signed_in(ctx: AppContext, name: str = "rita", password: str = "password1") -> dict:
    return ui_arena.sign_in(ctx, {}, name, password, SimpleNamespace(client=SimpleNamespace(host="10.0.0.1")))


def run_send(ctx, pool, state, message):
    return list(ui_arena.send(ctx, pool, ui_arena.page_user(ctx), state, message))


# -- #17.1 / #13.2: the rater page re-checks the user on every call ---------------------------------


@pytest.mark.parametrize("change", ["remove", "demote", "passwd"])
def test_a_removed_demoted_or_repassworded_rater_can_no_longer_send_or_vote(setup, change):
    db, uid, ctx = setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    ident = ui_arena.page_user(ctx)
    state = signed_in(ctx)
    state = ui_arena.start(ctx, ident, state, "help")[0]
    run_send(ctx, pool, state, "Capital of France?")
    {"remove": lambda: users.remove_user(db, "rita"), "demote": lambda: users.set_role(db, "rita", "viewer"),
     "passwd": lambda: users.set_password(db, "rita", "password2")}[change]()
    status = ui_arena.vote(ctx, ident, state, "A is better", "")[0]
    assert status.startswith(REFUSED) and "your session has ended" in status
    out = run_send(ctx, pool, state, "again")
    assert len(out) == 1 and "your session has ended" in out[0][3]
    assert ui_arena.start(ctx, ident, state, "help")[4].startswith(REFUSED)
    assert db["votes"].count == 0


def test_a_password_change_or_removal_ends_workbench_sessions(db, db_path):
    from ui.app import Sessions

    users.add_user(db, "ada", "admin", "password1")
    users.add_user(db, "bob", "viewer", "password1")
    sessions = Sessions(db_path)
    signed = {who: sessions.open(users.authenticate(db, name, "password1"))
              for who, name in (("t-ada", "ada"), ("t-bob", "bob"), ("t-bob2", "bob"))}
    assert [(sessions.user(signed[t]) or {}).get("name") for t in ("t-ada", "t-bob", "t-bob2")] == ["ada", "bob", "bob"]
    assert sessions.user("nope") is None and sessions.user(None) is None
    users.set_password(db, "ada", "password9")
    users.remove_user(db, "bob")
    assert [sessions.user(signed[t]) for t in ("t-ada", "t-bob", "t-bob2")] == [None, None, None]
    assert sessions._tokens == {}  # ended, not just hidden
    again = sessions.open(users.authenticate(db, "ada", "password9"))  # a new sign-in after the change works
    assert sessions.user(again)["name"] == "ada"


# -- #17.7 / #13.2: login lockout, logging, timing, off the event loop -------------------------------


def test_lockout_wait_is_a_sliding_window():
    assert users.lockout_wait([], 5, 900, 1000.0) == 0.0
    assert users.lockout_wait([100.0, 200, 300, 400], 5, 900, 1000.0) == 0.0
    assert users.lockout_wait([100.0, 200, 300, 400, 500], 5, 900, 1000.0) == 0.0 + 100 + 900 - 1000
    assert users.lockout_wait([100.0, 200, 300, 400, 500, 600], 5, 900, 1000.0) == 200 + 900 - 1000
    assert users.lockout_wait([10.0, 200, 300, 400, 500], 5, 900, 1000.0) == 0.0  # the oldest has aged out


def test_failed_logins_lock_a_name_at_an_address_slow_the_name_elsewhere_and_every_attempt_is_logged(db):
    users.add_user(db, "ada", "admin", "password1")
    policy = users.LoginPolicy(per_name=3, per_address=5, window_s=600, backoff_after=3, backoff_s=10,
                               backoff_max_s=40)
    t = 1000.0
    for _ in range(3):
        assert users.attempt_login(db, "ada", "wrong-pass", "1.1.1.1", policy=policy, now=t).message == \
            "Wrong name or password."
    locked = users.attempt_login(db, "ada", "password1", "1.1.1.1", policy=policy, now=t + 1)
    assert locked.user is None and locked.message == "Too many failed sign-ins: try again in 600 s."
    # #25.3: from another address the name is slowed (10 s after its last check, doubling), never locked
    slowed = users.attempt_login(db, "ada", "password1", "2.2.2.2", policy=policy, now=t + 1)
    assert slowed.user is None and slowed.message == "Too many failed sign-ins: try again in 10 s."
    assert users.attempt_login(db, "ada", "nope-nope", "2.2.2.2", policy=policy, now=t + 11).message == \
        "Wrong name or password."
    assert users.attempt_login(db, "ada", "password1", "2.2.2.2", policy=policy, now=t + 20).retry_after == 11.0
    assert users.attempt_login(db, "ada", "password1", "2.2.2.2", policy=policy, now=t + 31).user["name"] == "ada"
    # Per address: guessing many names from one address locks the address, for known names too.
    for i in range(5):
        users.attempt_login(db, f"ghost{i}", "x", "4.4.4.4", policy=policy, now=t + 602)
    assert users.attempt_login(db, "ada", "password1", "4.4.4.4", policy=policy, now=t + 603).user is None
    assert users.attempt_login(db, "ada", "password1", "3.3.3.3", policy=policy, now=t + 603).user is not None
    rows = [(r["name"], r["address"], r["ok"], r["reason"]) for r in db["login_attempts"].rows]
    assert rows == [("ada", "1.1.1.1", 0, "wrong")] * 3 + [
        ("ada", "1.1.1.1", 0, "locked"), ("ada", "2.2.2.2", 0, "backoff"), ("ada", "2.2.2.2", 0, "wrong"),
        ("ada", "2.2.2.2", 0, "backoff"), ("ada", "2.2.2.2", 1, "ok")] + [
        (f"ghost{i}", "4.4.4.4", 0, "wrong") for i in range(5)] + [
        ("ada", "4.4.4.4", 0, "locked"), ("ada", "3.3.3.3", 1, "ok")]


def test_backoff_doubles_per_failure_up_to_its_cap():
    policy = users.LoginPolicy(backoff_after=5, backoff_s=1, backoff_max_s=60)
    assert [users.backoff_wait(k, 100.0, policy, 100.0) for k in (0, 4, 5, 6, 7, 10, 11, 12, 500)] == [
        0.0, 0.0, 1.0, 2.0, 4.0, 32.0, 60.0, 60.0, 60.0]
    assert users.backoff_wait(6, 100.0, policy, 101.5) == 0.5 and users.backoff_wait(9, None, policy, 1.0) == 0.0


def test_cai_users_unlock_lifts_the_lockout_of_a_name(db, db_path, capsys):
    from cai.cli import main as cai

    users.add_user(db, "ada", "admin", "password1")
    for _ in range(5):
        users.attempt_login(db, "ada", "wrong-pass", "1.1.1.1")
    assert users.attempt_login(db, "ada", "password1", "1.1.1.1").message.startswith("Too many failed sign-ins")
    assert cai(["users", "unlock", "ada", "--db", str(db_path)]) == 0
    assert capsys.readouterr().out == "unlocked 'ada' (5 recent failed sign-ins no longer count)\n"
    assert users.attempt_login(db, "ada", "password1", "1.1.1.1").user["name"] == "ada"
    assert [r["reason"] for r in db["login_attempts"].rows] == ["wrong"] * 5 + ["locked", "unlocked", "ok"]


def test_an_unknown_name_costs_one_scrypt_like_a_known_one(db, monkeypatch):
    users.add_user(db, "ada", "admin", "password1")
    calls = []
    real = users.verify_password
    monkeypatch.setattr(users, "verify_password", lambda p, h: calls.append(h) or real(p, h))
    assert users.authenticate(db, "nobody", "password1") is None
    assert users.authenticate(db, "ada", "password2") is None
    assert len(calls) == 2 and all(h.startswith("scrypt$16384$8$1$") for h in calls)


def test_the_login_check_runs_in_a_worker_thread_with_the_client_address(db, db_path, monkeypatch):
    from fastapi.testclient import TestClient

    from ui.app import server

    users.add_user(db, "ada", "admin", "password1")
    seen = []
    real = users.attempt_login

    def spy(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(users, "attempt_login", spy)
    with TestClient(server(db_path, "tiny")) as client:
        assert client.post("/login", data={"username": "ada", "password": "password1"}).json() == {
            "success": True, "home": "/"}
        assert client.post("/login", data={"username": "ada", "password": "nope"}).json() == {
            "detail": "Wrong name or password."}
    assert seen == ["AnyIO worker thread"] * 2  # not the event loop: a scrypt there would stall every request
    assert [(r["name"], r["address"], r["ok"]) for r in store.connect(db_path)["login_attempts"].rows] == [
        ("ada", "testclient", 1), ("ada", "testclient", 0)]


def test_the_rater_page_sign_in_is_throttled(setup):
    db, _, ctx = setup
    for _ in range(5):
        with pytest.raises(gr.Error, match="Wrong name or password"):
            ui_arena.sign_in(ctx, {}, "rita", "nope-nope", SimpleNamespace(client=SimpleNamespace(host="1.2.3.4")))
    with pytest.raises(gr.Error, match="Too many failed sign-ins"):
        signed_in(ctx)
    assert db["login_attempts"].count == 6


# -- #17.3: no uploads on the rater page ---------------------------------------------------------------


def test_the_rater_page_refuses_uploads_and_the_workbench_needs_a_login(db_path):
    from fastapi.testclient import TestClient

    from ui.app import server

    with TestClient(server(db_path, "tiny")) as client:
        resp = client.post("/arena/gradio_api/upload", files={"files": ("x.bin", b"\0" * 100_000)})
        assert (resp.status_code, resp.text) == (403, "The rater page takes no uploads.")
        assert client.post("/gradio_api/upload", files={"files": ("x.bin", b"x")}).status_code == 401
        assert client.get("/arena/").status_code == 200


# -- #17.5: a closed campaign stops its open battles ------------------------------------------------


def test_closing_a_campaign_stops_open_battles(setup):
    db, uid, ctx = setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    bid = arena.start_battle(db, "help", uid, seed=1)["battle_id"]
    job = arena.begin_turn(db, bid, uid, "hi")
    result = list(stream_pair(job, pool))[-1]
    arena.finish_turn(db, job, result.text_a, result.text_b)
    arena.set_campaign_status(db, "help", "closed")
    closed = "campaign 'help' has been closed: it takes no more messages or votes. Thank you!"
    with pytest.raises(arena.ArenaError) as exc:
        arena.cast_vote(db, bid, uid, 1, "A")
    assert str(exc.value) == closed
    bid2 = None
    arena.set_campaign_status(db, "help", "active")
    bid2 = arena.start_battle(db, "help", uid, seed=2)["battle_id"]
    arena.set_campaign_status(db, "help", "closed")
    with pytest.raises(arena.ArenaError) as exc:
        arena.begin_turn(db, bid2, uid, "hello")
    assert str(exc.value) == closed
    assert db["votes"].count == 0


# -- #17.6: a stream that ends early leaves no stuck turn ----------------------------------------------


def test_a_send_that_stops_mid_answer_is_rolled_back_and_can_be_retried(setup):
    db, uid, ctx = setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    ident = ui_arena.page_user(ctx)
    state = ui_arena.start(ctx, ident, signed_in(ctx), "help")[0]
    gen = ui_arena.send(ctx, pool, ident, state, "Capital of France?")
    first = next(gen)
    assert first[3].startswith(ui_arena.ANSWERING) and db["battle_turns"].count == 1
    gen.close()  # what Gradio does when the page goes away mid-stream
    assert db["battle_turns"].count == 0
    out = run_send(ctx, pool, state, "Capital of France?")  # the rater retries
    assert out[-1][3] == "Turn 1 of 2: which response is better? Vote below."
    assert [r["shown_at"] is not None for r in db["battle_turns"].rows] == [True]


def test_a_turn_left_by_a_stopped_server_is_retried_once_stale(setup):
    db, uid, _ = setup
    bid = arena.start_battle(db, "help", uid, seed=1)["battle_id"]
    arena.begin_turn(db, bid, uid, "hi")
    with pytest.raises(arena.ArenaError, match="still answering your last message"):
        arena.begin_turn(db, bid, uid, "hi")
    db.execute("update battle_turns set created_at = '2020-01-01T00:00:00.000+00:00'")
    db.conn.commit()
    assert arena.begin_turn(db, bid, uid, "hi").turn == 1
    assert db["battle_turns"].count == 1


# -- #17.4: model output is text -------------------------------------------------------------------


IMG = '<img src="http://127.0.0.1:9/track.png"> ![logo](http://127.0.0.1:9/logo.png) a & b'


def test_model_output_reaches_the_chat_as_text():
    assert chat_safe(IMG) == ('&lt;img src="http://127.0.0.1:9/track.png"&gt; !\\[logo](http://127.0.0.1:9/logo.png)'
                              " a &amp; b")
    assert chat_safe(IMG, markdown=False) == (
        '&lt;img src="http://127.0.0.1:9/track.png"&gt; ![logo](http://127.0.0.1:9/logo.png) a &amp; b')


def test_arena_and_models_chat_escape_model_html(setup):
    from ui import models as ui_models

    db, _, ctx = setup
    pool = scripted({"quokka-7b": " " + IMG, "wombat-3b": " <b>bold</b>"})
    state = ui_arena.start(ctx, ui_arena.page_user(ctx), signed_in(ctx), "help")[0]
    out = run_send(ctx, pool, state, "<i>hi</i>")
    texts = [m["content"] for chat in out[-1][:2] for m in chat]
    assert "&lt;i&gt;hi&lt;/i&gt;" in texts and "&lt;b&gt;bold&lt;/b&gt;" in texts
    assert not any("<img" in t or "<b>" in t or "![" in t for t in texts)
    admin = SimpleNamespace(username="ada")
    users.add_user(db, "ada", "admin", "password1")
    mid = models.get_model(db, "quokka-7b")["id"]
    history, _ = ui_models.chat(ctx, pool, mid, [], "<i>hi</i>", 64, 0.0, admin)
    assert [m["content"] for m in history] == ["&lt;i&gt;hi&lt;/i&gt;", chat_safe(IMG.strip(), markdown=False)]
    # The history the Chatbot hands back is unescaped before it becomes the next prompt.
    assert "<i>hi</i>" in ui_models.chat_prompt(history, "next")


# -- #18.1: incremental decoding never shows half a character ----------------------------------------


def test_incremental_decoding_never_shows_a_split_character():
    from cai import backends

    tok = backends.load("tiny").tokenizer
    text = "Don’t say “café” — 日本語 🙂 ok"
    ids = tok.encode(text, add_special_tokens=False)
    naive = "".join(tok.decode([i]) for i in ids)
    assert "\ufffd" in naive  # the tokenizer really does split characters across tokens
    decoder = IncrementalDecoder(lambda x: tok.decode(x, skip_special_tokens=True))
    shown = [decoder.push([i]) for i in ids]
    assert not any("\ufffd" in s for s in shown)
    assert all(b.startswith(a) for a, b in zip(shown, shown[1:], strict=False))
    assert shown[-1] == text
    assert complete_text("ab\ufffd") == "ab"


def test_a_streamed_tiny_model_answer_has_no_replacement_character():
    from cai import backends

    backend = backends.load("tiny")
    texts = list(stream_text(backend, "\n\nHuman: hi\n\nAssistant:",
                             SamplingParams(max_new_tokens=48, temperature=1.0, seed=3, stop=TURN_STOPS)))
    assert texts and not any("\ufffd" in t for t in texts)


# -- #18.2: answers stop at turn markers ------------------------------------------------------------


def test_arena_answers_stop_at_either_turn_marker(setup):
    db, uid, _ = setup
    pool = scripted({"quokka-7b": " Sure.\nAssistant: made-up turn", "wombat-3b": " Fine.\n\nHuman: fake"})
    job = arena.begin_turn(db, arena.start_battle(db, "help", uid, seed=1)["battle_id"], uid, "hi")
    *partial, result = list(stream_pair(job, pool))
    assert isinstance(result, TurnResult) and {result.text_a, result.text_b} == {"Sure.", "Fine."}
    assert not any("Assistant:" in a or "Human:" in b for a, b in partial)


# -- #16.4, #18.6: the panel's controls ---------------------------------------------------------------


def test_voting_is_enabled_only_once_both_answers_are_complete(setup):
    db, _, ctx = setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    ident = ui_arena.page_user(ctx)
    started = ui_arena.start(ctx, ident, signed_in(ctx), "help")
    state, vote_btn = started[0], started[7]
    assert vote_btn.interactive is False and started[6].value is None
    out = run_send(ctx, pool, state, "hi")
    # Off while the (not yet loaded) models load and answer, on once both answers are complete.
    assert [o[5].interactive for o in out if isinstance(o[5], gr.Button)] == [False, False, True]
    assert out[0][4].value is None  # the vote choice resets at each turn
    status, comment, reveal, *_, choice, btn = ui_arena.vote(ctx, ident, state, "A is better", "ok")
    assert status.startswith("Vote recorded: A is better") and btn.interactive is False
    assert choice.value is None and reveal == ""


def test_a_message_sent_while_answering_is_refused_with_a_notice_and_kept(setup):
    db, _, ctx = setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    ident = ui_arena.page_user(ctx)
    state = ui_arena.start(ctx, ident, signed_in(ctx), "help")[0]
    gen = ui_arena.send(ctx, pool, ident, state, "first")
    next(gen)
    second = run_send(ctx, pool, state, "second")
    assert len(second) == 1
    chat_a, chat_b, message, status, *_ = second[0]
    assert status == f"{REFUSED} the models are still answering your last message: wait for both answers, then vote"
    assert message == gr.skip() and chat_a == gr.skip()  # the typed message stays in the box
    list(gen)


def test_the_reveal_names_both_models_above_their_panels(setup):
    db, _, ctx = setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    ident = ui_arena.page_user(ctx)
    state, *panels = ui_arena.start(ctx, ident, signed_in(ctx), "help")[:3]
    assert [(p.label, p.visible) for p in panels] == [("Model A", True), ("Model B", True)]  # hidden until a start
    run_send(ctx, pool, state, "hi")
    state = ui_arena.end(ctx, ident, state)[0]  # the last turn has no vote: the first press only warns
    state, status, reveal, chat_a, chat_b, btn, end_btn = ui_arena.end(ctx, ident, state)
    battle = next(db["battles"].rows)
    a, b = (models.get_model_by_id(db, battle[k])["name"] for k in ("model_a", "model_b"))
    assert reveal == f'<div class="cai-reveal">Model A was <b>{a}</b> · Model B was <b>{b}</b></div>'
    assert (chat_a.label, chat_b.label) == (f"Model A: {a}", f"Model B: {b}")
    assert status.startswith("**Battle over.**")


def test_new_campaigns_reach_the_list_and_an_empty_list_says_how_to_make_one(db, db_path):
    ctx = AppContext(db_path)
    uid = users.add_user(db, "rita", "rater", "password1")
    assert ui_arena.instructions_md(ctx, None, uid) == ui_arena.NO_CAMPAIGNS
    assert "cai arena campaign create" in ui_arena.NO_CAMPAIGNS
    state = signed_in(ctx)
    for n in NAMES:
        models.register_model(db, n, "tiny")
    arena.create_campaign(db, "fresh", NAMES, "helpfulness")
    got = ui_arena.fresh_campaigns(ctx, ui_arena.page_user(ctx), state, None)
    assert (got.choices, got.value) == ([("fresh", "fresh")], "fresh")


# -- #13.2: invites expire and are bound to their campaign -------------------------------------------


def test_invites_expire_and_are_bound_to_their_campaign(setup):
    db, _, ctx = setup
    arena.create_campaign(db, "other", NAMES, "harmlessness")
    old = invites.create_invites(db, 1, expires_days=1)[0]
    db.execute("update invites set expires_at = '2020-01-01T00:00:00.000+00:00'")
    db.conn.commit()
    with pytest.raises(arena.ArenaError, match="that invite code has expired: ask for a new one"):
        invites.redeem_invite(db, old, "late", "password1")
    with pytest.raises(arena.ArenaError, match="invite expiry must be more than 0"):
        invites.create_invites(db, 1, expires_days=0)
    code = invites.create_invites(db, 1, campaign="other")[0]
    user = invites.redeem_invite(db, code, "bound", "password1")
    assert [c["name"] for c in arena.rater_campaigns(db, user["id"])] == ["other"]
    assert [c["name"] for c in arena.rater_campaigns(db)] == ["help", "other"]
    with pytest.raises(arena.ArenaError, match="your invite was for another campaign"):
        arena.start_battle(db, "help", user["id"])
    assert arena.start_battle(db, "other", user["id"])["campaign"] == "other"
    arena.set_campaign_status(db, "other", "closed")
    code2 = invites.create_invites(db, 1, campaign="help")[0]
    arena.set_campaign_status(db, "help", "closed")
    with pytest.raises(arena.ArenaError, match="the campaign this invite code was made for has been closed"):
        invites.redeem_invite(db, code2, "late2", "password1")


def test_invite_cli_takes_an_expiry(setup, db_path, capsys):
    from cai.cli import main

    assert main(["arena", "invite", "--count", "2", "--campaign", "help", "--expires-days", "0.5",
                 "--db", str(db_path)]) == 0
    db = store.connect(db_path)
    rows = list(db["invites"].rows)
    assert len(rows) == 2 and all(r["campaign_id"] == 1 for r in rows)
    hours = [(time.mktime(time.strptime(r["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
              - time.mktime(time.strptime(r["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))) / 3600 for r in rows]
    assert all(abs(h - 12) < 0.01 for h in hours)


def test_the_admin_tables_have_real_headers_and_the_admin_section_opens_when_empty(db, db_path):
    ctx = AppContext(db_path)
    with gr.Blocks() as demo:
        ui_arena.build(ctx, BackendPool())
    frames = {b.label: b.value["headers"] for b in demo.blocks.values() if isinstance(b, gr.Dataframe)}
    assert frames["Votes per pair"] == ["model_a", "model_b", "votes"]
    assert frames["Campaigns"] == ui_arena.CAMPAIGN_COLUMNS
    users.add_user(db, "ada", "admin", "password1")
    admin = SimpleNamespace(username="ada")
    assert ui_arena.admin_visible(ctx, admin).open is True
    for n in NAMES:
        models.register_model(db, n, "tiny")
    arena.create_campaign(db, "help", NAMES, "helpfulness")
    assert ui_arena.admin_visible(ctx, admin).open is False
    assert ui_arena.admin_visible(ctx, SimpleNamespace(username="nobody")).visible is False


# -- #25.5: rater messages are capped per campaign and by the models' context ------------------------


def test_a_message_over_the_campaigns_cap_is_refused_and_nothing_is_stored(setup):
    db, _, ctx = setup
    pool = scripted({"quokka-7b": " Paris.", "wombat-3b": " Rome."})
    state = ui_arena.start(ctx, ui_arena.page_user(ctx), signed_in(ctx), "help")[0]
    out = run_send(ctx, pool, state, "x" * 4001)
    assert len(out) == 1 and out[0][3] == (f"{REFUSED} your message is 4,001 characters long; this campaign takes "
                                           "at most 4,000: shorten it")
    assert db["battle_turns"].count == 0
    run_send(ctx, pool, state, "y" * 4000)
    assert [len(r["prompt"]) for r in db["battle_turns"].rows] == [len("\n\nHuman: \n\nAssistant:") + 4000]
    with pytest.raises(arena.ArenaError, match="max_message_chars: must be <= 100000, got 10000000"):
        arena.create_campaign(db, "big", NAMES, "helpfulness", max_message_chars=10**7)


def test_a_message_that_does_not_fit_the_models_context_is_refused(db, db_path):
    for n in NAMES:
        models.register_model(db, n, "tiny")  # in process: max_position_embeddings 2048
    users.add_user(db, "rita", "rater", "password1")
    arena.create_campaign(db, "long", NAMES, "helpfulness", max_message_chars=100_000, allow_test_models=True)
    ctx = AppContext(db_path)
    state = ui_arena.start(ctx, ui_arena.page_user(ctx), signed_in(ctx), "long")[0]
    out = run_send(ctx, BackendPool(), state, " ".join(f"w{i}" for i in range(3000)))
    # The models load to count the tokens: the page says so first, then refuses.
    assert len(out) == 2 and out[0][3].startswith(f"{ui_arena.ANSWERING} Loading the model")
    assert out[1][3].startswith(f"{REFUSED} this conversation (")
    assert out[1][3].endswith("tokens) and an answer (128 tokens) do not fit a model's context of 2,048 tokens: "
                              "send a shorter message or start a new battle")
    assert db["battle_turns"].count == 0


# -- #25.11: wrong invite codes are rate-limited per address -------------------------------------------


def test_wrong_invite_codes_are_limited_per_address_and_logged(db):
    code = invites.create_invites(db, 1)[0]
    for i in range(10):
        with pytest.raises(arena.ArenaError, match="not valid"):
            invites.redeem_invite(db, f"guess-{i}", f"g{i}", "password1", "6.6.6.6", now=1000.0 + i)
    with pytest.raises(arena.ArenaError, match=r"^too many wrong invite codes: try again in 891 s$"):
        invites.redeem_invite(db, code, "real", "password1", "6.6.6.6", now=1010.0)  # even a good code
    with pytest.raises(arena.ArenaError, match="at least 8 characters"):  # not a wrong code: not counted
        invites.redeem_invite(db, code, "real", "short", "7.7.7.7", now=1010.0)
    assert invites.redeem_invite(db, code, "real", "password1", "7.7.7.7", now=1011.0)["name"] == "real"
    reasons = [(r["address"], r["reason"]) for r in db["login_attempts"].rows_where("name = ?", [invites.INVITE])]
    assert reasons == [("6.6.6.6", "invite-wrong")] * 10 + [
        ("6.6.6.6", "invite-locked"), ("7.7.7.7", "invite-refused"), ("7.7.7.7", "invite-ok")]
    assert invites.redeem_invite(db, invites.create_invites(db, 1)[0], "later", "password1", "6.6.6.6",
                                 now=1901.0)["name"] == "later"  # the oldest failure aged out
