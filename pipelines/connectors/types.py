"""Logical column types shared by every source and warehouse.

Values travel from a source to staging as canonical text (`to_text`); the warehouse casts them
to the column's logical type. `infer_type` chooses a type from a sample of that text; the
`parse` functions say whether (and how) one text value casts, and back SQLite's casts.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

TYPES = ("integer", "double", "boolean", "date", "timestamp", "text")

INTEGER_RE = re.compile(r"^[+-]?[0-9]{1,18}$")
DOUBLE_RE = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$")
DATE_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")
TIMESTAMP_RE = re.compile(
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[ T]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$"
)
TRUE = {"true", "t", "yes", "y", "1"}
FALSE = {"false", "f", "no", "n", "0"}


def to_text(value: Any) -> str | None:
    """The canonical text of a source value, as staged (aware datetimes in UTC, naive kept)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def parse(value: str, kind: str) -> Any:
    """The value of `value` as `kind`, or raise ValueError. Strict: '12abc' is not an integer."""
    text = value.strip()
    if kind == "integer":
        if not INTEGER_RE.match(text):
            raise ValueError(value)
        return int(text)
    if kind == "double":
        if not DOUBLE_RE.match(text):
            raise ValueError(value)
        return float(text)
    if kind == "boolean":
        low = text.lower()
        if low in TRUE:
            return 1
        if low in FALSE:
            return 0
        raise ValueError(value)
    if kind == "date":
        if not DATE_RE.match(text):
            raise ValueError(value)
        return date.fromisoformat(text).isoformat()
    if kind == "timestamp":
        if not TIMESTAMP_RE.match(text):
            raise ValueError(value)
        return datetime.fromisoformat(text).isoformat(sep=" ")
    return value


def castable(value: str | None, kind: str) -> bool:
    if value is None:
        return True
    try:
        parse(value, kind)
    except (ValueError, TypeError):
        return False
    return True


def cast(value: str | None, kind: str) -> Any:
    """SQLite's cast (registered as a function): the stored value, or NULL when it does not cast."""
    if value is None:
        return None
    try:
        return parse(str(value), kind)
    except (ValueError, TypeError):
        return None


def infer_type(values: list[str], tolerance: float = 0.0) -> str:
    """The narrowest type the non-null sampled values cast to, allowing `tolerance` (a fraction)
    of them not to: those rows go to the quarantine. Integers with a leading zero ('02134', a
    zip code) stay text: casting would lose the zero. Booleans only from words (true/false)."""
    present = [v.strip() for v in values if v is not None and v.strip() != ""]
    if not present:
        return "text"
    allowed = int(tolerance * len(present))

    def fits(test) -> bool:
        misses = 0
        for v in present:
            if not test(v):
                misses += 1
                if misses > allowed:
                    return False
        return True

    def leading_zero(v: str) -> bool:
        return bool(re.match(r"^[+-]?0[0-9]", v))

    if fits(lambda v: v.lower() in ("true", "false")):
        return "boolean"
    if fits(lambda v: bool(INTEGER_RE.match(v)) and not leading_zero(v)):
        return "integer"
    if fits(lambda v: bool(DOUBLE_RE.match(v)) and not leading_zero(v)):
        return "double"
    if fits(lambda v: castable(v, "date")):
        return "date"
    if fits(lambda v: castable(v, "timestamp")):
        return "timestamp"
    return "text"
