"""The task-run state machine. Every transition is a conditional update on (id, state,
try_number) whose row count says whether this process won; nothing is read, changed and
saved back. try_number is the fencing token: a worker whose try is no longer current
cannot record anything."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F

from pipelines.guardrails import retry_delay_seconds
from pipelines.models import Pool, Run, TaskRun

logger = logging.getLogger("railyard.execution")

ALERT_HOOKS: list = []  # callables(run) for runs that end failed; the alerting work fills these in


WAITING_STATES = (TaskRun.State.UP_FOR_RETRY, TaskRun.State.UP_FOR_RESCHEDULE)


@dataclass(frozen=True)
class Queued:
    """A task run put in `queued`, to be sent to the broker after commit."""

    task_run_id: int
    try_number: int
    queue: str
    timeout_seconds: int


_ADMISSION_FIELDS = ("id", "pool", "try_number", "queue", "timeout_seconds")


def queue_ready_task_runs(run_id: int, now: datetime) -> list[Queued]:
    """Queue every pending task run of a running run whose upstream tasks all succeeded."""
    task_runs = list(TaskRun.objects.filter(run_id=run_id).values("task_id", "state", "upstream", *_ADMISSION_FIELDS))
    succeeded = {t["task_id"] for t in task_runs if t["state"] == TaskRun.State.SUCCESS}
    queued: list[Queued] = []
    for t in task_runs:
        if t["state"] == TaskRun.State.PENDING and set(t["upstream"]) <= succeeded:
            queued += admit(t, (TaskRun.State.PENDING,), now)
    return queued


def admit(task_run: dict, from_states: tuple[str, ...], now: datetime) -> list[Queued]:
    """The one way into `queued`: straight in without a pool; through `scheduled` and a free
    slot with one. Each admission is a new try (a new fencing token).

    `task_run` holds the row's _ADMISSION_FIELDS as read; the update is conditional on the
    try number read, so the new try number is known without reading the row again."""
    live = TaskRun.objects.filter(
        pk=task_run["id"], state__in=from_states, try_number=task_run["try_number"], run__state=Run.State.RUNNING
    )
    if not task_run["pool"]:
        if not live.update(state=TaskRun.State.QUEUED, try_number=task_run["try_number"] + 1, queued_at=now,
                           next_try_at=None):
            return []
        return [Queued(task_run["id"], task_run["try_number"] + 1, task_run["queue"], task_run["timeout_seconds"])]
    if not live.update(state=TaskRun.State.SCHEDULED, next_try_at=None):
        return []
    return admit_from_pool(task_run["pool"], now)


def admit_from_pool(pool_name: str, now: datetime) -> list[Queued]:
    """Queue the oldest task runs waiting for this pool, as many as it has free slots. The
    pool row is locked meanwhile, so two processes never hand out the same slot."""
    with transaction.atomic():
        pool = Pool.objects.select_for_update().filter(name=pool_name).first()
        waiting = TaskRun.objects.filter(pool=pool_name, state=TaskRun.State.SCHEDULED)
        if pool is None:
            error = f"Pool '{pool_name}' does not exist. Create it (Admin → Pools) or remove it from the template."
            for task_run_id, run_id in list(waiting.values_list("id", "run_id")):
                if TaskRun.objects.filter(pk=task_run_id, state=TaskRun.State.SCHEDULED).update(
                    state=TaskRun.State.FAILED, finished_at=now, error=error
                ):
                    _fail_run(run_id, now, error)
            return []
        in_use = TaskRun.objects.filter(pool=pool_name, state__in=[TaskRun.State.QUEUED, TaskRun.State.RUNNING]).count()
        queued: list[Queued] = []
        for t in waiting.order_by("run__logical_date", "position").values("id", "try_number", "timeout_seconds")[
            : max(pool.slots - in_use, 0)
        ]:
            if TaskRun.objects.filter(pk=t["id"], state=TaskRun.State.SCHEDULED, try_number=t["try_number"]).update(
                state=TaskRun.State.QUEUED, try_number=t["try_number"] + 1, queued_at=now, queue=pool.queue
            ):
                queued.append(Queued(t["id"], t["try_number"] + 1, pool.queue, t["timeout_seconds"]))
        return queued


def runs_start(run_ids: list[int], now: datetime) -> tuple[int, list[Queued]]:
    """queued → running for many runs in one statement, then queue their first tasks in bulk.
    The caller holds the locks that make the run limits exact. Returns (runs started, queued)."""
    if not run_ids:
        return 0, []
    with transaction.atomic():
        started = Run.objects.filter(pk__in=run_ids, state=Run.State.QUEUED).update(
            state=Run.State.RUNNING, started_at=now
        )
        if not started:
            return 0, []
        return started, queue_ready_task_runs_of(run_ids, now)


def queue_ready_task_runs_of(run_ids: list[int], now: datetime) -> list[Queued]:
    """queue_ready_task_runs for many running runs at once: one read, one conditional UPDATE
    of the ready task runs without a pool and one read-back of their new try numbers; the
    pooled ones go to `scheduled` and through admit_from_pool."""
    task_runs = list(
        TaskRun.objects.filter(run_id__in=run_ids, run__state=Run.State.RUNNING)
        .values("run_id", "task_id", "state", "upstream", *_ADMISSION_FIELDS)
    )
    succeeded = {(t["run_id"], t["task_id"]) for t in task_runs if t["state"] == TaskRun.State.SUCCESS}
    ready = [
        t for t in task_runs
        if t["state"] == TaskRun.State.PENDING and all((t["run_id"], up) in succeeded for up in t["upstream"])
    ]
    queued: list[Queued] = []
    direct = [t["id"] for t in ready if not t["pool"]]
    if direct and TaskRun.objects.filter(pk__in=direct, state=TaskRun.State.PENDING, run__state=Run.State.RUNNING).update(
        state=TaskRun.State.QUEUED, try_number=F("try_number") + 1, queued_at=now, next_try_at=None
    ):
        queued += [
            Queued(*row)
            for row in TaskRun.objects.filter(pk__in=direct, state=TaskRun.State.QUEUED, queued_at=now)
            .order_by("run_id", "position")
            .values_list("id", "try_number", "queue", "timeout_seconds")
        ]
    pooled = [t for t in ready if t["pool"]]
    if pooled and TaskRun.objects.filter(
        pk__in=[t["id"] for t in pooled], state=TaskRun.State.PENDING, run__state=Run.State.RUNNING
    ).update(state=TaskRun.State.SCHEDULED, next_try_at=None):
        for pool in sorted({t["pool"] for t in pooled}):
            queued += admit_from_pool(pool, now)
    return queued


def task_run_claim(task_run_id: int, try_number: int, worker: str, now: datetime) -> bool:
    """queued → running for exactly this try; a duplicate delivery claims nothing."""
    return bool(
        TaskRun.objects.filter(pk=task_run_id, state=TaskRun.State.QUEUED, try_number=try_number).update(
            state=TaskRun.State.RUNNING, started_at=now, heartbeat_at=now, finished_at=None, worker=worker,
            error="",
        )
    )


def task_run_heartbeat(task_run_id: int, try_number: int, now: datetime) -> bool:
    """Extend the lease; False when this try is no longer the live one."""
    return bool(
        TaskRun.objects.filter(pk=task_run_id, state=TaskRun.State.RUNNING, try_number=try_number).update(
            heartbeat_at=now
        )
    )


def task_run_succeed(
    task_run_id: int,
    try_number: int,
    now: datetime,
    *,
    rows_read: int | None = None,
    rows_written: int | None = None,
    metrics: dict | None = None,
    log: str = "",
) -> list[Queued]:
    """Record success (fenced), then queue the downstream tasks at once (fast follow)."""
    with transaction.atomic():
        won = TaskRun.objects.filter(pk=task_run_id, state=TaskRun.State.RUNNING, try_number=try_number).update(
            state=TaskRun.State.SUCCESS, finished_at=now, rows_read=rows_read, rows_written=rows_written,
            metrics=metrics or {}, log=log, error="",
        )
        if not won:
            logger.warning("task run %s try %s: result refused, the try is no longer current", task_run_id, try_number)
            return []
        run_id, pool = TaskRun.objects.values_list("run_id", "pool").get(pk=task_run_id)
        queued = queue_ready_task_runs(run_id, now)
        if pool:  # the slot this try held is free: hand it on at once
            queued += admit_from_pool(pool, now)
        _finish_run_if_done(run_id, now)
        return queued


def task_run_fail(
    task_run_id: int, try_number: int, now: datetime, *, error: str, retryable: bool, log: str = ""
) -> bool:
    """Record a failed try (fenced): up for retry with backoff while tries remain and the
    error is transient; otherwise failed, its downstream upstream_failed and the run failed.
    Returns True when the failure was recorded by this call."""
    with transaction.atomic():
        row = (
            TaskRun.objects.filter(pk=task_run_id, state=TaskRun.State.RUNNING, try_number=try_number)
            .values("run_id", "max_tries", "run__deployment__version__guardrails")
            .first()
        )
        if row is None:
            return False
        guardrails = row["run__deployment__version__guardrails"]
        retries = int(guardrails.get("retries", 0))
        if retryable and try_number < row["max_tries"]:
            retry_number = try_number - (row["max_tries"] - retries - 1)
            delay = retry_delay_seconds(guardrails, max(retry_number, 1), rng=random.Random())
            won = TaskRun.objects.filter(pk=task_run_id, state=TaskRun.State.RUNNING, try_number=try_number).update(
                state=TaskRun.State.UP_FOR_RETRY, finished_at=now, error=error, log=log,
                next_try_at=now + timedelta(seconds=delay),
            )
            return bool(won)
        won = TaskRun.objects.filter(pk=task_run_id, state=TaskRun.State.RUNNING, try_number=try_number).update(
            state=TaskRun.State.FAILED, finished_at=now, error=error, log=log
        )
        if won:
            _fail_run(row["run_id"], now, error)
        return bool(won)


def task_run_reschedule(
    task_run_id: int, try_number: int, now: datetime, *, waiting_for: str, poke_seconds: float,
    timeout_seconds: float, log: str = "",
) -> bool:
    """A sensor found its condition unmet: free the worker and poke again in `poke_seconds`,
    keeping the try (reschedule mode), until `timeout_seconds` after the first poke; then the
    task fails for good with a message that says what it waited for."""
    with transaction.atomic():
        row = (
            TaskRun.objects.filter(pk=task_run_id, state=TaskRun.State.RUNNING, try_number=try_number)
            .values("run_id", "first_poke_at")
            .first()
        )
        if row is None:
            return False
        first_poke = row["first_poke_at"] or now
        if (now - first_poke).total_seconds() >= timeout_seconds:
            error = f"Timed out after waiting {timeout_seconds:.0f} s for {waiting_for}."
            won = TaskRun.objects.filter(pk=task_run_id, state=TaskRun.State.RUNNING, try_number=try_number).update(
                state=TaskRun.State.FAILED, finished_at=now, error=error, log=log
            )
            if won:
                _fail_run(row["run_id"], now, error)
            return bool(won)
        # The next poke is a new delivery with a new fencing token; max_tries moves with it
        # so the poke does not use up a retry.
        return bool(TaskRun.objects.filter(pk=task_run_id, state=TaskRun.State.RUNNING, try_number=try_number).update(
            state=TaskRun.State.UP_FOR_RESCHEDULE, first_poke_at=first_poke, max_tries=F("max_tries") + 1,
            next_try_at=now + timedelta(seconds=poke_seconds), error=f"Waiting for {waiting_for}.", log=log,
        ))


def _fail_run(run_id: int, now: datetime, error: str) -> None:
    TaskRun.objects.filter(run_id=run_id, state=TaskRun.State.PENDING).update(
        state=TaskRun.State.UPSTREAM_FAILED, finished_at=now
    )
    if Run.objects.filter(pk=run_id, state=Run.State.RUNNING).update(
        state=Run.State.FAILED, finished_at=now, error=error[:2000]
    ):
        run = Run.objects.select_related("deployment__pipeline", "deployment__environment").get(pk=run_id)
        for hook in ALERT_HOOKS:
            transaction.on_commit(lambda hook=hook: hook(run))


def _finish_run_if_done(run_id: int, now: datetime) -> None:
    states = list(TaskRun.objects.filter(run_id=run_id).values_list("state", flat=True))
    if states and all(state == TaskRun.State.SUCCESS for state in states):
        rows = (
            TaskRun.objects.filter(run_id=run_id, task_id="publish").values_list("rows_written", flat=True).first()
        )
        Run.objects.filter(pk=run_id, state=Run.State.RUNNING).update(
            state=Run.State.SUCCESS, finished_at=now, rows_written=rows
        )


def queue_retry(task_run_id: int, now: datetime) -> list[Queued]:
    """up_for_retry (or a sensor's up_for_reschedule) whose time came → admitted again."""
    row = (
        TaskRun.objects.filter(pk=task_run_id, state__in=WAITING_STATES, next_try_at__lte=now)
        .values(*_ADMISSION_FIELDS)
        .first()
    )
    return admit(row, WAITING_STATES, now) if row else []
