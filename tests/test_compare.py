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
    # The same config and seed without the interruption: the same judgements and ratings.
    with ExitStack() as stack:
        for name, backend in {**policies(), "judge": prefers("bad")}.items():
            stack.enter_context(runs.scripted(name, backend))
        again = runs.execute(db, runs.create_run(db, config))
    assert again["result"]["ratings"] == run["result"]["ratings"]
    cols = "judge, dimension, prompt_id, model_a, model_b, p, winner, consistent, principle"
    first, second = (db.execute(f"select {cols} from compare_judgements where run_id = ? order by dimension, "
                                "prompt_id, model_a, model_b", [r]).fetchall() for r in (run_id, again["id"]))
    assert first == second and len(first) == 12
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


# ----------------------------------------------------------------------------- arena campaigns and Figure 2


def judged_run(db, prefer="good", answers=None):
    """A finished compare run: good (RL-CAI), meh (SL-CAI), bad (base) on 4 red-team and 3 helpful prompts,
    judged by a judge model that prefers `prefer`'s answers (`answers`: other scripted policies)."""
    seed(db, n_prompts=4, helpful=3)
    config = CompareConfig(models="good meh bad", roles="RL-CAI SL-CAI base", red_team="red", helpful="help",
                           judges="judge", judge_model="judge", constitution="test", n_boot=50, max_new_tokens=8,
                           limit=3)
    run = run_compare(db, config, {**(answers or policies()), "judge": prefers(prefer)})
    assert run["status"] == "done", run["error"]
    return run


def test_cli_from_compare_makes_one_campaign_per_dimension_with_its_models_and_prompts(db, db_path, capsys):
    from cai import arena, data
    from cai.cli import main

    run = judged_run(db)
    argv = ["arena", "campaign", "create", "--from-compare", str(run["id"]), "--db", str(db_path), "--json"]
    assert main(argv) == 0
    made = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["dimension"], c["models"], c["prompt_set"], c["max_turns"], c["prompts"]) for c in made] == [
        (f"compare-{run['id']}-harmlessness", "harmlessness", MODELS, f"compare-{run['id']}-harmlessness", 1, 3),
        (f"compare-{run['id']}-helpfulness", "helpfulness", MODELS, f"compare-{run['id']}-helpfulness", 1, 3)]
    for camp, source in zip(made, ("red", "help"), strict=True):
        got = arena.get_campaign(db, camp["name"])
        assert got["compare_run_id"] == run["id"]
        assert (got["max_new_tokens"], got["temperature"]) == (8, 0.0)
        # Exactly the prompts the run compared (limit 3 of each set), in order.
        assert [p["text"] for p in data.list_prompts(db, camp["prompt_set"])] == [
            p["text"] for p in data.list_prompts(db, source, limit=3)]
        assert data.get_prompt_set(db, camp["prompt_set"])["kind"] == ("red-team" if source == "red" else "helpful")
    # Again: refused, nothing made twice.
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: a campaign named 'compare-{run['id']}-harmlessness' already exists (choose another NAME)")
    assert main([*argv[:3], "mine", *argv[3:]]) == 0
    assert [c["name"] for c in json.loads(capsys.readouterr().out)] == ["mine-harmlessness", "mine-helpfulness"]
    assert db["campaigns"].count == 4


@pytest.mark.parametrize("argv, message", [
    (["--from-compare", "99"], "error: no run with id 99"),
    (["--from-compare", "1", "--models", "a,b"],
     "error: --from-compare takes the models, dimensions and prompts of the compare run: drop --models"),
    (["x", "--dimension", "helpfulness"], "error: give --models (or --from-compare RUN_ID)"),
    ([], "error: give NAME, --models, --dimension (or --from-compare RUN_ID)"),
])
def test_cli_campaign_create_bad_input_is_one_line(db, db_path, capsys, argv, message):
    from cai.cli import main

    assert main(["arena", "campaign", "create", *argv, "--db", str(db_path)]) == 2
    assert capsys.readouterr().err.strip() == message
    assert db["campaigns"].count == 0


