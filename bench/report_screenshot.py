"""A full-page screenshot of a pipeline report (`cai pipeline report ID --out report.html`), for the README.

Opens the self-contained HTML file in Debian's chromium through Playwright (never `playwright install`) and
waits for the inlined plotly charts to draw before the shot.

    python bench/report_screenshot.py report.html docs/pipeline-report-cpu-small.png [--width 1100]
"""

from __future__ import annotations

import argparse
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html")
    parser.add_argument("png")
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        page.set_default_timeout(180_000)  # the inlined plotly.js is 4 MB: slow to parse on a loaded machine
        page.goto(Path(args.html).resolve().as_uri())
        charts = page.locator(".plotly-graph-div")
        for i in range(charts.count()):
            charts.nth(i).locator(".main-svg").first.wait_for()
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.png, full_page=True)
        browser.close()
    print(args.png)


if __name__ == "__main__":
    main()
