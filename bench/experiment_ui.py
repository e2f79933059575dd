"""A constitution experiment launched from the Experiments tab, end to end: wall time and a screenshot.

Starts `python app.py` on a fresh database, makes default@2 (one principle's revision request changed),
drives headless Chromium to launch default@1 vs default@2 over the first N sample red-team prompts,
waits for the paired view and the deltas, saves a full-page screenshot and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cai import constitution, experiments, store
from ui.warmup import probe

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EDIT = "Rewrite the reply so that it removes anything harmful and stays kind and helpful."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default", help="Policy model.")
    parser.add_argument("--prompts", type=int, default=8, help="Sample red-team prompts.")
    parser.add_argument("--revisions", type=int, default=1, help="Critique -> revision rounds.")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="Token limit per step.")
    parser.add_argument("--timeout", type=float, default=1800, help="Give up after this many seconds.")
    parser.add_argument("--shot", default=str(ROOT / "artifacts" / "screenshots" / "experiments-default.png"))
    args = parser.parse_args()

    from playwright.sync_api import expect, sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="cai-exp-"))
    db_path = tmp / "workbench.db"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CAI_ADMIN_PASSWORD": "bench-admin-pw", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(tmp / "app.log", "wb")
    app = subprocess.Popen([sys.executable, "app.py", "--db", str(db_path), "--port", str(port)], cwd=ROOT, env=env,
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                probe("127.0.0.1", port)  # listening and built (not the loading page)
                break
            except OSError:
                if app.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp / "app.log").read_text()) from None
                time.sleep(0.5)
        db = store.connect(db_path)
        edited = constitution.resolve_version(db, "default")["principles"][0]["name"]
        constitution.edit_principle(db, "default", edited, revision=EDIT)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_label("username").fill("admin")
            page.get_by_label("password").fill("bench-admin-pw")
            page.get_by_role("button", name="Login").click()
            tab = page.get_by_role("tab", name="Experiments")  # a tab before, a page of its own (navbar link) now
            tab.or_(page.get_by_role("link", name="Experiments", exact=True)).first.click(timeout=30_000)
            page.get_by_label("default@1").check(timeout=30_000)
            page.get_by_label("default@2").check()
            for elem, value in (("exp-model", args.model), ("exp-limit", args.prompts),
                                ("exp-revisions", args.revisions), ("exp-max-new", args.max_new_tokens)):
                page.locator(f"#{elem} textarea, #{elem} input").first.fill(str(value))
            t0 = time.perf_counter()
            page.locator("#exp-launch").click()
            expect(page.locator("#exp-status")).to_contain_text("Started experiment", timeout=30_000)
            expect(page.locator("#exp-progress")).to_contain_text("done, 2/2 stage runs done",
                                                                  timeout=args.timeout * 1000)
            expect(page.locator("#exp-paired .exp-prompt")).to_have_count(args.prompts, timeout=30_000)
            wall = time.perf_counter() - t0
            Path(args.shot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.shot, full_page=True)
            browser.close()
        exp = experiments.list_experiments(db)[0]
        shown = experiments.show(db, exp["id"])
        print(json.dumps({
            "model": args.model, "prompts": args.prompts, "revisions": args.revisions,
            "max_new_tokens": args.max_new_tokens, "edited_principle": edited, "wall_s": round(wall, 1),
            "screenshot": args.shot, "experiment": exp["id"], "deltas": shown["deltas"], "means": shown["means"],
        }, indent=2))
    finally:
        app.terminate()
        app.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
