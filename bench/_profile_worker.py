"""Evidence for docs/benchmarks.md: where a no-op task's time goes in the worker, in-process
(no broker): queries per task and ms per task, with the connection closed after each task as
Celery's Django fix-up does at DB_CONN_MAX_AGE=0 (the default), and kept open; a cProfile of
the closed-connection case goes to var/bench/worker_task.prof.txt. Not listed in bench/run.py.

Run: .venv/bin/python bench/_profile_worker.py
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _benchlib as lib  # noqa: E402

DB = "railyard_prof"
RUNS = 100


def main() -> int:
    lib.create_database(DB)
    try:
        with lib.time_limit(600):
            return run()
    finally:
        from django.db import connections

        connections.close_all()
        lib.drop_database(DB)


def run() -> int:
    lib.django_on(DB)
    from django.db import connection, transaction

    from pipelines.services.runs import run_create
    from scheduler import dispatch, loop, worker

    pending: deque = deque()

    def collect(queued):
        items = list(queued)
        if items:
            transaction.on_commit(lambda: pending.extend(items))

    dispatch.send = collect
    count = 0

    def counter(execute, sql, params, many, context):
        nonlocal count
        count += 1
        return execute(sql, params, many, context)

    def one_pass(label: str, close_each: bool, profile: cProfile.Profile | None = None) -> None:
        nonlocal count
        _, deployments = lib.noop_deployments(RUNS // 10, cron="*/5 * * * *", max_active_runs=10,
                                              prefix=f"prof_{label}")
        for d in deployments:
            for i in range(10):
                run_create(deployment=d, logical_date=datetime(2026, 1, 1, tzinfo=UTC) + i * timedelta(minutes=5),
                           now=datetime.now(UTC))
        loop.start_queued_runs(datetime.now(UTC))
        tasks, count = 0, 0
        started = time.perf_counter()
        with connection.execute_wrapper(counter):
            if profile:
                profile.enable()
            while pending:
                item = pending.popleft()
                worker.execute_task_run(item.task_run_id, item.try_number)
                if close_each:
                    connection.close()  # what the Celery fix-up does after each task at CONN_MAX_AGE=0
                tasks += 1
            if profile:
                profile.disable()
        elapsed = time.perf_counter() - started
        print(f"  {label:<32} {tasks} tasks: {elapsed / tasks * 1000:.2f} ms/task, {count / tasks:.1f} queries/task"
              f"  [load {lib.loadavg()}]")

    print(f"worker path in-process, no broker ({lib.stamp()})")
    one_pass("warm-up", False)
    one_pass("connection kept (CONN_MAX_AGE>0)", False)
    profile = cProfile.Profile()
    one_pass("connection closed each task", True)
    one_pass("closed, under cProfile", True, profile)
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
    path = lib.ROOT / "var" / "bench" / "worker_task.prof.txt"
    path.write_text(out.getvalue())
    print(f"  cProfile: {path.relative_to(lib.ROOT)}")
    print("Reproduce: .venv/bin/python bench/_profile_worker.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
