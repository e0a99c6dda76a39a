"""The REST API: one view per action, nested input/output serializers, the same selectors
and services as the pages. Visibility is the same too: another team's pipeline is 404."""

from __future__ import annotations

from django.http import Http404
from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from pipelines import services
from pipelines.models import Backfill, Run, TaskRun
from pipelines.selectors import (
    deployment_for_user,
    ingestion_template,
    pipeline_for_user,
    pipeline_rows_for_user,
    run_for_user,
    teams_for_user,
)
from pipelines.services.backfills import backfill_progress
from scheduler.loop import start_run_now, start_runs_for


class TaskRunOut(serializers.ModelSerializer):
    class Meta:
        model = TaskRun
        fields = ["task_id", "state", "try_number", "max_tries", "queued_at", "started_at", "finished_at",
                  "rows_read", "rows_written", "metrics", "error"]


class RunOut(serializers.ModelSerializer):
    pipeline = serializers.CharField(source="deployment.pipeline.slug")
    environment = serializers.CharField(source="deployment.environment.slug")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = ["id", "url", "pipeline", "environment", "logical_date", "data_interval_start", "data_interval_end",
                  "state", "trigger", "attempt", "queued_at", "started_at", "finished_at", "rows_written", "error"]

    def get_url(self, run) -> str:
        return f"/api/v1/runs/{run.pk}/"


class RunDetailOut(RunOut):
    task_runs = TaskRunOut(many=True)

    class Meta(RunOut.Meta):
        fields = [*RunOut.Meta.fields, "task_runs"]


def _deployment_out(deployment) -> dict:
    return {
        "environment": deployment.environment.slug,
        "version": deployment.version.number,
        "paused": deployment.paused,
        "next_due_at": deployment.next_due_at,
        "inputs": deployment.version.inputs,
        "guardrails": deployment.version.guardrails,
    }


def _pipeline_or_404(request, slug: str):
    pipeline = pipeline_for_user(user=request.user, slug=slug)
    if pipeline is None:
        raise Http404
    return pipeline


def _deployment_or_404(request, slug: str):
    environment = request.query_params.get("environment") or request.data.get("environment")
    deployment = deployment_for_user(user=request.user, pipeline_slug=slug, environment_slug=environment)
    if deployment is None:
        raise Http404
    return deployment


class PipelineListCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=63)
        team = serializers.SlugField(help_text="Slug of one of your teams.")
        source_connection = serializers.CharField()
        source = serializers.CharField()
        schedule = serializers.CharField()
        timezone = serializers.CharField(default="UTC")
        primary_key = serializers.ListField(child=serializers.CharField(), allow_empty=False)
        partition_column = serializers.CharField()
        source_filter_column = serializers.CharField(required=False, allow_blank=True)
        target_table = serializers.CharField(required=False, allow_blank=True)
        warehouse_connection = serializers.CharField(default="warehouse")
        wait_for_source = serializers.DictField(
            required=False, help_text='Sensor: {"poke_seconds": 60, "timeout_seconds": 3600}.'
        )
        quality = serializers.DictField(required=False, help_text="Quality gates, e.g. {\"min_rows\": 100}.")
        runbook_url = serializers.CharField(required=False, allow_blank=True, default="")
        tags = serializers.ListField(child=serializers.CharField(), required=False, default=list)
        description = serializers.CharField(required=False, allow_blank=True, default="")

    def get(self, request):
        rows = pipeline_rows_for_user(user=request.user)
        return Response([
            {
                "name": row.pipeline.slug,
                "team": row.pipeline.team.slug,
                "environment": row.deployment.environment.slug,
                "schedule": row.inputs.get("schedule"),
                "timezone": row.zone,
                "paused": row.deployment.paused,
                "next_due_at": row.deployment.next_due_at,
                "last_run": {"logical_date": row.last_run.logical_date, "state": row.last_run.state}
                if row.last_run else None,
                "success_rate": row.success_rate,
                "url": f"/api/v1/pipelines/{row.pipeline.slug}/",
            }
            for row in rows
        ])

    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        team = teams_for_user(user=request.user).filter(slug=values.pop("team")).first()
        if team is None:
            return Response({"errors": {"team": ["Use the slug of a team you belong to."]}}, status=400)
        pipeline = services.pipeline_create(
            actor=request.user, team=team, slug=values.pop("name"), template=ingestion_template(),
            runbook_url=values.pop("runbook_url"), tags=values.pop("tags"), description=values.pop("description"),
            inputs={k: v for k, v in values.items() if v not in ("", None, {})}, now=timezone.now(),
        )
        return Response(_pipeline_out(pipeline), status=status.HTTP_201_CREATED)


