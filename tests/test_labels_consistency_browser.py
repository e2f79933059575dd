"""The Labels tab in Chromium shows position consistency for a real agreement run on the default model."""

from __future__ import annotations

import pytest

from cai import constitution, data, runs, store
from cai.stages import AgreementConfig
from tests.test_browser import app, browser, login, open_tab, shot  # noqa: F401  (module fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_labels_tab_position_consistency_default_model(app, browser, shared):  # noqa: F811
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
