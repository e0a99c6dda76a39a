"""The demo's data: 14 days of sales files, a small SQLite source of events, and three
pipelines made through the same services users call. Deterministic and idempotent."""

from __future__ import annotations

import csv
import random
import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from pipelines.models import Environment, Pipeline, Template
from pipelines.services import backfill_create, connection_save, pipeline_create
from portal.accounts.models import Membership, Team

DEMO_USERS = [
    # username, password, role in the analytics team, superuser
    ("admin", "railyard-admin", Membership.Role.ADMIN, True),
    ("author", "railyard-author", Membership.Role.MEMBER, False),
    ("approver", "railyard-approver", Membership.Role.APPROVER, False),
]
DAYS = 14
SALES_COLUMNS = ["order_id", "customer_id", "sku", "quantity", "amount", "sold_at"]


def write_sales_files(landing: Path, today: date, days: int = DAYS) -> int:
    written = 0
    for offset in range(1, days + 1):
        day = today - timedelta(days=offset)
        rng = random.Random(day.toordinal())
        folder = landing / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "sales.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(SALES_COLUMNS)
            for i in range(rng.randint(80, 160)):
                writer.writerow([
                    f"{day:%Y%m%d}-{i:05d}", rng.randint(1, 500), f"SKU-{rng.randint(1, 40):03d}",
                    rng.randint(1, 5), f"{rng.uniform(2, 300):.2f}",
                    f"{day.isoformat()} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00",
                ])
        written += 1
    return written


def write_events_db(path: Path, now: datetime, days: int = DAYS) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, event_time TEXT NOT NULL, "
            "user_id INTEGER, kind TEXT)"
        )
        start = (now - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
        rng = random.Random(42)
        rows = []
        hour = start
        while hour < now:
            for i in range(rng.randint(5, 25)):
                at = hour + timedelta(seconds=rng.randint(0, 3599))
                rows.append((f"{hour:%Y%m%d%H}-{i:03d}", f"{at:%Y-%m-%d %H:%M:%S}", rng.randint(1, 300),
                             rng.choice(["view", "click", "purchase"])))
            hour += timedelta(hours=1)
        conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)", rows)
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


@transaction.atomic
def seed(*, data_dir: Path, now: datetime, stdout=print) -> list[str]:
    User = get_user_model()
    team, _ = Team.objects.get_or_create(slug="analytics", defaults={"name": "Analytics"})
    users = {}
    for username, password, role, superuser in DEMO_USERS:
        user, created = User.objects.get_or_create(
            username=username, defaults={"is_staff": superuser, "is_superuser": superuser}
        )
        if created:
            user.set_password(password)
            user.save()
        Membership.objects.get_or_create(user=user, team=team, defaults={"role": role})
        users[username] = user

    landing = data_dir / "landing"
    write_sales_files(landing, now.date())
    events = write_events_db(data_dir / "source" / "events.sqlite3", now)
    stdout(f"demo data: {DAYS} days of sales files in {landing}, {events} events in the source database")

    for env in Environment.objects.all():
        connection_save(actor=users["admin"], environment=env, name="landing", kind="files",
                        config={"base_path": str(landing)})
        connection_save(actor=users["admin"], environment=env, name="events_db", kind="sqlite",
                        config={"path": str(data_dir / "source" / "events.sqlite3")})
        connection_save(actor=users["admin"], environment=env, name="warehouse", kind="sqlite",
                        config={"path": str(data_dir / f"warehouse-{env.slug}.sqlite3")})

    base = Template.objects.get(slug="partitioned-ingestion")
    flaky, _ = Template.objects.get_or_create(
        slug="flaky-demo",
        defaults={
            "name": "Flaky demo (fault injection)",
            "kind": base.kind,
            "description": "Partitioned ingestion whose first try of each run fails on purpose, to show retries.",
            "guardrails": {**base.guardrails, "retry_delay_seconds": 10, "inject_transient_failures": 1},
        },
    )
    specs = [
        ("daily_sales_load", base, {"source_connection": "landing", "source": "{{ ds }}/sales.csv",
                                    "schedule": "30 2 * * *", "primary_key": "order_id", "partition_column": "dt"},
         "https://wiki.example.com/runbooks/daily-sales", ["sales", "finance"], 7),
        ("hourly_events_load", base, {"source_connection": "events_db", "source": "events",
                                      "source_filter_column": "event_time", "schedule": "0 * * * *",
                                      "primary_key": "event_id", "partition_column": "event_hour"},
         "https://wiki.example.com/runbooks/events", ["events"], 0),
        ("flaky_orders_load", flaky, {"source_connection": "landing", "source": "{{ ds }}/sales.csv",
                                      "schedule": "0 3 * * *", "primary_key": "order_id", "partition_column": "dt",
                                      "target_table": "orders"},
         "https://wiki.example.com/runbooks/orders", ["demo"], 0),
    ]
    made = []
    for slug, template, inputs, runbook, tags, backfill_days in specs:
        if Pipeline.objects.filter(slug=slug).exists():
            continue
        pipeline = pipeline_create(actor=users["author"], team=team, slug=slug, template=template,
                                   inputs={"timezone": "UTC", "warehouse_connection": "warehouse", **inputs},
                                   now=now, runbook_url=runbook, tags=tags)
        if backfill_days:
            backfill_create(actor=users["author"], deployment=pipeline.deployments.get(),
                            start=now.date() - timedelta(days=backfill_days), end=now.date() - timedelta(days=1),
                            now=now, max_active_runs=2)
        made.append(slug)
    return made
