"""File sources through fsspec: a local folder or an S3-compatible bucket, CSV, JSON Lines or
Parquet, read as a stream (one line, one Parquet batch at a time: memory stays bounded whatever
the size of the partition).

A connection's config holds `base_path` (a folder, or `s3://bucket/prefix`), and for S3
`endpoint_url`, `key` (access key id) and `region`; the secret access key is the connection's
secret. A source path is relative to base_path, templated (`{{ ds }}`) and may be a glob:
every matching file belongs to the partition.

A line that cannot be parsed (wrong number of fields, invalid JSON) does not stop the read: it
is yielded as a `Rejected` row (reason naming the file and line, raw text) for the quarantine.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from pipelines.connectors.sql import resolve_path
from pipelines.connectors.types import to_text
from pipelines.identifiers import validate_identifier
from pipelines.steps.base import ConnectionSpec, PermanentError, TransientError

TEMPLATE_VAR_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
GLOB_CHARS = re.compile(r"[*?\[]")
FORMATS = ("csv", "jsonl", "parquet")
EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
              ".parquet": "parquet", ".pq": "parquet"}
SAMPLE_RECORDS = 1000  # JSON records buffered to learn the columns (bounded)


class Rejected(NamedTuple):
    """A source row that could not be parsed: it goes to the quarantine, not to staging."""

    reason: str
    raw: str


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
    """The absolute local path of `relative` under the connection's base_path; never outside it."""
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


def format_of(relative: str, explicit: str | None) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise PermanentError(f"format: {explicit!r} is not one of {', '.join(FORMATS)}.")
        return explicit
    suffixes = PurePosixPath(relative).suffixes
    for suffix in reversed(suffixes):  # sales.csv.gz -> csv
        if suffix.lower() in EXTENSIONS:
            return EXTENSIONS[suffix.lower()]
    raise PermanentError(
        f"format: cannot tell the format of {relative!r} from its extension; set format to one of "
        f"{', '.join(FORMATS)}."
    )


# ---------------------------------------------------------------------------------------
# Filesystems


class Location:
    """A connection's filesystem and root (no trailing slash), and how to name a file to users."""

    def __init__(self, spec: ConnectionSpec):
        self.spec = spec
        base = str(spec.config.get("base_path") or "")
        if not base:
            raise PermanentError(f"Connection {spec.name!r}: a files connection needs a 'base_path' in its config.")
        if base.startswith("s3://"):
            import s3fs

            options: dict[str, Any] = {"key": spec.config.get("key") or None, "secret": spec.secret or None,
                                       "skip_instance_cache": True}
            if not spec.config.get("key") and not spec.secret:
                options["anon"] = True
            client: dict[str, Any] = {}
            if spec.config.get("endpoint_url"):
                client["endpoint_url"] = spec.config["endpoint_url"]
            if spec.config.get("region"):
                client["region_name"] = spec.config["region"]
            options["client_kwargs"] = client
            options["config_kwargs"] = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 2}}
            self.fs = s3fs.S3FileSystem(**options)
            self.root = base[len("s3://"):].rstrip("/")
            self.remote = True
        else:
            from fsspec.implementations.local import LocalFileSystem

            self.fs = LocalFileSystem()
            self.root = resolve_path(base).resolve().as_posix().rstrip("/")
            self.remote = False

    def display(self, path: str) -> str:
        return path[len(self.root) + 1:] if path.startswith(self.root + "/") else path

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        for secret in (self.spec.secret, str(self.spec.config.get("key") or "")):
            if secret:
                text = text.replace(secret, "***")
        return text.replace(self.root, "").strip()

    def error(self, exc: BaseException, display: str) -> Exception:
        """A PermanentError for a missing or forbidden file, else a TransientError (network)."""
        if isinstance(exc, FileNotFoundError):
            return PermanentError(f"Source file {display} does not exist.")
        if isinstance(exc, IsADirectoryError):
            return PermanentError(f"Source file {display} is a directory, not a file.")
        if isinstance(exc, PermissionError):
            return PermanentError(f"Source file {display} cannot be read (permission denied).")
        return TransientError(
            f"Connection {self.spec.name!r}: reading {display} failed: {type(exc).__name__}: {self._scrub(exc)}"
        )

    def expand(self, relative: str) -> list[str]:
        """The files `relative` names (a glob: every match, sorted); never outside the root."""
        parts = PurePosixPath(relative).parts
        if relative.startswith("/") or ".." in parts or not relative.strip():
            raise PermanentError(
                f"source: {relative!r} points outside the connection's base path. Use a path relative to it."
            )
        if not self.remote:
            resolve_source_file(self.spec, relative.split("*")[0] or ".")  # symlinks out of base
        full = f"{self.root}/{relative}"
        if not GLOB_CHARS.search(relative):
            return [full]
        try:
            matches = sorted(p for p in self.fs.glob(full) if not self.fs.isdir(p))
        except Exception as exc:  # noqa: BLE001 - fsspec backends raise many kinds
            raise self.error(exc, relative) from None
        matches = [m if m.startswith("/") or not self.root.startswith("/") else "/" + m.lstrip("/")
                   for m in matches]
        if not matches:
            raise PermanentError(f"No source file matches {relative} (the partition has no file yet).")
        return matches

    def open_binary(self, path: str):
        try:
            return self.fs.open(path, "rb", compression="infer")
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, self.display(path)) from None

    def size(self, path: str) -> int:
        try:
            return int(self.fs.size(path) or 0)
        except Exception:  # noqa: BLE001 - only a metric
            return 0


