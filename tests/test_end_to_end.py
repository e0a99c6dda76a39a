"""The whole loop with real parts: a scheduler tick, the broker, a Celery worker process,
the ingestion steps and the warehouse."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from pipelines.models import Run, TaskRun
from pipelines.services import backfill_create
from scheduler.loop import start_runs_for, tick
from tests import factories
from tests.worker_process import celery_worker, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_scheduled_run_is_executed_by_a_real_worker_and_loads_the_partition(
    author, landing, warehouse, tmp_path
):
    now = timezone.now()
    ds = (now - timedelta(days=1)).date().isoformat()
    rows = factories.write_sales_csv(landing, ds, rows=50)
    factories.make_ingestion_pipeline(owner=author, now=now, schedule="0 0 * * *")

    with celery_worker(log_path=tmp_path / "worker.log"):
        tick(now)
        run = wait_until(
            lambda: Run.objects.filter(state__in=Run.FINISHED_STATES).first(), timeout=90, message="the run to finish"
        )

    assert run.state == Run.State.SUCCESS, (run.error, (tmp_path / "worker.log").read_text()[-3000:])
    loaded = factories.warehouse_rows(warehouse, "daily_sales_load", "WHERE dt = ?", (ds,))
    assert sorted(r[0] for r in loaded) == sorted(r["order_id"] for r in rows)
    assert run.rows_written == 50


def backfill_finished(backfill) -> bool:
    tick()  # the scheduler starts the next runs as slots free up
    return backfill.runs.count() == 7 and not backfill.runs.exclude(state__in=Run.FINISHED_STATES).exists()


def test_a_seven_day_backfill_loads_exactly_each_days_file_however_often_it_is_rerun(
    author, landing, warehouse, tmp_path
):
    now = timezone.now()
    days = [(now - timedelta(days=d)).date() for d in range(1, 8)]
    expected = {day.isoformat(): factories.write_sales_csv(landing, day.isoformat(), rows=10 + i)
                for i, day in enumerate(days)}
    pipeline = factories.make_ingestion_pipeline(owner=author, now=now, schedule="0 0 * * *")
    deployment = pipeline.deployments.get()
    deployment.paused = True  # only the backfill runs
    deployment.save()

    with celery_worker(log_path=tmp_path / "worker.log"):
        for reprocess in ("missing", "all"):
            backfill = backfill_create(actor=author, deployment=deployment, start=days[-1], end=days[0], now=now,
                                       reprocess=reprocess, max_active_runs=3)
            start_runs_for(deployment.pk, backfill.pk, now)
            wait_until(lambda b=backfill: backfill_finished(b), timeout=120, message="the backfill")

    assert set(Run.objects.values_list("state", flat=True)) == {Run.State.SUCCESS}
    assert set(Run.objects.values_list("attempt", flat=True)) == {2}
    assert TaskRun.objects.filter(state=TaskRun.State.SUCCESS).count() == 28
    for ds, rows in expected.items():
        loaded = factories.warehouse_rows(warehouse, "daily_sales_load", "WHERE dt = ?", (ds,))
        assert [r[:5] for r in loaded] == factories.sales_tuples(rows), ds


def test_the_execution_timeout_stops_a_task_that_runs_too_long(author, landing, warehouse, tmp_path):
    now = timezone.now()
    factories.write_sales_csv(landing, (now - timedelta(days=1)).date().isoformat(), rows=5)
    template = factories.make_template(execution_timeout_seconds=2, inject_delay_seconds={"extract": 30}, retries=0)
    factories.make_ingestion_pipeline(owner=author, now=now, schedule="0 0 * * *", template=template)

    with celery_worker(log_path=tmp_path / "worker.log"):
        tick(now)
        run = wait_until(lambda: Run.objects.filter(state__in=Run.FINISHED_STATES).first(), timeout=60,
                         message="the run to time out")

    extract = run.task_runs.get(task_id="extract")
    assert run.state == Run.State.FAILED
    assert "execution timeout of 2 s reached" in extract.error, extract.error
    assert extract.duration_seconds < 15
