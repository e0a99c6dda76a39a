"""Run the scheduler and the workers in this process, with the database as the queue.

Ticks the real scheduler and executes every queued task run with the real worker code,
so specifications can assert outcomes without a broker. The end-to-end tests use a real
Celery worker process instead."""

from __future__ import annotations

from datetime import datetime

from pipelines.models import TaskRun
from scheduler import worker
from scheduler.loop import TickReport, tick


def run_until_idle(now: datetime, *, max_rounds: int = 100) -> TickReport:
    """Tick at `now` and execute queued task runs until nothing more happens."""
    first = tick(now)
    for _ in range(max_rounds):
        queued = list(TaskRun.objects.filter(state=TaskRun.State.QUEUED).values_list("id", "try_number"))
        report = tick(now)
        if not queued and not report.did_work:
            return first
        for task_run_id, try_number in queued:
            worker.execute_task_run(task_run_id, try_number, clock=lambda: now)
    raise AssertionError("the pipeline did not settle")
