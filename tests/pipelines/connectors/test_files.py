from __future__ import annotations

import pytest

from pipelines.connectors import CsvFile, render_path_template, resolve_path, resolve_source_file
from pipelines.steps.base import ConnectionSpec, PermanentError

VARS = {"ds": "2024-03-10", "ds_nodash": "20240310", "ts": "2024-03-10T00:00:00+00:00",
        "data_interval_start": "a", "data_interval_end": "b"}


def test_template_renders_with_or_without_spaces():
    assert render_path_template("x/{{ds}}/{{ ds_nodash }}/{{  ts }}.csv", VARS) == (
        "x/2024-03-10/20240310/2024-03-10T00:00:00+00:00.csv"
    )


def test_template_refuses_unknown_variables_naming_them():
    with pytest.raises(PermanentError, match="unknown template variable.*date, env"):
        render_path_template("{{ env }}/{{date}}/{{ ds }}.csv", VARS)


def test_relative_paths_resolve_under_the_data_dir(settings, tmp_path):
    settings.RAILYARD_DATA_DIR = tmp_path
    assert resolve_path("w/x.sqlite3") == tmp_path / "w" / "x.sqlite3"
    assert resolve_path("/abs/x.sqlite3").as_posix() == "/abs/x.sqlite3"


def test_source_file_stays_under_the_base_path(tmp_path):
    spec = ConnectionSpec("f", "files", {"base_path": str(tmp_path)})
    assert resolve_source_file(spec, "a/b.csv") == tmp_path / "a" / "b.csv"
    for bad in ("../x.csv", "/etc/passwd"):
        with pytest.raises(PermanentError, match="outside the connection's base path"):
            resolve_source_file(spec, bad)


def test_csv_streams_rows_with_empty_fields_as_null(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('\ufeffid, name\n1,"a, b"\n\n2,\n')
    with CsvFile(path, "a.csv") as f:
        assert f.columns == ["id", "name"]
        assert list(f.rows()) == [["1", "a, b"], ["2", None]]


def test_csv_duplicate_header_is_refused(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("id,id\n1,2\n")
    with pytest.raises(PermanentError, match="duplicate header column.*id"):
        CsvFile(path, "a.csv")


def test_missing_csv_names_the_relative_path_only(tmp_path):
    with pytest.raises(PermanentError) as excinfo:
        CsvFile(tmp_path / "nope.csv", "landing/nope.csv")
    assert "landing/nope.csv" in str(excinfo.value)
    assert str(tmp_path) not in str(excinfo.value)
