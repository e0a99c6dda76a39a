from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.steps import get_step
from pipelines.steps.base import ConnectionSpec, PermanentError, TransientError
from pipelines.steps.ingestion import extract, load, partition_value, publish, validate
from tests.pipelines.steps.conftest import make_ctx, write_csv

STEPS = (extract, validate, load, publish)


def run_all(ctx):
    return [step(ctx) for step in STEPS]


def target_rows(tmp_path, table="sales"):
    with sqlite3.connect(tmp_path / "warehouse.sqlite3") as conn:
        return conn.execute(f'SELECT * FROM "{table}" ORDER BY ds, order_id').fetchall()


def table_names(tmp_path):
    with sqlite3.connect(tmp_path / "warehouse.sqlite3") as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def checksum(rows):
    return hashlib.sha256(repr(sorted(rows)).encode()).hexdigest()


def test_registry_returns_the_four_steps_and_refuses_unknown_tasks():
    assert [get_step("partitioned_ingestion", t) for t in ("extract", "validate", "load", "publish")] == list(STEPS)
    with pytest.raises(PermanentError, match="no task 'transform'"):
        get_step("partitioned_ingestion", "transform")
    with pytest.raises(PermanentError, match="Unknown template"):
        get_step("nope", "extract")


def test_full_run_loads_the_file_as_the_partition(tmp_path):
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10.5\n2,20\n")
    ctx = make_ctx(tmp_path)
    results = run_all(ctx)
    assert results[0].rows_read == 2
    assert results[2].rows_written == 2
    assert results[3].metrics == {"partition": "2024-03-10", "target_rows": 2}
    assert target_rows(tmp_path) == [(1, 10.5, "2024-03-10"), (2, 20.0, "2024-03-10")]  # types inferred
    assert ctx.staging_table not in table_names(tmp_path)


def test_load_replaces_exactly_the_partition(tmp_path):
    write_csv(tmp_path, "2024-03-09", "order_id,amount\n1,1\n2,2\n3,3\n")
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n2,20\n")
    write_csv(tmp_path, "2024-03-11", "order_id,amount\n9,90\n")
    for run_id, ds in enumerate(("2024-03-09", "2024-03-10", "2024-03-11"), start=1):
        run_all(make_ctx(tmp_path, ds=ds, run_id=run_id))
    before = target_rows(tmp_path)

    write_csv(tmp_path, "2024-03-10", "order_id,amount\n5,50\n")
    run_all(make_ctx(tmp_path, ds="2024-03-10", run_id=4))
    after = target_rows(tmp_path)

    assert [r for r in after if r[2] != "2024-03-10"] == [r for r in before if r[2] != "2024-03-10"]
    assert [r for r in after if r[2] == "2024-03-10"] == [(5, 50, "2024-03-10")]


def test_rerunning_every_step_leaves_identical_rows(tmp_path):
    write_csv(tmp_path, "2024-03-09", "order_id,amount\n1,1\n")
    run_all(make_ctx(tmp_path, ds="2024-03-09", run_id=1))
    write_csv(tmp_path, "2024-03-10", "order_id,amount,region\n1,10,eu\n2,20,us\n3,,us\n")
    ctx = make_ctx(tmp_path, ds="2024-03-10", run_id=2, environment="dev")

    snapshots = []
    for _ in range(3):
        for step in STEPS:
            step(ctx)
            step(ctx)  # each step twice in a row, too
        rows = target_rows(tmp_path)
        snapshots.append((rows, checksum(rows)))
    # load re-run without staging is a no-op that still reports the partition
    again = load(ctx)
    assert again.rows_written == 3 and again.metrics["rows_deleted"] == 0

    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert len(snapshots[0][0]) == 4
    assert table_names(tmp_path) == {"sales"}


def test_changed_file_reload_yields_exactly_the_new_rows(tmp_path):
    path = write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n2,20\n3,30\n")
    ctx = make_ctx(tmp_path)
    run_all(ctx)
    path.write_text("order_id,amount\n2,21\n4,40\n")
    results = run_all(ctx)
    assert results[2].metrics["rows_deleted"] == 3
    assert target_rows(tmp_path) == [(2, 21, "2024-03-10"), (4, 40, "2024-03-10")]


