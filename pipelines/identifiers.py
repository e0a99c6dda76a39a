"""SQL identifiers that come from users (table and column names).

Values always travel as bound parameters; identifiers cannot, so every identifier that reaches
SQL is validated against a strict pattern and then double-quoted (SQLite and PostgreSQL both
accept "name")."""

from __future__ import annotations

import re

IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _noun(field: str) -> str:
    if "table" in field or field == "source":
        return "table name"
    if "column" in field or "key" in field:
        return "column name"
    return "name"


def validate_identifier(value: str, field: str) -> str:
    """Return `value` if it is a safe identifier, else raise ValueError naming `field` and the fix."""
    if not isinstance(value, str) or not IDENTIFIER_RE.fullmatch(value):
        raise ValueError(
            f"{field}: {value!r} is not a valid {_noun(field)}. Use letters, digits and underscores, "
            "starting with a letter or underscore (max 63 characters)."
        )
    return value


def quote_identifier(name: str, field: str = "identifier") -> str:
    """Validate `name`, then return it double-quoted for use in SQL."""
    return '"' + validate_identifier(name, field) + '"'
