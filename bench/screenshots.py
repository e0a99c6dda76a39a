"""Screenshots for the README, taken from the running demo (`make demo` in another shell):

    .venv/bin/python bench/screenshots.py [http://127.0.0.1:8000]

Signs in as the demo's author and saves docs/screenshots/{pipelines,pipeline,run}.png."""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def main(base: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        page.goto(f"{base}/login/")
        page.fill("input[name=username]", "author")
        page.fill("input[name=password]", "railyard-author")
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/")
        page.screenshot(path=str(OUT / "pipelines.png"), full_page=True)
        page.goto(f"{base}/pipelines/daily_sales_load/")
        page.screenshot(path=str(OUT / "pipeline.png"), full_page=True)
        page.goto(f"{base}/pipelines/flaky_orders_load/")
        page.locator("a:has-text('Details')").first.click()
        page.screenshot(path=str(OUT / "run.png"), full_page=True)
        page.goto(f"{base}/pipelines/new/")
        page.screenshot(path=str(OUT / "new-pipeline.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000")
