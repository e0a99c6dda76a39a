from django import forms
from django.contrib import admin

from pipelines.models import (
    AuditEvent,
    Backfill,
    Connection,
    Deployment,
    Environment,
    Pipeline,
    PipelineVersion,
    Pool,
    Run,
    TaskRun,
    Template,
)
from pipelines.services.connections import connection_save


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "order", "requires_approval"]


class ConnectionForm(forms.ModelForm):
    secret = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False),
        help_text="A password, token or header value. Stored encrypted and never shown again; "
        "leave empty to keep the stored one.",
    )

    class Meta:
        model = Connection
        fields = ["environment", "name", "kind", "config"]


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    # The secret is write-only: encrypted by the service, never rendered back.
    form = ConnectionForm
    list_display = ["name", "environment", "kind", "has_secret", "updated_at"]
    list_filter = ["environment", "kind"]
    search_fields = ["name"]

    def save_model(self, request, obj, form, change):
        saved = connection_save(
            actor=request.user, environment=obj.environment, name=obj.name, kind=obj.kind, config=obj.config,
            secret=form.cleaned_data.get("secret") or None,
        )
        obj.pk = saved.pk

    @admin.display(boolean=True, description="secret set")
    def has_secret(self, obj):
        return obj.has_secret


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    list_display = ["name", "slots", "queue", "description"]
    search_fields = ["name"]


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "kind", "version", "updated_at"]
    list_filter = ["kind"]
    search_fields = ["name", "slug"]


class VersionInline(admin.TabularInline):
    model = PipelineVersion
    extra = 0
    readonly_fields = ["number", "inputs", "guardrails", "template_version", "created_by", "created_at"]
    can_delete = False


@admin.register(Pipeline)
class PipelineAdmin(admin.ModelAdmin):
    list_display = ["slug", "team", "owner", "template", "created_at"]
    list_filter = ["team", "template"]
    search_fields = ["slug", "description"]
    inlines = [VersionInline]


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["pipeline", "environment", "version", "paused", "next_due_at"]
    list_filter = ["environment", "paused"]
    search_fields = ["pipeline__slug"]
    list_select_related = ["pipeline", "environment", "version__pipeline"]


class TaskRunInline(admin.TabularInline):
    model = TaskRun
    extra = 0
    fields = ["task_id", "state", "try_number", "max_tries", "started_at", "finished_at", "rows_written", "error"]
    readonly_fields = fields
    can_delete = False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["deployment", "logical_date", "state", "trigger", "attempt", "started_at", "finished_at"]
    list_filter = ["state", "trigger", "deployment__environment"]
    search_fields = ["deployment__pipeline__slug"]
    date_hierarchy = "logical_date"
    list_select_related = ["deployment__pipeline", "deployment__environment"]
    inlines = [TaskRunInline]


@admin.register(TaskRun)
class TaskRunAdmin(admin.ModelAdmin):
    list_display = ["run", "task_id", "state", "try_number", "pool", "heartbeat_at", "rows_written"]
    list_filter = ["state", "task_id", "pool"]
    search_fields = ["run__deployment__pipeline__slug", "task_id"]
    list_select_related = ["run__deployment__pipeline", "run__deployment__environment"]


@admin.register(Backfill)
class BackfillAdmin(admin.ModelAdmin):
    list_display = ["deployment", "start", "end", "reprocess", "max_active_runs", "state", "created_at"]
    list_filter = ["state", "reprocess"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor", "action", "object_type", "object_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["object_id", "action"]
    readonly_fields = ["actor", "action", "object_type", "object_id", "details", "created_at"]
