"""SQL databases behind one small interface, one class per dialect.

Callers write SQL with `?` placeholders and quoted identifiers (pipelines.identifiers); the
dialect class translates placeholders, opens transactions, streams rows and moves bulk data
(executemany on SQLite, COPY on PostgreSQL, Arrow batches on DuckDB). Tables are created with
logical column types (pipelines.connectors.types): `castable_sql`/`cast_sql` test and cast
staged text set-wise in each dialect; on PostgreSQL `strict_cast_sql` casts in one pass,
failing (inside `attempt`'s savepoint) on any value castable_sql refuses, and `copy_csv` lets
COPY parse a plain CSV file. MySQL/MariaDB is a source only. Driver errors leave as TransientError (worth a
retry: lock, lost connection) or PermanentError (bad table, bad SQL); no message ever holds
the connection's secret.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from pipelines.connectors import types as logical
from pipelines.identifiers import quote_identifier
from pipelines.steps.base import ConnectionSpec, PermanentError, TransientError

BATCH_SIZE = 5000
T = TypeVar("T")


def batched(rows: Iterable[Any], size: int = BATCH_SIZE) -> Iterator[list[Any]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def resolve_path(value: str) -> Path:
    """An absolute path as is; a relative one under settings.RAILYARD_DATA_DIR, else the cwd."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    try:
        from django.conf import settings

        if settings.configured:
            return Path(settings.RAILYARD_DATA_DIR) / path
    except Exception:  # Django missing or settings broken: fall back to the cwd.
        pass
    return Path.cwd() / path


