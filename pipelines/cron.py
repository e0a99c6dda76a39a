"""Schedule maths: cron expression + IANA time zone → fire instants in UTC.

The one module that imports croniter, so it can be swapped. Cron fields are read in the
schedule's wall clock; every instant this module returns is an aware UTC datetime.

Interval semantics (Airflow's cron data-interval timetable): a fire F closes the data
interval [previous fire, F); the run for it has logical date = previous fire.

Daylight saving time follows Debian cron (and cronsim):
- a fixed-time schedule whose wall time does not exist (spring forward) fires once, at the
  first valid instant after the gap; one whose wall time happens twice (fall back) fires
  once, at the first occurrence;
- a schedule whose hour field is a wildcard (hourly and sub-hourly) fires by elapsed time:
  wall times in the gap never happen, repeated wall times fire at both occurrences.

One deliberate difference: Debian cron and cronsim also apply the elapsed-time rule when only
the *minute* field is a wildcard ('*/15 2 * * *'); Railyard looks at the hour field alone, so
such a schedule follows the fixed-time rule (see docs/semantics.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter

PRESETS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# Wall-clock margin when searching around an instant: larger than any UTC offset change.
_MARGIN = timedelta(hours=3)


class ScheduleError(ValueError):
    """A cron expression or time zone that cannot be used; the message says how to fix it."""


def normalize_cron(expression: str) -> str:
    """Validate a cron expression; return it with presets expanded and spaces folded."""
    text = " ".join((expression or "").split())
    if not text:
        raise ScheduleError("Enter a cron expression, e.g. '30 2 * * *' (daily at 02:30) or '@daily'.")
    if text.startswith("@"):
        if text.lower() not in PRESETS:
            raise ScheduleError(f"Unknown preset '{text}'. Use one of: {', '.join(PRESETS)}.")
        return PRESETS[text.lower()]
    fields = text.split(" ")
    if len(fields) != 5:
        raise ScheduleError(
            f"A cron expression has five fields (minute hour day-of-month month day-of-week); "
            f"'{text}' has {len(fields)}. Example: '30 2 * * *'."
        )
    try:
        croniter(text, datetime(2000, 1, 1))
    except (CroniterBadCronError, CroniterNotAlphaError, ValueError, KeyError) as exc:
        raise ScheduleError(f"'{text}' is not a valid cron expression ({exc}). Example: '30 2 * * *'.") from None
    return text


def load_timezone(name: str) -> ZoneInfo:
    if not name or name not in _known_timezones():
        raise ScheduleError(
            f"Unknown time zone '{name}'. Use an IANA name such as 'UTC', 'Europe/London' or 'America/New_York'."
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"Unknown time zone '{name}'.") from None


_ZONES: set[str] | None = None


def _known_timezones() -> set[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = available_timezones() | {"UTC"}
    return _ZONES


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cron", normalize_cron(self.cron))
        object.__setattr__(self, "_zone", load_timezone(self.timezone))

    @property
    def zone(self) -> ZoneInfo:
        return self._zone  # type: ignore[attr-defined]

    @property
    def fires_by_elapsed_time(self) -> bool:
        return self.cron.split(" ")[1].startswith("*")

    # --- the API ---------------------------------------------------------------------
    def next_fire(self, after: datetime) -> datetime:
        """The first fire strictly after `after`."""
        after = _utc(after)
        start = after.astimezone(self.zone).replace(tzinfo=None) - _MARGIN
        found: list[datetime] = []
        horizon: datetime | None = None
        for wall in self._walls(start, forward=True):
            if horizon is not None and wall > horizon:
                break
            instants = [i for i in self._instants(wall) if i > after]
            if instants and horizon is None:
                horizon = wall + _MARGIN
            found.extend(instants)
        return min(found)

    def previous_fire(self, before: datetime) -> datetime:
        """The last fire strictly before `before`."""
        before = _utc(before)
        start = before.astimezone(self.zone).replace(tzinfo=None) + _MARGIN
        found: list[datetime] = []
        horizon: datetime | None = None
        for wall in self._walls(start, forward=False):
            if horizon is not None and wall < horizon:
                break
            instants = [i for i in self._instants(wall) if i < before]
            if instants and horizon is None:
                horizon = wall - _MARGIN
            found.extend(instants)
        return max(found)

    def latest_fire(self, at_or_before: datetime) -> datetime:
        """The last fire at or before the given instant."""
        return self.previous_fire(_utc(at_or_before) + timedelta(microseconds=1))

    def data_interval(self, fire: datetime) -> tuple[datetime, datetime]:
        """The data interval a fire closes: [previous fire, fire)."""
        fire = _utc(fire)
        return self.previous_fire(fire), fire

    def fires_between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Fires F with start <= F <= end, in order."""
        fire = self.next_fire(_utc(start) - timedelta(microseconds=1))
        end = _utc(end)
        while fire <= end:
            yield fire
            fire = self.next_fire(fire)

    def local(self, instant: datetime) -> datetime:
        return _utc(instant).astimezone(self.zone)

    def partition_date(self, logical_date: datetime) -> str:
        """`ds`: the logical date as YYYY-MM-DD in the schedule's zone."""
        return self.local(logical_date).strftime("%Y-%m-%d")

    # --- internals -------------------------------------------------------------------
    def _walls(self, start: datetime, *, forward: bool) -> Iterator[datetime]:
        it = croniter(self.cron, start)
        step = it.get_next if forward else it.get_prev
        while True:
            try:
                yield step(datetime)
            except CroniterBadDateError:  # e.g. '0 0 30 2 *' never fires
                raise ScheduleError(f"'{self.cron}' never fires.") from None

    def _instants(self, wall: datetime) -> list[datetime]:
        """The UTC instants a naive wall-clock time maps to under the DST rules above."""
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        exists_first = first.astimezone(self.zone).replace(tzinfo=None) == wall
        exists_second = second.astimezone(self.zone).replace(tzinfo=None) == wall
        if exists_first and exists_second and first != second:  # repeated (fall back)
            both = sorted((first, second))
            return both if self.fires_by_elapsed_time else both[:1]
        if exists_first or exists_second:
            return [first if exists_first else second]
        # The wall time falls in a gap (spring forward).
        if self.fires_by_elapsed_time:
            return []
        return [_gap_end(self.zone, min(first, second), max(first, second))]


@lru_cache(maxsize=4096)
def schedule_for(cron: str, timezone: str = "UTC") -> Schedule:
    """A validated Schedule, cached: the scheduler asks for the same few thousand schedules
    every tick, and parsing a cron and loading a zone each time is most of a tick's CPU."""
    return Schedule(cron, timezone)


def _gap_end(zone: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """The instant the clocks jump, found by bisection between two instants around it."""
    offset_before = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(zone).utcoffset() == offset_before:
            low = mid
        else:
            high = mid
    return high.replace(microsecond=0)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware datetime (UTC)")
    return value.astimezone(UTC)
