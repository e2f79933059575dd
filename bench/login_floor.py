"""Gradio's own start-up floor vs our home page (issue #16: sign-in to a usable page under 1 s). Prints JSON.

Serves, each the way ui.app serves a role's page (`gr.mount_gradio_app`, same theme/CSS, no SSR, queue):
- `floor`: a minimal `gr.Blocks()` with one Markdown;
- `navbar_header`: the navbar and signed-in header every workbench page has (the name filled in the browser);
- `home_page`: the admin/viewer home page (`ui.home.build`: the overview, filled by its load event);
- `constitution_page`: the Constitution page's content (`ui.constitution.build`, filled by its load event);
and measures in headless Chromium, fresh context (no cache) each time, interleaved, the time from navigating to
the page until it shows its content (`#constitution-info` or `#home-overview`; checked on every animation frame),
and the page main thread's busy time (Chrome's TaskDuration).
Usage: python bench/login_floor.py [--runs 4]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()

    import gradio as gr
    import uvicorn
    from fastapi import FastAPI
    from playwright.sync_api import sync_playwright

    import app as app_module
    from bench.login import CHROMIUM_ARGS, VIEWPORT, _busy, free_port, shown_at
    from ui.app import HEADER_JS, _look, calm_queue, header_html
    from ui.common import AppContext

    os.environ.setdefault("CAI_ADMIN_PASSWORD", "bench-admin-pw")
    db = Path(tempfile.mkdtemp()) / "floor.db"
    app_module.prepare(str(db), "tiny")
    ctx = AppContext(db, "tiny")

    def floor() -> gr.Blocks:
        with gr.Blocks() as demo:
            gr.Markdown("default v1", elem_id="constitution-info")
        return demo

    def navbar_header() -> gr.Blocks:
        with gr.Blocks() as demo:
            gr.Navbar(main_page_name="Constitution")
            gr.HTML(header_html(None, "admin"), js_on_load=HEADER_JS)
            gr.Markdown("default v1", elem_id="constitution-info")
        return demo

    def home_page() -> gr.Blocks:
        with gr.Blocks() as demo:
            importlib.import_module("ui.home").build(ctx)
        return demo

    def constitution_page() -> gr.Blocks:
        with gr.Blocks() as demo:
            importlib.import_module("ui.constitution").build(ctx)
        return demo

    variants = {"floor": floor, "navbar_header": navbar_header, "home_page": home_page,
                "constitution_page": constitution_page}
    shows = {name: ("#home-overview", "constitution default v") if name == "home_page" else
             ("#constitution-info", "default v") for name in variants}
    urls, servers = {}, []
    for name, make in variants.items():
        fastapi_app = gr.mount_gradio_app(FastAPI(), calm_queue(make().queue()), path="",
                                          auth_dependency=lambda _request: "admin", **_look())
        port = free_port()
        srv = uvicorn.Server(uvicorn.Config(fastapi_app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=srv.run, daemon=True).start()
        while not srv.started:
            time.sleep(0.05)
        servers.append(srv)
        urls[name] = f"http://127.0.0.1:{port}"

    wall: dict[str, list[float]] = {k: [] for k in variants}
    busy: dict[str, list[float]] = {k: [] for k in variants}
    out: dict[str, object] = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)

        def one(name: str) -> tuple[float, float]:
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(urls[name] + "/gradio_api/info")  # same origin, nothing cached
            busy0, t = _busy(cdp), time.time()
            page.evaluate(f"window.location.assign('{urls[name]}/')")
            page.wait_for_url(urls[name] + "/", wait_until="commit")
            at = shown_at(page, "([sel, text]) => (document.querySelector(sel)?.textContent || '').includes(text)",
                          list(shows[name]))
            got = at - t, _busy(cdp) - busy0
            context.close()
            return got

        for name in variants:  # warm-up: each server's first page
            one(name)
        for _ in range(args.runs):
            for name in variants:
                w, b = one(name)
                wall[name].append(round(w, 3))
                busy[name].append(round(b, 3))
        browser.close()
    for srv in servers:
        srv.should_exit = True
    out["navigate_to_usable_s"] = {k: round(statistics.median(v), 3) for k, v in wall.items()}
    out["browser_busy_s"] = {k: round(statistics.median(v), 3) for k, v in busy.items()}
    out["navigate_to_usable_all_s"] = wall
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
