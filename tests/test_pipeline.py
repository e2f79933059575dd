"""Pipelines: recipes checked against the stage registry, stage runs wired into each other, kill -9 and resume
without a doubled stage run (cai.pipeline). The end-to-end tests run recipes/smoke.yaml on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from cai import pipeline, runs, store
from cai.cli import main
from cai.pipeline import RecipeError, apply_sets, check
from cai.pipeline import recipe as R
from cai.pipeline.report import bootstrap_diff, verdict
from cai.pipeline.runner import links, show
from tests.test_pipeline_sweep import check_sweep_figures

SMOKE_STAGES = ["sl", "sft", "pairs", "label", "pm", "scores", "rl", "temperature", "dpo", "compare", "hhh", "agreement"]


def minimal(**stages):
    return {"policy": "tiny", "prompts": {"red_team": "red"}, "stages": stages or {"sl": {}}}


# ----------------------------------------------------------------------------- recipes (pure)


def test_set_edits_stage_sections_and_top_level_keys_with_yaml_types():
    recipe = {"policy": "a", "stages": {"sl": {"revisions": 4}}}
    out = apply_sets(recipe, ["sl.revisions=2", "policy=smol", "stages.pm.lora=true", "sl.temperature=0.7",
                              "prompts.red_team=red"])
    assert out == {"policy": "smol", "prompts": {"red_team": "red"},
                   "stages": {"sl": {"revisions": 2, "temperature": 0.7}, "pm": {"lora": True}}}
    assert recipe == {"policy": "a", "stages": {"sl": {"revisions": 4}}}  # the original is left alone
    with pytest.raises(RecipeError, match="write KEY=VALUE"):
        apply_sets(recipe, ["sl.revisions"])
    with pytest.raises(RecipeError, match="policy is not a section"):
        apply_sets(recipe, ["policy.x=1"])


@pytest.mark.parametrize("recipe, message", [
    ({"stages": {"sl": {}}}, "policy: name the policy model"),
    ({**minimal(), "polcy": "x"}, r"unknown key\(s\) polcy"),
    (minimal(sl={"revison": 2}), r"stages.sl: unknown field\(s\) revison \(fields of sl: .*revisions"),
    (minimal(sl={"revisions": 99}), "stages.sl: revisions: must be <= 8, got 99"),
    (minimal(sl={"revisions": "two"}), "stages.sl: revisions"),
    (minimal(pm={"loss": "fancy"}, label={}), r"stages.label needs stage pairs"),
    (minimal(rl={}), "stages.rl needs stage pm"),
    (minimal(sl={}, pm={"reuse": "x"}), "stages.pm.reuse: a run id on its own"),
    (minimal(sl={}, pm={"reuse": 3, "lora": True}), "stages.pm.reuse: a run id on its own"),
    (minimal(tune={}), "stages: unknown stage"),
    ({**minimal(), "seed": 1.5}, "seed: a whole number"),
])
def test_check_refuses_a_wrong_recipe_naming_the_key(recipe, message):
    with pytest.raises(RecipeError, match=message):
        check(recipe)


def test_check_fills_defaults_and_drops_skipped_stages():
    out = check({**minimal(sl={"revisions": 1}, sft={"skip": True}, pairs=None, hhh={"limit": 2}),
                 "feedback": "fb", "constitution": "c@2"})
    assert out == {"name": "pipeline", "description": "", "policy": "tiny", "feedback": "fb", "pm_base": "fb",
                   "constitution": "c@2", "seed": 0, "prompts": {"red_team": "red"}, "human_prefs": "",
                   "hhh_data": "", "stages": {"sl": {"revisions": 1}, "hhh": {"limit": 2}}}


def test_each_stage_config_takes_the_outputs_of_the_stages_before_it():
    recipe = check({"policy": "base", "feedback": "judge", "constitution": "c@3", "seed": 7,
                    "prompts": {"red_team": "red", "helpful": "help"}, "human_prefs": "hh",
                    "stages": {s: {} for s in SMOKE_STAGES} | {"rl": {"beta": 0.1}, "hhh": {"data": "h.jsonl"}}})
    out = {"sl": 2, "sft": "sft-3", "pairs": 4, "label": "labels-5", "pm": "pm-6"}
    pick = {
        "sl": ("prompts", "model", "helpful_prompts", "constitution", "constitution_version", "seed"),
        "sft": ("chains", "model", "seed"),
        "pairs": ("prompts", "model", "seed"),
        "label": ("pairs", "feedback_model", "constitution", "constitution_version", "seed"),
        "pm": ("ai_prefs", "human_prefs", "model", "seed"),
        "scores": ("run", "pm"),
        "rl": ("policy", "reward_model", "prompts", "helpful_prompts", "beta", "seed"),
        "dpo": ("policy", "prefs", "seed"),
        "hhh": ("model", "data", "seed"),
        "agreement": ("prefs", "feedback_model", "constitution_version"),
    }
    got = {s: {k: getattr(R.config(recipe, s, out), k) for k in keys} for s, keys in pick.items()}
    assert got == {
        "sl": {"prompts": "red", "model": "base", "helpful_prompts": "help", "constitution": "c",
               "constitution_version": 3, "seed": 7},
        "sft": {"chains": 2, "model": "", "seed": 7},  # empty = the policy of the chain run
        "pairs": {"prompts": "red", "model": "sft-3", "seed": 7},
        "label": {"pairs": 4, "feedback_model": "judge", "constitution": "c", "constitution_version": 3, "seed": 7},
        "pm": {"ai_prefs": "labels-5", "human_prefs": "hh", "model": "judge", "seed": 7},
        "scores": {"run": 2, "pm": "pm-6"},
        "rl": {"policy": "sft-3", "reward_model": "pm-6", "prompts": "red", "helpful_prompts": "help", "beta": 0.1,
               "seed": 7},  # the paper's RL samples red-team and helpfulness prompts
        "dpo": {"policy": "sft-3", "prefs": "labels-5", "seed": 7},
        "hhh": {"model": "judge", "data": "h.jsonl", "seed": 7},  # the section's own value wins
        "agreement": {"prefs": "hh", "feedback_model": "judge", "constitution_version": 3},
    }
    # Without an SFT stage the policy itself samples the pairs and is tuned.
    assert R.config(recipe, "pairs", {"sl": 2}).model == "base"


def test_shipped_recipes_check(db):
    from cai.constitution import seed_default
    from cai.data import seed_sample_prefs, seed_samples

    seed_default(db)
    seed_samples(db)
    seed_sample_prefs(db)
    for name in ("smoke", "cpu-small", "paper"):
        recipe, digest = pipeline.resolve(db, name, [])
        assert recipe["constitution"] == "default@1" and len(digest) == 64, name
        assert os.path.isabs(recipe["hhh_data"]) and os.path.isfile(recipe["hhh_data"]), name
    with pytest.raises(RecipeError, match="no recipe file 'nope' \\(shipped recipes: cpu-small, paper, smoke\\)"):
        pipeline.resolve(db, "nope", [])


# ----------------------------------------------------------------------------- end to end (tiny model)


def _init(db_path):
    assert main(["init", "--db", str(db_path)]) == 0


def _stage_runs(db, pipeline_id):
    """Stage -> its main-line run (the first linked; a swept stage has one run per value after it)."""
    out = {}
    for row in links(db, pipeline_id):
        out.setdefault(row["stage"], runs.get_run(db, row["run_id"]))
    return out


@pytest.mark.timeout(600)
def test_cli_runs_the_smoke_recipe_to_done_with_every_stage_run_wired(db_path, capsys):
    _init(db_path)
    capsys.readouterr()
    rc = main(["pipeline", "run", "smoke", "--set", "sl.limit=2", "--db", str(db_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert out["status"] == "done", out["error"]
    assert list(dict.fromkeys(s["stage"] for s in out["stages"])) == SMOKE_STAGES  # sl and scores: once per value
    assert {s["status"] for s in out["stages"]} == {"done"}
    db = store.connect(db_path)
    child = _stage_runs(db, out["id"])
    cfg = {stage: run["config"] for stage, run in child.items()}
    res = {stage: run["result"] for stage, run in child.items()}
    # Each stage run was made from the outputs the one before it stored.
    assert cfg["sl"]["limit"] == 2 and cfg["sl"]["model"] == "tiny"
    assert cfg["sft"]["chains"] == child["sl"]["id"]
    assert cfg["pairs"]["model"] == res["sft"]["model"] == f"sft-{child['sft']['id']}"
    assert cfg["label"]["pairs"] == child["pairs"]["id"]
    assert cfg["pm"]["ai_prefs"] == res["label"]["pref_set"]
    assert (cfg["scores"]["run"], cfg["scores"]["pm"]) == (child["sl"]["id"], res["pm"]["model"])
    assert (cfg["rl"]["policy"], cfg["rl"]["reward_model"]) == (res["sft"]["model"], res["pm"]["model"])
    assert (cfg["dpo"]["policy"], cfg["dpo"]["prefs"]) == (res["sft"]["model"], res["label"]["pref_set"])
    assert (cfg["compare"]["models"], cfg["compare"]["roles"]) == (
        f"tiny,{res['sft']['model']},{res['rl']['model']},{res['dpo']['model']}", "base,SL-CAI,RL-CAI,DPO")
    assert (cfg["compare"]["judges"], cfg["compare"]["pm"], cfg["compare"]["judge_model"]) == (
        "pm,judge", res["pm"]["model"], "tiny")
    # The constitution resolved at creation is pinned in the pipeline and in every stage run that reads one.
    assert out["recipe"]["constitution"] == "default@1"
    assert {cfg[s]["constitution_version"] for s in ("sl", "label", "agreement")} == {1}
    # `show` equals what the run stored, and the pipeline's result names each stage run.
    assert runs.get_run(db, out["id"])["result"]["stages"] == {s: child[s]["id"] for s in SMOKE_STAGES}
    assert main(["pipeline", "show", str(out["id"]), "--db", str(db_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == out
    assert main(["pipeline", "show", str(child["sl"]["id"]), "--db", str(db_path)]) == 2
    assert "is a sl run, not a pipeline" in capsys.readouterr().err

    # The report: every figure's numbers are the stage runs' stored rows.
    html = db_path.parent / "report.html"
    assert main(["pipeline", "report", str(out["id"]), "--db", str(db_path), "--json", "--out", str(html)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"pm", "fig2", "fig4", "fig5", "fig8", "fig10", "goodhart", "provenance", "fig6", "fig7"}
    pm = report["pm"]["measured"]
    assert (pm["accuracy"], pm["n"]) == (res["pm"]["heldout_accuracy"], res["pm"]["heldout_pairs"])
    hhh = db.execute("select p_plain, p_avg from hhh_results where run_id = ? order by idx", [child["hhh"]["id"]]).fetchall()
    assert report["fig4"]["measured"]["n"] == len(hhh) == 4
    assert report["fig4"]["measured"]["accuracy_order_avg"] == res["hhh"]["accuracy_order_avg"]
    assert report["fig4"]["measured"]["accuracy_plain"] == res["hhh"]["accuracy"]
    assert report["fig4"]["why"] == ('the verdict tests better than chance only, not "more so with chain of thought": '
                                     "this stage ran without chain of thought (`cai run hhh --cot` on the same data "
                                     "measures the other half)")
    steps = db.execute(
        "select s.round, count(*), avg(s.pm_score) from chain_steps s join chains c on c.id = s.chain_id where "
        "c.run_id = ? and c.mode != 'helpful' and s.kind in ('initial', 'revision') group by s.round",
        [child["sl"]["id"]]).fetchall()
    assert [(p["revision"], p["n"]) for p in report["fig5"]["measured"]["points"]] == [(r, n) for r, n, _ in steps]
    assert [p["mean"] for p in report["fig5"]["measured"]["points"]] == pytest.approx([m for _, _, m in steps], abs=1e-6)
    watch = list(db["goodhart"].rows_where("run_id = ?", [child["rl"]["id"]], order_by="step"))
    assert len(watch) == 3  # rl max_steps 3: the first third (step 0) against the last (step 2)
    curve = report["fig8"]["measured"]["curve"]
    assert [p["mean_reward"] for p in curve] == [json.loads(r["metrics"])["mean_reward"] for r in watch]
    first, last = ([s["reward"] for s in json.loads(watch[i]["samples"])] for i in (0, 2))
    delta, lo, hi = bootstrap_diff(first, last)
    assert report["fig8"]["measured"]["last_minus_first"] == {"delta": delta, "ci": [lo, hi],
                                                              "n": [len(first), len(last)], "steps": [1, 1]}
    assert report["fig8"]["verdict"] == verdict(lo, hi, 0.0)
    # Figure 2: the compare run's stored ratings, per model and dimension, and RL-CAI's rating differences.
    fig2 = report["fig2"]["measured"]
    assert (fig2["compare_run"], fig2["judge"]) == (child["compare"]["id"], "judge")
    stored = {(r["judge"], r["dimension"], r["model"]): r
              for r in db["compare_ratings"].rows_where("run_id = ?", [child["compare"]["id"]])}
    assert len(stored) == 2 * 2 * 4  # two judges, two dimensions, four models
    assert [p["role"] for p in fig2["models"]] == ["base", "SL-CAI", "RL-CAI", "DPO"]
    for p in fig2["models"]:
        for dim in ("harmlessness", "helpfulness"):
            r = stored[("judge", dim, p["model"])]
            assert p[dim] == {"rating": r["rating"], "ci": [r["ci_low"], r["ci_high"]], "n": r["n"]} and r["n"] == 6
    assert db["compare_judgements"].count_where("run_id = ?", [child["compare"]["id"]]) == 2 * 2 * 2 * 6
    harmless = [t["harmlessness"] for t in fig2["rl_minus"]]
    assert [t["against"] for t in fig2["rl_minus"]] == ["SL-CAI", "base"] and all(t["n"] == 12 for t in harmless)
    verdicts = {verdict(t["ci"][0], t["ci"][1], 0.0) for t in harmless}
    assert report["fig2"]["verdict"] == ("not as in the paper" if "not as in the paper" in verdicts else
                                         "as in the paper" if verdicts == {"as in the paper"} else "not enough data")
    prov = report["provenance"]
    assert (prov["recipe"], prov["constitution"]) == ("smoke", "default@1")
    assert prov["stage_runs"]["rl"] == {"run_id": child["rl"]["id"], "seed": 0, "status": "done"}
    assert "Figure 5: PM score per revision" in html.read_text()
    assert "harmlessness rating" in html.read_text()  # the Figure 2 scatter
    assert main(["pipeline", "show", str(out["id"]), "--db", str(db_path)]) == 0
    check_sweep_figures(db, out["id"], out, report, capsys.readouterr().out)  # Figs. 6, 7, 10: test_pipeline_sweep


@pytest.mark.timeout(600)
def test_a_killed_pipeline_resumes_to_done_without_doubling_a_stage_run(db_path):
    _init(db_path)
    db = store.connect(db_path)
    pipeline_id = pipeline.create(db, "smoke", ["stages.dpo.skip=true", "stages.agreement.skip=true",
                                                "stages.compare.skip=true"])
    proc = runs.launch(db_path, pipeline_id)
    deadline = time.monotonic() + 400
    # Killed in the middle of the sweep: the main-line SL run is done, the next value's SL run is running.
    while not (len(rows := links(db, pipeline_id)) > 1 and runs.get_run(db, rows[1]["run_id"])["status"] == "running"):
        assert proc.poll() is None, runs.worker_log(db_path, pipeline_id).read_text()[-3000:]
        assert time.monotonic() < deadline, "the pipeline did not reach its label stage in time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {(r["stage"], r["sweep"]): runs.get_run(db, r["run_id"]) for r in links(db, pipeline_id)}
    assert runs.get_run(db, pipeline_id)["status"] == "interrupted"
    assert [r["status"] for r in before.values()] == ["done", "interrupted"]
    assert [s for s, _ in before] == ["sl", "sl"]

    proc = runs.resume(db, db_path, pipeline_id)
    final = runs.wait(db, pipeline_id, timeout=400)
    proc.wait()
    assert final["status"] == "done", final["error"]
    after = {(r["stage"], r["sweep"]): runs.get_run(db, r["run_id"]) for r in links(db, pipeline_id)}
    plan = R.plan(store.loads(runs.get_run(db, pipeline_id)["config"]["spec"]))
    assert list(after) == [(s, R.sweep_id(p)) for s, p in plan]
    assert list(dict.fromkeys(s for s, _ in after)) == ["sl", "sft", "pairs", "label", "pm", "scores", "rl",
                                                         "temperature", "hhh"]
    assert len(after) == 15  # sl and scores at 4 sweep points, 7 shared stages
    assert {k: r["id"] for k, r in after.items() if k in before} == {k: r["id"] for k, r in before.items()}
    assert {r["status"] for r in after.values()} == {"done"}
    # One run per (stage, sweep values) in the whole database: nothing was created twice.
    kinds = [r["kind"] for r in db["runs"].rows_where("id != ?", [pipeline_id])]
    assert sorted(kinds) == sorted(R.STAGES[s] for s, _ in after)
    assert db["pipeline_runs"].count == len(after)


def test_reuse_links_an_existing_run_and_refuses_one_of_another_kind(db_path):
    _init(db_path)
    db = store.connect(db_path)
    recipe = pipeline.resolve(db, "smoke", [])[0]
    from cai.stages import SLConfig

    sl_run = runs.create_run(db, SLConfig(prompts="sample-red-team", model="tiny"))
    db["runs"].update(sl_run, {"status": "done"})
    from cai.pipeline.runner import child

    pipe = pipeline.create(db, "smoke", [f"stages.sl.reuse={sl_run}", "sweep="])  # a reused run is not swept
    assert child(db, pipe, store.loads(runs.get_run(db, pipe)["config"]["spec"]), "sl", 0, {}) == sl_run
    assert links(db, pipe)[0] | {"id": 0} == {"id": 0, "pipeline_run_id": pipe, "stage": "sl", "run_id": sl_run,
                                             "position": 0, "reused": 1, "sweep": ""}
    recipe["stages"]["sft"] = {"reuse": sl_run}
    with pytest.raises(runs.RunError, match=f"stages.sft.reuse: run {sl_run} is a sl run, not sft"):
        child(db, pipe, recipe, "sft", 1, {"sl": sl_run})
    assert show(db, pipe)["stages"][1]["status"] == "not started"
