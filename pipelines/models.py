"""What a pipeline is: templates, pipelines and their versions, environments, deployments,
runs and task runs. The scheduler reads and writes these rows; it owns none of its own."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse

from portal.accounts.models import Team


class Environment(models.Model):
    """dev → stage → prod, as rows ordered by `order`, never hard-coded."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=50)
    order = models.PositiveSmallIntegerField(unique=True)
    requires_approval = models.BooleanField(default=False)

    class Meta:
        ordering = ["order"]

    def __str__(self) -> str:
        return self.name


class Connection(models.Model):
    """A source or warehouse, resolved per environment by its logical name."""

    class Kind(models.TextChoices):
        FILES = "files", "Files (local folder or S3)"
        SQLITE = "sqlite", "SQLite database"
        POSTGRES = "postgres", "PostgreSQL database"
        MYSQL = "mysql", "MySQL / MariaDB database"
        DUCKDB = "duckdb", "DuckDB database"
        HTTP = "http", "HTTP JSON API"

    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="connections")
    name = models.SlugField(max_length=63, help_text="Logical name, the same in every environment.")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    config = models.JSONField(default=dict, blank=True, help_text="Non-secret settings (path, host, schema…).")
    # Fernet token of the secret (a password or a full DSN); never shown, never logged.
    secret_encrypted = models.TextField(blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["environment__order", "name"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "name"], name="one_connection_name_per_environment")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.environment.slug})"

    @property
    def has_secret(self) -> bool:
        return bool(self.secret_encrypted)


class Pool(models.Model):
    """Caps how many task runs use a resource at once (e.g. `warehouse_prod: 4`); its task
    runs go to their own Celery queue, so workers can be dedicated to it."""

    name = models.SlugField(max_length=63, unique=True)
    slots = models.PositiveIntegerField(default=1)
    queue = models.SlugField(max_length=63, default="default", help_text="Celery queue its task runs go to.")
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slots} slots)"


class Template(models.Model):
    """A guardrail recipe: the standards every pipeline made from it gets."""

    class Kind(models.TextChoices):
        PARTITIONED_INGESTION = "partitioned_ingestion", "Partitioned ingestion"
        SCRIPT_JOB = "script_job", "Script job"
        ML_RETRAIN = "ml_retrain", "ML retrain"

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    description = models.TextField(blank=True)
    guardrails = models.JSONField(default=dict, help_text="Defaults applied to every pipeline made from it.")
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Pipeline(models.Model):
    slug = models.SlugField(max_length=63, unique=True)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="pipelines")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="pipelines")
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="pipelines")
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    runbook_url = models.URLField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def get_absolute_url(self) -> str:
        return reverse("pipeline_detail", args=[self.slug])