class Database:
    """A connection to one database. Use as a context manager; it closes on exit."""

    dialect = ""

    def __init__(self, spec: ConnectionSpec):
        self.spec = spec

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[None]:
        raise NotImplementedError

    # -- statements -----------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed (-1 when unknown)."""
        raise NotImplementedError

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def iter_batches(
        self, sql: str, params: Sequence[Any] = (), size: int = BATCH_SIZE
    ) -> tuple[list[str], Iterator[list[tuple]]]:
        """Column names of a SELECT and an iterator of row batches, streamed (never all in memory)."""
        raise NotImplementedError

    def bulk_insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        raise NotImplementedError

    # -- schema ---------------------------------------------------------------------------
    def table_exists(self, table: str) -> bool:
        raise NotImplementedError

    def columns(self, table: str) -> list[str]:
        raise NotImplementedError

    def drop_table(self, table: str) -> None:
        self.execute(f"DROP TABLE IF EXISTS {quote_identifier(table, 'table')}")

    def create_text_table(self, table: str, columns: Sequence[str], primary_key: Sequence[str] = ()) -> None:
        cols = [f"{quote_identifier(c, 'column')} TEXT" for c in columns]
        if primary_key:
            # A primary key column must never be NULL; SQLite does not imply it.
            pk = set(primary_key)
            cols = [
                f"{quote_identifier(c, 'column')} TEXT NOT NULL" if c in pk else col
                for c, col in zip(columns, cols, strict=True)
            ]
            cols.append("PRIMARY KEY (" + ", ".join(quote_identifier(c, "column") for c in primary_key) + ")")
        self.execute(f"CREATE TABLE {quote_identifier(table, 'table')} ({', '.join(cols)})")

    def add_text_column(self, table: str, column: str) -> None:
        self.execute(
            f"ALTER TABLE {quote_identifier(table, 'table')} ADD COLUMN {quote_identifier(column, 'column')} TEXT"
        )

    # -- logical types --------------------------------------------------------------------
    SQL_TYPES: dict[str, str] = {
        "integer": "BIGINT", "double": "DOUBLE PRECISION", "boolean": "BOOLEAN",
        "date": "DATE", "timestamp": "TIMESTAMP", "text": "TEXT",
    }
    #: the types of the last iter_batches result, where the driver tells them (else None)
    result_types: dict[str, str | None] = {}

    def sql_type(self, kind: str) -> str:
        return self.SQL_TYPES[kind]

    @staticmethod
    def logical_type(declared: str | None) -> str:
        """The logical type of a declared column type (any dialect)."""
        d = (declared or "").upper()
        if "INTERVAL" in d or "POINT" in d:
            return "text"
        if "TIMESTAMP" in d or "DATETIME" in d:
            return "timestamp"
        if "DATE" in d:
            return "date"
        if "BOOL" in d:
            return "boolean"
        if "INT" in d:
            return "integer"
        if any(word in d for word in ("REAL", "DOUB", "FLOAT", "NUMERIC", "DECIMAL")):
            return "double"
        return "text"

    # The SQL function naming the current schema, for information_schema look-ups.
    current_schema_sql = "current_schema()"

    def column_types(self, table: str) -> dict[str, str]:
        """Column → logical type, from information_schema (SQLite overrides with its pragma)."""
        rows = self.query(
            "SELECT column_name, data_type FROM information_schema.columns"
            f" WHERE table_schema = {self.current_schema_sql} AND table_name = ? ORDER BY ordinal_position",
            [table],
        )
        return {name: self.logical_type(declared) for name, declared in rows}

    def castable_sql(self, expr: str, kind: str) -> str:
        """A SQL condition: the text `expr` (not NULL) casts to `kind`."""
        raise NotImplementedError

    def cast_sql(self, expr: str, kind: str) -> str:
        return expr if kind == "text" else f"CAST({expr} AS {self.sql_type(kind)})"

    def strict_cast_sql(self, expr: str, kind: str, value: str | None = None) -> str | None:
        """A cast that raises a data error for every non-NULL value castable_sql refuses (so one
        pass, in `attempt`, can replace check + cast); None where the dialect has none. `value`:
        a column holding CAST(expr AS type) (see precast_sql), computed once by the caller."""
        return None

    def precast_sql(self, expr: str, kind: str) -> str:
        """The plain cast strict_cast_sql takes as `value` (it may fail: then so would the value)."""
        return f"CAST({expr} AS {self.sql_type(kind)})"

    def attempt(self, work: Callable[[], T]) -> T | None:
        """work() in a savepoint; None, rolled back, if the database refused the data (a value
        that does not cast, a malformed COPY line). Only where strict_cast_sql exists."""
        raise NotImplementedError

    # How this dialect merges two JSON objects, and turns a JSON value into text.
    json_merge_function = "json_patch"

    def json_text_sql(self, expr: str) -> str:
        return expr

    def json_object_sql(self, columns: Sequence[str]) -> str:
        """A SQL expression: the JSON text of these columns of the current row (json_object
        takes at most so many arguments, so wide rows are built in chunks and merged)."""
        chunks = [columns[i : i + 40] for i in range(0, len(columns), 40)] or [[]]
        parts = [
            "json_object(" + ", ".join(f"'{c}', {quote_identifier(c, 'column')}" for c in chunk) + ")"
            for chunk in chunks
        ]
        expr = parts[0]
        for part in parts[1:]:
            expr = f"{self.json_merge_function}({expr}, {part})"
        return self.json_text_sql(expr)

    def create_table(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        primary_key: Sequence[str] = (),
        *,
        temporary: bool = False,
        unlogged: bool = False,
    ) -> None:
        """A table of (name, logical type) columns; primary-key columns are NOT NULL."""
        pk = set(primary_key)
        cols = [
            f"{quote_identifier(c, 'column')} {self.sql_type(kind)}" + (" NOT NULL" if c in pk else "")
            for c, kind in columns
        ]
        if primary_key:
            cols.append("PRIMARY KEY (" + ", ".join(quote_identifier(c, "column") for c in primary_key) + ")")
        prefix = "CREATE TEMP TABLE" if temporary else self._create_unlogged if unlogged else "CREATE TABLE"
        self.execute(f"{prefix} {quote_identifier(table, 'table')} ({', '.join(cols)})")

    _create_unlogged = "CREATE TABLE"

    def add_column(self, table: str, column: str, kind: str) -> None:
        self.execute(
            f"ALTER TABLE {quote_identifier(table, 'table')} ADD COLUMN {quote_identifier(column, 'column')} "
            f"{self.sql_type(kind)}"
        )

    def create_index(self, table: str, column: str) -> None:
        name = f"{table[:48]}_{column[:10]}_idx"
        self.execute(
            f"CREATE INDEX IF NOT EXISTS {quote_identifier(name, 'index')} ON {quote_identifier(table, 'table')}"
            f" ({quote_identifier(column, 'column')})"
        )

    def primary_key(self, table: str) -> list[str]:
        raise NotImplementedError

    def analyze(self, table: str) -> None:
        """Refresh planner statistics (PostgreSQL); a no-op elsewhere."""

    def describe(self) -> str:
        """Where this database is, for messages (never the secret)."""
        raise NotImplementedError


