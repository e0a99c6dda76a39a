"""SQL databases behind one small interface, one class per dialect.

Callers write SQL with `?` placeholders and quoted identifiers (pipelines.identifiers); the
dialect class translates placeholders, opens transactions, streams rows and moves bulk data
(executemany on SQLite, COPY on PostgreSQL). Driver errors leave as TransientError (worth a
retry: lock, lost connection) or PermanentError (bad table, bad SQL); no message ever holds
the connection's secret.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from pipelines.identifiers import quote_identifier
from pipelines.steps.base import ConnectionSpec, PermanentError, TransientError

BATCH_SIZE = 5000


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

    def describe(self) -> str:
        """Where this database is, for messages (never the secret)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------
class SqliteDatabase(Database):
    dialect = "sqlite"

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
                self.conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise self._translate(exc, "open") from None

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

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:  # nested: part of the outer transaction
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self._errors("begin"):
            self.conn.execute("BEGIN" if self.read_only else "BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.conn.rollback()
            raise
        self._depth = 0
        with self._errors("commit"):
            self.conn.commit()

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
class PostgresDatabase(Database):
    dialect = "postgres"

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
            raise PermanentError(f"{self.describe()}: {doing} failed: {self._scrub(exc)}") from None

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._errors("transaction"), self.conn.transaction():
            yield

    @staticmethod
    def _sql(sql: str) -> str:
        # Identifiers are validated (no '?' nor '%'), so this only touches placeholders.
        return sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._errors("query"), self.conn.cursor() as cur:
            cur.execute(self._sql(sql), list(params) or None)
            return cur.rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._errors("query"), self.conn.cursor() as cur:
            cur.execute(self._sql(sql), list(params) or None)
            return cur.fetchall()

    def iter_batches(self, sql, params=(), size=BATCH_SIZE):
        # A server-side cursor needs a transaction; it lives as long as the iterator.
        tx = self.transaction()
        tx.__enter__()
        try:
            cur = self.conn.cursor(name="railyard_stream")
            with self._errors("query"):
                cur.execute(self._sql(sql), list(params) or None)
                columns = [d.name for d in cur.description]
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


def open_database(
    spec: ConnectionSpec, *, read_only: bool = False, timezone: str | None = None
) -> Database:
    """Open a SQLite or PostgreSQL connection. `read_only` is for sources (no file or schema is
    created); `timezone` sets the PostgreSQL session zone for comparisons of local times."""
    if spec.kind == "sqlite":
        return SqliteDatabase(spec, read_only=read_only)
    if spec.kind == "postgres":
        return PostgresDatabase(spec, timezone=timezone, create_schema=not read_only)
    raise PermanentError(
        f"Connection {spec.name!r} is of kind {spec.kind!r}; a database connection must be sqlite or postgres."
    )
