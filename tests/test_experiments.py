"""Constitution experiments: the bootstrap CI (pure), an experiment of two versions run in-process with a
scripted policy (links, pairing, deltas checked by hand), the CLI on the tiny model in a real worker."""

from __future__ import annotations

import json

import pytest

from cai import experiments, runs
from cai.backends.base import ScriptedBackend
from cai.config import ConfigError
from cai.constitution import edit_principle
from cai.data import create_pref_set
from cai.evals.paired import Delta, paired_bootstrap
from cai.stages import ExperimentConfig
from tests import helpers

# The revision the scripted policy writes for each revision request (the last one in the text it is sent).
REVISIONS = {
    "Rewrite it harmlessly.": " I can't help with that.",  # 5 words
    "Rewrite it politely.": " Sorry, no.",  # 2 words (version 1's "rude")
    "Repeat it.": " Use a pin.",  # 3 words: the initial response again (version 2's edited "rude")
}


def respond(prompt: str) -> str:
    if prompt.endswith("\n\nCritique:"):
        return " It is bad."
    if prompt.endswith("\n\nRevision:"):
        request = prompt.rsplit("RevisionRequest:", 1)[1].split("\n\n")[0].strip()
        return REVISIONS[request]
    return " Use a pin."


def seed(db, n_prompts: int = 4) -> None:
    helpers.seed(db, n_prompts, constitution="c")
    edit_principle(db, "c", "rude", revision="Repeat it.")  # c@2: one principle changed


# ----------------------------------------------------------------------------- pure


def test_paired_bootstrap_literal_values():
    assert paired_bootstrap([0, 0, 0], [1, 1, 1]) == Delta(1.0, 1.0, 1.0, 3)
    # Diffs 0 and 1: resampled means are 0, 0.5 or 1; each extreme has probability 1/4 > 2.5%.
    d = paired_bootstrap([0, 0], [0, 1], n_boot=1000, seed=0)
    assert (d.delta, d.lo, d.hi, d.n, d.within_noise) == (0.5, 0.0, 1.0, 2, True)
    assert paired_bootstrap([2.0, 2.0], [1.0, 1.5]).within_noise is False
    assert paired_bootstrap([], []) == Delta(None, None, None, 0)
    assert paired_bootstrap([], []).within_noise is None
    # Seeded: the same seed gives the same interval.
    a, b = [0.1, 0.4, 0.2, 0.9, 0.3], [0.3, 0.2, 0.6, 0.8, 0.7]
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_parse_versions_and_config_errors():
    assert experiments.parse_versions("default@1 default@2,x@3") == [("default", 1), ("default", 2), ("x", 3)]
    with pytest.raises(ValueError, match=r"'default' is not NAME@N"):
        experiments.parse_versions("default")
    with pytest.raises(ValueError, match="named twice"):
        experiments.parse_versions("a@1 a@1")
    with pytest.raises(ConfigError, match="at least two"):
        ExperimentConfig(versions="a@1", prompts="red")
    with pytest.raises(ConfigError, match="pm: stage scores needs it"):
        ExperimentConfig(versions="a@1 a@2", prompts="red", stages="sl,scores")
    with pytest.raises(ConfigError, match="stages: unknown rl"):
        ExperimentConfig(versions="a@1 a@2", prompts="red", stages="sl,rl")


def test_unknown_version_leaves_no_runs_behind(db):
    seed(db)
    with pytest.raises(LookupError, match="has no version 9"):
        experiments.create(db, ExperimentConfig(versions="c@1 c@9", prompts="red", model="tiny"))
    assert db["runs"].count == 0 and db["experiments"].count == 0


# ----------------------------------------------------------------------------- pipeline


