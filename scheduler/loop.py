"""The scheduler's tick: small steps over the database, each touching only rows that are due
(partial indexes in pipelines.models), so a tick costs O(due work), not O(pipelines).

Several schedulers may run at once. On PostgreSQL they split due deployments with
SELECT … FOR UPDATE SKIP LOCKED; everywhere, conditional updates and the unique
(deployment, logical date) constraint make double work impossible."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from pipelines.models import Backfill, Deployment, Run, TaskRun
from pipelines.services.runs import deployment_schedule, run_create
from scheduler import dispatch
from scheduler.execution import WAITING_STATES, admit_from_pool, queue_retry, run_start, task_run_fail

logger = logging.getLogger("railyard.scheduler")

# With catchup on, at most this many intervals of one deployment are created per tick.
MAX_CATCHUP_PER_TICK = 500


@dataclass
class TickReport:
    runs_created: int = 0
    runs_started: int = 0
    retries_queued: int = 0
    task_runs_reaped: int = 0
    task_runs_resent: int = 0
    pool_slots_handed_out: int = 0
    backfills_finished: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def did_work(self) -> bool:
        return any((self.runs_created, self.runs_started, self.retries_queued, self.task_runs_reaped,
                    self.task_runs_resent, self.pool_slots_handed_out, self.backfills_finished))


def tick(now: datetime | None = None) -> TickReport:
    now = now or timezone.now()
    report = TickReport()
    report.runs_created = create_due_runs(now)
    report.runs_started = start_queued_runs(now)
    report.retries_queued = queue_due_retries(now)
    report.task_runs_reaped = reap_lost_task_runs(now)
    report.task_runs_resent = resend_stuck_task_runs(now)
    report.pool_slots_handed_out = admit_waiting_task_runs(now)
    report.backfills_finished = finish_backfills()
    return report


def _relaxed_commit() -> None:
    """On PostgreSQL, don't wait for this transaction's WAL flush. Safe here: the runs it
    creates and the next_due_at it moves are lost or kept together, and a lost commit is
    simply done again by the next tick. Saves a disk flush per due deployment."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _locked(queryset):
    """Row locks where the database has them; SQLite serialises writers instead."""
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset


def create_due_runs(now: datetime) -> int:
    """For each unpaused deployment whose next fire has come, create the run(s) it is owed
    and move next_due_at past `now`. Catchup off: only the latest interval."""
    due_ids = list(
        Deployment.objects.filter(paused=False, next_due_at__lte=now).order_by("next_due_at").values_list("id", flat=True)
    )
    created = 0
    for deployment_id in due_ids:
        with transaction.atomic():
            _relaxed_commit()
            deployment = (
                _locked(Deployment.objects.filter(pk=deployment_id, paused=False, next_due_at__lte=now))
                .select_related("version", "pipeline__template")
                .first()
            )
            if deployment is None:  # another scheduler has it, or it was paused
                continue
            schedule = deployment_schedule(deployment)
            catchup = deployment.version.guardrails.get("catchup", False)
            if catchup in (True, "all"):
                fires = []
                for fire in schedule.fires_between(deployment.next_due_at, now):
                    fires.append(fire)
                    if len(fires) >= MAX_CATCHUP_PER_TICK:
                        break
            elif isinstance(catchup, int) and not isinstance(catchup, bool) and catchup > 0:
                # The last N fires, walked back from the latest: O(N) whatever the outage.
                fires = [schedule.latest_fire(now)]
                while len(fires) < catchup:
                    previous = schedule.previous_fire(fires[0])
                    if previous < deployment.next_due_at:
                        break
                    fires.insert(0, previous)
            else:
                fires = [schedule.latest_fire(now)]
            for fire in fires:
                logical_date, _ = schedule.data_interval(fire)
                _, was_created = run_create(deployment=deployment, logical_date=logical_date, now=now)
                created += was_created
            # Conditional on the value we read: a concurrent scheduler on SQLite cannot move it twice.
            Deployment.objects.filter(pk=deployment.pk, next_due_at=deployment.next_due_at).update(
                next_due_at=schedule.next_fire(fires[-1]), updated_at=now
            )
    return created


def start_queued_runs(now: datetime) -> int:
    """Start queued runs, oldest logical date first, within max_active_runs: the deployment's
    for scheduled and manual runs, each backfill's own for its runs."""
    # Which groups have a queued run is all that is needed (start_runs_for counts the running
    # ones itself under its lock). `state = 'queued'` alone lets PostgreSQL read the partial
    # index run_queued_idx, so an idle tick costs O(queued runs), not O(run history).
    groups = (
        Run.objects.filter(state=Run.State.QUEUED)
        .values("deployment_id", "backfill_id")
        .distinct()
        .order_by()
    )
    started = 0
    for group in groups:
        started += start_runs_for(group["deployment_id"], group["backfill_id"], now)
    return started


