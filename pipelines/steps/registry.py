"""Which function runs each task of each template."""

from __future__ import annotations

from collections.abc import Callable

from pipelines.steps import ingestion, noop, sensors
from pipelines.steps.base import PermanentError, StepContext, StepResult

Step = Callable[[StepContext], StepResult]

# template kind -> task id -> step, in graph order (each task depends on the one before).
STEPS: dict[str, dict[str, Step]] = {
    "partitioned_ingestion": {
        "extract": ingestion.extract,
        "validate": ingestion.validate,
        "load": ingestion.load,
        "publish": ingestion.publish,
    },
    # Benchmarks only (bench/throughput_bench.py, bench/airflow_peer.py): no Template row ships with it.
    "noop_chain": {"extract": noop.noop, "prepare_features": noop.noop, "train": noop.noop},
}


# Sensors that may precede a template's first task.
SENSORS: dict[str, Step] = {"wait_for_source": sensors.wait_for_source}


def task_graph(template_kind: str, *, sensor: dict | None = None) -> list[tuple[str, list[str]]]:
    """(task_id, upstream task ids) for a template, in order: a straight chain, preceded by
    the wait_for_source sensor when the pipeline configures one."""
    tasks = list(_steps_of(template_kind))
    if sensor:
        tasks.insert(0, "wait_for_source")
    return [(task, tasks[i - 1 : i]) for i, task in enumerate(tasks)]


def _steps_of(template_kind: str) -> dict[str, Step]:
    try:
        return STEPS[template_kind]
    except KeyError:
        raise PermanentError(
            f"Unknown template {template_kind!r}; known: {', '.join(sorted(STEPS))}."
        ) from None


def get_step(template_kind: str, task_id: str) -> Step:
    if task_id in SENSORS:
        return SENSORS[task_id]
    steps = _steps_of(template_kind)
    try:
        return steps[task_id]
    except KeyError:
        raise PermanentError(
            f"Template {template_kind!r} has no task {task_id!r}; its tasks are {', '.join(steps)}."
        ) from None
