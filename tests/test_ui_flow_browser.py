"""Issue #28 items 9-12 in headless Chromium: the dashboard's forms through a reload, the Models-page chat
streaming after a loading notice, the arena's vote race / end warning / panels, and invite links.

Pages are served on their own (each page's Blocks mounted with a fixed signed-in user, as ui.app mounts them
behind its sign-in), with scripted slow backends where a test must see a stream mid-way. Screenshots go to
artifacts/screenshots/.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest

from cai import arena, constitution, data, models, users
from cai.arena import invites
from cai.backend_pool import BackendPool

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NAMES = ["quokka-7b", "wombat-3b"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


class Served:
    """A Blocks mounted on FastAPI with `user` signed in (ui.app's auth dependency, fixed), on a free port."""

    def __init__(self, blocks, user: str) -> None:  # type: ignore[no-untyped-def]
        import gradio as gr
        import uvicorn
        from fastapi import FastAPI

        from ui.common import CSS

        self.port = free_port()
        app = gr.mount_gradio_app(FastAPI(), blocks.queue(), path="", auth_dependency=lambda request: user, css=CSS)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.1)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


def fill(page, elem_id: str, value: str) -> None:  # type: ignore[no-untyped-def]
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)


def choose(page, elem_id: str, value: str) -> None:  # type: ignore[no-untyped-def]
    box = page.locator(f"#{elem_id} input")
    box.fill(value)
    box.press("Enter")


# -- item 9: the only choice preselected, launched values kept through a reload ----------------------------


def test_dashboard_preselects_the_only_set_and_keeps_launched_values_through_a_reload(db, db_path, browser):
    import gradio as gr
    from playwright.sync_api import expect

    from ui import dashboard
    from ui.common import AppContext

    users.add_user(db, "ada", "admin", "password0")
    constitution.seed_default(db)
    data.seed_samples(db)
    data.seed_sample_prefs(db)  # the one human preference set
    with gr.Blocks() as blocks:
        dashboard.build(AppContext(db_path, model="tiny"))
    served = Served(blocks, "ada")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(served.url)
        expect(page.locator("#sl-prompts input")).to_have_value(re.compile("sample-red-team"), timeout=120_000)
        page.locator("#stage input").click()
        page.get_by_role("option", name="AI vs human agreement").click()
        prefs = data.get_pref_set(db, data.SAMPLE_PREF_SET)
        expect(page.locator("#agreement-prefs input")).to_have_value(re.compile(re.escape(prefs["name"])),
                                                                     timeout=60_000)
        shot(page, "flow-dashboard-only-prefs-preselected")
        page.locator("#stage input").click()
        page.get_by_role("option", name="SL chains (critique → revision)").click()
        choose(page, "sl-model", "tiny")
        fill(page, "sl-revisions", "1")
        fill(page, "sl-limit", "1")
        fill(page, "sl-max_new_tokens", "8")
        page.locator("#sl-max_new_tokens input, #sl-max_new_tokens textarea").first.press("Tab")
        page.locator("#launch-sl").click()
        expect(page.locator("#launch-status")).to_contain_text("Started SL chains", timeout=60_000)
        page.reload()
        expect(page.locator("#stage input")).to_have_value("SL chains (critique → revision)", timeout=60_000)
        for field, value in (("sl-revisions", "1"), ("sl-limit", "1"), ("sl-max_new_tokens", "8")):
            expect(page.locator(f"#{field} input, #{field} textarea").first).to_have_value(value, timeout=120_000)
        expect(page.locator("#sl-model input")).to_have_value(re.compile("^tiny"))
        shot(page, "flow-dashboard-sl-after-reload")
        page.close()
    finally:
        served.close()


# -- item 10: Models-page chat ------------------------------------------------------------------------------


class SlowStreaming:
    """Streams ten words, 0.4 s apart; its loader (below) takes 2 s, so the loading notice can be seen."""

    name, chat = "slow", False

    def render(self, transcript):  # noqa: ANN001, ANN201
        return transcript

    def stream(self, prompt, params):  # noqa: ANN001, ANN201
        text = ""
        for i in range(10):
            time.sleep(0.4)
            text += f" word{i}"
            yield text


def _slow_load(row):  # noqa: ANN001, ANN202
    time.sleep(2.0)
    return SlowStreaming()


def test_models_chat_says_it_is_loading_then_streams(db, db_path, browser, tmp_path, monkeypatch):
    import gradio as gr
    from playwright.sync_api import expect

    from ui import models as ui_models
    from ui.common import AppContext

    monkeypatch.setenv("CAI_CACHE", str(tmp_path / "cache"))  # the default model never converted here
    users.add_user(db, "val", "viewer", "password1")
    models.ensure_model(db, "default")
    with gr.Blocks() as blocks:
        ui_models.build(AppContext(db_path), BackendPool(loader=_slow_load))
    served = Served(blocks, "val")
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(served.url)
        # The registry and the model picker are filled by one page-load event: chat once it has run.
        expect(page.locator("#models-table")).to_contain_text("alias of gemma3-270m", timeout=60_000)
        page.get_by_label("Message").fill("Hello?")
        page.get_by_label("Message").press("Enter")
        chat = page.locator("#chat-box")
        expect(chat).to_contain_text("Loading the model (first use converts it, about 280 s", timeout=20_000)
        shot(page, "flow-models-chat-loading")
        expect(chat).to_contain_text("word1", timeout=20_000)
        assert "word9" not in chat.inner_text()  # mid-stream: tokens arrive as they are made
        shot(page, "flow-models-chat-streaming")
        expect(chat).to_contain_text("word9", timeout=20_000)
        assert "Loading the model" not in chat.inner_text()
        page.close()
    finally:
        served.close()


