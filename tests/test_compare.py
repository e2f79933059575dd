"""The automatic tournament (stage "compare", cai.evals.compare): answers, judgements by a PM and by a judge model,
ratings per dimension; the arena campaign made from it; bad input."""

from __future__ import annotations

import json
import math

import pytest

from cai import runs
from cai.backends.base import ScriptedBackend
from cai.config import ConfigError
from cai.evals import compare as C
from cai.evals import ratings, revisions
from cai.stages import CompareConfig
from tests.helpers import seed

MODELS = ["good", "meh", "bad"]


def policies():
    """Three scripted policies whose answers name them, so a judge can tell them apart."""
    return {m: ScriptedBackend(respond=lambda prompt, m=m: f" answer-{m} to {len(prompt)}") for m in MODELS}


def prefers(model):
    """A scripted judge that gives the option showing `model`'s answer log-prob 0 and the other -5."""

    def score(prompt, option):
        tail = prompt[prompt.rfind("Options:"):]
        a, b = tail.split("(B)")
        shown_a = f"answer-{model}" in a
        return 0.0 if (option == " (A)") == shown_a else -5.0

    return ScriptedBackend(score=score)


def run_compare(db, config, backends):
    from contextlib import ExitStack

    with ExitStack() as stack:
        for name, backend in backends.items():
            stack.enter_context(runs.scripted(name, backend))
        return runs.execute(db, runs.create_run(db, config))


# ----------------------------------------------------------------------------- pure


def test_pm_p_is_the_sigmoid_of_the_score_difference_and_winner_uses_the_tie_band():
    assert C.pm_p(2.0, 0.5) == 1 / (1 + math.exp(-1.5))
    assert C.pm_p(0.0, 0.0) == 0.5
    assert [C.winner(p, 0.01) for p in (0.52, 0.505, 0.49, 0.48)] == ["model_a", "tie", "tie", "model_b"]
    assert C.model_pairs(["x", "y", "z"]) == [("x", "y"), ("x", "z"), ("y", "z")]


def test_order_agreement_counts_pairs_ordered_alike_and_spearman():
    got = C.order_agreement({"a": 3, "b": 2, "c": 1}, {"a": 10, "b": 1, "c": 5, "d": 0})
    assert got == {"models": ["a", "b", "c"], "pairs": 3, "agree": 2, "pairwise_agreement": 0.6667, "spearman": 0.5}


# ----------------------------------------------------------------------------- the stage


def test_a_judge_that_always_prefers_one_model_rates_it_first_on_both_dimensions(db):
    seed(db, n_prompts=4, helpful=3)
    config = CompareConfig(models="good meh bad", roles="RL-CAI SL-CAI base", red_team="red", helpful="help",
                           judges="judge", judge_model="judge", constitution="test", n_boot=50, max_new_tokens=8)
    run = run_compare(db, config, {**policies(), "judge": prefers("good")})
    assert run["status"] == "done", run["error"]
    res = run["result"]
    answers = list(db["compare_answers"].rows_where("run_id = ?", [run["id"]]))
    assert len(answers) == res["answers"] == 3 * (4 + 3)
    assert {a["answer"].split()[0] for a in answers if a["model"] == "meh"} == {"answer-meh"}
    # The same seed for every model on a prompt.
    by_prompt = {}
    for a in answers:
        by_prompt.setdefault((a["dimension"], a["prompt_id"]), set()).add(a["seed"])
    assert all(len(s) == 1 for s in by_prompt.values()) and len(by_prompt) == 7
    judgements = list(db["compare_judgements"].rows_where("run_id = ?", [run["id"]], order_by="id"))
    assert len(judgements) == res["judgements"] == 3 * (4 + 3)  # 3 pairs per prompt, one judge
    for j in judgements:
        assert j["orders"] == "AB,BA"
        if "good" in (j["model_a"], j["model_b"]):
            assert j["consistent"] == 1
            # order AB: good shown as (A) p = sigmoid(5); order BA read back to p(first): the same; averaged
            expect = 1 / (1 + math.exp(-5)) if j["model_a"] == "good" else 1 - 1 / (1 + math.exp(-5))
            assert j["p"] == pytest.approx(expect, abs=1e-12)
            assert j["winner"] == ("model_a" if j["model_a"] == "good" else "model_b")
        else:
            # Neither answer is the preferred model's: the judge picks (B) in both orders, a position bias that
            # the order average cancels (p = 0.5) and the consistency flag records.
            assert (j["p"], j["winner"], j["consistent"]) == (0.5, "tie", 0)
    harmless = [j for j in judgements if j["dimension"] == "harmlessness"]
    assert {(j["principle"], j["principle_sha256"]) for j in harmless} == {
        ("cmp", C.principle_sha256(["\nWhich is more harmless? Options:"]))}
    helpful = [j for j in judgements if j["dimension"] == "helpfulness"]
    assert {j["principle"] for j in helpful} == {"helpfulness"}
    assert {j["principle_sha256"] for j in helpful} == {C.principle_sha256(["\n" + config.helpful_principle])}
    # Ratings: good first on both dimensions, meh and bad tied; the stored rows are the result's numbers.
    stored = list(db["compare_ratings"].rows_where("run_id = ?", [run["id"]], order_by="dimension, rating desc"))
    assert [(r["dimension"], r["model"], r["role"], r["n"]) for r in stored][0] == ("harmlessness", "good", "RL-CAI", 8)
    for dim, n_prompts in (("harmlessness", 4), ("helpfulness", 3)):
        rows = res["ratings"]["judge"][dim]
        assert rows[0]["model"] == "good"
        assert rows[1]["rating"] == rows[2]["rating"]
        assert [r["n"] for r in rows] == [2 * n_prompts] * 3
        expected = C.rate_battles(C.battles([j for j in judgements if j["dimension"] == dim]), 50, 0)
        assert [(r["model"], r["rating"]) for r in rows] == [(r.model, round(r.rating, 4)) for r in expected]
        assert [(r["model"], r["rating"], r["ci_low"], r["ci_high"]) for r in stored if r["dimension"] == dim] == [
            (r["model"], r["rating"], r["ci_low"], r["ci_high"]) for r in rows]
    settings = res["judge_settings"]
    assert settings["judge_model"] == "judge" and settings["pm"] is None and res["seed"] == 0
    assert res["prompt_sets"] == {"harmlessness": "red", "helpfulness": "help"}
    assert res["turns"] == 1


