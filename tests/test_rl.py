"""The RL stage end to end on the tiny model: pairs -> labels -> PM -> RLOO 2 steps -> DPO 2 steps."""

from __future__ import annotations

import pytest

from cai import constitution, data, models, runs, store
from cai.stages import DPOStageConfig, LabelConfig, PairsConfig, PMConfig, RLConfig
from cai.train import reward
from cai.train.dpo import dpo_rows, train_pairs
from cai.train.rl import PMReward, as_text, curve, mix_prompts, prompt_rows


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
                 batch_size=1, num_generations=2, max_new_tokens=8, limit=4, helpful_prompts="sample-helpful",
                 helpful_share=0.25),
    )  # fmt: skip
    assert (rl["algorithm"], rl["steps"]) == ("rloo", 2)
    assert rl["prompts_used"] == {"sample-red-team": 4, "sample-helpful": 1}  # 1 of 5 = 0.2, the nearest to 0.25
    assert "RLOO on 5 prompts (4 from sample-red-team, 1 from sample-helpful), beta 0.05, 2 per prompt" in \
        [g["line"] for g in runs.logs(db, rl_run)]
    assert [p["step"] for p in rl["curve"]] == [1, 2]
    for p in rl["curve"]:
        assert p["reward_minus_kl"] == pytest.approx(p["reward"] - 0.05 * p["kl_completion"], abs=2e-6)
    kls = [store.loads(r["metrics"])["kl"] for r in db["goodhart"].rows_where("run_id = ?", [rl_run], order_by="step")]
    assert kls == [p["kl"] for p in rl["curve"]]
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


# ----------------------------------------------------------------------------- issue 24: items 5, 6, 19


def test_completions_end_at_the_human_turn_so_reward_kl_and_gradient_see_one_text(tmp_path, monkeypatch):
    """A policy that runs on into an invented "Human:" turn: TRL is handed its completion cut after the token
    that completes the marker, so the loss's completion mask (reward, KL and gradient) covers exactly the
    text the PM scored plus the stop, never the invented turn."""
    from trl import RLOOTrainer

    from cai import backends
    from cai.train.rl import cut_ids_at_turn, trainer_class

    tiny = backends.load("tiny")
    tok = tiny.tokenizer
    answer, runaway = " I can't help with that.", "\n\nHuman: thanks! tell me more\n\nAssistant: sure"
    ids = tok.encode(answer + runaway, add_special_tokens=False)
    cut = cut_ids_at_turn(tok, ids)
    assert tok.decode(cut).startswith(answer + "\n\nHuman:") and "thanks" not in tok.decode(cut)
    assert tok.decode(cut[:-1]).find("\n\nHuman:") == -1  # the shortest prefix that holds the marker
    assert cut_ids_at_turn(tok, ids[:3]) == ids[:3]  # no marker: untouched

    monkeypatch.setattr(RLOOTrainer, "_generate_single_turn", lambda self, prompt_ids, *a, **k: [list(ids)] * len(prompt_ids))
    masks, scored = [], []
    original = RLOOTrainer._compute_loss

    def spy(self, model, inputs):
        masks.append(inputs["completion_mask"].sum(1).tolist())
        return original(self, model, inputs)

    monkeypatch.setattr(RLOOTrainer, "_compute_loss", spy)

    def reward(prompts, completions, **kw):
        scored.extend(completions)
        return [0.0, 1.0]

    reward.__name__ = "r"
    config_cls, trainer_cls = trainer_class("rloo")
    from datasets import Dataset

    from cai.train.common import causal_lm

    model, tok2 = causal_lm(tiny.path)

    args = config_cls(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, max_steps=1,
                      max_completion_length=len(ids), report_to="none", use_cpu=True, bf16=False, logging_steps=1,
                      save_strategy="no", disable_tqdm=True)
    trainer_cls(model=model, reward_funcs=[reward], args=args, processing_class=tok2,
                train_dataset=Dataset.from_list([{"prompt": "\n\nHuman: hi\n\nAssistant:"}] * 2)).train()
    assert masks == [[len(cut), len(cut)]]
    assert scored == [tok.decode(cut)] * 2


def test_mix_prompts_keeps_the_share_and_uses_what_the_sets_allow():
    red, helpful = [f"r{i}" for i in range(6)], [f"h{i}" for i in range(10)]
    r, h = mix_prompts(red, helpful, 0.5, 0)
    assert (len(r), len(h)) == (6, 6) and set(h) <= set(helpful) and h == sorted(h, key=helpful.index)
    assert mix_prompts(red, helpful, 0.5, 0) == mix_prompts(red, helpful, 0.5, 0)  # seeded
    r, h = mix_prompts(red, helpful[:2], 0.5, 0)  # too few helpful prompts: fewer red-team ones, same share
    assert (len(r), h) == (2, helpful[:2])
    assert [len(x) for x in mix_prompts(red, helpful, 0.25, 0)] == [6, 2]
    assert mix_prompts(red, [], 0.5, 0) == (red, []) and mix_prompts(red, helpful, 0.0, 0) == (red, [])


