"""A new researcher's first hour, in headless Chromium on a fresh database (issues 16, 18, 13).

Import a preference set through the Labels tab, be refused when launching an agreement run without one,
launch it on tiny from the dashboard (its CLI line shown), see the run say what it made, see its plots,
and find the form as it was launched after a reload; then an experiment from the Experiments tab. One app for the
module (its start is most of a test's cost). Screenshots of these states go to artifacts/screenshots/.
"""

from __future__ import annotations

import re

import pytest
from test_browser import ADMIN_PASSWORD, app, browser, fill, login, open_tab, shot  # noqa: F401  (fixtures: a fresh app)

from cai import constitution, data, store

pytestmark = pytest.mark.browser


def pick(page, elem_id: str, option: str) -> None:  # type: ignore[no-untyped-def]
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option).click()


def choose(page, elem_id: str, value: str) -> None:  # type: ignore[no-untyped-def]
    box = page.locator(f"#{elem_id} input")
    box.fill(value)
    box.press("Enter")


def test_import_prefs_then_agreement_on_tiny_then_its_plots(app, browser):  # noqa: F811
    from playwright.sync_api import expect

    url, _ = app
    page = login(browser, url, "admin", ADMIN_PASSWORD)

    # 1. Import a preference set from the browser (the Labels tab's upload).
    open_tab(page, "Labels")
    page.get_by_text("Import a preference set (admin)").click()
    page.locator("#labels-prefs-file input[type=file]").set_input_files(str(data.SAMPLE_PREFS))
    fill(page, "labels-prefs-name", "my-prefs")
    page.locator("#labels-prefs-import").click()
    expect(page.locator("#labels-prefs-status")).to_contain_text(
        "Imported 12 pairs as preference set “my-prefs” (human, harmless).", timeout=30_000)
    expect(page.locator("#labels-prefs input")).to_have_value("my-prefs (12 pairs)", timeout=20_000)
    shot(page, "newcomer-labels-import")

    # 2. The agreement form refuses a launch without a preference set, then launches on tiny.
    open_tab(page, "Dashboard")
    pick(page, "stage", "AI vs human agreement")
    choose(page, "agreement-prefs", "")
    page.locator("#launch-agreement").click()
    expect(page.locator("#launch-status")).to_contain_text("Error: prefs: choose a human preference set",
                                                           timeout=20_000)
    shot(page, "newcomer-dashboard-refused")
    choose(page, "agreement-prefs", "my-prefs")
    choose(page, "agreement-feedback_model", "tiny")
    fill(page, "agreement-limit", "4")
    fill(page, "agreement-bins", "5")
    page.locator("#agreement-bins input, #agreement-bins textarea").first.press("Tab")
    expect(page.locator("#cli-agreement")).to_contain_text(
        re.compile(r"cai run agreement --db \S+ --prefs my-prefs --feedback-model tiny --limit 4 --bins 5"),
        timeout=20_000)
    page.locator("#launch-agreement").click()
    expect(page.locator("#launch-status")).to_contain_text("Started AI vs human agreement as run #", timeout=20_000)
    expect(page.locator("#run-status")).to_have_text("done", timeout=150_000)
    expect(page.locator("#run-made")).to_contain_text("figures: Labels tab")
    shot(page, "newcomer-dashboard-agreement-done")

    # 3. Its plots on the Labels tab.
    open_tab(page, "Labels")
    page.get_by_role("button", name="↻ Refresh").first.click()
    expect(page.locator("#labels-summary")).to_contain_text("(done, feedback model tiny): **4 pairs**".replace(
        "**", ""), timeout=30_000)
    expect(page.locator(".js-plotly-plot").nth(2)).to_be_visible(timeout=20_000)
    shot(page, "newcomer-labels-agreement")

    # 4. After a reload the form keeps the values last launched from this browser.
    page.reload()
    page.get_by_text("Signed in as admin").wait_for(timeout=30_000)
    open_tab(page, "Dashboard")
    expect(page.locator("#stage input")).to_have_value("AI vs human agreement", timeout=20_000)
    expect(page.locator("#agreement-limit input, #agreement-limit textarea").first).to_have_value("4")
    expect(page.locator("#agreement-prefs input")).to_have_value(re.compile("my-prefs"))
    shot(page, "newcomer-dashboard-restored")

    # The flag legend beside the chains table, and the whole principles table.
    open_tab(page, "Chains")
    expect(page.locator("#flag-legend")).to_contain_text("copied: the output parrots the few-shot exemplars")
    shot(page, "newcomer-chains-legend")
    open_tab(page, "Constitution")
    expect(page.locator("#constitution-info")).to_contain_text("constitution default v1", timeout=20_000)
    shot(page, "newcomer-constitution")
    page.close()


