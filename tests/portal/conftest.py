"""Three users (an author, a teammate on the same team, an outsider on another team), the
dev connections a pipeline needs, and a helper that creates a pipeline through the service."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model

from pipelines import services
from pipelines.models import Environment, Pipeline
from pipelines.selectors import ingestion_template
from portal.accounts.models import Membership, Team

PASSWORD = "correct-horse-battery"
NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def analytics(db) -> Team:
    return Team.objects.create(slug="analytics", name="Analytics")


@pytest.fixture
def marketing(db) -> Team:
    return Team.objects.create(slug="marketing", name="Marketing")


def _user(username: str, team: Team):
    user = get_user_model().objects.create_user(username=username, password=PASSWORD)
    Membership.objects.create(user=user, team=team)
    return user


@pytest.fixture
def author(analytics):
    return _user("alice", analytics)


@pytest.fixture
def teammate(analytics):
    return _user("bob", analytics)


@pytest.fixture
def outsider(marketing):
    return _user("charlie", marketing)


@pytest.fixture
def dev(db) -> Environment:
    return Environment.objects.get(slug="dev")


@pytest.fixture
def connections(dev, tmp_path, author):
    landing = services.connection_save(
        actor=author, environment=dev, name="landing", kind="files", config={"base_path": str(tmp_path)}
    )
    warehouse = services.connection_save(
        actor=author, environment=dev, name="warehouse", kind="sqlite",
        config={"path": str(tmp_path / "warehouse.sqlite3")},
    )
    return landing, warehouse


def form_data(**overrides) -> dict[str, str]:
    """A valid POST for the new pipeline form (team is filled in by the test)."""
    data = {
        "name": "daily_sales",
        "source_connection": "landing",
        "source": "landing/{{ ds }}/sales.csv",
        "schedule": "30 2 * * *",
        "timezone": "Europe/London",
        "primary_key": "order_id",
        "partition_column": "dt",
        "source_filter_column": "",
        "target_table": "",
        "runbook_url": "https://wiki.example.com/runbooks/sales",
        "tags": "sales, finance",
    }
    data.update(overrides)
    return data


@pytest.fixture
def make_pipeline(connections, analytics, author):
    def make(slug: str = "daily_sales", *, team: Team | None = None, owner=None, **inputs) -> Pipeline:
        return services.pipeline_create(
            actor=owner or author, team=team or analytics, slug=slug, template=ingestion_template(),
            inputs={
                "schedule": "30 2 * * *", "timezone": "Europe/London", "source_connection": "landing",
                "source": "landing/{{ ds }}/sales.csv", "primary_key": "order_id", "partition_column": "dt",
                **inputs,
            },
            now=NOW,
        )

    return make


@pytest.fixture
def pipeline(make_pipeline) -> Pipeline:
    return make_pipeline()


@pytest.fixture
def author_client(client, author):
    client.force_login(author)
    return client