# -- items 11 and 12: the rater page --------------------------------------------------------------------


class Answers:
    """Each model streams its own answer slowly (quokka says Paris, wombat says Rome)."""

    def __init__(self, name: str) -> None:
        self.name, self.chat = name, False

    def render(self, transcript):  # noqa: ANN001, ANN201
        return transcript

    def stream(self, prompt, params):  # noqa: ANN001, ANN201
        word = {"quokka-7b": "Paris", "wombat-3b": "Rome"}[self.name]
        text = ""
        for i in range(12):
            time.sleep(0.5)
            text += f" {word}{i}"
            yield text


def test_rater_page_invite_link_vote_race_panels_and_end_warning(db, db_path, browser):
    from playwright.sync_api import expect

    from ui.arena import build_page

    for n in NAMES:
        models.register_model(db, n, "tiny")
    arena.create_campaign(db, "help", NAMES, "helpfulness", max_turns=2)
    code = invites.create_invites(db, 1)[0]
    page_app = build_page(db_path, BackendPool(loader=lambda row: Answers(row["name"])))
    port = free_port()
    page_app.queue().launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 1300})
        # item 12: the invite link fills the code
        page.goto(f"http://127.0.0.1:{port}/?invite={code}")
        expect(page.locator("#arena-code input, #arena-code textarea").first).to_have_value(code, timeout=30_000)
        shot(page, "flow-arena-invite-link-filled")
        fill(page, "arena-new-name", "newbie")
        page.get_by_label("Choose a password (8+ characters)").fill("password9")
        page.locator("#arena-join").click()
        expect(page.locator("#arena-hello")).to_contain_text("Signed in as newbie", timeout=20_000)
        page.locator("#arena-start").click()
        expect(page.locator("#arena-status")).to_contain_text("Turn 1 of 2", timeout=20_000)
        # item 11: no choice can be made while the models answer, and the finished answers do not clear one
        page.locator("#arena-message textarea").fill("Capital?")
        page.locator("#arena-send").click()
        expect(page.locator("#arena-status")).to_contain_text("Both models are answering", timeout=20_000)
        expect(page.get_by_label("A is better")).to_be_disabled(timeout=2_000)
        expect(page.locator("#arena-chat-a")).to_contain_text(re.compile(r"(Paris|Rome)1"), timeout=20_000)
        shot(page, "flow-arena-choice-off-while-answering")
        expect(page.locator("#arena-status")).to_contain_text("which response is better", timeout=30_000)
        page.get_by_label("A is better").check()
        page.wait_for_timeout(1000)  # the stream's last update has long arrived: the pick must still stand
        expect(page.get_by_label("A is better")).to_be_checked()
        a_answer = page.locator("#arena-chat-a").inner_text()
        own_a = "Paris" if "Paris11" in a_answer else "Rome"
        own_b = {"Paris": "Rome", "Rome": "Paris"}[own_a]
        page.locator("#arena-vote").click()
        expect(page.locator("#arena-status")).to_contain_text("Vote recorded: A is better", timeout=20_000)
        expect(page.locator("#arena-status")).to_contain_text("Both models continue from answer A")
        # panel B shows A's answer as its earlier reply once the conversation goes on
        page.locator("#arena-message textarea").fill("And Spain?")
        page.locator("#arena-send").click()
        expect(page.locator("#arena-status")).to_contain_text("which response is better", timeout=30_000)
        panel_b = page.locator("#arena-chat-b").inner_text()
        assert f"{own_a}11" in panel_b and f"{own_b}11" in panel_b  # turn 1: A's answer; turn 2: B's own
        assert panel_b.index(f"{own_a}11") < panel_b.index("And Spain?") < panel_b.index(f"{own_b}11")
        shot(page, "flow-arena-panels-continue-from-preferred")
        # "End battle" with the last turn unvoted warns first
        page.locator("#arena-end").click()
        expect(page.locator("#arena-status")).to_contain_text("Turn 2 has no vote yet", timeout=20_000)
        expect(page.locator("#arena-end")).to_have_text("End without voting")
        shot(page, "flow-arena-end-warns")
        assert list(db["battles"].rows)[0]["status"] == "open"
        page.locator("#arena-end").click()
        expect(page.locator("#arena-status")).to_contain_text("Battle over", timeout=20_000)
        page.close()
    finally:
        page_app.close()
    assert [v["winner"] for v in db["votes"].rows] == ["model_a"]


def test_admin_makes_invite_links_with_a_copy_button(db, db_path, browser):
    import gradio as gr
    from playwright.sync_api import expect

    from ui import arena as ui_arena
    from ui.common import AppContext

    users.add_user(db, "ada", "admin", "password0")
    for n in NAMES:
        models.register_model(db, n, "tiny")
    arena.create_campaign(db, "help", NAMES, "helpfulness")
    with gr.Blocks() as blocks:
        ui_arena.build(AppContext(db_path))
    served = Served(blocks, "ada")
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 1400})
        page.goto(served.url)
        page.get_by_text("Campaigns, progress and ratings (admins)").click()
        page.get_by_label("Invite links to make").fill("2")
        page.get_by_role("button", name="Make invite links").click()
        box = page.locator("#arena-invites textarea")
        expect(box).to_have_value(re.compile(rf"^{re.escape(served.url)}/arena/\?invite=\S+\n"
                                             rf"{re.escape(served.url)}/arena/\?invite=\S+$"), timeout=30_000)
        expect(page.locator("#arena-invites button").first).to_be_visible()  # the copy button
        page.locator("#arena-invites").scroll_into_view_if_needed()
        shot(page, "flow-arena-invite-links")
        page.close()
    finally:
        served.close()
    assert db["invites"].count == 2
