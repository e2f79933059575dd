"""Principle discovery on a scripted feedback model: the exact proposal prompts, the merge, each candidate's
agreement on the held-out pairs, and the draft constitution version; pure pieces with literal values."""

from __future__ import annotations

import json
import re

import pytest

from cai import discover, runs
from cai.backends.base import ScriptedBackend
from cai.constitution import create_constitution, resolve_version
from cai.data import create_pref_set
from cai.stages import DiscoverConfig

# Chosen responses say "Kindly"; the scripted model proposes a politeness rule for questions about manners
# and a crime rule for the others.
PAIRS = [
    {"prompt": f"\n\nHuman: {q}?\n\nAssistant:", "chosen": f" Kindly, {i}.", "rejected": f" No {i}.", "p": 1.0}
    for i, q in enumerate(["Manners one", "Manners two", "Crime one", "Crime two", "Manners three", "Crime three"])
]
POLITE = ["is more polite and kind.", "is more polite and kind to the user"]


def respond(prompt: str) -> str:
    if "Manners one" in prompt or "Manners two" in prompt or "Manners three" in prompt:
        return " " + POLITE["Manners two" in prompt] + "\nRule: more"
    return " refuses to help with crimes."


def score(prompt: str, option: str) -> float:
    """p(option) ~ 1 for the "Kindly" response under the politeness rule, for the other one under any other rule."""
    a, b = re.findall(r"\[\[\[(.*?)\]\]\]", prompt)[-2:]
    shown = a if option == " (A)" else b
    polite_rule = "polite" in prompt.split("[[[")[0].rsplit("\n\n", 1)[-1]
    return 0.0 if ("Kindly" in shown) == polite_rule else -5.0


def test_pure_pieces():
    assert discover.rule_text(" is kinder.\nRule: x") == "Choose the response that is kinder."
    assert discover.rule_text("  \n") == ""
    assert discover.jaccard("Choose the response that is more polite.", "is more polite and kind") == 0.6
    merged = discover.merge([(1, "Choose the response that is polite."), (2, ""),
                             (3, "Choose the response that is safe."), (4, "Choose the response that is safe!")])
    assert [(c.text, c.support) for c in merged] == [("Choose the response that is safe.", [3, 4]),
                                                      ("Choose the response that is polite.", [1])]
    assert discover.split([1, 2, 3, 4, 5, 6], 3, 3, seed=0) == ([2, 6, 3], [5, 4, 1])
    assert discover.split([1, 2], 5, 5, seed=0)[0] != []  # the sample leaves at least one pair to test
    with pytest.raises(ValueError, match="at least 2 pairs"):
        discover.split([1], 1, 1, seed=0)


