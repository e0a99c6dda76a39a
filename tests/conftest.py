"""The three users of every access test, a dev landing folder and warehouse, and a clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipelines.builtins import ensure_builtin_rows
from tests import factories


@pytest.fixture
def builtins(db):
    """dev/stage/prod and the built-in templates (transactional tests flush the migration's rows)."""
    ensure_builtin_rows()


@pytest.fixture
def team(builtins):
    return factories.make_team("analytics")


@pytest.fixture
def author(team):
    """A member of the team that owns the pipelines."""
    return factories.make_user("alice", team=team)


@pytest.fixture
def teammate(team):
    return factories.make_user("bob", team=team)


@pytest.fixture
def outsider(builtins):
    """Has no access to the analytics team's pipelines."""
    return factories.make_user("charlie", team=factories.make_team("marketing"))


@pytest.fixture
def landing(builtins, tmp_path):
    """A dev 'landing' files connection over tmp_path/landing."""
    folder = tmp_path / "landing"
    folder.mkdir()
    factories.make_connection("landing", "files", {"base_path": str(folder)})
    return folder


@pytest.fixture
def warehouse(builtins, tmp_path):
    """A dev SQLite 'warehouse'; returns the file path."""
    path = tmp_path / "warehouse.sqlite3"
    factories.make_connection("warehouse", "sqlite", {"path": str(path)})
    return path


@pytest.fixture
def now():
    """The clock tests control: a fixed instant passed down explicitly."""
    return datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
