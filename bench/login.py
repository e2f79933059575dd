"""Where a workbench sign-in spends its time (issue #16: "logins take 5-7 s"). Prints JSON.

Measures, against the real app served in-process: one scrypt check, POST /login, the page and its config
(size and time), and in headless Chromium the time from pressing "Login" to the first event the page
sends (the client building every component) and to the signed-in header (the page-load events).
Also the p95 of a cheap request while 8 threads guess passwords, with the scrypt check on the event loop
(before) and in a worker thread (now), interleaved. Usage: python bench/login.py [--runs 3] [--no-browser]
[--guessers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
PASSWORD = "bench-admin-pw"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--guessers", type=int, default=8, help="Threads guessing passwords (0: skip).")
    args = parser.parse_args()

    import httpx
    import uvicorn

    import app as app_module
    from cai import users
    from ui.app import server

    path = Path(tempfile.mkdtemp()) / "bench.db"
    os.environ["CAI_ADMIN_PASSWORD"] = PASSWORD
    app_module.prepare(str(path), "tiny")
    out: dict[str, object] = {}
    stored = users.hash_password(PASSWORD)
    scrypt = []
    for _ in range(args.runs):
        t = time.perf_counter()
        users.verify_password(PASSWORD, stored)
        scrypt.append(time.perf_counter() - t)
    out["scrypt_check_ms"] = round(1000 * statistics.median(scrypt), 1)
    t = time.perf_counter()
    asgi = server(path, "tiny")
    out["app_build_s"] = round(time.perf_counter() - t, 2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    posts, pages, configs = [], [], []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(args.runs):
            t = time.perf_counter()
            assert client.post("/login", data={"username": "admin", "password": PASSWORD}).status_code == 200
            posts.append(time.perf_counter() - t)
            t = time.perf_counter()
            page = client.get("/")
            pages.append(time.perf_counter() - t)
            t = time.perf_counter()
            config = client.get("/config")
            configs.append(time.perf_counter() - t)
    out.update(post_login_s=round(statistics.median(posts), 3), page_s=round(statistics.median(pages), 3),
               page_bytes=len(page.content), config_s=round(statistics.median(configs), 3),
               config_bytes=len(config.content))
    if not args.no_browser:
        from playwright.sync_api import expect, sync_playwright

        first_event, header = [], []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for _ in range(args.runs):
                page = browser.new_page()
                joins: list[float] = []
                page.on("request", lambda r, j=joins: j.append(time.perf_counter()) if "queue/join" in r.url else None)
                page.goto(url + "/")
                page.get_by_label("username").fill("admin")
                page.get_by_label("password").fill(PASSWORD)
                t = time.perf_counter()
                page.get_by_role("button", name="Login").click()
                expect(page.get_by_text("Signed in as")).to_be_visible(timeout=120_000)
                header.append(time.perf_counter() - t)
                first_event.append(min(joins) - t if joins else float("nan"))
                page.close()
            browser.close()
        out.update(browser_login_to_first_event_s=round(statistics.median(first_event), 2),
                   browser_login_to_header_s=round(statistics.median(header), 2))
    srv.should_exit = True
    if args.guessers:
        for off in (False, True, False, True):  # interleaved: the machine's load drifts
            key = f"p95_ms_with_{args.guessers}_guessers_{'off_loop' if off else 'on_loop'}"
            out.setdefault(key, []).append(guess_p95(path, args.guessers, off))  # type: ignore[union-attr]
    print(json.dumps(out, indent=2))


def guess_p95(path: Path, guessers: int, off_loop: bool, seconds: float = 6.0) -> float:
    """p95 latency (ms) of a cheap request while `guessers` threads post wrong passwords (no lockout)."""
    import httpx
    import uvicorn

    from cai import users
    from ui.app import server

    policy = users.LoginPolicy(per_name=10**9, per_address=10**9)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(server(path, "tiny", login_policy=policy, auth_off_loop=off_loop),
                                        host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    stop = time.monotonic() + seconds

    def guess(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while time.monotonic() < stop:
                c.post("/login", data={"username": "admin", "password": f"wrong-{i}"})

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(guessers)]
    for t in threads:
        t.start()
    lat = []
    with httpx.Client(base_url=url, timeout=60) as c:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            c.get("/gradio_api/login_check")
            lat.append(time.perf_counter() - t0)
    for t in threads:
        t.join()
    srv.should_exit = True
    lat.sort()
    return round(1000 * lat[int(0.95 * (len(lat) - 1))], 1)


if __name__ == "__main__":
    main()
