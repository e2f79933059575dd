"""cai.queries: the read-side queries the app lays out, on a real (temporary) store, with literal results."""

from __future__ import annotations

import pytest

from cai import constitution, data, models, sl, store
from cai.evals import label_stats
from cai.queries import catalog, chains, labels
from cai.queries import runs as run_queries

PROMPT = "\n\nHuman: question {i}?\n\nAssistant:"
CRITIQUES = [{"kind": "critique", "name": n, "critique": f"{n}?", "revision": f"fix {n}"} for n in ("harm", "ethics")]


def add_runs(db, *rows):
    """Runs straight into the table (the queries read them; no worker, no reference checks)."""
    db["runs"].insert_all([{"status": "done", "created_at": "2026-01-02T03:04:05", **r,
                            "config": store.dumps(r.get("config", {})), "result": store.dumps(r.get("result"))}
                           for r in rows])


@pytest.fixture
def world(db):
    """Two constitutions (one with two versions), two prompt sets, three models, SL/pairs/label runs."""
    constitution.create_constitution(db, "paper", principles=CRITIQUES)
    constitution.new_version(db, "paper", CRITIQUES[:1], [], "drop ethics")
    constitution.create_constitution(db, "short", principles=CRITIQUES[1:])
    data.create_prompt_set(db, "helpful-few", "helpful", [PROMPT.format(i=i) for i in range(2)])
    data.create_prompt_set(db, "red", "red-team", [PROMPT.format(i=i) for i in range(3)])
    add_runs(db, {"id": 1, "kind": "sl", "status": "done"}, {"id": 2, "kind": "pairs", "status": "failed"},
             {"id": 3, "kind": "sl", "status": "queued", "created_at": None}, {"id": 4, "kind": "sft"})
    tiny = models.ensure_model(db, "tiny")["id"]
    v2 = constitution.resolve_version(db, "paper")["id"]
    models.register_model(db, "sl-cai", "/m/sl", chat=True, parent_id=tiny, run_id=4, constitution_version_id=v2)
    models.register_model(db, "other", "/m/other", run_id=4)
    return db


def test_catalog_lists_what_pickers_offer(world):
    db = world
    assert catalog.prompt_sets(db) == [{"name": "helpful-few", "kind": "helpful", "prompts": 2},
                                       {"name": "red", "kind": "red-team", "prompts": 3}]
    assert catalog.first_red_team_set(db) == "red"
    assert catalog.model_names(db) == ["tiny", "sl-cai", "other"]
    assert catalog.models_newest_first(db) == [{"id": 3, "name": "other"}, {"id": 2, "name": "sl-cai"},
                                               {"id": 1, "name": "tiny"}]
    assert catalog.constitutions_latest(db) == [{"name": "paper", "latest": 2}, {"name": "short", "latest": 1}]
    v2 = constitution.resolve_version(db, "paper")["id"]
    assert catalog.constitution_version(db, v2) == {"name": "paper", "version": 2, "note": "drop ethics"}
    assert catalog.constitution_version(db, 999) is None


def test_model_registry_names_parent_run_and_constitution(world):
    rows = [{k: v for k, v in r.items() if k != "created_at"} for r in catalog.model_registry(world)]
    assert rows == [
        {"id": 1, "name": "tiny", "path": "tiny", "backend": "hf", "chat": 0, "parent": None, "run": None,
         "constitution": None},
        {"id": 2, "name": "sl-cai", "path": "/m/sl", "backend": "hf", "chat": 1, "parent": "tiny", "run": "sft #4",
         "constitution": "paper v2"},
        {"id": 3, "name": "other", "path": "/m/other", "backend": "hf", "chat": 0, "parent": None, "run": "sft #4",
         "constitution": None},
    ]
    assert all(r["created_at"] for r in catalog.model_registry(world))


def test_pref_sets_newest_first_with_counts_and_source_filter(db):
    pair = {"prompt": PROMPT.format(i=0), "chosen": " a", "rejected": " b", "p": 1.0}
    add_runs(db, {"id": 7, "kind": "label"})
    data.create_pref_set(db, "hh", "human", "harmless", [pair, pair, pair])
    data.create_pref_set(db, "labels-7", "ai", "harmless", [{**pair, "p": 0.7}], run_id=7)
    assert catalog.pref_sets(db) == [
        {"name": "labels-7", "source": "ai", "kind": "harmless", "run_id": 7, "pairs": 1},
        {"name": "hh", "source": "human", "kind": "harmless", "run_id": None, "pairs": 3}]
    assert [s["name"] for s in catalog.pref_sets(db, "human")] == ["hh"]
    assert catalog.pref_sets(db, "nobody") == []
    assert catalog.find_pref_set(db, "labels-7")["run_id"] == 7
    assert catalog.find_pref_set(db, "missing") is None


