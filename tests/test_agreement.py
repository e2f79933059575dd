"""Agreement of AI labels with human choices: calibration by hand, summary shape, a scripted run."""

from __future__ import annotations

import math

from cai import constitution, data, runs
from cai.backends.base import ScriptedBackend
from cai.evals.agreement import calibration, summarize
from cai.stages import AgreementConfig


def test_calibration_counts_each_pair_both_ways():
    bins, ece = calibration([0.9, 0.7, 0.3], bins=2)
    # Points: (0.9,1) (0.7,1) (0.3,1) and (0.1,0) (0.3,0) (0.7,0).
    assert bins == [
        {"lo": 0.0, "hi": 0.5, "n": 3, "mean_p": 0.2333, "frequency": 0.3333},
        {"lo": 0.5, "hi": 1.0, "n": 3, "mean_p": 0.7667, "frequency": 0.6667},
    ]
    assert ece == 0.1
    assert calibration([0.5, 0.5], bins=2)[1] == 0.0  # always 0.5: perfectly calibrated
    assert calibration([1.0], bins=4)[0][3]["n"] == 1  # p = 1 falls in the last bin
    assert calibration([], bins=2) == ([{"lo": 0.0, "hi": 0.5, "n": 0, "mean_p": None, "frequency": None},
                                        {"lo": 0.5, "hi": 1.0, "n": 0, "mean_p": None, "frequency": None}], None)  # fmt: skip


def test_summary_per_principle_and_position():
    rows = [
        {"principle": "kind", "p_chosen": 0.75, "p_first": 1.0, "p_second": 0.5},
        {"principle": "kind", "p_chosen": 0.5, "p_first": 0.75, "p_second": 0.25},
        {"principle": "safe", "p_chosen": 0.25, "p_first": 0.25, "p_second": 0.25},
    ]
    s = summarize(rows, bins=2)
    assert (s["n"], s["agreement"], s["mean_p_chosen"]) == (3, 0.5, 0.5)
    assert s["per_principle"] == {"kind": {"n": 2, "agreement": 0.75}, "safe": {"n": 1, "agreement": 0.0}}
    # chosen shown as A: wins 2 of 3; as B: tie, loss, loss.
    assert s["position"] == {"chosen_shown_A": 0.6667, "chosen_shown_B": 0.1667, "mean_p_option_A": 0.6667}


def test_agreement_run_labels_human_pairs(db, monkeypatch):
    import cai.backends

    constitution.seed_default(db)
    pairs = [
        {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": " Hello!", "rejected": " Go away.", "p": 1.0},
        {"prompt": "\n\nHuman: bye\n\nAssistant:", "chosen": " Bye!", "rejected": " Whatever.", "p": 1.0},
    ]
    data.create_pref_set(db, "human", "human", "harmless", pairs)

    def judge(prompt: str, option: str) -> float:  # prefers whatever is shown as (A), and "Hello!" strongly
        hello_a = prompt.rfind("(A) [[[Hello!") > prompt.rfind("(B) [[[Hello!")
        bias = 0.0 if option == " (A)" else -math.log(3)
        return bias + (2.0 if hello_a == (option == " (A)") and "Hello!" in prompt else 0.0)

    backend = ScriptedBackend(score=judge)
    monkeypatch.setattr(cai.backends, "load", lambda spec, db=None, **kw: backend)
    names = [p["name"] for p in constitution.resolve_version(db)["principles"] if p["kind"] == "comparison"][
        :2
    ]
    run_id = runs.create_run(
        db, AgreementConfig(prefs="human", feedback_model="x", principles=",".join(names))
    )
    row = runs.execute(db, run_id)
    assert row["status"] == "done", row["error"]
    r = row["result"]
    assert (r["n"], r["agreement"]) == (2, 0.75)  # pair 1 agrees, pair 2 is a tie
    assert set(r["per_principle"]) <= set(names)
    stored = list(db["agreement_pairs"].rows_where("run_id = ?", [run_id], order_by="pair_id"))
    assert [x["p_first"] for x in stored][1] == 0.75 and [x["p_second"] for x in stored][1] == 0.25
    assert stored[0]["p_chosen"] > 0.5
