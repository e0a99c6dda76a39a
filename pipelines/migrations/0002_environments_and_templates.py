from django.db import migrations

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
        "guardrails": {
            "retries": 2,
            "retry_delay_seconds": 300,
            "retry_exponential_backoff": True,
            "max_retry_delay_seconds": 3600,
            "execution_timeout_seconds": 1200,
            "catchup": False,
            "max_active_runs": 1,
            "write_mode": "replace_partition",
            "quality": {"min_rows": 1},
        },
    },
]


def create(apps, schema_editor):
    Environment = apps.get_model("pipelines", "Environment")
    Template = apps.get_model("pipelines", "Template")
    for row in ENVIRONMENTS:
        Environment.objects.update_or_create(slug=row["slug"], defaults=row)
    for row in TEMPLATES:
        Template.objects.update_or_create(slug=row["slug"], defaults=row)


class Migration(migrations.Migration):
    dependencies = [("pipelines", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
