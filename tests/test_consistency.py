"""Judge consistency: verdicts with a tie band, order agreement, Cohen's kappa, and the stages' records."""

from __future__ import annotations

import math

import pytest

from cai import constitution, data, runs
from cai.backends.base import ScriptedBackend
from cai.evals import consistency as C
from cai.evals.agreement import summarize
from cai.evals.hhh import summarize as hhh_summary
from cai.feedback import Reading
from cai.stages import AgreementConfig, LabelConfig, PairsConfig


def test_verdicts_ties_and_order_agreement():
    assert [C.verdict(p) for p in (0.52, 0.5003, 0.49, 0.48)] == ["yes", "tie", "tie", "no"]
    assert C.verdict(0.5003, band=0.0) == "yes"
    assert C.credit(0.5003) == 0.5 and C.credit(0.7) == 1.0 and C.credit(0.2) == 0.0
    assert C.consistent(0.7, 0.6) is True and C.consistent(0.7, 0.3) is False
    assert C.consistent(0.5003, 0.4999) is True  # both ties
    assert C.consistent(0.7, None) is None
    assert C.resolve(0.62, False, "tie") == 0.5 and C.resolve(0.62, False, "average") == 0.62
    assert C.resolve(0.62, None, "tie") == 0.62
    with pytest.raises(ValueError, match="inconsistent must be one of average, tie"):
        C.resolve(0.6, False, "drop")
    with pytest.raises(ValueError, match=r"tie band must be in \[0, 0.5\)"):
        C.verdict(0.6, 0.5)


def test_cohen_kappa_by_hand():
    # 10 items: both say A on 4, both B on 3, rater 1 A / rater 2 B on 2, 1 the other way.
    a = ["A"] * 4 + ["B"] * 3 + ["A"] * 2 + ["B"]
    b = ["A"] * 4 + ["B"] * 3 + ["B"] * 2 + ["A"]
    # p_o = 0.7; p_e = 0.6 * 0.5 + 0.4 * 0.5 = 0.5 -> kappa = 0.2 / 0.5 = 0.4.
    assert C.cohen_kappa(a, b) == 0.4
    assert C.cohen_kappa(["A", "A"], ["A", "A"]) is None  # chance agreement is 1: undefined
    assert C.cohen_kappa([], []) is None
    with pytest.raises(ValueError, match="one length"):
        C.cohen_kappa(["A"], [])


def test_agreement_summary_counts_near_ties_as_ties_and_reports_consistency():
    # The tiny model's complaint: four pairs at p = 0.5003 were "100% agreement"; now they are ties.
    tiny = [{"principle": "kind", "p_chosen": 0.5003, "p_first": 0.5004, "p_second": 0.5002}] * 4
    s = summarize(tiny, bins=2)
    assert (s["agreement"], s["ties"], s["agreement_decisive"]) == (0.5, 4, None)
    assert s["consistency"] == {"n": 4, "rate": 1.0, "per_principle": {"kind": {"n": 4, "rate": 1.0}}}
    rows = [
        {"principle": "kind", "p_chosen": 0.75, "p_first": 1.0, "p_second": 0.5},  # yes / tie: inconsistent
        {"principle": "kind", "p_chosen": 0.5, "p_first": 0.75, "p_second": 0.25},  # yes / no: inconsistent
        {"principle": "safe", "p_chosen": 0.25, "p_first": 0.25, "p_second": 0.25},  # no / no: consistent
        {"principle": "safe", "p_chosen": 0.8, "p_first": 0.9, "p_second": 0.7},  # yes / yes: consistent
    ]
    s = summarize(rows, bins=2)
    assert s["consistency"] == {"n": 4, "rate": 0.5, "per_principle": {"kind": {"n": 2, "rate": 0.0},
                                                                        "safe": {"n": 2, "rate": 1.0}}}
    # By position: human says A, A, A, A (first orders) and B, B, B, B (second orders).
    # AI: A, A, B, A | tie, A, A, B -> agreements: 3 + 1 = 4 of 8 -> p_o = 0.5.
    # Marginals: human A 4/8, B 4/8; AI A 5/8, B 2/8, tie 1/8 -> p_e = (4*5 + 4*2) / 64 = 0.4375.
    # kappa = (0.5 - 0.4375) / 0.5625 = 0.1111.
    assert s["kappa"] == 0.1111
    assert (s["ties"], s["agreement_decisive"]) == (1, 0.6667)