def test_step_progress_then_cancelling_at_once(app, browser):  # noqa: F811
    from playwright.sync_api import expect

    url, _ = app
    page = login(browser, url, "admin", ADMIN_PASSWORD)
    open_tab(page, "Dashboard")
    expect(page.locator("#sl-prompts input")).to_have_value("sample-red-team (red-team, 16)", timeout=20_000)
    pick(page, "stage", "SL chains (critique → revision)")
    choose(page, "sl-model", "tiny")
    fill(page, "sl-revisions", "8")
    fill(page, "sl-batch_size", "1")
    fill(page, "sl-max_new_tokens", "64")
    page.locator("#launch-sl").click()
    expect(page.locator("#launch-status")).to_contain_text("Started SL chains", timeout=20_000)
    summary = page.locator("#run-summary")
    expect(summary).to_contain_text(re.compile(r"step \d+/272 · now: chain \d+ of 16: "), timeout=60_000)
    expect(page.locator("#runs-table")).to_contain_text("/272", timeout=20_000)
    shot(page, "newcomer-dashboard-steps")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.get_by_text("Cancel requested for run #")).to_be_visible(timeout=30_000)
    # The panel redraws right after the request (no poll needed): one step takes seconds here, so the
    # worker is still on it and the run reads "cancelling…".
    expect(page.locator("#run-status")).to_have_text(re.compile("cancelling…|cancelled"), timeout=10_000)
    shot(page, "newcomer-dashboard-cancelling")
    expect(page.locator("#run-status")).to_have_text("cancelled", timeout=60_000)
    page.close()


def test_experiment_from_the_ui_shows_paired_revisions_and_deltas(app, browser):  # noqa: F811
    """An experiment launched from the Experiments tab on the tiny model, watched to done, its paired view opened
    (last in this module: it edits the default constitution, which the tests above see at v1)."""
    from playwright.sync_api import expect

    url, db_path = app
    db = store.connect(db_path)
    constitution.edit_principle(db, "default", constitution.resolve_version(db, "default")["principles"][0]["name"],
                                revision="Rewrite the reply so that it is kind and safe.")
    db.close()
    page = login(browser, url, "admin", ADMIN_PASSWORD)
    open_tab(page, "Experiments")
    page.get_by_label("default@1").check(timeout=20_000)
    page.get_by_label("default@2").check()
    expect(page.locator("#exp-prompts input")).to_have_value("sample-red-team", timeout=20_000)
    fill(page, "exp-model", "tiny")
    fill(page, "exp-limit", "2")
    fill(page, "exp-revisions", "1")
    fill(page, "exp-max-new", "8")
    page.locator("#exp-launch").click()
    expect(page.locator("#exp-status")).to_contain_text("Started experiment", timeout=20_000)
    expect(page.locator("#exp-progress")).to_contain_text("done, 2/2 stage runs done", timeout=600_000)
    paired = page.locator("#exp-paired")
    expect(paired.locator(".exp-prompt")).to_have_count(2, timeout=20_000)
    expect(paired).to_contain_text("default@1")
    expect(paired).to_contain_text("default@2")
    expect(page.locator("#exp-deltas")).to_contain_text("unchanged")
    expect(page.locator("#exp-deltas")).to_contain_text("within noise")
    shot(page, "experiments")
    page.close()
