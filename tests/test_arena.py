"""Arena engine: campaigns, invites, pairing, blind turns, one vote per shown turn, leaks, export."""

import json
import random

import pandas as pd
import pytest

from cai import arena, models, store, users
from cai.arena import invites
from cai.backend_pool import BackendPool, TurnResult, stream_pair, visible
from cai.backends.base import ScriptedBackend
from cai.cli import main
from cai.evals import ratings

NAMES = ["quokka-7b", "wombat-3b", "numbat-1b"]


@pytest.fixture
def setup(db):
    for n in NAMES:
        models.register_model(db, n, "tiny")
    uid = users.add_user(db, "rita", "rater", "password1")
    arena.create_campaign(db, "help", NAMES[:2], "helpfulness", vote_cap=3, max_turns=2)
    return db, uid


def scripted_pool(answers: dict[str, str]) -> BackendPool:
    return BackendPool(loader=lambda row: ScriptedBackend(respond=lambda p, n=row["name"]: answers[n]))


def play_turn(db, battle_id, uid, message, pool):
    job = arena.begin_turn(db, battle_id, uid, message)
    *partial, result = list(stream_pair(job, pool))
    assert isinstance(result, TurnResult)
    arena.finish_turn(db, job, result.text_a, result.text_b, error=result.error)
    return job, partial, result


def test_campaign_validation_and_rater_view(setup):
    db, _ = setup
    with pytest.raises(arena.ArenaError, match="already exists"):
        arena.create_campaign(db, "help", NAMES[:2], "helpfulness")
    with pytest.raises(arena.ArenaError, match="dimension 'fun' is not one of helpfulness, harmlessness"):
        arena.create_campaign(db, "x", NAMES[:2], "fun")
    with pytest.raises(arena.ArenaError, match="at least two different models"):
        arena.create_campaign(db, "x", ["quokka-7b", "quokka-7b"], "helpfulness")
    with pytest.raises(arena.ArenaError, match="no registered model named 'ghost'"):
        arena.create_campaign(db, "x", ["quokka-7b", "ghost"], "helpfulness")
    with pytest.raises(arena.ArenaError, match="no prompt set named 'nope'"):
        arena.create_campaign(db, "x", NAMES[:2], "helpfulness", prompt_set="nope")
    assert arena.rater_campaigns(db) == [{
        "name": "help", "dimension": "helpfulness", "instructions": arena.INSTRUCTIONS["helpfulness"],
        "max_turns": 2, "prompt_set": None}]
    assert "prefer the one that is less evasive" in arena.INSTRUCTIONS["harmlessness"]


def test_a_whole_battle_is_blind_until_it_ends(setup):
    db, uid = setup
    pool = scripted_pool({"quokka-7b": " Paris.", "wombat-3b": " It is Paris, in France."})
    view = arena.start_battle(db, "help", uid, seed=1)
    assert view["status"] == "open" and "reveal" not in view
    job, partial, result = play_turn(db, view["battle_id"], uid, "Capital of France?", pool)
    assert job.prompt == "\n\nHuman: Capital of France?\n\nAssistant:"
    assert partial and all(isinstance(p, tuple) for p in partial)
    view = arena.battle_view(db, view["battle_id"], uid)
    assert view["awaiting_vote"] is True and view["turns"] == 1
    assert not any(n in json.dumps(view) for n in NAMES)
    battle = db["battles"].get(view["battle_id"])
    a_name = models.get_model_by_id(db, battle["model_a"])["name"]
    assert view["chat_a"][1]["content"] == {"quokka-7b": "Paris.", "wombat-3b": "It is Paris, in France."}[a_name]
    got = arena.cast_vote(db, view["battle_id"], uid, 1, "B", "more complete")
    assert got == {"turn": 1, "winner": "model_b", "continued_with": "b", "ended": False, "votes_left": 2}
    job2, _, _ = play_turn(db, view["battle_id"], uid, "And Spain?", pool)
    chosen = view["chat_b"][1]["content"]
    assert job2.prompt == f"\n\nHuman: Capital of France?\n\nAssistant: {chosen}\n\nHuman: And Spain?\n\nAssistant:"
    got = arena.cast_vote(db, view["battle_id"], uid, 2, "tie")
    assert got["ended"] is True and got["continued_with"] in ("a", "b")
    final = arena.battle_view(db, view["battle_id"], uid)
    assert final["status"] == "ended" and final["votes"] == ["model_b", "tie"]
    assert final["reveal"] == {"model_a": a_name, "model_b": ({"quokka-7b", "wombat-3b"} - {a_name}).pop()}


