"""PostgreSQL's fast paths of extract (the CSV streamed to COPY, the optimistic one-pass cast)
behave exactly as the row-by-row checks they skip: same rows, same quarantine."""

from __future__ import annotations

import pytest

from pipelines.connectors import open_database
from pipelines.connectors.sql import PostgresDatabase
from pipelines.steps.ingestion import extract, load, publish, rejected_rows, validate
from tests.pipelines.steps.conftest import make_ctx, write_csv

pytestmark = pytest.mark.postgres

STEPS = (extract, validate, load, publish)

# Values castable_sql accepts or refuses, next to what PostgreSQL's own CAST would accept.
VALUES = {
    "integer": ["1", " 12 ", "+5", "-7", "007", "123456789012345678", "-123456789012345678",
                "1234567890123456789", "0000000000000000001", "1.0", "1e3", "abc", "0x1F", "1_000", "\t3"],
    "double": ["1", "1.5", ".5", "5.", "-0", "1e+20", "1.5e-07", "1e0005", "NaN", "nan", "Infinity", "-inf",
               "0x10", " 2.5 ", "abc", "270.87", "1E5", "+.5e-3"],
    "date": ["2024-03-01", "2024-02-30", "2024-02-29", "2023-02-29", "2024/03/01", "03/01/2024", "20240301",
             "today", "infinity", "0044-03-15 BC", "12024-03-01", " 2024-03-01 ", "2024-3-1", "March 1 2024",
             "2024-03-01 10:00"],
    "timestamp": ["2024-03-01 10:00:00", "2024-03-01T10:00:00", "2024-03-01 10:00", "2024-03-01 10:00:00.123456",
                  "2024-03-01 24:00:00", "2024-03-01 23:59:60", "2024-03-01 10:00:00+02", "infinity", "epoch",
                  "0044-03-15 10:00:00 BC", "0044-03-15 10:00:00.5 BC", "2024-03-01", "2024/03/01 10:00:00",
                  "12024-03-01 10:00:00", "2024-02-30 10:00:00", " 2024-03-01 10:00:00"],
    "boolean": ["true", "t", "yes", "on", "off", "tru", "1", "0", " TRUE ", "maybe"],
}


def run_all(ctx):
    return [step(ctx) for step in STEPS]


def pg_ctx(tmp_path, pg_spec, **kwargs):
    return make_ctx(tmp_path, connections={"pgwh": pg_spec}, warehouse_connection="pgwh", **kwargs)


def table_md5(pg_spec, table="sales"):
    with open_database(pg_spec) as db:
        types = db.column_types(table)
        return db.scalar(f'SELECT count(*) || \':\' || md5(string_agg(t::text, \'|\' ORDER BY t::text)) FROM "{table}" t'), types


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_strict_cast_refuses_exactly_what_castable_refuses(pg_spec, kind):
    with open_database(pg_spec) as db:
        assert isinstance(db, PostgresDatabase)
        one = " FROM (SELECT CAST(? AS text) AS x) v"
        for value in VALUES[kind]:
            castable = db.scalar(f"SELECT {db.castable_sql('x', kind)}{one}", [value])
            with db.transaction():
                strict = db.attempt(lambda v=value: db.scalar(f"SELECT {db.strict_cast_sql('x', kind)}{one}", [v]))
            with db.transaction():  # the plain cast computed once, in a subquery, as extract does
                precast = f" FROM (SELECT x, {db.precast_sql('x', kind)} AS v{one} OFFSET 0) w"
                strict_too = db.attempt(
                    lambda v=value, p=precast: db.scalar(f"SELECT {db.strict_cast_sql('x', kind, 'v')}{p}", [v]))
            assert strict_too == strict
            assert (strict is not None) == bool(castable), (kind, value, castable, strict)
            if strict is not None:
                assert strict == db.scalar(f"SELECT {db.cast_sql('x', kind)}{one}", [value])


def test_a_value_that_does_not_cast_is_quarantined(tmp_path, pg_spec):
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n2,20\n")
    run_all(pg_ctx(tmp_path, pg_spec))  # amount: integer from now on
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,11\n2,twenty\n3,0x1F\n4,13\n")
    logs: list[str] = []
    ctx = pg_ctx(tmp_path, pg_spec, run_id=2, logs=logs, guardrails={}, quality={"max_rejected_fraction": 0.5})
    result = extract(ctx)
    assert result.metrics["rows_rejected"] == 2 and result.metrics["rows_staged"] == 2
    assert any("do not cast" in line for line in logs)
    reasons = sorted(r["reason"] for r in rejected_rows(pg_spec, "daily_sales", 2))
    assert reasons == ["column amount: 0x1F is not an integer", "column amount: twenty is not an integer"]
    for step in STEPS[1:]:
        step(ctx)
    with open_database(pg_spec) as db:
        assert db.query("SELECT order_id, amount FROM sales ORDER BY order_id") == [(1, 11), (4, 13)]


