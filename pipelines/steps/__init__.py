"""What each task of a template does. A step is a plain function `step(ctx) -> StepResult`;
the scheduler's executor claims the task run, calls the step and records the result."""

from __future__ import annotations

from pipelines.steps.base import PermanentError, StepContext, StepResult, TransientError

__all__ = ["PermanentError", "StepContext", "StepResult", "TransientError", "get_step"]


def get_step(template_kind: str, task_id: str):
    from pipelines.steps import registry

    return registry.get_step(template_kind, task_id)
