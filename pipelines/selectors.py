"""Reads for the pages and the API: typed functions returning rows ready to render.

Every list is fetched in a fixed number of queries (select_related / prefetch_related), never
one query per row. Access rules live here too: a user sees the pipelines of the teams they
belong to; a superuser sees everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count, Prefetch, QuerySet

from pipelines.cron import Schedule
from pipelines.models import Backfill, Connection, Deployment, Environment, Pipeline, Run, TaskRun, Template
from portal.accounts.models import Team

INGESTION_TEMPLATE_SLUG = "partitioned-ingestion"
RECENT_RUNS_FOR_RATE = 20
RUNS_ON_DETAIL_PAGE = 50
BACKFILLS_ON_DETAIL_PAGE = 5
ACTIVE_RUN_STATES = (Run.State.QUEUED, Run.State.RUNNING)


# --- access --------------------------------------------------------------------------------
def teams_for_user(*, user) -> QuerySet[Team]:
    """The teams a user may create pipelines for: their own, or all of them for a superuser."""
    if user.is_superuser:
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user).distinct()


def pipelines_visible_to(*, user) -> QuerySet[Pipeline]:
    if user.is_superuser:
        return Pipeline.objects.all()
    # Membership is unique per (user, team), so the join never duplicates a pipeline.
    return Pipeline.objects.filter(team__memberships__user=user)


def pipeline_for_user(*, user, slug: str) -> Pipeline | None:
    """The pipeline if `user` may see it, else None (the page answers 404 either way)."""
    return (
        pipelines_visible_to(user=user)
        .select_related("team", "owner", "template")
        .filter(slug=slug)
        .first()
    )


def run_for_user(*, user, run_id: int) -> Run | None:
    """One run with its pipeline, environment, version and task runs (graph order)."""
    runs = Run.objects.all() if user.is_superuser else Run.objects.filter(
        deployment__pipeline__team__memberships__user=user
    )
    return (
        runs.select_related(
            "deployment__pipeline__team", "deployment__environment", "deployment__version", "triggered_by"
        )
        .prefetch_related(Prefetch("task_runs", queryset=TaskRun.objects.order_by("position")))
        .filter(pk=run_id)
        .first()
    )


# --- the pipeline list ------------------------------------------------------------------------
@dataclass(frozen=True)
class PipelineRow:
    deployment: Deployment
    last_run: Run | None
    success_rate: float | None  # 0..1 over the finished runs among the last 20, None without any
    finished_runs: int  # how many of the last 20 runs the rate is computed over

    @property
    def pipeline(self) -> Pipeline:
        return self.deployment.pipeline

    @property
    def inputs(self) -> dict:
        return self.deployment.version.inputs

    @property
    def zone(self) -> str:
        return self.inputs.get("timezone", "UTC")


def pipeline_rows_for_user(*, user) -> list[PipelineRow]:
    """One row per deployment (pipeline × environment) the user may see.

    Three queries whatever the number of pipelines: deployments with their pipeline, team,
    environment and version; and the last 20 runs of each (a sliced prefetch, which Django
    runs as one query with a window function)."""
    recent = Run.objects.only(
        "id", "deployment_id", "state", "logical_date", "data_interval_end", "started_at", "finished_at"
    ).order_by("-logical_date")[:RECENT_RUNS_FOR_RATE]
    deployments = (
        Deployment.objects.filter(pipeline__in=pipelines_visible_to(user=user))
        .select_related("pipeline__team", "environment", "version")
        .prefetch_related(Prefetch("runs", queryset=recent, to_attr="recent_runs"))
        .order_by("pipeline__slug", "environment__order")
    )
    rows = []
    for deployment in deployments:
        runs: list[Run] = deployment.recent_runs  # type: ignore[attr-defined]
        finished = [run for run in runs if run.state in (Run.State.SUCCESS, Run.State.FAILED)]
        rate = sum(run.state == Run.State.SUCCESS for run in finished) / len(finished) if finished else None
        rows.append(PipelineRow(deployment=deployment, last_run=runs[0] if runs else None,
                                success_rate=rate, finished_runs=len(finished)))
    return rows


# --- the pipeline page -------------------------------------------------------------------------
@dataclass(frozen=True)
class BackfillRow:
    backfill: Backfill
    progress: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.progress.values())

    @property
    def percent_done(self) -> int:
        finished = self.progress["done"] + self.progress["failed"] + self.progress["cancelled"]
        return round(100 * finished / self.total) if self.total else 100


@dataclass(frozen=True)
class PipelinePage:
    pipeline: Pipeline
    deployments: list[Deployment]
    deployment: Deployment | None
    runs: list[Run] = field(default_factory=list)
    backfills: list[BackfillRow] = field(default_factory=list)

    @property
    def zone(self) -> str:
        return self.deployment.version.inputs.get("timezone", "UTC") if self.deployment else "UTC"

    @property
    def has_active_runs(self) -> bool:
        return any(run.state in ACTIVE_RUN_STATES for run in self.runs)


def pipeline_page(*, pipeline: Pipeline, environment_slug: str | None = None) -> PipelinePage:
    """The pipeline's deployments, and for one of them (the given environment, else the first)
    its latest runs with their task runs and its latest backfills with their progress."""
    deployments = list(
        pipeline.deployments.select_related("environment", "version").order_by("environment__order")
    )
    deployment = next((d for d in deployments if d.environment.slug == environment_slug), None)
    if deployment is None and deployments:
        deployment = deployments[0]
    if deployment is None:
        return PipelinePage(pipeline=pipeline, deployments=deployments, deployment=None)
    deployment.pipeline = pipeline  # spare a query when the services read deployment.pipeline
    runs = list(
        deployment.runs.order_by("-logical_date")
        .prefetch_related(Prefetch("task_runs", queryset=TaskRun.objects.order_by("position")))[
            :RUNS_ON_DETAIL_PAGE
        ]
    )
    backfills = list(deployment.backfills.order_by("-created_at")[:BACKFILLS_ON_DETAIL_PAGE])
    return PipelinePage(
        pipeline=pipeline, deployments=deployments, deployment=deployment, runs=runs,
        backfills=[BackfillRow(backfill=b, progress=p) for b, p in zip(backfills, _progress(backfills), strict=True)],
    )


def _progress(backfills: list[Backfill]) -> list[dict[str, int]]:
    """`pipelines.services.backfills.backfill_progress` for several backfills in one query."""
    counts: dict[int, dict[str, int]] = {b.pk: dict.fromkeys(Run.State.values, 0) for b in backfills}
    rows = (
        Run.objects.filter(backfill__in=backfills).values("backfill_id", "state").annotate(n=Count("id")).order_by()
    )
    for row in rows:
        counts[row["backfill_id"]][row["state"]] = row["n"]
    return [
        {
            "done": c[Run.State.SUCCESS],
            "running": c[Run.State.RUNNING],
            "failed": c[Run.State.FAILED],
            "remaining": c[Run.State.QUEUED],
            "cancelled": c[Run.State.CANCELLED],
        }
        for c in (counts[b.pk] for b in backfills)
    ]


def deployment_for_user(*, user, pipeline_slug: str, environment_slug: str | None) -> Deployment | None:
    """The deployment an action on the pipeline page targets (its environment, else the first)."""
    deployments = Deployment.objects.filter(
        pipeline__in=pipelines_visible_to(user=user), pipeline__slug=pipeline_slug
    ).select_related("pipeline__template", "pipeline__team", "environment", "version")
    if environment_slug:
        return deployments.filter(environment__slug=environment_slug).first()
    return deployments.order_by("environment__order").first()


# --- the new pipeline form -------------------------------------------------------------------
def source_connections() -> list[Connection]:
    """Connections of the first environment (dev), where new pipelines are deployed."""
    environment = Environment.objects.order_by("order").first()
    if environment is None:
        return []
    return list(Connection.objects.filter(environment=environment).order_by("name"))


def next_fires(*, cron: str, timezone: str, after: datetime, count: int = 5) -> list[datetime]:
    """The next `count` fire instants (UTC) of a schedule; raises ScheduleError if invalid."""
    schedule = Schedule(cron, timezone)
    fires: list[datetime] = []
    instant = after
    for _ in range(count):
        instant = schedule.next_fire(instant)
        fires.append(instant)
    return fires


def ingestion_template() -> Template:
    """The template behind the minimal form (created by the data migration)."""
    return Template.objects.get(slug=INGESTION_TEMPLATE_SLUG)


def run_rejected_rows(*, run: Run, limit: int = 50) -> list[dict]:
    """Rows the run quarantined (could not be parsed or cast), read from its warehouse; only
    asked for when extract reported some, so most run pages cost no warehouse round trip."""
    from pipelines.services.connections import connection_resolve
    from pipelines.steps.base import StepError
    from pipelines.steps.ingestion import rejected_rows

    rejected = sum(
        (task.metrics or {}).get("rows_rejected", 0) or 0 for task in run.task_runs.all() if task.task_id == "extract"
    )
    if not rejected:
        return []
    deployment = run.deployment
    name = deployment.version.inputs.get("warehouse_connection", "warehouse")
    try:
        spec = connection_resolve(environment=deployment.environment, name=name)
        return rejected_rows(spec, deployment.pipeline.slug, run.pk, limit=limit)
    except (StepError, OSError) as exc:
        return [{"partition": "", "raw_row": "", "reason": f"Could not read the rejected rows: {exc}",
                 "rejected_at": ""}]
