"""HTTP JSON API sources (stdlib urllib), read one page at a time.

Connection config: `url` (http/https, templated with `{{ ds }}`…; values are URL-encoded),
`records_path` (dotted path to the list of records in each page, e.g. "data.items"; empty: the
page is the list), `pagination` ({"type": "next_link", "path": "links.next"} or
{"type": "page_number", "param": "page", "start": 1}), `header_name` (e.g. "Authorization")
whose value is the connection's secret, and `timeout_seconds` (default 30).

Errors: 429, 5xx, timeouts and refused connections are TransientError; other 4xx, bad JSON or
a missing records_path are PermanentError. Messages name the host and path, never the secret.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from pipelines.connectors.files import TEMPLATE_VAR_RE, Rejected, _check_columns
from pipelines.steps.base import ConnectionSpec, PermanentError, TransientError

MAX_PAGES = 100_000


def _dig(document: Any, path: str) -> Any:
    value = document
    for part in [p for p in (path or "").split(".") if p]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def render_url(template: str, variables: dict[str, str]) -> str:
    unknown = sorted({n for n in TEMPLATE_VAR_RE.findall(template) if n not in variables})
    if unknown:
        raise PermanentError(f"url: unknown template variable(s) {', '.join(unknown)}.")
    url = TEMPLATE_VAR_RE.sub(lambda m: urllib.parse.quote(variables[m.group(1)], safe=""), template)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise PermanentError("url: only http:// and https:// URLs can be read.")
    return url


class HttpSource:
    def __init__(self, spec: ConnectionSpec, variables: dict[str, str]):
        self.spec = spec
        config = spec.config
        if not config.get("url"):
            raise PermanentError(f"Connection {spec.name!r}: an http connection needs a 'url' in its config.")
        self.url = render_url(str(config["url"]), variables)
        self.records_path = str(config.get("records_path") or "")
        self.pagination = config.get("pagination") or {}
        self.timeout = float(config.get("timeout_seconds") or 30)
        self.bytes_read = 0
        self.pages_read = 0
        self._pages = self._iter_pages()
        first = next(self._pages, [])
        self._first = first
        columns: dict[str, None] = {}
        for record in first:
            if isinstance(record, dict):
                columns.update(dict.fromkeys(record))
        self.columns = _check_columns(list(columns), f"{self.where(self.url)} field")
        self.types: dict[str, str | None] = {}

    @staticmethod
    def where(url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        return f"{parts.netloc}{parts.path}"

    def _get(self, url: str) -> Any:
        request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "railyard"})
        if self.spec.config.get("header_name"):
            request.add_header(str(self.spec.config["header_name"]), self.spec.secret)
        where = self.where(url)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - scheme checked
                body = response.read()
        except urllib.error.HTTPError as exc:
            cls = TransientError if exc.code == 429 or exc.code >= 500 else PermanentError
            raise cls(f"HTTP source {where}: the server answered {exc.code} {exc.reason}.") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransientError(f"HTTP source {where} does not answer: {reason}.") from None
        self.bytes_read += len(body)
        self.pages_read += 1
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PermanentError(f"HTTP source {where}: page {self.pages_read} is not JSON ({exc}).") from None

    def _records(self, page: Any, url: str) -> list:
        records = _dig(page, self.records_path) if self.records_path else page
        if records is None and self.records_path:
            records = []
        if not isinstance(records, list):
            raise PermanentError(
                f"HTTP source {self.where(url)}: records_path {self.records_path or '(the page)'} is not a list."
            )
        return records

    def _iter_pages(self) -> Iterator[list]:
        kind = self.pagination.get("type")
        url = self.url
        if kind == "page_number":
            param = str(self.pagination.get("param") or "page")
            number = int(self.pagination.get("start", 1))
            for _ in range(MAX_PAGES):
                parts = urllib.parse.urlsplit(self.url)
                query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != param]
                query.append((param, str(number)))
                url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
                records = self._records(self._get(url), url)
                if not records:
                    return
                yield records
                number += 1
            return
        for _ in range(MAX_PAGES):
            page = self._get(url)
            yield self._records(page, url)
            if kind != "next_link":
                return
            following = _dig(page, str(self.pagination.get("path") or "next"))
            if not following:
                return
            url = urllib.parse.urljoin(url, str(following))
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise PermanentError(f"HTTP source {self.where(self.url)}: the next link is not an http(s) URL.")

    def rows(self) -> Iterator[tuple | Rejected]:
        known = set(self.columns)
        page_number = 0
        for records in _chain([self._first], self._pages):
            page_number += 1
            for index, record in enumerate(records, start=1):
                if not isinstance(record, dict):
                    yield Rejected(f"{self.where(self.url)}, page {page_number}, record {index}: "
                                   "a JSON object is needed", json.dumps(record)[:10000])
                    continue
                extra = [k for k in record if k not in known]
                if extra:
                    yield Rejected(f"{self.where(self.url)}, page {page_number}, record {index}: unexpected "
                                   f"field(s) {', '.join(extra[:5])}", json.dumps(record)[:10000])
                    continue
                yield tuple(record.get(c) for c in self.columns)

    def close(self) -> None:
        self._pages.close()


def _chain(*iterators):
    for iterator in iterators:
        yield from iterator