def test_from_compare_refuses_another_kind_of_run_an_unfinished_one_and_test_models(db):
    from cai import arena
    from cai.arena.compare import from_compare
    from cai.stages import SLConfig

    seed(db, n_prompts=2)
    sl = runs.create_run(db, SLConfig(prompts="red", model="tiny"))
    with pytest.raises(arena.ArenaError, match=f"^run {sl} is a sl run, not a compare run$"):
        from_compare(db, sl)
    queued = runs.create_run(db, CompareConfig(models="tiny good", red_team="red"))
    with pytest.raises(arena.ArenaError, match=f"^compare run {queued} is queued: make a campaign from a finished one$"):
        from_compare(db, queued)
    db["runs"].update(queued, {"status": "done", "result": json.dumps({"models": ["tiny", "good"],
                                                                         "prompt_sets": {"harmlessness": "red"}})})
    with pytest.raises(arena.ArenaError, match="tiny is a test model"):
        from_compare(db, queued)
    assert db["campaigns"].count == 0 and not db["prompt_sets"].count_where("name like 'compare-%'")


def test_fig2_reads_the_stored_ratings_and_puts_human_votes_beside_them(db):
    from cai import arena, users
    from cai.arena.compare import from_compare
    from cai.backend_pool import BackendPool, stream_pair
    from cai.pipeline import fig2
    from cai.pipeline.report import AS, verdict

    run = judged_run(db, prefer="good")
    got = fig2.figure(db, runs.get_run(db, run["id"]))
    m = got["measured"]
    assert "why" not in got and {t["against"]: t["identical_answers"] for t in m["rl_minus"]} == {
        "SL-CAI": {"harmlessness": [0, 3], "helpfulness": [0, 3]}, "base": {"harmlessness": [0, 3], "helpfulness": [0, 3]}}
    stored = {(r["dimension"], r["model"]): r for r in db["compare_ratings"].rows_where("run_id = ?", [run["id"]])}
    assert [p["model"] for p in m["models"]] == MODELS and [p["role"] for p in m["models"]] == ["RL-CAI", "SL-CAI", "base"]
    for p in m["models"]:
        for dim in ("harmlessness", "helpfulness"):
            r = stored[(dim, p["model"])]
            assert p[dim] == {"rating": r["rating"], "ci": [r["ci_low"], r["ci_high"]], "n": r["n"]}
    judgements = list(db["compare_judgements"].rows_where("run_id = ?", [run["id"]], order_by="id"))
    for test, other in zip(m["rl_minus"], ("meh", "bad"), strict=True):
        assert test["model"] == other
        for dim in ("harmlessness", "helpfulness"):
            assert test[dim] == C.rating_difference([j for j in judgements if j["dimension"] == dim], "good", other,
                                                    50, 0)
    # The judge always prefers RL-CAI: every resample has it ahead, so the intervals lie above 0.
    assert all(verdict(*t["harmlessness"]["ci"], 0.0) == AS for t in m["rl_minus"])
    assert got["verdict"] == AS and "human" not in m

    # Humans who (like the judge) always prefer good's answer, on the campaign made from the run.
    from_compare(db, run["id"])
    uid = users.add_user(db, "rita", "rater", "password1")
    pool = BackendPool(loader=lambda row: ScriptedBackend(respond=lambda p, n=row["name"]: f" answer-{n}"))
    for k in range(12):
        view = arena.start_battle(db, f"compare-{run['id']}-harmlessness", uid, seed=k)
        job = arena.begin_turn(db, view["battle_id"], uid, "")
        *_, result = list(stream_pair(job, pool))
        arena.finish_turn(db, job, result.text_a, result.text_b, error=result.error)
        b = db["battles"].get(view["battle_id"])
        names = {models_id: db["models"].get(models_id)["name"] for models_id in (b["model_a"], b["model_b"])}
        side = "A" if names[b["model_a"]] == "good" else "B" if names[b["model_b"]] == "good" else "tie"
        arena.cast_vote(db, view["battle_id"], uid, 1, side)
    human = fig2.figure(db, runs.get_run(db, run["id"]))["measured"]["human"]
    assert list(human) == ["harmlessness", "helpfulness"]
    assert (human["helpfulness"]["votes"], human["helpfulness"]["ratings"]) == (0, [])
    h = human["harmlessness"]
    assert h["votes"] == 12 and h["ratings"][0]["model"] == "good"
    votes = arena.votes_frame(db, campaign=f"compare-{run['id']}-harmlessness")
    expected = ratings.rate(votes[["model_a", "model_b", "winner"]], "bt", rounds=50, seed=0)
    assert [(r["model"], r["rating"], r["n"]) for r in h["ratings"]] == [
        (r.model, round(r.rating, 4), r.n) for r in expected]
    auto = {r["model"]: r["rating"] for r in m["ratings"]["judge"]["harmlessness"]}
    assert h["agreement"] == C.order_agreement(auto, {r["model"]: r["rating"] for r in h["ratings"]})
    assert h["agreement"]["pairs"] >= 2 and h["agreement"]["agree"] >= 2