# ---------------------------------------------------------------------------------------
# Readers: columns, types (None: infer), rows() of tuples or Rejected


def _check_columns(columns: list[str], display: str) -> list[str]:
    try:
        for name in columns:
            validate_identifier(name, f"{display} header column")
    except ValueError as exc:
        raise PermanentError(str(exc)) from None
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise PermanentError(f"Source file {display}: duplicate header column(s) {', '.join(duplicates)}.")
    return columns


class CsvFile:
    """A CSV file read as a stream: `columns` from the header row (or column_1… without one),
    then `rows()` one at a time. Empty fields become NULL; a line with the wrong number of
    fields is yielded as Rejected naming the file (as given, relative) and the line."""

    def __init__(self, path: Path | str, display_name: str, *, delimiter: str = ",", header: bool = True,
                 encoding: str = "utf-8-sig", location: Location | None = None):
        self.display_name = display_name
        self.types: dict[str, str | None] = {}
        self._file = None
        try:
            if location is not None:
                binary = location.open_binary(str(path))
                self._file = io.TextIOWrapper(binary, encoding=encoding, newline="")
            else:
                self._file = open(path, newline="", encoding=encoding)  # closed in close()
        except FileNotFoundError:
            raise PermanentError(f"Source file {display_name} does not exist.") from None
        except IsADirectoryError:
            raise PermanentError(f"Source file {display_name} is a directory, not a file.") from None
        except PermissionError:
            raise PermanentError(f"Source file {display_name} cannot be read (permission denied).") from None
        except LookupError:
            raise PermanentError(f"csv_encoding: {encoding!r} is not a known text encoding.") from None
        self._reader = csv.reader(self._file, delimiter=delimiter)
        self._first: list[str] | None = None
        try:
            first = next(self._reader)
        except StopIteration:
            self.close()
            raise PermanentError(f"Source file {display_name} is empty: a header row is needed.") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            self.close()
            raise PermanentError(f"Source file {display_name}, line 1: {exc}.") from None
        if header:
            columns = [name.strip().lstrip("\ufeff") for name in first]
        else:
            columns = [f"column_{i}" for i in range(1, len(first) + 1)]
            self._first = first
        try:
            self.columns = _check_columns(columns, display_name)
        except PermanentError:
            self.close()
            raise

    def __enter__(self) -> CsvFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def rows(self) -> Iterator[list[str | None] | Rejected]:
        width = len(self.columns)
        reader = self._reader
        if self._first is not None:
            yield [value if value != "" else None for value in self._first]
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:  # the decoder cannot resynchronise: stop
                raise PermanentError(f"Source file {self.display_name}, line {reader.line_num}: {exc}.") from None
            except csv.Error as exc:
                yield Rejected(f"{self.display_name}, line {reader.line_num}: {exc}", "")
                continue
            if not row:  # a blank line
                continue
            if len(row) != width:
                yield Rejected(
                    f"{self.display_name}, line {reader.line_num}: expected {width} fields "
                    f"(as in the header), found {len(row)}",
                    json.dumps(row),
                )
                continue
            yield [value if value != "" else None for value in row]


