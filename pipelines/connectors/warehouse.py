"""The warehouse: where staging and target tables live (SQLite or PostgreSQL)."""

from __future__ import annotations

from pipelines.connectors.sql import Database, open_database
from pipelines.steps.base import ConnectionSpec, PermanentError


def open_warehouse(spec: ConnectionSpec) -> Database:
    """Open the warehouse for writing (the SQLite file or the PostgreSQL schema is created if missing)."""
    if spec.kind not in ("sqlite", "postgres"):
        raise PermanentError(
            f"warehouse_connection: {spec.name!r} is of kind {spec.kind!r}; a warehouse must be sqlite or postgres."
        )
    return open_database(spec)


def open_source_database(spec: ConnectionSpec, *, timezone: str = "UTC") -> Database:
    """Open a SQL source read-only, its session in the pipeline's time zone."""
    return open_database(spec, read_only=True, timezone=timezone)
