"""Quality gates, run on the staging table before the target is touched.

Config: the template's `guardrails["quality"]` merged with the pipeline's `inputs["quality"]`:
  min_rows, max_rows            row count bounds (min_rows defaults to 1)
  min_rows_ratio_of_median      at least this fraction of the median row count of the last 7
                                partitions loaded in the target (skipped before the first load)
  (always)                      primary key not null and unique
  accepted_values               {column: [value, …]}: non-null values outside the list fail
  freshness                     {column, max_age_hours}: the newest value is at most that old
                                at the end of the data interval
  custom_sql                    ["SELECT … FROM {{ staging }} WHERE …", …]: must return no row
  max_rejected_fraction         (used by extract: the share of rows the quarantine may take)

Each failure raises PermanentError naming the check, the count and up to 5 offending keys.
Identifiers are validated and quoted; values are bound parameters.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pipelines.connectors.sql import Database
from pipelines.connectors.types import to_text
from pipelines.identifiers import quote_identifier
from pipelines.steps.base import PermanentError, StepContext

CHECK_KEYS = {"min_rows", "max_rows", "min_rows_ratio_of_median", "accepted_values", "freshness", "custom_sql"}
SAMPLE = 5
MEDIAN_OF = 7
_STAGING_VAR = re.compile(r"\{\{\s*staging\s*\}\}")
_ANY_VAR = re.compile(r"\{\{.*?\}\}")


def config_for(ctx: StepContext) -> dict[str, Any]:
    guardrails = (ctx.guardrails or {}).get("quality") or {}
    inputs = (ctx.inputs or {}).get("quality") or {}
    return {**guardrails, **inputs}


def _q(name: str, field: str = "column") -> str:
    try:
        return quote_identifier(name, field)
    except ValueError as exc:
        raise PermanentError(str(exc)) from None


def _label(row: Sequence) -> str:
    if len(row) == 1:
        return "NULL" if row[0] is None else repr(row[0])
    return "(" + ", ".join("NULL" if v is None else repr(v) for v in row) + ")"


def render_custom_sql(sql: str, staging: str) -> str:
    text = (sql or "").strip().rstrip(";").strip()
    if not re.match(r"^(select|with)\b", text, re.IGNORECASE) or ";" in text:
        raise PermanentError(f"quality.custom_sql: {sql!r} must be one SELECT statement.")
    rendered = _STAGING_VAR.sub(quote_identifier(staging, "table"), text)
    if _ANY_VAR.search(rendered):
        raise PermanentError(f"quality.custom_sql: only {{{{ staging }}}} can be used in {sql!r}.")
    return rendered


def run_checks(
    wh: Database,
    *,
    staging: str,
    target: str,
    partition_column: str,
    partitions: list[str],
    primary_key: list[str],
    config: dict[str, Any],
    interval_end: datetime,
    zone: ZoneInfo,
) -> dict[str, Any]:
    stg = _q(staging, "table")
    keys = ", ".join(_q(c) for c in primary_key)
    staged = wh.columns(staging)
    missing = [c for c in primary_key if c not in staged]
    if missing:
        raise PermanentError(
            f"primary_key: column(s) {', '.join(missing)} not in the source (it has {', '.join(staged)})."
        )
    checks: dict[str, Any] = {}

    def number(name: str, default: Any = None) -> Any:
        value = config.get(name, default)
        if value is None:
            return None
        try:
            return float(value) if name.endswith("ratio_of_median") else int(value)
        except (TypeError, ValueError):
            raise PermanentError(f"quality.{name}: a number is needed, not {value!r}.") from None

    # -- row counts
    rows = int(wh.scalar(f"SELECT COUNT(*) FROM {stg}"))
    checks["row_count"] = rows
    min_rows, max_rows = number("min_rows", 1), number("max_rows")
    if rows < min_rows:
        raise PermanentError(f"Quality check row_count failed: {rows} rows, at least {min_rows} required.")
    if max_rows is not None and rows > max_rows:
        raise PermanentError(f"Quality check row_count failed: {rows} rows, at most {max_rows} allowed.")
    ratio = number("min_rows_ratio_of_median")
    if ratio is not None and wh.table_exists(target):
        marks = ", ".join("?" for _ in partitions)
        part = _q(partition_column)
        counts = [n for _, n in wh.query(
            f"SELECT {part}, COUNT(*) FROM {_q(target, 'table')} WHERE {part} NOT IN ({marks}) "
            f"GROUP BY {part} ORDER BY {part} DESC LIMIT {MEDIAN_OF}", partitions)]
        if counts:
            median = statistics.median(counts)
            checks["median_rows"] = median
            if rows < ratio * median:
                raise PermanentError(
                    f"Quality check min_rows_ratio_of_median failed: {rows} rows, below {ratio:g} × {median:g} "
                    f"(the median of the last {len(counts)} loaded partitions)."
                )

    # -- key not null and unique
    any_null = " OR ".join(f"{_q(c)} IS NULL" for c in primary_key)
    nulls = wh.scalar(f"SELECT COUNT(*) FROM {stg} WHERE {any_null}")
    checks["null_keys"] = nulls
    if nulls:
        sample = wh.query(f"SELECT {keys} FROM {stg} WHERE {any_null} LIMIT {SAMPLE}")
        raise PermanentError(
            f"Quality check not_null_key failed: {nulls} rows with an empty {', '.join(primary_key)}; "
            f"sample: {', '.join(_label(r) for r in sample)}."
        )
    dup_groups = f"SELECT {keys}, COUNT(*) AS n FROM {stg} GROUP BY {keys} HAVING COUNT(*) > 1"
    duplicates = wh.scalar(f"SELECT COUNT(*) FROM ({dup_groups}) d")
    checks["duplicate_keys"] = duplicates
    if duplicates:
        sample = wh.query(f"{dup_groups} ORDER BY {keys} LIMIT {SAMPLE}")
        raise PermanentError(
            f"Quality check unique_key failed: {duplicates} keys of {', '.join(primary_key)} appear "
            f"more than once; sample: {', '.join(f'{_label(r[:-1])} x{r[-1]}' for r in sample)}."
        )

    # -- accepted values
    accepted = config.get("accepted_values") or {}
    if not isinstance(accepted, dict):
        raise PermanentError("quality.accepted_values: a mapping {column: [values]} is needed.")
    for column, values in accepted.items():
        if column not in staged:
            raise PermanentError(f"quality.accepted_values: staging has no column {column!r}.")
        if not isinstance(values, list) or not values:
            raise PermanentError(f"quality.accepted_values.{column}: a non-empty list of values is needed.")
        params = [to_text(v) for v in values]
        outside = f"{_q(column)} IS NOT NULL AND {_q(column)} NOT IN ({', '.join('?' for _ in params)})"
        bad = wh.scalar(f"SELECT COUNT(*) FROM {stg} WHERE {outside}", params)
        checks[f"accepted_values.{column}"] = bad
        if bad:
            sample = wh.query(f"SELECT {keys}, {_q(column)} FROM {stg} WHERE {outside} ORDER BY {keys} LIMIT {SAMPLE}",
                              params)
            raise PermanentError(
                f"Quality check accepted_values failed: {bad} rows with a {column} outside "
                f"{', '.join(map(str, values))}; sample: "
                f"{', '.join(f'{_label(r[:-1])} = {r[-1]!r}' for r in sample)}."
            )

    # -- freshness
    freshness = config.get("freshness")
    if freshness:
        if not isinstance(freshness, dict) or not freshness.get("column"):
            raise PermanentError("quality.freshness: {column, max_age_hours} is needed.")
        column = freshness["column"]
        if column not in staged:
            raise PermanentError(f"quality.freshness: staging has no column {column!r}.")
        try:
            max_age = float(freshness.get("max_age_hours", 24))
        except (TypeError, ValueError):
            raise PermanentError("quality.freshness.max_age_hours: a number is needed.") from None
        newest_raw = wh.scalar(f"SELECT MAX({_q(column)}) FROM {stg}")
        newest = _as_moment(newest_raw, zone)
        limit = interval_end - timedelta(hours=max_age)
        checks["freshness"] = str(newest_raw)
        if newest is None or newest < limit:
            age = "no value" if newest is None else f"{(interval_end - newest).total_seconds() / 3600:.1f} h old"
            raise PermanentError(
                f"Quality check freshness failed: the newest {column} is {newest_raw} ({age} at the end of the "
                f"interval), at most {max_age:g} h allowed; 0 rows are newer than {limit.astimezone(zone):%Y-%m-%d %H:%M}."
            )

    # -- custom SQL
    custom = config.get("custom_sql") or []
    if isinstance(custom, str):
        custom = [custom]
    for number_, sql in enumerate(custom, start=1):
        rendered = render_custom_sql(sql, staging)
        found = wh.scalar(f"SELECT COUNT(*) FROM ({rendered}) q")
        checks[f"custom_sql[{number_}]"] = found
        if found:
            sample = wh.query(f"SELECT * FROM ({rendered}) q LIMIT {SAMPLE}")
            raise PermanentError(
                f"Quality check custom_sql[{number_}] failed: {found} rows returned by {sql.strip()!r} (it must "
                f"return none); sample: {', '.join(_label(r) for r in sample)}."
            )
    return checks


def _as_moment(value: Any, zone: ZoneInfo) -> datetime | None:
    """A column value as an aware instant; naive values are wall time in the pipeline's zone."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise PermanentError(f"quality.freshness: {value!r} is not a date or timestamp.") from None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=zone)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=zone)
    raise PermanentError(f"quality.freshness: {value!r} is not a date or timestamp.")
