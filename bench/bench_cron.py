"""Time 10,000 Schedule.next_fire calls for a daily and an hourly schedule in Europe/London.

Run: .venv/bin/python bench/bench_cron.py
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.cron import Schedule  # noqa: E402

CALLS = 10_000


def bench(cron: str, timezone: str = "Europe/London") -> None:
    schedule = Schedule(cron, timezone)
    fire = datetime(2026, 1, 1, tzinfo=UTC)
    started = time.perf_counter()
    for _ in range(CALLS):
        fire = schedule.next_fire(fire)
    elapsed = time.perf_counter() - started
    print(f"{cron!r:>16} {timezone}: {CALLS} next_fire calls in {elapsed:.3f} s ({elapsed / CALLS * 1e6:.0f} us/call)")


if __name__ == "__main__":
    bench("30 2 * * *")  # daily: 10,000 consecutive fires cover ~27 years
    bench("30 * * * *")  # hourly: ~14 months, across two DST transitions