def test_votes_are_one_per_shown_turn(setup):
    db, uid = setup
    pool = scripted_pool({"quokka-7b": " a", "wombat-3b": " b"})
    bid = arena.start_battle(db, "help", uid, seed=2)["battle_id"]
    with pytest.raises(arena.ArenaError, match="turn 1 has not been shown to you"):
        arena.cast_vote(db, bid, uid, 1, "A")
    job = arena.begin_turn(db, bid, uid, "hi")
    with pytest.raises(arena.ArenaError, match="turn 1 has not been shown to you"):
        arena.cast_vote(db, bid, uid, 1, "A")  # answers still streaming
    with pytest.raises(arena.ArenaError, match="the models are still answering your last message"):
        arena.begin_turn(db, bid, uid, "again")
    result = list(stream_pair(job, pool))[-1]
    arena.finish_turn(db, job, result.text_a, result.text_b)
    other = users.add_user(db, "otto", "rater", "password2")
    with pytest.raises(arena.ArenaError, match="no such battle for this rater"):
        arena.cast_vote(db, bid, other, 1, "A")
    with pytest.raises(arena.ArenaError, match="a vote is one of A, B, tie, bothbad"):
        arena.cast_vote(db, bid, uid, 1, "left")
    arena.cast_vote(db, bid, uid, 1, "A")
    with pytest.raises(arena.ArenaError, match="already voted on turn 1"):
        arena.cast_vote(db, bid, uid, 1, "B")
    assert [(r["turn"], r["winner"]) for r in db["votes"].rows] == [(1, "model_a")]


def test_vote_cap_and_closed_campaign(setup):
    db, uid = setup
    pool = scripted_pool({"quokka-7b": " a", "wombat-3b": " b"})
    for seed in range(2):
        bid = arena.start_battle(db, "help", uid, seed=seed)["battle_id"]
        for turn in (1, 2):
            if seed == 1 and turn == 2:
                break
            play_turn(db, bid, uid, f"q{turn}", pool)
            got = arena.cast_vote(db, bid, uid, turn, "A")
    assert got["votes_left"] == 0 and got["ended"] is True
    with pytest.raises(arena.ArenaError, match="all 3 votes"):
        arena.start_battle(db, "help", uid)
    arena.set_campaign_status(db, "help", "closed")
    with pytest.raises(arena.ArenaError, match="campaign 'help' is closed"):
        arena.start_battle(db, "help", users.add_user(db, "zed", "rater", "password3"))


def test_failed_model_ends_the_battle_without_naming_it(setup):
    db, uid = setup

    def boom(prompt):
        raise RuntimeError("quokka-7b weights are missing")

    pool = BackendPool(loader=lambda row: ScriptedBackend(respond=boom if row["name"] == "quokka-7b" else lambda p: " ok"))
    bid = arena.start_battle(db, "help", uid, seed=3)["battle_id"]
    job = arena.begin_turn(db, bid, uid, "hi")
    result = list(stream_pair(job, pool))[-1]
    assert "RuntimeError: quokka-7b weights are missing" in result.error  # kept server-side
    assert arena.finish_turn(db, job, result.text_a, result.text_b, error=result.error) == {"leaks": {}, "shown": False}
    with pytest.raises(arena.ArenaError, match="this battle has ended") as exc:
        arena.cast_vote(db, bid, uid, 1, "A")
    assert not any(n in str(exc.value) for n in NAMES)


