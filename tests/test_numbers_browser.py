"""Issue 28 in Chromium: numbers a researcher can trust. The Labels headline names a judge that follows
position before its order-averaged agreement (with CI and n); the AI-set section and the arena's Figure 2
show one line, not empty plot frames, before there is data; one arena vote gets no interval and no
2000-point gap; and position consistency for a real agreement run on the default model. One app for the
module (its start is most of a test's cost). Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import pytest

from cai import arena, constitution, data, models, runs, store, users
from cai.stages import AgreementConfig
from tests.test_browser import ADMIN_PASSWORD, app, browser, login, open_tab, shot  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.browser

# p(human's choice better) with that choice shown as (A), then as (B): the judge picks (A) in all 12 orders.
ALWAYS_A = [(0.9, 0.3), (0.8, 0.35), (0.7, 0.2), (0.85, 0.4), (0.75, 0.45), (0.95, 0.1)]


def test_labels_headline_names_a_judge_that_follows_position(app, browser):  # noqa: F811
    from playwright.sync_api import expect

    url, db_path = app
    db = store.connect(db_path)
    pairs = [{"prompt": f"\n\nHuman: question {i}?\n\nAssistant:", "chosen": f" safe {i}", "rejected": f" unsafe {i}",
              "p": 1.0} for i in range(len(ALWAYS_A))]
    data.create_pref_set(db, "always-a", "human", "harmless", pairs)
    # The rows an agreement run stores for such a judge (its labels written as the stage writes them).
    run_id = runs.create_run(db, AgreementConfig(prefs="always-a", feedback_model="tiny"))
    ids = [r["id"] for r in db["pairs"].rows_where("set_id = (select id from pref_sets where name = 'always-a')",
                                                   order_by="id")]
    for pid, (first, second) in zip(ids, ALWAYS_A, strict=True):
        db["agreement_pairs"].insert({"run_id": run_id, "pair_id": pid, "principle": "harm",
                                      "p_chosen": (first + second) / 2, "p_first": first, "p_second": second,
                                      "consistent": 0, "meta": store.dumps({"readings": []})})
    db["runs"].update(run_id, {"status": "done"})
    db.close()
    page = login(browser, url, "vera", "viewer-pw-1")
    open_tab(page, "Labels")
    summary = page.locator("#labels-summary")
    expect(summary).to_contain_text(f"Run #{run_id} (done, feedback model tiny)", timeout=30_000)
    text = summary.inner_text()
    warning = ("Judge follows position: agreement is not meaningful (the AI picked (A) in 12 of 12 scored orders; "
               "position consistency 0.0% of 6 pairs, Cohen's kappa 0.000).")
    assert text.index(warning) < text.index(f"Run #{run_id}") < text.index("agreement with humans")
    assert ("agreement with humans (both option orders averaged) 50.0% (95% CI 18.8%–81.2%, n = 6 pairs)"
            in text), text
    expect(page.locator("#labels-plots .js-plotly-plot").first).to_be_visible(timeout=20_000)
    # No AI preference set: one line says what would fill the section, and no plot frame is on the page.
    expect(page.locator("#labels-ai-summary")).to_contain_text(
        "No AI preference set yet: launch “AI labels (feedback model)”", timeout=20_000)
    expect(page.locator("#labels-ai-plots")).to_be_hidden()
    assert page.locator("#labels-ai-plots .js-plotly-plot").count() == 0
    shot(page, "labels-judge-follows-position")
    page.close()


def test_one_arena_vote_gets_no_interval_and_no_figure2_frame(app, browser):  # noqa: F811
    from playwright.sync_api import expect

    url, db_path = app
    db = store.connect(db_path)
    for name in ("quokka-7b", "wombat-3b"):
        models.register_model(db, name, "tiny")
    arena.create_campaign(db, "one-vote", ["quokka-7b", "wombat-3b"], "helpfulness", allow_test_models=True)
    camp = arena.get_campaign(db, "one-vote")
    uid = users.get_user(db, "rita")["id"]
    ids = [models.get_model(db, n)["id"] for n in ("quokka-7b", "wombat-3b")]
    bid = db["battles"].insert({"campaign_id": camp["id"], "user_id": uid, "model_a": ids[0], "model_b": ids[1],
                                "dimension": "helpfulness", "status": "ended", "created_at": store.now(),
                                "seed": 0}).last_pk
    db["battle_turns"].insert({"battle_id": bid, "turn": 1, "prompt": "\n\nHuman: hi\n\nAssistant:",
                               "response_a": " hello", "response_b": " hey", "shown_at": store.now(),
                               "created_at": store.now()})
    db["votes"].insert({"battle_id": bid, "turn": 1, "user_id": uid, "winner": "model_a", "comment": "",
                        "created_at": store.now()})
    db.close()
    page = login(browser, url, "admin", ADMIN_PASSWORD)
    open_tab(page, "Arena")
    page.get_by_text("Campaigns, progress and ratings (admins)").click()
    note = page.locator("#arena-figure2-note")
    expect(note).to_contain_text("Figure 2 (harmlessness vs helpfulness) appears once there are votes in both "
                                 "dimensions; no votes yet.", timeout=20_000)
    expect(page.locator("#arena-figure2")).to_be_hidden()
    page.get_by_role("button", name="Compute ratings").click()
    table = page.locator("#arena-ratings")
    expect(table).to_contain_text("not enough votes: n = 1 (an interval needs 10)", timeout=30_000)
    expect(table).to_contain_text("1340")
    expect(table).to_contain_text("660")
    expect(note).to_contain_text("no harmlessness votes yet.")
    expect(page.locator("#arena-figure2")).to_be_hidden()
    shot(page, "arena-one-vote-no-interval")
    page.close()


@pytest.mark.slow
def test_labels_tab_position_consistency_default_model(app, browser, shared):  # noqa: F811
    """The Labels tab shows position consistency for a real agreement run on the default model (last in this
    module: the Labels tab opens on the newest set and run, this test's)."""
    from playwright.sync_api import expect

    url, db_path = app
    db = store.connect(db_path)
    if not list(db["constitutions"].rows):
        constitution.seed_default(db)
    data.import_prefs(db, shared / "hh-rlhf/harmless-base/dev-sample.jsonl.gz", "hh-dev")
    run_id, proc = runs.start(db, db_path, AgreementConfig(prefs="hh-dev", feedback_model="default", limit=4,
                                                           batch_size=4))
    proc.wait(timeout=600)
    run = runs.get_run(db, run_id)
    assert run["status"] == "done", run["error"]
    rate = run["result"]["consistency"]["rate"]
    db.close()
    page = login(browser, url, "vera", "viewer-pw-1")
    open_tab(page, "Labels")
    expect(page.locator("#labels-summary")).to_contain_text(f"Run #{run_id} (done, feedback model default)",
                                                            timeout=30_000)
    line = page.locator("#labels-consistency")
    expect(line).to_contain_text(f"Position consistency (both orders pick the same response): {rate:.1%} of 4 pairs",
                                 timeout=30_000)
    expect(line).to_contain_text("Cohen's kappa AI vs human")
    models = page.locator("#labels-consistency-models")
    expect(models).to_contain_text("default")
    expect(models).to_contain_text("agreement")
    expect(page.locator("#labels-principles")).to_contain_text("principle")
    shot(page, "labels-position-consistency-default")
    page.close()
