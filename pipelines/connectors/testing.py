"""`connection_test`: open a connection's source or warehouse once and say whether it works.

Used by the connection pages and the API ("Test connection"). Returns "OK: …" or raises
PermanentError (fix the config) / TransientError (try again); never shows the secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipelines.connectors.files import Location
from pipelines.connectors.http import HttpSource
from pipelines.connectors.sql import SQL_KINDS, open_database
from pipelines.steps.base import ConnectionSpec, PermanentError


def connection_test(spec: ConnectionSpec, *, now: datetime | None = None) -> str:
    if spec.kind == "files":
        location = Location(spec)
        try:
            entries = location.fs.ls(location.root, detail=False)
        except Exception as exc:  # noqa: BLE001 - fsspec backends raise many kinds
            raise location.error(exc, str(spec.config.get("base_path"))) from None
        return f"OK: {spec.config.get('base_path')} is readable ({len(entries)} entries)."
    if spec.kind in SQL_KINDS:
        with open_database(spec, read_only=True) as db:
            db.query("SELECT 1")
            return f"OK: connected to {db.describe()}."
    if spec.kind == "http":
        day = ((now or datetime.now(UTC)) - timedelta(days=1)).date()
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        variables = {
            "ds": day.isoformat(), "ds_nodash": day.strftime("%Y%m%d"), "ts": start.isoformat(),
            "data_interval_start": start.isoformat(), "data_interval_end": (start + timedelta(days=1)).isoformat(),
        }
        source = HttpSource(spec, variables)
        try:
            return (f"OK: {source.where(source.url)} answered; its first page has {len(source._first)} records "
                    f"with fields {', '.join(source.columns) or '(none)'}.")
        finally:
            source.close()
    raise PermanentError(f"Connection {spec.name!r}: unknown kind {spec.kind!r}.")
