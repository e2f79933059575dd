"""Pipeline sweeps (issue 23 §3): which stage runs a sweep expands to, its one-line errors, and the report's
Figs. 6, 7 and 10 recomputed from the stored rows; `check_sweep_figures` is called by the end-to-end smoke test
in test_pipeline.py (one smoke run for both files)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cai.experiments import paired_bootstrap
from cai.pipeline import RecipeError, apply_sets, check
from cai.pipeline import recipe as R
from cai.pipeline.report import bootstrap_mean
from cai.stages import TemperatureConfig
from cai.stages.temperature import plan as temperature_plan

EVERY = {s: {} for s in ("sl", "sft", "pairs", "label", "pm", "scores", "rl", "temperature", "hhh")}


def recipe(sweep, **stages):
    return check({"policy": "base", "feedback": "judge", "prompts": {"red_team": "red"},
                  "stages": {**EVERY, **stages}, "sweep": sweep})


# ----------------------------------------------------------------------------- expansion (pure)


def test_sl_sweeps_run_only_sl_and_scores_once_per_value_one_key_at_a_time():
    r = recipe({"sl.principles": [1, 4, 16], "sl.mode": ["critique", "direct"]})
    base = {"sl.mode": "critique", "sl.principles": 1}
    assert R.plan(r) == [
        ("sl", base), ("sl", {**base, "sl.mode": "direct"}), ("sl", {**base, "sl.principles": 4}),
        ("sl", {**base, "sl.principles": 16}),
        ("sft", {}), ("pairs", {}), ("label", {}), ("pm", {}),
        ("scores", base), ("scores", {**base, "sl.mode": "direct"}), ("scores", {**base, "sl.principles": 4}),
        ("scores", {**base, "sl.principles": 16}),
        ("rl", {}), ("temperature", {}), ("hhh", {}),
    ]
    # The shared stages take the main line's outputs; a swept scores run takes the SL run at its own values.
    assert R.project(r, "sl", {}) == base
    assert R.project(r, "sl", {"sl.principles": 4, "sl.mode": "critique"}) == {**base, "sl.principles": 4}
    sl_direct = R.config(R.at(r, {**base, "sl.mode": "direct"}), "sl", {})
    assert (sl_direct.direct, sl_direct.num_principles) == (True, 1)
    sl_16 = R.config(R.at(r, {**base, "sl.principles": 16}), "sl", {})
    assert (sl_16.direct, sl_16.num_principles) == (False, 16)
    assert R.sweep_id(base) == '{"sl.mode": "critique", "sl.principles": 1}' and R.sweep_id({}) == ""


def test_a_policy_sweep_runs_every_stage_the_policy_feeds_and_shares_the_feedback_evals():
    r = recipe({"policy": ["small", "large"]})
    assert R.plan(r) == [(s, {"policy": p}) for s in ("sl", "sft", "pairs", "label", "pm", "scores", "rl",
                                                      "temperature") for p in ("small", "large")] + [("hhh", {})]
    assert R.config(R.at(r, {"policy": "large"}), "sl", {}).model == "large"
    assert R.config(R.at(r, {"policy": "large"}), "hhh", {}).model == "judge"  # the feedback model, not swept


def test_without_a_sweep_the_plan_is_one_run_per_stage_and_the_recipe_has_no_sweep_key():
    r = check({"policy": "base", "prompts": {"red_team": "red"}, "stages": {"sl": {}, "sft": {}}})
    assert "sweep" not in r and R.plan(r) == [("sl", {}), ("sft", {})]


def test_set_can_give_or_drop_a_sweep():
    base = {"policy": "base", "prompts": {"red_team": "red"}, "stages": {"sl": {}}}
    assert check(apply_sets(base, ["sweep.sl.principles=[1, 2]"]))["sweep"] == {"sl.principles": [1, 2]}
    assert "sweep" not in check(apply_sets({**base, "sweep": {"sl.mode": ["critique", "direct"]}}, ["sweep="]))


@pytest.mark.parametrize("sweep, stages, message", [
    ({"sl.temperature": [0, 1]}, {}, r"sweep\.sl\.temperature: not a key a sweep can vary \(known: sl\.principles, "
                                     r"sl\.mode, policy\)"),
    ({"sl.principles": 4}, {}, r"sweep\.sl\.principles: a list of two or more values \(whole numbers >= 1, e\.g\. "
                               r"\[1, 4, 16\]\), got 4"),
    ({"sl.principles": [4]}, {}, r"sweep\.sl\.principles: a list of two or more values"),
    ({"sl.principles": [1, 0]}, {}, r"sweep\.sl\.principles: 0 is not a value of it \(whole numbers >= 1"),
    ({"sl.principles": [1, "many"]}, {}, r"sweep\.sl\.principles: 'many' is not a value of it"),
    ({"sl.principles": [1, True]}, {}, r"sweep\.sl\.principles: True is not a value of it"),
    ({"sl.principles": [1, 1]}, {}, r"sweep\.sl\.principles: a value is listed twice in \[1, 1\]"),
    ({"sl.mode": ["critique", "revise"]}, {}, r"sweep\.sl\.mode: 'revise' is not a value of it \(critique or direct\)"),
    ({"policy": ["a", ""]}, {}, r"sweep\.policy: '' is not a value of it \(model names\)"),
    ({"sl.mode": ["critique", "direct"]}, {"sl": {"reuse": 3}},
     r"sweep\.sl\.mode: stages\.sl reuses run 3, but it depends on sl\.mode and runs once per value"),
    ({"policy": ["a", "b"]}, {"pm": {"reuse": 5}}, r"sweep\.policy: stages\.pm reuses run 5"),
    (["sl.mode"], {}, r"sweep: a mapping of KEY: \[values\]"),
])
def test_a_bad_sweep_is_a_one_line_error_naming_the_key(sweep, stages, message):
    with pytest.raises(RecipeError, match=f"^{message}") as err:
        recipe(sweep, **stages)
    assert "\n" not in str(err.value)


def test_a_sweep_of_a_stage_the_recipe_lacks_is_refused():
    with pytest.raises(RecipeError, match=r"^sweep\.sl\.mode: the recipe has no sl stage to vary$"):
        check({"policy": "p", "prompts": {"red_team": "red"}, "stages": {"hhh": {}},
               "sweep": {"sl.mode": ["critique", "direct"]}})


# ----------------------------------------------------------------------------- the temperature stage (pure)


def test_temperature_stage_plans_one_greedy_answer_and_k_samples_above_zero():
    prompts = [{"id": 7}, {"id": 9}]
    items = temperature_plan(TemperatureConfig(policy="p", pm="m", prompts="red", samples=2), prompts)
    assert [(p["id"], t, k) for p, t, k in items] == [(7, 0.0, 0), (9, 0.0, 0), (7, 1.0, 0), (7, 1.0, 1),
                                                      (9, 1.0, 0), (9, 1.0, 1)]
    from cai.config import ConfigError

    for bad in ("1", "0, 0", "0, hot", "-1, 1"):
        with pytest.raises(ConfigError, match="^temperatures: "):
            TemperatureConfig(policy="p", pm="m", prompts="red", temperatures=bad).validate()


def test_the_temperature_stage_takes_the_final_policy_and_the_prompts_after_those_used_before():
    r = recipe({"sl.mode": ["critique", "direct"]}, sl={"limit": 3}, pairs={"limit": 3}, rl={"limit": 4})
    cfg = R.config(r, "temperature", {"sft": "sft-2", "rl": "rl-5", "pm": "pm-4"})
    assert (cfg.policy, cfg.pm, cfg.prompts, cfg.offset) == ("rl-5", "pm-4", "red", 4)
    assert R.config(r, "temperature", {"sft": "sft-2", "pm": "pm-4"}).policy == "sft-2"  # no RL: the SFT model
    assert R.held_out(recipe({"sl.mode": ["critique", "direct"]}, sl={"limit": 3})) == 0  # pairs has no limit
    assert R.needs("temperature") == ["pm"]


# ----------------------------------------------------------------------------- the report against stored rows


def _finals(db, sl_run_id):
    rows = db.execute(
        "select c.prompt_id, c.sample, s.pm_score from chains c join chain_steps s on s.chain_id = c.id "
        "where c.run_id = ? and c.mode != 'helpful' and s.kind in ('initial', 'revision') and s.round = "
        "(select max(s2.round) from chain_steps s2 where s2.chain_id = c.id and s2.kind in ('initial', 'revision')) "
        "order by c.prompt_id, c.sample", [sl_run_id]).fetchall()
    return {(p, k): v for p, k, v in rows}


def check_sweep_figures(db, pipeline_id, shown, report, cli_text):
    """The smoke pipeline's sweep: its stage runs, and Figs. 6, 7 and 10 equal to what the rows store."""
    from cai import runs

    recipe = shown["recipe"]
    assert recipe["sweep"] == {"sl.mode": ["critique", "direct"], "sl.principles": [1, 4, 16]}
    swept = [(s["stage"], s["sweep"]) for s in shown["stages"] if s["sweep"]]
    base = {"sl.mode": "critique", "sl.principles": 1}
    points = [base, {**base, "sl.mode": "direct"}, {**base, "sl.principles": 4}, {**base, "sl.principles": 16}]
    assert swept == [("sl", p) for p in points] + [("scores", p) for p in points]
    assert "sl.mode=direct, sl.principles=1" in cli_text and "sl.mode=critique, sl.principles=16" in cli_text
    by = {(s["stage"], json.dumps(s["sweep"], sort_keys=True)): runs.get_run(db, s["run_id"]) for s in shown["stages"]}
    sl = {p["sl.principles"] if p["sl.mode"] == "critique" else "direct": by[("sl", json.dumps(p, sort_keys=True))]
          for p in points}
    scores = {k: by[("scores", json.dumps(p, sort_keys=True))] for k, p in zip(sl, points, strict=True)}
    for key, run in sl.items():  # each SL run ran at its values, and its scores run scored that run
        assert (run["config"]["num_principles"], run["config"]["direct"]) == \
            ((1, True) if key == "direct" else (key, False))
        assert scores[key]["config"]["run"] == run["id"]
    assert {by[("sft", "{}")]["config"]["chains"]} == {sl[1]["id"]}  # the main line feeds the SFT model
    seed = recipe["seed"]

    fig6 = report["fig6"]["measured"]
    finals = {k: _finals(db, sl[k]["id"]) for k in (1, 4, 16)}
    assert [(p["principles"], p["n"], p["runs"]) for p in fig6["points"]] == \
        [(k, len(finals[k]), [sl[k]["id"], scores[k]["id"]]) for k in (1, 4, 16)]
    assert [(p["mean"], p["ci"]) for p in fig6["points"]] == \
        [bootstrap_mean(list(finals[k].values()), seed=seed) for k in (1, 4, 16)]
    assert [p["mean"] for p in fig6["points"]] == \
        pytest.approx([float(np.mean(list(finals[k].values()))) for k in (1, 4, 16)], abs=1e-6)
    keys = sorted(finals[1])
    d = paired_bootstrap([finals[1][k] for k in keys], [finals[16][k] for k in keys], seed=seed)
    assert fig6["most_minus_fewest"] == {"principles": [1, 16], "delta": d.delta, "ci": [d.lo, d.hi], "n": d.n}
    n = recipe["stages"]["sl"]["limit"]
    assert d.n == n  # one chain per red-team prompt

    fig7 = report["fig7"]["measured"]
    for mode, key in (("critique", 1), ("direct", "direct")):
        rows = db.execute(
            "select s.round, count(*), avg(s.pm_score) from chains c join chain_steps s on s.chain_id = c.id where "
            "c.run_id = ? and c.mode = ? and s.kind in ('initial', 'revision') group by s.round order by s.round",
            [sl[key]["id"], mode]).fetchall()
        assert [(p["revision"], p["n"]) for p in fig7["curves"][mode]] == [(r, k) for r, k, _ in rows] == [(0, n), (1, n)]
        assert [p["mean"] for p in fig7["curves"][mode]] == pytest.approx([m for _, _, m in rows], abs=1e-6)
    crit, direct = _finals(db, sl[1]["id"]), _finals(db, sl["direct"]["id"])
    d = paired_bootstrap([direct[k] for k in keys], [crit[k] for k in keys], seed=seed)
    assert fig7["critique_minus_direct"] == {"delta": d.delta, "ci": [d.lo, d.hi], "n": n}
    assert report["fig7"]["verdict"] == R_verdict(d.lo, d.hi)

    temp = by[("temperature", "{}")]
    assert (temp["config"]["policy"], temp["config"]["pm"], temp["config"]["offset"]) == \
        (by[("rl", "{}")]["result"]["model"], by[("pm", "{}")]["result"]["model"], 4)
    rows = list(db["temperature_samples"].rows_where("run_id = ?", [temp["id"]], order_by="temperature, prompt_id"))
    assert [(r["temperature"], r["sample"]) for r in rows] == [(0.0, 0)] * 3 + [(1.0, 0)] * 3
    assert len({r["prompt_id"] for r in rows}) == 3
    fig10 = report["fig10"]["measured"]
    low, high = ([r["pm_score"] for r in rows if r["temperature"] == t] for t in (0.0, 1.0))
    assert [(p["temperature"], p["n"], p["mean_score"], p["ci"]) for p in fig10["points"]] == \
        [(t, 3, *bootstrap_mean(v, seed=seed)) for t, v in ((0.0, low), (1.0, high))]
    d = paired_bootstrap(high, low, seed=seed)  # one answer per prompt at each temperature: T = 0 minus T = 1
    assert fig10["low_minus_high"] == {"temperatures": [0.0, 1.0], "delta": d.delta, "ci": [d.lo, d.hi], "n": 3}
    assert report["fig10"]["verdict"] == R_verdict(d.lo, d.hi)
    assert report["fig3"]["why"] == "the recipe does not sweep policy"


