"""Template helpers for time, durations and badges.

Instants are stored in UTC; pages show them in the pipeline's zone with `|in_zone:zone`.
"""

from __future__ import annotations

from datetime import datetime

from django import template
from django.templatetags.tz import do_timezone
from django.utils import timezone

register = template.Library()


@register.filter
def in_zone(value: datetime | None, zone_name: str | None):
    """An aware datetime shown in an IANA zone: `{{ run.logical_date|in_zone:zone|date:"Y-m-d H:i T" }}`.

    Returns a datetime Django's `date` filter will not convert back to the current zone."""
    if not isinstance(value, datetime):
        return ""
    if timezone.is_naive(value):
        return ""
    return do_timezone(value, zone_name or "UTC")


@register.filter
def ds(value: datetime | None, zone_name: str | None) -> str:
    """The partition date (`ds`): the instant's date in the pipeline's zone."""
    local = in_zone(value, zone_name)
    return local.strftime("%Y-%m-%d") if local else ""


@register.filter
def duration(seconds: float | None) -> str:
    """12.3 → '12s', 75 → '1m 15s', 3720 → '1h 2m'."""
    if seconds is None or seconds == "":
        return "—"
    total = int(round(float(seconds)))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{round(value * 100)}%"


@register.filter
def state_label(state: str) -> str:
    return (state or "").replace("_", " ")
