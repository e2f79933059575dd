"""One status in the browser: for a cancelled, a resumed (from the page) and a finished run, the runs list and
the run page show what `cai runs show ID --json` says. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from test_browser import ADMIN_PASSWORD, ROOT, app, browser, login, open_tab, shot  # noqa: F401  (fixtures)

from cai import runs, store
from cai.backends.base import ScriptedBackend
from cai.stages import SLConfig

pytestmark = pytest.mark.browser


def cli_shown(db_path, run_id: int) -> dict:
    cmd = [sys.executable, "-c", "import sys; from cai.cli import main; sys.exit(main())", "runs", "show", str(run_id),
           "--json", "--db", str(db_path)]  # `cai runs show ID --json`
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out)["shown"]


def select(page, run_id: int) -> None:  # type: ignore[no-untyped-def]
    box = page.locator("#run-id input")
    box.fill(str(run_id))
    box.press("Enter")
    page.locator("#run-summary h4").filter(has_text=f"Run #{run_id} ").wait_for(timeout=20_000)


def check_views(page, db_path, run_id: int) -> dict:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    shown = cli_shown(db_path, run_id)
    select(page, run_id)
    expect(page.locator("#run-status")).to_have_text(shown["status"], timeout=20_000)
    expect(page.locator("#run-progress")).to_contain_text(shown["text"])
    row = re.compile(rf"(?<!\d){run_id}\s+sl\s+{re.escape(shown['status'])}\s+[▰▱]+\s+{shown['done']}/{shown['total']} \(")
    expect(page.locator("#runs-table")).to_contain_text(row, timeout=20_000)  # id, kind, status, progress: one row
    return shown


def test_cancelled_resumed_and_finished_runs_read_the_same_in_the_list_the_page_and_the_cli(
        app, browser, monkeypatch):  # noqa: F811
    from playwright.sync_api import expect

    url, db_path = app
    db = store.connect(db_path)
    state = {"calls": 0, "run": 0}

    class Cancelling(ScriptedBackend):
        def generate(self, prompts, params):
            state["calls"] += 1
            if state["calls"] == 2:
                runs.request_cancel(db, state["run"])
            return super().generate(prompts, params)

    monkeypatch.setitem(runs.SCRIPTED, "scripted-cancel", Cancelling())
    small = {"prompts": "sample-red-team", "revisions": 1, "batch_size": 1, "max_new_tokens": 8, "few_shot": 1}
    state["run"] = cancelled = runs.create_run(db, SLConfig(model="scripted-cancel", limit=3, **small))
    assert runs.execute(db, cancelled)["status"] == "cancelled"
    finished = runs.create_run(db, SLConfig(model="scripted", limit=2, **small))
    assert runs.execute(db, finished)["status"] == "done"
    resumed = runs.create_run(db, SLConfig(model="tiny", limit=1, **small))
    runs.request_cancel(db, resumed)  # queued without a worker: cancelled at once, then resumed from the page

    page = login(browser, url, "admin", ADMIN_PASSWORD)
    open_tab(page, "Dashboard")
    assert check_views(page, db_path, cancelled) == {**cli_shown(db_path, cancelled), "status": "cancelled"}
    shot(page, "runs-status-cancelled")
    assert check_views(page, db_path, finished)["status"] == "done"
    shot(page, "runs-status-finished")

    select(page, resumed)
    expect(page.locator("#run-status")).to_have_text("cancelled")
    page.get_by_role("button", name="Resume run").click()
    expect(page.get_by_text(f"Resumed run #{resumed}")).to_be_visible(timeout=30_000)
    # The page redraws at once with the list: no "cancelled" header beside a running row.
    expect(page.locator("#run-status")).not_to_have_text("cancelled", timeout=10_000)
    shot(page, "runs-status-resumed")
    expect(page.locator("#run-status")).to_have_text("done", timeout=180_000)
    assert check_views(page, db_path, resumed)["text"] == "1/1 done"
    shot(page, "runs-status-resumed-done")
    db.close()
    page.close()