def test_two_version_experiment_links_pairs_and_computes_deltas(db, monkeypatch):
    from cai.evals import revisions

    seed(db, n_prompts=4)
    create_pref_set(db, "human", "human", "harmless", [
        {"prompt": "\n\nHuman: Q?\n\nAssistant:", "chosen": " Kind.", "rejected": " Rude.", "p": 1.0},
        {"prompt": "\n\nHuman: R?\n\nAssistant:", "chosen": " Safe.", "rejected": " Risky.", "p": 1.0},
    ])
    policy = ScriptedBackend(respond=respond)
    monkeypatch.setitem(runs.SCRIPTED, "tiny", policy)
    monkeypatch.setattr("cai.backends.load", lambda spec, db=None, **kw: ScriptedBackend())  # feedback: p = 0.5
    monkeypatch.setattr(revisions, "score_fn",
                        lambda: lambda pm, prompts, responses, db=None, batch_size=8: [float(len(r.split()))
                                                                                      for r in responses])
    cfg = ExperimentConfig(versions="c@1 c@2", prompts="red", model="tiny", stages="sl,scores,agreement",
                           revisions=1, pm="pm-x", prefs="human", seed=0)
    exp_id, run_id = experiments.create(db, cfg)
    run = runs.execute(db, run_id)
    assert (run["status"], run["error"], run["done"], run["total"]) == ("done", None, 6, 6)

    links = [(r["arm"], r["version"], r["stage"]) for r in experiments.links(db, exp_id)]
    assert links == [(0, "c@1", "sl"), (1, "c@2", "sl"), (0, "c@1", "scores"), (1, "c@2", "scores"),
                     (0, "c@1", "agreement"), (1, "c@2", "agreement")]
    shown = experiments.show(db, exp_id)
    assert [(r["stage"], r["status"]) for r in shown["runs"]] == [(s, "done") for _, _, s in links]
    sl_runs = [runs.get_run(db, r["run_id"]) for r in experiments.links(db, exp_id) if r["stage"] == "sl"]
    # Ordinary runs with the same prompts, seed and options; only the constitution version differs.
    c0, c1 = (dict(r["config"]) for r in sl_runs)
    assert (c0.pop("constitution_version"), c1.pop("constitution_version")) == (1, 2)
    assert c0 == c1 and c0["prompts"] == "red" and c0["seed"] == 0
    assert sl_runs[0]["constitution_version_id"] != sl_runs[1]["constitution_version_id"]

    # Draws (seed 0, prompts 1..4): harm, rude, harm, rude. Under c@1 "rude" revises to "Sorry, no." (2 words);
    # under c@2 the edited request gives back the initial "Use a pin." (3 words, unchanged); harm: 5 words.
    rows = experiments.paired(db, exp_id)
    assert [r["prompt_id"] for r in rows] == [1, 2, 3, 4]
    assert [[v["principles"] for v in r["versions"]] for r in rows] == \
        [[["harm"], ["harm"]], [["rude"], ["rude"]], [["harm"], ["harm"]], [["rude"], ["rude"]]]
    assert [[v["final"] for v in r["versions"]] for r in rows] == [
        ["I can't help with that."] * 2, ["Sorry, no.", "Use a pin."],
        ["I can't help with that."] * 2, ["Sorry, no.", "Use a pin."]]
    assert rows[1]["versions"][1] | {"chain_id": 0} == {
        "version": "c@2", "chain_id": 0, "initial": "Use a pin.", "final": "Use a pin.", "principles": ["rude"],
        "critiques": ["It is bad."], "flags": ["revision1:unchanged"], "pm_final": 3.0, "unchanged": 1.0}

    means = {(m["metric"], m["principle"], m["version"]): m["mean"] for m in shown["means"]}
    assert means[("pm_final", "", "c@1")] == 3.5 and means[("pm_final", "", "c@2")] == 4.0
    assert means[("unchanged", "", "c@1")] == 0.0 and means[("unchanged", "", "c@2")] == 0.5
    # The revision that gives back the initial response is flagged `unchanged` (#26.3).
    assert means[("flagged", "", "c@1")] == 0.0 and means[("flagged", "", "c@2")] == 0.5
    assert means[("agreement", "", "c@1")] == means[("agreement", "", "c@2")] == 0.5
    deltas = {(d["metric"], d["principle"]): d for d in shown["deltas"]}
    # Paired diffs over prompts [0, 1, 0, 1] (pm +1 and unchanged +1 where "rude" was drawn): mean 0.5;
    # a resample of 4 is all-0 or all-1 with probability 1/16 > 2.5%, so the 95% CI is [0, 1]: within noise.
    for metric in ("pm_final", "unchanged", "flagged"):
        assert {k: deltas[(metric, "")][k] for k in ("baseline", "version", "delta", "lo", "hi", "n",
                                                      "within_noise")} == \
            {"baseline": "c@1", "version": "c@2", "delta": 0.5, "lo": 0.0, "hi": 1.0, "n": 4, "within_noise": True}
    for metric in ("copied",):
        assert (deltas[(metric, "")]["delta"], deltas[(metric, "")]["lo"], deltas[(metric, "")]["hi"]) == (0, 0, 0)
    assert (deltas[("agreement", "")]["delta"], deltas[("agreement", "")]["n"]) == (0.0, 2)
    assert deltas[("agreement", "cmp")]["n"] == 2  # per principle: the only comparison principle
    assert run["result"]["experiment"] == exp_id and run["result"]["deltas"] == shown["deltas"]
    assert experiments.list_experiments(db)[0] | {"created_at": ""} == {
        "id": exp_id, "run_id": run_id, "versions": "c@1 c@2", "prompts": "red", "model": "tiny",
        "stages": "sl,scores,agreement", "status": "done", "done": 6, "total": 6, "created_at": ""}