class JsonLinesFile:
    """One JSON object a line. The columns are the keys of the first records (up to
    SAMPLE_RECORDS, buffered); later records with other keys, invalid JSON or a non-object are
    Rejected; nested values are kept as JSON text."""

    def __init__(self, location: Location, path: str, display_name: str, *, encoding: str = "utf-8"):
        self.display_name = display_name
        self.types: dict[str, str | None] = {}
        try:
            self._file = io.TextIOWrapper(location.open_binary(path), encoding=encoding)
        except LookupError:
            raise PermanentError(f"csv_encoding: {encoding!r} is not a known text encoding.") from None
        self._lines = enumerate(self._file, start=1)
        self._buffer: list[tuple[int, str, Any]] = []
        columns: dict[str, None] = {}
        for number, line in self._read():
            record = self._decode(number, line)
            self._buffer.append((number, line, record))
            if isinstance(record, dict):
                columns.update(dict.fromkeys(record))
            if len(self._buffer) >= SAMPLE_RECORDS:
                break
        self.columns = _check_columns(list(columns), display_name)

    def _read(self) -> Iterator[tuple[int, str]]:
        for number, line in self._lines:
            try:
                if line.strip():
                    yield number, line
            except UnicodeDecodeError as exc:
                raise PermanentError(f"Source file {self.display_name}, line {number}: {exc}.") from None

    def _decode(self, number: int, line: str) -> Any:
        try:
            return json.loads(line)
        except json.JSONDecodeError as exc:
            return Rejected(f"{self.display_name}, line {number}: not valid JSON ({exc.msg})", line.strip()[:10000])

    def _row(self, number: int, line: str, record: Any) -> tuple | Rejected:
        if isinstance(record, Rejected):
            return record
        if not isinstance(record, dict):
            return Rejected(f"{self.display_name}, line {number}: a JSON object is needed", line.strip()[:10000])
        extra = [k for k in record if k not in self._known]
        if extra:
            return Rejected(f"{self.display_name}, line {number}: unexpected field(s) {', '.join(extra[:5])}",
                            line.strip()[:10000])
        return tuple(record.get(c) for c in self.columns)

    def rows(self) -> Iterator[tuple | Rejected]:
        self._known = set(self.columns)
        buffered, self._buffer = self._buffer, []
        for number, line, record in buffered:
            yield self._row(number, line, record)
        for number, line in self._read():
            yield self._row(number, line, self._decode(number, line))

    def close(self) -> None:
        self._file.close()


class ParquetFile:
    """A Parquet file read batch by batch; its schema gives the column types."""

    _ARROW = (("int", "integer"), ("uint", "integer"), ("float", "double"), ("double", "double"),
              ("decimal", "double"), ("bool", "boolean"), ("date", "date"), ("timestamp", "timestamp"))

    def __init__(self, location: Location, path: str, display_name: str):
        import pyarrow.parquet as pq

        self.display_name = display_name
        self._file = location.open_binary(path)
        try:
            self._parquet = pq.ParquetFile(self._file)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid and OSError alike
            self._file.close()
            raise PermanentError(f"Source file {display_name} is not a Parquet file: {exc}") from None
        schema = self._parquet.schema_arrow
        self.columns = _check_columns(list(schema.names), display_name)
        self.types = {field.name: self._logical(str(field.type)) for field in schema}

    def _logical(self, arrow_type: str) -> str:
        for prefix, kind in self._ARROW:
            if arrow_type.startswith(prefix):
                return kind
        return "text"

    def rows(self) -> Iterator[tuple]:
        for batch in self._parquet.iter_batches(batch_size=5000):
            yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------------------------


class FileSource:
    """Every file a (rendered) source path names, read in turn as one stream of rows. All files
    must have the same columns (in any order)."""

    def __init__(self, spec: ConnectionSpec, relative: str, *, fmt: str | None = None,
                 delimiter: str = ",", header: bool = True, encoding: str | None = None):
        self.location = Location(spec)
        self.format = format_of(relative, fmt)
        self.options = {"delimiter": delimiter, "header": header, "encoding": encoding}
        self.paths = self.location.expand(relative)
        self.bytes_read = 0
        self.files_read = 0
        self._current = self._open(self.paths[0])
        self.columns: list[str] = list(self._current.columns)
        self.types: dict[str, str | None] = dict(self._current.types)

    def _open(self, path: str):
        display = self.location.display(path)
        self.bytes_read += self.location.size(path)
        self.files_read += 1
        if self.format == "parquet":
            return ParquetFile(self.location, path, display)
        if self.format == "jsonl":
            return JsonLinesFile(self.location, path, display, encoding=self.options["encoding"] or "utf-8")
        return CsvFile(path, display, delimiter=self.options["delimiter"], header=self.options["header"],
                       encoding=self.options["encoding"] or "utf-8-sig", location=self.location)

    def rows(self) -> Iterator[tuple | list | Rejected]:
        reader = self._current
        for index in range(len(self.paths)):
            if index:
                reader = self._current = self._open(self.paths[index])
            try:
                order = None
                if reader.columns != self.columns:
                    if sorted(reader.columns) != sorted(self.columns):
                        raise PermanentError(
                            f"Source file {reader.display_name} has columns {', '.join(reader.columns)}; the first "
                            f"file has {', '.join(self.columns)}. Files of one partition need the same columns."
                        )
                    order = [reader.columns.index(c) for c in self.columns]
                try:
                    for row in reader.rows():
                        if order is not None and not isinstance(row, Rejected):
                            row = [row[i] for i in order]
                        yield row
                except (OSError, TimeoutError) as exc:
                    raise self.location.error(exc, reader.display_name) from None
            finally:
                reader.close()

    def close(self) -> None:
        self._current.close()


def text_row(row: tuple | list) -> list[str | None]:
    return [to_text(v) for v in row]