class _EmbeddedTransactions:
    """Transactions of the embedded databases (SQLite, DuckDB): explicit BEGIN/COMMIT on one
    connection, nested blocks joining the outer one."""

    _depth: int

    def begin_statement(self) -> str:
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:  # nested: part of the outer transaction
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self._errors("begin"):  # type: ignore[attr-defined]
            self.conn.execute(self.begin_statement())  # type: ignore[attr-defined]
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.conn.rollback()  # type: ignore[attr-defined]
            raise
        self._depth = 0
        with self._errors("commit"):  # type: ignore[attr-defined]
            self.conn.commit()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------
class SqliteDatabase(_EmbeddedTransactions, Database):
    dialect = "sqlite"
    # Declared types that read back as the same logical type; dates and timestamps are ISO text.
    SQL_TYPES = {
        "integer": "INTEGER", "double": "REAL", "boolean": "BOOLEAN",
        "date": "DATE", "timestamp": "TIMESTAMP", "text": "TEXT",
    }

    def __init__(self, spec: ConnectionSpec, *, read_only: bool = False):
        super().__init__(spec)
        raw = spec.config.get("path")
        if not raw:
            raise PermanentError(f"Connection {spec.name!r}: SQLite needs a 'path' in its config.")
        self.path = resolve_path(str(raw))
        self.read_only = read_only
        self._depth = 0
        try:
            if read_only:
                if not self.path.exists():
                    raise PermanentError(f"Connection {spec.name!r}: SQLite file {raw} does not exist.")
                self.conn = sqlite3.connect(
                    f"{self.path.as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                # Switching to WAL needs the file to itself and fails at once (no busy wait)
                # while another run writes; a file in WAL mode stays so: switch only once.
                if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.conn.execute("PRAGMA journal_mode=WAL")
            # SQLite's own CAST is lenient ('12abc' -> 12): strict casts run in Python, inside
            # the set-based statements (no Python loop of our own over the rows).
            self.conn.create_function("railyard_castable", 2, logical.castable, deterministic=True)
            self.conn.create_function("railyard_cast", 2, logical.cast, deterministic=True)
        except sqlite3.Error as exc:
            raise self._translate(exc, "open") from None

    def castable_sql(self, expr: str, kind: str) -> str:
        return f"railyard_castable({expr}, '{kind}')"

    def cast_sql(self, expr: str, kind: str) -> str:
        return expr if kind == "text" else f"railyard_cast({expr}, '{kind}')"

    def column_types(self, table: str) -> dict[str, str]:
        rows = self.query("SELECT name, type FROM pragma_table_info(?) ORDER BY cid", [table])
        return {name: self.logical_type(declared) for name, declared in rows}

    def primary_key(self, table: str) -> list[str]:
        rows = self.query("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", [table])
        return [row[0] for row in rows]

    def describe(self) -> str:
        return f"SQLite {self.spec.config.get('path')}"

    def close(self) -> None:
        self.conn.close()

    def _translate(self, exc: sqlite3.Error, doing: str) -> Exception:
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and (
            "locked" in text or "busy" in text or "unable to open" in text or "disk I/O" in text
        ):
            return TransientError(f"{self.describe()}: {doing} failed: {text}")
        return PermanentError(f"{self.describe()}: {doing} failed: {text}")

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._translate(exc, doing) from None

    def begin_statement(self) -> str:
        return "BEGIN" if self.read_only else "BEGIN IMMEDIATE"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._errors("query"):
            return self.conn.execute(sql, tuple(params)).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._errors("query"):
            return self.conn.execute(sql, tuple(params)).fetchall()

    def iter_batches(self, sql, params=(), size=BATCH_SIZE):
        with self._errors("query"):
            cursor = self.conn.execute(sql, tuple(params))
        columns = [d[0] for d in cursor.description]
        self.result_types = dict.fromkeys(columns)  # SQLite does not type results

        def batches() -> Iterator[list[tuple]]:
            try:
                while True:
                    with self._errors("read"):
                        batch = cursor.fetchmany(size)
                    if not batch:
                        return
                    yield batch
            finally:
                cursor.close()

        return columns, batches()

    def bulk_insert(self, table, columns, rows):
        placeholders = ", ".join("?" for _ in columns)
        names = ", ".join(quote_identifier(c, "column") for c in columns)
        sql = f"INSERT INTO {quote_identifier(table, 'table')} ({names}) VALUES ({placeholders})"
        total = 0
        for batch in batched(rows):
            with self._errors("insert"):
                self.conn.executemany(sql, batch)
            total += len(batch)
        return total

    def table_exists(self, table: str) -> bool:
        return bool(self.scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]))

    def columns(self, table: str) -> list[str]:
        return [row[0] for row in self.query("SELECT name FROM pragma_table_info(?) ORDER BY cid", [table])]