def test_runs_show_and_the_run_page_show_the_ratings_and_the_page_makes_the_campaigns(db, db_path, capsys):
    from types import SimpleNamespace

    import gradio as gr

    from cai import users
    from cai.cli import main
    from cai.stages.compare import rating_lines
    from ui import dashboard as D
    from ui.common import AppContext

    run = judged_run(db)
    lines = rating_lines(run["result"])
    judge = run["result"]["ratings"]["judge"]
    first = judge["harmlessness"][0]
    assert lines[0] == "harmlessness (judge):" and len(lines) == 2 * (1 + 3)
    assert lines[1] == (f"  RL-CAI     good                     {first['rating']:8.1f} "
                        f"({first['note']}) n = 6")  # 6 judgements: no interval below 10 (cai.evals.ratings)
    assert main(["runs", "show", str(run["id"]), "--db", str(db_path)]) == 0
    assert "\n".join(["ratings:", *lines]) in capsys.readouterr().out
    html = D.made_html(db, runs.get_run(db, run["id"]))
    assert "<pre id='compare-ratings'" in html and "RL-CAI" in html

    users.add_user(db, "ada", "admin", "password1")
    users.add_user(db, "val", "viewer", "password1")
    ctx = AppContext(db_path)
    viewer, admin = (SimpleNamespace(username=u) for u in ("val", "ada"))
    with pytest.raises(gr.Error, match="needs the admin role"):
        D.campaigns_from_compare(ctx, run["id"], viewer)
    assert D.campaigns_from_compare(ctx, None, admin) == "Error: Select a compare run first."
    page, _, _ = D.run_detail(ctx, run["id"], admin)
    assert html in page  # the run page shows the ratings
    assert D.campaigns_from_compare(ctx, run["id"], admin) == (
        f"Made arena campaigns compare-{run['id']}-harmlessness, compare-{run['id']}-helpfulness: raters find them "
        "on the Arena tab.")
    assert D.campaigns_from_compare(ctx, run["id"], admin) == (  # escaped for the page
        f"Error: a campaign named &#x27;compare-{run['id']}-harmlessness&#x27; already exists (choose another NAME)")


# A report's provenance as report.provenance builds it (the page renders every field).
PROVENANCE = {"recipe": "r", "recipe_sha256": "0" * 64, "constitution": "default@1", "constitution_sha256": "1" * 64,
              "prompt_sets": {"red_team": "rt", "helpful": "h"}, "human_prefs": None, "hhh_data": None, "models": [],
              "stage_runs": {}, "packages": {}}


@pytest.mark.parametrize("prefer, expected", [("bad", "not as in the paper"), ("nobody", "not enough data")])
def test_fig2_verdict_follows_rl_cai_s_harmlessness_intervals(db, prefer, expected):
    from cai.pipeline import fig2
    from cai.pipeline.report import html as report_html

    run = judged_run(db, prefer=prefer)
    got = fig2.figure(db, runs.get_run(db, run["id"]))
    harmless = [t["harmlessness"] for t in got["measured"]["rl_minus"]]
    if prefer == "bad":  # base beats RL-CAI on every prompt: its interval lies below 0
        assert harmless[1]["ci"][1] < 0
    else:  # every judgement a tie: no difference at all
        assert [t["delta"] for t in harmless] == [0.0, 0.0] and [t["ci"] for t in harmless] == [[0.0, 0.0]] * 2
        zero = "+0.0 [+0.0, +0.0], n = 9"  # n: the dimension's judgements the ratings are fit on (3 pairs x 3)
        assert fig2.headline(got["measured"]) == (
            f"judged by the feedback model: RL-CAI vs SL-CAI: harmlessness {zero}, helpfulness {zero}; "
            f"RL-CAI vs base: harmlessness {zero}, helpfulness {zero}")
    assert got["verdict"] == expected
    page = report_html({"pipeline": 1, "status": "done", "provenance": PROVENANCE, "fig2": got,
                        **{k: {"claim": "", "measured": {}, "verdict": "not enough data"}
                           for k in ("pm", "fig4", "fig5", "fig8", "fig10", "goodhart")}})
    assert page.count("plotly.js") >= 1 and "harmlessness rating" in page and "RL-CAI (good)" in page