def test_runs_of_kind_and_what_a_run_made(world):
    db = world
    assert run_queries.runs_of_kind(db, "sl") == [
        {"id": 3, "status": "queued", "created_at": None},
        {"id": 1, "status": "done", "created_at": "2026-01-02T03:04:05"}]
    assert run_queries.runs_of_kind(db, "sl", limit=1) == [{"id": 3, "status": "queued", "created_at": None}]
    assert run_queries.runs_of_kind(db, "dpo") == []
    sl.store_chain(db, 1, _chain(1, "harm"), model_id=1, constitution_version_id=None)
    sl.store_chain(db, 1, _chain(2, "ethics"), model_id=1, constitution_version_id=None)
    assert run_queries.run_outputs(db, 1) == {"chains": 2, "response_pairs": 0, "pref_sets": [], "models": []}
    assert run_queries.run_outputs(db, 4) == {"chains": 0, "response_pairs": 0, "pref_sets": [],
                                              "models": ["sl-cai", "other"]}
    run_queries.add_log(db, 4, "cancel requested by ada")
    assert [(r["run_id"], r["level"], r["line"]) for r in db["run_logs"].rows] == [(4, "info",
                                                                                   "cancel requested by ada")]


def _chain(prompt_id: int, principle: str) -> sl.Chain:
    chain = sl.Chain(sl.ChainItem(prompt_id, PROMPT.format(i=prompt_id)), [principle])
    chain.steps = [sl.Step("initial", 0, "", "s0", " first", 5, 3, 0.1),
                   sl.Step("critique", 1, principle, "s1", " rude", 9, 3, 0.1),
                   sl.Step("revision", 1, principle, "s2", " better", 12, 4, 0.1)]
    return chain


def test_chain_filter_options_come_from_small_tables(world):
    assert chains.filter_options(world) == {
        "runs": [{"id": 3, "status": "queued", "created_at": None},
                 {"id": 1, "status": "done", "created_at": "2026-01-02T03:04:05"}],
        "models": [{"id": 3, "name": "other"}, {"id": 2, "name": "sl-cai"}, {"id": 1, "name": "tiny"}],
        "versions": [{"id": 2, "name": "paper", "version": 2}, {"id": 1, "name": "paper", "version": 1},
                     {"id": 3, "name": "short", "version": 1}],
        "principles": [{"name": "ethics"}, {"name": "harm"}],
    }


def test_chain_page_rows_and_one_chain_through_sl(world):
    db = world
    v1 = constitution.resolve_version(db, "paper", 1)["id"]
    for i in range(1, 4):
        sl.store_chain(db, 1, _chain(i, "harm" if i != 2 else "ethics"), model_id=2, constitution_version_id=v1)
    page = chains.chain_page(db, chains.ChainFilter(principle="harm"), page=1, size=1)
    assert (page.total, page.page, page.pages) == (2, 1, 2)
    assert page.rows == [{"id": 3, "run_id": 1, "model": "sl-cai", "constitution": "paper v1", "mode": "critique",
                          "n_revisions": 1, "flags": "[]", "prompt_tail": PROMPT.format(i=3), "final": "better"}]
    assert chains.chain_page(db, chains.ChainFilter(version_id=v1 + 1)).total == 0
    chain = sl.get_chain(db, 3)
    assert (chain["model"], chain["constitution"], [s["kind"] for s in chain["steps"]]) == (
        "sl-cai", "paper@1", ["initial", "critique", "revision"])