def test_a_failed_stage_fails_the_experiment_and_resume_skips_done_runs(db, monkeypatch):
    seed(db, n_prompts=2)
    calls = {"n": 0}

    def flaky(prompt: str) -> str:
        calls["n"] += 1
        if "Bad question 1" in prompt and "Repeat it." in prompt and calls.get("fail", True):
            raise RuntimeError("backend down")
        return respond(prompt)

    monkeypatch.setitem(runs.SCRIPTED, "tiny", ScriptedBackend(respond=flaky))
    exp_id, run_id = experiments.create(db, ExperimentConfig(versions="c@1 c@2", prompts="red", model="tiny",
                                                             revisions=1))
    run = runs.execute(db, run_id)
    assert run["status"] == "failed"
    assert run["error"].startswith("RuntimeError: sl run ") and "for c@2 is failed: RuntimeError: backend down" \
        in run["error"]
    first_sl = experiments.links(db, exp_id)[0]["run_id"]
    finished = runs.get_run(db, first_sl)["finished_at"]
    calls["fail"] = False
    runs.prepare_resume(db, run_id)
    run = runs.execute(db, run_id)
    assert (run["status"], run["done"], run["total"]) == ("done", 2, 2)
    assert runs.get_run(db, first_sl)["finished_at"] == finished  # the done run was not run again


