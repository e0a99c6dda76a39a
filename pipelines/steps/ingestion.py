"""Partitioned ingestion: extract → validate → load → publish.

Each step is a plain function of its StepContext and is idempotent: extract rebuilds the run's
staging table from scratch, validate only reads, load writes the target in one transaction
(and is a no-op once staging is gone), publish only counts.

extract, set-wise in the warehouse:
 1. the source streams (batches, bounded memory) as text into a TEMP raw table, each row with
    its partition; unparseable lines arrive flagged (`_railyard_error`) instead of failing;
 2. column types: the target's where it exists, else the source's (Parquet, SQL), else
    inferred from a sample of the raw rows; a new column outside dev is refused;
 3. rows whose values do not cast go to the quarantine table `_rejected_<pipeline>` (at most
    max_rejected_fraction of the rows, else the run fails: a type change fails here, before
    the target is touched);
 4. the rest is cast into the typed staging table (UNLOGGED on PostgreSQL), named for the run.

Write modes (guardrail `write_mode`): replace_partition (DELETE the partitions + INSERT…SELECT),
merge_by_key (upsert by primary key; unchanged rows are not rewritten where the dialect can
tell), append_dedupe (insert keys not present). The target's primary key is
(partition_column, *primary_key) for replace_partition, (*primary_key) for the two others,
since a key is unique across partitions there. merge_by_key is an upsert: a row deleted from
the source of a partition stays in the target (rows may move between partitions on late
updates, so the target's rows of a partition are not the source's); use replace_partition
when the target must mirror each partition's source exactly.

Lookback (guardrail `lookback`, int, default 0): extract also reads the previous N intervals
(each with its own template variables and partition value) and replace_partition replaces all
N+1 partitions; merge/append simply see the extra rows. Intervals of a day or more step back
in the pipeline's wall clock (so DST days stay days); shorter ones step back by their length.

Inputs (ctx.inputs): source_connection, source (file path, table; empty for http),
source_query (SQL sources instead of a table: {{ ds }}-style variables bound as parameters),
source_filter_column, format, csv_delimiter, csv_header, csv_encoding, primary_key,
partition_column, warehouse_connection, target_table, timezone (default "UTC"), quality.
"""

from __future__ import annotations

import re
import time as clock
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipelines import quality as quality_checks
from pipelines.connectors import (
    SQL_KINDS,
    Database,
    FileSource,
    HttpSource,
    Rejected,
    open_source_database,
    open_warehouse,
    render_path_template,
)
from pipelines.connectors.files import TEMPLATE_VAR_RE, Location
from pipelines.connectors.types import infer_type, to_text
from pipelines.identifiers import quote_identifier, validate_identifier
from pipelines.steps.base import ConnectionSpec, PermanentError, StepContext, StepResult

WRITE_MODES = ("replace_partition", "merge_by_key", "append_dedupe")
RAW_ERROR = "_railyard_error"
RAW_TEXT = "_railyard_raw"
RAW_SKIP = "_railyard_skip"  # PostgreSQL: where COPY puts a source's own partition column (replaced)
SAMPLE_ROWS = 1000  # rows sampled to infer the types of untyped (text) sources
FAILED_SAMPLE = 100  # rejected rows kept when the run fails anyway

# ---------------------------------------------------------------------------------------
# Inputs


def pipeline_zone(ctx: StepContext) -> ZoneInfo:
    name = ctx.inputs.get("timezone") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PermanentError(f"timezone: {name!r} is not a known IANA time zone (e.g. Europe/Paris).") from None


def _is_daily(ctx: StepContext) -> bool:
    return ctx.data_interval_end - ctx.data_interval_start >= timedelta(days=1)


def partition_value(ctx: StepContext) -> str:
    """`ds` for daily (or longer) intervals; for shorter ones the interval's local start as
    YYYY-MM-DDTHH:MM, so each hour of a day is its own partition."""
    if _is_daily(ctx):
        return ctx.ds
    return ctx.data_interval_start.astimezone(pipeline_zone(ctx)).strftime("%Y-%m-%dT%H:%M")


@dataclass
class Interval:
    start: datetime
    end: datetime
    partition: str
    variables: dict[str, str]