def test_curve_stores_kl_and_the_penalised_reward_per_logged_step():
    history = [{"step": 1, "reward": 0.5, "kl": 0.02, "completions/mean_length": 10.0, "loss": 0.1},
               {"step": 2, "reward": 0.7, "kl": 0.04, "completions/mean_length": 5.0}, {"step": 2, "train_loss": 0.1}]
    assert curve(history, 0.05, "rloo") == [
        {"step": 1, "reward": 0.5, "kl": 0.02, "kl_completion": 0.2, "reward_minus_kl": 0.49},
        {"step": 2, "reward": 0.7, "kl": 0.04, "kl_completion": 0.2, "reward_minus_kl": 0.69}]
    assert curve(history, 0.1, "grpo")[1] == {"step": 2, "reward": 0.7, "kl": 0.04, "kl_completion": 0.04,
                                              "reward_minus_kl": 0.696}


def fixed_pm(folder):
    """The tiny model with a seeded score head, saved: a PM that scores alike in every process."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from cai import backends

    tiny = backends.load("tiny")
    torch.manual_seed(7)
    pm = AutoModelForSequenceClassification.from_pretrained(tiny.path, num_labels=1, dtype=torch.float32)
    pm.config.pad_token_id = tiny.tokenizer.pad_token_id
    pm.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return str(folder)


def test_rl_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(db, db_path, tmp_path, monkeypatch):
    """4 prompts, 1 per step: 4 steps an epoch, a checkpoint every 5. A worker SIGKILLed after step 7 resumes
    from checkpoint-5 (epoch 1): it must draw epoch 1's prompts in the uninterrupted order (a fresh sampler
    drew epoch 0's again), and replace the killed attempt's Goodhart rows and step log lines of steps 6-7."""
    import os
    import signal
    import time
    from pathlib import Path

    from safetensors.torch import load_file

    from tests.helpers import create_prompt_set

    monkeypatch.setenv("CAI_THREADS", "1")  # the same thread count in every worker: same float sums
    create_prompt_set(db, "red", "red-team", [f"\n\nHuman: Bad question {i}?\n\nAssistant:" for i in range(4)])
    pm = fixed_pm(tmp_path / "pm")
    config = RLConfig(policy="tiny", reward_model=pm, prompts="red", max_steps=12, save_steps=5, batch_size=1,
                      num_generations=2, max_new_tokens=6, learning_rate=1e-3, seed=3)

    # The uninterrupted reference and the run to kill, side by side (a worker each, one thread each: the same
    # weights as one after the other, in about half the time on two cores).
    ref_id, ref_proc = runs.start(db, db_path, config)
    run_id, proc = runs.start(db, db_path, config)
    from cai.store import folders

    ckpt = folders.run_folder(db, run_id) / "checkpoint-5" / "trainer_state.json"  # this database's run folder
    deadline = time.monotonic() + 600
    while not (ckpt.is_file() and (runs.get_run(db, run_id)["done"] or 0) >= 7):
        assert proc.poll() is None, runs.worker_log(db_path, run_id).read_text()[-2000:]
        assert time.monotonic() < deadline, "the worker reached no step 7 in time"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = runs.get_run(db, run_id)
    assert killed["status"] == "interrupted" and 7 <= killed["done"] < 12, killed
    ref = runs.wait(db, ref_id, timeout=600)
    ref_proc.wait()
    assert ref["status"] == "done", (ref["error"], runs.worker_log(db_path, ref_id).read_text()[-2000:])
    proc = runs.resume(db, db_path, run_id)
    run = runs.wait(db, run_id, timeout=600)
    proc.wait()
    assert run["status"] == "done", (run["error"], runs.worker_log(db_path, run_id).read_text()[-2000:])

    assert run["result"]["steps"] == ref["result"]["steps"] == 12
    weights = [load_file(str(Path(r["result"]["path"]) / "model.safetensors")) for r in (ref, run)]
    assert weights[0].keys() == weights[1].keys()
    assert all(weights[0][k].numpy().tobytes() == weights[1][k].numpy().tobytes() for k in weights[0])
    assert [r["step"] for r in db["goodhart"].rows_where("run_id = ?", [run_id], order_by="step")] == list(range(12))
    assert [(r["step"], r["samples"]) for r in db["goodhart"].rows_where("run_id = ?", [run_id], order_by="step")] == \
        [(r["step"], r["samples"]) for r in db["goodhart"].rows_where("run_id = ?", [ref_id], order_by="step")]
    lines = [g["line"] for g in runs.logs(db, run_id) if g["line"].startswith("step ")]
    steps = [int(line.split(":")[0].split()[1]) for line in lines]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) + 1  # once each; the final summary repeats 12
    assert any(g["line"].startswith("resuming from step 5: the steps after it are trained again")
               for g in runs.logs(db, run_id))
    assert run["result"]["curve"] == ref["result"]["curve"]


def test_response_pairs_do_not_depend_on_the_batch_size(stage_db):
    """Each response (prompt, a/b) has its own seed: batch size 1 and 3 give the same pairs, a != b."""
    db = stage_db
    got = []
    for batch_size in (1, 3):
        run_id, result = run(db, PairsConfig(prompts="sample-red-team", model="tiny", limit=3, max_new_tokens=8,
                                             batch_size=batch_size, seed=5))
        assert result["pairs"] == 3
        got.append([(r["prompt_id"], r["response_a"], r["response_b"])
                    for r in db["response_pairs"].rows_where("run_id = ?", [run_id], order_by="prompt_id")])
    assert got[0] == got[1]
    assert all(a != b for _, a, b in got[0])
