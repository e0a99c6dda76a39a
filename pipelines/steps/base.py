from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class StepError(Exception):
    """A task failed; the message is shown to users, so it never holds a secret."""


class TransientError(StepError):
    """Worth retrying: connection reset, timeout, lock."""


class PermanentError(StepError):
    """Retrying cannot help: bad config, missing table or file, failed quality gate."""


class NotReady(StepError):
    """A sensor's condition is not met yet: poke again later without holding a worker slot
    and without using a retry (reschedule mode)."""


@dataclass
class ConnectionSpec:
    """A connection resolved for one environment, secret decrypted (never log it)."""

    name: str
    kind: str
    config: dict[str, Any]
    secret: str = ""


@dataclass
class StepContext:
    pipeline: str
    environment: str
    run_id: int
    task_id: str
    try_number: int
    logical_date: datetime
    data_interval_start: datetime
    data_interval_end: datetime
    ds: str
    inputs: dict[str, Any]
    guardrails: dict[str, Any]
    connection: Callable[[str], ConnectionSpec]
    log: Callable[[str], None] = print
    # The try of the task that fills staging (extract) whose table the later tasks read: a
    # stale try of extract, woken after its lease ran out, writes a table nobody reads.
    staging_try: int = 0

    @property
    def ds_nodash(self) -> str:
        return self.ds.replace("-", "")

    @property
    def template_vars(self) -> dict[str, str]:
        return {
            "ds": self.ds,
            "ds_nodash": self.ds_nodash,
            "ts": self.logical_date.isoformat(),
            "data_interval_start": self.data_interval_start.isoformat(),
            "data_interval_end": self.data_interval_end.isoformat(),
        }

    @property
    def staging_table(self) -> str:
        """One staging table per run and extract try, so neither concurrent runs nor a stale
        try ever share one; always a safe identifier."""
        return self.staging_table_of_try(self.staging_try)

    def staging_table_of_try(self, try_number: int) -> str:
        suffix = f"_{self.run_id}_{try_number}"
        return re.sub(r"[^A-Za-z0-9_]", "_", f"_stg_{self.pipeline}"[: 63 - len(suffix)] + suffix)


@dataclass
class StepResult:
    rows_read: int | None = None
    rows_written: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