@pytest.fixture
def labelled(db):
    """A human set of 4 pairs, an agreement run over it (one pair unscored in the second order), a label
    run and an HHH run with per-pair consistency flags."""
    pairs = [{"prompt": PROMPT.format(i=i), "chosen": f" good {i}", "rejected": f" bad {i}", "p": 1.0}
             for i in range(4)]
    data.create_pref_set(db, "hh", "human", "harmless", pairs)
    add_runs(db, {"id": 1, "kind": "agreement", "config": {"prefs": "hh", "feedback_model": "tiny"}},
             {"id": 2, "kind": "agreement", "config": {"prefs": "other", "feedback_model": "tiny"}},
             {"id": 3, "kind": "label", "config": {"feedback_model": "tiny"}},
             {"id": 4, "kind": "hhh", "config": {"model": "default"},
              "result": {"model": "default", "cot": True, "samples": 2, "n": 3, "accuracy": 0.5,
                         "accuracy_order_avg": 0.6, "position": {"both_orders": {"correct_shown_A": 0.7,
                                                                                  "correct_shown_B": 0.4}}}},
             {"id": 5, "kind": "hhh", "status": "running", "config": {"model": "tiny"}})
    ids = [r["id"] for r in db["pairs"].rows_where(order_by="id")]
    # (principle, p_chosen, p_first, p_second, consistent)
    readings = [("harm", 0.8, 0.9, 0.7, 1), ("harm", 0.3, 0.2, 0.4, 1), ("kind", 0.45, 0.6, 0.3, 0),
                ("kind", 0.5, 0.5, None, None)]
    for pid, (pr, p, p1, p2, c) in zip(ids, readings, strict=True):
        db["agreement_pairs"].insert({"run_id": 1, "pair_id": pid, "principle": pr, "p_chosen": p, "p_first": p1,
                                      "p_second": p2, "consistent": c,
                                      "meta": store.dumps({"readings": [{"order": "AB", "p": p1}]})})
    db["feedback_labels"].insert_all([{"run_id": 3, "pair_id": i, "p": 0.6, "principles": "[]", "meta": "{}",
                                       "consistent": c} for i, c in enumerate([1, 1, 1, 0])])
    db["hhh_results"].insert_all([{"run_id": 4, "idx": i, "correct_option": "A", "p_plain": 0.6, "p_swapped": 0.4,
                                   "p_avg": 0.5, "consistent": c, "meta": "{}"} for i, c in enumerate([0, 1, None])])
    return db, ids


def test_agreement_rows_runs_and_disagreements(labelled):
    db, ids = labelled
    assert labels.agreement_rows(db, 1) == [
        {"pair_id": ids[0], "principle": "harm", "p_chosen": 0.8, "p_first": 0.9, "p_second": 0.7},
        {"pair_id": ids[1], "principle": "harm", "p_chosen": 0.3, "p_first": 0.2, "p_second": 0.4},
        {"pair_id": ids[2], "principle": "kind", "p_chosen": 0.45, "p_first": 0.6, "p_second": 0.3},
        {"pair_id": ids[3], "principle": "kind", "p_chosen": 0.5, "p_first": 0.5, "p_second": None}]
    assert [r["id"] for r in labels.agreement_runs(db, "hh")] == [1]
    assert labels.agreement_runs(db, None) == []
    assert labels.disagreements(db, 1) == [  # p_chosen < 0.5 only, most confident (lowest p) first
        {"pair_id": ids[1], "principle": "harm", "p_chosen": 0.3, "p_first": 0.2, "p_second": 0.4,
         "prompt_tail": PROMPT.format(i=1)},
        {"pair_id": ids[2], "principle": "kind", "p_chosen": 0.45, "p_first": 0.6, "p_second": 0.3,
         "prompt_tail": PROMPT.format(i=2)}]
    assert [r["pair_id"] for r in labels.disagreements(db, 1, limit=1)] == [ids[1]]


def test_one_labelled_pair_and_one_stored_pair(labelled):
    db, ids = labelled
    assert labels.agreement_pair(db, 1, ids[0]) == {
        "principle": "harm", "p_chosen": 0.8, "p_first": 0.9, "p_second": 0.7,
        "meta": {"readings": [{"order": "AB", "p": 0.9}]}, "prompt": PROMPT.format(i=0), "chosen": " good 0",
        "rejected": " bad 0"}
    with pytest.raises(LookupError, match="run 2 has no label for pair"):
        labels.agreement_pair(db, 2, ids[0])
    assert labels.pair(db, ids[1]) == {"prompt": PROMPT.format(i=1), "chosen": " good 1", "rejected": " bad 1",
                                       "p": 1.0, "meta": {}}
    with pytest.raises(LookupError, match="no pair 999"):
        labels.pair(db, 999)


def test_consistency_by_model_counts_runs_and_pairs_per_source(labelled):
    db, _ = labelled
    assert labels.consistency_by_model(db) == [
        {"model": "default", "source": "hhh", "runs": 1, "pairs": 2, "consistent": 0.5},
        {"model": "tiny", "source": "agreement", "runs": 1, "pairs": 3, "consistent": 0.6667},
        {"model": "tiny", "source": "label", "runs": 1, "pairs": 4, "consistent": 0.75}]


def test_hhh_results_skip_runs_without_a_result(labelled):
    db, _ = labelled
    assert labels.hhh_results(db) == [
        {"run": 4, "model": "default", "cot": True, "samples": 2, "n": 3, "accuracy": 0.5,
         "accuracy_order_avg": 0.6, "correct_shown_A": 0.7, "correct_shown_B": 0.4}]