def intervals(ctx: StepContext) -> list[Interval]:
    """The run's interval and the `lookback` previous ones, oldest first."""
    try:
        lookback = int(ctx.guardrails.get("lookback", 0) or 0)
    except (TypeError, ValueError):
        raise PermanentError("lookback: a whole number of previous partitions (0 to 366) is needed.") from None
    if not 0 <= lookback <= 366:
        raise PermanentError("lookback: a whole number of previous partitions (0 to 366) is needed.")
    zone = pipeline_zone(ctx)
    length = ctx.data_interval_end - ctx.data_interval_start
    result = [Interval(ctx.data_interval_start, ctx.data_interval_end, partition_value(ctx), ctx.template_vars)]
    for k in range(1, lookback + 1):
        if _is_daily(ctx):
            local = ctx.data_interval_start.astimezone(zone).replace(tzinfo=None)
            start = (local - k * length).replace(tzinfo=zone).astimezone(UTC)
            end = (local - (k - 1) * length).replace(tzinfo=zone).astimezone(UTC)
            partition = start.astimezone(zone).date().isoformat()
        else:
            start, end = ctx.data_interval_start - k * length, ctx.data_interval_end - k * length
            partition = start.astimezone(zone).strftime("%Y-%m-%dT%H:%M")
        ds = start.astimezone(zone).date().isoformat()
        variables = {"ds": ds, "ds_nodash": ds.replace("-", ""), "ts": start.isoformat(),
                     "data_interval_start": start.isoformat(), "data_interval_end": end.isoformat()}
        result.append(Interval(start, end, partition, variables))
    return list(reversed(result))


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
    write_mode: str
    intervals: list[Interval]

    @property
    def partitions(self) -> list[str]:
        return [i.partition for i in self.intervals]

    @property
    def target_key(self) -> list[str]:
        if self.write_mode == "replace_partition":
            return [self.partition_column, *(c for c in self.primary_key if c != self.partition_column)]
        return list(self.primary_key)


def _plan(ctx: StepContext) -> _Plan:
    mode = (ctx.guardrails or {}).get("write_mode") or "replace_partition"
    if mode not in WRITE_MODES:
        raise PermanentError(f"write_mode: {mode!r} is not one of {', '.join(WRITE_MODES)}.")
    return _Plan(
        partition_column=_identifier(ctx, "partition_column"),
        primary_key=_primary_key(ctx),
        target_table=_identifier(ctx, "target_table"),
        staging_table=ctx.staging_table,
        partition=partition_value(ctx),
        write_mode=mode,
        intervals=intervals(ctx),
    )


def _warehouse(ctx: StepContext) -> Database:
    name = ctx.inputs.get("warehouse_connection")
    if not name:
        raise PermanentError("warehouse_connection: this input is required.")
    return open_warehouse(ctx.connection(name))


def _q(name: str) -> str:
    return quote_identifier(name, "column")


def _schema_changes_allowed(ctx: StepContext) -> bool:
    return ctx.environment == "dev" or bool((ctx.guardrails or {}).get("allow_schema_changes"))


def _new_columns_refused(plan: _Plan, new: list[str]) -> PermanentError:
    return PermanentError(
        f"Schema change: new column {', '.join(new)} in the source of {plan.target_table}. New columns are added "
        "automatically in dev only; promote a new version from dev or set allow_schema_changes in the "
        "guardrails to approve it. The target is unchanged."
    )


def rejected_table_name(pipeline: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"_rejected_{pipeline}")[:63]


def max_rejected_fraction(ctx: StepContext) -> float:
    config = quality_checks.config_for(ctx)
    default = 0.01 if ctx.environment == "dev" else 0.0
    try:
        return float(config.get("max_rejected_fraction", default))
    except (TypeError, ValueError):
        raise PermanentError("quality.max_rejected_fraction: a number between 0 and 1 is needed.") from None


# ---------------------------------------------------------------------------------------
# Sources: one open source per interval, each with columns, types (None: infer), rows()


def render_query(template: str, variables: dict[str, str]) -> tuple[str, list[str]]:
    """`{{ name }}` becomes a `?` placeholder and its value a bound parameter, in order."""
    if "?" in template or ";" in template.strip().rstrip(";"):
        raise PermanentError("source_query: use {{ ds }}-style variables, not '?', and a single statement.")
    params: list[str] = []
    unknown = sorted({n for n in TEMPLATE_VAR_RE.findall(template) if n not in variables})
    if unknown:
        raise PermanentError(f"source_query: unknown template variable(s) {', '.join(unknown)}; "
                             f"use {', '.join(sorted(variables))}.")

    def bind(match: re.Match) -> str:
        params.append(variables[match.group(1)])
        return "?"

    return TEMPLATE_VAR_RE.sub(bind, template.strip().rstrip(";")), params


