from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from pipelines import services
from pipelines.models import Backfill, Deployment, Run, TaskRun

from .conftest import NOW

pytestmark = pytest.mark.django_db


def detail_url(pipeline) -> str:
    return reverse("pipeline_detail", args=[pipeline.slug])


def make_runs(deployment, states: list[str]) -> list[Run]:
    runs = []
    for day, state in enumerate(states, start=1):
        run, _ = services.run_create(
            deployment=deployment, logical_date=services.logical_date_for(deployment, date(2026, 1, day)), now=NOW
        )
        Run.objects.filter(pk=run.pk).update(state=state)
        run.refresh_from_db()
        runs.append(run)
    return runs


# --- sign-in ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pipeline_list", "pipeline_new"])
def test_pages_require_sign_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_signing_in_leads_to_the_pipeline_list(client, author):
    response = client.post(reverse("login"), {"username": "alice", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert response.url == reverse("pipeline_list")


def test_signing_out_is_a_post(author_client):
    response = author_client.post(reverse("logout"))
    assert response.status_code == 302
    assert author_client.get(reverse("pipeline_list")).status_code == 302


# --- the list ----------------------------------------------------------------------------------
def test_the_list_shows_team_schedule_environment_and_last_run(author_client, pipeline):
    deployment = Deployment.objects.get(pipeline=pipeline)
    make_runs(deployment, ["success", "failed", "success", "success"])
    response = author_client.get(reverse("pipeline_list"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "daily_sales" in html
    assert "Analytics" in html
    assert "30 2 * * *" in html and "Europe/London" in html
    assert "env-dev" in html
    (row,) = response.context["rows"]
    assert row.last_run.logical_date.date() == date(2026, 1, 4)
    assert row.success_rate == 0.75
    assert "75%" in html
    assert 'hx-trigger="every 5s"' in html


def test_the_list_shows_the_next_run_in_the_pipelines_zone(author_client, pipeline):
    Deployment.objects.filter(pipeline=pipeline).update(next_due_at=timezone.now() + timedelta(hours=3, minutes=1))
    html = author_client.get(reverse("pipeline_list")).content.decode()
    assert "3\xa0hours from now" in html or "3 hours from now" in html
    assert "GMT" in html or "BST" in html


def test_the_list_hides_other_teams_pipelines(client, outsider, pipeline):
    client.force_login(outsider)
    response = client.get(reverse("pipeline_list"))
    assert response.context["rows"] == []
    assert "daily_sales" not in response.content.decode()


def test_an_htmx_request_gets_the_table_without_the_page(author_client, pipeline):
    response = author_client.get(reverse("pipeline_list"), headers={"HX-Request": "true"})
    html = response.content.decode()
    assert "<html" not in html
    assert 'id="pipeline-table"' in html
    assert "daily_sales" in html


def test_the_list_costs_the_same_queries_for_3_or_10_pipelines(
    author_client, make_pipeline, django_assert_max_num_queries
):
    def add(count: int, offset: int) -> None:
        for i in range(offset, offset + count):
            pipeline = make_pipeline(f"pipe_{i:02d}")
            make_runs(Deployment.objects.get(pipeline=pipeline), ["success", "failed"])

    add(3, 0)
    with CaptureQueriesContext(connection) as three:
        assert len(author_client.get(reverse("pipeline_list")).context["rows"]) == 3
    add(7, 3)
    with django_assert_max_num_queries(len(three)):
        response = author_client.get(reverse("pipeline_list"))
    assert len(response.context["rows"]) == 10
    assert len(three) <= 5  # session, user, deployments, recent runs (+ savepoint noise)


# --- access ------------------------------------------------------------------------------------
def test_the_author_and_a_teammate_see_the_pipeline(client, author, teammate, pipeline):
    for user in (author, teammate):
        client.force_login(user)
        assert client.get(detail_url(pipeline)).status_code == 200


def test_a_superuser_sees_any_pipeline(client, pipeline, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="x" * 12))
    assert client.get(detail_url(pipeline)).status_code == 200


@pytest.mark.parametrize("action", ["pipeline_pause", "pipeline_trigger", "pipeline_backfill"])
def test_an_outsider_cannot_act_on_the_pipeline(client, outsider, pipeline, action):
    client.force_login(outsider)
    response = client.post(reverse(action, args=[pipeline.slug]), {
        "paused": "true", "date": "2026-01-05", "start": "2026-01-01", "end": "2026-01-02",
        "reprocess": "missing", "max_active_runs": "1",
    })
    assert response.status_code == 404
    deployment = Deployment.objects.get(pipeline=pipeline)
    assert deployment.paused is False
    assert Run.objects.count() == 0


def test_an_outsider_gets_404_on_the_pipeline_page(client, outsider, pipeline):
    client.force_login(outsider)
    assert client.get(detail_url(pipeline)).status_code == 404


def test_an_unknown_pipeline_is_404(author_client, connections):
    assert author_client.get(reverse("pipeline_detail", args=["nope"])).status_code == 404


# --- the pipeline page ---------------------------------------------------------------------------
def test_the_page_shows_schedule_guardrails_and_runs(author_client, pipeline):
    deployment = Deployment.objects.get(pipeline=pipeline)
    make_runs(deployment, ["success"])
    html = author_client.get(detail_url(pipeline)).content.decode()
    assert "30 2 * * *" in html and "Europe/London" in html
    assert "alice" in html and "Analytics" in html
    assert "Max active runs" in html and "Catchup" in html
    assert "2026-01-01" in html  # ds of the run in the pipeline's zone
    assert "02:30 UTC" in html  # and its logical date in UTC (London is on GMT in January)
    assert html.count('class="task state-pending"') == 4  # extract, validate, load, publish
    assert reverse("run_detail", args=[Run.objects.get().pk]) in html


def test_the_page_polls_only_while_a_run_is_active(author_client, pipeline):
    deployment = Deployment.objects.get(pipeline=pipeline)
    (run,) = make_runs(deployment, ["success"])
    assert 'hx-trigger="every 3s"' not in author_client.get(detail_url(pipeline)).content.decode()
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING)
    assert 'hx-trigger="every 3s"' in author_client.get(detail_url(pipeline)).content.decode()


def test_an_htmx_request_gets_the_page_without_the_layout(author_client, pipeline):
    response = author_client.get(detail_url(pipeline), headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and "Railyard</a>" not in html
    assert 'id="live"' in html


def test_pause_toggles(author_client, pipeline):
    url = reverse("pipeline_pause", args=[pipeline.slug])
    response = author_client.post(url, {"paused": "true"})
    assert response.status_code == 302
    assert Deployment.objects.get(pipeline=pipeline).paused is True
    assert "Resume schedule" in author_client.get(detail_url(pipeline)).content.decode()
    author_client.post(url, {"paused": "false"})
    assert Deployment.objects.get(pipeline=pipeline).paused is False


def test_a_teammate_may_pause(client, teammate, pipeline):
    client.force_login(teammate)
    client.post(reverse("pipeline_pause", args=[pipeline.slug]), {"paused": "true"})
    assert Deployment.objects.get(pipeline=pipeline).paused is True


def test_pause_needs_a_post(author_client, pipeline):
    assert author_client.get(reverse("pipeline_pause", args=[pipeline.slug])).status_code == 405


def test_running_a_date_creates_exactly_one_run_and_starts_it(
    author_client, pipeline, django_capture_on_commit_callbacks
):
    deployment = Deployment.objects.get(pipeline=pipeline)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = author_client.post(reverse("pipeline_trigger", args=[pipeline.slug]), {"date": "2026-01-05"})
    assert response.status_code == 302
    run = Run.objects.get()
    assert run.logical_date == services.logical_date_for(deployment, date(2026, 1, 5))
    assert run.trigger == Run.Trigger.MANUAL
    assert run.state == Run.State.RUNNING  # started at once, not at the next tick
    assert TaskRun.objects.get(run=run, task_id="extract").state == TaskRun.State.QUEUED
    assert len(callbacks) == 1  # the dispatch to the broker, after commit
    html = author_client.get(response.url).content.decode()
    assert "started" in html


def test_running_a_date_that_is_running_shows_a_message(author_client, pipeline, django_capture_on_commit_callbacks):
    url = reverse("pipeline_trigger", args=[pipeline.slug])
    with django_capture_on_commit_callbacks(execute=False):
        author_client.post(url, {"date": "2026-01-05"})
        response = author_client.post(url, {"date": "2026-01-05"}, follow=True)
    assert response.status_code == 200
    assert "is running already" in response.content.decode()
    assert Run.objects.count() == 1


def test_running_without_a_date_shows_a_message(author_client, pipeline):
    response = author_client.post(reverse("pipeline_trigger", args=[pipeline.slug]), {"date": "soon"}, follow=True)
    assert "Date: enter a date" in response.content.decode()
    assert Run.objects.count() == 0


def test_a_backfill_creates_its_runs_and_shows_progress(author_client, pipeline, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = author_client.post(reverse("pipeline_backfill", args=[pipeline.slug]), {
            "start": "2026-01-01", "end": "2026-01-03", "reprocess": "missing", "max_active_runs": "2",
        }, follow=True)
    backfill = Backfill.objects.get()
    assert backfill.runs.count() == 3
    assert backfill.runs.filter(state=Run.State.RUNNING).count() == 2
    (row,) = response.context["page"].backfills
    assert row.progress == {"done": 0, "running": 2, "failed": 0, "remaining": 1, "cancelled": 0}
    assert "Backfills" in response.content.decode()


def test_a_backfill_with_the_end_before_the_start_shows_the_error(author_client, pipeline):
    response = author_client.post(reverse("pipeline_backfill", args=[pipeline.slug]), {
        "start": "2026-01-03", "end": "2026-01-01", "reprocess": "missing", "max_active_runs": "1",
    }, follow=True)
    assert response.status_code == 200
    assert "End: The end date must be on or after the start date." in response.content.decode()
    assert Backfill.objects.count() == 0


def test_a_backfill_in_the_future_shows_the_error(author_client, pipeline):
    later = timezone.localdate() + timedelta(days=30)
    response = author_client.post(reverse("pipeline_backfill", args=[pipeline.slug]), {
        "start": later.isoformat(), "end": later.isoformat(), "reprocess": "missing", "max_active_runs": "1",
    }, follow=True)
    assert "No finished interval" in response.content.decode()
    assert Backfill.objects.count() == 0
