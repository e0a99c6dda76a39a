"""Sources and warehouses the steps read and write. No ORM here: steps pass ConnectionSpecs."""

from __future__ import annotations

from pipelines.connectors.files import (
    CsvFile,
    FileSource,
    Rejected,
    render_path_template,
    resolve_source_file,
)
from pipelines.connectors.http import HttpSource
from pipelines.connectors.sql import (
    SQL_KINDS,
    Database,
    DuckdbDatabase,
    MysqlDatabase,
    PostgresDatabase,
    SqliteDatabase,
    open_database,
    resolve_path,
)
from pipelines.connectors.testing import connection_test
from pipelines.connectors.warehouse import WAREHOUSE_KINDS, open_source_database, open_warehouse

__all__ = [
    "SQL_KINDS",
    "WAREHOUSE_KINDS",
    "CsvFile",
    "Database",
    "DuckdbDatabase",
    "FileSource",
    "HttpSource",
    "MysqlDatabase",
    "PostgresDatabase",
    "Rejected",
    "SqliteDatabase",
    "connection_test",
    "open_database",
    "open_source_database",
    "open_warehouse",
    "render_path_template",
    "resolve_path",
    "resolve_source_file",
]
