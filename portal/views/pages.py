"""The pages. Each view reads through `pipelines.selectors`, writes through
`pipelines.services`, and renders one template that serves both the full page and, for an
htmx request, the fragment inside `<main>` (the base template is swapped).

Access: every page needs a signed-in user; a pipeline and its runs are visible to members of
the pipeline's team and to superusers only, and anyone else gets 404 (not 403: we do not say
that a pipeline exists)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from pipelines import services
from pipelines.cron import ScheduleError
from pipelines.selectors import (
    deployment_for_user,
    ingestion_template,
    next_fires,
    pipeline_for_user,
    pipeline_page,
    pipeline_rows_for_user,
    run_for_user,
    run_rejected_rows,
)
from pipelines.services.runs import run_cancel, run_rerun
from portal.forms import COMMON_TIMEZONES, BackfillForm, CronPreviewForm, PipelineForm, TriggerForm
from scheduler.loop import start_run_now, start_runs_for


def base_template(request: HttpRequest) -> str:
    """The full page, or only its `<main>` for htmx requests (a boosted link wants the page)."""
    htmx = getattr(request, "htmx", None)
    return "_partial.html" if htmx and not htmx.boosted else "base.html"


def error_text(exc: ValidationError) -> str:
    """A service's ValidationError as one sentence per field, each naming the field."""
    if hasattr(exc, "error_dict"):
        return " ".join(
            f"{key.replace('_', ' ').capitalize()}: {message}" if key != "__all__" else message
            for key, messages_ in exc.message_dict.items()
            for message in messages_
        )
    return " ".join(exc.messages)


def _pipeline_url(slug: str, environment: str | None = None) -> str:
    url = reverse("pipeline_detail", args=[slug])
    return f"{url}?env={environment}" if environment else url


# --- pipelines ---------------------------------------------------------------------------------
@login_required
@require_GET
def pipeline_list(request: HttpRequest) -> HttpResponse:
    rows = pipeline_rows_for_user(user=request.user)
    return render(request, "pipelines/list.html", {
        "base_template": base_template(request), "rows": rows, "now": timezone.now(),
    })


@login_required
@require_http_methods(["GET", "POST"])
def pipeline_new(request: HttpRequest) -> HttpResponse:
    form = PipelineForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            pipeline = services.pipeline_create(
                actor=request.user,
                team=form.cleaned_data["team"],
                slug=form.cleaned_data["name"].strip(),
                template=ingestion_template(),
                inputs=form.service_inputs(),
                now=timezone.now(),
                runbook_url=form.cleaned_data["runbook_url"].strip(),
                tags=form.tag_list(),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"Pipeline {pipeline.slug} created and deployed to dev.")
            return redirect(pipeline)
    return render(request, "pipelines/new.html", {
        "base_template": base_template(request), "form": form, "timezones": COMMON_TIMEZONES,
    }, status=400 if form.errors else 200)


@login_required
@require_POST
def cron_preview(request: HttpRequest) -> HttpResponse:
    """The next five fire times of the schedule being typed, in its zone (an htmx fragment)."""
    form = CronPreviewForm(request.POST)
    form.is_valid()
    cron = (form.cleaned_data.get("schedule") or "").strip()
    zone = (form.cleaned_data.get("timezone") or "").strip() or "UTC"
    fires, error = [], ""
    try:
        fires = next_fires(cron=cron, timezone=zone, after=timezone.now(), count=5)
    except ScheduleError as exc:
        error = str(exc)
    return render(request, "pipelines/partials/cron_preview.html", {"fires": fires, "error": error, "zone": zone})


@login_required
@require_GET
def pipeline_detail(request: HttpRequest, slug: str) -> HttpResponse:
    pipeline = pipeline_for_user(user=request.user, slug=slug)
    if pipeline is None:
        raise Http404("No such pipeline.")
    page = pipeline_page(pipeline=pipeline, environment_slug=request.GET.get("env"))
    environment = page.deployment.environment.slug if page.deployment else ""
    return render(request, "pipelines/detail.html", {
        "base_template": base_template(request),
        "page": page,
        "pipeline": pipeline,
        "deployment": page.deployment,
        "guardrails": page.deployment.version.guardrails if page.deployment else {},
        "inputs": page.deployment.version.inputs if page.deployment else {},
        "zone": page.zone,
        "trigger_form": TriggerForm(initial={"environment": environment, "date": timezone.localdate()}),
        "backfill_form": BackfillForm(initial={"environment": environment}),
        "now": timezone.now(),
    })