def _local_naive(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


class _SqlSource:
    def __init__(self, ctx: StepContext, plan: _Plan, spec: ConnectionSpec, interval: Interval):
        zone = pipeline_zone(ctx)
        self.bytes_read = 0
        self.db = open_source_database(spec, timezone=zone.key)
        try:
            self._open(ctx, plan, spec, interval, zone)
        except BaseException:
            self.db.close()
            raise

    def _open(self, ctx: StepContext, plan: _Plan, spec: ConnectionSpec, interval: Interval, zone: ZoneInfo):
        src = self.db
        source = ctx.inputs.get("source")
        source_query = ctx.inputs.get("source_query")
        declared: dict[str, str] = {}
        if source_query:
            sql, params = render_query(str(source_query), interval.variables)
            ctx.log(f"extract: query of {spec.name} for partition {interval.partition}")
        else:
            try:
                table = quote_identifier(source, "source")
            except ValueError as exc:
                raise PermanentError(str(exc)) from None
            if not src.table_exists(source):
                raise PermanentError(f"source: table {source!r} does not exist in connection {spec.name!r}.")
            declared = src.column_types(source)
            filter_column = ctx.inputs.get("source_filter_column")
            if filter_column:
                try:
                    col = quote_identifier(filter_column, "source_filter_column")
                except ValueError as exc:
                    raise PermanentError(str(exc)) from None
                if filter_column not in declared:
                    raise PermanentError(f"source_filter_column: {source!r} has no column {filter_column!r}.")
                start, end = _local_naive(interval.start, zone), _local_naive(interval.end, zone)
                if src.dialect == "sqlite":
                    # SQLite keeps dates and times as text; datetime() normalises 'YYYY-MM-DD',
                    # 'YYYY-MM-DDTHH:MM:SS'... to 'YYYY-MM-DD HH:MM:SS' so the text comparison is right.
                    where = f"datetime({col}) >= ? AND datetime({col}) < ?"
                    params = [start.strftime("%Y-%m-%d %H:%M:%S"), end.strftime("%Y-%m-%d %H:%M:%S")]
                elif src.dialect == "postgres":
                    # Aware values; the session zone is the pipeline's, so timestamp and date
                    # columns compare in local wall time.
                    where = f"{col} >= ? AND {col} < ?"
                    params = [interval.start.astimezone(zone), interval.end.astimezone(zone)]
                else:  # MySQL, DuckDB: DATETIME/DATE columns hold local wall time
                    where = f"{col} >= ? AND {col} < ?"
                    params = [start, end]
                ctx.log(f"extract: rows of {source} with {start:%Y-%m-%d %H:%M} <= {filter_column} < "
                        f"{end:%Y-%m-%d %H:%M} ({zone.key})")
            else:
                if plan.partition_column not in declared:
                    raise PermanentError(
                        f"partition_column: source table {source!r} has no column {plan.partition_column!r}; "
                        "name a source_filter_column to select the partition by time instead."
                    )
                where = f"{_q(plan.partition_column)} = ?"
                params = [interval.partition]
                ctx.log(f"extract: rows of {source} with {plan.partition_column} = {interval.partition}")
            sql = f"SELECT * FROM {table} WHERE {where}"
        self.columns, self._batches = src.iter_batches(sql, params)
        self.types = {c: declared.get(c) or src.result_types.get(c) for c in self.columns}
        if src.dialect == "sqlite" and source_query:
            self.types = dict.fromkeys(self.columns)  # SQLite results are untyped: infer
        try:
            for name in self.columns:
                validate_identifier(name, f"source column of {source or 'source_query'}")
        except ValueError as exc:
            self.close()
            raise PermanentError(str(exc)) from None

    def rows(self) -> Iterator[tuple]:
        for batch in self._batches:
            yield from batch

    def close(self) -> None:
        try:
            self._batches.close()  # ends the source's read transaction before its connection closes
        finally:
            self.db.close()


def _open_source(ctx: StepContext, plan: _Plan, spec: ConnectionSpec, interval: Interval):
    if spec.kind == "files":
        source = ctx.inputs.get("source")
        if not source:
            raise PermanentError("source: enter a file path such as 'landing/{{ ds }}/sales.csv'.")
        relative = render_path_template(source, interval.variables)
        ctx.log(f"extract: reading {relative} from connection {spec.name}")
        header = ctx.inputs.get("csv_header", True)
        return FileSource(spec, relative, fmt=ctx.inputs.get("format") or None,
                          delimiter=ctx.inputs.get("csv_delimiter") or ",",
                          header=header not in (False, "false", "0", 0),
                          encoding=ctx.inputs.get("csv_encoding") or None)
    if spec.kind in SQL_KINDS:
        if not ctx.inputs.get("source") and not ctx.inputs.get("source_query"):
            raise PermanentError("source: name a table, or give a source_query.")
        return _SqlSource(ctx, plan, spec, interval)
    if spec.kind == "http":
        source = HttpSource(spec, interval.variables)
        ctx.log(f"extract: reading {source.where(source.url)} ({source.pages_read} page(s) so far)")
        return source
    raise PermanentError(
        f"source_connection: {spec.name!r} is of kind {spec.kind!r}; expected files, http or one of "
        f"{', '.join(SQL_KINDS)}."
    )


# ---------------------------------------------------------------------------------------
# extract


def _raw_rows(rows, width: int, index: int | None, partition: str, order: list[int] | None,
              flagged: list[int] | None = None):
    """Source rows as raw staging rows: text values, the partition, then error and raw text
    (rows flagged with an error are counted in flagged[0])."""
    for row in rows:
        if isinstance(row, Rejected):
            if flagged is not None:
                flagged[0] += 1
            values: list[Any] = [None] * width
            values[width - 1 if index is None else index] = partition
            values.extend((row.reason, row.raw))
            yield values
            continue
        if order is not None:
            row = [row[i] for i in order]
        values = [to_text(v) for v in row]
        if index is None:
            values.append(partition)
        else:
            values[index] = partition
        values.extend((None, None))
        yield values


UTF8_NAMES = (None, "", "utf-8", "utf8", "utf-8-sig", "utf_8", "utf_8_sig")


def _copy_csv(ctx: StepContext, wh: Database, plan: _Plan, raw: str, source: Any, interval: Interval) -> int | None:
    """PostgreSQL parses a plain CSV file itself (COPY, streamed): the number of rows read, or
    None when the rows are to be read in Python (another format or dialect, options COPY does
    not share, or a file COPY refuses, whose bad lines Python quarantines by line number)."""
    copy_csv = getattr(wh, "copy_csv", None)
    if not (copy_csv and isinstance(source, FileSource) and source.format == "csv" and len(source.paths) == 1
            and source.options["delimiter"] == "," and source.options["header"]
            and (source.options["encoding"] or "").lower() in UTF8_NAMES and len(source.columns) >= 2):
        return None
    partition = interval.partition.replace("'", "''")
    wh.execute(f"ALTER TABLE {quote_identifier(raw, 'table')} ALTER COLUMN {_q(plan.partition_column)} "
               f"SET DEFAULT '{partition}'")
    columns = [RAW_SKIP if c == plan.partition_column else c for c in source.columns]
    binary = source.location.open_binary(source.paths[0])
    try:
        copied = copy_csv(raw, columns, binary)
    except (OSError, TimeoutError) as exc:
        raise source.location.error(exc, source.location.display(source.paths[0])) from None
    finally:
        binary.close()
    if copied is None:
        ctx.log(f"extract: {source.location.display(source.paths[0])} read row by row")
    return copied


class _Quarantine:
    """SQL over the raw table: which rows fail, why, as what JSON."""

    def __init__(self, wh: Database, columns: list[str], types: dict[str, str], partition_column: str):
        self.checked = [(c, types[c]) for c in columns if c != partition_column and types[c] != "text"]
        self.bad = {c: f"({_q(c)} IS NOT NULL AND NOT {wh.castable_sql(_q(c), t)})" for c, t in self.checked}
        self.any_bad = " OR ".join([f"{_q(RAW_ERROR)} IS NOT NULL", *self.bad.values()])
        whens = "".join(
            f" WHEN {self.bad[c]} THEN 'column {c}: ' || substr({_q(c)}, 1, 60) || ' is not {_article(t)} {t}'"
            for c, t in self.checked
        )
        self.reason = f"CASE WHEN {_q(RAW_ERROR)} IS NOT NULL THEN {_q(RAW_ERROR)}{whens} END"
        self.raw_json = f"CASE WHEN {_q(RAW_ERROR)} IS NOT NULL THEN {_q(RAW_TEXT)} ELSE {wh.json_object_sql(columns)} END"


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def extract(ctx: StepContext) -> StepResult:
    started = clock.monotonic()
    plan = _plan(ctx)
    source_name = ctx.inputs.get("source_connection")
    if not source_name:
        raise PermanentError("source_connection: this input is required.")
    spec = ctx.connection(source_name)
    raw = f"_raw{plan.staging_table}"[:63]

    with _warehouse(ctx) as wh:
        # Start clean, on its own: a failed extract never leaves a stale staging table behind.
        wh.drop_table(plan.staging_table)
        columns: list[str] = []
        source_columns: list[str] = []
        source_types: dict[str, str | None] = {}
        rows_read = bytes_read = 0
        flagged = [0]  # rows the source could not parse
        with wh.transaction():
            for interval in plan.intervals:
                source = _open_source(ctx, plan, spec, interval)
                try:
                    order = None
                    if not columns:
                        source_columns = list(source.columns)
                        columns = [*source_columns]
                        if plan.partition_column not in columns:
                            columns.append(plan.partition_column)
                        source_types = dict(source.types)
                        extra = [RAW_SKIP] if hasattr(wh, "copy_csv") else []
                        wh.create_table(raw, [(c, "text") for c in (*columns, RAW_ERROR, RAW_TEXT, *extra)],
                                        temporary=True)
                    elif list(source.columns) != source_columns:
                        if sorted(source.columns) != sorted(source_columns):
                            raise PermanentError(
                                f"The source of partition {interval.partition} has columns "
                                f"{', '.join(source.columns)}; the first one read has {', '.join(source_columns)}."
                            )
                        order = [list(source.columns).index(c) for c in source_columns]
                    index = (source_columns.index(plan.partition_column)
                             if plan.partition_column in source_columns else None)
                    width = len(columns)
                    copied = _copy_csv(ctx, wh, plan, raw, source, interval)
                    if copied is not None:
                        rows_read += copied
                    else:
                        rows_read += wh.bulk_insert(
                            raw, [*columns, RAW_ERROR, RAW_TEXT],
                            _raw_rows(source.rows(), width, index, interval.partition, order, flagged),
                        )
                    bytes_read += getattr(source, "bytes_read", 0) or 0
                finally:
                    source.close()
        read_seconds = clock.monotonic() - started

        types = _decide_types(ctx, wh, plan, raw, columns, source_types)
        quarantine = _Quarantine(wh, columns, types, plan.partition_column)
        rejected_table = rejected_table_name(ctx.pipeline)
        stage_started = clock.monotonic()
        staged = None
        if not flagged[0]:
            staged = _stage_optimistically(ctx, wh, plan, raw, columns, types, quarantine, rejected_table)
        if staged is not None:
            rejected = 0
        else:
            rejected, staged = _check_and_stage(ctx, wh, plan, raw, columns, types, quarantine, rejected_table,
                                                rows_read)
    if rejected:
        ctx.log(f"extract: {rejected} of {rows_read} rows quarantined in {rejected_table}")
    ctx.log(f"extract: {staged} rows of partition {', '.join(plan.partitions)} staged in {plan.staging_table}")
    return StepResult(rows_read=rows_read, rows_written=staged, metrics={
        "partition": plan.partition,
        "partitions": plan.partitions,
        "rows_read": rows_read,
        "rows_staged": staged,
        "rows_rejected": rejected,
        "bytes_read": bytes_read,
        "column_types": types,
        "seconds": round(clock.monotonic() - started, 3),
        "seconds_read": round(read_seconds, 3),
        "seconds_stage": round(clock.monotonic() - stage_started, 3),
    })


def _insert_staging(wh: Database, plan: _Plan, source: str, columns: list[tuple[str, str]], casts: list[str],
                    where: str = "") -> int:
    """Create the staging table and fill it from `source` (SQL: a table or subquery)."""
    wh.create_table(plan.staging_table, list(columns), unlogged=True)
    names = ", ".join(_q(c) for c, _ in columns)
    return wh.execute(
        f"INSERT INTO {quote_identifier(plan.staging_table, 'table')} ({names}) SELECT {', '.join(casts)} "
        f"FROM {source}{where}"
    )


def _stage_optimistically(ctx: StepContext, wh: Database, plan: _Plan, raw: str, columns: list[str],
                          types: dict[str, str], quarantine: _Quarantine, rejected_table: str) -> int | None:
    """Cast every row in one pass, with casts that fail on any value castable_sql refuses;
    None (nothing changed) if one does: then the rows are checked and quarantined."""
    if wh.strict_cast_sql(_q(RAW_TEXT), "integer") is None:  # the dialect has no strict casts
        return None
    checked = [c for c, _ in quarantine.checked]
    # Each plain cast computed once, in a subquery (OFFSET 0 keeps it from being inlined).
    values = {c: _q(f"_railyard_v{i}") for i, c in enumerate(checked)}
    casts = [wh.strict_cast_sql(_q(c), types[c], values[c]) if c in values else wh.cast_sql(_q(c), types[c])
             for c in columns]
    if any(cast is None for cast in casts):
        return None
    precast = "".join(f", {wh.precast_sql(_q(c), types[c])} AS {values[c]}" for c in checked)
    source = f"(SELECT *{precast} FROM {quote_identifier(raw, 'table')} OFFSET 0) AS r"
    with wh.transaction():
        staged = wh.attempt(lambda: _insert_staging(wh, plan, source, [(c, types[c]) for c in columns], casts))
        if staged is None:
            ctx.log("extract: some values do not cast; checking each row")
            return None
        _record_rejects(ctx, wh, raw, rejected_table, quarantine, 0, limit=None)
        wh.drop_table(raw)
    wh.analyze(plan.staging_table)
    return staged


def _check_and_stage(ctx: StepContext, wh: Database, plan: _Plan, raw: str, columns: list[str],
                     types: dict[str, str], quarantine: _Quarantine, rejected_table: str,
                     rows_read: int) -> tuple[int, int]:
    """Test every value, quarantine the rows that do not cast, stage the rest: (rejected, staged)."""
    counts = wh.query(
        f"SELECT COUNT(*), SUM(CASE WHEN {quarantine.any_bad} THEN 1 ELSE 0 END)"
        + "".join(f", SUM(CASE WHEN {quarantine.bad[c]} THEN 1 ELSE 0 END)" for c, _ in quarantine.checked)
        + f" FROM {quote_identifier(raw, 'table')}"
    )[0]
    rejected = int(counts[1] or 0)
    per_column = {c: int(n or 0) for (c, _), n in zip(quarantine.checked, counts[2:], strict=True)}
    allowed = max_rejected_fraction(ctx)
    failing = rejected > allowed * rows_read
    with wh.transaction():
        _record_rejects(ctx, wh, raw, rejected_table, quarantine, rejected,
                        limit=FAILED_SAMPLE if failing else None)
        if failing:
            wh.drop_table(raw)
    if failing:
        raise _too_many_rejected(wh, plan, raw, quarantine, types, per_column, rejected, rows_read, allowed,
                                 rejected_table)

    with wh.transaction():
        staged = _insert_staging(wh, plan, quote_identifier(raw, "table"), [(c, types[c]) for c in columns],
                                 [wh.cast_sql(_q(c), types[c]) for c in columns],
                                 f" WHERE NOT ({quarantine.any_bad})")
        wh.drop_table(raw)
    wh.analyze(plan.staging_table)
    return rejected, staged


def _decide_types(ctx: StepContext, wh: Database, plan: _Plan, raw: str, columns: list[str],
                  source_types: dict[str, str | None]) -> dict[str, str]:
    target_types = wh.column_types(plan.target_table) if wh.table_exists(plan.target_table) else {}
    new = [c for c in columns if target_types and c not in target_types]
    if new and not _schema_changes_allowed(ctx):
        raise _new_columns_refused(plan, new)
    types: dict[str, str] = {}
    unknown: list[str] = []
    for column in columns:
        if column == plan.partition_column:
            types[column] = target_types.get(column, "text")
        elif column in target_types:
            types[column] = target_types[column]
        elif source_types.get(column):
            types[column] = str(source_types[column])
        else:
            unknown.append(column)
    if unknown:
        tolerance = max_rejected_fraction(ctx)
        sample = wh.query(
            f"SELECT {', '.join(_q(c) for c in unknown)} FROM {quote_identifier(raw, 'table')} "
            f"WHERE {_q(RAW_ERROR)} IS NULL LIMIT {SAMPLE_ROWS}"
        )
        for i, column in enumerate(unknown):
            types[column] = infer_type([row[i] for row in sample], tolerance)
    return types


def _record_rejects(ctx: StepContext, wh: Database, raw: str, table: str, quarantine: _Quarantine,
                    rejected: int, *, limit: int | None) -> None:
    """Replace this run's rows in the quarantine table (a re-run records them once); the table
    is made on the first rejected row."""
    if not wh.table_exists(table):
        if not rejected:
            return
        wh.create_table(table, [("run_id", "integer"), ("partition", "text"), ("raw_row", "text"),
                                ("reason", "text"), ("rejected_at", "timestamp")])
        wh.create_index(table, "run_id")
    target = quote_identifier(table, "table")
    wh.execute(f"DELETE FROM {target} WHERE run_id = ?", [ctx.run_id])
    if not rejected:
        return
    partition_column = _identifier(ctx, "partition_column")
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
    wh.execute(
        f'INSERT INTO {target} (run_id, "partition", raw_row, reason, rejected_at) '
        f"SELECT ?, {_q(partition_column)}, {quarantine.raw_json}, {quarantine.reason}, {wh.cast_sql('?', 'timestamp')} "
        f"FROM {quote_identifier(raw, 'table')} WHERE {quarantine.any_bad}"
        + (f" LIMIT {int(limit)}" if limit else ""),
        [ctx.run_id, now],
    )


def _too_many_rejected(wh, plan, raw, quarantine, types, per_column, rejected, rows_read, allowed, table):
    sample = wh.scalar(
        f'SELECT reason FROM {quote_identifier(table, "table")} ORDER BY reason LIMIT 1'
    )
    changed = [c for c, n in per_column.items() if n and n > allowed * rows_read]
    existing = wh.column_types(plan.target_table) if wh.table_exists(plan.target_table) else {}
    changed = [c for c in changed if c in existing]
    if changed:
        column = changed[0]
        return PermanentError(
            f"Type change: column {column} of {plan.target_table} is {types[column]}, but {per_column[column]} of "
            f"{rows_read} source values no longer cast to {types[column]} (e.g. {sample}). The target is unchanged; "
            "fix the source, or load into a new table or version."
        )
    return PermanentError(
        f"Quarantine: {rejected} of {rows_read} rows cannot be parsed or cast, above max_rejected_fraction "
        f"{allowed:g}; sample reason: {sample}. The target is unchanged; the rejected rows are in {table}."
    )


# ---------------------------------------------------------------------------------------
# validate


def validate(ctx: StepContext) -> StepResult:
    started = clock.monotonic()
    plan = _plan(ctx)
    with _warehouse(ctx) as wh:
        if not wh.table_exists(plan.staging_table):
            raise PermanentError(f"validate: staging table {plan.staging_table} is missing; run extract first.")
        checks = quality_checks.run_checks(
            wh,
            staging=plan.staging_table,
            target=plan.target_table,
            partition_column=plan.partition_column,
            partitions=plan.partitions,
            primary_key=plan.primary_key,
            config=quality_checks.config_for(ctx),
            interval_end=ctx.data_interval_end,
            zone=pipeline_zone(ctx),
        )
    ctx.log(f"validate: {checks['row_count']} rows; checks passed: {', '.join(checks)}")
    return StepResult(rows_read=checks["row_count"], metrics={
        "checks": checks, "partition": plan.partition, "seconds": round(clock.monotonic() - started, 3)})


# ---------------------------------------------------------------------------------------
# load


def _count_partitions(wh: Database, plan: _Plan) -> int:
    if not wh.table_exists(plan.target_table):
        return 0
    marks = ", ".join("?" for _ in plan.partitions)
    return wh.scalar(
        f"SELECT COUNT(*) FROM {quote_identifier(plan.target_table, 'table')} "
        f"WHERE {_q(plan.partition_column)} IN ({marks})",
        plan.partitions,
    )


def load_statements(wh: Database, plan: _Plan, columns: list[str]) -> list[tuple[str, str, list]]:
    """(label, SQL, params) that write staging into the target: set-based, one pass each."""
    target = quote_identifier(plan.target_table, "table")
    stg = quote_identifier(plan.staging_table, "table")
    names = ", ".join(_q(c) for c in columns)
    select = f"SELECT {names} FROM {stg}"
    if plan.write_mode == "replace_partition":
        marks = ", ".join("?" for _ in plan.partitions)
        return [
            ("deleted", f"DELETE FROM {target} WHERE {_q(plan.partition_column)} IN ({marks})", plan.partitions),
            ("inserted", f"INSERT INTO {target} ({names}) {select}", []),
        ]
    key = ", ".join(_q(c) for c in plan.target_key)
    rest = [c for c in columns if c not in plan.target_key]
    if wh.dialect == "duckdb":
        verb = "INSERT OR REPLACE" if plan.write_mode == "merge_by_key" and rest else "INSERT OR IGNORE"
        return [("upserted", f"{verb} INTO {target} ({names}) {select}", [])]
    where_true = " WHERE true" if wh.dialect == "sqlite" else ""  # SQLite's upsert-after-SELECT parse rule
    if plan.write_mode == "append_dedupe" or not rest:
        return [("inserted", f"INSERT INTO {target} ({names}) {select}{where_true} ON CONFLICT ({key}) DO NOTHING", [])]
    sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in rest)
    if wh.dialect == "postgres":
        # Unchanged rows are not rewritten (no dead tuple, no trigger, no WAL).
        mine = ", ".join(f"{target}.{_q(c)}" for c in rest)
        theirs = ", ".join(f"excluded.{_q(c)}" for c in rest)
        changed = f"({mine}) IS DISTINCT FROM ({theirs})" if len(rest) > 1 else f"{mine} IS DISTINCT FROM {theirs}"
    else:
        changed = " OR ".join(f"{target}.{_q(c)} IS NOT excluded.{_q(c)}" for c in rest)
    return [("upserted", f"INSERT INTO {target} ({names}) {select}{where_true} ON CONFLICT ({key}) "
                         f"DO UPDATE SET {sets} WHERE {changed}", [])]