def test_hhh_summary_reports_position_consistency():
    rows = [
        {"correct_option": "A", "p_plain": 0.75, "p_swapped": 0.25, "p_avg": 0.5},  # position bias
        {"correct_option": "B", "p_plain": 0.7, "p_swapped": 0.6, "p_avg": 0.65},
        {"correct_option": "A", "p_plain": 0.5001, "p_swapped": 0.4999, "p_avg": 0.5},
    ]
    s = hhh_summary(rows)
    assert s["consistency"] == {"n": 3, "rate": 0.6667}
    assert s["accuracy"] == 0.8333  # 1 + 1 + 0.5 (a tie inside the band) of 3


def test_readings_consistency_overall_and_per_principle():
    def r(order: str, principle: str, p: float) -> Reading:
        return Reading(0, order, principle, 0, [0.0, 0.0], p if order == "AB" else 1 - p, p)

    readings = [r("AB", "kind", 0.8), r("BA", "kind", 0.6), r("AB", "safe", 0.7), r("BA", "safe", 0.3)]
    # Overall: AB mean 0.75, BA mean 0.45 -> yes / no: inconsistent; kind consistent, safe not.
    assert C.readings_consistency(readings) == (False, {"kind": True, "safe": False})
    assert C.readings_consistency(readings[:1]) == (None, {"kind": None})


