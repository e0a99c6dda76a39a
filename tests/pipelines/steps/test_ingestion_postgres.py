from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from pipelines.connectors import open_database
from pipelines.steps.base import PermanentError
from pipelines.steps.ingestion import extract, load, publish, validate
from tests.pipelines.steps.conftest import make_ctx, write_csv

pytestmark = pytest.mark.postgres

STEPS = (extract, validate, load, publish)


def run_all(ctx):
    return [step(ctx) for step in STEPS]


def pg_ctx(tmp_path, pg_spec, connections=None, **kwargs):
    connections = {"pgwh": pg_spec, **(connections or {})}
    return make_ctx(tmp_path, connections=connections, warehouse_connection="pgwh", **kwargs)


def pg_rows(pg_spec, sql="SELECT * FROM sales ORDER BY ds, order_id"):
    with open_database(pg_spec) as db:
        return db.query(sql)


def pg_tables(pg_spec):
    with open_database(pg_spec) as db:
        return {r[0] for r in db.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'analytics'")}


def test_load_replaces_exactly_the_partition(tmp_path, pg_spec):
    write_csv(tmp_path, "2024-03-09", "order_id,amount\n1,1\n2,2\n")
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n2,20\n")
    write_csv(tmp_path, "2024-03-11", "order_id,amount\n9,90\n")
    for run_id, ds in enumerate(("2024-03-09", "2024-03-10", "2024-03-11"), start=1):
        run_all(pg_ctx(tmp_path, pg_spec, ds=ds, run_id=run_id))
    before = pg_rows(pg_spec)

    write_csv(tmp_path, "2024-03-10", "order_id,amount\n5,50\n")
    results = run_all(pg_ctx(tmp_path, pg_spec, ds="2024-03-10", run_id=4))
    after = pg_rows(pg_spec)

    assert results[2].metrics["rows_deleted"] == 2
    assert [r for r in after if r[2] != "2024-03-10"] == [r for r in before if r[2] != "2024-03-10"]
    assert [r for r in after if r[2] == "2024-03-10"] == [(5, 50, "2024-03-10")]


def test_rerunning_every_step_leaves_identical_rows(tmp_path, pg_spec):
    write_csv(tmp_path, "2024-03-10", "order_id,amount,region\n1,10,eu\n2,20,us\n3,,us\n")
    ctx = pg_ctx(tmp_path, pg_spec)
    snapshots = []
    for _ in range(3):
        for step in STEPS:
            step(ctx)
            step(ctx)
        rows = pg_rows(pg_spec)
        snapshots.append((rows, hashlib.sha256(repr(rows).encode()).hexdigest()))
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert snapshots[0][0] == [
        (1, 10, "eu", "2024-03-10"),
        (2, 20, "us", "2024-03-10"),
        (3, None, "us", "2024-03-10"),
    ]
    assert pg_tables(pg_spec) == {"sales"}


def test_changed_file_reload_yields_exactly_the_new_rows(tmp_path, pg_spec):
    path = write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n2,20\n3,30\n")
    ctx = pg_ctx(tmp_path, pg_spec)
    run_all(ctx)
    path.write_text("order_id,amount\n2,21\n4,40\n")
    run_all(ctx)
    assert pg_rows(pg_spec) == [(2, 21, "2024-03-10"), (4, 40, "2024-03-10")]


def test_validate_refuses_duplicate_keys_with_a_sample(tmp_path, pg_spec):
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,1\n1,2\n2,2\n")
    ctx = pg_ctx(tmp_path, pg_spec)
    extract(ctx)
    with pytest.raises(PermanentError, match=r"unique_key failed: 1 keys.*: 1 x2"):
        validate(ctx)


def test_malformed_csv_line_leaves_no_staging(tmp_path, pg_spec):
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n2\n")
    ctx = pg_ctx(tmp_path, pg_spec)
    with pytest.raises(PermanentError, match="line 3"):
        extract(ctx)
    assert ctx.staging_table not in pg_tables(pg_spec)


def test_sql_source_extracts_only_the_interval(tmp_path, pg_spec):
    with open_database(pg_spec) as db:
        db.execute("CREATE TABLE orders (order_id int, amount numeric, created_at timestamp, paid_at timestamptz)")
        db.execute(
            "INSERT INTO orders VALUES"
            " (1, 1, '2024-03-09 23:59:59', '2024-03-09 22:59:59+00'),"
            " (2, 2, '2024-03-10 00:00:00', '2024-03-09 23:00:00+00'),"
            " (3, 3.5, '2024-03-10 23:59:59', '2024-03-10 22:59:59+00'),"
            " (4, 4, '2024-03-11 00:00:00', '2024-03-10 23:00:00+00')"
        )
    spec = pg_spec
    for column in ("created_at", "paid_at"):  # local wall time, and instants
        ctx = pg_ctx(
            tmp_path,
            pg_spec,
            start=datetime(2024, 3, 9, 23, 0, tzinfo=UTC),
            connections={"src": spec},
            source_connection="src",
            source="orders",
            source_filter_column=column,
            timezone="Europe/Paris",
            target_table=f"orders_by_{column}",
        )
        assert extract(ctx).rows_read == 2, column
        validate(ctx)
        load(ctx)
        rows = pg_rows(pg_spec, f"SELECT order_id, amount, ds FROM orders_by_{column} ORDER BY order_id")
        assert rows == [(2, 2.0, "2024-03-10"), (3, 3.5, "2024-03-10")]


def test_merge_by_key_rewrites_only_changed_rows(tmp_path, pg_spec):
    merge = {"write_mode": "merge_by_key"}
    write_csv(tmp_path, "2024-03-10", "order_id,status\n1,new\n2,new\n3,new\n")
    run_all(pg_ctx(tmp_path, pg_spec, guardrails=merge))
    before = dict(pg_rows(pg_spec, "SELECT order_id, xmin::text FROM sales"))
    write_csv(tmp_path, "2024-03-10", "order_id,status\n1,new\n2,paid\n3,new\n4,new\n")
    results = run_all(pg_ctx(tmp_path, pg_spec, run_id=2, guardrails=merge))
    after = dict(pg_rows(pg_spec, "SELECT order_id, xmin::text FROM sales"))
    assert results[2].rows_written == 2 and results[2].metrics["rows_unchanged"] == 2
    assert after[1] == before[1] and after[3] == before[3] and after[2] != before[2]
    assert pg_rows(pg_spec, "SELECT order_id, status FROM sales ORDER BY 1") == [
        (1, "new"), (2, "paid"), (3, "new"), (4, "new")]


@pytest.mark.parametrize("mode", ["replace_partition", "merge_by_key", "append_dedupe"])
def test_load_plans_are_set_based_without_nested_loops(tmp_path, pg_spec, mode):
    from pipelines.steps.ingestion import _plan, load_statements

    write_csv(tmp_path, "2024-03-10", "order_id,amount\n" + "".join(f"{i},{i}\n" for i in range(2000)))
    ctx = pg_ctx(tmp_path, pg_spec, guardrails={"write_mode": mode})
    run_all(ctx)
    extract(ctx)
    with open_database(pg_spec) as db:
        for _, sql, params in load_statements(db, _plan(ctx), db.columns(ctx.staging_table)):
            plan = "\n".join(r[0] for r in db.query(f"EXPLAIN {sql}", params))
            assert "Nested Loop" not in plan, plan


def test_type_change_fails_and_leaves_target_untouched(tmp_path, pg_spec):
    write_csv(tmp_path, "2024-03-10", "order_id,day\n1,2024-03-01\n")
    run_all(pg_ctx(tmp_path, pg_spec))
    write_csv(tmp_path, "2024-03-10", "order_id,day\n1,2024-02-30\n")
    with pytest.raises(PermanentError, match="Type change: column day of sales is date"):
        run_all(pg_ctx(tmp_path, pg_spec, run_id=2))
    assert pg_rows(pg_spec, "SELECT order_id, day::text FROM sales") == [(1, "2024-03-01")]
