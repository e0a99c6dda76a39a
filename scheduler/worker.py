"""What a worker does with one task-run id: claim, heart-beat, run the step, record."""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from pipelines.cron import schedule_for
from pipelines.models import Run, TaskRun
from pipelines.services.connections import connection_resolve
from pipelines.services.runs import sensor_settings
from pipelines.steps import PermanentError, StepContext, TransientError, get_step
from pipelines.steps.base import NotReady
from pipelines.steps.sensors import poke_settings
from scheduler import dispatch
from scheduler.execution import (
    task_run_claim,
    task_run_fail,
    task_run_heartbeat,
    task_run_reschedule,
    task_run_succeed,
)
from scheduler.loop import start_runs_for

logger = logging.getLogger("railyard.worker")


def worker_name() -> str:
    """host:pid of the process executing the try. Read at each claim, not at import: Celery
    imports this module in the worker's main process and then forks its pool, so a name
    computed at import named the parent for every pool process (found by tests/faults)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class _Log:
    """The task's log: kept in memory and flushed to the row with each heartbeat."""

    def __init__(self, earlier: str = "") -> None:
        # The logs of earlier tries of this attempt stay above this one's, as in Airflow's
        # per-try logs: a task that succeeded on retry still shows why its first try failed.
        self.lines: list[str] = [earlier] if earlier else []
        self.lock = threading.Lock()

    def __call__(self, message: str) -> None:
        with self.lock:
            self.lines.append(f"{timezone.now():%H:%M:%S} {message}")

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.lines)


class _Heartbeat(threading.Thread):
    def __init__(self, task_run_id: int, try_number: int, log: _Log) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{task_run_id}")
        self.task_run_id, self.try_number, self.log = task_run_id, try_number, log
        self.stop = threading.Event()
        self.lost = False

    def run(self) -> None:
        try:
            while not self.stop.wait(settings.RAILYARD_HEARTBEAT_SECONDS):
                try:
                    if not task_run_heartbeat(self.task_run_id, self.try_number, timezone.now()):
                        self.lost = True
                        return
                    TaskRun.objects.filter(pk=self.task_run_id, try_number=self.try_number).update(log=self.log.text())
                except DatabaseError:
                    logger.warning("heartbeat for task run %s failed; retrying", self.task_run_id)
        finally:
            connection.close()


def execute_task_run(task_run_id: int, try_number: int, *, clock: Callable[[], datetime] = timezone.now) -> None:
    """`clock` is the time source for everything this try records (tests pass their own).
    Celery's Django fix-up closes stale database connections around each task."""
    name = worker_name()
    if not task_run_claim(task_run_id, try_number, name, clock()):
        logger.info("task run %s try %s: nothing to claim (duplicate or stale delivery)", task_run_id, try_number)
        return
    task_run = TaskRun.objects.select_related(
        "run__deployment__version", "run__deployment__environment", "run__deployment__pipeline__template"
    ).get(pk=task_run_id)
    run = task_run.run
    deployment = run.deployment
    version = deployment.version
    log = _Log(task_run.log)
    log(f"try {try_number} of task '{task_run.task_id}' on {name}")
    heartbeat = _Heartbeat(task_run_id, try_number, log)
    heartbeat.start()
    try:
        schedule = schedule_for(version.inputs["schedule"], version.inputs.get("timezone", "UTC"))
        ctx = StepContext(
            pipeline=deployment.pipeline.slug,
            environment=deployment.environment.slug,
            run_id=run.pk,
            task_id=task_run.task_id,
            try_number=try_number,
            logical_date=run.logical_date,
            data_interval_start=run.data_interval_start,
            data_interval_end=run.data_interval_end,
            ds=schedule.partition_date(run.logical_date),
            inputs=version.inputs,
            guardrails=version.guardrails,
            # Resolved (and decrypted) once per name for this try.
            connection=functools.cache(lambda name: connection_resolve(environment=deployment.environment, name=name)),
            log=log,
            staging_try=staging_try(task_run, try_number),
        )
        _inject_faults(ctx, task_run)
        result = get_step(deployment.pipeline.template.kind, task_run.task_id)(ctx)
    except NotReady as exc:
        poke_seconds, timeout_seconds = poke_settings(sensor_settings(version))
        log(f"not ready: waiting for {exc}; next poke in {poke_seconds:.0f} s")
        task_run_reschedule(task_run_id, try_number, clock(), waiting_for=str(exc), poke_seconds=poke_seconds,
                            timeout_seconds=timeout_seconds, log=log.text())
    except PermanentError as exc:
        _record_failure(task_run_id, try_number, log, f"{exc}", retryable=False, now=clock())
    except (TransientError, SoftTimeLimitExceeded, OSError, DatabaseError) as exc:
        message = (
            f"execution timeout of {task_run.timeout_seconds} s reached"
            if isinstance(exc, SoftTimeLimitExceeded) else str(exc)
        )
        _record_failure(task_run_id, try_number, log, f"{type(exc).__name__}: {message}", retryable=True,
                        now=clock())
    except Exception as exc:  # unknown errors are retried, as Airflow does
        log(traceback.format_exc(limit=5))
        _record_failure(task_run_id, try_number, log, f"{type(exc).__name__}: {exc}", retryable=True, now=clock())
    else:
        log(f"success: rows read {result.rows_read}, rows written {result.rows_written}")
        heartbeat.stop.set()
        heartbeat.join()
        queued = task_run_succeed(
            task_run_id, try_number, clock(), rows_read=result.rows_read, rows_written=result.rows_written,
            metrics=result.metrics, log=log.text(),
        )
        dispatch.send(queued)
        if not queued:  # perhaps the run's last task: its end frees a slot for the next run
            start_next_runs(run.pk, clock())
    finally:
        heartbeat.stop.set()
        heartbeat.join()


