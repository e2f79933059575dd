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
    summary, conf, calib, principle, position, table = L.show_run(app, run_id, VIEWER)
    assert summary.startswith(f"Run #{run_id} (done, feedback model tiny): **4 pairs** · agreement with humans "
                              "**62.5%** · mean p(chosen) 0.500")
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
    head, dist, hist, per, table = L.show_ai_set(app, "labels-9", VIEWER)
    assert head.startswith("**3 pairs** in labels-9 · mean p(chosen) 0.683 · 1 labels with p ≥ 0.9")
    assert list(dist.data[0].y) == [1, 1, 1] and list(hist.data[0].x) == [0.95, 0.6, 0.5]
    assert list(per.data[0].y) == ["harm", "kind"]
    assert table["p(chosen)"].tolist() == [0.5, 0.6, 0.95] and table["prompt"].tolist() == ["q2?", "q1?", "q0?"]
    html = L.open_ai_pair(app, int(table["pair"][0]), VIEWER)
    assert "Chosen by the AI" in html and "p(chosen better) = 0.500" in html
    assert L.show_ai_set(app, None, VIEWER)[0].startswith("No AI preference set yet: launch")


def test_empty_states_say_what_to_do(db, db_path):
    users.add_user(db, "val", "viewer", "password1")
    app = AppContext(db_path)
    assert L.sets_note(app, VIEWER).startswith("No human preference set yet: import one above")
    assert L.hhh_note(app, VIEWER).startswith("No HHH eval yet: launch “HHH eval” from the Dashboard")
    data.seed_sample_prefs(db)
    assert L.sets_note(app, VIEWER) == ""
