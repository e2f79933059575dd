"""Idle CPU of the web app: the server alone, then with a signed-in Dashboard open in headless Chromium.

Prints JSON: per code tree (e.g. main before a change and this checkout after it), the server's CPU share
(percent of one core) with no client, and the server's and the browser's with an open Dashboard on an
idle workbench (no run active). Trees are measured interleaved, rounds × each, so load from other users
of the machine hits them alike; compare within one invocation, not across machines.
Usage: python bench/idle_cpu.py [--roots /work/main,.] [--seconds 20] [--rounds 2]
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
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench-admin-pw"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_app(root: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`python app.py` of the tree at `root` on a fresh database; its own code only (PYTHONPATH=root)."""
    port = free_port()
    env = {**os.environ, "CAI_ADMIN_PASSWORD": PASSWORD, "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, str(root / "app.py"), "--db", str(workdir / "w.db"), "--port", str(port)],
                            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sys.path.insert(0, str(ROOT))
    from ui.warmup import probe  # the port listens before the app is built: wait for the app

    deadline = time.monotonic() + 120
    while True:
        try:
            probe("127.0.0.1", port)  # listening and built (not the loading page)
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app at {root} did not start") from None
            time.sleep(0.3)


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def share(procs: list[psutil.Process], seconds: float) -> float:
    """Percent of one core the processes used over the next `seconds`."""
    before, t0 = cpu_seconds(procs), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(procs) - before) / (time.monotonic() - t0)


def browser_processes() -> list[psutil.Process]:
    me = psutil.Process()
    return [c for c in me.children(recursive=True) if "chrom" in c.name().lower()]


def measure(root: Path, seconds: float, pw) -> dict[str, float]:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_app(root, Path(tmp))
        try:
            server = [psutil.Process(proc.pid)]
            time.sleep(3)  # past start-up work
            alone = share(server, seconds)
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}")
            page.get_by_label("username").fill("admin")
            page.get_by_label("password").fill(PASSWORD)
            page.get_by_role("button", name="Login").click()
            page.get_by_text("Signed in as admin").wait_for(timeout=60_000)
            tab = page.get_by_role("tab", name="Dashboard")  # a tab before, a page of its own (navbar link) now
            tab.or_(page.get_by_role("link", name="Dashboard", exact=True)).first.click()
            time.sleep(5)  # page-load handlers done
            chrome = browser_processes()
            before_s, before_b, t0 = cpu_seconds(server), cpu_seconds(chrome), time.monotonic()
            time.sleep(seconds)
            wall = time.monotonic() - t0
            with_server = 100 * (cpu_seconds(server) - before_s) / wall
            with_browser = 100 * (cpu_seconds(chrome) - before_b) / wall
            browser.close()
            return {"server_alone": alone, "server_with_dashboard": with_server,
                    "browser_with_dashboard": with_browser}
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roots", default=str(ROOT), help="Comma-separated code trees to compare (app.py in each).")
    parser.add_argument("--seconds", type=float, default=20.0, help="Seconds per measurement.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds per tree (medians reported).")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    roots = [Path(r).resolve() for r in args.roots.split(",")]
    samples: dict[str, list[dict[str, float]]] = {str(r): [] for r in roots}
    with sync_playwright() as pw:
        for i in range(args.rounds):
            for r in roots:
                m = measure(r, args.seconds, pw)
                print(json.dumps({"round": i, "root": str(r), **m}), file=sys.stderr, flush=True)
                samples[str(r)].append(m)
    out = {
        "unit": "percent of one CPU core (median over rounds)",
        "seconds_per_measurement": args.seconds,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_end": os.getloadavg()[0],
        "trees": {r: {k: round(statistics.median(s[k] for s in ms), 2) for k in ms[0]} for r, ms in samples.items()},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
