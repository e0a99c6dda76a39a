"""wait_for_source: poke, free the worker, poke again; load when the data lands; fail with
what it waited for after its timeout."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipelines.models import Run, TaskRun
from tests import factories
from tests.runner import run_until_idle

SENSOR = {"poke_seconds": 60, "timeout_seconds": 600}


@pytest.fixture
def pipeline(author, landing, warehouse, now):
    return factories.make_ingestion_pipeline(
        owner=author, now=now, template=factories.make_template(wait_for_source=SENSOR, retries=1)
    )


def sensor() -> TaskRun:
    return TaskRun.objects.get(task_id="wait_for_source")


def test_the_sensor_runs_before_extract(pipeline, now):
    run_until_idle(now)

    assert list(TaskRun.objects.values_list("task_id", flat=True)) == [
        "wait_for_source", "extract", "validate", "load", "publish"
    ]


def test_a_missing_file_makes_the_sensor_wait_without_holding_a_worker(pipeline, now):
    run_until_idle(now)

    waiting = sensor()
    assert waiting.state == TaskRun.State.UP_FOR_RESCHEDULE
    assert waiting.next_try_at == now + timedelta(seconds=60)
    assert "2026-01-09/sales.csv" in waiting.error
    assert TaskRun.objects.get(task_id="extract").state == TaskRun.State.PENDING


def test_the_run_loads_once_the_file_arrives(pipeline, now, landing, warehouse):
    run_until_idle(now)
    run_until_idle(now + timedelta(seconds=60))
    factories.write_sales_csv(landing, "2026-01-09", rows=12)
    run_until_idle(now + timedelta(seconds=120))

    assert Run.objects.get().state == Run.State.SUCCESS
    assert len(factories.warehouse_rows(warehouse, "daily_sales_load")) == 12
    assert sensor().try_number == 3  # three pokes


def test_pokes_do_not_use_up_retries(pipeline, now, landing):
    for minute in range(5):
        run_until_idle(now + timedelta(minutes=minute))
    factories.write_sales_csv(landing, "2026-01-09", rows=3)
    run_until_idle(now + timedelta(minutes=5))

    assert sensor().state == TaskRun.State.SUCCESS
    assert Run.objects.get().state == Run.State.SUCCESS


def test_the_sensor_fails_after_its_timeout_saying_what_it_waited_for(pipeline, now):
    for minute in range(0, 11):
        run_until_idle(now + timedelta(minutes=minute))

    failed = sensor()
    assert failed.state == TaskRun.State.FAILED
    assert "Timed out after waiting 600 s for file 2026-01-09/sales.csv in connection 'landing'" in failed.error
    run = Run.objects.get()
    assert run.state == Run.State.FAILED
    assert "Timed out" in run.error


def test_a_sql_sensor_waits_for_rows_of_the_partition(author, warehouse, now, tmp_path):
    import sqlite3

    source = tmp_path / "source.sqlite3"
    with sqlite3.connect(source) as db:
        db.execute("CREATE TABLE events (event_id TEXT, event_time TEXT)")
    factories.make_connection("events_db", "sqlite", {"path": str(source)})
    factories.make_ingestion_pipeline(
        owner=author, now=now, source_connection="events_db", source="events", primary_key="event_id",
        source_filter_column="event_time", template=factories.make_template(wait_for_source=SENSOR),
    )
    run_until_idle(now)
    assert sensor().state == TaskRun.State.UP_FOR_RESCHEDULE
    assert "rows of partition 2026-01-09 in connection 'events_db'" in sensor().error

    with sqlite3.connect(source) as db:
        db.execute("INSERT INTO events VALUES ('e1', '2026-01-09 10:00:00')")
    run_until_idle(now + timedelta(seconds=60))

    assert Run.objects.get().state == Run.State.SUCCESS