def _pipeline_out(pipeline) -> dict:
    return {
        "name": pipeline.slug,
        "team": pipeline.team.slug,
        "owner": pipeline.owner.username,
        "template": pipeline.template.slug,
        "tags": pipeline.tags,
        "runbook_url": pipeline.runbook_url,
        "deployments": [_deployment_out(d) for d in
                        pipeline.deployments.select_related("environment", "version").order_by("environment__order")],
    }


class PipelineDetailApi(APIView):
    def get(self, request, slug: str):
        return Response(_pipeline_out(_pipeline_or_404(request, slug)))


class PipelinePauseApi(APIView):
    paused = True

    def post(self, request, slug: str):
        deployment = _deployment_or_404(request, slug)
        deployment = services.deployment_set_paused(actor=request.user, deployment=deployment, paused=self.paused,
                                                    now=timezone.now())
        return Response(_deployment_out(deployment))


class PipelineUnpauseApi(PipelinePauseApi):
    paused = False


class PipelineRunsApi(APIView):
    class InputSerializer(serializers.Serializer):
        logical_date = serializers.DateField(help_text="Local date in the pipeline's zone, e.g. 2026-01-01.")
        environment = serializers.SlugField(required=False)

    def get(self, request, slug: str):
        deployment = _deployment_or_404(request, slug)
        runs = (deployment.runs.select_related("deployment__pipeline", "deployment__environment")
                .order_by("-logical_date")[:100])
        return Response(RunOut(runs, many=True).data)

    def post(self, request, slug: str):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        deployment = _deployment_or_404(request, slug)
        now = timezone.now()
        logical_date = services.logical_date_for(deployment, data.validated_data["logical_date"])
        run = services.run_trigger(actor=request.user, deployment=deployment, logical_date=logical_date, now=now)
        start_run_now(run, now)
        return Response(RunOut(run_for_user(user=request.user, run_id=run.pk)).data, status=status.HTTP_201_CREATED)


class RunDetailApi(APIView):
    def get(self, request, run_id: int):
        run = run_for_user(user=request.user, run_id=run_id)
        if run is None:
            raise Http404
        return Response(RunDetailOut(run).data)


class RunRerunApi(APIView):
    class InputSerializer(serializers.Serializer):
        from_task = serializers.CharField(required=False, help_text="Re-run this task and its downstream only.")

    def post(self, request, run_id: int):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = run_for_user(user=request.user, run_id=run_id)
        if run is None:
            raise Http404
        now = timezone.now()
        run = services.run_rerun(actor=request.user, run=run, now=now, from_task=data.validated_data.get("from_task"))
        start_run_now(run, now)
        return Response(RunOut(run).data)


class RunCancelApi(APIView):
    def post(self, request, run_id: int):
        run = run_for_user(user=request.user, run_id=run_id)
        if run is None:
            raise Http404
        return Response(RunOut(services.run_cancel(actor=request.user, run=run, now=timezone.now())).data)


class BackfillCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        start = serializers.DateField()
        end = serializers.DateField()
        reprocess = serializers.ChoiceField(choices=Backfill.Reprocess.values, default=Backfill.Reprocess.MISSING)
        max_active_runs = serializers.IntegerField(default=1)
        environment = serializers.SlugField(required=False)

    def post(self, request, slug: str):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        values.pop("environment", None)
        deployment = _deployment_or_404(request, slug)
        now = timezone.now()
        backfill = services.backfill_create(actor=request.user, deployment=deployment, now=now, **values)
        start_runs_for(deployment.pk, backfill.pk, now)
        return Response(_backfill_out(backfill), status=status.HTTP_201_CREATED)


def _backfill_out(backfill) -> dict:
    return {"id": backfill.pk, "start": backfill.start, "end": backfill.end, "reprocess": backfill.reprocess,
            "max_active_runs": backfill.max_active_runs, "state": backfill.state,
            "progress": backfill_progress(backfill)}
