"""The warehouse: where staging and target tables live (SQLite, PostgreSQL or DuckDB)."""

from __future__ import annotations

from pipelines.connectors.sql import Database, open_database
from pipelines.steps.base import ConnectionSpec, PermanentError

WAREHOUSE_KINDS = ("sqlite", "postgres", "duckdb")


def open_warehouse(spec: ConnectionSpec) -> Database:
    """Open the warehouse for writing (the file or the PostgreSQL schema is created if missing)."""
    if spec.kind not in WAREHOUSE_KINDS:
        raise PermanentError(
            f"warehouse_connection: {spec.name!r} is of kind {spec.kind!r}; a warehouse must be "
            f"{', '.join(WAREHOUSE_KINDS)}."
        )
    return open_database(spec)


def open_source_database(spec: ConnectionSpec, *, timezone: str = "UTC") -> Database:
    """Open a SQL source read-only, its session in the pipeline's time zone."""
    return open_database(spec, read_only=True, timezone=timezone)