def R_verdict(lo, hi):
    from cai.pipeline.report import verdict

    return verdict(lo, hi, 0.0)


def test_the_pipeline_page_names_each_swept_stage_runs_values():
    from ui import pipeline as page

    shown = {"id": 3, "name": "smoke", "status": "running", "error": None, "stages": [
        {"stage": "sl", "kind": "sl", "run_id": 4, "status": "done", "done": 2, "total": 2, "output": 4,
         "sweep": {"sl.mode": "critique", "sl.principles": 4}},
        {"stage": "sft", "kind": "sft", "run_id": None, "status": "not started", "done": 0, "total": 0, "sweep": {}}]}
    html = page.stages_html(shown)
    assert "<td>sl [sl.mode=critique, sl.principles=4]</td>" in html and "<td>sft</td>" in html


@pytest.mark.timeout(600)
def test_a_policy_sweep_runs_each_policys_stages_and_fig3_reads_their_rows(db_path):
    from cai import pipeline, runs, store
    from cai.backends import model_path
    from cai.cli import main
    from cai.models import register_model
    from cai.pipeline import report as rep
    from cai.pipeline.runner import links

    assert main(["init", "--db", str(db_path)]) == 0
    db = store.connect(db_path)
    register_model(db, "tiny-b", model_path("tiny"))  # the same weights under a second name: a second "size"
    pipe = pipeline.create(db, "smoke", ["sweep={policy: [tiny, tiny-b]}", "sl.limit=2", "stages.dpo.skip=true",
                                         "stages.hhh.skip=true", "stages.agreement.skip=true"])
    proc = runs.launch(db_path, pipe)
    final = runs.wait(db, pipe, timeout=500)
    proc.wait()
    assert final["status"] == "done", final["error"]
    rows = links(db, pipe)
    assert [(r["stage"], json.loads(r["sweep"])["policy"]) for r in rows] == [
        (s, p) for s in ("sl", "sft", "pairs", "label", "pm", "scores", "rl", "temperature", "compare")
        for p in ("tiny", "tiny-b")]
    at = {(r["stage"], json.loads(r["sweep"])["policy"]): runs.get_run(db, r["run_id"]) for r in rows}
    assert at[("sl", "tiny-b")]["config"]["model"] == "tiny-b"
    assert at[("sft", "tiny-b")]["config"]["chains"] == at[("sl", "tiny-b")]["id"]
    assert at[("rl", "tiny-b")]["config"]["reward_model"] == at[("pm", "tiny-b")]["result"]["model"]
    report = rep.build(db, pipe)
    fig3 = report["fig3"]["measured"]
    gains = {}
    for policy in ("tiny", "tiny-b"):
        figs = fig3["per_policy"][policy]
        steps = db.execute(
            "select s.round, count(*), avg(s.pm_score) from chain_steps s join chains c on c.id = s.chain_id where "
            "c.run_id = ? and c.mode != 'helpful' and s.kind in ('initial', 'revision') group by s.round",
            [at[("sl", policy)]["id"]]).fetchall()
        assert [(p["revision"], p["n"]) for p in figs["fig5"]["measured"]["points"]] == [(r, n) for r, n, _ in steps]
        assert figs["fig5"]["runs"] == [at[("sl", policy)]["id"], at[("scores", policy)]["id"]]
        assert figs["fig10"]["runs"] == [at[("temperature", policy)]["id"]]
        assert figs["pm"]["measured"]["accuracy"] == at[("pm", policy)]["result"]["heldout_accuracy"]
        finals = _finals(db, at[("sl", policy)]["id"])
        initial = dict(((p, k), v) for p, k, v in db.execute(
            "select c.prompt_id, c.sample, s.pm_score from chains c join chain_steps s on s.chain_id = c.id "
            "where c.run_id = ? and c.mode != 'helpful' and s.kind = 'initial'", [at[("sl", policy)]["id"]]))
        gains[policy] = [finals[k] - initial[k] for k in sorted(finals)]
    delta, lo, hi = rep.bootstrap_diff(gains["tiny"], gains["tiny-b"])
    assert fig3["gain_last_minus_first"] == {"policies": ["tiny", "tiny-b"], "delta": delta, "ci": [lo, hi], "n": [2, 2]}
    assert report["fig3"]["verdict"] == R_verdict(lo, hi)
    assert report["fig6"]["why"] == "the recipe does not sweep sl.principles"


def test_each_sweep_point_gets_its_own_linked_stage_run_once(db_path):
    from cai import pipeline, runs, store
    from cai.cli import main
    from cai.pipeline.runner import child, links

    assert main(["init", "--db", str(db_path)]) == 0
    db = store.connect(db_path)
    pipe = pipeline.create(db, "smoke", [])
    spec = store.loads(runs.get_run(db, pipe)["config"]["spec"])
    base, direct = {"sl.mode": "critique", "sl.principles": 1}, {"sl.mode": "direct", "sl.principles": 1}
    first = child(db, pipe, spec, "sl", 0, {}, base)
    second = child(db, pipe, spec, "sl", 1, {}, direct)
    assert first != second and runs.get_run(db, second)["config"]["direct"] is True
    assert (child(db, pipe, spec, "sl", 0, {}, base), child(db, pipe, spec, "sl", 1, {}, direct)) == (first, second)
    assert [(r["run_id"], r["sweep"]) for r in links(db, pipe)] == [(first, R.sweep_id(base)), (second, R.sweep_id(direct))]
    assert db["runs"].count == 3  # the pipeline and its two SL runs: asking again made none
