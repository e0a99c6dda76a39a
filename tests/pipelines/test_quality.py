from __future__ import annotations

import pytest

from pipelines.steps.base import PermanentError
from pipelines.steps.ingestion import extract, load, publish, validate
from tests.pipelines.steps.conftest import make_ctx, write_csv


def staged(tmp_path, text, ds="2024-03-10", run_id=1, **quality):
    write_csv(tmp_path, ds, text)
    ctx = make_ctx(tmp_path, ds=ds, run_id=run_id, quality=quality)
    extract(ctx)
    return ctx


def test_accepted_values_failure_names_the_count_and_offending_keys(tmp_path):
    lines = "order_id,status\n" + "".join(f"{i},{'lost' if i % 2 else 'paid'}\n" for i in range(1, 15))
    ctx = staged(tmp_path, lines, accepted_values={"status": ["paid", "refunded"]})
    with pytest.raises(PermanentError) as excinfo:
        validate(ctx)
    message = str(excinfo.value)
    assert message.startswith("Quality check accepted_values failed: 7 rows with a status outside paid, refunded")
    assert "1 = 'lost', 3 = 'lost', 5 = 'lost', 7 = 'lost', 9 = 'lost'." in message and "11 =" not in message


def test_freshness_is_measured_at_the_interval_end(tmp_path):
    ctx = staged(tmp_path, "order_id,created_at\n1,2024-03-10 09:00:00\n", freshness={"column": "created_at",
                                                                                        "max_age_hours": 12})
    with pytest.raises(PermanentError, match=r"freshness failed: the newest created_at is 2024-03-10 09:00:00 \(15.0 h"):
        validate(ctx)
    ok = staged(tmp_path, "order_id,created_at\n1,2024-03-10 13:00:00\n", run_id=2,
                freshness={"column": "created_at", "max_age_hours": 12})
    assert validate(ok).metrics["checks"]["freshness"] == "2024-03-10 13:00:00"


def test_custom_sql_must_return_no_rows(tmp_path):
    ctx = staged(tmp_path, "order_id,amount\n1,5\n2,-3\n",
                 custom_sql=["SELECT order_id FROM {{ staging }} WHERE amount < 0"])
    with pytest.raises(PermanentError, match=r"custom_sql\[1\] failed: 1 rows returned .* sample: 2\."):
        validate(ctx)


def test_row_count_relative_to_the_median_of_recent_partitions(tmp_path):
    for day, n in enumerate((10, 12, 11), start=1):
        ds = f"2024-03-0{day}"
        write_csv(tmp_path, ds, "order_id\n" + "".join(f"{i}\n" for i in range(n)))
        ctx = make_ctx(tmp_path, ds=ds, run_id=day)
        for step in (extract, validate, load, publish):
            step(ctx)
    ctx = staged(tmp_path, "order_id\n1\n2\n", ds="2024-03-04", run_id=9, min_rows_ratio_of_median=0.5)
    with pytest.raises(PermanentError, match=r"min_rows_ratio_of_median failed: 2 rows, below 0.5 × 11"):
        validate(ctx)


def test_failed_gate_leaves_the_target_untouched(tmp_path):
    ctx = staged(tmp_path, "order_id\n1\n", max_rows=0)
    with pytest.raises(PermanentError, match="row_count failed: 1 rows, at most 0"):
        validate(ctx)
    with pytest.raises(PermanentError, match="does not exist"):
        publish(ctx)