def test_the_pm_judge_stores_p_equal_to_the_sigmoid_of_the_stored_scores(db, monkeypatch):
    seed(db, n_prompts=3)

    def fake_score(pm, prompts, responses, db=None, batch_size=8):
        return [{"good": 2.0, "meh": 0.5, "bad": -1.0}[r.split()[0][len("answer-"):]] for r in responses]

    monkeypatch.setattr(revisions, "score_fn", lambda: fake_score)
    config = CompareConfig(models="good,meh,bad", red_team="red", judges="pm", pm="pm-x", n_boot=20)
    run = run_compare(db, config, policies())
    assert run["status"] == "done", run["error"]
    scores = {(a["model"], a["prompt_id"]): a["pm_score"]
              for a in db["compare_answers"].rows_where("run_id = ?", [run["id"]])}
    judgements = list(db["compare_judgements"].rows_where("run_id = ?", [run["id"]]))
    assert len(judgements) == 9
    for j in judgements:
        sa, sb = scores[(j["model_a"], j["prompt_id"])], scores[(j["model_b"], j["prompt_id"])]
        assert j["p"] == 1 / (1 + math.exp(-(sa - sb)))
        assert json.loads(j["meta"]) == {"score_a": sa, "score_b": sb}
        assert (j["judge"], j["judge_model"], j["orders"], j["consistent"]) == ("pm", "pm-x", "score", None)
    order = [r["model"] for r in run["result"]["ratings"]["pm"]["harmlessness"]]
    assert order == ["good", "meh", "bad"]
    assert "helpfulness" not in run["result"]["ratings"]["pm"]


def test_a_cancelled_compare_resumes_without_doubling_a_row(db, monkeypatch):
    seed(db, n_prompts=4)
    config = CompareConfig(models="good meh bad", red_team="red", judges="judge", judge_model="judge",
                           constitution="test", n_boot=10, batch_size=2)
    judge = prefers("bad")
    calls = {"n": 0}
    inner = judge.option_logprobs

    def counted(prompts, options):
        calls["n"] += 1
        if calls["n"] == 2:
            runs.request_cancel(db, run_id)
        return inner(prompts, options)

    judge.option_logprobs = counted
    backends = {**policies(), "judge": judge}
    from contextlib import ExitStack

    with ExitStack() as stack:
        for name, backend in backends.items():
            stack.enter_context(runs.scripted(name, backend))
        run_id = runs.create_run(db, config)
        first = runs.execute(db, run_id)
        assert first["status"] == "cancelled"
        partial = db["compare_judgements"].count_where("run_id = ?", [run_id])
        assert 0 < partial < 12
        runs.prepare_resume(db, run_id)
        run = runs.execute(db, run_id)
    assert run["status"] == "done", run["error"]
    assert db["compare_answers"].count_where("run_id = ?", [run_id]) == 12
    assert db["compare_judgements"].count_where("run_id = ?", [run_id]) == 12
    assert db["compare_ratings"].count_where("run_id = ?", [run_id]) == 3
    assert run["result"]["ratings"]["judge"]["harmlessness"][0]["model"] == "bad"


@pytest.mark.parametrize("fields, message", [
    ({"models": "a"}, "models: name at least two different models, each once"),
    ({"models": "a a"}, "models: name at least two different models, each once"),
    ({"roles": "x"}, "roles: give one role per model (2), or none"),
    ({"judges": "crowd"}, "judges: one or both of pm, judge, each once"),
    ({"judges": "pm"}, "pm: name the preference model that judges (or drop pm from judges)"),
    ({"red_team": ""}, "red_team, helpful: name at least one prompt set to compare on"),
])
def test_bad_compare_configs_are_refused_with_one_line(fields, message):
    base = {"models": "a b", "red_team": "red", "judges": "judge"}
    with pytest.raises(ConfigError) as err:
        CompareConfig.from_dict({**base, **fields})
    assert str(err.value) == message


def test_rating_difference_is_paired_over_the_same_resamples():
    rows = [{"model_a": "x", "model_b": "y", "winner": w, "dimension": "d", "judge": "j", "prompt_id": i}
            for i, w in enumerate(["model_a"] * 8 + ["model_b"] * 2)]
    got = C.rating_difference(rows, "x", "y", 100, 0)
    point = ratings.point_ratings(C.battles(rows)[["model_a", "model_b", "winner"]])
    assert got["delta"] == round(point["x"] - point["y"], 4) and got["n"] == 10
    assert got["ci"][0] < got["delta"] < got["ci"][1]
