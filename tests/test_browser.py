"""The workbench in headless Chromium: `python app.py` on a temp database, one start for the whole module.

Covers login, a principle edit that makes a new version, an SL run launched from the dashboard on the
tiny model and watched to "done", one of its chains opened, the labels page with numbers, roles, and
model text with <script>/<img onerror> shown as text, and a cancelled, a resumed and a finished run that
read the same in the runs list, the run page and the CLI. Each tab's screenshot goes to artifacts/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cai import data, runs, sl, store, users
from cai.backends.base import ScriptedBackend
from cai.stages import AgreementConfig, SLConfig
from tests.helpers import BUDGET_S
from ui.warmup import probe

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ADMIN_PASSWORD = "browser-admin-pw"
XSS_SCRIPT = '<script>window.__xss = "script"</script>'
XSS_IMG = '<img src=x onerror="window.__xss = \'img\'">'

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What each app start showed a visitor (by URL): the lines up to the printed URL, the /login answer at that
# moment, and the line printed once built. test_the_url_is_printed_when_the_port_listens reads it.
STARTS: dict[str, dict[str, object]] = {}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app as a user starts it, on a fresh database; yields (url, db path). Also records, in STARTS, what a
    visitor got at the moment the URL was printed (a refused connection raises here)."""
    db_path = tmp_path_factory.mktemp("browser") / "workbench.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CAI_ADMIN_PASSWORD": ADMIN_PASSWORD, "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONUNBUFFERED": "1"}
    log_path = db_path.parent / "app.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "app.py", "--db", str(db_path), "--port", str(port)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # It builds a workbench per role: minutes on a loaded machine, and every test of the module waits for it.
        deadline, start = time.monotonic() + BUDGET_S, {}
        while True:
            if not start and "* Workbench at" in (text := log_path.read_text(errors="replace")):
                start = {"printed": text, "at_once": get(f"{url}/login")}  # at once: a refusal raises here
            try:
                if start:
                    probe("127.0.0.1", port)  # listening and built (not the loading page)
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log_path.read_text(errors="replace"))
            time.sleep(0.3 if start else 0.05)
        start["ready"] = get(f"{url}/login")
        while "* Workbench ready" not in (text := log_path.read_text(errors="replace")):  # printed once built
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        start["after"] = text[len(start["printed"]):]
        STARTS[url] = start
        db = store.connect(db_path)
        users.add_user(db, "vera", "viewer", "viewer-pw-1")
        users.add_user(db, "rita", "rater", "rater-pw-1")
        db.close()
        yield url, db_path
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_the_url_is_printed_when_the_port_listens_and_a_visitor_sees_loading_not_a_refusal(app):
    """`python app.py` prints its URL only once the port accepts connections, and shows a loading page (not a
    refused connection) until the workbench is built."""
    url, _ = app
    start = STARTS[url]
    line = next(x for x in start["printed"].splitlines() if x.startswith("* Workbench at"))
    assert line.startswith(f"* Workbench at {url}/  (sign in at /login"), start["printed"]
    status, body = start["at_once"]
    assert status in (200, 503), body
    if status == 503:
        assert "Loading the workbench" in body and '<meta http-equiv="refresh" content="2">' in body
    status, body = start["ready"]
    assert status == 200 and "Sign in" in body
    assert any(line.startswith("* Workbench ready (built in ") for line in start["after"].splitlines()), start["after"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


def login(browser, url: str, name: str, password: str):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.get_by_text(f"Signed in as {name}").wait_for(timeout=30_000)
    return page


def open_tab(page, name: str) -> None:  # type: ignore[no-untyped-def]
    """Open a workbench page from the navbar (each tab is its own page) and wait until it is signed in."""
    with page.expect_navigation():
        page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()
    page.get_by_text("Signed in as").first.wait_for(timeout=30_000)


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def fill(page, elem_id: str, value: str) -> None:  # type: ignore[no-untyped-def]
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)