def test_missing_file_fails_naming_the_path_and_leaves_target_untouched(tmp_path):
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n")
    run_all(make_ctx(tmp_path))
    before = target_rows(tmp_path)

    ctx = make_ctx(tmp_path, ds="2024-03-11", run_id=2)
    with pytest.raises(PermanentError) as excinfo:
        extract(ctx)
    assert "landing/2024-03-11/sales.csv" in str(excinfo.value)
    assert str(tmp_path) not in str(excinfo.value)
    with pytest.raises(PermanentError, match="run extract first"):
        validate(ctx)
    assert load(ctx).rows_written == 0  # nothing staged: no-op
    assert target_rows(tmp_path) == before


def test_malformed_csv_line_fails_naming_the_line(tmp_path):
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n2,20,oops\n3,30\n")
    ctx = make_ctx(tmp_path)
    with pytest.raises(PermanentError, match=r"landing/2024-03-10/sales.csv, line 3: expected 2 fields.*found 3"):
        extract(ctx)
    assert ctx.staging_table not in table_names(tmp_path)


def test_csv_column_named_like_the_partition_is_overwritten(tmp_path):
    write_csv(tmp_path, "2024-03-10", "ds,order_id\n1999-01-01,1\n,2\n")
    run_all(make_ctx(tmp_path))
    with sqlite3.connect(tmp_path / "warehouse.sqlite3") as conn:
        assert conn.execute('SELECT ds, order_id FROM sales ORDER BY order_id').fetchall() == [
            ("2024-03-10", 1),
            ("2024-03-10", 2),
        ]


def test_new_columns_are_added_to_the_target_in_dev(tmp_path):
    write_csv(tmp_path, "2024-03-09", "order_id,amount\n1,1\n")
    run_all(make_ctx(tmp_path, ds="2024-03-09"))
    write_csv(tmp_path, "2024-03-10", "order_id,amount,region\n1,10,eu\n")
    run_all(make_ctx(tmp_path, ds="2024-03-10", run_id=2, environment="dev"))
    with sqlite3.connect(tmp_path / "warehouse.sqlite3") as conn:
        rows = conn.execute("SELECT ds, order_id, region FROM sales ORDER BY ds").fetchall()
    assert rows == [("2024-03-09", 1, None), ("2024-03-10", 1, "eu")]


def test_validate_refuses_duplicate_keys_with_a_sample(tmp_path):
    lines = "order_id,amount\n" + "".join(f"{i},{i}\n{i},{i}\n" for i in range(1, 8)) + "100,1\n"
    write_csv(tmp_path, "2024-03-10", lines)
    ctx = make_ctx(tmp_path)
    extract(ctx)
    with pytest.raises(PermanentError) as excinfo:
        validate(ctx)
    message = str(excinfo.value)
    assert "unique_key" in message and "7 keys" in message
    assert "1 x2" in message and "13 x2" not in message
    assert message.count(" x2") == 5  # a sample of five


def test_validate_refuses_null_keys(tmp_path):
    write_csv(tmp_path, "2024-03-10", "order_id,line,amount\n1,1,10\n1,,20\n,2,30\n")
    ctx = make_ctx(tmp_path, primary_key=["order_id", "line"])
    extract(ctx)
    with pytest.raises(PermanentError, match=r"not_null_key failed: 2 rows.*\(1, NULL\)"):
        validate(ctx)


def test_validate_refuses_too_few_rows(tmp_path):
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n")
    ctx = make_ctx(tmp_path, guardrails={"quality": {"min_rows": 2}})
    extract(ctx)
    with pytest.raises(PermanentError, match="row_count failed: 1 rows, at least 2"):
        validate(ctx)


def test_validate_reports_the_checks_it_ran(tmp_path):
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n2,20\n")
    ctx = make_ctx(tmp_path)
    extract(ctx)
    assert validate(ctx).metrics["checks"] == {"row_count": 2, "null_keys": 0, "duplicate_keys": 0}


@pytest.mark.parametrize(
    "field, value",
    [
        ("partition_column", "dt; drop table x"),
        ("target_table", 'sales"--'),
        ("primary_key", ["id", "1bad"]),
    ],
)
def test_unsafe_identifier_is_refused_naming_the_field(tmp_path, field, value):
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n")
    ctx = make_ctx(tmp_path, **{field: value})
    for step in STEPS:
        with pytest.raises(PermanentError, match=rf"^{field}: .* is not a valid .*Use letters, digits"):
            step(ctx)


def test_unsafe_csv_header_is_refused(tmp_path):
    write_csv(tmp_path, "2024-03-10", 'order_id,"amount; drop table sales"\n1,10\n')
    with pytest.raises(PermanentError, match="header column.*is not a valid column name"):
        extract(make_ctx(tmp_path))


