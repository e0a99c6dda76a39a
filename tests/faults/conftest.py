"""Fault tests: real scheduler and worker processes on PostgreSQL + Redis, killed, stopped and
restarted by the test. They run in the PostgreSQL pass of `make test` and skip elsewhere."""

from __future__ import annotations

import pytest

from tests.faults.processes import Processes, purge_broker


def pytest_configure(config):
    # Registered here, not in pyproject: `pytest -m faults` selects these tests.
    config.addinivalue_line("markers", "faults: kills, stops and restarts real scheduler and worker processes")


@pytest.fixture
def processes(tmp_path):
    """Start processes through this; all are stopped at teardown and the queue is emptied."""
    purge_broker()
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()
    purge_broker()