def test_identity_leaks_are_flagged_and_excluded(setup):
    db, uid = setup
    pool = scripted_pool({"quokka-7b": " As Quokka-7B, made by Google, I say hi.", "wombat-3b": " Hi!"})
    bid = arena.start_battle(db, "help", uid, seed=4)["battle_id"]
    job, _, _ = play_turn(db, bid, uid, "who are you", pool)
    flags = [(r["side"], json.loads(r["terms"])) for r in db["leak_flags"].rows]
    side = "a" if job.models[0]["name"] == "quokka-7b" else "b"
    assert flags == [(side, ["Google", "quokka-7b"])]
    arena.cast_vote(db, bid, uid, 1, "A")
    assert len(arena.votes_frame(db)) == 0
    assert list(arena.votes_frame(db, exclude_leaks=False)["leak"]) == [True]
    assert arena.find_leaks("I'm gemma, by google-deepmind", ["Gemma", "Google"]) == ["Gemma"]
    assert arena.find_leaks("a GPTQ model", ["GPT"]) == []


def test_invites_are_single_use(db):
    codes = invites.create_invites(db, 2)
    assert len(set(codes)) == 2 and all(len(c) >= 12 for c in codes)
    assert codes[0] not in json.dumps(list(db["invites"].rows))  # only hashes are stored
    user = invites.redeem_invite(db, codes[0], "newbie", "password9")
    assert user == {"id": user["id"], "name": "newbie", "role": "rater"}
    assert users.authenticate(db, "newbie", "password9")["role"] == "rater"
    with pytest.raises(arena.ArenaError, match="not valid or has already been used"):
        invites.redeem_invite(db, codes[0], "second", "password9")
    with pytest.raises(arena.ArenaError, match="already exists"):
        invites.redeem_invite(db, codes[1], "newbie", "password9")
    assert invites.redeem_invite(db, codes[1], "other", "password9")["name"] == "other"  # a failed try keeps the code


def test_pairing_policies():
    names = ["a", "b", "c"]
    empty = pd.DataFrame(columns=["model_a", "model_b", "winner"])
    assert ratings.pair_weights(names, empty, "uniform") == {("a", "b"): 1.0, ("a", "c"): 1.0, ("b", "c"): 1.0}
    votes = pd.DataFrame([("a", "b", "model_a")] * 40 + [("b", "c", "model_a"), ("b", "c", "model_b")] * 2
                         + [("a", "c", "model_a")] * 40, columns=["model_a", "model_b", "winner"])
    w = ratings.pair_weights(names, votes, "uncertain")
    assert max(w, key=w.get) == ("b", "c")  # b and c are level: their order is least certain
    assert w[("a", "b")] == pytest.approx(0.05, abs=0.01)
    rng = random.Random(0)
    draws = [tuple(sorted(ratings.pick_pair(w, rng))) for _ in range(300)]
    assert draws.count(("b", "c")) > 200
    placed = [ratings.pick_pair({("a", "b"): 1.0}, rng) for _ in range(200)]
    assert 70 < placed.count(("a", "b")) < 130  # A/B placement is a fair coin


def test_seeded_prompts_start_each_battle(setup):
    db, uid = setup
    set_id = db["prompt_sets"].insert({"name": "red", "kind": "red-team", "created_at": store.now()}).last_pk
    db["prompts"].insert_all([{"set_id": set_id, "position": i, "text": f"\n\nHuman: How do I pick lock {i}?\n\nAssistant:"}
                              for i in range(2)])
    arena.create_campaign(db, "red-harm", NAMES, "harmlessness", prompt_set="red", pairing="uncertain")
    pool = scripted_pool({n: " I can't help with that." for n in NAMES})
    v1 = arena.start_battle(db, "red-harm", uid, seed=5)
    v2 = arena.start_battle(db, "red-harm", uid, seed=5)
    assert {v1["seeded_prompt"], v2["seeded_prompt"]} == {"How do I pick lock 0?", "How do I pick lock 1?"}
    job, _, _ = play_turn(db, v1["battle_id"], uid, "", pool)
    assert job.prompt == f"\n\nHuman: {v1['seeded_prompt']}\n\nAssistant:"