def load(ctx: StepContext) -> StepResult:
    started = clock.monotonic()
    plan = _plan(ctx)
    with _warehouse(ctx) as wh:
        with wh.transaction():
            if not wh.table_exists(plan.staging_table):
                # Loaded already (staging is dropped with the load): nothing to do.
                rows = _count_partitions(wh, plan)
                ctx.log(f"load: no staging table; partition {plan.partition} holds {rows} rows already")
                return StepResult(rows_written=rows, metrics={"rows_deleted": 0, "noop": True})
            staged_types = wh.column_types(plan.staging_table)
            columns = list(staged_types)
            staged = wh.scalar(f"SELECT COUNT(*) FROM {quote_identifier(plan.staging_table, 'table')}")
            if not wh.table_exists(plan.target_table):
                wh.create_table(plan.target_table, list(staged_types.items()), primary_key=plan.target_key)
                if wh.dialect != "postgres" or plan.target_key[0] != plan.partition_column:
                    # On PostgreSQL, replace_partition's key (partition_column, ...) serves as the index.
                    wh.create_index(plan.target_table, plan.partition_column)
                ctx.log(f"load: created {plan.target_table} ({', '.join(f'{c} {t}' for c, t in staged_types.items())})")
            else:
                _evolve_target(ctx, wh, plan, staged_types)
            counts: dict[str, int] = {}
            for label, sql, params in load_statements(wh, plan, columns):
                counts[label] = wh.execute(sql, params)
            # Dropped in the same transaction: either the target is written and staging is
            # gone, or nothing changed and a retry loads again.
            wh.drop_table(plan.staging_table)
    written = counts.get("inserted", counts.get("upserted", 0))
    if written < 0:  # a driver that does not count
        written = staged
    metrics: dict[str, Any] = {"rows_deleted": counts.get("deleted", 0), "write_mode": plan.write_mode,
                               "rows_staged": staged, "seconds": round(clock.monotonic() - started, 3)}
    if plan.write_mode != "replace_partition":
        metrics["rows_unchanged"] = max(staged - written, 0)
    ctx.log(f"load: {plan.write_mode} into {plan.target_table}, partition {plan.partition}: "
            f"{counts.get('deleted', 0)} rows deleted, {written} written")
    return StepResult(rows_written=written, metrics=metrics)


