from __future__ import annotations

from datetime import date

import pytest
from django.urls import reverse

from pipelines import services
from pipelines.models import Deployment, Run, TaskRun

from .conftest import NOW

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(pipeline) -> Run:
    deployment = Deployment.objects.get(pipeline=pipeline)
    run, _ = services.run_create(
        deployment=deployment, logical_date=services.logical_date_for(deployment, date(2026, 1, 5)), now=NOW
    )
    return run


def url(name: str, run: Run) -> str:
    return reverse(name, args=[run.pk])


def test_the_run_page_shows_the_run_its_tasks_and_their_logs(author_client, run):
    TaskRun.objects.filter(run=run, task_id="extract").update(
        state=TaskRun.State.SUCCESS, try_number=1, rows_read=120, rows_written=120, log="read 120 rows from sales.csv"
    )
    TaskRun.objects.filter(run=run, task_id="validate").update(state=TaskRun.State.UP_FOR_RETRY, try_number=1)
    html = author_client.get(url("run_detail", run)).content.decode()
    assert "daily_sales" in html
    assert "2026-01-05" in html
    assert "<pre>read 120 rows from sales.csv</pre>" in html
    assert "1 / 3" in html  # try 1 of 3 (2 retries)
    assert 'badge state-up_for_retry' in html
    assert html.index(">extract<") < html.index(">validate<") < html.index(">load<") < html.index(">publish<")
    assert "Cancel" in html and "Re-run" not in html
    assert 'hx-trigger="every 3s"' in html


def test_a_teammate_sees_the_run(client, teammate, run):
    client.force_login(teammate)
    assert client.get(url("run_detail", run)).status_code == 200


@pytest.mark.parametrize("name", ["run_detail", "run_rerun", "run_cancel"])
def test_an_outsider_gets_404_on_the_run(client, outsider, run, name):
    client.force_login(outsider)
    response = client.get(url(name, run)) if name == "run_detail" else client.post(url(name, run))
    assert response.status_code == 404
    run.refresh_from_db()
    assert run.state == Run.State.QUEUED


def test_cancel_stops_a_queued_run(author_client, run):
    response = author_client.post(url("run_cancel", run), follow=True)
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED
    assert "Run cancelled." in response.content.decode()
    assert set(run.task_runs.values_list("state", flat=True)) == {TaskRun.State.CANCELLED}


def test_rerun_starts_a_new_attempt_of_a_finished_run(author_client, run, django_capture_on_commit_callbacks):
    Run.objects.filter(pk=run.pk).update(state=Run.State.FAILED)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = author_client.post(url("run_rerun", run), follow=True)
    run.refresh_from_db()
    assert run.attempt == 2
    assert run.state == Run.State.RUNNING
    assert len(callbacks) == 1
    assert "Attempt 2 started." in response.content.decode()
    assert Run.objects.count() == 1


def test_rerun_of_an_unfinished_run_shows_the_reason(author_client, run):
    response = author_client.post(url("run_rerun", run), follow=True)
    assert response.status_code == 200
    assert "Run: The run is queued" in response.content.decode()
    run.refresh_from_db()
    assert run.attempt == 1


def test_a_finished_run_offers_rerun_and_stops_polling(author_client, run):
    Run.objects.filter(pk=run.pk).update(state=Run.State.SUCCESS)
    html = author_client.get(url("run_detail", run)).content.decode()
    assert "Re-run" in html and "Cancel</button>" not in html
    assert "every 3s" not in html


def test_an_htmx_request_gets_the_run_without_the_layout(author_client, run):
    html = author_client.get(url("run_detail", run), headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in html
    assert 'id="run"' in html
