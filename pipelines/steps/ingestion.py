"""Partitioned ingestion: extract → validate → load → publish.

Each step is a plain function of its StepContext and is idempotent: extract rebuilds the run's
staging table from scratch, validate only reads, load replaces exactly one partition of the
target in one transaction (and is a no-op once staging is gone), publish only counts.

Inputs (ctx.inputs): source_connection, source, source_filter_column (SQL sources, optional),
primary_key, partition_column, warehouse_connection, target_table, timezone (default "UTC").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipelines.connectors import (
    CsvFile,
    Database,
    open_source_database,
    open_warehouse,
    render_path_template,
    resolve_source_file,
)
from pipelines.identifiers import quote_identifier, validate_identifier
from pipelines.steps.base import PermanentError, StepContext, StepResult

# ---------------------------------------------------------------------------------------
# Inputs


def pipeline_zone(ctx: StepContext) -> ZoneInfo:
    name = ctx.inputs.get("timezone") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PermanentError(f"timezone: {name!r} is not a known IANA time zone (e.g. Europe/Paris).") from None


def partition_value(ctx: StepContext) -> str:
    """`ds` for daily (or longer) intervals; for shorter ones the interval's local start as
    YYYY-MM-DDTHH:MM, so each hour of a day is its own partition."""
    if ctx.data_interval_end - ctx.data_interval_start >= timedelta(days=1):
        return ctx.ds
    return ctx.data_interval_start.astimezone(pipeline_zone(ctx)).strftime("%Y-%m-%dT%H:%M")


def _identifier(ctx: StepContext, field: str) -> str:
    value = ctx.inputs.get(field)
    if value in (None, ""):
        raise PermanentError(f"{field}: this input is required.")
    try:
        return validate_identifier(value, field)
    except ValueError as exc:
        raise PermanentError(str(exc)) from None


def _primary_key(ctx: StepContext) -> list[str]:
    value = ctx.inputs.get("primary_key")
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not value:
        raise PermanentError("primary_key: list at least one column that identifies a row.")
    try:
        return [validate_identifier(col, "primary_key") for col in value]
    except ValueError as exc:
        raise PermanentError(str(exc)) from None


@dataclass
class _Plan:
    partition_column: str
    primary_key: list[str]
    target_table: str
    staging_table: str
    partition: str


def _plan(ctx: StepContext) -> _Plan:
    return _Plan(
        partition_column=_identifier(ctx, "partition_column"),
        primary_key=_primary_key(ctx),
        target_table=_identifier(ctx, "target_table"),
        staging_table=ctx.staging_table,
        partition=partition_value(ctx),
    )


def _warehouse(ctx: StepContext) -> Database:
    name = ctx.inputs.get("warehouse_connection")
    if not name:
        raise PermanentError("warehouse_connection: this input is required.")
    return open_warehouse(ctx.connection(name))


def _q(name: str) -> str:
    return quote_identifier(name, "column")


# ---------------------------------------------------------------------------------------
# extract


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _staging_columns(source_columns: list[str], partition_column: str) -> tuple[list[str], int | None]:
    """Staging columns and the index of the partition column in the source (None: appended)."""
    if partition_column in source_columns:
        return list(source_columns), source_columns.index(partition_column)
    return [*source_columns, partition_column], None


def _with_partition(rows, index: int | None, partition: str):
    for row in rows:
        row = [_as_text(v) for v in row]
        if index is None:
            row.append(partition)
        else:
            row[index] = partition
        yield row


def extract(ctx: StepContext) -> StepResult:
    plan = _plan(ctx)
    source_name = ctx.inputs.get("source_connection")
    source = ctx.inputs.get("source")
    if not source_name or not source:
        raise PermanentError("source_connection and source: both inputs are required.")
    spec = ctx.connection(source_name)

    with _warehouse(ctx) as wh:
        # Start clean, on its own: a failed extract never leaves a stale staging table behind.
        wh.drop_table(plan.staging_table)
        if spec.kind == "files":
            rows_read = _extract_file(ctx, plan, spec, source, wh)
        elif spec.kind in ("sqlite", "postgres"):
            rows_read = _extract_sql(ctx, plan, spec, source, wh)
        else:
            raise PermanentError(
                f"source_connection: {spec.name!r} is of kind {spec.kind!r}; expected files, sqlite or postgres."
            )
    ctx.log(f"extract: {rows_read} rows of partition {plan.partition} staged in {plan.staging_table}")
    return StepResult(rows_read=rows_read, rows_written=rows_read, metrics={"partition": plan.partition})


def _extract_file(ctx: StepContext, plan: _Plan, spec, source: str, wh: Database) -> int:
    relative = render_path_template(source, ctx.template_vars)
    path = resolve_source_file(spec, relative)
    ctx.log(f"extract: reading {relative} from connection {spec.name}")
    delimiter = ctx.inputs.get("csv_delimiter") or ","
    with CsvFile(path, relative, delimiter=delimiter) as csv_file:
        columns, index = _staging_columns(csv_file.columns, plan.partition_column)
        with wh.transaction():
            wh.create_text_table(plan.staging_table, columns)
            return wh.bulk_insert(plan.staging_table, columns, _with_partition(csv_file.rows(), index, plan.partition))


def _local_naive(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _extract_sql(ctx: StepContext, plan: _Plan, spec, source: str, wh: Database) -> int:
    try:
        table = quote_identifier(source, "source")
    except ValueError as exc:
        raise PermanentError(str(exc)) from None
    zone = pipeline_zone(ctx)
    filter_column = ctx.inputs.get("source_filter_column")
    with open_source_database(spec, timezone=zone.key) as src:
        if not src.table_exists(source):
            raise PermanentError(f"source: table {source!r} does not exist in connection {spec.name!r}.")
        source_columns = src.columns(source)
        if filter_column:
            try:
                col = quote_identifier(filter_column, "source_filter_column")
            except ValueError as exc:
                raise PermanentError(str(exc)) from None
            if filter_column not in source_columns:
                raise PermanentError(f"source_filter_column: {source!r} has no column {filter_column!r}.")
            start = _local_naive(ctx.data_interval_start, zone)
            end = _local_naive(ctx.data_interval_end, zone)
            if src.dialect == "sqlite":
                # SQLite keeps dates and times as text; datetime() normalises 'YYYY-MM-DD',
                # 'YYYY-MM-DDTHH:MM:SS'... to 'YYYY-MM-DD HH:MM:SS' so the text comparison is right.
                where = f"datetime({col}) >= ? AND datetime({col}) < ?"
                params: list[Any] = [start.strftime("%Y-%m-%d %H:%M:%S"), end.strftime("%Y-%m-%d %H:%M:%S")]
            else:
                # Aware values; the session zone is the pipeline's, so timestamp and date
                # columns compare in local wall time.
                where = f"{col} >= ? AND {col} < ?"
                params = [ctx.data_interval_start.astimezone(zone), ctx.data_interval_end.astimezone(zone)]
            ctx.log(f"extract: rows of {source} with {start:%Y-%m-%d %H:%M} <= {filter_column} < {end:%Y-%m-%d %H:%M} ({zone.key})")
        else:
            if plan.partition_column not in source_columns:
                raise PermanentError(
                    f"partition_column: source table {source!r} has no column {plan.partition_column!r}; "
                    "name a source_filter_column to select the partition by time instead."
                )
            where = f"{_q(plan.partition_column)} = ?"
            params = [plan.partition]
            ctx.log(f"extract: rows of {source} with {plan.partition_column} = {plan.partition}")
        names, batches = src.iter_batches(f"SELECT * FROM {table} WHERE {where}", params)
        try:
            for name in names:
                validate_identifier(name, f"source column of {source}")
        except ValueError as exc:
            raise PermanentError(str(exc)) from None
        columns, index = _staging_columns(names, plan.partition_column)

        def rows():
            for batch in batches:
                yield from batch

        try:
            with wh.transaction():
                wh.create_text_table(plan.staging_table, columns)
                return wh.bulk_insert(plan.staging_table, columns, _with_partition(rows(), index, plan.partition))
        finally:
            batches.close()  # ends the source's read transaction before its connection closes


# ---------------------------------------------------------------------------------------
# validate


def _key_label(row: tuple) -> str:
    return "(" + ", ".join("NULL" if v is None else repr(v) for v in row) + ")" if len(row) > 1 else repr(row[0])


def validate(ctx: StepContext) -> StepResult:
    plan = _plan(ctx)
    quality = (ctx.guardrails or {}).get("quality", {}) or {}
    min_rows = int(quality.get("min_rows", 1))
    max_rows = quality.get("max_rows")
    with _warehouse(ctx) as wh:
        if not wh.table_exists(plan.staging_table):
            raise PermanentError(f"validate: staging table {plan.staging_table} is missing; run extract first.")
        staged = wh.columns(plan.staging_table)
        missing = [c for c in plan.primary_key if c not in staged]
        if missing:
            raise PermanentError(
                f"primary_key: column(s) {', '.join(missing)} not in the source (it has {', '.join(staged)})."
            )
        stg = quote_identifier(plan.staging_table, "table")
        keys = ", ".join(_q(c) for c in plan.primary_key)
        checks: dict[str, Any] = {}

        rows = wh.scalar(f"SELECT COUNT(*) FROM {stg}")
        checks["row_count"] = rows
        if rows < min_rows:
            raise PermanentError(f"Quality check row_count failed: {rows} rows, at least {min_rows} required.")
        if max_rows is not None and rows > int(max_rows):
            raise PermanentError(f"Quality check row_count failed: {rows} rows, at most {max_rows} allowed.")

        any_null = " OR ".join(f"{_q(c)} IS NULL" for c in plan.primary_key)
        nulls = wh.scalar(f"SELECT COUNT(*) FROM {stg} WHERE {any_null}")
        checks["null_keys"] = nulls
        if nulls:
            sample = wh.query(f"SELECT {keys} FROM {stg} WHERE {any_null} LIMIT 5")
            raise PermanentError(
                f"Quality check not_null_key failed: {nulls} rows with an empty {', '.join(plan.primary_key)}; "
                f"sample: {', '.join(_key_label(r) for r in sample)}."
            )

        dup_groups = f"SELECT {keys}, COUNT(*) AS n FROM {stg} GROUP BY {keys} HAVING COUNT(*) > 1"
        duplicates = wh.scalar(f"SELECT COUNT(*) FROM ({dup_groups}) d")
        checks["duplicate_keys"] = duplicates
        if duplicates:
            sample = wh.query(f"{dup_groups} ORDER BY {keys} LIMIT 5")
            raise PermanentError(
                f"Quality check unique_key failed: {duplicates} keys of {', '.join(plan.primary_key)} appear "
                f"more than once; sample: {', '.join(f'{_key_label(r[:-1])} x{r[-1]}' for r in sample)}."
            )
    ctx.log(f"validate: {rows} rows, keys not null and unique")
    return StepResult(rows_read=rows, metrics={"checks": checks, "partition": plan.partition})


# ---------------------------------------------------------------------------------------
# load


def _count_partition(wh: Database, plan: _Plan) -> int:
    if not wh.table_exists(plan.target_table):
        return 0
    return wh.scalar(
        f"SELECT COUNT(*) FROM {quote_identifier(plan.target_table, 'table')} WHERE {_q(plan.partition_column)} = ?",
        [plan.partition],
    )


def load(ctx: StepContext) -> StepResult:
    plan = _plan(ctx)
    target = quote_identifier(plan.target_table, "table")
    stg = quote_identifier(plan.staging_table, "table")
    with _warehouse(ctx) as wh:
        with wh.transaction():
            if not wh.table_exists(plan.staging_table):
                # Loaded already (staging is dropped with the load): nothing to do.
                rows = _count_partition(wh, plan)
                ctx.log(f"load: no staging table; partition {plan.partition} holds {rows} rows already")
                return StepResult(rows_written=rows, metrics={"rows_deleted": 0, "noop": True})
            columns = wh.columns(plan.staging_table)
            if not wh.table_exists(plan.target_table):
                key = [plan.partition_column, *(c for c in plan.primary_key if c != plan.partition_column)]
                wh.create_text_table(plan.target_table, columns, primary_key=key)
                ctx.log(f"load: created {plan.target_table}")
            else:
                existing = set(wh.columns(plan.target_table))
                for column in columns:
                    if column not in existing:
                        wh.add_text_column(plan.target_table, column)
                        ctx.log(f"load: added column {column} to {plan.target_table}")
            deleted = wh.execute(f"DELETE FROM {target} WHERE {_q(plan.partition_column)} = ?", [plan.partition])
            names = ", ".join(_q(c) for c in columns)
            inserted = wh.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM {stg}")
            # Dropped in the same transaction: either the partition is replaced and staging is
            # gone, or nothing changed and a retry loads again.
            wh.drop_table(plan.staging_table)
    ctx.log(f"load: partition {plan.partition} of {plan.target_table}: {deleted} rows replaced by {inserted}")
    return StepResult(rows_written=inserted, metrics={"rows_deleted": deleted})


# ---------------------------------------------------------------------------------------
# publish


def publish(ctx: StepContext) -> StepResult:
    plan = _plan(ctx)
    with _warehouse(ctx) as wh:
        wh.drop_table(plan.staging_table)
        if not wh.table_exists(plan.target_table):
            raise PermanentError(f"publish: target table {plan.target_table} does not exist; run load first.")
        rows = _count_partition(wh, plan)
    ctx.log(f"publish: partition {plan.partition} of {plan.target_table} has {rows} rows")
    return StepResult(rows_written=rows, metrics={"partition": plan.partition, "target_rows": rows})