def _deployment_or_404(request: HttpRequest, slug: str):
    deployment = deployment_for_user(
        user=request.user, pipeline_slug=slug, environment_slug=request.POST.get("environment") or None
    )
    if deployment is None:
        raise Http404("No such pipeline.")
    return deployment


@login_required
@require_POST
def pipeline_pause(request: HttpRequest, slug: str) -> HttpResponse:
    deployment = _deployment_or_404(request, slug)
    paused = request.POST.get("paused") == "true"
    try:
        services.deployment_set_paused(actor=request.user, deployment=deployment, paused=paused, now=timezone.now())
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"{deployment} is {'paused' if paused else 'active'}.")
    return HttpResponseRedirect(_pipeline_url(slug, deployment.environment.slug))


@login_required
@require_POST
def pipeline_trigger(request: HttpRequest, slug: str) -> HttpResponse:
    """Run the interval that starts on a date, now: a new run or a new attempt of it."""
    deployment = _deployment_or_404(request, slug)
    form = TriggerForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Date: enter a date such as 2026-01-31.")
        return HttpResponseRedirect(_pipeline_url(slug, deployment.environment.slug))
    now = timezone.now()
    try:
        logical_date = services.logical_date_for(deployment, form.cleaned_data["date"])
        run = services.run_trigger(actor=request.user, deployment=deployment, logical_date=logical_date, now=now)
    except (ValidationError, ScheduleError) as exc:
        messages.error(request, error_text(exc) if isinstance(exc, ValidationError) else str(exc))
    else:
        start_run_now(run, now)
        messages.success(request, f"Run for {form.cleaned_data['date']:%Y-%m-%d} (attempt {run.attempt}) started.")
    return HttpResponseRedirect(_pipeline_url(slug, deployment.environment.slug))


@login_required
@require_POST
def pipeline_backfill(request: HttpRequest, slug: str) -> HttpResponse:
    deployment = _deployment_or_404(request, slug)
    form = BackfillForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(
            f"{form.fields[name].label or name}: {' '.join(errors)}" for name, errors in form.errors.items()
        ))
        return HttpResponseRedirect(_pipeline_url(slug, deployment.environment.slug))
    now = timezone.now()
    try:
        backfill = services.backfill_create(
            actor=request.user, deployment=deployment, start=form.cleaned_data["start"],
            end=form.cleaned_data["end"], now=now, reprocess=form.cleaned_data["reprocess"],
            max_active_runs=form.cleaned_data["max_active_runs"],
        )
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        start_runs_for(deployment.id, backfill.id, now)
        messages.success(request, f"Backfill {backfill.start:%Y-%m-%d} → {backfill.end:%Y-%m-%d} started.")
    return HttpResponseRedirect(_pipeline_url(slug, deployment.environment.slug))


# --- runs --------------------------------------------------------------------------------------
def _run_or_404(request: HttpRequest, run_id: int):
    run = run_for_user(user=request.user, run_id=run_id)
    if run is None:
        raise Http404("No such run.")
    return run


@login_required
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run_or_404(request, run_id)
    return render(request, "runs/detail.html", {
        "base_template": base_template(request),
        "run": run,
        "pipeline": run.deployment.pipeline,
        "zone": run.deployment.version.inputs.get("timezone", "UTC"),
        "task_runs": list(run.task_runs.all()),
        "rejected_rows": run_rejected_rows(run=run),
    })


@login_required
@require_POST
def run_rerun_view(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run_or_404(request, run_id)
    now = timezone.now()
    try:
        run = run_rerun(actor=request.user, run=run, now=now, from_task=request.POST.get("from_task") or None)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        start_run_now(run, now)
        messages.success(request, f"Attempt {run.attempt} started.")
    return redirect(run)


@login_required
@require_POST
def run_cancel_view(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run_or_404(request, run_id)
    try:
        run = run_cancel(actor=request.user, run=run, now=timezone.now())
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        if run.state == run.State.CANCELLED:
            messages.success(request, "Run cancelled.")
        else:
            messages.error(request, f"Run: it is {run.state} already; nothing to cancel.")
    return redirect(run)
