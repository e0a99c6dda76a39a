from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from pipelines.cron import Schedule
from pipelines.guardrails import resolve_guardrails
from pipelines.inputs import clean_ingestion_inputs
from pipelines.models import Connection, Deployment, Environment, Pipeline, PipelineVersion, Template
from pipelines.services.audit import audit

# Names that would collide with the pages under /pipelines/.
RESERVED_SLUGS = {"new", "cron-preview"}


def first_environment() -> Environment:
    environment = Environment.objects.order_by("order").first()
    if environment is None:
        raise ValidationError("No environments exist yet. Run `python manage.py migrate` to create dev, stage and prod.")
    return environment


def pipeline_create(
    *,
    actor,
    team,
    slug: str,
    template: Template,
    inputs: dict[str, Any],
    now: datetime,
    description: str = "",
    tags: list[str] | None = None,
    runbook_url: str = "",
) -> Pipeline:
    """Create a pipeline from a template: version 1, deployed (unpaused) in the first environment.

    With catchup off the latest finished interval runs right away, as in Airflow."""
    errors: dict[str, list[str]] = {}
    clean_slug = (slug or "").strip()
    if not clean_slug or slugify(clean_slug).replace("-", "_") != clean_slug.replace("-", "_") or len(clean_slug) > 63:
        errors["slug"] = ["Use lowercase letters, digits, '-' and '_' (max 63), e.g. 'daily_sales_load'."]
    elif clean_slug in RESERVED_SLUGS:
        errors["slug"] = [f"'{clean_slug}' is reserved by the portal's pages; choose another name."]
    elif Pipeline.objects.filter(slug=clean_slug).exists():
        errors["slug"] = [f"A pipeline named '{clean_slug}' exists already; choose another name."]
    if runbook_url:
        try:
            URLValidator()(runbook_url)
        except ValidationError:
            errors["runbook_url"] = ["Enter a full URL, e.g. https://wiki.example.com/runbooks/sales."]
    environment = first_environment()
    raw = {"target_table": clean_slug.replace("-", "_"), **inputs}
    source = Connection.objects.filter(environment=environment, name=(raw.get("source_connection") or "").strip()).first()
    try:
        cleaned = clean_ingestion_inputs(raw, source_kind=source.kind if source else None)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)

    guardrails = resolve_guardrails(template.guardrails)
    schedule = Schedule(cleaned["schedule"], cleaned["timezone"])
    try:
        with transaction.atomic():
            pipeline = Pipeline.objects.create(
                slug=clean_slug, team=team, owner=actor, template=template, description=description,
                tags=tags or [], runbook_url=runbook_url,
            )
            version = PipelineVersion.objects.create(
                pipeline=pipeline, number=1, inputs=cleaned, guardrails=guardrails,
                template_version=template.version, created_by=actor,
            )
            Deployment.objects.create(
                pipeline=pipeline, environment=environment, version=version, paused=False,
                next_due_at=schedule.latest_fire(now),
            )
            audit(actor=actor, action="pipeline.created", obj=pipeline,
                  details={"template": template.slug, "inputs": cleaned, "environment": environment.slug})
    except IntegrityError:
        raise ValidationError({"slug": [f"A pipeline named '{clean_slug}' exists already; choose another name."]}) from None
    return pipeline


@transaction.atomic
def deployment_set_paused(*, actor, deployment: Deployment, paused: bool, now: datetime) -> Deployment:
    """Pause or unpause. Unpausing never floods: with catchup off only the latest interval runs."""
    updated = Deployment.objects.filter(pk=deployment.pk, paused=not paused).update(paused=paused, updated_at=now)
    deployment.refresh_from_db()
    if updated:
        audit(actor=actor, action="deployment.paused" if paused else "deployment.unpaused", obj=deployment)
    return deployment
