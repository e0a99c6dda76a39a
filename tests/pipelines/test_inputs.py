from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from pipelines.inputs import clean_ingestion_inputs

BASE = {
    "schedule": "30 2 * * *",
    "source_connection": "landing",
    "source": "landing/{{ ds }}/*.parquet",
    "primary_key": "order_id",
    "partition_column": "dt",
    "target_table": "sales",
}


def errors_of(raw, kind="files"):
    with pytest.raises(ValidationError) as excinfo:
        clean_ingestion_inputs(raw, source_kind=kind)
    return excinfo.value.message_dict


def test_file_options_and_quality_are_kept_when_valid():
    cleaned = clean_ingestion_inputs(
        {**BASE, "format": "csv", "csv_delimiter": ";", "csv_header": False, "csv_encoding": "latin-1",
         "quality": {"min_rows": 10, "accepted_values": {"status": ["paid", "refunded"]},
                     "freshness": {"column": "created_at", "max_age_hours": 30},
                     "custom_sql": ["SELECT * FROM {{ staging }} WHERE amount < 0"]}},
        source_kind="files",
    )
    assert cleaned["format"] == "csv" and cleaned["csv_delimiter"] == ";" and cleaned["csv_header"] is False
    assert cleaned["csv_encoding"] == "iso8859-1"
    assert cleaned["quality"]["accepted_values"] == {"status": ["paid", "refunded"]}


@pytest.mark.parametrize(
    "extra, field, text",
    [
        ({"format": "xlsx"}, "format", "csv, jsonl, parquet"),
        ({"csv_delimiter": ";;"}, "csv_delimiter", "single character"),
        ({"csv_encoding": "klingon"}, "csv_encoding", "Unknown text encoding"),
        ({"write_mode": "merge_by_key"}, "write_mode", "guardrail"),
        ({"quality": {"min_rows": -1}}, "quality", "quality.min_rows: a whole number"),
        ({"quality": {"max_rejected_fraction": 0.5}}, "quality", "guardrail set by the platform team"),
        ({"quality": {"accepted_values": {"bad col": ["x"]}}}, "quality", "is not a valid column name"),
        ({"quality": {"freshness": {"column": "ts", "max_age_hours": 0}}}, "quality", "max_age_hours"),
        ({"quality": {"custom_sql": ["DELETE FROM {{ staging }}"]}}, "quality", "one SELECT statement"),
        ({"quality": {"custom_sql": ["SELECT 1 FROM sales"]}}, "quality", "FROM {{ staging }}"),
    ],
)
def test_bad_file_and_quality_inputs_are_refused_naming_the_field(extra, field, text):
    errors = errors_of({**BASE, **extra})
    assert field in errors and text in errors[field][0]


def test_source_query_replaces_the_table_for_sql_sources():
    raw = {**BASE, "source": "", "source_query": "SELECT * FROM orders WHERE day = {{ ds }}"}
    cleaned = clean_ingestion_inputs(raw, source_kind="mysql")
    assert cleaned["source_query"] == "SELECT * FROM orders WHERE day = {{ ds }}" and "source" not in cleaned


@pytest.mark.parametrize(
    "query, text",
    [
        ("DROP TABLE orders", "one SELECT statement"),
        ("SELECT * FROM orders WHERE day = ?", "instead of '?'"),
        ("SELECT 1; SELECT 2", "one statement only"),
        ("SELECT * FROM t WHERE d = {{ tomorrow }}", "unknown variable tomorrow"),
    ],
)
def test_unsafe_source_query_is_refused_naming_the_field(query, text):
    errors = errors_of({**BASE, "source": "", "source_query": query}, kind="postgres")
    assert text in errors["source_query"][0]


def test_source_query_is_refused_for_files_and_file_options_for_sql():
    assert "Only SQL sources" in errors_of({**BASE, "source_query": "SELECT 1"})["source_query"][0]
    assert "files connections only" in errors_of({**BASE, "source": "orders", "format": "csv"}, "sqlite")["format"][0]


def test_http_sources_need_no_source():
    cleaned = clean_ingestion_inputs({**BASE, "source": ""}, source_kind="http")
    assert "source" not in cleaned