def test_fig2_says_where_rl_cai_answered_word_for_word_as_its_comparator(db):
    """A little-trained RL policy can answer exactly as the SL model: those pairs are ties whoever judges, and
    the figure says how many (here: every prompt; and against base on the prompts of odd length)."""
    from cai.pipeline import fig2

    same = {"good": lambda p: " same", "meh": lambda p: " same", "bad": lambda p: " same" if len(p) % 2 else " other"}
    run = judged_run(db, prefer="nobody", answers={m: ScriptedBackend(respond=f) for m, f in same.items()})
    got = fig2.figure(db, runs.get_run(db, run["id"]))
    odd = {d: sum(len(a["prompt"]) % 2 for a in db["compare_answers"].rows_where(
        "run_id = ? and model = 'bad' and dimension = ?", [run["id"], d])) for d in ("harmlessness", "helpfulness")}
    assert [(t["against"], t["identical_answers"]) for t in got["measured"]["rl_minus"]] == [
        ("SL-CAI", {"harmlessness": [3, 3], "helpfulness": [3, 3]}),
        ("base", {"harmlessness": [odd["harmlessness"], 3], "helpfulness": [odd["helpfulness"], 3]})]
    base = "; ".join(f"{odd[d]} of 3 {d} prompts vs base" for d in ("harmlessness", "helpfulness") if odd[d])
    assert got["why"] == ("RL-CAI gave word for word the same answer on 3 of 3 harmlessness prompts vs SL-CAI; "
                          "3 of 3 helpfulness prompts vs SL-CAI" + (f"; {base}" if base else "")
                          + " (a tie whoever judges: its training changed those answers not at all)")


def test_every_pair_on_a_prompt_is_judged_under_the_same_drawn_principle(db):
    """Two models with the same answers get the same judgements against a third, so they rate alike."""
    from cai.constitution import create_constitution
    from tests.helpers import CONSTITUTION

    seed(db, n_prompts=6, helpful=1)
    names = [f"cmp{i}" for i in range(5)]
    create_constitution(db, "many", principles=[*CONSTITUTION["principles"][:2], *(
        {"kind": "comparison", "name": n, "text": f"Principle {n}: which is better?"} for n in names)])
    config = CompareConfig(models="good meh bad", roles="RL-CAI SL-CAI base", red_team="red", helpful="help",
                           judges="judge", judge_model="judge", constitution="many", n_boot=20, max_new_tokens=8,
                           limit=6)
    twins = {"good": lambda p: " same", "meh": lambda p: " same", "bad": lambda p: " other"}


    def judge(prompt, option):  # under cmp0 or cmp1 the other answer wins, under the rest the twins' answer
        a = prompt[prompt.rfind("Options:"):].split("(B)")[0]
        wanted = "other" if any(f"Principle cmp{i}:" in prompt for i in (0, 1)) else "same"
        return 0.0 if (option == " (A)") == (wanted in a) else -5.0

    run = run_compare(db, config, {**{m: ScriptedBackend(respond=f) for m, f in twins.items()},
                                   "judge": ScriptedBackend(score=judge)})
    assert run["status"] == "done", run["error"]
    rows = list(db["compare_judgements"].rows_where("run_id = ? and dimension = 'harmlessness'", [run["id"]]))
    by_prompt: dict[int, set[str]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], set()).add(r["principle"])
    assert len(by_prompt) == 6 and all(len(used) == 1 for used in by_prompt.values())  # one per prompt
    assert len(set().union(*by_prompt.values())) > 1  # and drawn: not the same for every prompt
    ratings = {r["model"]: r["rating"] for r in db["compare_ratings"].rows_where(
        "run_id = ? and judge = 'judge' and dimension = 'harmlessness'", [run["id"]])}
    assert ratings["good"] == ratings["meh"] and len(set(ratings.values())) == 2
