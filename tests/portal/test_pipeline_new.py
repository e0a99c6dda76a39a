from __future__ import annotations

import pytest
from django.urls import reverse

from pipelines.models import Deployment, Pipeline, PipelineVersion

from .conftest import form_data

pytestmark = pytest.mark.django_db

URL = reverse("pipeline_new")


def post(client, team, **overrides):
    return client.post(URL, form_data(team=str(team.pk), **overrides))


def test_it_requires_sign_in(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_the_form_offers_dev_connections_with_their_kind(author_client, connections):
    response = author_client.get(URL)
    assert response.status_code == 200
    assert "landing (Files (local folder or S3))" in response.content.decode()
    assert "warehouse (SQLite database)" in response.content.decode()


def test_the_form_offers_only_the_users_teams(author_client, connections, analytics, marketing):
    teams = list(author_client.get(URL).context["form"].fields["team"].queryset)
    assert teams == [analytics]


def test_a_superuser_may_choose_any_team(client, connections, analytics, marketing, django_user_model):
    admin = django_user_model.objects.create_superuser("root", password="x" * 12)
    client.force_login(admin)
    teams = set(client.get(URL).context["form"].fields["team"].queryset)
    assert teams == {analytics, marketing}


def test_a_valid_form_creates_the_pipeline_and_redirects_to_it(author_client, author, analytics, connections):
    response = post(author_client, analytics)
    pipeline = Pipeline.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("pipeline_detail", args=["daily_sales"])
    assert pipeline.team == analytics
    assert pipeline.owner == author
    assert pipeline.tags == ["sales", "finance"]
    assert pipeline.runbook_url == "https://wiki.example.com/runbooks/sales"
    inputs = PipelineVersion.objects.get(pipeline=pipeline).inputs
    assert inputs["schedule"] == "30 2 * * *"
    assert inputs["timezone"] == "Europe/London"
    assert inputs["primary_key"] == ["order_id"]
    assert inputs["target_table"] == "daily_sales"  # defaults to the name
    assert Deployment.objects.get(pipeline=pipeline).environment.slug == "dev"


def test_a_given_target_table_is_kept(author_client, analytics, connections):
    post(author_client, analytics, target_table="sales_by_day")
    assert PipelineVersion.objects.get().inputs["target_table"] == "sales_by_day"


def assert_refused(response, field: str, text: str) -> None:
    assert response.status_code == 400
    assert field in response.context["form"].errors, response.context["form"].errors
    assert text in " ".join(response.context["form"].errors[field])
    assert text in response.content.decode().replace("&#x27;", "'")
    assert Pipeline.objects.count() == 0
    assert Deployment.objects.count() == 0


def test_it_refuses_a_malformed_cron(author_client, analytics, connections):
    response = post(author_client, analytics, schedule="61 * * *")
    assert_refused(response, "schedule", "five fields")


def test_it_refuses_an_out_of_range_cron_field(author_client, analytics, connections):
    response = post(author_client, analytics, schedule="61 2 * * *")
    assert_refused(response, "schedule", "not a valid cron expression")


def test_it_refuses_an_unknown_time_zone(author_client, analytics, connections):
    response = post(author_client, analytics, timezone="Mars/Olympus_Mons")
    assert_refused(response, "timezone", "Unknown time zone 'Mars/Olympus_Mons'")


def test_it_refuses_a_partition_column_that_is_not_an_identifier(author_client, analytics, connections):
    response = post(author_client, analytics, partition_column="dt; drop table x")
    assert_refused(response, "partition_column", "'dt; drop table x' is not a valid column name")


def test_it_refuses_a_name_that_is_not_a_slug(author_client, analytics, connections):
    response = post(author_client, analytics, name="Daily Sales!")
    assert_refused(response, "name", "Use lowercase letters")


def test_it_refuses_an_unknown_source_connection(author_client, analytics, connections):
    response = post(author_client, analytics, source_connection="nowhere")
    assert response.status_code == 400
    assert "source_connection" in response.context["form"].errors
    assert Pipeline.objects.count() == 0


def test_it_refuses_a_team_the_user_is_not_in(author_client, marketing, connections):
    response = post(author_client, marketing)
    assert response.status_code == 400
    assert "team" in response.context["form"].errors
    assert Pipeline.objects.count() == 0


def test_it_refuses_a_name_that_is_taken(author_client, analytics, pipeline):
    response = post(author_client, analytics, name=pipeline.slug)
    assert response.status_code == 400
    assert "exists already" in " ".join(response.context["form"].errors["name"])
    assert Pipeline.objects.count() == 1


def test_it_reports_every_bad_field_at_once(author_client, analytics, connections):
    response = post(author_client, analytics, schedule="nope", timezone="Nowhere", runbook_url="not a url")
    errors = response.context["form"].errors
    assert {"schedule", "timezone", "runbook_url"} <= set(errors)


def test_cron_preview_shows_the_next_five_fire_times_in_the_zone(author_client):
    response = author_client.post(reverse("cron_preview"), {"schedule": "30 2 * * *", "timezone": "Europe/London"})
    assert response.status_code == 200
    assert "<html" not in response.content.decode()
    fires = response.context["fires"]
    assert len(fires) == 5
    assert response.content.decode().count("<li>") == 5
    assert "02:30 GMT" in response.content.decode()


def test_cron_preview_uses_the_zones_daylight_saving_time(author_client):
    response = author_client.post(reverse("cron_preview"), {"schedule": "0 9 * * *", "timezone": "America/New_York"})
    fires = response.context["fires"]
    assert all(fire.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York")).hour == 9 for fire in fires)


def test_cron_preview_shows_the_error_for_a_bad_cron(author_client):
    response = author_client.post(reverse("cron_preview"), {"schedule": "61 * * *", "timezone": "UTC"})
    assert response.status_code == 200
    assert "five fields" in response.content.decode()
    assert response.context["fires"] == []


def test_cron_preview_shows_the_error_for_a_bad_zone(author_client):
    response = author_client.post(reverse("cron_preview"), {"schedule": "@daily", "timezone": "Mars/Base"})
    assert "Unknown time zone" in response.content.decode().replace("&#x27;", "'")


def test_the_form_can_add_a_wait_for_source_sensor(author_client, connections, analytics):
    response = author_client.post(URL, form_data(team=str(analytics.pk), wait_for_source_minutes="90"))

    assert response.status_code == 302
    version = Pipeline.objects.get().versions.get()
    assert version.inputs["wait_for_source"] == {"poke_seconds": 60, "timeout_seconds": 5400}
