"""Celery tasks: take ids, call a function, nothing else."""

from __future__ import annotations

from celery import shared_task

from scheduler import worker


@shared_task(name="railyard.execute_task_run", acks_late=True, reject_on_worker_lost=True)
def execute_task_run(task_run_id: int, try_number: int) -> None:
    worker.execute_task_run(task_run_id, try_number)