def test_unknown_template_variable_is_refused_naming_it(tmp_path):
    ctx = make_ctx(tmp_path, source="landing/{{ds}}/{{ region }}.csv")
    with pytest.raises(PermanentError, match="unknown template variable.*region"):
        extract(ctx)


def test_source_path_cannot_leave_the_base_path(tmp_path):
    ctx = make_ctx(tmp_path, source="../../etc/{{ ds_nodash }}.csv")
    with pytest.raises(PermanentError, match="outside the connection's base path"):
        extract(ctx)


def test_partition_value_is_ds_daily_and_local_hour_hourly(tmp_path):
    assert partition_value(make_ctx(tmp_path)) == "2024-03-10"
    hourly = make_ctx(
        tmp_path,
        ds="2024-03-10",
        interval=timedelta(hours=1),
        start=datetime(2024, 3, 10, 13, 0, tzinfo=UTC),
        timezone="America/New_York",
    )
    assert partition_value(hourly) == "2024-03-10T09:00"  # EDT began that morning


def make_source_db(tmp_path):
    path = tmp_path / "source.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (order_id INTEGER, amount REAL, created_at TEXT, day TEXT)")
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?)",
            [
                (1, 1.0, "2024-03-09 23:59:59", "2024-03-09"),  # before (Paris time)
                (2, 2.0, "2024-03-10 00:00:00", "2024-03-10"),  # first instant
                (3, 3.5, "2024-03-10T12:30:00", "2024-03-10"),  # 'T' separator
                (4, 4.0, "2024-03-10 23:59:59", "2024-03-10"),
                (5, 5.0, "2024-03-11 00:00:00", "2024-03-11"),  # end is exclusive
            ],
        )
    conn.close()
    return ConnectionSpec("src", "sqlite", {"path": str(path)})


def test_sql_source_extracts_only_the_interval(tmp_path):
    spec = make_source_db(tmp_path)
    # Paris midnight to midnight, as UTC instants
    ctx = make_ctx(
        tmp_path,
        start=datetime(2024, 3, 9, 23, 0, tzinfo=UTC),
        connections={"src": spec},
        source_connection="src",
        source="orders",
        source_filter_column="created_at",
        timezone="Europe/Paris",
    )
    results = run_all(ctx)
    assert results[0].rows_read == 3
    with sqlite3.connect(tmp_path / "warehouse.sqlite3") as conn:
        rows = conn.execute("SELECT order_id, amount, ds FROM sales ORDER BY order_id").fetchall()
    assert rows == [(2, 2.0, "2024-03-10"), (3, 3.5, "2024-03-10"), (4, 4.0, "2024-03-10")]  # declared types


def test_sql_source_filters_a_date_column(tmp_path):
    spec = make_source_db(tmp_path)
    ctx = make_ctx(
        tmp_path, connections={"src": spec}, source_connection="src", source="orders", source_filter_column="day"
    )
    assert extract(ctx).rows_read == 3


def test_sql_source_without_filter_column_selects_the_partition_column(tmp_path):
    spec = make_source_db(tmp_path)
    ctx = make_ctx(
        tmp_path, connections={"src": spec}, source_connection="src", source="orders", partition_column="day"
    )
    assert extract(ctx).rows_read == 3


def test_sql_source_table_name_is_validated(tmp_path):
    spec = make_source_db(tmp_path)
    ctx = make_ctx(tmp_path, connections={"src": spec}, source_connection="src", source="orders; drop")
    with pytest.raises(PermanentError, match="^source: 'orders; drop' is not a valid table name"):
        extract(ctx)


def test_unreachable_postgres_source_is_transient_and_hides_the_password(tmp_path):
    spec = ConnectionSpec(
        "src", "postgres", {"host": "127.0.0.1", "port": 1, "dbname": "shop", "user": "u"}, secret="s3cr3t-pw"
    )
    ctx = make_ctx(tmp_path, connections={"src": spec}, source_connection="src", source="orders")
    with pytest.raises(TransientError) as excinfo:
        extract(ctx)
    assert "127.0.0.1:1/shop" in str(excinfo.value)
    assert "s3cr3t-pw" not in str(excinfo.value)


def test_log_lines_describe_progress(tmp_path):
    write_csv(tmp_path, "2024-03-10", "order_id,amount\n1,10\n")
    logs: list[str] = []
    run_all(make_ctx(tmp_path, logs=logs))
    assert any("1 rows of partition 2024-03-10" in line for line in logs)
    assert any(line.startswith("publish:") for line in logs)
