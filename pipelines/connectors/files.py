"""File sources: path templates under a connection's base_path, CSV read as a stream."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from pipelines.connectors.sql import resolve_path
from pipelines.identifiers import validate_identifier
from pipelines.steps.base import ConnectionSpec, PermanentError

TEMPLATE_VAR_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def render_path_template(template: str, variables: dict[str, str]) -> str:
    """Replace `{{ name }}` (spaces optional) with variables[name]; unknown names are refused."""
    unknown = sorted({name for name in TEMPLATE_VAR_RE.findall(template) if name not in variables})
    if unknown:
        raise PermanentError(
            f"source: unknown template variable(s) {', '.join(unknown)} in {template!r}. "
            f"Available: {', '.join(sorted(variables))}."
        )
    return TEMPLATE_VAR_RE.sub(lambda m: variables[m.group(1)], template)


def resolve_source_file(spec: ConnectionSpec, relative: str) -> Path:
    """The absolute path of `relative` under the connection's base_path; never outside it."""
    base = spec.config.get("base_path")
    if not base:
        raise PermanentError(f"Connection {spec.name!r}: a files connection needs a 'base_path' in its config.")
    base_path = resolve_path(str(base)).resolve()
    path = (base_path / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(base_path):
        raise PermanentError(
            f"source: {relative!r} points outside the connection's base path. Use a path relative to it."
        )
    return path


class CsvFile:
    """A CSV file read as a stream: `columns` from the header row, then `rows()` one at a time.

    Empty fields become NULL. A line with the wrong number of fields stops the read with a
    PermanentError naming the file (as given, relative) and the line number."""

    def __init__(self, path: Path, display_name: str, *, delimiter: str = ","):
        self.path = path
        self.display_name = display_name
        self.delimiter = delimiter
        self._file = None
        try:
            self._file = open(path, newline="", encoding="utf-8-sig")  # closed in close()
        except FileNotFoundError:
            raise PermanentError(f"Source file {display_name} does not exist.") from None
        except IsADirectoryError:
            raise PermanentError(f"Source file {display_name} is a directory, not a file.") from None
        except PermissionError:
            raise PermanentError(f"Source file {display_name} cannot be read (permission denied).") from None
        self._reader = csv.reader(self._file, delimiter=delimiter)
        try:
            header = next(self._reader)
        except StopIteration:
            self.close()
            raise PermanentError(f"Source file {display_name} is empty: a header row is needed.") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            self.close()
            raise PermanentError(f"Source file {display_name}, line 1: {exc}.") from None
        columns = [name.strip() for name in header]
        try:
            for name in columns:
                validate_identifier(name, f"{display_name} header column")
        except ValueError as exc:
            self.close()
            raise PermanentError(str(exc)) from None
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            self.close()
            raise PermanentError(f"Source file {display_name}: duplicate header column(s) {', '.join(duplicates)}.")
        self.columns = columns

    def __enter__(self) -> CsvFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def rows(self) -> Iterator[list[str | None]]:
        width = len(self.columns)
        reader = self._reader
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise PermanentError(f"Source file {self.display_name}, line {reader.line_num}: {exc}.") from None
            if not row:  # a blank line
                continue
            if len(row) != width:
                raise PermanentError(
                    f"Source file {self.display_name}, line {reader.line_num}: expected {width} fields "
                    f"(as in the header), found {len(row)}."
                )
            yield [value if value != "" else None for value in row]
