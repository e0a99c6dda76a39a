"""Which function runs each task of each template."""

from __future__ import annotations

from collections.abc import Callable

from pipelines.steps import ingestion
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
}


def task_graph(template_kind: str) -> list[tuple[str, list[str]]]:
    """(task_id, upstream task ids) for a template, in order: a straight chain."""
    tasks = list(_steps_of(template_kind))
    return [(task, tasks[i - 1 : i]) for i, task in enumerate(tasks)]


def _steps_of(template_kind: str) -> dict[str, Step]:
    try:
        return STEPS[template_kind]
    except KeyError:
        raise PermanentError(
            f"Unknown template {template_kind!r}; known: {', '.join(sorted(STEPS))}."
        ) from None


def get_step(template_kind: str, task_id: str) -> Step:
    steps = _steps_of(template_kind)
    try:
        return steps[task_id]
    except KeyError:
        raise PermanentError(
            f"Template {template_kind!r} has no task {task_id!r}; its tasks are {', '.join(steps)}."
        ) from None
