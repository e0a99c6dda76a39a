"""Run control: depends_on_past, the time guard, clearing a task and its downstream, cancel."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError

from pipelines.models import Run, TaskRun
from pipelines.services import backfill_create, run_cancel, run_rerun
from scheduler.execution import task_run_claim, task_run_succeed
from scheduler.loop import start_queued_runs, tick
from tests import factories
from tests.runner import run_until_idle


def test_depends_on_past_starts_a_run_only_after_the_previous_date_succeeded(author, landing, warehouse, now):
    pipeline = factories.make_ingestion_pipeline(
        owner=author, now=now, template=factories.make_template(depends_on_past=True)
    )
    deployment = pipeline.deployments.get()
    deployment.paused = True
    deployment.save()
    backfill_create(actor=author, deployment=deployment, start=date(2026, 1, 1), end=date(2026, 1, 3), now=now,
                    max_active_runs=3)

    start_queued_runs(now)
    assert list(Run.objects.filter(state=Run.State.RUNNING).values_list("logical_date__day", flat=True)) == [1]

    factories.write_sales_csv(landing, "2026-01-01", rows=3)  # 01 succeeds; 02's file is missing
    run_until_idle(now)
    states = dict(Run.objects.values_list("logical_date__day", "state"))
    assert states == {1: Run.State.SUCCESS, 2: Run.State.FAILED, 3: Run.State.QUEUED}


def test_the_time_guard_holds_a_scheduled_run_until_its_wall_time(author, landing, warehouse):
    created = datetime(2026, 1, 9, 12, 0, tzinfo=UTC)
    factories.make_ingestion_pipeline(
        owner=author, now=created, schedule="0 0 * * *", timezone="Europe/London",
        template=factories.make_template(not_before="01:00"),
    )
    tick(datetime(2026, 1, 10, 0, 0, 5, tzinfo=UTC))  # midnight: the interval of the 9th ends

    run = Run.objects.get(logical_date=datetime(2026, 1, 9, tzinfo=UTC))
    assert run.not_before == datetime(2026, 1, 10, 1, 0, tzinfo=UTC)
    assert run.state == Run.State.QUEUED
    tick(datetime(2026, 1, 10, 0, 59, tzinfo=UTC))
    assert Run.objects.get(pk=run.pk).state == Run.State.QUEUED
    tick(datetime(2026, 1, 10, 1, 0, tzinfo=UTC))
    assert Run.objects.get(pk=run.pk).state == Run.State.RUNNING


def test_a_time_guard_in_a_dst_gap_holds_until_the_first_valid_instant_after_it(author, landing, warehouse):
    # Europe/London springs forward at 01:00 GMT on 2026-03-29: 01:30 never happens that day.
    factories.make_ingestion_pipeline(
        owner=author, now=datetime(2026, 3, 28, 12, tzinfo=UTC), schedule="0 0 * * *", timezone="Europe/London",
        template=factories.make_template(not_before="01:30"),
    )
    tick(datetime(2026, 3, 29, 0, 0, 5, tzinfo=UTC))

    assert Run.objects.get().not_before == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


@pytest.fixture
def finished_run(author, landing, warehouse, now):
    factories.write_sales_csv(landing, "2026-01-09", rows=8)
    factories.make_ingestion_pipeline(owner=author, now=now)
    run_until_idle(now)
    return Run.objects.get()


def test_clearing_a_task_reruns_it_and_its_downstream_and_keeps_upstream_results(finished_run, author, now):
    before = dict(finished_run.task_runs.values_list("task_id", "try_number"))

    run_rerun(actor=author, run=finished_run, now=now, from_task="load")
    run_until_idle(now)

    after = dict(finished_run.task_runs.values_list("task_id", "try_number"))
    assert after["extract"] == before["extract"] and after["validate"] == before["validate"]
    assert after["load"] == before["load"] + 1 and after["publish"] == before["publish"] + 1
    finished_run.refresh_from_db()
    assert (finished_run.state, finished_run.attempt) == (Run.State.SUCCESS, 2)
    assert Run.objects.count() == 1


def test_clearing_an_unknown_task_names_the_tasks_there_are(finished_run, author, now):
    with pytest.raises(ValidationError) as error:
        run_rerun(actor=author, run=finished_run, now=now, from_task="train")

    assert "extract, validate, load, publish" in str(error.value)
    assert Run.objects.get().attempt == 1


def test_a_cancelled_runs_late_result_is_refused(author, landing, warehouse, now):
    factories.make_ingestion_pipeline(owner=author, now=now)
    tick(now)
    extract = TaskRun.objects.get(task_id="extract")
    task_run_claim(extract.pk, extract.try_number, "w", now)

    run_cancel(actor=author, run=Run.objects.get(), now=now)
    assert task_run_succeed(extract.pk, extract.try_number, now + timedelta(seconds=5)) == []

    assert Run.objects.get().state == Run.State.CANCELLED
    assert set(TaskRun.objects.values_list("state", flat=True)) == {TaskRun.State.CANCELLED}


def test_when_a_run_ends_the_next_queued_run_starts_without_waiting_for_a_tick(author, landing, warehouse, now):
    from scheduler import worker

    for day in ("2026-01-01", "2026-01-02"):
        factories.write_sales_csv(landing, day, rows=3)
    deployment = factories.make_ingestion_pipeline(owner=author, now=now).deployments.get()
    deployment.paused = True
    deployment.save()
    backfill_create(actor=author, deployment=deployment, start=date(2026, 1, 1), end=date(2026, 1, 2), now=now)
    start_queued_runs(now)

    for _ in range(4):  # the first run's four tasks, executed as a worker would, with no tick
        task = TaskRun.objects.get(state=TaskRun.State.QUEUED)
        worker.execute_task_run(task.pk, task.try_number, clock=lambda: now)

    states = dict(Run.objects.values_list("logical_date__day", "state"))
    assert states == {1: Run.State.SUCCESS, 2: Run.State.RUNNING}
