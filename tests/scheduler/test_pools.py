"""Pools cap how many task runs use a resource at once and route them to their own queue."""

from __future__ import annotations

from datetime import date

import pytest

from pipelines.models import Pool, Run, TaskRun
from pipelines.services import backfill_create
from scheduler.loop import tick
from tests import factories
from tests.runner import run_until_idle


@pytest.fixture
def pooled(author, landing, warehouse, now):
    """Loads use the 'warehouse_dev' pool (2 slots, its own queue); 6 days to backfill."""
    Pool.objects.create(name="warehouse_dev", slots=2, queue="warehouse")
    for day in range(3, 10):
        factories.write_sales_csv(landing, f"2026-01-{day:02d}", rows=5)
    pipeline = factories.make_ingestion_pipeline(
        owner=author, now=now, template=factories.make_template(pool="warehouse_dev")
    )
    deployment = pipeline.deployments.get()
    deployment.paused = True
    deployment.save()
    backfill_create(actor=author, deployment=deployment, start=date(2026, 1, 3), end=date(2026, 1, 8), now=now,
                    max_active_runs=6)
    return pipeline


def in_pool(*states) -> int:
    return TaskRun.objects.filter(pool="warehouse_dev", state__in=states).count()


def test_a_pool_never_has_more_task_runs_queued_or_running_than_slots(pooled, now):
    tick(now)

    assert Run.objects.filter(state=Run.State.RUNNING).count() == 6
    assert in_pool(TaskRun.State.QUEUED, TaskRun.State.RUNNING) == 2
    assert in_pool(TaskRun.State.SCHEDULED) == 4


def test_pool_task_runs_go_to_the_pools_queue(pooled, now, django_capture_on_commit_callbacks):
    tick(now)

    assert set(TaskRun.objects.filter(state=TaskRun.State.QUEUED).values_list("queue", flat=True)) == {"warehouse"}


def test_a_finished_task_hands_its_slot_on_and_every_run_completes(pooled, now):
    run_until_idle(now)

    assert set(Run.objects.values_list("state", flat=True)) == {Run.State.SUCCESS}
    assert TaskRun.objects.filter(state=TaskRun.State.SUCCESS).count() == 24


def test_a_pool_that_does_not_exist_fails_the_task_saying_so(author, landing, warehouse, now):
    factories.make_ingestion_pipeline(owner=author, now=now, template=factories.make_template(pool="nope"))

    tick(now)

    extract = TaskRun.objects.get(task_id="extract")
    assert extract.state == TaskRun.State.FAILED
    assert "Pool 'nope' does not exist" in extract.error
    assert Run.objects.get().state == Run.State.FAILED
