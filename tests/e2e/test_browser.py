"""The author's path through the pages in a real browser: sign in, create a pipeline with the
form (watching the cron preview), open its page and run a date. Screenshots go to
var/screenshots/ to look at.

No worker runs here: a triggered run just shows queued/running."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.models import Environment, Pipeline, Run
from pipelines.services import connection_save
from portal.accounts.models import Membership, Team

# Playwright's sync API runs an event loop in this thread; Django would refuse ORM calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
# Screenshots land in var/ (to look at after a run); the README's come from the running demo
# (bench/screenshots.py), so a test run never dirties the work tree.
SCREENSHOTS = Path(os.environ.get("RAILYARD_VAR_DIR") or Path(__file__).resolve().parents[2] / "var") / "screenshots"
PASSWORD = "correct-horse-battery"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Chromium is not installed at {CHROMIUM}"),
]


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.set_default_timeout(10_000)
        yield page
        context.close()
        browser.close()


@pytest.fixture
def author(django_user_model, tmp_path):
    team = Team.objects.create(slug="analytics", name="Analytics")
    user = django_user_model.objects.create_user(username="alice", password=PASSWORD)
    Membership.objects.create(user=user, team=team)
    dev = Environment.objects.get(slug="dev")
    connection_save(actor=user, environment=dev, name="landing", kind="files", config={"base_path": str(tmp_path)})
    connection_save(actor=user, environment=dev, name="warehouse", kind="sqlite",
                    config={"path": str(tmp_path / "warehouse.sqlite3")})
    return user


@pytest.mark.django_db(transaction=True)
def test_an_author_creates_a_pipeline_and_runs_a_date(live_server, browser_page, author):
    page = browser_page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page.goto(live_server.url + "/")
    assert "/login/" in page.url
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/")
    page.get_by_role("link", name="Create your first pipeline").click()

    page.fill("#id_name", "daily_sales")
    page.select_option("#id_source_connection", "landing")
    page.fill("#id_source", "landing/{{ ds }}/sales.csv")
    page.fill("#id_schedule", "30 2 * * *")
    page.fill("#id_timezone", "Europe/London")
    # The live preview lists the next five fire times in the chosen zone.
    page.wait_for_function(
        "document.querySelector('#cron-preview').innerText.includes('Europe/London')"
        " && document.querySelectorAll('#cron-preview li').length === 5"
    )
    page.fill("#id_primary_key", "order_id")
    page.fill("#id_partition_column", "dt")
    page.fill("#id_runbook_url", "https://wiki.example.com/runbooks/sales")
    page.fill("#id_tags", "sales, finance")
    page.screenshot(path=str(SCREENSHOTS / "new-pipeline.png"), full_page=True)

    page.click("button:has-text('Create pipeline')")
    page.wait_for_url(live_server.url + "/pipelines/daily_sales/")
    assert Pipeline.objects.filter(slug="daily_sales").exists()
    assert "Pipeline daily_sales created" in page.inner_text(".messages")

    page.fill("#id_date", "2026-01-05")
    page.click("button:has-text('Run')")
    page.wait_for_selector("text=2026-01-05")
    run = Run.objects.get(deployment__pipeline__slug="daily_sales", trigger=Run.Trigger.MANUAL)
    assert run.state in (Run.State.QUEUED, Run.State.RUNNING)
    assert page.locator("#live .badge.state-running, #live .badge.state-queued").count() >= 1
    page.screenshot(path=str(SCREENSHOTS / "pipeline.png"), full_page=True)

    page.click(f"a[href='/runs/{run.pk}/'] >> nth=0")
    page.wait_for_url(f"{live_server.url}/runs/{run.pk}/")
    assert "extract" in page.inner_text("table")
    page.screenshot(path=str(SCREENSHOTS / "run.png"), full_page=True)

    page.click("a.brand")
    page.wait_for_selector("#pipeline-table >> text=daily_sales")
    page.screenshot(path=str(SCREENSHOTS / "pipelines.png"), full_page=True)