# ---------------------------------------------------------------------------------------
COPY_CHUNK = 1 << 20  # bytes of a CSV file sent to COPY at a time


class _CopyAbandoned(Exception):
    """A CSV file holds what only a row-by-row read handles the same way."""


class PostgresDatabase(Database):
    dialect = "postgres"
    _create_unlogged = "CREATE UNLOGGED TABLE"  # staging: no WAL, it is rebuilt on a retry anyway
    # Strict text checks before a cast (PostgreSQL 15 has no pg_input_is_valid): a CASE keeps
    # the day-of-month check from running on text that is not a date at all.
    _DATE = "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    _TIME = "[ T]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,6}){0,1}){0,1}"
    # psycopg type OIDs -> logical types (result_types of a query)
    _OIDS = {20: "integer", 21: "integer", 23: "integer", 700: "double", 701: "double", 1700: "double",
             16: "boolean", 1082: "date", 1114: "timestamp", 1184: "timestamp"}

    def castable_sql(self, expr: str, kind: str) -> str:
        if kind == "integer":
            return f"({expr} ~ '^\\s*[+-]{{0,1}}[0-9]{{1,18}}\\s*$')"
        if kind == "double":
            return f"({expr} ~ '^\\s*[+-]{{0,1}}([0-9]+\\.{{0,1}}[0-9]*|\\.[0-9]+)([eE][+-]{{0,1}}[0-9]{{1,3}}){{0,1}}\\s*$')"
        if kind == "boolean":
            return f"(lower(trim({expr})) IN ('true', 'false', 't', 'f', 'yes', 'no', 'y', 'n', '1', '0'))"
        if kind in ("date", "timestamp"):
            pattern = self._DATE + (self._TIME if kind == "timestamp" else "")
            day_fits = (
                f"substr(trim({expr}), 9, 2)::int <= extract(day from date_trunc('month', "
                f"(substr(trim({expr}), 1, 7) || '-01')::date) + interval '1 month - 1 day')"
            )
            return f"(CASE WHEN trim({expr}) ~ '^{pattern}$' THEN {day_fits} ELSE false END)"
        return "true"

    def cast_sql(self, expr: str, kind: str) -> str:
        return expr if kind == "text" else f"CAST(trim({expr}) AS {self.sql_type(kind)})"

    def _canonical_sql(self, expr: str, kind: str, value: str) -> str:
        """A cheap condition that, for a value whose cast succeeds, implies castable_sql (most
        often: the value is the cast's own output, in a form the pattern accepts). The patterns
        cost ~1 µs a value; this is a length, or a text output and a comparison."""
        if kind == "integer":
            if self.conn.info.server_version < 160000:
                # int8in takes whitespace, a sign and digits, nothing else: at most 18 of them.
                return f"(octet_length({expr}) < 19)"
            # 16+ also takes 0x1F, 0o17, 0b101 and 1_000: its own output has none of them.
            return f"(octet_length({expr}) < 19 AND {value}::text = {expr})"
        if kind == "double":  # finite ('NaN' and 'Infinity' are their own output)
            return f"({value}::text = {expr} AND {expr} NOT IN ('NaN', 'Infinity', '-Infinity'))"
        if kind in ("date", "timestamp"):  # a 4-digit year AD: no ' BC', not 'infinity'
            return f"({value}::text = {expr} AND {value} >= '0001-01-01' AND {value} < '10000-01-01')"
        return "false"

    def strict_cast_sql(self, expr: str, kind: str, value: str | None = None) -> str | None:
        if kind == "text":
            return expr
        value = value or self.precast_sql(expr, kind)
        # A refused value becomes text no type accepts (not a constant: no error at plan time).
        return (f"CASE WHEN {self._canonical_sql(expr, kind, value)} THEN {value} ELSE "
                f"CAST(CASE WHEN {expr} IS NULL OR {self.castable_sql(expr, kind)} THEN trim({expr}) "
                f"ELSE 'railyard: refused' END AS {self.sql_type(kind)}) END")

    def attempt(self, work: Callable[[], T]) -> T | None:
        try:
            with self.conn.transaction():  # a savepoint inside a transaction
                return work()
        except PermanentError as exc:
            if str(getattr(exc, "sqlstate", None) or "").startswith("22"):  # class 22: data exception
                return None
            raise

    def json_object_sql(self, columns: Sequence[str]) -> str:
        chunks = [columns[i : i + 40] for i in range(0, len(columns), 40)] or [[]]
        parts = [
            "jsonb_build_object(" + ", ".join(f"'{c}', {quote_identifier(c, 'column')}" for c in chunk) + ")"
            for chunk in chunks
        ]
        return "(" + " || ".join(parts) + ")::text"

    def primary_key(self, table: str) -> list[str]:
        rows = self.query(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = ?::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
            [quote_identifier(table, "table")],
        )
        return [row[0] for row in rows]

    def analyze(self, table: str) -> None:
        self.execute(f"ANALYZE {quote_identifier(table, 'table')}")

    def __init__(self, spec: ConnectionSpec, *, timezone: str | None = None, create_schema: bool = False):
        import psycopg

        super().__init__(spec)
        self._psycopg = psycopg
        config = spec.config
        self.schema = config.get("schema") or "public"
        quoted_schema = quote_identifier(self.schema, "schema")
        try:
            self.conn = psycopg.connect(
                host=config.get("host") or "localhost",
                port=int(config.get("port") or 5432),
                dbname=config.get("dbname") or "postgres",
                user=config.get("user") or None,
                password=spec.secret or None,
                connect_timeout=5,
                autocommit=True,
            )
        except psycopg.OperationalError as exc:
            raise TransientError(f"Cannot connect to {self.describe()}: {self._scrub(exc)}") from None
        except psycopg.Error as exc:
            raise PermanentError(f"Cannot connect to {self.describe()}: {self._scrub(exc)}") from None
        with self._errors("set up session"):
            if create_schema:
                self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted_schema}")
            self.conn.execute("SELECT set_config('search_path', %s, false)", [quoted_schema])
            if timezone:
                # timestamp-without-time-zone and date columns then compare in the pipeline's zone.
                self.conn.execute("SELECT set_config('TimeZone', %s, false)", [timezone])

    def describe(self) -> str:
        c = self.spec.config
        return f"PostgreSQL {c.get('host') or 'localhost'}:{c.get('port') or 5432}/{c.get('dbname') or 'postgres'}"

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc).strip()
        if self.spec.secret:
            text = text.replace(self.spec.secret, "***")
        return text

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        psycopg = self._psycopg
        try:
            yield
        except (psycopg.OperationalError, psycopg.errors.LockNotAvailable,
                psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
            raise TransientError(f"{self.describe()}: {doing} failed: {self._scrub(exc)}") from None
        except psycopg.Error as exc:
            error = PermanentError(f"{self.describe()}: {doing} failed: {self._scrub(exc)}")
            error.sqlstate = exc.sqlstate  # type: ignore[attr-defined]  # for attempt()
            raise error from None

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._errors("transaction"), self.conn.transaction():
            yield

    @staticmethod
    def _sql(sql: str, params: Sequence[Any] = ()) -> str:
        # Identifiers are validated (no '?' nor '%') and user queries may not hold '?', so this
        # only touches placeholders; a literal '%' (LIKE 'a%') is escaped when params are bound.
        return sql.replace("%", "%%").replace("?", "%s") if params else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._errors("query"), self.conn.cursor() as cur:
            cur.execute(self._sql(sql, params), list(params) or None)
            return cur.rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._errors("query"), self.conn.cursor() as cur:
            cur.execute(self._sql(sql, params), list(params) or None)
            return cur.fetchall()

    def iter_batches(self, sql, params=(), size=BATCH_SIZE):
        # A server-side cursor needs a transaction; it lives as long as the iterator.
        tx = self.transaction()
        tx.__enter__()
        try:
            cur = self.conn.cursor(name="railyard_stream")
            with self._errors("query"):
                cur.execute(self._sql(sql, params), list(params) or None)
                columns = [d.name for d in cur.description]
                self.result_types = {d.name: self._OIDS.get(d.type_code, "text") for d in cur.description}
        except BaseException as exc:
            tx.__exit__(type(exc), exc, exc.__traceback__)
            raise

        def batches() -> Iterator[list[tuple]]:
            try:
                while True:
                    with self._errors("read"):
                        batch = cur.fetchmany(size)
                    if not batch:
                        break
                    yield batch
            except BaseException as exc:
                cur.close()
                tx.__exit__(type(exc), exc, exc.__traceback__)
                raise
            cur.close()
            tx.__exit__(None, None, None)

        return columns, batches()

    def bulk_insert(self, table, columns, rows):
        names = ", ".join(quote_identifier(c, "column") for c in columns)
        total = 0
        with self._errors("copy"), self.conn.cursor() as cur:
            with cur.copy(f"COPY {quote_identifier(table, 'table')} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    total += 1
        return total

    def copy_csv(self, table: str, columns: Sequence[str], binary: Any) -> int | None:
        """Stream a CSV file's bytes (UTF-8, comma-separated, a header line, skipped) into these
        columns of `table`, for PostgreSQL to parse, COPY_CHUNK bytes at a time; the number of
        rows. None, rolled back to a savepoint, if PostgreSQL refuses it (a line with too few or
        too many fields, bad UTF-8), or if it holds what PostgreSQL and Python's csv module read
        differently (a quote character, a '\\.' line): the caller then reads it row by row.
        Empty fields are NULL, as csv_rows makes them. Inside a transaction only."""
        names = ", ".join(quote_identifier(c, "column") for c in columns)
        sql = (f"COPY {quote_identifier(table, 'table')} ({names}) FROM STDIN WITH (FORMAT csv, HEADER true, "
               f"ENCODING 'UTF8', FORCE_NULL ({names}))")

        def work() -> int:
            with self._errors("copy"), self.conn.cursor() as cur:
                with cur.copy(sql) as copy:
                    last = b""
                    while chunk := binary.read(COPY_CHUNK):
                        if b'"' in chunk or b"\\." in chunk or (last == b"\\" and chunk[:1] == b"."):
                            raise _CopyAbandoned
                        copy.write(chunk)
                        last = chunk[-1:]
                return cur.rowcount

        try:
            return self.attempt(work)
        except _CopyAbandoned:
            return None

    def table_exists(self, table: str) -> bool:
        return bool(
            self.scalar(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?",
                [table],
            )
        )

    def columns(self, table: str) -> list[str]:
        rows = self.query(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            [table],
        )
        return [row[0] for row in rows]


class DuckdbDatabase(_EmbeddedTransactions, Database):
    """An embedded DuckDB file as a warehouse (one writing process at a time: DuckDB's rule)."""

    dialect = "duckdb"
    SQL_TYPES = {
        "integer": "BIGINT", "double": "DOUBLE", "boolean": "BOOLEAN",
        "date": "DATE", "timestamp": "TIMESTAMP", "text": "VARCHAR",
    }

    def __init__(self, spec: ConnectionSpec, *, read_only: bool = False):
        import duckdb

        super().__init__(spec)
        self._duckdb = duckdb
        raw = spec.config.get("path")
        if not raw:
            raise PermanentError(f"Connection {spec.name!r}: DuckDB needs a 'path' in its config.")
        self.path = resolve_path(str(raw))
        self._depth = 0
        try:
            if read_only and not self.path.exists():
                raise PermanentError(f"Connection {spec.name!r}: DuckDB file {raw} does not exist.")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            raise self._translate(exc, "open") from None

    def describe(self) -> str:
        return f"DuckDB {self.spec.config.get('path')}"

    def close(self) -> None:
        self.conn.close()

    def _translate(self, exc: Exception, doing: str) -> Exception:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, self._duckdb.IOException | self._duckdb.TransactionException):
            return TransientError(f"{self.describe()}: {doing} failed: {text}")
        return PermanentError(f"{self.describe()}: {doing} failed: {text}")

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except self._duckdb.Error as exc:
            raise self._translate(exc, doing) from None

    def begin_statement(self) -> str:
        return "BEGIN TRANSACTION"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._errors("query"):
            cursor = self.conn.execute(sql, list(params))
            if cursor.description and cursor.description[0][0] == "Count":
                row = cursor.fetchone()
                return int(row[0]) if row else 0
            return -1

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._errors("query"):
            return self.conn.execute(sql, list(params)).fetchall()

    def iter_batches(self, sql, params=(), size=BATCH_SIZE):
        with self._errors("query"):
            cursor = self.conn.execute(sql, list(params))
        columns = [d[0] for d in cursor.description]
        self.result_types = {d[0]: self.logical_type(str(d[1])) for d in cursor.description}

        def batches() -> Iterator[list[tuple]]:
            while True:
                with self._errors("read"):
                    batch = cursor.fetchmany(size)
                if not batch:
                    return
                yield batch

        return columns, batches()

    def bulk_insert(self, table, columns, rows):
        import pyarrow as pa

        names = ", ".join(quote_identifier(c, "column") for c in columns)
        total = 0
        for batch in batched(rows):
            arrow = pa.table(
                {f"c{i}": pa.array([row[i] for row in batch], pa.string()) for i in range(len(columns))}
            )
            with self._errors("insert"):
                self.conn.register("_railyard_batch", arrow)
                try:
                    self.conn.execute(
                        f"INSERT INTO {quote_identifier(table, 'table')} ({names}) SELECT "
                        + ", ".join(f"c{i}" for i in range(len(columns)))
                        + " FROM _railyard_batch"
                    )
                finally:
                    self.conn.unregister("_railyard_batch")
            total += len(batch)
        return total

    def castable_sql(self, expr: str, kind: str) -> str:
        return "true" if kind == "text" else f"(TRY_CAST(trim({expr}) AS {self.sql_type(kind)}) IS NOT NULL)"

    def cast_sql(self, expr: str, kind: str) -> str:
        return expr if kind == "text" else f"CAST(trim({expr}) AS {self.sql_type(kind)})"

    json_merge_function = "json_merge_patch"

    def json_text_sql(self, expr: str) -> str:
        return f"CAST({expr} AS VARCHAR)"

    def create_index(self, table: str, column: str) -> None:
        # DuckDB prunes by zone maps; an ART index would forbid updating the partition column
        # (merge_by_key moves a row to its new partition), so none is made.
        return None

    def table_exists(self, table: str) -> bool:
        return bool(self.scalar(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?",
            [table],
        ))

    def columns(self, table: str) -> list[str]:
        return list(self.column_types(table))

    def primary_key(self, table: str) -> list[str]:
        rows = self.query(
            "SELECT constraint_column_names FROM duckdb_constraints()"
            " WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'",
            [table],
        )
        return list(rows[0][0]) if rows else []


# ---------------------------------------------------------------------------------------
class MysqlDatabase(Database):
    """MySQL / MariaDB through PyMySQL, as a source: streamed with an unbuffered cursor. The
    session runs with ANSI_QUOTES so "quoted" identifiers mean the same as elsewhere."""

    dialect = "mysql"
    # pymysql.constants.FIELD_TYPE codes -> logical types
    _FIELD_TYPES = {0: "double", 246: "double", 4: "double", 5: "double", 1: "integer", 2: "integer",
                    3: "integer", 8: "integer", 9: "integer", 13: "integer", 10: "date", 14: "date",
                    7: "timestamp", 12: "timestamp"}
    _TRANSIENT_CODES = {1040, 1053, 1205, 1213, 2003, 2006, 2013}

    def __init__(self, spec: ConnectionSpec):
        import pymysql

        super().__init__(spec)
        self._pymysql = pymysql
        config = spec.config
        try:
            self.conn = pymysql.connect(
                host=config.get("host") or "localhost",
                port=int(config.get("port") or 3306),
                user=config.get("user") or "root",
                password=spec.secret or "",
                database=config.get("dbname") or config.get("database") or None,
                connect_timeout=5,
                read_timeout=300,
                autocommit=True,
                charset="utf8mb4",
            )
        except pymysql.Error as exc:
            raise self._translate(exc, "connect") from None
        with self._errors("set up session"), self.conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',ANSI_QUOTES')")

    def describe(self) -> str:
        c = self.spec.config
        return f"MySQL {c.get('host') or 'localhost'}:{c.get('port') or 3306}/{c.get('dbname') or c.get('database') or ''}"

    def _translate(self, exc: Exception, doing: str) -> Exception:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if self.spec.secret:
            text = text.replace(self.spec.secret, "***")
        cls = TransientError if code in self._TRANSIENT_CODES else PermanentError
        return cls(f"{self.describe()}: {doing} failed: {text}")

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except self._pymysql.Error as exc:
            raise self._translate(exc, doing) from None

    def close(self) -> None:
        try:
            self.conn.close()
        except self._pymysql.Error:
            pass

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._errors("begin"):
            self.conn.begin()
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        with self._errors("commit"):
            self.conn.commit()

    @staticmethod
    def _sql(sql: str, params: Sequence[Any]) -> str:
        return sql.replace("%", "%%").replace("?", "%s") if params else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._errors("query"), self.conn.cursor() as cur:
            return cur.execute(self._sql(sql, params), list(params) or None)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._errors("query"), self.conn.cursor() as cur:
            cur.execute(self._sql(sql, params), list(params) or None)
            return list(cur.fetchall())

    def iter_batches(self, sql, params=(), size=BATCH_SIZE):
        cur = self.conn.cursor(self._pymysql.cursors.SSCursor)  # unbuffered: rows stream
        with self._errors("query"):
            cur.execute(self._sql(sql, params), list(params) or None)
        columns = [d[0] for d in cur.description]
        self.result_types = {d[0]: self._FIELD_TYPES.get(d[1], "text") for d in cur.description}

        def batches() -> Iterator[list[tuple]]:
            try:
                while True:
                    with self._errors("read"):
                        batch = cur.fetchmany(size)
                    if not batch:
                        return
                    yield list(batch)
            finally:
                with self._errors("close cursor"):
                    cur.close()

        return columns, batches()

    def table_exists(self, table: str) -> bool:
        return bool(self.scalar(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?", [table]
        ))

    def columns(self, table: str) -> list[str]:
        return list(self.column_types(table))

    current_schema_sql = "DATABASE()"


SQL_KINDS = ("sqlite", "postgres", "mysql", "duckdb")


def open_database(
    spec: ConnectionSpec, *, read_only: bool = False, timezone: str | None = None
) -> Database:
    """Open a SQL connection. `read_only` is for sources (no file or schema is created);
    `timezone` sets the PostgreSQL session zone for comparisons of local times."""
    if spec.kind == "sqlite":
        return SqliteDatabase(spec, read_only=read_only)
    if spec.kind == "postgres":
        return PostgresDatabase(spec, timezone=timezone, create_schema=not read_only)
    if spec.kind == "duckdb":
        return DuckdbDatabase(spec, read_only=read_only)
    if spec.kind == "mysql":
        return MysqlDatabase(spec)
    raise PermanentError(
        f"Connection {spec.name!r} is of kind {spec.kind!r}; a database connection must be one of "
        f"{', '.join(SQL_KINDS)}."
    )