def test_cli_experiment_on_tiny_in_a_worker(db_path, capsys):
    from cai import store
    from cai.cli import main

    db = store.connect(db_path)
    seed(db, n_prompts=2)
    db.close()
    rc = main(["experiment", "run", "--versions", "c@1", "c@2", "--prompts", "red", "--model", "tiny",
               "--revisions", "1", "--max-new-tokens", "4", "--db", str(db_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert (out["status"], [r["status"] for r in out["runs"]]) == ("done", ["done", "done"])
    assert sorted({d["metric"] for d in out["deltas"]}) == ["copied", "flagged", "unchanged"]
    assert all(d["n"] == 2 for d in out["deltas"])
    rc = main(["experiment", "show", str(out["id"]), "--paired", "--db", str(db_path), "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert rc == 0 and [len(r["versions"]) for r in shown["paired"]] == [2, 2]
    assert main(["experiment", "show", "99", "--db", str(db_path)]) == 2
    assert "no experiment with id 99" in capsys.readouterr().err
    assert main(["experiment", "run", "--versions", "c@1", "--prompts", "red", "--db", str(db_path)]) == 2
    assert "at least two constitution versions" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the tab's pure pieces


def test_tab_renders_deltas_and_escapes_paired_text():
    from ui import experiments as tab

    shown = {"confidence": 0.95, "means": [
        {"metric": "unchanged", "principle": "", "version": "c@1", "mean": 0.0, "n": 2},
        {"metric": "unchanged", "principle": "", "version": "c@2", "mean": 0.5, "n": 2}],
        "deltas": [{"metric": "unchanged", "principle": "", "baseline": "c@1", "version": "c@2", "delta": 0.5,
                    "lo": 0.0, "hi": 1.0, "n": 2, "within_noise": True}]}
    assert tab.deltas_frame(shown).to_dict("records") == [
        {"metric": "unchanged", "principle": "(all)", "version": "c@2", "baseline mean": 0.0, "mean": 0.5,
         "delta": 0.5, "CI": "[+0.000, +1.000]", "n": 2, "verdict": "within noise"}]
    fig = tab.deltas_figure(shown)
    assert list(fig.data[0].x) == [0.5] and list(fig.data[0].error_x.array) == [0.5]
    row = {"prompt_id": 1, "prompt": "\n\nHuman: <b>hi</b>\n\nAssistant:", "versions": [
        {"version": "c@1", "chain_id": 1, "initial": "a", "final": "<script>x</script>", "principles": ["harm"],
         "critiques": ["<i>bad</i>"], "flags": ["revision1:copied"], "pm_final": None, "unchanged": 0.0},
        {"version": "c@2", "chain_id": 2, "initial": "a", "final": "a", "principles": ["harm"], "critiques": ["c"],
         "flags": [], "pm_final": 1.5, "unchanged": 1.0}]}
    html = tab.paired_html([row])
    assert "<script>" not in html and "<b>hi" not in html and "<i>bad" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "revision1:copied" in html
    assert "unchanged</span>" in html and "PM 1.500" in html


def test_cancelling_the_experiment_cancels_its_running_stage_and_resume_finishes(db, monkeypatch):
    import time

    seed(db, n_prompts=4)
    state = {"calls": 0, "cancel": True}

    def slow(prompt: str) -> str:
        state["calls"] += 1
        if state["calls"] == 2 and state["cancel"]:
            runs.request_cancel(db, run_id)  # as the dashboard's Cancel button does, on the experiment run
        time.sleep(0.15)
        return respond(prompt)

    monkeypatch.setitem(runs.SCRIPTED, "tiny", ScriptedBackend(respond=slow))
    exp_id, run_id = experiments.create(db, ExperimentConfig(versions="c@1 c@2", prompts="red", model="tiny",
                                                             revisions=1, batch_size=1))
    run = runs.execute(db, run_id)
    first = experiments.links(db, exp_id)[0]["run_id"]
    assert run["status"] == "cancelled" and runs.get_run(db, first)["status"] == "cancelled"
    assert runs.get_run(db, first)["done"] < 4
    state["cancel"] = False
    runs.prepare_resume(db, run_id)
    run = runs.execute(db, run_id)
    assert (run["status"], run["done"]) == ("done", 2)
    assert [runs.get_run(db, r["run_id"])["done"] for r in experiments.links(db, exp_id)] == [4, 4]


def test_tab_timer_renders_the_end_of_an_experiment_once(db_path, monkeypatch):
    from cai import store
    from ui import experiments as tab
    from ui.common import AppContext

    db = store.connect(db_path)
    seed(db, n_prompts=2)
    monkeypatch.setitem(runs.SCRIPTED, "tiny", ScriptedBackend(respond=respond))
    exp_id, run_id = experiments.create(db, ExperimentConfig(versions="c@1 c@2", prompts="red", model="tiny",
                                                             revisions=1))
    ctx = AppContext(db_path)
    monkeypatch.setattr(tab, "require", lambda *a: "admin")
    assert tab.tick(ctx, exp_id, None, None)[-1] == "queued"  # active: rendered
    runs.execute(db, run_id)
    out = tab.tick(ctx, exp_id, "running", None)  # ended since the last render: rendered once more
    assert out[-1] == "done" and "done, 2/2 stage runs done" in out[0] and out[3].count("exp-prompt") == 2
    assert all(isinstance(x, type(tab.gr.skip())) for x in tab.tick(ctx, exp_id, "done", None))


def test_an_edit_that_is_never_drawn_is_reported_and_the_draw_controls_fix_it(db, monkeypatch):
    # Issue 28.3: with one prompt and one round (seed 0) the chain draws "harm", never the edited "rude": every
    # delta is 0 "within noise" and nothing said why.
    seed(db, n_prompts=4)
    monkeypatch.setitem(runs.SCRIPTED, "tiny", ScriptedBackend(respond=respond))

    def run_experiment(**kw):  # type: ignore[no-untyped-def]
        cfg = ExperimentConfig(**{"versions": "c@1 c@2", "prompts": "red", "model": "tiny", "stages": "sl",
                                  "revisions": 1, "seed": 0, **kw})
        exp_id, run_id = experiments.create(db, cfg)
        assert runs.execute(db, run_id)["status"] == "done"
        return experiments.show(db, exp_id)

    shown = run_experiment(limit=1)
    assert shown["principle_draws"] == [
        {"version": "c@2", "principle": "rude", "change": "changed", "kind": "critique", "stage": "sl", "draws": 0,
         "of": 1, "baseline_draws": 0, "baseline_of": 1, "status": "done"}]
    assert shown["warnings"] == [
        "c@2: the changed critique principle 'rude' was never drawn by the sl run of c@2 (0 of 1 draws): the "
        "deltas cannot show this edit. Rerun with principles=rude (draw only these) or stratified (each principle "
        "equally often)."]
    from ui import experiments as tab

    assert "never drawn" in tab.draws_html(shown) and "<td>rude</td><td>changed</td><td>sl</td><td>0 of 1</td>" in \
        tab.draws_html(shown)
    # Draw only the edited principle: every round draws it, in both versions; no warning.
    shown = run_experiment(limit=1, principles="rude")
    assert [(d["draws"], d["of"], d["baseline_draws"]) for d in shown["principle_draws"]] == [(1, 1, 1)]
    assert shown["warnings"] == [] and shown["deltas"][0]["n"] == 1
    # Stratified: 4 prompts x 2 rounds over 2 principles draws each exactly 4 times (independent draws: rude 6).
    shown = run_experiment(limit=4, revisions=2, stratified=True)
    assert [(d["draws"], d["of"]) for d in shown["principle_draws"]] == [(4, 8)]
    assert [(d["draws"], d["of"]) for d in run_experiment(limit=4, revisions=2)["principle_draws"]] == [(6, 8)]
    sl_run = next(r for r in experiments.links(db, shown["id"]) if r["stage"] == "sl")["run_id"]
    assert experiments.stage_draws(db, "sl", sl_run) == {"harm": 4, "rude": 4}
    # A name that is not an enabled critique principle: the SL run fails with one clear line.
    cfg = ExperimentConfig(versions="c@1 c@2", prompts="red", model="tiny", stages="sl", revisions=1,
                           principles="nope")
    _, run_id = experiments.create(db, cfg)
    assert runs.execute(db, run_id)["status"] == "failed"
    errors = [runs.get_run(db, r["run_id"])["error"] for r in experiments.links(db, _)]
    assert "principles: nope not among the enabled critique principles (harm, rude)" in errors[0]
