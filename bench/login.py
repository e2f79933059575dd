"""Sign-in to a usable page, per role (issue #16: "logins take 5-7 s"; #13: one page per role). Prints JSON.

Serves the app as a user starts it (`python app.py`, on a fresh database with an admin, a viewer and a rater)
and measures, per role: POST /login, the page and its config (size, time), and in headless Chromium (after the
sign-in page is idle, as it is while a person types: its prefetches done) the time
from pressing "Login" to a usable page: the workbench's home page filled (admin, viewer: the header names the user
and `#home-overview` shows the constitution) or the rater's battle page signed in (rater). With `--before DIR` (a checkout of an
older version, e.g. `git archive <commit> | tar -x -C DIR`), that version is served too and the two are
measured interleaved in the same run, so the machine's load drifts over both alike.
Also the p95 of a cheap request while threads guess passwords, with the scrypt check on the event loop and in a
worker thread, interleaved (this version only).
Usage: python bench/login.py [--runs 3] [--before DIR] [--no-browser] [--guessers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
PASSWORD = "bench-admin-pw"
VIEWPORT = {"width": 1400, "height": 1000}
ACCOUNTS = {"admin": ("admin", PASSWORD), "viewer": ("vera", "bench-viewer-pw"), "rater": ("rita", "bench-rater-pw")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_app(tree: Path, workdir: Path) -> tuple[subprocess.Popen, str]:
    """`python app.py` of the checkout `tree` on a fresh database, with the three accounts; (process, url)."""
    from cai import store, users

    db_path = workdir / "bench.db"
    port = free_port()
    env = {**os.environ, "CAI_ADMIN_PASSWORD": PASSWORD, "PYTHONPATH": str(tree), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(workdir / "app.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "app.py", "--db", str(db_path), "--port", str(port), "--model", "tiny"],
                            cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    from ui.warmup import probe  # the port listens before the app is built: wait for the app

    deadline = time.monotonic() + 300  # a loaded machine starts it slowly
    while True:
        try:
            probe("127.0.0.1", port)  # listening and built (not the loading page)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "app.log").read_text()) from None
            time.sleep(0.3)
    db = store.connect(db_path)
    for role, (name, password) in ACCOUNTS.items():
        if users.get_user(db, name) is None:
            users.add_user(db, name, role, password)
    db.close()
    return proc, f"http://127.0.0.1:{port}"


def http_figures(url: str, role: str) -> dict[str, float]:
    """POST /login, then the page the role lands on and its config: seconds and bytes."""
    import httpx

    name, password = ACCOUNTS[role]
    with httpx.Client(base_url=url, timeout=60, follow_redirects=True) as client:
        t = time.perf_counter()
        assert client.post("/login", data={"username": name, "password": password}).status_code == 200
        post = time.perf_counter() - t
        t = time.perf_counter()
        page = client.get("/")
        page_s = time.perf_counter() - t
        base = str(page.url).rstrip("/")
        t = time.perf_counter()
        config = client.get(base + "/config")
        config_s = time.perf_counter() - t
    return {"post_login_s": post, "page_s": page_s, "page_bytes": len(page.content), "config_s": config_s,
            "config_bytes": len(config.content) if config.status_code == 200 else 0}


def browser_login(browser, url: str, role: str, context=None) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(seconds from pressing Login to a usable page for `role`, seconds the page's main thread was busy meanwhile
    (Chrome's TaskDuration: the browser's CPU work, which a loaded machine stretches less than wall time)).
    A fresh browser context (no cached assets) unless `context` is given (a returning user: cached assets).
    Both clocks are the machine's wall clock: the click is taken here, the usable frame in the page."""
    name, password = ACCOUNTS[role]
    if context is not None:
        context.clear_cookies()
    page = context.new_page() if context is not None else browser.new_page(viewport=VIEWPORT)
    try:
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.goto(url + "/")
        page.wait_for_load_state("networkidle")  # a person types for seconds: the page's prefetches are done
        page.get_by_label("username").fill(name)
        page.get_by_label("password").fill(password)
        busy0 = _busy(cdp)
        t = time.time()
        page.get_by_role("button", name="Login").click()
        page.wait_for_url(lambda u: not u.rstrip("/").endswith("/login"), wait_until="commit", timeout=120_000)
        return shown_at(page, USABLE_JS, [role, name]) - t, _busy(cdp) - busy0
    finally:
        page.close()


# True once the page is usable: it shows "Signed in as NAME" (the rater page signed in, or the workbench header) and,
# for admins and viewers, the landing page's content from the database: the home overview (or, on a checkout from
# before the home page, the Constitution page). innerText holds only rendered text, so hidden elements do not count.
USABLE_JS = """([role, name]) => {
  if (!document.body || !document.body.innerText.includes(`Signed in as ${name}`)) return false;
  if (role === "rater") return true;
  const landing = document.querySelector("#home-overview") || document.querySelector("#constitution-info");
  return landing !== null && landing.innerText.includes("default v");
}"""


