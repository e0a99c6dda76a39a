"""Sources and warehouses the steps read and write. No ORM here: steps pass ConnectionSpecs."""

from __future__ import annotations

from pipelines.connectors.files import CsvFile, render_path_template, resolve_source_file
from pipelines.connectors.sql import Database, PostgresDatabase, SqliteDatabase, open_database, resolve_path
from pipelines.connectors.warehouse import open_source_database, open_warehouse

__all__ = [
    "CsvFile",
    "Database",
    "PostgresDatabase",
    "SqliteDatabase",
    "open_database",
    "open_source_database",
    "open_warehouse",
    "render_path_template",
    "resolve_path",
    "resolve_source_file",
]
