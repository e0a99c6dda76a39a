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
from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models import Count, F, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from pipelines.models import Backfill, Deployment, Run, TaskRun
from pipelines.services.runs import build_run, build_task_runs, deployment_schedule, run_create
from scheduler import dispatch
from scheduler.execution import WAITING_STATES, admit_from_pool, queue_retry, runs_start, task_run_fail

logger = logging.getLogger("railyard.scheduler")

# With catchup on, at most this many intervals of one deployment are created per tick.
MAX_CATCHUP_PER_TICK = 500
# Deployments per transaction when creating due runs, and runs per INSERT statement.
CREATE_BATCH = 200
RUN_INSERT_BATCH = 1000
# Groups (deployments or backfills) per transaction when starting queued runs.
START_BATCH = 200


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
    and move next_due_at past `now`. Catchup off: only the latest interval.

    Set-based, CREATE_BATCH deployments per transaction: lock the batch (SKIP LOCKED), read
    the batch's existing runs in one query, insert the new runs and their task runs in one
    query each and move next_due_at: a deployment's runs and its next_due_at commit together."""
    due_ids = list(
        Deployment.objects.filter(paused=False, next_due_at__lte=now).order_by("next_due_at").values_list("id", flat=True)
    )
    created = 0
    schedules: dict = {}  # one memo per schedule for this call: due deployments share a few
    for start in range(0, len(due_ids), CREATE_BATCH):
        with transaction.atomic():
            _relaxed_commit()
            deployments = list(
                _locked(Deployment.objects.filter(pk__in=due_ids[start:start + CREATE_BATCH], paused=False,
                                                  next_due_at__lte=now))
                .select_related("version", "pipeline__template")
                .order_by("next_due_at", "pk")
            )
            if deployments:  # the others: another scheduler has them, or they were paused
                created += _create_runs_of_batch(deployments, now, schedules)
    return created


def _fires_owed(deployment: Deployment, schedule, now: datetime) -> list[datetime]:
    """The fires a due deployment is owed, by its catchup policy (off / last N / all)."""
    catchup = deployment.version.guardrails.get("catchup", False)
    if catchup in (True, "all"):
        fires = []
        for fire in schedule.fires_between(deployment.next_due_at, now):
            fires.append(fire)
            if len(fires) >= MAX_CATCHUP_PER_TICK:
                break
        return fires
    if isinstance(catchup, int) and not isinstance(catchup, bool) and catchup > 0:
        # The last N fires, walked back from the latest: O(N) whatever the outage.
        fires = [schedule.latest_fire(now)]
        while len(fires) < catchup:
            previous = schedule.previous_fire(fires[0])
            if previous < deployment.next_due_at:
                break
            fires.insert(0, previous)
        return fires
    return [schedule.latest_fire(now)]


class _MemoSchedule:
    """A Schedule whose fire computations (pure, and most of a due wave's CPU) are remembered
    for one create_due_runs call: a thousand due deployments share a few dozen schedules and
    the same `now`."""

    def __init__(self, schedule) -> None:
        self.schedule = schedule
        self._cache: dict = {}

    def _remember(self, name: str, instant: datetime) -> datetime:
        key = (name, instant)
        if key not in self._cache:
            self._cache[key] = getattr(self.schedule, name)(instant)
        return self._cache[key]

    def latest_fire(self, at_or_before: datetime) -> datetime:
        return self._remember("latest_fire", at_or_before)

    def previous_fire(self, before: datetime) -> datetime:
        return self._remember("previous_fire", before)

    def next_fire(self, after: datetime) -> datetime:
        return self._remember("next_fire", after)

    def fires_between(self, start: datetime, end: datetime):
        return self.schedule.fires_between(start, end)


def _create_runs_of_batch(deployments: list[Deployment], now: datetime, schedules: dict) -> int:
    """Create the owed runs of a batch of locked deployments; move their next_due_at."""
    # deployment id → (deployment, schedule, [(logical date, interval end)], next due)
    owed: dict[int, tuple[Deployment, object, list[tuple[datetime, datetime]], datetime]] = {}
    for deployment in deployments:
        schedule = deployment_schedule(deployment)
        memo = schedules.get(schedule) or schedules.setdefault(schedule, _MemoSchedule(schedule))
        fires = _fires_owed(deployment, memo, now)
        intervals = [(memo.previous_fire(fire), fire) for fire in fires]  # Schedule.data_interval
        owed[deployment.pk] = (deployment, schedule, intervals, memo.next_fire(fires[-1]))
    ranges = Q()
    for deployment, _, intervals, _ in owed.values():
        ranges |= Q(deployment_id=deployment.pk, logical_date__gte=intervals[0][0],
                    logical_date__lte=intervals[-1][0])
    existing = set(Run.objects.filter(ranges).values_list("deployment_id", "logical_date"))
    new_runs: list[Run] = []
    for deployment, schedule, intervals, _ in owed.values():
        new_runs += [build_run(deployment, schedule, logical_date, now, interval_end=interval_end)
                     for logical_date, interval_end in intervals if (deployment.pk, logical_date) not in existing]
    try:
        with transaction.atomic():  # a savepoint: a conflicting insert leaves the batch usable
            Run.objects.bulk_create(new_runs, batch_size=RUN_INSERT_BATCH)
            by_deployment: dict[int, list[Run]] = {}
            for run in new_runs:
                by_deployment.setdefault(run.deployment_id, []).append(run)
            TaskRun.objects.bulk_create(
                [task_run for deployment_id, runs in by_deployment.items()
                 for task_run in build_task_runs(owed[deployment_id][0], runs)],
                batch_size=RUN_INSERT_BATCH * 8,
            )
            created = len(new_runs)
    except IntegrityError:
        # A manual trigger created one of these logical dates meanwhile: one by one instead,
        # run_create returns the run that exists.
        created = 0
        for deployment, _, intervals, _ in owed.values():
            for logical_date, _ in intervals:
                created += run_create(deployment=deployment, logical_date=logical_date, now=now)[1]
    if connection.vendor == "postgresql":  # the rows are locked: one statement
        table = connection.ops.quote_name(Deployment._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS d SET next_due_at = v.due, updated_at = %s "
                "FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, due) WHERE d.id = v.id",
                [now, list(owed), [next_due_at for _, _, _, next_due_at in owed.values()]],
            )
    elif connection.features.has_select_for_update_skip_locked:
        for deployment, _, _, next_due_at in owed.values():
            deployment.next_due_at, deployment.updated_at = next_due_at, now
        Deployment.objects.bulk_update(deployments, ["next_due_at", "updated_at"])
    else:
        for deployment, _, _, next_due_at in owed.values():
            # Conditional on the value read: a concurrent scheduler on SQLite cannot move it twice.
            Deployment.objects.filter(pk=deployment.pk, next_due_at=deployment.next_due_at).update(
                next_due_at=next_due_at, updated_at=now
            )
    return created


