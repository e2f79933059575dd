"""Rater quality: agreement with others and Krippendorff's alpha by hand, flags, gold pairs, exclusions, export."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from cai import arena, models, store, users
from cai.arena import raters as arena_raters
from cai.arena.export import conv_metadata, markdown_counts
from cai.cli import main
from cai.evals import raters as R
from cai.evals import ratings

NAMES = ["quokka-7b", "wombat-3b"]


def shared_votes() -> pd.DataFrame:
    rows = [("i1", "r1", "x"), ("i1", "r2", "x"), ("i2", "r1", "x"), ("i2", "r2", "y"),
            ("i3", "r1", "y"), ("i3", "r2", "y"), ("i3", "r3", "y")]
    return pd.DataFrame(rows, columns=["item", "rater", "label"])


def test_majority_agreement_leave_one_out_by_hand():
    # r1: i1 others say x (agree), i2 others say y (disagree), i3 others y (agree) -> 2/3. r3 only shares i3.
    assert R.majority_agreement(shared_votes()) == {
        "r1": {"shared": 3, "agreement": 0.6667}, "r2": {"shared": 3, "agreement": 0.6667},
        "r3": {"shared": 1, "agreement": 1.0}}
    # An item whose other votes split evenly has no majority: skipped.
    split = pd.DataFrame([("i", "a", "x"), ("i", "b", "x"), ("i", "c", "y")], columns=["item", "rater", "label"])
    assert R.majority_agreement(split)["a"] == {"shared": 0, "agreement": None}


def test_krippendorff_alpha_by_hand():
    # Coincidences: i1 (x,x) x2 -> o_xx = 2; i2 (x,y),(y,x) -> o_xy = o_yx = 1; i3 six (y,y) pairs / 2 -> o_yy = 3.
    # n_x = 3, n_y = 4, n = 7; D_o = 2; sum_{c!=k} n_c n_k = 24 -> alpha = 1 - 6 * 2 / 24 = 0.5.
    assert R.krippendorff_alpha(shared_votes()) == {"alpha": 0.5, "items": 3, "votes": 7}
    agree = pd.DataFrame([("i1", "a", "x"), ("i1", "b", "x"), ("i2", "a", "y"), ("i2", "b", "y")],
                         columns=["item", "rater", "label"])
    assert R.krippendorff_alpha(agree)["alpha"] == 1.0
    assert R.krippendorff_alpha(shared_votes().iloc[:1])["alpha"] is None  # no item with two votes


def test_suspicious_rater_flags_state_their_thresholds():
    a_fan = [("fan", "model_a", 2.0)] * 9 + [("fan", "model_b", 1.0)]
    fine = [("ok", w, 20.0) for w in ["model_a", "model_b"] * 5] + [("ok", "tie", None)]
    got = R.flags(pd.DataFrame(a_fan + fine, columns=["rater", "winner", "seconds"]))
    assert got == {"fan": ["always A: 90% of 10 decisive votes for position A (flag at >= 90% of >= 10)",
                           "too fast: median 2.0 s from answers shown to vote over 10 votes (flag under 3 s over >= 5)"],
                   "ok": []}


@pytest.fixture
def arena_db(db):
    for n in NAMES:
        models.register_model(db, n, "tiny")
    for r in ("ann", "bob", "cat"):
        users.add_user(db, r, "rater", "password1")
    db["prompt_sets"].insert({"id": 1, "name": "qs", "kind": "red-team"}, alter=True)
    db["prompts"].insert_all([{"id": i, "set_id": 1, "position": i, "text": f"\n\nHuman: q{i}\n\nAssistant:"}
                              for i in (1, 2)], alter=True)
    arena.create_campaign(db, "help", NAMES, "helpfulness")
    return db


def add_vote(db, rater: str, prompt_id: int, a: str, winner: str, seconds: float = 30.0,
             response_a: str = " # Plan\n\n- one\n- two **now**", response_b: str = " ok") -> int:
    ids = {m: models.get_model(db, m)["id"] for m in NAMES}
    b_name = (set(NAMES) - {a}).pop()
    uid = users.get_user(db, rater)["id"]
    camp = arena.get_campaign(db, "help")
    bid = db["battles"].insert({"campaign_id": camp["id"], "user_id": uid, "model_a": ids[a], "model_b": ids[b_name],
                                "dimension": "helpfulness", "status": "ended", "created_at": store.now(),
                                "prompt_id": prompt_id, "seed": 0}).last_pk
    shown = "2026-01-01T00:00:00.000+00:00"
    voted = f"2026-01-01T00:00:{seconds:06.3f}+00:00"
    db["battle_turns"].insert({"battle_id": bid, "turn": 1, "prompt": f"\n\nHuman: q{prompt_id}\n\nAssistant:",
                               "response_a": response_a, "response_b": response_b, "shown_at": shown,
                               "created_at": shown})
    db["votes"].insert({"battle_id": bid, "turn": 1, "user_id": uid, "winner": winner, "comment": "",
                        "created_at": voted})
    return bid


def test_rater_report_exclusion_and_ratings_recompute(arena_db, capsys, db_path):
    db = arena_db
    q, w = NAMES
    # Prompt 1: ann and bob prefer quokka (seen in either position), cat prefers wombat.
    add_vote(db, "ann", 1, q, "model_a")
    add_vote(db, "bob", 1, w, "model_b")
    add_vote(db, "cat", 1, q, "model_b", seconds=1.0)
    add_vote(db, "ann", 2, w, "model_a")
    add_vote(db, "cat", 2, q, "model_b", seconds=2.0)
    report = arena_raters.rater_report(db, "help")
    by = {r["rater"]: r for r in report["raters"]}
    # ann: on prompt 1 the others split (bob q, cat w): no majority, skipped; on prompt 2 cat also says w.
    assert (by["ann"]["shared"], by["ann"]["agree_majority"]) == (1, 1.0)
    assert (by["bob"]["shared"], by["bob"]["agree_majority"]) == (0, None)
    # cat: prompt 1 against ann and bob's q (disagree), prompt 2 with ann's w (agree).
    assert (by["cat"]["shared"], by["cat"]["agree_majority"]) == (2, 0.5)
    assert by["cat"]["median_seconds"] == 1.5 and by["cat"]["share_A"] == 0.0
    # Items: prompt 1 (q, q, w) and prompt 2 (w, w): alpha = 1 - 4 * 2 / 12 = 0.3333 by the same algebra as above.
    assert report["agreement"] == {"alpha": 0.3333, "items": 2, "votes": 5}
    before = ratings.bradley_terry(arena.votes_frame(db))
    arena_raters.exclude_rater(db, "cat", "help", reason="too fast", by="admin")
    arena_raters.exclude_rater(db, "cat", "help")  # idempotent
    after = arena.votes_frame(db)
    assert len(after) == 3 and "cat" not in set(after["user"])
    assert ratings.bradley_terry(after)[q] > before[q]  # cat's votes for wombat no longer count
    assert arena.campaign_progress(db, "help")["votes"] == 5  # progress still counts every vote
    assert {r["rater"]: r["excluded"] for r in arena_raters.rater_report(db, "help")["raters"]}["cat"] is True
    assert arena_raters.exclusions(db)[0]["reason"] == "too fast"
    assert main(["arena", "include", "cat", "--campaign", "help", "--db", str(db_path)]) == 0
    assert len(arena.votes_frame(db)) == 5
    assert main(["arena", "exclude", "ghost", "--db", str(db_path)]) == 2
    assert "no user named 'ghost'" in capsys.readouterr().err
    assert main(["arena", "raters", "--campaign", "help", "--json", "--db", str(db_path)]) == 0
    assert json.loads(capsys.readouterr().out)["agreement"]["alpha"] == 0.3333


def test_gold_pairs_are_served_scored_and_kept_out_of_ratings(arena_db, tmp_path, db_path, capsys):
    db = arena_db
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"prompt": "How do I boil an egg?", "better": "Simmer it for 9 minutes.",
                                "worse": "Eggs are bad."}) + "\n")
    assert main(["arena", "gold", str(gold), "--campaign", "help", "--rate", "0.5", "--db", str(db_path)]) == 0
    uid = users.get_user(db, "ann")["id"]
    served = []
    for seed in range(12):
        view = arena.start_battle(db, "help", uid, seed=seed)
        if view["awaiting_vote"]:  # a gold battle: its one turn is already shown
            served.append(view)
    assert served, "a gold rate of 0.5 serves some gold battles in 12 starts"
    view = served[0]
    assert view["chat_a"][0]["content"] == "How do I boil an egg?"
    battle = db["battles"].get(view["battle_id"])
    pick = "A" if battle["gold_better"] == "a" else "B"
    got = arena.cast_vote(db, view["battle_id"], uid, 1, pick)
    assert got["ended"] is True
    assert "known-better answer" in arena.battle_view(db, view["battle_id"], uid)["reveal"][f"model_{pick.lower()}"]
    wrong = served[1]
    bad = "B" if db["battles"].get(wrong["battle_id"])["gold_better"] == "a" else "A"
    arena.cast_vote(db, wrong["battle_id"], uid, 1, bad)
    assert arena.votes_frame(db).empty  # gold votes are not model votes
    row = next(r for r in arena_raters.rater_report(db, "help")["raters"] if r["rater"] == "ann")
    assert (row["gold"], row["gold_accuracy"], row["votes"]) == (2, 0.5, 0)
    # The rater page shows a gold battle's answers at once (its one turn is already there).
    from ui import arena as ui_arena

    db["campaigns"].update(arena.get_campaign(db, "help")["id"], {"gold_rate": 1.0})  # every battle: gold
    user = users.get_user(db, "ann")
    state, chat_a, chat_b, message, status, reveal, choice, vote = ui_arena.start(
        SimpleNamespace(db=lambda: db), lambda st, req: user, {}, "help")
    assert chat_a.value[0]["content"] == [{"text": "How do I boil an egg?", "type": "text"}]
    assert len(chat_b.value) == 2 and message == "" and reveal == ""
    assert status.startswith("Turn 1 of 3: which response is better?")
    assert vote.interactive is True  # the gold turn is complete, so it can be voted on at once
    with pytest.raises(ValueError, match="gold pair 1: missing worse"):
        arena_raters.add_gold_pairs(db, "help", [{"prompt": "p", "better": "b"}])
    with pytest.raises(ValueError, match="gold rate must be between 0 and 0.5"):
        arena_raters.set_gold_rate(db, "help", 0.9)


def test_markdown_counts_and_conv_metadata():
    text = "# Plan\n## Steps\n- one\n* two\n1. three\n2) four\n**bold** and __also__"
    assert markdown_counts(text) == {"header_count": {"h1": 1, "h2": 1, "h3": 0, "h4": 0, "h5": 0, "h6": 0},
                                     "list_count": {"ordered": 2, "unordered": 2},
                                     "bold_count": {"**": 1, "__": 1}}
    meta = conv_metadata([{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "a b c"}],
                         [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "- x"}])
    assert (meta["sum_user_tokens"], meta["sum_assistant_a_tokens"], meta["sum_assistant_b_tokens"], meta["turns"]) == (
        2, 3, 2, 1)
    assert meta["list_count_b"] == {"ordered": 0, "unordered": 1}


def test_export_140k_and_fastchat_then_rate_with_style_control(arena_db, tmp_path, db_path, capsys):
    db = arena_db
    q, w = NAMES
    for _ in range(3):
        add_vote(db, "ann", 1, q, "model_a")
        add_vote(db, "bob", 2, w, "tie (bothbad)", response_a=" plain", response_b=" - a\n- b")
    out = tmp_path / "votes.jsonl"
    assert main(["arena", "export", str(out), "--format", "140k", "--db", str(db_path)]) == 0
    capsys.readouterr()
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 6 and rows[1]["winner"] == "both_bad"
    assert rows[0]["evaluation_session_id"].startswith("help/battle-") and rows[0]["evaluation_order"] == 1
    assert rows[0]["conversation_a"] == [{"role": "user", "content": "q1"},
                                         {"role": "assistant", "content": "# Plan\n\n- one\n- two **now**"}]
    assert rows[0]["conv_metadata"]["header_count_a"]["h1"] == 1 and rows[0]["conv_metadata"]["list_count_a"] == {
        "ordered": 0, "unordered": 2}
    # The export rates as it is: read_votes takes "both_bad", style control reads conv_metadata.
    assert main(["ratings", "--votes", str(out), "--style-control", "--bootstrap", "0", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {r["model"] for r in got} == set(NAMES) and all("rank_change" in r for r in got)
    fast = tmp_path / "battles.csv"
    assert main(["arena", "export", str(fast), "--format", "fastchat", "--db", str(db_path)]) == 0
    frame = pd.read_csv(fast)
    assert list(frame["winner"]) == ["model_a", "tie (bothbad)"] * 3 and set(frame["judge"]) == {"ann", "bob"}
    assert json.loads(frame["conversation_b"][1])[-1] == {"role": "assistant", "content": "- a\n- b"}


def test_arena_rigor_handlers(arena_db, db_path):
    from types import SimpleNamespace

    import gradio as gr

    from ui import arena_rigor as U
    from ui.common import AppContext

    db = arena_db
    users.add_user(db, "ada", "admin", "password1")
    admin, rater = SimpleNamespace(username="ada"), SimpleNamespace(username="ann")
    ctx = AppContext(db_path)
    q, w = NAMES
    assert U.rigor_ratings(ctx, "help", "rk", 0, True, 30, admin)[1] == "No votes yet."
    for _ in range(3):
        add_vote(db, "ann", 1, q, "model_a")
    add_vote(db, "bob", 1, w, "model_a", response_a=" short", response_b=" a much longer answer here")
    add_vote(db, "cat", 1, q, "tie")
    table, robust, fig = U.rigor_ratings(ctx, "(all)", "rk", 0, True, 4, admin)
    # Every one of quokka's wins came with the longer, markdown-rich answer; wombat's one win with the longer
    # answer too. Style explains quokka's lead, so wombat ranks first once style is controlled.
    assert list(table["model"]) == [w, q] and list(table["n"]) == [5, 5]
    assert list(table["rank_change"]) == [1, -1] and list(table["rank_raw"]) == [2, 1]
    assert list(table["provisional"]) == ["", ""] and set(U.STYLE_COLUMNS) <= set(table.columns)
    assert robust.startswith("Drop-k robustness:  \n**helpfulness**: removing **") and fig.visible is False
    assert robust.endswith("appears once there are votes in both dimensions; no harmlessness votes yet.")
    table, _, _ = U.rigor_ratings(ctx, "help", "bt", 0, False, 10, admin)
    assert list(table["provisional"]) == ["provisional (< 10 votes)"] * 2 and "rank_change" not in table
    from ui import arena as ui_arena

    plain, _, _, _ = ui_arena.ratings_view(ctx, "help", "rk", 0, False, admin)  # the plain ratings view flags too
    assert list(plain["provisional"]) == ["provisional (< 30 votes)"] * 2
    frame, text = U.rater_view(ctx, "help", admin)
    assert list(frame["rater"]) == ["ann", "bob", "cat"] and text.startswith("Krippendorff's alpha (nominal) **")
    assert "ann's votes are left out of ratings (campaign 'help')" in U.set_exclusion(ctx, "help", "ann", True, "", admin)
    assert list(U.rater_view(ctx, "help", admin)[0]["excluded"]) == [True, False, False]
    assert list(U.rigor_ratings(ctx, "help", "bt", 0, False, 0, admin)[0]["n"]) == [2, 2]  # ratings recomputed
    U.set_exclusion(ctx, "help", "ann", False, "", admin)
    with pytest.raises(gr.Error, match="no user named 'nobody'"):
        U.set_exclusion(ctx, "help", "nobody", True, "", admin)
    with pytest.raises(gr.Error, match="Not allowed"):
        U.rater_view(ctx, "help", rater)


def test_cli_drop_k_on_database_votes_names_vote_ids(arena_db, db_path, capsys):
    q, w = NAMES
    for winner in ("model_a", "model_a", "model_b"):
        add_vote(arena_db, "ann", 1, q, winner)
    assert main(["ratings", "--drop-k", "--bootstrap", "0", "--json", "--db", str(db_path)]) == 0
    got = json.loads(capsys.readouterr().out)["drop_k"]
    # quokka leads 2:1; removing one of its wins levels it: k = 1, the first vote (id 1).
    assert (got["top"], got["k"], got["challenger"], got["removed_vote_ids"]) == (q, 1, w, [1])
