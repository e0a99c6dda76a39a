"""Putting work on Celery. Only ids travel; always after the transaction that queued them
commits, so a worker never looks for a row it cannot see yet."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from scheduler.execution import Queued


def send(queued: Iterable[Queued]) -> None:
    items = list(queued)
    if items:
        transaction.on_commit(lambda: _send_now(items))


def _send_now(items: list[Queued]) -> None:
    from scheduler.tasks import execute_task_run

    for item in items:
        # Soft limit: the step gets an exception it can clean up after; hard limit: the
        # process is killed, the message is redelivered and the reaper retries the try.
        execute_task_run.apply_async(
            args=[item.task_run_id, item.try_number], queue=item.queue,
            soft_time_limit=item.timeout_seconds, time_limit=item.timeout_seconds + 30,
        )