def shown_at(page, predicate: str, arg: object = None) -> float:  # type: ignore[no-untyped-def]
    """The wall-clock time (epoch seconds, the page's own clock) of the first animation frame at which
    `predicate(arg)` holds. Checked on every frame: Playwright's `expect` polls at growing intervals (0.1, 0.25,
    0.5, 1 s), which would round a page's time up by as much as half a second."""
    js = f"(arg) => {{ const ok = ({predicate})(arg); return ok ? Date.now() : false; }}"
    return float(page.wait_for_function(js, arg=arg, polling="raf", timeout=120_000).json_value()) / 1000


def _busy(cdp) -> float:  # type: ignore[no-untyped-def]
    return float(next(m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "TaskDuration"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", type=Path, default=None, help="A checkout of an older version to compare.")
    parser.add_argument("--roles", default="admin,viewer,rater")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--guessers", type=int, default=8, help="Threads guessing passwords (0: skip).")
    args = parser.parse_args()
    roles = [r for r in args.roles.split(",") if r]

    from cai import users

    out: dict[str, object] = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    stored = users.hash_password(PASSWORD)
    scrypt = []
    for _ in range(args.runs):
        t = time.perf_counter()
        users.verify_password(PASSWORD, stored)
        scrypt.append(time.perf_counter() - t)
    out["scrypt_check_ms"] = round(1000 * statistics.median(scrypt), 1)

    sides = {"after": ROOT} if args.before is None else {"before": args.before.resolve(), "after": ROOT}
    servers = {side: start_app(tree, Path(tempfile.mkdtemp(prefix=f"login-{side}-"))) for side, tree in sides.items()}
    try:
        http: dict[str, dict[str, list[dict[str, float]]]] = {s: {r: [] for r in roles} for s in sides}
        kinds = ("cold", "warm")
        clicks = {s: {r: {k: [] for k in kinds} for r in roles} for s in sides}  # (wall, busy) per login
        for _ in range(args.runs):  # interleaved: before and after, role by role
            for role in roles:
                for side in sides:
                    http[side][role].append(http_figures(servers[side][1], role))
        if not args.no_browser:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                returning = {side: browser.new_context(viewport=VIEWPORT) for side in sides}  # keeps its HTTP cache
                for side in sides:  # warm-up: the server's first page, and the returning user's cache
                    for role in roles:
                        browser_login(browser, servers[side][1], role, returning[side])
                for _ in range(args.runs):
                    for role in roles:
                        for side in sides:
                            url = servers[side][1]
                            clicks[side][role]["cold"].append(browser_login(browser, url, role))
                            clicks[side][role]["warm"].append(browser_login(browser, url, role, returning[side]))
                browser.close()
        for side in sides:
            per_role: dict[str, dict[str, object]] = {}
            for role in roles:
                rows = http[side][role]
                fig: dict[str, object] = {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
                for kind in kinds:
                    got = clicks[side][role][kind]
                    if got:
                        fig[f"login_to_usable_{kind}_s"] = round(statistics.median(w for w, _ in got), 2)
                        fig[f"browser_busy_{kind}_s"] = round(statistics.median(b for _, b in got), 2)
                        fig[f"login_to_usable_{kind}_all_s"] = [round(w, 2) for w, _ in got]
                per_role[role] = fig
            out[side] = per_role
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.guessers:
        for off in (False, True, False, True):  # interleaved: the machine's load drifts
            key = f"p95_ms_with_{args.guessers}_guessers_{'off_loop' if off else 'on_loop'}"
            out.setdefault(key, []).append(guess_p95(args.guessers, off))  # type: ignore[union-attr]
    print(json.dumps(out, indent=2))


def guess_p95(guessers: int, off_loop: bool, seconds: float = 6.0) -> float:
    """p95 latency (ms) of a cheap request while `guessers` threads post wrong passwords (no lockout)."""
    import httpx
    import uvicorn

    import app as app_module
    from cai import users
    from ui.app import server

    path = Path(tempfile.mkdtemp()) / "guess.db"
    os.environ["CAI_ADMIN_PASSWORD"] = PASSWORD
    app_module.prepare(str(path), "tiny")
    policy = users.LoginPolicy(per_name=10**9, per_address=10**9)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(server(path, "tiny", login_policy=policy, auth_off_loop=off_loop),
                                        host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
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
            c.get("/login")
            lat.append(time.perf_counter() - t0)
    for t in threads:
        t.join()
    srv.should_exit = True
    thread.join(timeout=10)
    lat.sort()
    return round(1000 * lat[int(0.95 * (len(lat) - 1))], 1)


if __name__ == "__main__":
    main()
