"""Sensors: tasks that wait for upstream data. A sensor pokes once and raises NotReady when
the data is not there yet; the executor frees the worker and pokes again later (reschedule
mode), until the sensor's timeout, counted from its first poke."""

from __future__ import annotations

from pipelines.steps.base import NotReady, StepContext, StepResult
from pipelines.steps.ingestion import source_partition_available

DEFAULT_POKE_SECONDS = 60
DEFAULT_TIMEOUT_SECONDS = 3600


def wait_for_source(ctx: StepContext) -> StepResult:
    """Wait until the source partition exists, looked for exactly as extract reads it."""
    available, what = source_partition_available(ctx)
    if not available:
        raise NotReady(what)
    ctx.log(f"wait_for_source: {what} is there")
    return StepResult()


def poke_settings(sensor: dict | None) -> tuple[float, float]:
    sensor = sensor or {}
    return (float(sensor.get("poke_seconds", DEFAULT_POKE_SECONDS)),
            float(sensor.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)))
