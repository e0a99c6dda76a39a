from __future__ import annotations

import pytest

from pipelines.connectors import open_database, open_warehouse
from pipelines.connectors.sql import BATCH_SIZE
from pipelines.steps.base import ConnectionSpec, PermanentError
from tests.pipelines.steps.conftest import pg_spec  # noqa: F401 (fixture)


def sqlite_spec(tmp_path):
    return ConnectionSpec("wh", "sqlite", {"path": str(tmp_path / "wh" / "w.sqlite3")})


def exercise(db):
    """Same behaviour on every dialect: schema helpers, bulk load in batches, streaming, rollback."""
    db.drop_table("t")
    db.create_text_table("t", ["k", "v"], primary_key=["k"])
    assert db.table_exists("t") and not db.table_exists("u")
    assert db.columns("t") == ["k", "v"]
    n = BATCH_SIZE * 2 + 7
    with db.transaction():
        assert db.bulk_insert("t", ["k", "v"], ((str(i), None) for i in range(n))) == n
    assert db.scalar("SELECT COUNT(*) FROM t") == n
    columns, batches = db.iter_batches('SELECT "k" FROM t WHERE "k" <> ?', ["0"], size=1000)
    assert columns == ["k"]
    assert sum(len(b) for b in batches) == n - 1
    with pytest.raises(RuntimeError), db.transaction():
        db.execute("DELETE FROM t")
        raise RuntimeError
    assert db.scalar("SELECT COUNT(*) FROM t") == n
    db.add_text_column("t", "w")
    assert db.columns("t") == ["k", "v", "w"]
    with pytest.raises(PermanentError, match="query failed"):
        db.query("SELECT nope FROM t")


def test_sqlite_database_behaves(tmp_path):
    with open_warehouse(sqlite_spec(tmp_path)) as db:
        exercise(db)
        assert db.scalar("PRAGMA journal_mode") == "wal"


@pytest.mark.postgres
def test_postgres_database_behaves_and_creates_its_schema(pg_spec):  # noqa: F811
    with open_warehouse(pg_spec) as db:
        exercise(db)
        assert db.scalar("SELECT current_schema()") == "analytics"


def test_sqlite_source_is_read_only_and_must_exist(tmp_path):
    with pytest.raises(PermanentError, match="does not exist"):
        open_database(sqlite_spec(tmp_path), read_only=True)
    assert not (tmp_path / "wh" / "w.sqlite3").exists()


def test_files_connection_is_not_a_warehouse(tmp_path):
    with pytest.raises(PermanentError, match="a warehouse must be sqlite, postgres, duckdb"):
        open_warehouse(ConnectionSpec("f", "files", {"base_path": str(tmp_path)}))
