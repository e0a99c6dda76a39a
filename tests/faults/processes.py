"""Helpers for the fault tests: real scheduler and worker processes (always stopped at
teardown, whatever the test did), templates with short retry delays and fault injection,
and checks of DESIGN.md §5 invariants 1–3."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.db.models import Count

from pipelines.models import Run, Template
from tests import factories
from tests.worker_process import start_scheduler, start_worker, stop_process

# Short leases so a lost worker is noticed in seconds (production: 60 s, 5 s, 300 s).
FAULT_ENV = {
    "RAILYARD_LEASE_SECONDS": "3",
    "RAILYARD_HEARTBEAT_SECONDS": "0.5",
    "RAILYARD_REQUEUE_SECONDS": "5",
    "LOG_LEVEL": "INFO",
}


def _redis_answers() -> bool:
    url = settings.CELERY_BROKER_URL or ""
    if not url.startswith(("redis://", "rediss://")):
        return False
    try:
        import redis

        redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping()
    except Exception:  # any failure means: no Redis to test against
        return False
    return True


def fault_tests_skip_reason() -> str | None:
    if connection.vendor != "postgresql":
        return "fault tests run on PostgreSQL (SKIP LOCKED, several processes): set DATABASE_URL"
    if not _redis_answers():
        return "fault tests need a Redis broker answering at CELERY_BROKER_URL"
    return None


def purge_broker() -> None:
    """Empty the default queue: no task-run id of another test is delivered."""
    from portal.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("default")


@dataclass
class Processes:
    """Processes a test starts; every one is stopped at teardown."""

    folder: Path
    started: list[subprocess.Popen] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)

    def worker(self, name: str, *, concurrency: int = 2, extra_env: dict | None = None) -> subprocess.Popen:
        log = self.folder / f"worker-{name}.log"
        process = start_worker(concurrency=concurrency, log_path=log, name=name,
                               extra_env={**FAULT_ENV, **(extra_env or {})})
        self.started.append(process)
        self.logs[process.pid] = log
        return process

    def scheduler(self, name: str, *, tick: float = 0.2, extra_env: dict | None = None) -> subprocess.Popen:
        err = self.folder / f"scheduler-{name}.err"
        process = start_scheduler(tick=tick, stdout_path=self.folder / f"scheduler-{name}.out", stderr_path=err,
                                  extra_env={**FAULT_ENV, **(extra_env or {})})
        self.started.append(process)
        self.logs[process.pid] = err
        return process

    def log(self, process: subprocess.Popen) -> str:
        path = self.logs[process.pid]
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self, tail: int = 4000) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}"
                         for path in self.logs.values() if path.exists())

    def stop_all(self) -> None:
        for process in self.started:
            stop_process(process, timeout=10)


def fault_template(slug: str, **guardrails) -> Template:
    """The partitioned-ingestion template with quick retries (1 s, no backoff) and `guardrails`."""
    base = Template.objects.get(slug="partitioned-ingestion")
    return Template.objects.create(
        slug=slug, name=slug, kind=base.kind,
        guardrails={**base.guardrails, "retry_delay_seconds": 1, "retry_exponential_backoff": False,
                    "max_retry_delay_seconds": 1, **guardrails},
    )


# --- invariants (DESIGN.md §5) ------------------------------------------------------------

def duplicate_runs() -> int:
    """Invariant 1: (deployment, logical date) pairs with more than one run (the unique
    constraint should make this 0 by construction; counted, not assumed)."""
    return (
        Run.objects.values("deployment_id", "logical_date").annotate(n=Count("id")).filter(n__gt=1).count()
    )


def lost_runs(runs) -> list[str]:
    """Invariant 2: runs that neither succeeded nor failed visibly (with an error)."""
    return [
        f"{run} is {run.state}" for run in runs
        if not (run.state == Run.State.SUCCESS or (run.state == Run.State.FAILED and run.error))
    ]


def assert_partitions_equal_files(warehouse: Path, table: str, expected: dict[str, list[dict]]) -> int:
    """Invariant 3: each partition holds exactly its source file's rows (none doubled, none
    missing) and the table holds nothing else. Returns the rows checked."""
    total = 0
    for partition, rows in expected.items():
        loaded = factories.warehouse_rows(warehouse, table, "WHERE dt = ?", (partition,))
        assert sorted(_sale(r[:5]) for r in loaded) == sorted(_sale(r.values()) for r in rows), f"{table} dt={partition}"
        total += len(loaded)
    everything = factories.warehouse_rows(warehouse, table)
    assert len(everything) == total, f"{table}: rows outside the expected partitions"
    return total


def _sale(values) -> tuple:
    """A sales row compared by value, whether the warehouse keeps text or inferred types."""
    order_id, customer_id, sku, quantity, amount = values
    return str(order_id), int(customer_id), str(sku), int(quantity), round(float(amount), 2)