def staging_try(task_run: TaskRun, try_number: int) -> int:
    """Extract writes the staging table of its own try; later tasks read the one written by
    the extract try that succeeded (the current one of the run's extract task run)."""
    if task_run.task_id == "extract":
        return try_number
    extract = TaskRun.objects.filter(run_id=task_run.run_id, task_id="extract").values_list("try_number", flat=True)
    return extract.first() or 0


def _record_failure(
    task_run_id: int, try_number: int, log: _Log, error: str, *, retryable: bool, now: datetime
) -> None:
    log(f"failed ({'will retry if tries remain' if retryable else 'not retryable'}): {error}")
    if task_run_fail(task_run_id, try_number, now, error=error, retryable=retryable, log=log.text()):
        run_id = TaskRun.objects.filter(pk=task_run_id).values_list("run_id", flat=True).first()
        if run_id:
            start_next_runs(run_id, now)


def start_next_runs(run_id: int, now: datetime) -> None:
    """When a run has ended, start the next queued runs of its deployment (or backfill) now,
    instead of at the next tick: a backfill with max_active_runs 1 runs back to back."""
    run = Run.objects.filter(pk=run_id, state__in=Run.FINISHED_STATES).values("deployment_id", "backfill_id").first()
    if run:
        start_runs_for(run["deployment_id"], run["backfill_id"], now)


def _inject_faults(ctx: StepContext, task_run: TaskRun) -> None:
    """Fault injection for demos and drills (tests/faults), from the template's guardrails:

    - `inject_transient_failures: N` makes the first N tries of each run's first task fail
      with a transient error;
    - `inject_delay_seconds: S` (every task) or `{task_id: S}` (those tasks) sleeps S seconds
      before the step, heart-beating as usual: a slow task, to kill or stop a worker mid-task;
    - `inject_crash: true` makes every try of each run's first task kill its Celery pool
      process (`os._exit(1)`), the way a segfault or the OOM killer would: the try is never
      recorded by the worker, only reaped by the scheduler. Outside a Celery worker (eager
      tasks, in-process tests) it raises a transient error instead of exiting the caller."""
    delay = ctx.guardrails.get("inject_delay_seconds", 0)
    if isinstance(delay, dict):
        delay = delay.get(task_run.task_id, 0)
    if float(delay or 0) > 0:
        ctx.log(f"injected delay of {float(delay):g} s (the template sets inject_delay_seconds)")
        time.sleep(float(delay))
    if ctx.guardrails.get("inject_crash") and task_run.position == 0:
        from celery import current_task

        request = current_task.request if current_task else None  # a proxy: false outside a task
        if request is not None and not request.called_directly and not request.is_eager:
            logger.warning("task run %s try %s: injected crash of this worker process (inject_crash)",
                           task_run.pk, ctx.try_number)
            os._exit(1)
        raise TransientError("Injected crash (the template sets inject_crash; not exiting outside a worker).")
    failures = int(ctx.guardrails.get("inject_transient_failures", 0))
    if failures and task_run.position == 0:
        first_try = task_run.max_tries - int(ctx.guardrails.get("retries", 0))
        if ctx.try_number - first_try < failures:
            raise TransientError(f"Injected failure {ctx.try_number - first_try + 1} of {failures} "
                                 "(the template sets inject_transient_failures).")
