"""Labels tab: confusion counts, summaries from agreement rows, disagreements, the escaped pair view, HHH table."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from cai import data, runs, store, users
from cai.evals import label_stats
from cai.queries import labels as QL
from cai.stages import AgreementConfig, HHHConfig
from ui import labels as L
from ui.common import AppContext

VIEWER, RATER = SimpleNamespace(username="val"), SimpleNamespace(username="rae")


@pytest.fixture
def ctx(db, db_path):
    users.add_user(db, "val", "viewer", "password1")
    users.add_user(db, "rae", "rater", "password1")
    pairs = [
        {"prompt": f"\n\nHuman: question {i} <script>x</script>?\n\nAssistant:", "chosen": f" good {i}",
         "rejected": f" <img src=x onerror=alert({i})> bad {i}", "p": 1.0}
        for i in range(4)
    ]
    data.create_pref_set(db, "hh-dev", "human", "harmless", pairs)
    run_id = runs.create_run(db, AgreementConfig(prefs="hh-dev", feedback_model="tiny", bins=4))
    ids = [r["id"] for r in db["pairs"].rows_where(order_by="id")]
    # (principle, p_chosen, p_first, p_second): two agree, one ties, one disagrees strongly.
    readings = [("harm", 0.8, 0.9, 0.7), ("harm", 0.6, 0.7, 0.5), ("kind", 0.5, 0.6, 0.4), ("kind", 0.1, 0.2, 0.0)]
    for pid, (pr, p, p1, p2) in zip(ids, readings, strict=True):
        meta = {"readings": [{"order": "AB", "principle": pr, "p": p1, "logprobs": [-0.1, -2.0],
                              "cot": "Let's think: <b>bold</b> claim"}]}
        db["agreement_pairs"].insert({"run_id": run_id, "pair_id": pid, "principle": pr, "p_chosen": p,
                                      "p_first": p1, "p_second": p2, "meta": store.dumps(meta)})
    db["runs"].update(run_id, {"status": "done"})
    return AppContext(db_path), run_id, ids


def test_confusion_counts_each_order():
    rows = [{"p_first": 0.9, "p_second": 0.7}, {"p_first": 0.5, "p_second": 0.2}, {"p_first": 0.3, "p_second": None}]
    assert label_stats.confusion(rows).to_dict("records") == [
        {"human \\ AI": "human chose A", "AI chose A": 1, "AI chose B": 1, "AI chose tie": 1},
        {"human \\ AI": "human chose B", "AI chose A": 1, "AI chose B": 1, "AI chose tie": 0},
    ]


def test_show_run_numbers_and_disagreements(ctx):
    app, run_id, ids = ctx
    summary, conf, calib, principle, position, table, plots = L.show_run(app, run_id, VIEWER)
    # Pair credits averaged over both orders: 1, 0.75, 0.5, 0 -> 56.2%, Wilson interval over the 4 pairs.
    assert summary.startswith(f"Run #{run_id} (done, feedback model tiny): **4 pairs** · agreement with humans "
                              "(both option orders averaged) **56.2%** (95% CI 18.3%–88.0%, n = 4 pairs) · from the "
                              "order-averaged p(chosen) 62.5% · mean p(chosen) 0.500")
    assert plots.visible is True
    assert "as (A) **75.0%**, as (B) **37.5%**" in summary
    assert conf.to_dict("records")[0] == {"human \\ AI": "human chose A", "AI chose A": 3, "AI chose B": 1,
                                          "AI chose tie": 0}
    assert [t.name for t in calib.data] == ["perfect calibration", "AI labels"]
    assert list(principle.data[0].y) == ["harm", "kind"] and list(principle.data[0].x) == [1.0, 0.25]
    assert table.to_dict("records") == [{"pair": ids[3], "principle": "kind", "p(chosen)": 0.1, "chosen as A": 0.2,
                                         "chosen as B": 0.0, "prompt": "question 3 <script>x</script>?"}]


def test_pair_view_escapes_everything(ctx):
    app, run_id, ids = ctx
    html = L.open_pair(app, run_id, ids[3], VIEWER)
    assert "the AI disagrees with the human" in html and "p(human's choice better) = 0.100" in html
    assert "<script>" not in html and "<img" not in html and "<b>bold</b>" not in html
    assert "&lt;img src=x onerror=alert(3)&gt; bad 3" in html
    assert "Let&#x27;s think: &lt;b&gt;bold&lt;/b&gt; claim" in html
    with pytest.raises(gr.Error, match=f"run {run_id} has no label for pair 999"):
        L.open_pair(app, run_id, 999, VIEWER)


def test_choices_and_roles(ctx):
    app, run_id, _ = ctx
    assert L.human_sets(app, VIEWER).choices == [("hh-dev (4 pairs)", "hh-dev")]
    assert L.label_runs(app, "hh-dev", VIEWER).value == run_id
    assert L.label_runs(app, "other", VIEWER).choices == []
    assert L.hhh_view(app, VIEWER)[1].visible is False
    assert L.show_run(app, None, VIEWER)[0].startswith("No agreement run for this preference set yet")
    assert L.show_run(app, None, VIEWER)[-1].visible is False
    with pytest.raises(gr.Error, match="needs the admin or viewer role; you are rae \\(rater\\)"):
        L.show_run(app, run_id, RATER)


def test_hhh_table_per_model(ctx):
    app, _, _ = ctx
    db = app.db()
    run_id = runs.create_run(db, HHHConfig(data="x.jsonl", model="tiny"))
    result = {"n": 8, "accuracy": 0.625, "accuracy_order_avg": 0.5, "model": "tiny", "cot": False, "samples": 1,
              "position": {"both_orders": {"correct_shown_A": 0.75, "correct_shown_B": 0.25}}}
    db["runs"].update(run_id, {"status": "done", "result": store.dumps(result)})
    frame, fig = L.hhh_view(app, VIEWER)
    assert frame.to_dict("records") == [{"run": run_id, "model": "tiny", "cot": False, "samples": 1, "n": 8,
                                         "accuracy": 0.625, "order-averaged": 0.5, "correct as A": 0.75,
                                         "correct as B": 0.25}]
    assert fig.visible is True
    assert list(L.hhh_figure(frame).data[0].y) == [0.625]


ADMIN = SimpleNamespace(username="ada")


def test_import_from_the_browser_reads_what_the_cli_reads(ctx, tmp_path):
    app, _, _ = ctx
    users.add_user(app.db(), "ada", "admin", "password1")
    sample = data.SAMPLE_PREFS
    assert L.import_upload(app, str(sample), "", "harmless", "human", ADMIN) == (
        "Imported 12 pairs as preference set “sample_prefs” (human, harmless).")
    gz = tmp_path / "mine.jsonl.gz"
    import gzip

    gz.write_bytes(gzip.compress(sample.read_bytes()))
    assert L.import_upload(app, str(gz), "zipped", "helpful", "human", ADMIN).startswith("Imported 12 pairs as")
    assert [r["chosen"] for r in data.list_pairs(app.db(), "zipped")] == \
        [r["chosen"] for r in data.list_pairs(app.db(), "sample_prefs")]
    # Errors come back as one line naming the file and line; nothing is stored.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b"}\n')
    before = app.db()["pref_sets"].count
    assert L.import_upload(app, str(bad), "b", "harmless", "human", ADMIN) == "Error: bad.jsonl:1: missing field &#x27;rejected&#x27;"
    assert L.import_upload(app, str(sample), "hh-dev", "harmless", "human", ADMIN) == (
        "Error: preference set &#x27;hh-dev&#x27; already exists; choose another --name")
    assert L.import_upload(app, str(tmp_path / "x.csv"), "c", "harmless", "human", ADMIN).startswith(
        "Error: x.csv: expected a .jsonl or .jsonl.gz or .ndjson or .ndjson.gz file")
    assert L.import_upload(app, None, "c", "harmless", "human", ADMIN) == "Error: Choose a file first."
    assert app.db()["pref_sets"].count == before
    with pytest.raises(gr.Error, match="needs the admin role"):
        L.import_upload(app, str(sample), "v", "harmless", "human", VIEWER)


def test_reading_says_which_response_each_letter_is():
    ba = {"order": "BA", "principle": "harm", "p": 0.197, "logprobs": [-3.2861, -4.6912]}
    assert L.reading_text(ba) == (
        "Reading: order BA ((A) = the rejected response, (B) = the human's choice), principle harm, "
        "p(the human's choice better) = 0.197, log-probs (A) -3.286, (B) -4.691")
    ab = {"order": "AB", "principle": "harm", "p": 0.8, "logprobs": [-0.1, -2.0]}
    assert L.reading_text(ab, "the first sampled response", "the second").startswith(
        "Reading: order AB ((A) = the first sampled response, (B) = the second), principle harm")


def test_ai_preference_set_view_without_human_labels(ctx):
    app, _, _ = ctx
    db = app.db()
    pairs = [
        {"prompt": f"\n\nHuman: q{i}?\n\nAssistant:", "chosen": f" c{i}", "rejected": f" r{i}", "p": p,
         "meta": {"p": pf, "principles": pr}}
        for i, (p, pf, pr) in enumerate([(0.95, 0.95, ["harm"]), (0.6, 0.4, ["harm", "kind"]), (0.5, 0.5, ["kind"])])
    ]
    data.create_pref_set(db, "labels-9", "ai", "harmless", pairs)
    assert L.ai_sets(app, VIEWER).choices == [("labels-9 (3 pairs)", "labels-9")]
    s = label_stats.ai_summary(QL.ai_pairs(db, "labels-9"))
    assert s["labels"] == {"first response better": 1, "second response better": 1, "tie (p = 0.5)": 1}
    assert (s["n"], round(s["mean_p"], 4), s["confident"]) == (3, 0.6833, 1)
    assert s["per_principle"] == {"harm": {"n": 2, "mean_p": pytest.approx(0.775)}, "kind": {"n": 2, "mean_p": 0.55}}
    head, dist, hist, per, table, plots = L.show_ai_set(app, "labels-9", VIEWER)
    assert plots.visible is True
    assert head.startswith("**3 pairs** in labels-9 · mean p(chosen) 0.683 · 1 labels with p ≥ 0.9")
    assert list(dist.data[0].y) == [1, 1, 1] and list(hist.data[0].x) == [0.95, 0.6, 0.5]
    assert list(per.data[0].y) == ["harm", "kind"]
    assert table["p(chosen)"].tolist() == [0.5, 0.6, 0.95] and table["prompt"].tolist() == ["q2?", "q1?", "q0?"]
    html = L.open_ai_pair(app, int(table["pair"][0]), VIEWER)
    assert "Chosen by the AI" in html and "p(chosen better) = 0.500" in html
    assert L.show_ai_set(app, None, VIEWER)[0].startswith("No AI preference set yet: launch")


def test_empty_ai_set_and_run_sections_show_one_line_and_no_plot_frames(db, db_path):
    # Issue 28.15: before there is data the plots were blank frames with broken-image icons.
    users.add_user(db, "val", "viewer", "password1")
    app = AppContext(db_path)
    head, dist, hist, per, _, plots = L.show_ai_set(app, None, VIEWER)
    assert (dist, hist, per, plots.visible) == (None, None, None, False)
    assert head == ("No AI preference set yet: launch “AI labels (feedback model)” on a “Response pairs” run from "
                    "the Dashboard; its label distribution, p histogram and mean p per principle are plotted here.")
    summary, _, calib, principle, position, _, plots = L.show_run(app, None, VIEWER)
    assert (calib, principle, position, plots.visible) == (None, None, None, False)
    assert summary.endswith("its calibration, position-bias and per-principle plots appear here.")
    # The page itself starts with those lines and the plots hidden (before any handler runs).
    import gradio as gr

    with gr.Blocks() as page:
        L.build(app)
    hidden = {c.elem_id: c.visible for c in page.blocks.values() if c.elem_id in ("labels-plots", "labels-ai-plots")}
    assert hidden == {"labels-plots": False, "labels-ai-plots": False}
    texts = {c.elem_id: c.value for c in page.blocks.values() if c.elem_id in ("labels-summary", "labels-ai-summary")}
    assert texts == {"labels-summary": L.NO_RUN, "labels-ai-summary": L.NO_AI_SETS}


def always_a_rows() -> list[dict]:
    """A judge that picks (A) in all 12 orders of 6 pairs, with p values that average to the human's side."""
    orders = [(0.9, 0.3), (0.8, 0.35), (0.7, 0.2), (0.85, 0.4), (0.75, 0.45), (0.95, 0.1)]
    return [{"principle": "harm", "p_chosen": (a + b) / 2, "p_first": a, "p_second": b} for a, b in orders]


