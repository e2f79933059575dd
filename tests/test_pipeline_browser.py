"""A pipeline launched from the Pipeline page on the tiny model, watched to done, its report read."""

from __future__ import annotations

import pytest
from test_browser import ADMIN_PASSWORD, app, browser, fill, login, open_tab, shot  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_pipeline_from_the_page_runs_to_done_and_shows_its_report(app, browser):  # noqa: F811
    from playwright.sync_api import expect

    url, _ = app
    page = login(browser, url, "admin", ADMIN_PASSWORD)
    open_tab(page, "Pipeline")
    expect(page.locator("#pipe-line")).to_contain_text("cai pipeline run smoke", timeout=20_000)
    # A smaller smoke run: no DPO or agreement stage, two prompts.
    fill(page, "pipe-sets", "sl.limit=2 pairs.limit=2 stages.dpo.skip=true stages.agreement.skip=true")
    page.locator("#pipe-check").click()
    expect(page.locator("#pipe-resolved")).to_contain_text("constitution: default@1", timeout=20_000)
    expect(page.locator("#pipe-line")).to_contain_text("cai pipeline run smoke --set sl.limit=2")
    page.locator("#pipe-launch").click()
    expect(page.locator("#pipe-status")).to_contain_text("Started pipeline", timeout=20_000)
    stages = page.locator("#pipe-stages")
    expect(stages).to_contain_text("sl", timeout=20_000)
    shot(page, "pipeline-running")
    expect(stages).to_contain_text("(smoke): done", timeout=600_000)
    # The header, sl and scores at smoke's 4 sweep points, 8 shared stages (temperature and compare included).
    expect(stages.locator("tr")).to_have_count(17)
    expect(stages).to_contain_text("sl [sl.mode=direct, sl.principles=1]")
    report = page.locator("#pipe-report")
    expect(report).to_contain_text("Figure 4: HHH accuracy of the feedback model", timeout=20_000)
    expect(report).to_contain_text("held-out accuracy")
    expect(report).to_contain_text("Figure 6: PM score vs number of principles")
    expect(report).to_contain_text("critique minus direct")
    expect(report).to_contain_text("judged by the feedback model: RL-CAI vs SL-CAI: harmlessness")  # Figure 2
    shot(page, "pipeline-report")
    page.close()
