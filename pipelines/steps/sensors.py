"""Sensors: tasks that wait for upstream data. A sensor pokes once and raises NotReady when
the data is not there yet; the executor frees the worker and pokes again later (reschedule
mode), until the sensor's timeout, counted from its first poke."""

from __future__ import annotations

from pipelines.connectors.files import render_path_template, resolve_source_file
from pipelines.steps.base import NotReady, StepContext, StepResult

DEFAULT_POKE_SECONDS = 60
DEFAULT_TIMEOUT_SECONDS = 3600


def wait_for_source(ctx: StepContext) -> StepResult:
    """Wait until the source partition exists: the file (or a file matching the glob) for a
    files source; at least one row of the partition for a SQL source."""
    spec = ctx.connection(ctx.inputs["source_connection"])
    if spec.kind != "files":
        return _wait_for_rows(ctx, spec)
    relative = render_path_template(ctx.inputs["source"], ctx.template_vars)
    path = resolve_source_file(spec, relative)
    matches = sorted(path.parent.glob(path.name)) if any(c in path.name for c in "*?[") else (
        [path] if path.exists() else []
    )
    if not matches:
        raise NotReady(f"file {relative} in connection '{spec.name}'")
    ctx.log(f"wait_for_source: {relative} is there ({len(matches)} file(s))")
    return StepResult(metrics={"files": len(matches)})


def _wait_for_rows(ctx: StepContext, spec) -> StepResult:
    from pipelines.steps.ingestion import source_partition_rows  # the same filter extract uses

    rows = source_partition_rows(ctx, spec, limit=1)
    if not rows:
        raise NotReady(f"rows of partition {ctx.ds} in {spec.name}.{ctx.inputs['source']}")
    return StepResult(metrics={"rows_seen": rows})


def poke_settings(ctx_settings: dict | None) -> tuple[float, float]:
    settings = ctx_settings or {}
    return (float(settings.get("poke_seconds", DEFAULT_POKE_SECONDS)),
            float(settings.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)))