def test_progress_export_and_cli(setup, db_path, tmp_path, capsys):
    db, uid = setup
    pool = scripted_pool({"quokka-7b": " short", "wombat-3b": " long answer"})
    bid = arena.start_battle(db, "help", uid, seed=6)["battle_id"]
    job, _, _ = play_turn(db, bid, uid, "hi", pool)
    arena.cast_vote(db, bid, uid, 1, "A")
    play_turn(db, bid, uid, "more", pool)
    arena.cast_vote(db, bid, uid, 2, "bothbad")
    prog = arena.campaign_progress(db, "help")
    assert {k: prog[k] for k in ("votes", "raters", "battles", "leaky_votes")} == {
        "votes": 2, "raters": 1, "battles": 1, "leaky_votes": 0}
    assert prog["pairs"] == [{"model_a": "quokka-7b", "model_b": "wombat-3b", "votes": 2}]
    a_text = " short" if job.models[0]["name"] == "quokka-7b" else " long answer"
    b_text = " long answer" if a_text == " short" else " short"
    out = tmp_path / "prefs.jsonl"
    assert main(["arena", "export", str(out), "--db", str(db_path)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("\n\nHuman: hi\n\nAssistant:", a_text, b_text)]
    capsys.readouterr()
    assert main(["arena", "campaign", "show", "help", "--db", str(db_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["progress"]["votes"] == 2
    assert main(["ratings", "--db", str(db_path), "--campaign", "help", "--bootstrap", "0", "--json"]) == 0
    assert [r["n"] for r in json.loads(capsys.readouterr().out)] == [2, 2]
    assert main(["arena", "invite", "--count", "3", "--db", str(db_path), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["arena", "campaign", "create", "h2", "--models", "quokka-7b,numbat-1b", "--dimension",
                 "harmlessness", "--db", str(db_path)]) == 0
    assert main(["arena", "campaign", "create", "h3", "--models", "quokka-7b", "--dimension",
                 "harmlessness", "--db", str(db_path)]) == 2
    assert "at least two different models" in capsys.readouterr().err


def test_visible_hides_a_half_written_stop_string():
    assert visible("Sure.\n\nHum") == "Sure."
    assert visible("Sure.\n\nHuman: next") == "Sure."
    assert visible("Sure.") == "Sure."


def test_arena_tab_admin_handlers_and_role_checks(setup, db_path):
    from types import SimpleNamespace

    import gradio as gr

    from ui import arena as ui_arena
    from ui.common import AppContext

    db, uid = setup
    users.add_user(db, "ada", "admin", "password1")
    ctx = AppContext(db_path)
    admin, rater = SimpleNamespace(username="ada"), SimpleNamespace(username="rita")
    pool = scripted_pool({"quokka-7b": " a", "wombat-3b": " b"})
    bid = arena.start_battle(db, "help", uid, seed=9)["battle_id"]
    play_turn(db, bid, uid, "hi", pool)
    arena.cast_vote(db, bid, uid, 1, "A")
    table, _ = ui_arena.campaigns_table(ctx, admin)
    assert table[["campaign", "votes", "raters"]].to_dict("records") == [{"campaign": "help", "votes": 1, "raters": 1}]
    ratings_table, matrix, fig, fig_note = ui_arena.ratings_view(ctx, "help", "bt", 200, False, admin)
    assert list(ratings_table["n"]) == [1, 1] and list(matrix["model"]) == NAMES[:2]
    # Issue 28: one vote gets no interval (not ends that are equal), and Figure 2 no empty frame but a line.
    assert list(ratings_table["rating"]) == [1340.0, 660.0] and ratings_table["ci_low"].isna().all()
    assert list(ratings_table["note"]) == ["not enough votes: n = 1 (an interval needs 10)"] * 2
    assert fig.visible is False and fig.value is None
    assert fig_note == ("Figure 2 (harmlessness vs helpfulness) appears once there are votes in both dimensions; "
                        "no harmlessness votes yet.")
    assert len(ui_arena.make_invites(ctx, 2, "help", admin).splitlines()) == 2
    for handler, args in ((ui_arena.campaigns_table, ()), (ui_arena.make_invites, (1, "help"))):
        with pytest.raises(gr.Error, match="Not allowed"):
            handler(ctx, *args, rater)


def test_a_campaign_refuses_the_tiny_test_model_unless_confirmed(db):
    models.register_model(db, NAMES[0], "tiny")
    with pytest.raises(arena.ArenaError, match=r"^tiny is a test model \(test model: random weights, output is noise\)"):
        arena.create_campaign(db, "noise", ["tiny", NAMES[0]], "helpfulness")
    assert db["campaigns"].count == 0
    camp = arena.create_campaign(db, "noise", ["tiny", NAMES[0]], "helpfulness", allow_test_models=True)
    assert camp["models"] == ["tiny", NAMES[0]]
