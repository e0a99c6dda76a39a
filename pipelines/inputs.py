"""One validator for the minimal form's inputs, used by the page form, the API and the seeds.

Errors are a dict field → message that names the fix; nothing is stored until all pass."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError

from pipelines.cron import Schedule, ScheduleError
from pipelines.identifiers import validate_identifier

TEMPLATE_VARIABLES = {"ds", "ds_nodash", "ts", "data_interval_start", "data_interval_end"}
_VARIABLE = re.compile(r"{{\s*([^}]*?)\s*}}")


def clean_source_path(value: str, field: str = "source") -> str:
    path = (value or "").strip()
    if not path:
        raise ValueError(f"{field}: enter a file path such as 'landing/{{{{ ds }}}}/sales.csv'.")
    if path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"{field}: use a path relative to the connection's folder, without '..'.")
    unknown = sorted({name for name in _VARIABLE.findall(path) if name not in TEMPLATE_VARIABLES})
    if unknown:
        raise ValueError(
            f"{field}: unknown variable {', '.join(unknown)}; use {', '.join(sorted(TEMPLATE_VARIABLES))}."
        )
    return path


def clean_ingestion_inputs(raw: dict[str, Any], *, source_kind: str | None) -> dict[str, Any]:
    """Validate the partitioned-ingestion inputs; `source_kind` is the source connection's kind."""
    errors: dict[str, str] = {}
    cleaned: dict[str, Any] = {}

    def check(field: str, fn):
        try:
            cleaned[field] = fn()
        except (ValueError, ScheduleError) as exc:
            message = str(exc)
            errors[field] = message.split(": ", 1)[1] if message.startswith(f"{field}: ") else message

    cron = (raw.get("schedule") or "").strip()
    timezone = (raw.get("timezone") or "UTC").strip()
    check("schedule", lambda: Schedule(cron, "UTC").cron)
    check("timezone", lambda: Schedule("0 0 * * *", timezone).timezone)

    source_connection = (raw.get("source_connection") or "").strip()
    if not source_connection:
        errors["source_connection"] = "Choose the connection to read from."
    elif source_kind is None:
        errors["source_connection"] = f"No connection named '{source_connection}' in dev. Create it first."
    cleaned["source_connection"] = source_connection

    source = (raw.get("source") or "").strip()
    if source_kind == "files":
        check("source", lambda: clean_source_path(source))
    elif source_kind is not None:
        check("source", lambda: validate_identifier(source, "source"))

    keys_raw = raw.get("primary_key") or ""
    keys = keys_raw if isinstance(keys_raw, list) else [k.strip() for k in str(keys_raw).split(",") if k.strip()]
    if not keys:
        errors["primary_key"] = "Enter the column (or comma-separated columns) that identify a row, e.g. 'order_id'."
    else:
        check("primary_key", lambda: [validate_identifier(k, "primary_key") for k in keys])

    check("partition_column", lambda: validate_identifier((raw.get("partition_column") or "").strip(), "partition_column"))
    filter_column = (raw.get("source_filter_column") or "").strip()
    if filter_column:
        if source_kind == "files":
            errors["source_filter_column"] = "Only SQL sources are filtered by column; leave it empty for files."
        else:
            check("source_filter_column", lambda: validate_identifier(filter_column, "source_filter_column"))
    check("warehouse_connection", lambda: validate_identifier(
        (raw.get("warehouse_connection") or "warehouse").strip(), "warehouse_connection"))
    check("target_table", lambda: validate_identifier((raw.get("target_table") or "").strip(), "target_table"))

    if errors:
        raise ValidationError({field: [message] for field, message in errors.items()})
    cleaned["timezone"] = timezone
    cleaned["schedule"] = Schedule(cron, timezone).cron
    if filter_column:
        cleaned["source_filter_column"] = filter_column
    return cleaned