def start_queued_runs(now: datetime) -> int:
    """Start queued runs, oldest logical date first, within max_active_runs: the deployment's
    for scheduled and manual runs, each backfill's own for its runs. Set-based, START_BATCH
    groups per transaction."""
    # Which groups have a queued run is all that is needed (_start_groups counts the running
    # ones itself under its lock). `state = 'queued'` alone lets PostgreSQL read the partial
    # index run_queued_idx, so an idle tick costs O(queued runs), not O(run history).
    groups = list(
        Run.objects.filter(state=Run.State.QUEUED)
        .values_list("deployment_id", "backfill_id")
        .distinct()
        .order_by()
    )
    deployment_ids = sorted({deployment_id for deployment_id, backfill_id in groups if backfill_id is None})
    backfill_ids = sorted({backfill_id for _, backfill_id in groups if backfill_id is not None})
    started = 0
    for start in range(0, len(deployment_ids), START_BATCH):
        started += _start_groups(deployment_ids[start:start + START_BATCH], backfills=False, now=now)
    for start in range(0, len(backfill_ids), START_BATCH):
        started += _start_groups(backfill_ids[start:start + START_BATCH], backfills=True, now=now)
    return started


def start_runs_for(deployment_id: int, backfill_id: int | None, now: datetime) -> int:
    """Start as many queued runs of one deployment (or one of its backfills) as limits allow.
    Called by the tick and right after a manual trigger or a new backfill."""
    if backfill_id is None:
        return _start_groups([deployment_id], backfills=False, now=now)
    return _start_groups([backfill_id], backfills=True, now=now)


def _start_groups(group_ids: list[int], *, backfills: bool, now: datetime) -> int:
    """Start the queued runs of several groups (deployments' own runs, or backfills) as their
    limits allow, in one transaction and a fixed number of queries. The groups' rows are
    locked (SKIP LOCKED: a group another scheduler holds is its to start) and the running
    runs counted under that lock, so limits stay exact with several schedulers."""
    with transaction.atomic():
        if backfills:
            owners = _locked(Backfill.objects.filter(pk__in=group_ids, state=Backfill.State.RUNNING)).select_related(
                "deployment__version"
            )
            groups = {b.pk: (b.max_active_runs, b.deployment_id, b.deployment.version.guardrails) for b in owners.order_by("pk")}
            key = "backfill_id"
            runs = Run.objects.filter(backfill_id__in=groups)
        else:
            owners = _locked(Deployment.objects.filter(pk__in=group_ids, paused=False)).select_related("version")
            groups = {d.pk: (d.max_active_runs, d.pk, d.version.guardrails) for d in owners.order_by("pk")}
            key = "deployment_id"
            runs = Run.objects.filter(deployment_id__in=groups, backfill__isnull=True)
        if not groups:
            return 0
        running = dict(
            runs.filter(state=Run.State.RUNNING).order_by().values(key).annotate(n=Count("id")).values_list(key, "n")
        )
        free = {group: limit - running.get(group, 0) for group, (limit, _, _) in groups.items()}
        free = {group: n for group, n in free.items() if n > 0}
        if not free:
            return 0
        # The oldest startable queued runs of each group, at most its free slots: one query.
        candidates = (
            runs.filter(**{f"{key}__in": list(free)}, state=Run.State.QUEUED)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .annotate(place=Window(RowNumber(), partition_by=[F(key)], order_by=[F("logical_date").asc()]))
            .filter(place__lte=max(free.values()))
            .order_by(key, "logical_date")
            .values_list("id", key, "logical_date")
        )
        chosen: list[int] = []
        blocked: set[int] = set()
        taken: dict[int, int] = {}
        for run_id, group, logical_date in candidates:
            if group in blocked or taken.get(group, 0) >= free[group]:
                continue
            _, deployment_id, guardrails = groups[group]
            # (A run chosen just before is still queued in the database: not succeeded.)
            if guardrails.get("depends_on_past", False) and not _previous_run_succeeded(deployment_id, logical_date):
                blocked.add(group)  # later logical dates wait too
                continue
            chosen.append(run_id)
            taken[group] = taken.get(group, 0) + 1
        started, queued = runs_start(chosen, now)
        dispatch.send(queued)
        return started


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
