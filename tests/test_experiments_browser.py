"""An experiment launched from the Experiments tab on the tiny model, watched to done, its paired view opened."""

from __future__ import annotations

import pytest
from test_browser import ADMIN_PASSWORD, app, browser, fill, login, open_tab, shot  # noqa: F401  (fixtures)

from cai import constitution, store

pytestmark = pytest.mark.browser


def test_experiment_from_the_ui_shows_paired_revisions_and_deltas(app, browser):  # noqa: F811
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