def test_discovery_run_on_a_scripted_model(db, monkeypatch):
    create_constitution(db, "c", principles=[
        {"kind": "critique", "name": "harm", "critique": "Say how it harms.", "revision": "Rewrite it."},
        {"kind": "comparison", "name": "cmp", "text": "Which is more harmless?"}])
    create_pref_set(db, "human", "human", "harmless", PAIRS)
    backend = ScriptedBackend(respond=respond, score=score)
    monkeypatch.setitem(runs.SCRIPTED, "tiny", backend)
    cfg = DiscoverConfig(prefs="human", feedback_model="tiny", constitution="c", sample_pairs=3, test_pairs=3,
                         candidates=2, keep=2, batch_size=8)
    run = runs.execute(db, runs.create_run(db, cfg, **runs.resolve_links(db, cfg)))
    assert (run["status"], run["error"]) == ("done", None)
    r = run["result"]
    # Pair ids 1..6; the seeded split: 2, 6, 3 propose; 5, 4, 1 test.
    assert (r["sample_pairs"], r["test_pairs"]) == ([2, 6, 3], [5, 4, 1])
    kind, sent = backend.calls[0]
    assert kind == "generate" and sent[0] == (
        "\n\nHuman: Manners two?\n\nAssistant:\n\nTwo assistant responses to the conversation above:\n\n"
        "Response (A): Kindly, 1.\n\nResponse (B): No 1.\n\nA careful reviewer preferred response (A). "
        "The rule the reviewer followed, in one sentence:\n\nRule: Choose the response that")
    assert sent[1:] == [discover.propose_prompt(PAIRS[i]["prompt"], PAIRS[i]["chosen"], PAIRS[i]["rejected"])
                        for i in (5, 2)]
    assert r["proposals"] == [
        {"pair_id": 2, "rule": "Choose the response that is more polite and kind to the user."},
        {"pair_id": 6, "rule": "Choose the response that refuses to help with crimes."},
        {"pair_id": 3, "rule": "Choose the response that refuses to help with crimes."}]
    assert [(c["text"], c["support"]) for c in r["candidates"]] == [
        ("Choose the response that refuses to help with crimes.", [6, 3]),
        ("Choose the response that is more polite and kind to the user.", [2])]
    # Held-out pairs 5, 4, 1: the politeness rule picks every chosen response (p ~ 0.993 both orders),
    # the crime rule every rejected one.
    assert [(c["text"], c["agreement"], c["lo"], c["hi"], c["n"]) for c in r["tested"]] == [
        ("Choose the response that is more polite and kind to the user.", 1.0, 1.0, 1.0, 3),
        ("Choose the response that refuses to help with crimes.", 0.0, 0.0, 0.0, 3)]
    assert r["draft_version"] == "c@2" and r["base_version"] == "c@1"
    v = resolve_version(db, "c", 2)
    assert [(p["name"], p["text"]) for p in v["principles"] if p["kind"] == "comparison"] == [
        ("cmp", "\nWhich is more harmless? Options:"),
        (f"discovered-{run['id']}-1", "\nChoose the response that is more polite and kind to the user. Options:"),
        (f"discovered-{run['id']}-2", "\nChoose the response that refuses to help with crimes. Options:")]
    assert v["note"] == (f"draft from discovery run {run['id']} on 'human': discovered-{run['id']}-1 agreement 1.00 "
                         f"[1.00, 1.00] n=3; discovered-{run['id']}-2 agreement 0.00 [0.00, 0.00] n=3")


def test_discover_needs_a_pref_set():
    from cai.config import ConfigError

    with pytest.raises(ConfigError, match="prefs: name a preference set"):
        DiscoverConfig()


def test_arena_votes_become_a_human_preference_set(db, db_path, capsys):
    from cai import arena, data, models, users
    from cai.backend_pool import BackendPool, stream_pair
    from cai.cli import main

    for n in ("quokka-7b", "wombat-3b"):
        models.register_model(db, n, "tiny")
    uid = users.add_user(db, "rita", "rater", "password1")
    arena.create_campaign(db, "help", ["quokka-7b", "wombat-3b"], "helpfulness", max_turns=2)
    answers = {"quokka-7b": " short", "wombat-3b": " long answer"}
    pool = BackendPool(loader=lambda row: ScriptedBackend(respond=lambda p, n=row["name"]: answers[n]))
    bid = arena.start_battle(db, "help", uid, seed=6)["battle_id"]
    for turn, (message, winner) in enumerate([("hi", "A"), ("more", "bothbad")], start=1):
        job = arena.begin_turn(db, bid, uid, message)
        *_, result = list(stream_pair(job, pool))
        arena.finish_turn(db, job, result.text_a, result.text_b, error=result.error)
        arena.cast_vote(db, bid, uid, turn, winner)
    a_text = answers[job.models[0]["name"]]
    b_text = answers[job.models[1]["name"]]
    assert main(["arena", "prefs", "help-votes", "--campaign", "help", "--db", str(db_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "help-votes", "id": 1, "pairs": 1, "votes": 2,
                                                   "ties_left_out": 1, "kind": "helpful"}
    row = data.get_pref_set(db, "help-votes")
    assert (row["source"], row["kind"]) == ("human", "helpful")
    assert [(p["prompt"], p["chosen"], p["rejected"], p["p"]) for p in data.list_pairs(db, "help-votes")] == [
        ("\n\nHuman: hi\n\nAssistant:", a_text, b_text, 1.0)]
    # Usable right away: an agreement config names it; a second set of the same name is refused.
    assert main(["arena", "prefs", "help-votes", "--campaign", "help", "--db", str(db_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["arena", "prefs", "x", "--campaign", "nope", "--db", str(db_path)]) == 2
    assert "no decisive votes in campaign 'nope'" in capsys.readouterr().err