def _pref_db(db):
    constitution.seed_default(db)
    pairs = [
        {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": " Hello!", "rejected": " Go away.", "p": 1.0},
        {"prompt": "\n\nHuman: bye\n\nAssistant:", "chosen": " Bye!", "rejected": " Whatever.", "p": 1.0},
    ]
    data.create_pref_set(db, "human", "human", "harmless", pairs)


def _judge(prompt: str, option: str) -> float:  # prefers whatever is shown as (A), and "Hello!" strongly
    hello_a = prompt.rfind("(A) [[[Hello!") > prompt.rfind("(B) [[[Hello!")
    bias = 0.0 if option == " (A)" else -math.log(3)
    return bias + (2.0 if hello_a == (option == " (A)") and "Hello!" in prompt else 0.0)


@pytest.mark.parametrize("policy", ["average", "tie"])
def test_agreement_run_stores_consistency_and_ties_inconsistent_pairs(db, monkeypatch, policy):
    import cai.backends

    _pref_db(db)
    monkeypatch.setattr(cai.backends, "load", lambda spec, db=None, **kw: ScriptedBackend(score=_judge))
    run_id = runs.create_run(db, AgreementConfig(prefs="human", feedback_model="x", inconsistent=policy))
    row = runs.execute(db, run_id)
    assert row["status"] == "done", row["error"]
    stored = list(db["agreement_pairs"].rows_where("run_id = ?", [run_id], order_by="pair_id"))
    # Pair 1: "Hello!" wins in both orders. Pair 2: pure position bias, p(chosen) = 0.75 as A, 0.25 as B.
    assert [x["consistent"] for x in stored] == [1, 0]
    assert stored[1]["p_chosen"] == 0.5  # the order average is 0.5 already; "tie" keeps it there
    r = row["result"]
    assert r["consistency"]["rate"] == 0.5 and r["consistency"]["n"] == 2 and r["inconsistent"] == policy
    assert r["kappa"] is not None


def test_label_run_flags_inconsistent_pairs_and_ties_them(db, monkeypatch):
    import cai.backends
    from tests.test_feedback import _stage_db

    answers = iter([" good", " bad"] * 3)
    backend = ScriptedBackend(respond=lambda p: next(answers))
    _stage_db(db, monkeypatch, backend)
    monkeypatch.setattr(cai.backends, "load", lambda spec, db=None, **kw: backend)
    pairs_run = runs.execute(db, runs.create_run(db, PairsConfig(prompts="rt", model="m")))["id"]

    def score(prompt: str, option: str) -> float:
        # Leans to (A): p(A) = 0.8 when "good" is (A), 0.6 when "bad" is. Order AB: p(first = good) = 0.8;
        # order BA: p(first) = 1 - 0.6 = 0.4. The orders disagree; their average is 0.6.
        good_a = "(A) [[[good" in prompt
        return 0.0 if option == " (A)" else -math.log(4 if good_a else 1.5)

    backend.score = score
    for policy, name, p in (("average", "avg", 0.6), ("tie", "tied", 0.5)):
        run = runs.execute(db, runs.create_run(db, LabelConfig(pairs=pairs_run, feedback_model="m", name=name,
                                                               inconsistent=policy)))
        assert run["status"] == "done", run["error"]
        rows = list(db["feedback_labels"].rows_where("run_id = ?", [run["id"]], order_by="pair_id"))
        assert [r["consistent"] for r in rows] == [0, 0, 0]
        assert [round(r["p"], 4) for r in rows] == [p] * 3
        got = run["result"]["consistency"]
        assert (got["n"], got["rate"]) == (3, 0.0)
        assert got["per_principle"] and all(v["rate"] == 0.0 for v in got["per_principle"].values())
        assert [round(x["p"], 4) for x in data.list_pairs(db, name)] == [p] * 3


def test_labels_tab_shows_consistency_per_run_principle_and_model(db, db_path):
    from types import SimpleNamespace

    from cai import store, users
    from cai.stages import HHHConfig
    from ui import labels as L
    from ui.common import AppContext

    users.add_user(db, "val", "viewer", "password1")
    data.create_pref_set(db, "hh", "human", "harmless", [
        {"prompt": f"\n\nHuman: q{i}\n\nAssistant:", "chosen": " a", "rejected": " b", "p": 1.0} for i in range(3)])
    run_id = runs.create_run(db, AgreementConfig(prefs="hh", feedback_model="tiny"))
    ids = [r["id"] for r in db["pairs"].rows_where(order_by="id")]
    for pid, (pr, p1, p2) in zip(ids, [("harm", 0.9, 0.7), ("harm", 0.7, 0.3), ("kind", 0.5003, 0.5001)], strict=True):
        db["agreement_pairs"].insert({"run_id": run_id, "pair_id": pid, "principle": pr, "p_chosen": (p1 + p2) / 2,
                                      "p_first": p1, "p_second": p2, "consistent": int(C.consistent(p1, p2)),
                                      "meta": "{}"})
    hhh = runs.create_run(db, HHHConfig(data="x.jsonl", model="tiny"))
    db["hhh_results"].insert_all([{"run_id": hhh, "idx": i, "correct_option": "A", "p_plain": 0.6, "p_swapped": 0.4,
                                   "p_avg": 0.5, "consistent": c, "meta": "{}"} for i, c in enumerate([0, 1, None])])
    db["runs"].update(run_id, {"status": "done", "result": store.dumps({})})
    line, principles, models = L.consistency_view(AppContext(db_path), run_id, SimpleNamespace(username="val"))
    assert line.startswith("Position consistency (both orders pick the same response): **66.7%** of 3 pairs")
    assert "ties (p within 0.01 of 0.5) 2, agreement on the rest 100.0%" in line  # pair 2 averages to 0.5
    assert principles.to_dict("records") == [
        {"principle": "harm", "pairs": 2, "agreement": 0.75, "in both orders": 2, "consistent": 0.5},
        {"principle": "kind", "pairs": 1, "agreement": 0.5, "in both orders": 1, "consistent": 1.0}]
    assert models.to_dict("records") == [
        {"feedback model": "tiny", "source": "agreement", "runs": 1, "pairs in both orders": 3, "consistent": 0.6667},
        {"feedback model": "tiny", "source": "hhh", "runs": 1, "pairs in both orders": 2, "consistent": 0.5}]
    empty = L.consistency_view(AppContext(db_path), None, SimpleNamespace(username="val"))
    assert empty[0] == "" and len(empty[2]) == 2


@pytest.mark.slow
def test_labels_tab_position_consistency_on_the_default_model(db, db_path, shared):
    """A real agreement run (default model, 4 hh-rlhf pairs, both orders) as the Labels tab shows it."""
    from types import SimpleNamespace

    from cai import users
    from ui import labels as L
    from ui.common import AppContext

    constitution.seed_default(db)
    users.add_user(db, "val", "viewer", "password1")
    data.import_prefs(db, shared / "hh-rlhf/harmless-base/dev-sample.jsonl.gz", "hh-dev")
    run_id = runs.create_run(db, AgreementConfig(prefs="hh-dev", feedback_model="default", limit=4, batch_size=4))
    row = runs.execute(db, run_id)
    assert row["status"] == "done", row["error"]
    stored = list(db["agreement_pairs"].rows_where("run_id = ?", [run_id]))
    assert len(stored) == 4 and all(r["consistent"] in (0, 1) for r in stored)
    assert [r["consistent"] for r in stored] == [int(C.consistent(r["p_first"], r["p_second"])) for r in stored]
    line, principles, models = L.consistency_view(AppContext(db_path), run_id, SimpleNamespace(username="val"))
    rate = row["result"]["consistency"]["rate"]
    assert line.startswith(f"Position consistency (both orders pick the same response): **{rate:.1%}** of 4 pairs")
    assert models.to_dict("records") == [{"feedback model": "default", "source": "agreement", "runs": 1,
                                          "pairs in both orders": 4, "consistent": rate}]
    assert principles["in both orders"].sum() == 4
