"""A whole blind battle in headless Chromium against the rater page, with the tiny model streaming."""

import socket

import pytest

from cai import arena, models, users
from cai.arena import invites

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NAMES = ["quokka-7b", "wombat-3b"]


@pytest.mark.browser
def test_whole_battle_in_the_browser(db, db_path):
    from playwright.sync_api import expect, sync_playwright

    from ui.arena import build_page

    for n in NAMES:
        models.register_model(db, n, "tiny")
    arena.create_campaign(db, "help", NAMES, "helpfulness", max_turns=1, max_new_tokens=12)
    code = invites.create_invites(db, 1)[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page_app = build_page(db_path)
    page_app.queue().launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_text("I have an invite code").click()
            page.locator("#arena-code textarea, #arena-code input").first.fill(code)
            page.locator("#arena-new-name textarea, #arena-new-name input").first.fill("newbie")
            page.get_by_label("Choose a password (8+ characters)").fill("password9")
            page.locator("#arena-join").click()
            expect(page.locator("#arena-hello")).to_contain_text("Signed in as newbie", timeout=20_000)
            expect(page.locator("#arena-instructions")).to_contain_text("more helpful", timeout=10_000)
            page.locator("#arena-start").click()
            expect(page.locator("#arena-status")).to_contain_text("Turn 1 of 1", timeout=20_000)
            page.locator("#arena-message textarea").fill("What is the capital of France?")
            page.locator("#arena-send").click()
            expect(page.locator("#arena-status")).to_contain_text("which response is better", timeout=60_000)
            expect(page.locator("#arena-chat-a")).to_contain_text("What is the capital of France?")
            expect(page.locator("#arena-chat-b")).to_contain_text("What is the capital of France?")
            before = page.locator("body").inner_text()
            assert not any(n in before for n in NAMES)
            page.get_by_label("B is better").check()
            page.locator("#arena-vote").click()
            expect(page.locator("#arena-status")).to_contain_text("Battle over", timeout=20_000)
            reveal = page.locator("#arena-reveal").inner_text()
            assert "Model A was" in reveal and all(n in reveal for n in NAMES)
            browser.close()
    finally:
        page_app.close()
    user = users.get_user(db, "newbie")
    votes = list(db["votes"].rows)
    assert [(v["user_id"], v["turn"], v["winner"]) for v in votes] == [(user["id"], 1, "model_b")]
    turn = next(db["battle_turns"].rows)
    assert turn["shown_at"] and turn["continued_with"] == "b"


class SlowBackend:
    """Streams an answer with an <img> to a tracking URL and markdown image syntax, slowly."""

    name, chat = "slow", False

    def render(self, transcript):  # noqa: ANN001, ANN201
        return transcript

    def stream(self, prompt, params):  # noqa: ANN001, ANN201
        import time

        text = ' <img src="/track.png?img"> ![logo](/track.png?md) Don’t'
        for i in range(10):
            time.sleep(0.4)
            text += f" word{i}"
            yield text


def _launch(db_path, pool):
    from ui.arena import build_page
    from ui.common import CSS

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page_app = build_page(db_path, pool)
    page_app.queue().launch(server_port=port, prevent_thread_lock=True, quiet=True, css=CSS)
    return page_app, port


@pytest.mark.browser
def test_voting_is_disabled_until_both_answers_are_complete(db, db_path):
    """#16.4 and #17.4 in the browser: the vote button stays disabled while the models answer, no error
    badges, no stray "common.complete", model HTML shown as text and no image fetched; #18.6: the reveal
    names both models above their panels."""
    from pathlib import Path

    from playwright.sync_api import expect, sync_playwright

    from cai.backend_pool import BackendPool

    shots = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    for n in NAMES:
        models.register_model(db, n, "tiny")
    arena.create_campaign(db, "help", NAMES, "helpfulness", max_turns=2)
    users.add_user(db, "rita", "rater", "password1")
    page_app, port = _launch(db_path, BackendPool(loader=lambda row: SlowBackend()))
    fetched: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.on("request", lambda r: fetched.append(r.url) if "track.png" in r.url else None)
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#arena-name input, #arena-name textarea").first.fill("rita")
            page.get_by_label("Password").fill("password1")
            page.locator("#arena-login").click()
            expect(page.locator("#arena-hello")).to_contain_text("Signed in as rita", timeout=20_000)
            page.locator("#arena-start").click()
            expect(page.locator("#arena-status")).to_contain_text("Turn 1 of 2", timeout=20_000)
            vote = page.locator("#arena-vote")
            expect(vote).to_be_disabled()
            page.locator("#arena-message textarea").fill("Hello <b>there</b>")
            page.locator("#arena-send").click()
            expect(page.locator("#arena-status")).to_contain_text("Both models are answering", timeout=20_000)
            expect(page.locator("#arena-chat-a")).to_contain_text("word1", timeout=20_000)
            expect(vote).to_be_disabled()
            page.screenshot(path=str(shots / "arena-answering-vote-disabled.png"))
            expect(page.locator("#arena-status")).to_contain_text("which response is better", timeout=30_000)
            expect(vote).to_be_enabled()
            chat = page.locator("#arena-chat-a").inner_text()
            assert '<img src="/track.png?img">' in chat and "![logo](/track.png?md)" in chat and "Don’t" in chat
            assert "<b>there</b>" in page.locator("#arena-chat-a").inner_text()
            assert page.locator("#arena-chat-a img[src*='track'], #arena-chat-b img[src*='track']").count() == 0
            page.screenshot(path=str(shots / "arena-votable.png"))
            page.get_by_label("A is better").check()
            vote.click()
            expect(page.locator("#arena-status")).to_contain_text("Vote recorded", timeout=20_000)
            expect(vote).to_be_disabled()
            assert not page.get_by_label("A is better").is_checked()  # the choice resets for the next turn
            # A vote attempt while answering is impossible (disabled), and no error badge shows anywhere.
            page.locator("#arena-message textarea").fill("And again?")
            page.locator("#arena-send").click()
            expect(page.locator("#arena-status")).to_contain_text("Both models are answering", timeout=20_000)
            expect(vote).to_be_disabled()
            expect(page.locator("#arena-status")).to_contain_text("which response is better", timeout=30_000)
            assert page.locator(".error").count() == 0
            for el in page.get_by_text("common.complete").all():
                box = el.bounding_box()
                assert box is None or (box["width"] <= 1 and box["height"] <= 1), box  # screen-reader only
            page.get_by_label("B is better").check()
            vote.click()
            expect(page.locator("#arena-reveal")).to_contain_text("Model A was", timeout=20_000)
            reveal = page.locator("#arena-reveal").inner_text()
            assert all(n in reveal for n in NAMES)
            labels = page.locator("#arena-chat-a").inner_text() + page.locator("#arena-chat-b").inner_text()
            assert all(f": {n}" in labels for n in NAMES)
            page.screenshot(path=str(shots / "arena-reveal.png"))
            browser.close()
    finally:
        page_app.close()
    assert fetched == []
    assert db["votes"].count == 2


@pytest.mark.slow
@pytest.mark.browser
def test_a_multi_turn_battle_on_the_default_model_has_no_broken_characters_or_turn_markers(db, db_path):
    """#18 done-when: two turns against the default model (Gemma 3 270M base, sampled), streamed to the
    browser: no "\ufffd" and no "Human:" / "Assistant:" turn in any answer, on the page or in the database."""
    from pathlib import Path

    from playwright.sync_api import expect, sync_playwright

    from cai.backend_pool import BackendPool

    shots = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    names = ["gemma-a", "gemma-b"]
    for n in names:
        models.register_model(db, n, "default")
    arena.create_campaign(db, "talk", names, "helpfulness", max_turns=2, max_new_tokens=48, temperature=0.9)
    users.add_user(db, "rita", "rater", "password1")
    page_app, port = _launch(db_path, BackendPool())
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#arena-name input, #arena-name textarea").first.fill("rita")
            page.get_by_label("Password").fill("password1")
            page.locator("#arena-login").click()
            expect(page.locator("#arena-hello")).to_contain_text("Signed in as rita", timeout=20_000)
            page.locator("#arena-start").click()
            expect(page.locator("#arena-status")).to_contain_text("Turn 1 of 2", timeout=20_000)
            for turn, message in ((1, "Can you recommend a café in Paris? Write the name in French."),
                                  (2, "What should I order there, and what does it cost in €?")):
                page.locator("#arena-message textarea").fill(message)
                page.locator("#arena-send").click()
                expect(page.locator("#arena-status")).to_contain_text(f"Turn {turn} of 2: which response",
                                                                      timeout=600_000)
                for side in ("a", "b"):
                    text = page.locator(f"#arena-chat-{side}").inner_text()
                    assert "\ufffd" not in text, text
                page.get_by_label("A is better").check()
                page.locator("#arena-vote").click()
                expect(page.locator("#arena-status")).to_contain_text("Vote recorded", timeout=20_000)
            page.screenshot(path=str(shots / "arena-default-model-two-turns.png"))
            browser.close()
    finally:
        page_app.close()
    turns = list(db["battle_turns"].rows)
    assert len(turns) == 2 and all(t["shown_at"] for t in turns)
    for t in turns:
        for text in (t["response_a"], t["response_b"]):
            assert "\ufffd" not in text and "Human:" not in text and "Assistant:" not in text, text


@pytest.mark.slow
@pytest.mark.browser
def test_one_battle_of_the_sample_campaign_on_the_embedded_models(db_path, monkeypatch):
    """#26 done-when: on a fresh database (as `make app` seeds it) a rater plays one battle of the sample
    campaign: two real models (smollm2, gemma3-270m) answer, no test-model warning anywhere, and the reveal
    names both."""
    from pathlib import Path

    from playwright.sync_api import expect, sync_playwright

    from app import prepare
    from cai import store
    from cai.backend_pool import BackendPool

    monkeypatch.setenv("CAI_ADMIN_PASSWORD", "admin-password-1")
    prepare(str(db_path))
    db = store.connect(db_path)
    users.add_user(db, "rita", "rater", "password1")
    shots = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    embedded = ["smollm2", "gemma3-270m"]
    page_app, port = _launch(db_path, BackendPool())
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#arena-name input, #arena-name textarea").first.fill("rita")
            page.get_by_label("Password").fill("password1")
            page.locator("#arena-login").click()
            expect(page.locator("#arena-hello")).to_contain_text("Signed in as rita", timeout=20_000)
            expect(page.locator("#arena-campaign input")).to_have_value(arena.SAMPLE_CAMPAIGN, timeout=20_000)
            expect(page.locator("#arena-instructions")).to_contain_text("more helpful", timeout=10_000)
            page.locator("#arena-start").click()
            expect(page.locator("#arena-status")).to_contain_text("Turn 1 of 2", timeout=20_000)
            page.locator("#arena-message textarea").fill("What is the capital of France?")
            page.locator("#arena-send").click()
            expect(page.locator("#arena-status")).to_contain_text("Turn 1 of 2: which response", timeout=600_000)
            body = page.locator("body").inner_text()
            assert not any(n in body for n in embedded)  # still blind
            assert "test model" not in body.lower() and "noise" not in body.lower()
            page.get_by_label("A is better").check()
            page.locator("#arena-vote").click()
            expect(page.locator("#arena-status")).to_contain_text("Vote recorded", timeout=20_000)
            page.locator("#arena-end").click()
            expect(page.locator("#arena-reveal")).to_contain_text("Model A was", timeout=20_000)
            reveal = page.locator("#arena-reveal").inner_text()
            assert all(n in reveal for n in embedded), reveal
            assert "test model" not in page.locator("body").inner_text().lower()
            page.screenshot(path=str(shots / "arena-sample-campaign-reveal.png"))
            browser.close()
    finally:
        page_app.close()
    [turn] = list(db["battle_turns"].rows)
    assert turn["shown_at"] and turn["response_a"].strip() and turn["response_b"].strip()
    [battle] = list(db["battles"].rows)
    names = {r["name"] for r in db.query("select name from models where id in (?, ?)",
                                          [battle["model_a"], battle["model_b"]])}
    assert names == set(embedded)
