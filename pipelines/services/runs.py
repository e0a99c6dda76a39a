from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F

from pipelines.cron import Schedule, schedule_for
from pipelines.models import Backfill, Deployment, Run, TaskRun
from pipelines.services.audit import audit
from pipelines.steps.registry import task_graph


def deployment_schedule(deployment: Deployment) -> Schedule:
    inputs = deployment.version.inputs
    return schedule_for(inputs["schedule"], inputs.get("timezone", "UTC"))


def logical_date_for(deployment: Deployment, when: date | datetime) -> datetime:
    """The logical date of the interval that starts at or after `when` (a local date or
    local wall time in the pipeline's zone): picking 2026-01-01 for a daily 02:30 pipeline
    means the interval starting 2026-01-01 02:30."""
    schedule = deployment_schedule(deployment)
    wall = datetime.combine(when, time()) if not isinstance(when, datetime) else when.replace(tzinfo=None)
    instant = wall.replace(tzinfo=schedule.zone)
    return schedule.next_fire(instant - timedelta(microseconds=1))


def sensor_settings(version) -> dict | None:
    """The wait_for_source sensor of a version: from its inputs, else its template's guardrails."""
    return version.inputs.get("wait_for_source") or version.guardrails.get("wait_for_source") or None


def time_guard(schedule: Schedule, interval_end: datetime, not_before: str | None) -> datetime | None:
    """"Not before HH:MM": the run starts no earlier than that wall time, in the pipeline's
    zone, on the day its interval ends (e.g. a midnight schedule that must wait for 01:00)."""
    if not not_before:
        return None
    hours, minutes = (int(part) for part in str(not_before).split(":"))
    day_start = datetime.combine(schedule.local(interval_end).date(), time()).replace(tzinfo=schedule.zone)
    # The guard's first fire that day: a wall time in a DST gap becomes the first valid
    # instant after it, as for cron.
    guard = Schedule(f"{minutes} {hours} * * *", schedule.timezone).next_fire(day_start - timedelta(microseconds=1))
    return guard if guard > interval_end else None


def run_create(
    *,
    deployment: Deployment,
    logical_date: datetime,
    now: datetime,
    trigger: str = Run.Trigger.SCHEDULE,
    backfill: Backfill | None = None,
    actor=None,
) -> tuple[Run, bool]:
    """Create the run for a logical date with its task runs, or return the one that exists.

    Invariant: never two runs for one (deployment, logical date). The unique constraint makes
    a concurrent double insert fail; we then return the winner's row."""
    existing = Run.objects.filter(deployment=deployment, logical_date=logical_date).first()
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            run = build_run(deployment, deployment_schedule(deployment), logical_date, now, trigger=trigger,
                            backfill=backfill, actor=actor)
            run.save(force_insert=True)
            TaskRun.objects.bulk_create(build_task_runs(deployment, [run]))
    except IntegrityError:
        return Run.objects.get(deployment=deployment, logical_date=logical_date), False
    return run, True


def build_run(
    deployment: Deployment,
    schedule: Schedule,
    logical_date: datetime,
    now: datetime,
    *,
    trigger: str = Run.Trigger.SCHEDULE,
    backfill: Backfill | None = None,
    actor=None,
    interval_end: datetime | None = None,
) -> Run:
    """The unsaved run of one logical date (scheduled runs get the time guard). `interval_end`
    (the schedule's next fire after the logical date) when the caller knows it already."""
    interval_end = interval_end or schedule.next_fire(logical_date)
    return Run(
        deployment=deployment, logical_date=logical_date, data_interval_start=logical_date,
        data_interval_end=interval_end, trigger=trigger, backfill=backfill, queued_at=now,
        not_before=time_guard(schedule, interval_end, deployment.version.guardrails.get("not_before"))
        if trigger == Run.Trigger.SCHEDULE else None,
        triggered_by=actor if getattr(actor, "pk", None) else None,
    )


