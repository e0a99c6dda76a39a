from __future__ import annotations

from datetime import UTC, datetime

from django.template import Context, Template

from portal.templatetags.railyard import ds, duration


def render(source: str, **context) -> str:
    return Template("{% load railyard %}" + source).render(Context(context))


def test_in_zone_shows_winter_and_summer_time_in_london():
    winter = datetime(2026, 1, 5, 2, 30, tzinfo=UTC)
    summer = datetime(2026, 7, 5, 1, 30, tzinfo=UTC)
    template = '{{ when|in_zone:"Europe/London"|date:"Y-m-d H:i T" }}'
    assert render(template, when=winter) == "2026-01-05 02:30 GMT"
    assert render(template, when=summer) == "2026-07-05 02:30 BST"


def test_ds_is_the_date_in_the_pipelines_zone():
    # 23:30 UTC on 4 Jan is already 5 Jan in Tokyo.
    assert ds(datetime(2026, 1, 4, 23, 30, tzinfo=UTC), "Asia/Tokyo") == "2026-01-05"
    assert ds(datetime(2026, 1, 4, 23, 30, tzinfo=UTC), "UTC") == "2026-01-04"


def test_in_zone_of_nothing_is_empty():
    assert render('{{ when|in_zone:"UTC" }}', when=None) == ""


def test_duration_reads_like_a_person_would_write_it():
    assert duration(None) == "—"
    assert duration(12.4) == "12s"
    assert duration(75) == "1m 15s"
    assert duration(3720) == "1h 2m"
