"""Claims, fencing, retries with backoff, reaping: a try is executed once and recorded once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipelines.models import Run, TaskRun
from scheduler.execution import task_run_claim, task_run_fail, task_run_succeed
from scheduler.loop import reap_lost_task_runs, resend_stuck_task_runs, tick
from tests import factories
from tests.runner import run_until_idle


@pytest.fixture
def pipeline(author, landing, warehouse, now):
    factories.write_sales_csv(landing, "2026-01-09", rows=20)
    return factories.make_ingestion_pipeline(owner=author, now=now)


def first_task(now) -> TaskRun:
    tick(now)
    return TaskRun.objects.get(task_id="extract")


def test_a_duplicate_delivery_claims_nothing(pipeline, now):
    task = first_task(now)

    assert task_run_claim(task.pk, task.try_number, "worker-a", now) is True
    assert task_run_claim(task.pk, task.try_number, "worker-b", now) is False
    assert TaskRun.objects.get(pk=task.pk).worker == "worker-a"


def test_a_stale_workers_late_result_is_refused(pipeline, now, settings):
    settings.RAILYARD_LEASE_SECONDS = 60
    task = first_task(now)
    task_run_claim(task.pk, 1, "slow-worker", now)

    reap_lost_task_runs(now + timedelta(minutes=5))  # the lease ran out: try 1 is reaped
    tick(now + timedelta(hours=1))  # its retry is queued as try 2
    queued = task_run_succeed(task.pk, 1, now + timedelta(hours=1), rows_written=999)

    task.refresh_from_db()
    assert queued == []
    assert (task.state, task.try_number, task.rows_written) == (TaskRun.State.QUEUED, 2, None)


def test_a_full_run_succeeds_and_records_row_counts(pipeline, now, warehouse):
    run_until_idle(now)

    run = Run.objects.get()
    assert run.state == Run.State.SUCCESS
    assert run.rows_written == 20
    assert [t.state for t in run.task_runs.all()] == ["success"] * 4
    assert len(factories.warehouse_rows(warehouse, "daily_sales_load")) == 20


def test_a_transient_failure_is_retried_after_backoff_and_then_succeeds(author, landing, warehouse, now):
    factories.write_sales_csv(landing, "2026-01-09", rows=5)
    template = factories.make_template(inject_transient_failures=1, retry_delay_seconds=10)
    factories.make_ingestion_pipeline(owner=author, now=now, template=template)

    run_until_idle(now)
    extract = TaskRun.objects.get(task_id="extract")
    assert extract.state == TaskRun.State.UP_FOR_RETRY
    assert now + timedelta(seconds=9) <= extract.next_try_at <= now + timedelta(seconds=10)
    assert "Injected failure" in extract.error

    run_until_idle(now + timedelta(seconds=10))
    extract.refresh_from_db()
    assert (extract.state, extract.try_number) == (TaskRun.State.SUCCESS, 2)
    assert Run.objects.get().state == Run.State.SUCCESS


def test_retries_back_off_exponentially(author, landing, warehouse, now):
    template = factories.make_template(inject_transient_failures=5, retry_delay_seconds=60, retries=3)
    factories.make_ingestion_pipeline(owner=author, now=now, template=template)
    waits = []
    clock = now
    for _ in range(3):
        run_until_idle(clock)
        extract = TaskRun.objects.get(task_id="extract")
        waits.append((extract.next_try_at - clock).total_seconds())
        clock = extract.next_try_at

    assert 54 <= waits[0] <= 60 and 108 <= waits[1] <= 120 and 216 <= waits[2] <= 240


def test_a_run_that_exhausts_its_retries_ends_failed_with_the_reason(author, landing, warehouse, now):
    template = factories.make_template(inject_transient_failures=9, retry_delay_seconds=1, retries=2)
    factories.make_ingestion_pipeline(owner=author, now=now, template=template)
    for second in range(0, 10, 2):
        run_until_idle(now + timedelta(seconds=second))

    run = Run.objects.get()
    assert run.state == Run.State.FAILED
    assert "Injected failure 3 of 9" in run.error
    assert list(run.task_runs.values_list("state", flat=True)) == [
        "failed", "upstream_failed", "upstream_failed", "upstream_failed"
    ]


def test_a_permanent_error_fails_fast_without_retry(author, landing, warehouse, now):
    factories.make_ingestion_pipeline(owner=author, now=now)  # no file for 2026-01-09 exists

    run_until_idle(now)

    extract = TaskRun.objects.get(task_id="extract")
    assert (extract.state, extract.try_number) == (TaskRun.State.FAILED, 1)
    assert "2026-01-09/sales.csv" in extract.error
    assert Run.objects.get().state == Run.State.FAILED


def test_a_lost_worker_is_reaped_and_its_try_retried(pipeline, now, settings):
    settings.RAILYARD_LEASE_SECONDS = 60
    task = first_task(now)
    task_run_claim(task.pk, task.try_number, "killed-worker", now)

    assert reap_lost_task_runs(now + timedelta(seconds=30)) == 0
    assert reap_lost_task_runs(now + timedelta(seconds=61)) == 1

    task.refresh_from_db()
    assert task.state == TaskRun.State.UP_FOR_RETRY
    assert "stopped heart-beating" in task.error


def test_a_task_run_stuck_in_queued_is_sent_again_once(pipeline, now, settings, django_capture_on_commit_callbacks):
    settings.RAILYARD_REQUEUE_SECONDS = 300
    first_task(now)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert resend_stuck_task_runs(now + timedelta(seconds=200)) == 0
        assert resend_stuck_task_runs(now + timedelta(seconds=301)) == 1
        assert resend_stuck_task_runs(now + timedelta(seconds=302)) == 0

    assert len(callbacks) == 1


def test_failing_a_try_twice_records_it_once(pipeline, now):
    task = first_task(now)
    task_run_claim(task.pk, 1, "w", now)

    assert task_run_fail(task.pk, 1, now, error="boom", retryable=True) is True
    assert task_run_fail(task.pk, 1, now, error="boom", retryable=True) is False


def test_a_retried_task_keeps_the_log_of_its_failed_try(author, landing, warehouse, now):
    factories.write_sales_csv(landing, "2026-01-09", rows=5)
    factories.make_ingestion_pipeline(
        owner=author, now=now, template=factories.make_template(inject_transient_failures=1, retry_delay_seconds=10)
    )
    run_until_idle(now)
    run_until_idle(now + timedelta(seconds=10))

    log = TaskRun.objects.get(task_id="extract").log
    assert "try 1 of task 'extract'" in log and "Injected failure 1 of 1" in log
    assert "try 2 of task 'extract'" in log and "success" in log


def test_a_run_that_ends_failed_calls_the_alert_hook_once(author, landing, warehouse, now, monkeypatch,
                                                          django_capture_on_commit_callbacks):
    from scheduler import execution

    failed_runs = []
    monkeypatch.setattr(execution, "ALERT_HOOKS", [failed_runs.append])
    factories.make_ingestion_pipeline(owner=author, now=now)  # no file: extract fails for good

    with django_capture_on_commit_callbacks(execute=True):
        run_until_idle(now)
        run_until_idle(now + timedelta(hours=1))

    assert [run.pk for run in failed_runs] == [Run.objects.get().pk]


def test_each_extract_try_stages_into_its_own_table_so_a_stale_try_cannot_touch_the_live_one(pipeline, now, warehouse, settings):
    """A worker frozen past its lease wakes up and re-runs extract's step for its old try:
    its staging table is its own, so the live load is untouched."""
    from pipelines.steps.base import StepContext

    settings.RAILYARD_LEASE_SECONDS = 60
    task = first_task(now)
    task_run_claim(task.pk, 1, "frozen-worker", now)
    reap_lost_task_runs(now + timedelta(minutes=5))  # try 1 is reaped, try 2 runs
    run_until_idle(now + timedelta(hours=1))

    run = Run.objects.get()
    assert run.state == Run.State.SUCCESS
    ctx = StepContext(pipeline="daily_sales_load", environment="dev", run_id=run.pk, task_id="extract",
                      try_number=1, logical_date=run.logical_date, data_interval_start=run.data_interval_start,
                      data_interval_end=run.data_interval_end, ds="2026-01-09", inputs={}, guardrails={},
                      connection=lambda name: None, staging_try=1)
    extract = TaskRun.objects.get(task_id="extract")
    assert extract.try_number == 2
    assert ctx.staging_table != ctx.staging_table_of_try(extract.try_number)
    assert len(factories.warehouse_rows(warehouse, "daily_sales_load")) == 20