def test_a_judge_that_follows_position_is_named_before_the_agreement_number():
    from cai.evals import agreement

    s = agreement.summarize(always_a_rows())
    # The averaged p says 83.3%; per order it is 100% as (A) and 0% as (B): the judge reads the position.
    assert (s["agreement"], s["consistency"]["rate"], s["kappa"]) == (0.8333, 0.0, 0.0)
    assert s["order_averaged"] == {"agreement": 0.5, "ci_low": 0.1876, "ci_high": 0.8124, "n": 6}
    assert s["picks"] == {"A": 12, "B": 0, "tie": 0, "orders": 12}
    text = L.summary_markdown(s, "Run #1: ")
    assert text.startswith("⚠️ **Judge follows position: agreement is not meaningful (the AI picked (A) in 12 of 12 "
                           "scored orders; position consistency 0.0% of 6 pairs, Cohen's kappa 0.000).**  \nRun #1: "
                           "**6 pairs** · agreement with humans (both option orders averaged) **50.0%** (95% CI "
                           "18.8%–81.2%, n = 6 pairs) · from the order-averaged p(chosen) 83.3%")
    # A consistent judge at chance level (kappa <= 0.1) is named too; a judge that reads content is not.
    assert agreement.judge_warning({"consistency": {"rate": 0.8, "n": 10}, "kappa": 0.05}).startswith(
        "Judge agrees with humans no better than chance: agreement is not meaningful")
    assert agreement.judge_warning({"consistency": {"rate": 0.8, "n": 10}, "kappa": 0.6}) is None
    assert agreement.wilson(0, 0) == (None, None) and agreement.wilson(3, 6) == (0.1876, 0.8124)


def test_empty_states_say_what_to_do(db, db_path):
    users.add_user(db, "val", "viewer", "password1")
    app = AppContext(db_path)
    assert L.sets_note(app, VIEWER).startswith("No human preference set yet: import one above")
    assert L.hhh_note(app, VIEWER).startswith("No HHH eval yet: launch “HHH eval” from the Dashboard")
    data.seed_sample_prefs(db)
    assert L.sets_note(app, VIEWER) == ""


def test_cli_agreement_text_warns_first_for_a_judge_that_follows_position():
    from cai.cli.evals import _agreement_text
    from cai.evals import agreement

    r = {**agreement.summarize(always_a_rows()), "feedback_model": "tiny", "prefs": "hh", "run_id": 3}
    lines = _agreement_text(r).splitlines()
    assert lines[:3] == [
        "WARNING: Judge follows position: agreement is not meaningful (the AI picked (A) in 12 of 12 scored orders; "
        "position consistency 0.0% of 6 pairs, Cohen's kappa 0.000).",
        "agreement of tiny with hh, both option orders averaged: 50.0% (95% CI 18.8%-81.2%, n = 6 pairs)",
        "agreement of the order-averaged p(chosen): 83.3% on 6 pairs"]