def _evolve_target(ctx: StepContext, wh: Database, plan: _Plan, staged_types: dict[str, str]) -> None:
    target_types = wh.column_types(plan.target_table)
    new = [c for c in staged_types if c not in target_types]
    if new and not _schema_changes_allowed(ctx):
        raise _new_columns_refused(plan, new)
    changed = [c for c, t in staged_types.items() if c in target_types and target_types[c] != t]
    if changed:
        c = changed[0]
        raise PermanentError(f"Type change: column {c} of {plan.target_table} is {target_types[c]}, staging has "
                             f"{staged_types[c]}. The target is unchanged; re-run extract.")
    if plan.write_mode != "replace_partition":
        key = wh.primary_key(plan.target_table)
        if sorted(key) != sorted(plan.target_key):
            raise PermanentError(
                f"write_mode {plan.write_mode} needs {plan.target_table} keyed by ({', '.join(plan.target_key)}); it is "
                f"keyed by ({', '.join(key)}). Load into a new table to change the write mode."
            )
    for column in new:
        wh.add_column(plan.target_table, column, staged_types[column])
        ctx.log(f"load: added column {column} ({staged_types[column]}) to {plan.target_table}")


# ---------------------------------------------------------------------------------------
# publish


def publish(ctx: StepContext) -> StepResult:
    plan = _plan(ctx)
    with _warehouse(ctx) as wh:
        # This try's staging and any left by earlier (stale or failed) tries of extract.
        for try_number in range(0, ctx.staging_try + 1):
            wh.drop_table(ctx.staging_table_of_try(try_number))
        if not wh.table_exists(plan.target_table):
            raise PermanentError(f"publish: target table {plan.target_table} does not exist; run load first.")
        rows = _count_partitions(wh, plan)
    ctx.log(f"publish: partition {plan.partition} of {plan.target_table} has {rows} rows")
    return StepResult(rows_written=rows, metrics={"partition": plan.partition, "target_rows": rows})