def test_admin_edits_a_principle_and_sees_a_new_version(app, browser):
    from playwright.sync_api import expect

    url, _ = app
    page = login(browser, url, "admin", ADMIN_PASSWORD)
    home = page.locator("#home-overview")  # sign-in lands on the light overview page
    expect(home).to_contain_text("constitution default v1", timeout=20_000)
    expect(home.locator("#home-next")).to_contain_text("Next: Run the whole method at once")
    expect(home.locator("#home-next a")).to_have_attribute("href", "/pipeline")
    # #26: `make app`'s first page lists both embedded models with the role each is the default for.
    expect(home.locator("#home-embedded")).to_contain_text("smollm2 (feedback & HHH default)")
    expect(home.locator("#home-embedded")).to_contain_text("gemma3-270m (policy & chat default)")
    shot(page, "home")
    with page.expect_navigation():
        home.get_by_role("link", name="Constitution").click()
    expect(page.locator("#constitution-info")).to_contain_text("default v1", timeout=20_000)
    shot(page, "constitution")
    page.locator("#principles-table [role=gridcell]").filter(has_text="dangerous-detail").first.click()
    expect(page.locator("#principle-name input, #principle-name textarea").first).to_have_value("dangerous-detail")
    fill(page, "principle-critique", "Does the reply give concrete steps that make serious harm easier?")
    fill(page, "version-note", "tighter wording")
    page.locator("#save-principle").click()
    expect(page.locator("#constitution-status")).to_contain_text("Saved as default v2: tighter wording (by admin)",
                                                                 timeout=20_000)
    expect(page.locator("#constitution-info")).to_contain_text("default v2")
    expect(page.locator("#versions-table")).to_contain_text("tighter wording (by admin)")
    page.close()


def test_sl_run_from_the_dashboard_reaches_done_and_its_chain_opens(app, browser):
    from playwright.sync_api import expect

    url, _ = app
    page = login(browser, url, "admin", ADMIN_PASSWORD)
    open_tab(page, "Dashboard")
    expect(page.locator("#sl-prompts input")).to_have_value("sample-red-team (red-team, 16)", timeout=20_000)
    model = page.locator("#sl-model input")
    model.fill("tiny")
    model.press("Enter")
    fill(page, "sl-limit", "2")
    fill(page, "sl-revisions", "1")
    fill(page, "sl-max_new_tokens", "8")
    fill(page, "sl-few_shot", "0")
    page.locator("#launch-sl").click()
    expect(page.locator("#launch-status")).to_contain_text("Started SL chains", timeout=20_000)
    # The run list and the run panel refresh themselves (gr.Timer) until the worker finishes.
    expect(page.locator("#run-status")).to_have_text("done", timeout=150_000)
    expect(page.locator("#runs-table")).to_contain_text("2/2 (100%)", timeout=10_000)
    expect(page.locator("#run-log textarea")).to_have_value(__import__("re").compile("chains 2/2"))
    shot(page, "dashboard")
    open_tab(page, "Chains")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#chains-table")).to_contain_text("tiny", timeout=20_000)
    page.locator("#chains-table [role=gridcell]").nth(7).click()
    view = page.locator("#chain-view")
    expect(view).to_contain_text("Initial response", timeout=20_000)
    expect(view).to_contain_text("Critique 1")
    expect(view).to_contain_text("Revision 1")
    shot(page, "chains")
    open_tab(page, "Models")
    expect(page.locator("#models-table")).to_contain_text("tiny", timeout=20_000)
    shot(page, "models")
    page.close()


def test_model_text_is_shown_as_text_never_run(app, browser):
    from playwright.sync_api import expect

    url, db_path = app
    db = store.connect(db_path)
    run_id = int(db["runs"].insert({"kind": "sl", "status": "done", "config": "{}", "created_at": store.now()}).last_pk)
    item = sl.ChainItem(999, f"\n\nHuman: say {XSS_IMG}\n\nAssistant:")
    chain = sl.Chain(item, ["harm"])
    chain.steps = [
        sl.Step("initial", 0, "", "sent", f" {XSS_SCRIPT} first", 1, 1, 0.1),
        sl.Step("critique", 1, "harm", "sent", f" {XSS_IMG}", 1, 1, 0.1),
        sl.Step("revision", 1, "harm", "sent", f" {XSS_IMG} second", 1, 1, 0.1),
    ]
    chain_id = sl.store_chain(db, run_id, chain, model_id=None, constitution_version_id=None)
    db.close()
    page = login(browser, url, "vera", "viewer-pw-1")
    open_tab(page, "Chains")
    fill(page, "chain-id-box", str(chain_id))
    page.get_by_role("button", name="Open chain").click()
    view = page.locator("#chain-view")
    expect(view).to_contain_text(XSS_SCRIPT, timeout=20_000)
    expect(view).to_contain_text(XSS_IMG)
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#chains-table")).to_contain_text("onerror", timeout=20_000)
    page.wait_for_timeout(500)
    assert page.evaluate("window.__xss") is None
    assert view.locator("img, script").count() == 0
    page.close()


