from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.steps.base import ConnectionSpec, StepContext

PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def make_ctx(
    tmp_path: Path,
    *,
    ds: str = "2024-03-10",
    interval: timedelta = timedelta(days=1),
    start: datetime | None = None,
    run_id: int = 1,
    connections: dict[str, ConnectionSpec] | None = None,
    guardrails: dict | None = None,
    logs: list[str] | None = None,
    environment: str = "prod",
    **inputs,
) -> StepContext:
    """A StepContext for a daily partitioned ingestion of landing/{{ ds }}/sales.csv into a
    SQLite warehouse in tmp_path; override any input by keyword."""
    start = start or datetime.fromisoformat(ds).replace(tzinfo=UTC)
    specs = {
        "landing": ConnectionSpec("landing", "files", {"base_path": str(tmp_path / "files")}),
        "wh": ConnectionSpec("wh", "sqlite", {"path": str(tmp_path / "warehouse.sqlite3")}),
    }
    specs.update(connections or {})
    defaults = {
        "source_connection": "landing",
        "source": "landing/{{ ds }}/sales.csv",
        "primary_key": ["order_id"],
        "partition_column": "ds",
        "warehouse_connection": "wh",
        "target_table": "sales",
    }
    defaults.update(inputs)
    sink = logs if logs is not None else []
    return StepContext(
        pipeline="daily_sales",
        environment=environment,
        run_id=run_id,
        task_id="extract",
        try_number=1,
        logical_date=start,
        data_interval_start=start,
        data_interval_end=start + interval,
        ds=ds,
        inputs=defaults,
        guardrails=guardrails or {},
        connection=lambda name: specs[name],
        log=sink.append,
    )


def write_csv(tmp_path: Path, ds: str, text: str, name: str = "sales.csv") -> Path:
    path = tmp_path / "files" / "landing" / ds / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def pg_spec():
    """A throwaway PostgreSQL database, as a ConnectionSpec; dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL does not answer at {PG_URL}: {exc}")
    name = f"railyard_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ConnectionSpec(
            "pgwh",
            "postgres",
            {"host": "127.0.0.1", "port": 5432, "dbname": name, "user": "postgres", "schema": "analytics"},
            secret="",
        )
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