def test_a_malformed_line_is_quarantined_with_its_line_number(tmp_path, pg_spec):
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n2\n3,30,x\n4,40\n")
    ctx_logs: list[str] = []
    ctx = pg_ctx(tmp_path, pg_spec, logs=ctx_logs, quality={"max_rejected_fraction": 0.5})
    result = extract(ctx)
    assert any("read row by row" in line for line in ctx_logs) and result.metrics["rows_read"] == 4
    assert result.metrics["rows_staged"] == 2 and result.metrics["rows_rejected"] == 2
    reasons = sorted(r["reason"] for r in rejected_rows(pg_spec, "daily_sales", 1))
    assert reasons == ["landing/2024-03-10/sales.csv, line 3: expected 2 fields (as in the header), found 1",
                       "landing/2024-03-10/sales.csv, line 4: expected 2 fields (as in the header), found 3"]


TRICKY_CSV = (
    "order_id,ds,amount,price,paid,day,at,note\n"
    "1,1999-01-01,10, 1.5 ,true,2024-03-01,2024-03-01 10:00:00,plain\n"
    "2,,+20,.25,f,2024-02-29,2024-03-01T10:00:00.5,\n"
    "3,x,007,1e+20,yes,2024-03-02,2024-03-01 10:00,ünïcødé ✓\n"
    "4,,-5,-0,0,,,back\\slash\n"
    "5,,123456789012345678,270.87, TRUE ,2024-12-31,2024-12-31 23:59:59.999999,tab\there\n"
)


@pytest.mark.parametrize("text", [TRICKY_CSV, TRICKY_CSV.replace("\n", "\r\n"),
                                  TRICKY_CSV.replace("plain", '"quoted, with comma"')])
def test_the_fast_paths_load_exactly_the_rows_of_the_checked_path(tmp_path, pg_spec, monkeypatch, text):
    write_csv(tmp_path, "2024-03-10", text)
    logs: list[str] = []
    run_all(pg_ctx(tmp_path, pg_spec, target_table="sales", logs=logs))
    fast = table_md5(pg_spec, "sales")
    assert any("read row by row" in line for line in logs) == ('"' in text)  # COPY's unless quoted
    assert not any("do not cast" in line for line in logs)
    with monkeypatch.context() as patch:  # the row-by-row path: Python reads, every value tested
        patch.setattr(PostgresDatabase, "strict_cast_sql", lambda self, *args, **kwargs: None)
        if hasattr(PostgresDatabase, "copy_csv"):
            patch.setattr(PostgresDatabase, "copy_csv", lambda self, *args, **kwargs: None)
        run_all(pg_ctx(tmp_path, pg_spec, target_table="sales_checked", run_id=2))
    assert table_md5(pg_spec, "sales_checked") == fast
    assert fast[0].startswith("5:")


def test_a_source_of_text_only_loads_on_sqlite_without_strict_casts(tmp_path):
    write_csv(tmp_path, "2024-03-10", "order_id,region\na1,eu\na2,us\n")
    run_all(make_ctx(tmp_path))
    import sqlite3

    with sqlite3.connect(tmp_path / "warehouse.sqlite3") as conn:
        assert conn.execute("SELECT order_id, region, ds FROM sales ORDER BY order_id").fetchall() == [
            ("a1", "eu", "2024-03-10"), ("a2", "us", "2024-03-10")]


def test_copy_gives_each_lookback_partition_its_own_value(tmp_path, pg_spec):
    write_csv(tmp_path, "2024-03-09", "order_id,ds,amount\n1,wrong,10\n2,,20\n")
    write_csv(tmp_path, "2024-03-10", "order_id,ds,amount\n3,2024-03-09,30\n")
    logs: list[str] = []
    run_all(pg_ctx(tmp_path, pg_spec, guardrails={"lookback": 1}, primary_key=["order_id"], logs=logs))
    assert not any("row by row" in line for line in logs)
    with open_database(pg_spec) as db:
        assert db.query("SELECT order_id, ds, amount FROM sales ORDER BY order_id") == [
            (1, "2024-03-09", 10), (2, "2024-03-09", 20), (3, "2024-03-10", 30)]