def test_ai_pairs_carry_first_response_p_and_principles(db):
    data.create_pref_set(db, "labels-9", "ai", "harmless", [
        {"prompt": PROMPT.format(i=i), "chosen": " c", "rejected": " r", "p": p, "meta": {"p": pf, "principles": pr}}
        for i, (p, pf, pr) in enumerate([(0.95, 0.95, ["harm"]), (0.6, 0.4, ["harm", "kind"]), (0.5, None, [])])])
    got = labels.ai_pairs(db, "labels-9")
    assert [{k: v for k, v in r.items() if k != "id"} for r in got] == [
        {"prompt": PROMPT.format(i=0), "p": 0.95, "p_first": 0.95, "principles": ["harm"]},
        {"prompt": PROMPT.format(i=1), "p": 0.6, "p_first": 0.4, "principles": ["harm", "kind"]},
        {"prompt": PROMPT.format(i=2), "p": 0.5, "p_first": None, "principles": []}]
    s = label_stats.ai_summary(got)
    assert s["labels"] == {"first response better": 1, "second response better": 1, "tie (p = 0.5)": 0}
    assert (s["n"], s["mean_p"], s["confident"]) == (3, pytest.approx(0.6833333), 1)
    assert s["per_principle"] == {"harm": {"n": 2, "mean_p": pytest.approx(0.775)}, "kind": {"n": 1, "mean_p": 0.6}}
    with pytest.raises(LookupError, match="no preference set named 'nope'"):
        labels.ai_pairs(db, "nope")


def test_confusion_counts_each_scored_order(labelled):
    db, _ = labelled
    assert label_stats.confusion(labels.agreement_rows(db, 1)).to_dict("records") == [
        {"human \\ AI": "human chose A", "AI chose A": 2, "AI chose B": 1, "AI chose tie": 1},
        {"human \\ AI": "human chose B", "AI chose A": 2, "AI chose B": 1, "AI chose tie": 0}]
    assert label_stats.confusion([]).to_dict("records") == [
        {"human \\ AI": "human chose A", "AI chose A": 0, "AI chose B": 0, "AI chose tie": 0},
        {"human \\ AI": "human chose B", "AI chose A": 0, "AI chose B": 0, "AI chose tie": 0}]


def test_overview_counts_each_page_and_names_the_next_step(world):
    from cai.queries import overview

    db = world
    db["chains"].insert_all([{"run_id": 1, "prompt_id": i, "sample": 0, "mode": "critique", "prompt": "p", "final": "f",
                              "n_revisions": 1, "flags": flags, "created_at": "2026-01-02T03:04:05"}
                             for i, flags in enumerate(['["copied"]', "[]", None])])
    glance = overview.overview(db)
    assert glance == {
        "constitutions": [
            {"name": "paper", "version": 2, "critique": 1, "comparison": 0, "enabled": 1, "principles": 1},
            {"name": "short", "version": 1, "critique": 1, "comparison": 0, "enabled": 1, "principles": 1}],
        "models": ["tiny", "sl-cai", "other"],
        "runs": {"active": [{"id": 3, "kind": "sl", "status": "queued", "done": 0, "total": 0, "phase": None}],
                 "by_status": {"done": 2, "failed": 1, "queued": 1}},
        "chains": {"total": 3, "flagged": 1},
        "prefs": {"human": 0, "ai": 0},
        "done": {"sft": 1, "sl": 1},
        "campaigns": 0, "votes": 0, "experiments": 0,
    }
    assert overview.next_step(glance) == ("Import a human preference set to compare AI labels with.", "labels")
    data.create_pref_set(db, "hh", "human", "harmless", [{"prompt": "q", "chosen": "a", "rejected": "b", "p": 1.0}])
    glance = overview.overview(db)
    assert glance["prefs"] == {"human": 1, "ai": 0}
    assert overview.next_step(glance) == (
        "Run “AI vs human agreement”: how often the feedback model's labels agree with the human preference set.",
        "dashboard")
    glance["done"] = {kind: 1 for kind, _ in overview.PIPELINE}
    assert overview.next_step(glance) is None
    assert overview.next_step({**glance, "constitutions": []}) == ("Import or write a constitution.", "constitution")
    assert overview.next_step({**glance, "done": {}}) == (
        "Run the whole method at once: a pipeline of every stage, then the paper's figures on it "
        "(recipe smoke: the tiny test model, minutes; cpu-small: the embedded models).", "pipeline")
