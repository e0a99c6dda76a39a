from __future__ import annotations

import pytest

from pipelines.identifiers import quote_identifier, validate_identifier


@pytest.mark.parametrize("name", ["ds", "_x", "Order_ID2", "a" * 63])
def test_it_accepts_plain_names(name):
    assert validate_identifier(name, "partition_column") == name
    assert quote_identifier(name) == f'"{name}"'


@pytest.mark.parametrize("name", ["", "1ds", "dt; drop table x", 'a"b', "a-b", "été", "a" * 64, "a b", None])
def test_it_refuses_anything_else(name):
    with pytest.raises(ValueError):
        validate_identifier(name, "partition_column")


def test_the_message_names_the_field_and_the_fix():
    with pytest.raises(ValueError) as excinfo:
        validate_identifier("dt; drop table x", "partition_column")
    assert str(excinfo.value) == (
        "partition_column: 'dt; drop table x' is not a valid column name. Use letters, digits and "
        "underscores, starting with a letter or underscore (max 63 characters)."
    )


def test_quote_refuses_before_quoting():
    with pytest.raises(ValueError, match="target_table: .* not a valid table name"):
        quote_identifier('x"; drop table y; --', "target_table")
