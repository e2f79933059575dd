"""A whole blind battle in headless Chromium against the rater page, with the tiny model streaming."""

import socket

import pytest

from cai import arena, models, users

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
    code = arena.create_invites(db, 1)[0]
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
            status = page.locator("#arena-status").inner_text()
            assert "Model A was" in status and all(n in status for n in NAMES)
            browser.close()
    finally:
        page_app.close()
    user = users.get_user(db, "newbie")
    votes = list(db["votes"].rows)
    assert [(v["user_id"], v["turn"], v["winner"]) for v in votes] == [(user["id"], 1, "model_b")]
    turn = next(db["battle_turns"].rows)
    assert turn["shown_at"] and turn["continued_with"] == "b"
