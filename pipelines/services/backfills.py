from __future__ import annotations

from datetime import date, datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction

from pipelines.models import Backfill, Deployment, Run
from pipelines.services.audit import audit
from pipelines.services.runs import deployment_schedule, logical_date_for, run_create, run_rerun

MAX_BACKFILL_RUNS = 10_000


def backfill_create(
    *,
    actor,
    deployment: Deployment,
    start: date,
    end: date,
    now: datetime,
    reprocess: str = Backfill.Reprocess.MISSING,
    max_active_runs: int = 1,
) -> Backfill:
    """(Re)run every logical date from `start` to `end` (local dates, both included).

    Runs that exist are re-attempted according to `reprocess`; the others are created.
    The scheduler starts at most `max_active_runs` of this backfill's runs at once."""
    errors: dict[str, list[str]] = {}
    if end < start:
        errors["end"] = ["The end date must be on or after the start date."]
    if reprocess not in Backfill.Reprocess.values:
        errors["reprocess"] = [f"Choose one of: {', '.join(Backfill.Reprocess.values)}."]
    if not 1 <= int(max_active_runs) <= 64:
        errors["max_active_runs"] = ["Choose between 1 and 64 concurrent runs."]
    if errors:
        raise ValidationError(errors)

    schedule = deployment_schedule(deployment)
    first = logical_date_for(deployment, start)
    last_exclusive = logical_date_for(deployment, end + timedelta(days=1))
    # Only intervals that have ended can be backfilled.
    last_ended = schedule.previous_fire(schedule.latest_fire(now))
    window_end = min(last_exclusive - timedelta(microseconds=1), last_ended)
    logical_dates = list(schedule.fires_between(first, window_end)) if window_end >= first else []
    if not logical_dates:
        raise ValidationError({"start": ["No finished interval falls in this range; pick dates in the past."]})
    if len(logical_dates) > MAX_BACKFILL_RUNS:
        raise ValidationError({"start": [f"The range holds {len(logical_dates)} runs; backfill at most {MAX_BACKFILL_RUNS} at once."]})

    with transaction.atomic():
        backfill = Backfill.objects.create(
            deployment=deployment, start=logical_dates[0], end=logical_dates[-1], reprocess=reprocess,
            max_active_runs=max_active_runs, created_by=actor if getattr(actor, "pk", None) else None,
        )
        existing = {run.logical_date: run for run in Run.objects.filter(deployment=deployment, logical_date__in=logical_dates)}
        redo_states = {
            Backfill.Reprocess.MISSING: (),
            Backfill.Reprocess.FAILED: (Run.State.FAILED, Run.State.CANCELLED),
            Backfill.Reprocess.ALL: (Run.State.SUCCESS, Run.State.FAILED, Run.State.CANCELLED),
        }[reprocess]
        for logical_date in logical_dates:
            run = existing.get(logical_date)
            if run is None:
                run_create(deployment=deployment, logical_date=logical_date, now=now,
                           trigger=Run.Trigger.BACKFILL, backfill=backfill, actor=actor)
            elif run.state in redo_states:
                Run.objects.filter(pk=run.pk).update(backfill=backfill, trigger=Run.Trigger.BACKFILL)
                run_rerun(actor=actor, run=run, now=now)
        audit(actor=actor, action="backfill.created", obj=backfill,
              details={"start": str(start), "end": str(end), "reprocess": reprocess, "runs": len(logical_dates)})
    return backfill


@transaction.atomic
def backfill_cancel(*, actor, backfill: Backfill, now: datetime) -> Backfill:
    """Cancel the backfill's runs that have not started; running ones finish."""
    if Backfill.objects.filter(pk=backfill.pk, state=Backfill.State.RUNNING).update(state=Backfill.State.CANCELLED):
        backfill.runs.filter(state=Run.State.QUEUED).update(state=Run.State.CANCELLED, finished_at=now, error="Backfill cancelled.")
        audit(actor=actor, action="backfill.cancelled", obj=backfill)
    backfill.refresh_from_db()
    return backfill


def backfill_progress(backfill: Backfill) -> dict[str, int]:
    counts = {state: 0 for state in Run.State.values}
    for row in backfill.runs.values("state").order_by():
        counts[row["state"]] += 1
    return {
        "done": counts[Run.State.SUCCESS],
        "running": counts[Run.State.RUNNING],
        "failed": counts[Run.State.FAILED],
        "remaining": counts[Run.State.QUEUED],
        "cancelled": counts[Run.State.CANCELLED],
    }
