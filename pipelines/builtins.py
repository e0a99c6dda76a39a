"""The rows every installation starts with: dev → stage → prod and the built-in templates.

Written by a data migration; `ensure_builtin_rows` puts them back where a test flushed them."""

from __future__ import annotations

from pipelines.guardrails import DEFAULTS

ENVIRONMENTS = [
    {"slug": "dev", "name": "Development", "order": 1, "requires_approval": False},
    {"slug": "stage", "name": "Staging", "order": 2, "requires_approval": False},
    {"slug": "prod", "name": "Production", "order": 3, "requires_approval": True},
]

TEMPLATES = [
    {
        "slug": "partitioned-ingestion",
        "name": "Partitioned ingestion",
        "kind": "partitioned_ingestion",
        "description": "Copy one partition a run from a source into the warehouse: extract to staging, "
        "quality gate, atomic replace of exactly that partition, publish row counts.",
        # The defaults: retries 2, 5 min exponential backoff, 20 min timeout, catchup
        # off, max_active_runs 1, replace-partition writes.
        "guardrails": dict(DEFAULTS),
    },
]


def ensure_builtin_rows(environment_model=None, template_model=None) -> None:
    if environment_model is None or template_model is None:
        from pipelines.models import Environment, Template

        environment_model, template_model = Environment, Template
    for row in ENVIRONMENTS:
        environment_model.objects.get_or_create(slug=row["slug"], defaults=row)
    for row in TEMPLATES:
        template_model.objects.get_or_create(slug=row["slug"], defaults=row)
