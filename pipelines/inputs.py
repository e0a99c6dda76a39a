"""One validator for the minimal form's inputs, used by the page form, the API and the seeds.

Errors are a dict field → message that names the fix; nothing is stored until all pass."""

from __future__ import annotations

import codecs
import re
from typing import Any

from django.core.exceptions import ValidationError

from pipelines.cron import Schedule, ScheduleError
from pipelines.identifiers import validate_identifier

SQL_KINDS = {"sqlite", "postgres", "mysql", "duckdb"}
FORMATS = ("csv", "jsonl", "parquet")
QUALITY_KEYS = ("min_rows", "max_rows", "min_rows_ratio_of_median", "accepted_values", "freshness", "custom_sql")
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


def clean_source_query(value: str) -> str:
    query = (value or "").strip().rstrip(";").strip()
    if not re.match(r"^(select|with)\b", query, re.IGNORECASE):
        raise ValueError("source_query: write one SELECT statement, e.g. 'SELECT * FROM orders WHERE day = {{ ds }}'.")
    if ";" in query or "?" in query:
        raise ValueError("source_query: one statement only, and use {{ ds }}-style variables instead of '?'.")
    unknown = sorted({name for name in _VARIABLE.findall(query) if name not in TEMPLATE_VARIABLES})
    if unknown:
        raise ValueError(
            f"source_query: unknown variable {', '.join(unknown)}; use {', '.join(sorted(TEMPLATE_VARIABLES))}."
        )
    return query


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        raise ValueError(f"{name}: a whole number of 0 or more is needed.")
    return int(value)


def clean_quality(value: Any) -> dict[str, Any]:
    """The optional `quality` input: the checks of pipelines.quality, each validated."""
    if value in (None, "", {}):
        return {}
    if not isinstance(value, dict):
        raise ValueError("quality: a mapping of checks is needed, e.g. {\"min_rows\": 100}.")
    unknown = sorted(set(value) - set(QUALITY_KEYS))
    if unknown:
        hint = " (max_rejected_fraction is a guardrail set by the platform team)" if "max_rejected_fraction" in unknown else ""
        raise ValueError(f"quality: unknown check {', '.join(unknown)}{hint}; use {', '.join(QUALITY_KEYS)}.")
    cleaned: dict[str, Any] = {}
    for key in ("min_rows", "max_rows"):
        if key in value:
            cleaned[key] = _whole(value[key], f"quality.{key}")
    if "min_rows" in cleaned and "max_rows" in cleaned and cleaned["min_rows"] > cleaned["max_rows"]:
        raise ValueError("quality.max_rows: must be at least min_rows.")
    if "min_rows_ratio_of_median" in value:
        ratio = value["min_rows_ratio_of_median"]
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 10:
            raise ValueError("quality.min_rows_ratio_of_median: a number above 0 (e.g. 0.5) is needed.")
        cleaned["min_rows_ratio_of_median"] = float(ratio)
    if "accepted_values" in value:
        accepted = value["accepted_values"]
        if not isinstance(accepted, dict) or not accepted:
            raise ValueError("quality.accepted_values: a mapping {column: [values]} is needed.")
        for column, values in accepted.items():
            validate_identifier(column, "quality.accepted_values column")
            if not isinstance(values, list) or not values or not all(
                isinstance(v, str | int | float | bool) for v in values
            ):
                raise ValueError(f"quality.accepted_values.{column}: a non-empty list of plain values is needed.")
        cleaned["accepted_values"] = accepted
    if "freshness" in value:
        fresh = value["freshness"]
        if not isinstance(fresh, dict) or set(fresh) - {"column", "max_age_hours"} or "column" not in fresh:
            raise ValueError("quality.freshness: {\"column\": ..., \"max_age_hours\": 24} is needed.")
        validate_identifier(fresh["column"], "quality.freshness column")
        hours = fresh.get("max_age_hours", 24)
        if isinstance(hours, bool) or not isinstance(hours, int | float) or hours <= 0:
            raise ValueError("quality.freshness.max_age_hours: a number of hours above 0 is needed.")
        cleaned["freshness"] = {"column": fresh["column"], "max_age_hours": hours}
    if "custom_sql" in value:
        checks = value["custom_sql"]
        checks = [checks] if isinstance(checks, str) else checks
        if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
            raise ValueError("quality.custom_sql: a list of SELECT statements is needed.")
        for check in checks:
            text = check.strip().rstrip(";")
            if not re.match(r"^(select|with)\b", text, re.IGNORECASE) or ";" in text:
                raise ValueError(f"quality.custom_sql: {check!r} must be one SELECT statement.")
            if not re.search(r"{{\s*staging\s*}}", text):
                raise ValueError(f"quality.custom_sql: {check!r} must read FROM {{{{ staging }}}}.")
            if any(name != "staging" for name in _VARIABLE.findall(text)):
                raise ValueError(f"quality.custom_sql: only {{{{ staging }}}} can be used in {check!r}.")
        cleaned["custom_sql"] = checks
    return cleaned