# ---------------------------------------------------------------------------------------
# the run page


def rejected_rows(spec: ConnectionSpec, pipeline: str, run_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """The quarantined rows of one run (newest partition first), for the run page."""
    table = rejected_table_name(pipeline)
    with open_warehouse(spec) as wh:
        if not wh.table_exists(table):
            return []
        rows = wh.query(
            f'SELECT "partition", raw_row, reason, rejected_at FROM {quote_identifier(table, "table")} '
            f'WHERE run_id = ? ORDER BY "partition" DESC, reason LIMIT {max(1, min(int(limit), 1000))}',
            [run_id],
        )
    return [{"partition": p, "raw_row": r, "reason": why, "rejected_at": str(at)} for p, r, why, at in rows]


# ---------------------------------------------------------------------------------------
# sensing (wait_for_source)


def source_partition_available(ctx: StepContext) -> tuple[bool, str]:
    """Whether the run's source partition is there, read the way extract reads it: the file
    (or a file matching the glob, local or remote) for files; at least one row otherwise.
    Returns (available, what was looked for)."""
    spec = ctx.connection(ctx.inputs["source_connection"])
    interval = intervals(ctx)[-1]
    if spec.kind == "files":
        relative = render_path_template(ctx.inputs.get("source") or "", interval.variables)
        location = Location(spec)
        try:
            paths = location.expand(relative)
        except PermanentError as exc:
            if "No source file matches" in str(exc):
                return False, f"file {relative} in connection '{spec.name}'"
            raise
        return all(location.fs.exists(path) for path in paths), f"file {relative} in connection '{spec.name}'"
    source = _open_source(ctx, _plan(ctx), spec, interval)
    try:
        first = next(iter(source.rows()), None)
    finally:
        source.close()
    return first is not None, f"rows of partition {interval.partition} in connection '{spec.name}'"
