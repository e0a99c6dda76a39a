"""Arrange with real services: factories create rows the way users do."""

from __future__ import annotations

import csv
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model

from pipelines.models import Environment, Pipeline, Template
from pipelines.services import connection_save, pipeline_create
from portal.accounts.models import Membership, Team


def make_team(slug: str) -> Team:
    return Team.objects.get_or_create(slug=slug, defaults={"name": slug.title()})[0]


def make_user(username: str, *, team: Team | None = None, role: str = Membership.Role.MEMBER, **extra):
    user = get_user_model().objects.create_user(username=username, password="correct-horse-42", **extra)
    if team is not None:
        Membership.objects.create(user=user, team=team, role=role)
    return user


def make_connection(name: str, kind: str, config: dict[str, Any], *, environment: str = "dev", secret=None):
    return connection_save(
        actor=None, environment=Environment.objects.get(slug=environment), name=name, kind=kind, config=config,
        secret=secret,
    )


def make_template(**guardrails) -> Template:
    base = Template.objects.get(slug="partitioned-ingestion")
    if not guardrails:
        return base
    slug = "custom-" + "-".join(f"{k}-{v}" for k, v in sorted(guardrails.items())).replace("_", "-")[:40]
    return Template.objects.create(
        slug=slug, name=slug, kind=base.kind, guardrails={**base.guardrails, **guardrails}
    )


def make_ingestion_pipeline(
    *,
    owner,
    now: datetime,
    slug: str = "daily_sales_load",
    schedule: str = "30 2 * * *",
    timezone: str = "UTC",
    source: str = "{{ ds }}/sales.csv",
    primary_key: str = "order_id",
    partition_column: str = "dt",
    template: Template | None = None,
    **inputs,
) -> Pipeline:
    return pipeline_create(
        actor=owner,
        team=owner.memberships.first().team,
        slug=slug,
        template=template or make_template(),
        inputs={
            "source_connection": "landing",
            "source": source,
            "schedule": schedule,
            "timezone": timezone,
            "primary_key": primary_key,
            "partition_column": partition_column,
            "warehouse_connection": "warehouse",
            **inputs,
        },
        now=now,
    )


SALES_COLUMNS = ["order_id", "customer_id", "sku", "quantity", "amount"]


def write_sales_csv(folder: Path, ds: str, rows: int, *, seed: int = 0) -> list[dict[str, str]]:
    """A day's sales file at folder/<ds>/sales.csv; returns its rows."""
    day = folder / ds
    day.mkdir(parents=True, exist_ok=True)
    records = [
        {
            "order_id": f"{ds.replace('-', '')}-{i:05d}",
            "customer_id": str((i * 7 + seed) % 97),
            "sku": f"SKU-{(i + seed) % 13}",
            "quantity": str(1 + (i + seed) % 5),
            "amount": f"{((i + 3) * 17 + seed) % 1000 / 10:.2f}",
        }
        for i in range(rows)
    ]
    with open(day / "sales.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SALES_COLUMNS)
        writer.writeheader()
        writer.writerows(records)
    return records


def sales_tuples(records: list[dict[str, str]]) -> list[tuple]:
    """A sales file's rows as the warehouse holds them once types are inferred."""
    return sorted(
        (r["order_id"], int(r["customer_id"]), r["sku"], int(r["quantity"]), float(r["amount"])) for r in records
    )


def warehouse_rows(path: Path, table: str, where: str = "", params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute(f'SELECT * FROM "{table}" {where}', params).fetchall())