def clean_wait_for_source(value: Any) -> dict[str, int]:
    """The optional sensor: {"poke_seconds": 5..3600, "timeout_seconds": 60..86400}."""
    if not isinstance(value, dict):
        raise ValueError('wait_for_source: a mapping is needed, e.g. {"poke_seconds": 60, "timeout_seconds": 3600}.')
    unknown = sorted(set(value) - {"poke_seconds", "timeout_seconds"})
    if unknown:
        raise ValueError(f"wait_for_source: unknown setting {', '.join(unknown)}; use poke_seconds, timeout_seconds.")
    cleaned = {"poke_seconds": 60, "timeout_seconds": 3600}
    for key, low, high in (("poke_seconds", 5, 3600), ("timeout_seconds", 60, 86400)):
        if key in value:
            number = value[key]
            if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
                raise ValueError(f"wait_for_source: {key} must be a whole number of seconds from {low} to {high}.")
            cleaned[key] = number
    return cleaned


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
    source_query = (raw.get("source_query") or "").strip()
    if source_query and source_kind not in SQL_KINDS and source_kind is not None:
        errors["source_query"] = "Only SQL sources take a query; leave it empty for files and HTTP."
    elif source_query:
        check("source_query", lambda: clean_source_query(source_query))
    if source_kind == "files":
        check("source", lambda: clean_source_path(source))
    elif source_kind in SQL_KINDS and not source_query:
        check("source", lambda: validate_identifier(source, "source"))
    elif source_kind in SQL_KINDS and source:
        errors["source"] = "Give a table or a source_query, not both."

    file_options = {k: raw.get(k) for k in ("format", "csv_delimiter", "csv_header", "csv_encoding")
                    if raw.get(k) not in (None, "")}
    if file_options and source_kind not in ("files", None):
        errors[next(iter(file_options))] = "File options apply to files connections only."
    else:
        if "format" in file_options:
            if file_options["format"] not in FORMATS:
                errors["format"] = f"Choose one of {', '.join(FORMATS)} (or leave empty to use the file extension)."
            else:
                cleaned["format"] = file_options["format"]
        if "csv_delimiter" in file_options:
            delimiter = str(file_options["csv_delimiter"])
            delimiter = "\t" if delimiter in ("\\t", "tab") else delimiter
            if len(delimiter) != 1 or delimiter in "\r\n\"":
                errors["csv_delimiter"] = "Use a single character such as ',' ';' '|' or 'tab'."
            else:
                cleaned["csv_delimiter"] = delimiter
        if "csv_header" in file_options:
            if not isinstance(file_options["csv_header"], bool):
                errors["csv_header"] = "Use true (the first line names the columns) or false."
            else:
                cleaned["csv_header"] = file_options["csv_header"]
        if "csv_encoding" in file_options:
            try:
                cleaned["csv_encoding"] = codecs.lookup(str(file_options["csv_encoding"])).name
            except LookupError:
                errors["csv_encoding"] = "Unknown text encoding; use e.g. utf-8, latin-1 or cp1252."
    if "write_mode" in raw:
        errors["write_mode"] = "The write mode is a guardrail of the template, not an input."
    if raw.get("quality") not in (None, "", {}):
        check("quality", lambda: clean_quality(raw.get("quality")))
    if raw.get("wait_for_source") not in (None, "", {}):
        check("wait_for_source", lambda: clean_wait_for_source(raw.get("wait_for_source")))

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
    if source_kind in SQL_KINDS and source_query:
        cleaned.pop("source", None)
    if source_kind == "http":
        cleaned.pop("source", None)
    for optional in ("source_query", "quality", "wait_for_source"):
        if not cleaned.get(optional):
            cleaned.pop(optional, None)
    return cleaned
