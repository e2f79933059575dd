"""The RL stage end to end on the tiny model: pairs -> labels -> PM -> RLOO 2 steps -> DPO 2 steps."""

from __future__ import annotations

import pytest

from cai import constitution, data, models, runs, store
from cai.stages import DPOStageConfig, LabelConfig, PairsConfig, PMConfig, RLConfig
from cai.train import reward
from cai.train.dpo import dpo_rows, train_pairs
from cai.train.rl import PMReward, as_text, prompt_rows


def run(db, config):
    run_id = runs.create_run(db, config)
    row = runs.execute(db, run_id)
    assert row["status"] == "done", (row["error"], runs.logs(db, run_id, tail=3))
    return run_id, row["result"]


def test_soft_handling_of_dpo():
    pairs = [{"p": 0.9}, {"p": 0.6}, {"p": 1.0}, {"p": 0.5}]
    assert train_pairs(pairs, "soft", 0.7) == (pairs, {"ties_left_out": 0, "below_threshold": 0})
    # threshold: hard labels (p = 1) for the pairs at or above it; a tie has no side, even at threshold 0.5
    assert train_pairs(pairs, "threshold", 0.7) == (
        [{"p": 1.0}, {"p": 1.0}], {"ties_left_out": 1, "below_threshold": 1}
    )
    assert train_pairs(pairs, "threshold", 0.5)[0] == [{"p": 1.0}] * 3
    assert dpo_rows([{"prompt": "P", "chosen": "a ", "rejected": " b", "p": 0.7}]) == [
        {"prompt": "P", "chosen": " a", "rejected": " b", "p": 0.7}
    ]


def test_prompt_rows_and_texts():
    hh = "\n\nHuman: hi\n\nAssistant:"
    assert prompt_rows([hh], chat=False) == [{"prompt": hh}]
    assert prompt_rows([hh], chat=True) == [{"prompt": [{"role": "user", "content": "hi"}]}]
    assert as_text([{"role": "user", "content": "hi"}]) == hh
    assert as_text([{"role": "assistant", "content": "yo"}]) == "yo"


def test_pm_reward_cuts_at_the_next_human_turn_and_records_goodhart(db):
    seen = []

    class FakePM:
        device = "cpu"

    reward = PMReward(FakePM(), None, db, run_id=runs.create_run(db, PairsConfig(prompts="x")))
    import cai.train.rl as rl

    original = rl.score_texts
    rl.score_texts = lambda m, t, texts, batch_size=8: seen.extend(texts) or [float(len(x)) for x in texts]
    try:
        out = reward(["\n\nHuman: hi\n\nAssistant:"] * 2, [" I'm sorry, I can't.\n\nHuman: more", " Hello!"])
    finally:
        rl.score_texts = original
    assert seen == ["\n\nHuman: hi\n\nAssistant: I'm sorry, I can't.", "\n\nHuman: hi\n\nAssistant: Hello!"]
    assert out == [float(len(seen[0])), float(len(seen[1]))]
    [row] = db["goodhart"].rows
    metrics = store.loads(row["metrics"])
    assert (row["step"], metrics["n"], metrics["evasive_rate"], metrics["mean_length"]) == (0, 2, 0.5, 2.5)


@pytest.fixture
def stage_db(db):
    constitution.seed_default(db)
    data.seed_samples(db)
    return db


def test_tiny_pipeline_end_to_end(stage_db):
    db = stage_db
    pairs_run, pairs = run(
        db, PairsConfig(prompts="sample-red-team", model="tiny", limit=4, max_new_tokens=8)
    )
    assert pairs["pairs"] == 4
    assert db["response_pairs"].count_where("run_id = ?", [pairs_run]) == 4

    label_run, labels = run(
        db, LabelConfig(pairs=pairs_run, feedback_model="tiny", name="ai-tiny", ensemble=2)
    )
    assert labels["labels"] == 4 and labels["pref_set"] == "ai-tiny"
    prefs = data.list_pairs(db, "ai-tiny")
    assert all(0.5 <= p["p"] <= 1.0 for p in prefs)
    assert {len(p["meta"]["readings"]) for p in prefs} == {4}  # 2 principles x 2 orders
    assert db["feedback_labels"].count_where("run_id = ?", [label_run]) == 4
    # A second label run with the same name fails clearly, keeping the first set.
    again = runs.execute(
        db, runs.create_run(db, LabelConfig(pairs=pairs_run, feedback_model="tiny", name="ai-tiny"))
    )
    assert again["status"] == "failed" and "'ai-tiny' already exists (from run" in again["error"]
    assert data.get_pref_set(db, "ai-tiny")["run_id"] == label_run

    human = [
        {"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"], "p": 1.0} for p in prefs
    ]
    data.create_pref_set(db, "human-tiny", "human", "helpful", human + human)
    pm_run, pm = run(
        db,
        PMConfig(ai_prefs="ai-tiny", human_prefs="human-tiny", model="tiny", name="pm-tiny", max_steps=2,
                 batch_size=2, max_length=256),
    )  # fmt: skip
    # every pair of both sets (the paper's choice): 4 AI + the 6 human pairs not held out
    assert (pm["train_pairs"], pm["ai_pairs"], pm["human_pairs"], pm["heldout_pairs"]) == (10, 4, 6, 2)
    assert pm["heldout_accuracy"] in (0.0, 0.5, 1.0)
    pm_row = models.get_model(db, "pm-tiny")
    assert (pm_row["run_id"], pm_row["parent_id"]) == (pm_run, models.get_model(db, "tiny")["id"])
    assert pm_row["constitution_version_id"] == constitution.resolve_version(db)["id"]
    scores = reward.score("pm-tiny", [prefs[0]["prompt"]] * 2, [prefs[0]["chosen"], prefs[0]["rejected"]], db)
    one_by_one = reward.score(
        "pm-tiny", [prefs[0]["prompt"]] * 2, [prefs[0]["chosen"], prefs[0]["rejected"]], db, 1
    )
    assert len(scores) == 2 and scores == pytest.approx(one_by_one, abs=1e-5)

    rl_run, rl = run(
        db,
        RLConfig(policy="tiny", reward_model="pm-tiny", prompts="sample-red-team", name="rl-tiny", max_steps=2,
                 batch_size=1, num_generations=2, max_new_tokens=8, limit=4),
    )  # fmt: skip
    assert (rl["algorithm"], rl["steps"]) == ("rloo", 2)
    rl_row = models.get_model(db, "rl-tiny")
    assert (rl_row["parent_id"], rl_row["meta"]["algorithm"]) == (models.get_model(db, "tiny")["id"], "rloo")
    assert rl_row["meta"]["reward_model_id"] == pm_row["id"]
    steps = [r["step"] for r in db["goodhart"].rows_where("run_id = ?", [rl_run], order_by="step")]
    assert steps == [0, 1]

    dpo_run, dpo = run(
        db,
        DPOStageConfig(
            policy="rl-tiny", prefs="ai-tiny", name="dpo-tiny", max_steps=2, batch_size=2, max_length=256
        ),
    )
    assert dpo["steps"] == 2 and dpo["pairs"] == 4
    dpo_row = models.get_model(db, "dpo-tiny")
    assert [m["name"] for m in models.lineage(db, dpo_row["id"])] == ["dpo-tiny", "rl-tiny", "tiny"]
    assert dpo_row["run_id"] == dpo_run