def build_task_runs(deployment: Deployment, runs: list[Run]) -> list[TaskRun]:
    """The unsaved task runs of new runs of one deployment: its template's task graph (with
    the sensor when configured), pools, retries and timeout from the version's guardrails.
    The one definition for run_create and the scheduler's batch creation."""
    guardrails = deployment.version.guardrails
    task_pools = guardrails.get("task_pools", {})
    default_pool = guardrails.get("pool", "")
    max_tries = int(guardrails.get("retries", 0)) + 1
    timeout = int(guardrails.get("execution_timeout_seconds", 1200))
    graph = task_graph(deployment.pipeline.template.kind, sensor=sensor_settings(deployment.version))
    return [
        TaskRun(run=run, task_id=task_id, position=position, upstream=list(upstream),
                pool=task_pools.get(task_id, default_pool), max_tries=max_tries, timeout_seconds=timeout)
        for run in runs
        for position, (task_id, upstream) in enumerate(graph)
    ]


def run_trigger(*, actor, deployment: Deployment, logical_date: datetime, now: datetime) -> Run:
    """Run one logical date now: a new run, or a new attempt of the run that exists."""
    run, created = run_create(deployment=deployment, logical_date=logical_date, now=now,
                              trigger=Run.Trigger.MANUAL, actor=actor)
    if created:
        audit(actor=actor, action="run.triggered", obj=run, details={"logical_date": logical_date.isoformat()})
        return run
    if not run.is_finished:
        raise ValidationError({"logical_date": [f"The run for {logical_date:%Y-%m-%d %H:%M} UTC is {run.state} already."]})
    return run_rerun(actor=actor, run=run, now=now)


@transaction.atomic
def run_rerun(*, actor, run: Run, now: datetime, from_task: str | None = None) -> Run:
    """A new attempt of the same run: tasks go back to pending with a fresh retry budget; with
    `from_task`, only that task and everything downstream of it (upstream results are kept).

    try_number keeps growing across attempts: it is the fencing token that refuses a late
    result from a worker of an earlier attempt."""
    graph = dict(run.task_runs.values_list("task_id", "upstream"))
    if from_task is not None and from_task not in graph:
        raise ValidationError({"task": [f"This run has no task '{from_task}'; its tasks are {', '.join(graph)}."]})
    updated = Run.objects.filter(pk=run.pk, state__in=Run.FINISHED_STATES).update(
        state=Run.State.QUEUED, attempt=F("attempt") + 1, queued_at=now, started_at=None,
        finished_at=None, error="", rows_written=None,
    )
    if not updated:
        raise ValidationError({"run": [f"The run is {run.state}; wait for it to finish or cancel it first."]})
    retries = int(run.deployment.version.guardrails.get("retries", 0))
    task_runs = run.task_runs.all()
    if from_task is not None:
        task_runs = task_runs.filter(task_id__in=downstream_of(graph, from_task))
    task_runs.update(
        state=TaskRun.State.PENDING, max_tries=F("try_number") + retries + 1, next_try_at=None, queued_at=None,
        first_poke_at=None, started_at=None, heartbeat_at=None, finished_at=None, error="", worker="", log="",
    )
    run.refresh_from_db()
    audit(actor=actor, action="run.rerun", obj=run, details={"attempt": run.attempt, "from_task": from_task})
    return run


def downstream_of(graph: dict[str, list[str]], task_id: str) -> set[str]:
    """The task and every task that depends on it, directly or not."""
    found = {task_id}
    changed = True
    while changed:
        changed = False
        for task, upstream in graph.items():
            if task not in found and found & set(upstream):
                found.add(task)
                changed = True
    return found


@transaction.atomic
def run_cancel(*, actor, run: Run, now: datetime) -> Run:
    """Cancel a run: unstarted tasks never start; a running task's result is refused."""
    updated = Run.objects.filter(pk=run.pk, state__in=[Run.State.QUEUED, Run.State.RUNNING]).update(
        state=Run.State.CANCELLED, finished_at=now, error="Cancelled."
    )
    if updated:
        run.task_runs.exclude(state__in=TaskRun.FINISHED_STATES).update(
            state=TaskRun.State.CANCELLED, finished_at=now
        )
        audit(actor=actor, action="run.cancelled", obj=run)
    run.refresh_from_db()
    return run