def test_labels_page_shows_a_real_tiny_labeling_run(app, browser):
    from playwright.sync_api import expect

    url, db_path = app
    db = store.connect(db_path)
    pairs = [
        {"prompt": f"\n\nHuman: How do I {what}?\n\nAssistant:", "chosen": " I can't help with that, but here is "
         "a safer option.", "rejected": f" Sure: {XSS_IMG} step one.", "p": 1.0}
        for what in ("pick a lock", "make a fake ID", "cheat on a test", "hide income")
    ]
    data.create_pref_set(db, "hh-mini", "human", "harmless", pairs)
    run_id, proc = runs.start(db, db_path, AgreementConfig(prefs="hh-mini", feedback_model="tiny", bins=5))
    proc.wait(timeout=150)
    assert runs.get_run(db, run_id)["status"] == "done"
    pair_id = next(db["pairs"].rows_where("set_id = (select id from pref_sets where name = 'hh-mini')",
                                          order_by="id", limit=1))["id"]
    db.close()
    page = login(browser, url, "vera", "viewer-pw-1")
    open_tab(page, "Labels")
    summary = page.locator("#labels-summary")
    expect(summary).to_contain_text(f"Run #{run_id} (done, feedback model tiny): 4 pairs", timeout=30_000)
    expect(summary).to_contain_text("agreement with humans")
    expect(page.locator("#labels-confusion")).to_contain_text("human chose A")
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=20_000)
    fill(page, "labels-pair-id", str(pair_id))
    page.get_by_role("button", name="Open pair").click()
    pair = page.locator("#labels-pair")
    expect(pair).to_contain_text("Human's choice", timeout=20_000)
    expect(pair).to_contain_text(XSS_IMG)
    assert page.evaluate("window.__xss") is None and pair.locator("img").count() == 0
    shot(page, "labels")
    page.close()


def test_each_role_gets_its_page_viewer_cannot_launch_and_rater_sees_only_the_arena(app, browser):
    from playwright.sync_api import expect

    url, _ = app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    expect(page).to_have_url(f"{url}/login")  # signed out: the sign-in page
    shot(page, "page-login")
    page.close()
    page = login(browser, url, "vera", "viewer-pw-1")
    open_tab(page, "Dashboard")
    page.locator("#launch-sl").click()
    expect(page.get_by_text("Not allowed: this needs the admin role; you are vera (viewer)").first).to_be_visible(
        timeout=20_000)
    navbar = page.get_by_role("navigation")
    assert navbar.get_by_role("link", name="Dashboard", exact=True).count() == 1
    assert navbar.get_by_role("link", name="Arena", exact=True).count() == 0  # viewers have no Arena page at all
    shot(page, "page-viewer")
    page.close()
    page = login(browser, url, "rita", "rater-pw-1")
    assert page.url == f"{url}/arena/"  # the rater page, signed in from the one login
    expect(page.locator("#arena-campaign")).to_be_visible()
    page.wait_for_timeout(2500)
    assert page.get_by_text("Not allowed").count() == 0
    assert page.locator("[role=tab]").count() == 0
    assert page.locator("#chains-table, #runs-table, #principles-table").count() == 0
    shot(page, "page-rater")
    page.goto(url + "/")  # the workbench address sends a rater back to the rater page
    expect(page).to_have_url(f"{url}/arena/")
    assert page.request.get(f"{url}/config").status == 401
    page.close()
    page = login(browser, url, "admin", ADMIN_PASSWORD)
    open_tab(page, "Arena")
    expect(page.get_by_text("Campaigns, progress and ratings (admins)")).to_be_visible(timeout=20_000)
    shot(page, "page-admin")
    page.close()


# ----------------------------------------------------------- one status in the list, the run page and the CLI


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


def test_cancelled_resumed_and_finished_runs_read_the_same_in_the_list_the_page_and_the_cli(app, browser, monkeypatch):
    """One status: for a cancelled, a resumed (from the page) and a finished run, the runs list and the run page
    show what `cai runs show ID --json` says."""
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