def start_runs_for(deployment_id: int, backfill_id: int | None, now: datetime) -> int:
    """Start as many queued runs of one deployment (or one of its backfills) as limits allow.
    Called by the tick and right after a manual trigger or a new backfill."""
    with transaction.atomic():
        if backfill_id is None:
            deployment = _locked(Deployment.objects.filter(pk=deployment_id)).select_related("version").first()
            if deployment is None or deployment.paused:
                return 0
            limit = deployment.max_active_runs
            runs = Run.objects.filter(deployment_id=deployment_id, backfill__isnull=True)
        else:
            backfill = _locked(Backfill.objects.filter(pk=backfill_id, state=Backfill.State.RUNNING)).first()
            if backfill is None:
                return 0
            limit = backfill.max_active_runs
            runs = Run.objects.filter(backfill_id=backfill_id)
        free = limit - runs.filter(state=Run.State.RUNNING).count()
        if free <= 0:
            return 0
        depends_on_past = deployment_guardrails(deployment_id).get("depends_on_past", False)
        startable = (
            runs.filter(state=Run.State.QUEUED)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .order_by("logical_date")
            .values_list("id", "logical_date")
        )
        started = 0
        for run_id, logical_date in startable[:free]:
            if depends_on_past and not _previous_run_succeeded(deployment_id, logical_date):
                break  # later logical dates wait too
            dispatch.send(run_start(run_id, now))
            started += 1
        return started


def deployment_guardrails(deployment_id: int) -> dict:
    return Deployment.objects.filter(pk=deployment_id).values_list("version__guardrails", flat=True).first() or {}


def _previous_run_succeeded(deployment_id: int, logical_date: datetime) -> bool:
    """depends_on_past: the run of the previous logical date succeeded (or there is none)."""
    previous = (
        Run.objects.filter(deployment_id=deployment_id, logical_date__lt=logical_date)
        .order_by("-logical_date")
        .values_list("state", flat=True)
        .first()
    )
    return previous in (None, Run.State.SUCCESS)


def queue_due_retries(now: datetime) -> int:
    count = 0
    due = []
    for state in WAITING_STATES:  # one query per partial index
        due += TaskRun.objects.filter(state=state, next_try_at__lte=now).values_list("id", flat=True)[:1000]
    for task_run_id in due:
        with transaction.atomic():
            queued = queue_retry(task_run_id, now)
            dispatch.send(queued)
            count += len(queued)
    return count


def reap_lost_task_runs(now: datetime) -> int:
    """A running try whose worker stopped heart-beating is failed as transient (and so
    retried while tries remain); its worker, if it ever wakes, is refused by the fence."""
    cutoff = now - timedelta(seconds=settings.RAILYARD_LEASE_SECONDS)
    lost = TaskRun.objects.filter(state=TaskRun.State.RUNNING, heartbeat_at__lt=cutoff).values_list(
        "id", "try_number", "max_tries", "worker"
    )
    count = 0
    for task_run_id, try_number, max_tries, worker in list(lost[:1000]):
        # The try number tells whether a retry follows: a task that kills its worker every
        # time ends failed with "try 3 of 3 was reaped", not a reason that reads as transient.
        recorded = task_run_fail(
            task_run_id, try_number, now, retryable=True,
            error=f"Worker {worker or '?'} stopped heart-beating (lease {settings.RAILYARD_LEASE_SECONDS:.0f} s); "
            f"try {try_number} of {max_tries} was reaped.",
        )
        count += recorded
    return count


def resend_stuck_task_runs(now: datetime) -> int:
    """Send again a task run that sat in `queued` too long (a lost broker message). The same
    try number goes out, so if the first message turns up too only one claim wins."""
    cutoff = now - timedelta(seconds=settings.RAILYARD_REQUEUE_SECONDS)
    stuck = TaskRun.objects.filter(state=TaskRun.State.QUEUED, queued_at__lt=cutoff).values_list(
        "id", "try_number", "queue", "timeout_seconds"
    )
    count = 0
    for task_run_id, try_number, queue, timeout in list(stuck[:1000]):
        with transaction.atomic():
            if TaskRun.objects.filter(pk=task_run_id, state=TaskRun.State.QUEUED, try_number=try_number).update(
                queued_at=now
            ):
                dispatch.send([dispatch.Queued(task_run_id, try_number, queue, timeout)])
                count += 1
    return count


def admit_waiting_task_runs(now: datetime) -> int:
    """Hand free pool slots to task runs waiting for them (slots freed by failures, reaping
    or a pool that grew; successes hand their slot on themselves)."""
    pools = TaskRun.objects.filter(state=TaskRun.State.SCHEDULED).exclude(pool="").values_list("pool", flat=True)
    count = 0
    for pool in set(pools):
        queued = admit_from_pool(pool, now)
        dispatch.send(queued)
        count += len(queued)
    return count


def finish_backfills() -> int:
    finished = 0
    for backfill in Backfill.objects.filter(state=Backfill.State.RUNNING).annotate(
        live=Count("runs", filter=Q(runs__state__in=[Run.State.QUEUED, Run.State.RUNNING]))
    ).filter(live=0):
        finished += Backfill.objects.filter(pk=backfill.pk, state=Backfill.State.RUNNING).update(
            state=Backfill.State.DONE
        )
    return finished


def run_forever(*, tick_seconds: float | None = None, max_ticks: int | None = None) -> None:
    """The scheduler service: tick about once a second and survive database trouble."""
    tick_seconds = tick_seconds or settings.RAILYARD_TICK_SECONDS
    ticks = 0
    while max_ticks is None or ticks < max_ticks:
        started = time.monotonic()
        close_old_connections()
        try:
            report = tick()
            if report.did_work:
                logger.info("tick: %s", report)
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("tick failed on a database error, retrying next tick: %s", exc)
            connection.close()
        ticks += 1
        time.sleep(max(0.0, tick_seconds - (time.monotonic() - started)))


def start_run_now(run: Run, now: datetime | None = None) -> int:
    """Start a just-triggered run (or a backfill's first runs) without waiting for a tick."""
    return start_runs_for(run.deployment_id, run.backfill_id, now or timezone.now())