class PipelineVersion(models.Model):
    """Immutable: the user's inputs and the guardrails resolved from the template at the time."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    inputs = models.JSONField()
    guardrails = models.JSONField()
    template_version = models.PositiveIntegerField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pipeline", "-number"]
        constraints = [models.UniqueConstraint(fields=["pipeline", "number"], name="one_version_number")]

    def __str__(self) -> str:
        return f"{self.pipeline.slug} v{self.number}"


class Deployment(models.Model):
    """One pipeline version active in one environment."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="deployments")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="deployments")
    version = models.ForeignKey(PipelineVersion, on_delete=models.PROTECT, related_name="deployments")
    paused = models.BooleanField(default=False)
    # The end of the next data interval to schedule (the next cron fire), in UTC.
    next_due_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pipeline__slug", "environment__order"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "environment"], name="one_deployment_per_environment")
        ]
        indexes = [
            # scheduler.loop.create_due_runs: active deployments whose next fire has come.
            models.Index(fields=["next_due_at"], condition=Q(paused=False), name="deployment_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline.slug}@{self.environment.slug}"

    @property
    def max_active_runs(self) -> int:
        return int(self.version.guardrails.get("max_active_runs", 1))


class Backfill(models.Model):
    """A request to (re)run a range of logical dates under its own concurrency limit."""

    class Reprocess(models.TextChoices):
        MISSING = "missing", "Missing partitions only"
        FAILED = "failed", "Missing and failed"
        ALL = "all", "Everything in the range"

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="backfills")
    start = models.DateTimeField(help_text="First logical date included (UTC).")
    end = models.DateTimeField(help_text="Last logical date included (UTC).")
    reprocess = models.CharField(max_length=16, choices=Reprocess.choices, default=Reprocess.MISSING)
    max_active_runs = models.PositiveSmallIntegerField(default=1)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"backfill {self.deployment} {self.start:%Y-%m-%d}..{self.end:%Y-%m-%d}"


class Run(models.Model):
    """One execution of a deployment for one logical date; re-running it adds an attempt."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCESS = "success", "Success"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED_STATES = (State.SUCCESS, State.FAILED, State.CANCELLED)

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        MANUAL = "manual", "Manual"
        BACKFILL = "backfill", "Backfill"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="runs")
    logical_date = models.DateTimeField(help_text="Start of the data interval (UTC).")
    data_interval_start = models.DateTimeField()
    data_interval_end = models.DateTimeField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.SCHEDULE)
    backfill = models.ForeignKey(Backfill, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs")
    attempt = models.PositiveIntegerField(default=1)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField()
    # The template's time guard: the run does not start before this instant.
    not_before = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rows_written = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["deployment", "-logical_date"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "logical_date"], name="one_run_per_logical_date"),
        ]
        indexes = [
            # scheduler.loop.start_queued_runs: runs waiting for a slot, oldest logical date first.
            models.Index(
                fields=["deployment", "logical_date"], condition=Q(state="queued"), name="run_queued_idx"
            ),
            models.Index(fields=["deployment", "state"], name="run_state_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.deployment} {self.logical_date:%Y-%m-%dT%H:%M}Z"

    def get_absolute_url(self) -> str:
        return reverse("run_detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED_STATES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class TaskRun(models.Model):
    """One task of a run. `try_number` is the fencing token: only the holder of the current
    try may record its outcome, so a stale worker's late result is refused."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"  # waiting for upstream tasks
        SCHEDULED = "scheduled", "Waiting for a pool slot"
        QUEUED = "queued", "Queued"  # sent to the workers
        RUNNING = "running", "Running"
        UP_FOR_RETRY = "up_for_retry", "Up for retry"
        UP_FOR_RESCHEDULE = "up_for_reschedule", "Waiting (sensor)"
        SUCCESS = "success", "Success"
        FAILED = "failed", "Failed"
        UPSTREAM_FAILED = "upstream_failed", "Upstream failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED_STATES = (State.SUCCESS, State.FAILED, State.UPSTREAM_FAILED, State.CANCELLED)

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="task_runs")
    task_id = models.SlugField(max_length=63)
    position = models.PositiveSmallIntegerField(default=0)
    upstream = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    try_number = models.PositiveIntegerField(default=0)
    max_tries = models.PositiveIntegerField(default=1)
    queue = models.CharField(max_length=63, default="default")
    pool = models.CharField(max_length=63, blank=True, default="")
    timeout_seconds = models.PositiveIntegerField(default=1200)
    next_try_at = models.DateTimeField(null=True, blank=True)
    # When a sensor first poked in this attempt: its timeout counts from here.
    first_poke_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    rows_read = models.BigIntegerField(null=True, blank=True)
    rows_written = models.BigIntegerField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "task_id"], name="one_task_run_per_task")]
        indexes = [
            # scheduler.loop.queue_due_retries
            models.Index(fields=["next_try_at"], condition=Q(state="up_for_retry"), name="taskrun_retry_idx"),
            # scheduler.loop.queue_due_retries (sensors waiting to poke again)
            models.Index(
                fields=["next_try_at"], condition=Q(state="up_for_reschedule"), name="taskrun_reschedule_idx"
            ),
            # scheduler.execution.admit_from_pool: slots in use and task runs waiting for one
            models.Index(fields=["pool", "state"], condition=~Q(pool=""), name="taskrun_pool_idx"),
            # scheduler.loop.reap_lost_task_runs
            models.Index(fields=["heartbeat_at"], condition=Q(state="running"), name="taskrun_running_idx"),
            # scheduler.loop.requeue_stuck_task_runs
            models.Index(fields=["queued_at"], condition=Q(state="queued"), name="taskrun_queued_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.run} {self.task_id} try {self.try_number}"

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED_STATES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class AuditEvent(models.Model):
    """Every change to a pipeline, environment, connection or approval."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}:{self.object_id}"
