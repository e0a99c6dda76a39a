"""The REST API does what the pages do, with the same rules and field-named errors."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from pipelines.models import AuditEvent, Pipeline, Run
from tests import factories
from tests.runner import run_until_idle

VALID = {
    "name": "daily_sales_load",
    "team": "analytics",
    "source_connection": "landing",
    "source": "{{ ds }}/sales.csv",
    "schedule": "30 2 * * *",
    "timezone": "Europe/London",
    "primary_key": ["order_id"],
    "partition_column": "dt",
}


@pytest.fixture
def api(author, landing, warehouse):
    client = APIClient()
    client.force_authenticate(author)
    return client


def as_user(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_it_creates_a_pipeline_in_dev_with_the_template_guardrails(api):
    response = api.post("/api/v1/pipelines/", VALID, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["deployments"][0]["environment"] == "dev"
    assert body["deployments"][0]["guardrails"]["retries"] == 2
    assert body["deployments"][0]["inputs"]["timezone"] == "Europe/London"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("schedule", "61 * * * *", "cron"),
        ("schedule", "0 0 * * * *", "five fields"),
        ("timezone", "Mars/Olympus", "IANA"),
        ("partition_column", "dt; drop table x", "letters, digits and underscores"),
        ("primary_key", ["order id"], "letters, digits and underscores"),
        ("source", "/etc/passwd", "relative"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(api, field, value, words):
    response = api.post("/api/v1/pipelines/", {**VALID, field: value}, format="json")

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert field in errors, errors
    assert words in " ".join(errors[field])
    assert Pipeline.objects.count() == 0
    assert AuditEvent.objects.filter(action="pipeline.created").count() == 0


def test_a_team_you_do_not_belong_to_is_refused(api, outsider):
    response = api.post("/api/v1/pipelines/", {**VALID, "team": "marketing"}, format="json")

    assert response.status_code == 400
    assert "team" in response.json()["errors"]


def test_an_outsider_cannot_see_or_trigger_another_teams_pipeline(api, outsider, teammate):
    api.post("/api/v1/pipelines/", VALID, format="json")

    assert as_user(outsider).get("/api/v1/pipelines/daily_sales_load/").status_code == 404
    assert as_user(outsider).post("/api/v1/pipelines/daily_sales_load/runs/",
                                  {"logical_date": "2026-01-01"}, format="json").status_code == 404
    assert as_user(outsider).get("/api/v1/pipelines/").json() == []
    assert as_user(teammate).get("/api/v1/pipelines/daily_sales_load/").status_code == 200


def test_an_anonymous_client_is_refused(db):
    assert APIClient().get("/api/v1/pipelines/").status_code in (401, 403)


def test_triggering_a_date_creates_one_run_and_again_a_new_attempt(api, django_capture_on_commit_callbacks):
    api.post("/api/v1/pipelines/", VALID, format="json")
    Run.objects.all().delete()

    with django_capture_on_commit_callbacks(execute=False):
        first = api.post("/api/v1/pipelines/daily_sales_load/runs/", {"logical_date": "2026-01-01"}, format="json")
        Run.objects.update(state=Run.State.SUCCESS)
        second = api.post("/api/v1/pipelines/daily_sales_load/runs/", {"logical_date": "2026-01-01"}, format="json")

    assert first.status_code == 201, first.json()
    assert first.json()["logical_date"] == "2026-01-01T02:30:00Z"
    assert second.json()["attempt"] == 2
    assert Run.objects.count() == 1


def test_a_backfill_reports_its_progress(api, django_capture_on_commit_callbacks):
    api.post("/api/v1/pipelines/", VALID, format="json")

    with django_capture_on_commit_callbacks(execute=False):
        response = api.post("/api/v1/pipelines/daily_sales_load/backfills/",
                            {"start": "2025-12-01", "end": "2025-12-07", "max_active_runs": 2}, format="json")

    assert response.status_code == 201, response.json()
    progress = response.json()["progress"]
    assert progress["running"] == 2
    assert progress["remaining"] == 5


def test_a_backfill_with_the_end_before_the_start_names_the_field(api):
    api.post("/api/v1/pipelines/", VALID, format="json")

    response = api.post("/api/v1/pipelines/daily_sales_load/backfills/",
                        {"start": "2025-12-07", "end": "2025-12-01"}, format="json")

    assert response.status_code == 400
    assert "end" in response.json()["errors"]


def test_pause_and_unpause(api):
    api.post("/api/v1/pipelines/", VALID, format="json")

    assert api.post("/api/v1/pipelines/daily_sales_load/pause/").json()["paused"] is True
    assert api.post("/api/v1/pipelines/daily_sales_load/unpause/").json()["paused"] is False
    assert list(AuditEvent.objects.filter(action__startswith="deployment.").values_list("action", flat=True)
                .order_by("created_at")) == ["deployment.paused", "deployment.unpaused"]


def test_a_connection_secret_never_appears_in_a_response(api, author):
    factories.make_connection("pg_source", "postgres", {"host": "127.0.0.1", "dbname": "x", "user": "u"},
                              secret="s3cr3t-passw0rd")
    api.post("/api/v1/pipelines/", VALID, format="json")
    run_id = Run.objects.values_list("id", flat=True).first()

    bodies = [api.get(url).content for url in ("/api/v1/pipelines/", "/api/v1/pipelines/daily_sales_load/",
                                                f"/api/v1/runs/{run_id}/")]
    assert all(b"s3cr3t-passw0rd" not in body for body in bodies)
    assert b"s3cr3t-passw0rd" not in str(list(AuditEvent.objects.values_list("details", flat=True))).encode()


def test_rerun_from_a_task_keeps_the_upstream_results(api, author, landing, now):
    factories.write_sales_csv(landing, "2026-01-09", rows=4)
    factories.make_ingestion_pipeline(owner=author, now=now)
    run_until_idle(now)
    run = Run.objects.get()

    response = api.post(f"/api/v1/runs/{run.pk}/rerun/", {"from_task": "publish"}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["attempt"] == 2
    assert dict(run.task_runs.values_list("task_id", "state")) == {
        "extract": "success", "validate": "success", "load": "success", "publish": "queued",
    }


def test_a_sensor_can_be_asked_for_and_puts_wait_for_source_first(api, now, django_capture_on_commit_callbacks):
    response = api.post("/api/v1/pipelines/", {**VALID, "wait_for_source": {"timeout_seconds": 7200}},
                        format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["deployments"][0]["inputs"]["wait_for_source"] == {"poke_seconds": 60,
                                                                              "timeout_seconds": 7200}
    with django_capture_on_commit_callbacks(execute=False):
        run = api.post("/api/v1/pipelines/daily_sales_load/runs/", {"logical_date": "2026-01-01"}, format="json")
    assert [t["task_id"] for t in api.get(run.json()["url"]).json()["task_runs"]][0] == "wait_for_source"


def test_a_sensor_with_a_timeout_out_of_range_is_refused_naming_the_field(api):
    response = api.post("/api/v1/pipelines/", {**VALID, "wait_for_source": {"timeout_seconds": 5}}, format="json")

    assert response.status_code == 400
    assert "timeout_seconds" in response.json()["errors"]["wait_for_source"][0]
    assert Pipeline.objects.count() == 0
