"""The scheduler's tick: due runs, catchup, limits, and nothing ever doubled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipelines.models import Deployment, Run, TaskRun
from pipelines.services import backfill_create, deployment_set_paused
from scheduler.loop import create_due_runs, start_queued_runs, tick
from tests import factories


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def pipeline(author, landing, warehouse, now):
    return factories.make_ingestion_pipeline(owner=author, now=now)


def test_new_pipeline_runs_the_latest_finished_interval_at_once(pipeline, now):
    tick(now)

    run = Run.objects.get()
    # now = 2026-01-10 12:00; the latest 02:30 fire closed the interval that starts on the 9th.
    assert run.logical_date == utc(2026, 1, 9, 2, 30)
    assert run.data_interval_end == utc(2026, 1, 10, 2, 30)
    assert run.state == Run.State.RUNNING
    assert list(run.task_runs.values_list("task_id", "state")) == [
        ("extract", "queued"), ("validate", "pending"), ("load", "pending"), ("publish", "pending"),
    ]


def test_ticking_again_creates_nothing_new(pipeline, now):
    tick(now)
    tick(now)
    tick(now + timedelta(seconds=30))

    assert Run.objects.count() == 1
    assert TaskRun.objects.count() == 4


def test_next_due_time_moves_to_the_next_fire(pipeline, now):
    tick(now)

    assert Deployment.objects.get().next_due_at == utc(2026, 1, 11, 2, 30)


def test_catchup_off_creates_only_the_latest_interval_after_an_outage(pipeline, now):
    tick(now)
    create_due_runs(now + timedelta(days=5))

    assert [r.logical_date for r in Run.objects.order_by("logical_date")] == [
        utc(2026, 1, 9, 2, 30), utc(2026, 1, 14, 2, 30),
    ]


def test_catchup_on_creates_every_missed_interval_once(author, landing, warehouse, now):
    factories.make_ingestion_pipeline(owner=author, now=now, template=factories.make_template(catchup=True))
    tick(now)
    create_due_runs(now + timedelta(days=5))
    create_due_runs(now + timedelta(days=5))

    dates = [r.logical_date.date().isoformat() for r in Run.objects.order_by("logical_date")]
    assert dates == ["2026-01-09", "2026-01-10", "2026-01-11", "2026-01-12", "2026-01-13", "2026-01-14"]


def test_catchup_never_runs_more_than_max_active_runs(author, landing, warehouse, now):
    factories.make_ingestion_pipeline(owner=author, now=now, template=factories.make_template(catchup=True))
    tick(now + timedelta(days=5))
    tick(now + timedelta(days=5))

    assert Run.objects.filter(state=Run.State.RUNNING).count() == 1
    assert Run.objects.filter(state=Run.State.QUEUED).count() == 5


def test_paused_deployment_creates_no_runs(pipeline, author, now):
    deployment_set_paused(actor=author, deployment=pipeline.deployments.get(), paused=True, now=now)
    tick(now + timedelta(days=3))

    assert Run.objects.count() == 0


def test_unpausing_with_catchup_off_does_not_flood(pipeline, author, now):
    deployment = pipeline.deployments.get()
    deployment_set_paused(actor=author, deployment=deployment, paused=True, now=now)
    tick(now + timedelta(days=10))
    deployment_set_paused(actor=author, deployment=deployment, paused=False, now=now + timedelta(days=10))
    tick(now + timedelta(days=10))

    assert Run.objects.count() == 1


def test_backfill_never_runs_more_than_its_own_max_active_runs(pipeline, author, now):
    tick(now)
    backfill = backfill_create(
        actor=author, deployment=pipeline.deployments.get(), start=datetime(2025, 12, 1).date(),
        end=datetime(2025, 12, 31).date(), now=now, max_active_runs=4,
    )
    start_queued_runs(now)
    start_queued_runs(now)

    assert backfill.runs.count() == 31
    assert backfill.runs.filter(state=Run.State.RUNNING).count() == 4
    # The scheduled run is limited separately and keeps running.
    assert Run.objects.filter(backfill__isnull=True, state=Run.State.RUNNING).count() == 1


def test_backfill_skips_completed_partitions(pipeline, author, now):
    deployment = pipeline.deployments.get()
    tick(now)
    Run.objects.update(state=Run.State.SUCCESS)

    backfill = backfill_create(
        actor=author, deployment=deployment, start=datetime(2026, 1, 7).date(), end=datetime(2026, 1, 9).date(),
        now=now,
    )

    assert sorted(r.logical_date.day for r in backfill.runs.all()) == [7, 8]
    assert Run.objects.filter(deployment=deployment).count() == 3


def test_backfill_with_reprocess_all_reruns_completed_partitions_as_new_attempts(pipeline, author, now):
    deployment = pipeline.deployments.get()
    tick(now)
    Run.objects.update(state=Run.State.SUCCESS)

    backfill_create(actor=author, deployment=deployment, start=datetime(2026, 1, 9).date(),
                    end=datetime(2026, 1, 9).date(), now=now, reprocess="all")

    run = Run.objects.get()
    assert (run.state, run.attempt, run.trigger) == (Run.State.QUEUED, 2, Run.Trigger.BACKFILL)


def test_backfill_refuses_a_range_with_no_finished_interval(pipeline, author, now):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as error:
        backfill_create(actor=author, deployment=pipeline.deployments.get(), start=datetime(2026, 2, 1).date(),
                        end=datetime(2026, 2, 5).date(), now=now)

    assert "start" in error.value.message_dict
    assert Run.objects.count() == 0


def test_catchup_of_the_last_n_intervals_after_an_outage(author, landing, warehouse, now):
    factories.make_ingestion_pipeline(owner=author, now=now, template=factories.make_template(catchup=2))
    tick(now)
    create_due_runs(now + timedelta(days=5))

    dates = [r.logical_date.date().isoformat() for r in Run.objects.order_by("logical_date")]
    assert dates == ["2026-01-09", "2026-01-13", "2026-01-14"]


def test_a_manual_run_created_during_batch_creation_is_kept_and_not_doubled(author, landing, warehouse, now,
                                                                            monkeypatch):
    from pipelines.services import run_trigger
    from scheduler import loop

    pipelines = [factories.make_ingestion_pipeline(owner=author, now=now, slug=f"batch_{i}") for i in range(3)]
    manual_for = pipelines[1].deployments.get()
    real_build_run = loop.build_run

    def build_run_racing_a_trigger(deployment, schedule, logical_date, *args, **kwargs):
        # A manual trigger of the same logical date commits between the read of existing runs
        # and the batch's insert: the insert fails and the batch goes one deployment at a time.
        if deployment.pk == manual_for.pk and not Run.objects.filter(deployment=deployment).exists():
            run_trigger(actor=author, deployment=deployment, logical_date=logical_date, now=now)
        return real_build_run(deployment, schedule, logical_date, *args, **kwargs)

    monkeypatch.setattr(loop, "build_run", build_run_racing_a_trigger)
    created = create_due_runs(now)

    assert created == 2
    assert Run.objects.count() == 3 and TaskRun.objects.count() == 12
    assert Run.objects.get(deployment=manual_for).trigger == Run.Trigger.MANUAL
    assert set(Deployment.objects.values_list("next_due_at", flat=True)) == {utc(2026, 1, 11, 2, 30)}
