"""Types, schema changes, quarantine, write modes and lookback (SQLite warehouse unless named)."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from pipelines.steps.base import ConnectionSpec, PermanentError
from pipelines.steps.ingestion import extract, load, publish, rejected_rows, validate
from tests.pipelines.steps.conftest import make_ctx, write_csv

STEPS = (extract, validate, load, publish)


def run_all(ctx):
    return [step(ctx) for step in STEPS]


def rows(tmp_path, sql="SELECT * FROM sales ORDER BY ds, order_id"):
    with sqlite3.connect(tmp_path / "warehouse.sqlite3") as conn:
        return conn.execute(sql).fetchall()


def checksum(tmp_path):
    return hashlib.sha256(repr(rows(tmp_path)).encode()).hexdigest()


def test_types_are_inferred_on_the_first_load_with_a_keyed_indexed_target(tmp_path):
    write_csv(tmp_path, "2024-03-10", "order_id,amount,paid,day,at,zip\n1,1.5,true,2024-03-01,2024-03-01 10:00:00,02134\n")
    result = run_all(make_ctx(tmp_path))[0]
    assert result.metrics["column_types"] == {"order_id": "integer", "amount": "double", "paid": "boolean",
                                              "day": "date", "at": "timestamp", "zip": "text", "ds": "text"}
    with sqlite3.connect(tmp_path / "warehouse.sqlite3") as conn:
        info = conn.execute("SELECT name, type, pk FROM pragma_table_info('sales')").fetchall()
        indexes = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sales'").fetchall()
    assert ("ds", "TEXT", 1) in info and ("order_id", "INTEGER", 2) in info
    assert any(sql and '("ds")' in sql for (sql,) in indexes)
    assert rows(tmp_path) == [(1, 1.5, 1, "2024-03-01", "2024-03-01 10:00:00", "02134", "2024-03-10")]


def test_type_change_fails_and_leaves_target_untouched(tmp_path):
    write_csv(tmp_path, "2024-03-09", "order_id,amount\n1,10\n2,20\n")
    run_all(make_ctx(tmp_path, ds="2024-03-09"))
    before = checksum(tmp_path)
    write_csv(tmp_path, "2024-03-09", "order_id,amount\n1,ten\n2,twenty\n")
    with pytest.raises(PermanentError) as excinfo:
        extract(make_ctx(tmp_path, ds="2024-03-09", run_id=2))
    message = str(excinfo.value)
    assert "Type change: column amount of sales is integer" in message and "2 of 2" in message
    assert "target is unchanged" in message
    assert checksum(tmp_path) == before


def test_new_column_is_refused_outside_dev_naming_how_to_approve(tmp_path):
    write_csv(tmp_path, "2024-03-09", "order_id,amount\n1,10\n")
    run_all(make_ctx(tmp_path, ds="2024-03-09"))
    before = checksum(tmp_path)
    write_csv(tmp_path, "2024-03-10", "order_id,amount,region\n1,10,eu\n")
    with pytest.raises(PermanentError, match="new column region.*promote a new version.*allow_schema_changes"):
        run_all(make_ctx(tmp_path, ds="2024-03-10", run_id=2, environment="stage"))
    assert checksum(tmp_path) == before
    run_all(make_ctx(tmp_path, ds="2024-03-10", run_id=3, guardrails={"allow_schema_changes": True}))
    assert rows(tmp_path, "SELECT region FROM sales ORDER BY ds") == [(None,), ("eu",)]


def test_bad_rows_are_quarantined_in_dev_and_listed_for_the_run(tmp_path):
    lines = "order_id,amount\n" + "".join(f"{i},{i}\n" for i in range(1, 200)) + "200,abc\n201,1,extra\n"
    write_csv(tmp_path, "2024-03-10", lines)
    ctx = make_ctx(tmp_path, environment="dev", run_id=7)
    for _ in range(2):  # a re-run records the rejects once
        results = run_all(ctx)
    assert results[0].metrics["rows_rejected"] == 2 and results[0].rows_read == 201
    assert results[2].rows_written == 199
    spec = ctx.connection("wh")
    rejected = rejected_rows(spec, "daily_sales", 7)
    assert [r["reason"] for r in rejected] == [
        "column amount: abc is not an integer",
        "landing/2024-03-10/sales.csv, line 202: expected 2 fields (as in the header), found 3",
    ]
    assert json.loads(rejected[0]["raw_row"]) == {"order_id": "200", "amount": "abc", "ds": "2024-03-10"}
    assert rejected_rows(spec, "daily_sales", 8) == [] and rejected_rows(spec, "other", 7) == []


def test_rejects_above_the_fraction_fail_with_count_and_sample_and_leave_target_untouched(tmp_path):
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,1\n2,2\n")
    run_all(make_ctx(tmp_path))
    before = checksum(tmp_path)
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,1\n2\n3,3\n")
    with pytest.raises(PermanentError) as excinfo:
        run_all(make_ctx(tmp_path, run_id=2))
    assert "1 of 3 rows" in str(excinfo.value) and "max_rejected_fraction 0" in str(excinfo.value)
    assert "sales.csv, line 3: expected 2 fields" in str(excinfo.value)
    assert checksum(tmp_path) == before


def test_merge_by_key_upserts_across_partitions_idempotently(tmp_path):
    merge = {"write_mode": "merge_by_key"}
    write_csv(tmp_path, "2024-03-09", "order_id,status\n1,new\n2,new\n")
    run_all(make_ctx(tmp_path, ds="2024-03-09", guardrails=merge))
    write_csv(tmp_path, "2024-03-10", "order_id,status\n2,paid\n3,new\n")
    ctx = make_ctx(tmp_path, ds="2024-03-10", run_id=2, guardrails=merge)
    snapshots = set()
    for _ in range(3):
        run_all(ctx)
        snapshots.add(checksum(tmp_path))
    assert len(snapshots) == 1
    assert rows(tmp_path, "SELECT order_id, status, ds FROM sales ORDER BY order_id") == [
        (1, "new", "2024-03-09"), (2, "paid", "2024-03-10"), (3, "new", "2024-03-10")]
    assert load(ctx).metrics["noop"]  # load again: staging already gone, nothing written
    again = run_all(make_ctx(tmp_path, ds="2024-03-10", run_id=3, guardrails=merge))
    assert again[2].rows_written == 0 and again[2].metrics["rows_unchanged"] == 2


def test_append_dedupe_inserts_only_new_keys(tmp_path):
    mode = {"write_mode": "append_dedupe"}
    write_csv(tmp_path, "2024-03-09", "order_id,status\n1,new\n")
    run_all(make_ctx(tmp_path, ds="2024-03-09", guardrails=mode))
    write_csv(tmp_path, "2024-03-10", "order_id,status\n1,changed\n2,new\n")
    for run_id in (2, 3):
        results = run_all(make_ctx(tmp_path, ds="2024-03-10", run_id=run_id, guardrails=mode))
    assert results[2].rows_written == 0
    assert rows(tmp_path, "SELECT order_id, status, ds FROM sales ORDER BY order_id") == [
        (1, "new", "2024-03-09"), (2, "new", "2024-03-10")]


def test_changing_the_write_mode_of_an_existing_target_is_refused(tmp_path):
    write_csv(tmp_path, "2024-03-10", "order_id,status\n1,new\n")
    run_all(make_ctx(tmp_path))
    ctx = make_ctx(tmp_path, run_id=2, guardrails={"write_mode": "merge_by_key"})
    extract(ctx)
    with pytest.raises(PermanentError, match=r"merge_by_key needs sales keyed by \(order_id\)"):
        load(ctx)


def test_lookback_reloads_the_previous_partitions(tmp_path):
    for ds, n in (("2024-03-08", 1), ("2024-03-09", 2), ("2024-03-10", 3)):
        write_csv(tmp_path, ds, "order_id\n" + "".join(f"{i}\n" for i in range(n)))
    run_all(make_ctx(tmp_path, ds="2024-03-09"))
    write_csv(tmp_path, "2024-03-09", "order_id\n7\n")  # a late correction
    results = run_all(make_ctx(tmp_path, ds="2024-03-10", run_id=2, guardrails={"lookback": 1}))
    assert results[0].metrics["partitions"] == ["2024-03-09", "2024-03-10"]
    assert rows(tmp_path, "SELECT ds, COUNT(*) FROM sales GROUP BY ds") == [("2024-03-09", 1), ("2024-03-10", 3)]


def test_metrics_cover_every_phase(tmp_path):
    write_csv(tmp_path, "2024-03-10", "order_id\n1\n2\n")
    e, v, lo, p = run_all(make_ctx(tmp_path))
    assert {"rows_read", "rows_staged", "rows_rejected", "bytes_read", "seconds"} <= set(e.metrics)
    assert e.metrics["bytes_read"] == len("order_id\n1\n2\n")
    assert "seconds" in v.metrics and {"rows_deleted", "seconds", "write_mode"} <= set(lo.metrics)
    assert p.metrics["target_rows"] == 2


def test_duckdb_warehouse_loads_and_merges(tmp_path):
    duck = ConnectionSpec("duck", "duckdb", {"path": str(tmp_path / "wh.duckdb")})
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,1.5\n2,2\n")
    for mode in ("replace_partition", "replace_partition"):
        run_all(make_ctx(tmp_path, connections={"duck": duck}, warehouse_connection="duck",
                         guardrails={"write_mode": mode}))
    import duckdb

    with duckdb.connect(str(tmp_path / "wh.duckdb")) as conn:
        assert conn.execute("SELECT * FROM sales ORDER BY order_id").fetchall() == [
            (1, 1.5, "2024-03-10"), (2, 2.0, "2024-03-10")]
    merge = {"write_mode": "merge_by_key"}
    ctx = make_ctx(tmp_path, connections={"duck": duck}, warehouse_connection="duck", guardrails=merge,
                   target_table="sales_m")
    run_all(ctx)
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n2,3\n")
    run_all(ctx)
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as conn:
        assert conn.execute("SELECT order_id, amount FROM sales_m ORDER BY 1").fetchall() == [(1, 1.5), (2, 3.0)]
